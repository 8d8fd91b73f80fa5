//! testbed-ttr: time to ready of a warm purchase against the real OpenStack
//! in deploy/testbed, split into warmpool's steps (claim, volume create +
//! attach, port create + attach, verify) and into time spent inside cloud
//! calls versus warmpool's own share (everything else: its own work and
//! the sleeps between status polls).
//!
//! ```text
//! sudo deploy/testbed/up.sh
//! cargo run --release -p bench --bin testbed-ttr -- --purchases 20
//! ```
//!
//! The pool manager runs in-process (no gRPC) on the testbed's
//! `warmpool-bench` project, with the OpenStack driver wrapped so every cloud
//! call made while an Allocate runs is timed. The pool is paused for the
//! purchase, so those are the purchase's own calls (an Allocate runs as a
//! task of the manager, so no task-local could tell them from the refill
//! boots'). Purchases are sequential; after each, the allocation is
//! released, the pool unpaused, and it refills before the next one.
//!
//! A run that fails or is stopped with Ctrl-C still releases the purchase
//! in hand (its volume and port are deleted) and deletes the pool's
//! servers, so the project it reuses keeps nothing of it; a second Ctrl-C
//! during that clean-up exits at once and names what may be left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bench::memstore::MemStore;
use bench::replay::quantile;
use bench::ttr::busy_time;
use clap::Parser;
use pool_manager::cloud::{
    BootHeadroom, Cloud, CloudIdentity, CloudResult, FlavorIops, ImageMiss, Network, NetworkShare,
    NewPortSpec, NewVolumeSpec, Port, Server, ServerSpec, Volume,
};
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, NetworkRequest, PoolKey, PoolSpec, VolumeRequest,
    VolumeSource,
};
use pool_manager::openstack::{AzSettings, CloudConfig, OpenStackCloud, OpenStackSettings};
use pool_manager::probe::MysqlGreetingProbe;
use pool_manager::{AllocateRequest, ManagerError, ManagerSettings, PoolManager};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Time to ready of warm purchases against deploy/testbed")]
struct Args {
    /// Purchases to measure.
    #[arg(long, default_value_t = 20, value_parser = bench::at_least_one())]
    purchases: usize,
    /// clouds.yaml of the testbed.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/testbed/clouds.yaml"))]
    clouds_yaml: PathBuf,
    /// clouds.yaml entry: a project no other warmpoold uses.
    #[arg(long, default_value = "warmpool-bench")]
    cloud: String,
    #[arg(long, default_value = "warmpool-bench-net")]
    management_network: String,
    /// The buyer's network (name or id), shared to the project.
    #[arg(long, default_value = "tenant-net")]
    tenant_network: String,
    #[arg(long, default_value = "db.small")]
    flavor: String,
    #[arg(long, default_value = "az1")]
    availability_zone: String,
    /// Cinder's zone for the pool's new volumes (the testbed has only "nova").
    #[arg(long, default_value = "nova")]
    volume_availability_zone: String,
    #[arg(long, default_value = "mysql-8.0")]
    image: String,
    /// Every "server" is probed here: fake-virt servers run no mysqld.
    #[arg(long, default_value = "127.0.0.1:3306")]
    probe_address: std::net::SocketAddr,
    /// warmpool's status poll interval while waiting for the cloud
    /// (`2s`, `500ms`, ...); the default is warmpoold's (`[manager]
    /// poll_interval`). A purchase polls at most every 500 ms whatever this
    /// is; warmpoold refuses less than 1 s unless `allow_short_intervals`.
    #[arg(long, default_value_t = ManagerSettings::default().poll_interval.into())]
    poll_interval: humantime::Duration,
}

/// The OpenStack driver (cloudsim in the tests), with the time of every
/// call made while recording (an Allocate runs) kept as an interval.
struct Timed {
    inner: Arc<dyn Cloud>,
    recording: AtomicBool,
    calls: Mutex<Vec<(Instant, Instant)>>,
}

impl Timed {
    fn new(inner: Arc<dyn Cloud>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            recording: AtomicBool::new(false),
            calls: Mutex::default(),
        })
    }

    async fn time<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        if self.recording.load(Ordering::SeqCst) {
            self.calls
                .lock()
                .expect("not poisoned")
                .push((start, Instant::now()));
        }
        out
    }

    fn record(&self) {
        self.calls.lock().expect("not poisoned").clear();
        self.recording.store(true, Ordering::SeqCst);
    }

    /// The calls since [`Self::record`]; stops recording.
    fn take(&self) -> Vec<(Instant, Instant)> {
        self.recording.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.calls.lock().expect("not poisoned"))
    }
}

#[async_trait]
impl Cloud for Timed {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        self.time(self.inner.create_server(spec)).await
    }
    async fn read_server(&self, id: &str) -> CloudResult<Server> {
        self.time(self.inner.read_server(id)).await
    }
    async fn ports_bound_to(&self, id: &str) -> CloudResult<Vec<String>> {
        self.time(self.inner.ports_bound_to(id)).await
    }
    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        self.time(self.inner.list_pool_servers()).await
    }
    async fn delete_server(&self, id: &str) -> CloudResult<()> {
        self.time(self.inner.delete_server(id)).await
    }
    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        self.time(self.inner.create_volume(spec)).await
    }
    async fn get_volume(&self, id: &str) -> CloudResult<Volume> {
        self.time(self.inner.get_volume(id)).await
    }
    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        self.time(self.inner.find_volumes_by_name(name)).await
    }
    async fn set_volume_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.time(self.inner.set_volume_metadata(id, metadata))
            .await
    }
    async fn delete_volume(&self, id: &str) -> CloudResult<()> {
        self.time(self.inner.delete_volume(id)).await
    }
    async fn attach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
        self.time(self.inner.attach_volume(server, volume)).await
    }
    async fn detach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
        self.time(self.inner.detach_volume(server, volume)).await
    }
    async fn get_network(&self, id: &str) -> CloudResult<Network> {
        self.time(self.inner.get_network(id)).await
    }
    async fn network_shares(&self, id: &str) -> CloudResult<Vec<NetworkShare>> {
        self.time(self.inner.network_shares(id)).await
    }
    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        self.time(self.inner.create_port(spec)).await
    }
    async fn get_port(&self, id: &str) -> CloudResult<Port> {
        self.time(self.inner.get_port(id)).await
    }
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        self.time(self.inner.find_ports_by_name(name)).await
    }
    async fn delete_port(&self, id: &str) -> CloudResult<()> {
        self.time(self.inner.delete_port(id)).await
    }
    async fn attach_port(&self, server: &str, port: &str) -> CloudResult<()> {
        self.time(self.inner.attach_port(server, port)).await
    }
    async fn detach_port(&self, server: &str, port: &str) -> CloudResult<()> {
        self.time(self.inner.detach_port(server, port)).await
    }
    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        self.time(self.inner.boot_headroom(flavor)).await
    }
    async fn check_boot_placement(&self, pool: &PoolKey) -> CloudResult<()> {
        self.time(self.inner.check_boot_placement(pool)).await
    }
    /// Not timed: the replenisher's look at the pool's flavor (cached by
    /// the driver), no part of a purchase.
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        self.inner.flavor_disk_iops(flavor).await
    }
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        self.time(self.inner.check_boot_image(image, miss)).await
    }
    async fn check_volume_zone(&self, pool: &PoolKey) -> CloudResult<()> {
        self.time(self.inner.check_volume_zone(pool)).await
    }
    fn volume_zone_for(&self, server_az: &str) -> String {
        self.inner.volume_zone_for(server_az)
    }
    fn boot_image(&self, pool_image: &str) -> String {
        self.inner.boot_image(pool_image)
    }
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        self.inner.cloud_identity().await
    }
    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        self.inner.services_in_named_region_alone().await
    }
}

/// One column of the report, read from a sample.
type Metric = fn(&Sample) -> Duration;

/// One purchase's numbers.
struct Sample {
    claim: Duration,
    volume: Duration,
    port: Duration,
    verify: Duration,
    total: Duration,
    in_cloud: Duration,
    calls: usize,
}

fn load_auth(path: &PathBuf, cloud: &str) -> anyhow::Result<CloudConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let root: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let entry = root
        .get("clouds")
        .and_then(|c| c.get(cloud))
        .ok_or_else(|| anyhow!("{} has no cloud {cloud}", path.display()))?;
    Ok(serde_yaml::from_value(entry.clone())?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let auth = load_auth(&args.clouds_yaml, &args.cloud)?;
    let mut settings = OpenStackSettings::new(auth, args.management_network.clone());
    settings.probe_address_override = Some(args.probe_address);
    settings.availability_zones.insert(
        args.availability_zone.clone(),
        AzSettings {
            management_network: None,
            volume_availability_zone: Some(args.volume_availability_zone.clone()),
        },
    );
    let os = OpenStackCloud::connect(settings).await.map_err(|e| {
        anyhow!("cannot log in to the testbed ({e}); bring it up with `sudo deploy/testbed/up.sh`")
    })?;
    let tenant_net = os
        .network(&args.tenant_network)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    // The purchases are the network's own project's orders: warmpool puts
    // a tenant's port only on a network that tenant may use.
    let tenant = tenant_net.project_id.clone().ok_or_else(|| {
        anyhow!(
            "Neutron names no project of network {}",
            args.tenant_network
        )
    })?;
    let tenant_net = tenant_net.id;
    let cloud = Timed::new(Arc::new(os));
    // Servers a previous run left behind.
    for s in cloud
        .list_pool_servers()
        .await
        .map_err(|e| anyhow!("{e}"))?
    {
        cloud
            .delete_server(&s.id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
    }

    let manager = PoolManager::new(
        Arc::new(MemStore::default()),
        cloud.clone(),
        Arc::new(MysqlGreetingProbe::default()),
        ManagerSettings {
            poll_interval: args.poll_interval.into(),
            replenish_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(3600),
            ..ManagerSettings::default()
        },
    );
    manager.start().await.map_err(|e| anyhow!("{e}"))?;
    // The order bought and not yet released, which a failure or Ctrl-C
    // must release: the pool's servers are deleted on the way out, and
    // Nova keeps the volume and port of a deleted server.
    let mut in_hand: Option<String> = None;
    let outcome = tokio::select! {
        samples = purchases(&args, &manager, &cloud, (&tenant, &tenant_net), &mut in_hand) => samples,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C)")),
    };
    let cleanup = tokio::select! {
        done = clean_up(&manager, &cloud, in_hand.as_deref()) => done,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "interrupted again: stopped before the clean-up finished. What may be left in \
                 project {}: pool servers (the next run deletes them){}",
                args.cloud,
                in_hand.as_deref().map_or_else(String::new, |id| format!(
                    ", and the volume and port named {} (delete them by hand)",
                    pool_manager::model::resource_names_of(id)
                ))
            );
            std::process::exit(130);
        }
    };
    let samples = match (outcome, cleanup) {
        (Ok(samples), Ok(())) => samples,
        (Err(e), Ok(())) => {
            return Err(anyhow!(
                "{e:#} (cleaned up: the purchase in hand released, the pool's servers deleted)"
            ))
        }
        (Ok(_), Err(c)) => return Err(c),
        (Err(e), Err(c)) => return Err(anyhow!("{e:#}; and cleaning up: {c:#}")),
    };

    println!(
        "{} warm purchases, {} in {}, new 1 GiB volume + port on {}, poll interval {}",
        samples.len(),
        args.flavor,
        args.availability_zone,
        args.tenant_network,
        args.poll_interval
    );
    // Nearest rank, as the simulated time-to-ready table.
    println!("\n| | p50 | p90 | max |\n|---|--:|--:|--:|");
    let rows: [(&str, Metric); 7] = [
        ("claim", |s| s.claim),
        ("volume (create + attach)", |s| s.volume),
        ("port (create + attach)", |s| s.port),
        ("verify", |s| s.verify),
        ("**total** (time to ready)", |s| s.total),
        ("inside cloud calls", |s| s.in_cloud),
        ("warmpool's own share (total - inside cloud calls)", |s| {
            s.total.saturating_sub(s.in_cloud)
        }),
    ];
    for (name, f) in rows {
        let v: Vec<Duration> = samples.iter().map(f).collect();
        let at = |q| ms(quantile(&v, q).unwrap_or_default());
        println!("| {name} | {} | {} | {} |", at(0.5), at(0.9), at(1.0));
    }
    let calls: Vec<usize> = samples.iter().map(|s| s.calls).collect();
    println!(
        "\ncloud calls per purchase: p50 {}, max {}",
        quantile(&calls, 0.5).unwrap_or(0),
        quantile(&calls, 1.0).unwrap_or(0)
    );
    Ok(())
}

/// The run's purchases, one at a time, each an order of project `tenant`
/// with a port on its network `tenant_net`. `in_hand` names the order
/// bought and not yet released.
async fn purchases(
    args: &Args,
    manager: &PoolManager,
    cloud: &Timed,
    (tenant, tenant_net): (&str, &str),
    in_hand: &mut Option<String>,
) -> anyhow::Result<Vec<Sample>> {
    let key = PoolKey::new(&args.flavor, &args.availability_zone);
    let depth = 2;
    manager
        .create_pool(
            key.clone(),
            PoolSpec {
                min_ready: depth,
                max_ready: depth * 2,
                target: Default::default(),
                image: args.image.clone(),
                boot_timeout: Duration::from_secs(300),
                max_age: None,
                paused: false,
                windows: Vec::new(),
                iops_limit: None,
                volume_iops_limit: None,
            },
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;

    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut samples = Vec::new();
    for i in 0..args.purchases {
        wait_full(manager, &key, depth).await?;
        // No refill boots among the purchase's calls.
        manager
            .update_pool(&key, |s| s.paused = true)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        cloud.record();
        let id = format!("ttr-{run}-{i}");
        let request = AllocateRequest {
            params: AllocationParams {
                request_id: id.clone(),
                tenant_project_id: tenant.to_owned(),
                pool: key.clone(),
                volume: VolumeRequest {
                    source: VolumeSource::New {
                        size_gib: 1,
                        volume_type: None,
                    },
                    delete_on_release: true,
                },
                network: NetworkRequest {
                    network_id: tenant_net.to_owned(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: BTreeMap::new(),
            },
            empty_pool: EmptyPoolPolicy::FailFast,
            timeout: Some(Duration::from_secs(120)),
        };
        // Before the call: stopped during it, the Allocate goes on as the
        // manager's task and may still buy the order.
        *in_hand = Some(id.clone());
        let allocation = manager
            .allocate(request)
            .await
            .map_err(|e| anyhow!("purchase {i}: {e}"))?;
        let calls = cloud.take();
        let t = &allocation.timings;
        if !allocation.warm_hit {
            bail!("purchase {i} was not a warm hit: the pool was not full, or its instance failed its probe");
        }
        samples.push(Sample {
            claim: t.claim,
            volume: t.volume,
            port: t.port,
            verify: t.verify,
            total: t.total,
            calls: calls.len(),
            in_cloud: busy_time(calls),
        });
        manager
            .release(&id, Some(true))
            .await
            .map_err(|e| anyhow!("release {id}: {e}"))?;
        *in_hand = None;
        manager
            .update_pool(&key, |s| s.paused = false)
            .await
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(samples)
}

/// The longest the clean-up waits for an Allocate still under way (its
/// timeout is 120 s) and for the release after it.
const CLEAN_UP_DEADLINE: Duration = Duration::from_secs(300);

/// Releases `in_hand` (its volume and port deleted), stops the manager and
/// deletes the pool's servers: what a run leaves when it ends, finished,
/// failed or interrupted. Every step is tried whatever the one before did
/// (a release that fails leaves its volume and port, not the servers too);
/// the error names what each failed step left.
async fn clean_up(
    manager: &PoolManager,
    cloud: &Timed,
    in_hand: Option<&str>,
) -> anyhow::Result<()> {
    let mut left = Vec::new();
    if let Some(id) = in_hand {
        if let Err(e) = release_in_hand(manager, id).await {
            left.push(format!("{e:#}"));
        }
    }
    if let Err(e) = manager.shutdown().await {
        left.push(format!("stopping the pool manager: {e}"));
    }
    if let Err(e) = delete_pool_servers(cloud).await {
        left.push(format!("{e:#}"));
    }
    if left.is_empty() {
        Ok(())
    } else {
        bail!("{}", left.join("; "))
    }
}

/// Releases the order `id`, waiting for an Allocate of it still under way.
async fn release_in_hand(manager: &PoolManager, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLEAN_UP_DEADLINE;
    loop {
        match manager.release(id, Some(true)).await {
            // Never bought, or its Allocate failed and rolled back.
            Ok(_) | Err(ManagerError::AllocationNotFound(_)) => return Ok(()),
            // Its Allocate is still under way, or its rollback waits
            // for a reconcile pass (hourly here): one now.
            Err(ManagerError::TryAgain(why)) => {
                if Instant::now() >= deadline {
                    bail!(
                        "order {id} could not be released within {}: {why}; delete the volume and port named {} in the project by hand",
                        humantime::format_duration(CLEAN_UP_DEADLINE),
                        pool_manager::model::resource_names_of(id)
                    );
                }
                let _ = manager.reconcile().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => bail!(
                "release of order {id}: {e}; delete the volume and port named {} in the project by hand",
                pool_manager::model::resource_names_of(id)
            ),
        }
    }
}

/// Deletes every pool server of the project, going on past one that fails.
async fn delete_pool_servers(cloud: &Timed) -> anyhow::Result<()> {
    let servers = cloud.list_pool_servers().await.map_err(|e| {
        anyhow!(
            "cannot list the pool's servers to delete them ({e}); the next run deletes them, or \
             delete them by hand"
        )
    })?;
    let mut failed = Vec::new();
    for s in servers {
        if let Err(e) = cloud.delete_server(&s.id).await {
            failed.push(format!("{} ({e})", s.id));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "pool servers not deleted: {}; the next run deletes them, or delete them by hand",
            failed.join(", ")
        )
    }
}

/// Milliseconds: the steps and warmpool's share are far below a second.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Waits until the pool has `depth` Ready instances and no boot in flight,
/// so no refill runs while the next purchase is measured.
async fn wait_full(manager: &PoolManager, key: &PoolKey, depth: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = manager.get_pool(key).await.map_err(|e| anyhow!("{e}"))?;
        let count = |state: &str| status.counts.get(state).copied().unwrap_or(0);
        if count("ready") >= depth && count("booting") == 0 && count("warming") == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("pool {key} not full after 300 s: {:?}", status.counts);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudsim::{SimCloud, SimConfig};

    /// Stopped mid-purchase (Ctrl-C while the volume's attach is under
    /// way), the run's clean-up still releases the order: nothing of the
    /// tenant's is left in the project the next run reuses.
    #[tokio::test(start_paused = true)]
    async fn a_run_stopped_mid_purchase_leaves_no_volume_or_port() {
        let sim = SimCloud::new(SimConfig::deterministic());
        let cloud = Timed::new(sim.clone());
        let manager = PoolManager::new(
            Arc::new(MemStore::default()),
            cloud.clone(),
            Arc::new(sim.probe()),
            ManagerSettings::default(),
        );
        manager.start().await.expect("manager starts");
        let args = Args::try_parse_from(["testbed-ttr", "--purchases", "3"]).expect("args");
        sim.faults().hold_calls("attach_volume");
        let mut in_hand = None;
        let stopped = tokio::time::timeout(
            Duration::from_secs(600),
            purchases(
                &args,
                &manager,
                &cloud,
                ("tenant", "tenant-net"),
                &mut in_hand,
            ),
        )
        .await;
        assert!(stopped.is_err(), "held in the first purchase");
        let id = in_hand.clone().expect("a purchase under way");
        sim.faults().release_calls("attach_volume");

        clean_up(&manager, &cloud, in_hand.as_deref())
            .await
            .expect("cleaned up");
        let ours = pool_manager::model::resource_names_of(&id);
        let volumes: Vec<String> = sim
            .volumes()
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with(&ours))
            .collect();
        let ports: Vec<String> = sim
            .ports()
            .into_iter()
            .map(|p| p.name)
            .filter(|n| n.starts_with(&ours))
            .collect();
        assert!(
            volumes.is_empty() && ports.is_empty(),
            "left: volumes {volumes:?}, ports {ports:?}"
        );
        assert!(sim.servers().is_empty(), "pool servers deleted");
    }

    /// A release that fails does not end the clean-up there: the manager
    /// is still stopped and the pool's servers deleted (as the module says
    /// a failed run does), and the error names the volume and port left
    /// for the user to delete.
    #[tokio::test(start_paused = true)]
    async fn a_failed_release_still_deletes_the_pool_servers() {
        let sim = SimCloud::new(SimConfig::deterministic());
        // Cinder refuses every volume delete (a policy that forbids it): an
        // order bought with a new volume cannot be released.
        sim.faults().fail_next_calls_of(
            "delete_volume",
            u64::MAX,
            pool_manager::cloud::CloudError::Fatal(
                "Policy doesn't allow volume:delete to be performed.".into(),
            ),
        );
        let cloud = Timed::new(sim.clone());
        let manager = PoolManager::new(
            Arc::new(MemStore::default()),
            cloud.clone(),
            Arc::new(sim.probe()),
            ManagerSettings::default(),
        );
        manager.start().await.expect("manager starts");
        let args = Args::try_parse_from(["testbed-ttr", "--purchases", "1"]).expect("args");
        let mut in_hand = None;
        let run = purchases(
            &args,
            &manager,
            &cloud,
            ("tenant", "tenant-net"),
            &mut in_hand,
        )
        .await;
        let failed = run.err().expect("the purchase's release fails");
        let id = in_hand.clone().expect("the order still in hand");

        let err = clean_up(&manager, &cloud, in_hand.as_deref())
            .await
            .expect_err("its release fails again");
        let text = format!("{err:#}");
        let servers: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
        assert!(
            servers.is_empty(),
            "left: servers {servers:?}; run: {failed:#}; clean-up: {text}"
        );
        assert!(
            text.contains(&pool_manager::model::resource_names_of(&id)),
            "{text}"
        );
    }

    #[test]
    fn the_poll_interval_defaults_to_the_daemons() {
        let args = Args::try_parse_from(["testbed-ttr"]).expect("defaults parse");
        assert_eq!(
            Duration::from(args.poll_interval),
            ManagerSettings::default().poll_interval
        );
        assert!(Duration::from(args.poll_interval) >= Duration::from_secs(1));
    }

    #[test]
    fn the_poll_interval_takes_humantime_durations() {
        let parse = |s: &str| {
            Args::try_parse_from(["testbed-ttr", "--poll-interval", s])
                .map(|a| Duration::from(a.poll_interval))
        };
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse("2 fortnights").is_err());
    }
}
