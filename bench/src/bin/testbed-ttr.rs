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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bench::memstore::MemStore;
use clap::Parser;
use pool_manager::cloud::{
    BootHeadroom, Cloud, CloudIdentity, CloudResult, NewPortSpec, NewVolumeSpec, Port, Server,
    ServerSpec, Volume,
};
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, NetworkRequest, PoolKey, PoolSpec, VolumeRequest,
    VolumeSource,
};
use pool_manager::openstack::{AzSettings, CloudConfig, OpenStackCloud, OpenStackSettings};
use pool_manager::probe::MysqlGreetingProbe;
use pool_manager::{AllocateRequest, ManagerSettings, PoolManager};
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
    /// warmpool's status poll interval while waiting for the cloud.
    #[arg(long, default_value = "100ms", value_parser = humantime_duration)]
    poll_interval: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|e| format!("{s}: {e}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("{s}: use ms or s")),
    }
}

/// The OpenStack driver, with the time of every call made while recording
/// (an Allocate runs) kept as an interval.
struct Timed {
    inner: OpenStackCloud,
    recording: AtomicBool,
    calls: Mutex<Vec<(Instant, Instant)>>,
}

impl Timed {
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
    async fn delete_volume(&self, id: &str) -> CloudResult<()> {
        self.time(self.inner.delete_volume(id)).await
    }
    async fn attach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
        self.time(self.inner.attach_volume(server, volume)).await
    }
    async fn detach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
        self.time(self.inner.detach_volume(server, volume)).await
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
    async fn check_boot_image(&self, image: &str) -> CloudResult<()> {
        self.time(self.inner.check_boot_image(image)).await
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
}

/// Length of the union of `intervals` (calls in flight in parallel count once).
fn union(mut intervals: Vec<(Instant, Instant)>) -> Duration {
    intervals.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (s, e) in intervals {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += ce - cs;
    }
    total
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
        .map_err(|e| anyhow!("{e}"))?
        .id;
    let cloud = Arc::new(Timed {
        inner: os,
        recording: AtomicBool::new(false),
        calls: Mutex::default(),
    });
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
            poll_interval: args.poll_interval,
            replenish_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(3600),
            ..ManagerSettings::default()
        },
    );
    manager.start().await.map_err(|e| anyhow!("{e}"))?;
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
        wait_full(&manager, &key, depth).await?;
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
                tenant_project_id: "tenant".into(),
                pool: key.clone(),
                volume: VolumeRequest {
                    source: VolumeSource::New {
                        size_gib: 1,
                        volume_type: None,
                    },
                    delete_on_release: true,
                },
                network: NetworkRequest {
                    network_id: tenant_net.clone(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: BTreeMap::new(),
            },
            empty_pool: EmptyPoolPolicy::FailFast,
            timeout: Some(Duration::from_secs(120)),
        };
        let allocation = manager
            .allocate(request)
            .await
            .map_err(|e| anyhow!("purchase {i}: {e}"))?;
        let calls = cloud.take();
        let t = &allocation.timings;
        if !allocation.warm_hit {
            bail!("purchase {i} was not a warm hit");
        }
        samples.push(Sample {
            claim: t.claim,
            volume: t.volume,
            port: t.port,
            verify: t.verify,
            total: t.total,
            calls: calls.len(),
            in_cloud: union(calls),
        });
        manager
            .release(&id, Some(true))
            .await
            .map_err(|e| anyhow!("release {id}: {e}"))?;
        manager
            .update_pool(&key, |s| s.paused = false)
            .await
            .map_err(|e| anyhow!("{e}"))?;
    }
    manager.shutdown().await.map_err(|e| anyhow!("{e}"))?;
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

    println!(
        "{} warm purchases, {} in {}, new 1 GiB volume + port on {}, poll interval {} ms",
        samples.len(),
        args.flavor,
        args.availability_zone,
        args.tenant_network,
        args.poll_interval.as_millis()
    );
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
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        println!(
            "| {name} | {} | {} | {} |",
            ms(pct(&v, 0.5)),
            ms(pct(&v, 0.9)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    let mut calls: Vec<usize> = samples.iter().map(|s| s.calls).collect();
    calls.sort();
    println!(
        "\ncloud calls per purchase: p50 {}, max {}",
        calls.get(calls.len() / 2).copied().unwrap_or(0),
        calls.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// Milliseconds: the steps and warmpool's share are far below a second.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
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
