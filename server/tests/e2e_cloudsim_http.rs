//! warmpoold end to end with its OpenStack driver against cloudsim's HTTP
//! OpenStack face (Keystone, Nova, Cinder, Neutron, Glance on one listener):
//! the scenarios of e2e_testbed.rs, without the testbed. A real daemon
//! (`warmpool_server::start`, `[cloud] kind = "openstack"`, a clouds.yaml),
//! the gRPC client, and the face's model (`SimCloud`) to check what the
//! cloud holds.
//!
//! One daemon, one test, steps in order: pools fill; Allocate with a new
//! volume and a port on tenant-net (a warm hit), the retry, other
//! parameters ABORTED, Release; Allocate with an existing volume, fencing
//! of a volume in use; a leaked server deleted by the reconciler; a flavor
//! past the cores quota reported and refused as RESOURCE_EXHAUSTED; the
//! daemon still serving at the end.

mod support;

use support::{allocate_request, existing_volume, expect_code, init_tracing, new_volume};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudsim::http::{HttpFace, HttpSettings, RunningFace};
use cloudsim::{FlavorSize, SimCloud, SimConfig};
use pool_manager::cloud::{
    Cloud, ServerSpec, ServerStatus, VolumeStatus, META_INSTANCE, META_POOL,
};
use pool_manager::model::PoolKey;
use pool_manager::openstack::OpenStackCloud;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Code;
use warmpool_client::{api, Client};
use warmpool_server::config::{CloudConfig, Config};
use warmpool_server::Running;

const SMALL: &str = "db.small";
/// 64 vCPUs: more than the project's 40-core quota, so every boot of this
/// flavor is refused for quota.
const HUGE: &str = "db.huge";
const IMAGE: &str = "mysql-8.0";
/// How long one eventual condition may take: boots take well under a second
/// at this time scale; generous for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long each purchase may take.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(60);

fn sim_config() -> SimConfig {
    let mut config = SimConfig {
        // A boot is ~0.25 s of real time, mysqld ~0.2 s more.
        time_scale: 0.01,
        jitter: 0.0,
        max_cores: Some(40),
        // Each server's simulated mysqld greets at its own address, port
        // 3306: the daemon's pools fill only once boots greet. The face
        // cannot start where a local MySQL holds 3306 on every address.
        listeners: true,
        ..SimConfig::default()
    };
    config.flavors.push(HUGE.into());
    config
        .flavor_sizes
        .push(FlavorSize::new(HUGE, 64, 65536, 100));
    config
}

/// The face, a daemon configured for it, a client, and the driver the
/// test uses behind the daemon's back.
struct Env {
    sim: Arc<SimCloud>,
    _face: RunningFace,
    _dir: tempfile::TempDir,
    running: Running,
    client: Client,
    driver: OpenStackCloud,
    tenant_net: String,
    stop: oneshot::Sender<()>,
}

fn config_text(data: &std::path::Path, clouds_yaml: &std::path::Path) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = {data:?}
shutdown_grace = "5s"
[manager]
poll_interval = "100ms"
replenish_interval = "200ms"
reconcile_interval = "1s"
max_concurrent_boots = 4
# cloudsim answers in milliseconds.
allow_short_intervals = true
[cloud]
kind = "openstack"
cloud = "cloudsim"
clouds_yaml = {clouds:?}
management_network = "mgmt-net"
request_timeout = "10s"

[[pools]]
flavor = "{SMALL}"
availability_zone = "az1"
min_ready = 2
max_ready = 4
image = "{IMAGE}"

[[pools]]
flavor = "{SMALL}"
availability_zone = "az2"
min_ready = 1
max_ready = 2
image = "{IMAGE}"

[[pools]]
flavor = "{HUGE}"
availability_zone = "az1"
min_ready = 1
max_ready = 1
image = "{IMAGE}"
"#,
        data = data.join("store").display().to_string(),
        clouds = clouds_yaml.display().to_string(),
    )
}

impl Env {
    async fn start() -> Env {
        init_tracing();
        let sim = SimCloud::new(sim_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let face = HttpFace::serve(sim.clone(), HttpSettings::default(), listener)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clouds_yaml: PathBuf = dir.path().join("clouds.yaml");
        std::fs::write(&clouds_yaml, face.clouds_yaml("cloudsim")).unwrap();
        let text = config_text(dir.path(), &clouds_yaml);
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n--- config:\n{text}"));
        let settings = match &config.cloud {
            CloudConfig::OpenStack(os) => os.settings().unwrap(),
            other => panic!("not an openstack config: {other:?}"),
        };
        let driver = OpenStackCloud::connect(settings).await.unwrap();
        let tenant_net = driver
            .network("tenant-net")
            .await
            .expect("the face has tenant-net")
            .id;
        let (stop, stopped) = oneshot::channel::<()>();
        let running = warmpool_server::start(config, async move {
            // A dropped sender (test over, or panicked) stops the daemon too.
            let _ = stopped.await;
        })
        .await
        .unwrap_or_else(|e| panic!("warmpoold does not start against the face: {e:#}"));
        assert!(
            running.cloud.is_none(),
            "the daemon must run on the OpenStack driver, not the embedded cloud"
        );
        let client = Client::connect(&format!("http://{}", running.grpc_addr))
            .await
            .expect("client connects");
        Env {
            sim,
            _face: face,
            _dir: dir,
            running,
            client,
            driver,
            tenant_net,
            stop,
        }
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.running.metrics_addr)
    }

    async fn shut_down(self) {
        let Env {
            running,
            client,
            stop,
            _face,
            ..
        } = self;
        drop(client);
        let Running {
            served, manager, ..
        } = running;
        drop(manager);
        stop.send(()).expect("daemon still running");
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("shutdown within 30 s")
            .expect("server task did not panic")
            .expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpoold_against_cloudsims_http_openstack_face() {
    let env = Env::start().await;

    eprintln!("== step: pools fill");
    pools_fill(&env).await;
    eprintln!("== step: allocate a new volume, retry, release");
    allocate_new_volume(&env).await;
    eprintln!("== step: allocate an existing volume, fence it, release");
    allocate_existing_volume(&env).await;
    eprintln!("== step: a leaked server is deleted");
    leaked_server_is_deleted(&env).await;
    eprintln!("== step: quota is reported");
    quota_is_reported(&env).await;
    eprintln!("== step: a cold boot past the quota is refused");
    cold_boot_past_quota(&env).await;
    eprintln!("== step: the daemon survived");
    survived(&env).await;

    env.shut_down().await;
}

/// Pools fill: every Ready instance is an ACTIVE server of the face in its
/// AZ, carrying warmpool's metadata.
async fn pools_fill(env: &Env) {
    let az1 = wait_ready(&env.client, SMALL, "az1", 2).await;
    wait_ready(&env.client, SMALL, "az2", 1).await;
    assert_eq!(az1.consecutive_boot_failures, 0, "{az1:?}");
    let sim_servers = env.sim.servers();
    for (az, want) in [("az1", 2), ("az2", 1)] {
        let instances = env
            .client
            .list_instances(SMALL, az)
            .await
            .expect("list instances");
        let ready: Vec<_> = instances
            .iter()
            .filter(|i| i.state == api::InstanceState::Ready as i32)
            .collect();
        assert!(ready.len() >= want, "{az}: {instances:?}");
        for instance in ready {
            let server = sim_servers
                .iter()
                .find(|s| s.server.id == instance.server_id)
                .unwrap_or_else(|| panic!("no sim server for {instance:?}"));
            assert_eq!(server.server.status, ServerStatus::Active, "{server:?}");
            assert_eq!(server.server.availability_zone, az, "{server:?}");
            assert_eq!(server.flavor, SMALL, "{server:?}");
            assert_eq!(
                server.server.metadata.get(META_POOL),
                Some(&PoolKey::new(SMALL, az).to_string()),
                "{server:?}"
            );
        }
    }
}

/// Allocate with a new volume and a port on tenant-net: a warm hit; the
/// retry gets the same answer; other parameters are ABORTED; Release deletes
/// the server, the port and (asked to) the volume, and the pool refills.
async fn allocate_new_volume(env: &Env) {
    let id = "order-new";
    let request = allocate_request(
        id,
        SMALL,
        "az1",
        new_volume(1, true),
        &env.tenant_net,
        ALLOCATE_TIMEOUT,
    );
    let a = env
        .client
        .allocate(request.clone())
        .await
        .expect("allocate, new volume");
    assert!(a.warm_hit, "a full pool hands out a warm instance: {a:?}");
    check_allocated(env, &a, "az1").await;

    let again = env.client.allocate(request.clone()).await.expect("retry");
    assert_eq!(
        (
            &again.server_id,
            &again.volume_id,
            &again.port_id,
            &again.ip_address
        ),
        (&a.server_id, &a.volume_id, &a.port_id, &a.ip_address),
        "a retry must return the same allocation"
    );
    let mut other = request.clone();
    other.availability_zone = "az2".into();
    let message = expect_code(env.client.allocate(other).await, Code::Aborted);
    assert!(message.contains(id), "{message}");

    env.client
        .release(id, Some(true))
        .await
        .expect("release, delete volume");
    wait_released(env, id, &a).await;
    eventually(&format!("volume {} to be deleted", a.volume_id), || async {
        match env.sim.volumes().iter().find(|v| v.id == a.volume_id) {
            None => Ok(()),
            Some(v) => Err(format!("{v:?}")),
        }
    })
    .await;
    wait_ready(&env.client, SMALL, "az1", 2).await;
}

/// Allocate with a tenant's existing, available volume: attached; a second
/// Allocate with it is FAILED_PRECONDITION; after Release (kept, the
/// default) it is available again.
async fn allocate_existing_volume(env: &Env) {
    let volume_id = env.sim.create_volume_for_test("tenant", "az2", 1);
    let id = "order-existing";
    let b = env
        .client
        .allocate(allocate_request(
            id,
            SMALL,
            "az2",
            existing_volume(&volume_id),
            &env.tenant_net,
            ALLOCATE_TIMEOUT,
        ))
        .await
        .expect("allocate with the tenant's volume");
    assert_eq!(b.volume_id, volume_id, "{b:?}");
    assert!(b.warm_hit, "{b:?}");
    check_allocated(env, &b, "az2").await;

    // Fencing: a volume in use is never attached again.
    let message = expect_code(
        env.client
            .allocate(allocate_request(
                "order-fenced",
                SMALL,
                "az2",
                existing_volume(&volume_id),
                &env.tenant_net,
                ALLOCATE_TIMEOUT,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains(&volume_id), "{message}");
    // The refused request took nothing: the volume is still b's alone.
    let v = sim_volume(env, &volume_id);
    assert_eq!(v.attached_to, vec![b.server_id.clone()], "{v:?}");

    env.client
        .release(id, None)
        .await
        .expect("release, keep volume");
    wait_released(env, id, &b).await;
    eventually("the tenant's volume to be available again", || async {
        let v = env
            .sim
            .volumes()
            .into_iter()
            .find(|v| v.id == volume_id)
            .ok_or("the kept volume was deleted")?;
        if v.status == VolumeStatus::Available && v.attached_to.is_empty() {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    wait_ready(&env.client, SMALL, "az2", 1).await;
}

/// A server with warmpool's tag and metadata that the store does not know
/// (what a crash right after POST /servers leaves), created over HTTP by the
/// driver, is deleted by the reconciler; the pool's own servers are not.
///
/// (`SimCloud::inject_leak` is not used: it creates the server in the model
/// without Nova tags, so the OpenStack driver, which lists pool servers by
/// tag, never sees it.)
async fn leaked_server_is_deleted(env: &Env) {
    let before = leaks_deleted(&env.metrics_url()).await;
    let pool_servers_before: Vec<String> = env
        .client
        .list_instances(SMALL, "az1")
        .await
        .expect("list instances")
        .into_iter()
        .filter(|i| i.state == api::InstanceState::Ready as i32)
        .map(|i| i.server_id)
        .collect();
    let pool = PoolKey::new(SMALL, "az1");
    let instance = "leak-1".to_owned();
    let leak = env
        .driver
        .create_server(&ServerSpec {
            name: format!("warmpool-{instance}"),
            pool: pool.clone(),
            image: IMAGE.into(),
            metadata: BTreeMap::from([
                (META_POOL.to_owned(), pool.to_string()),
                (META_INSTANCE.to_owned(), instance.clone()),
            ]),
        })
        .await
        .expect("create the leaked server");
    assert!(
        env.sim.servers().iter().any(|s| s.server.id == leak.id),
        "the leak exists"
    );
    wait_server_gone(env, &leak.id).await;
    // Exactly one leak: the pool's own servers are not taken for leaks.
    let after = eventually("the leak to be counted", || async {
        let after = leaks_deleted(&env.metrics_url()).await;
        if after >= before + 1.0 {
            Ok(after)
        } else {
            Err(format!(
                "warmpool_leaks_deleted_total {after}, was {before}"
            ))
        }
    })
    .await;
    assert_eq!(after, before + 1.0, "more than one server taken for a leak");
    let live: Vec<String> = env.sim.servers().into_iter().map(|s| s.server.id).collect();
    for id in &pool_servers_before {
        assert!(live.contains(id), "ready pool server {id} was deleted");
    }
    wait_ready(&env.client, SMALL, "az1", 2).await;
}

/// No db.huge server fits the project's cores quota: the pool says so and
/// stays empty, and the face holds no db.huge server.
async fn quota_is_reported(env: &Env) {
    let huge = eventually("db.huge@az1 to report the quota", || async {
        let pool = env
            .client
            .get_pool(HUGE, "az1")
            .await
            .map_err(|e| e.to_string())?;
        let sizing = pool.sizing.clone().unwrap_or_default();
        // Read from the cloud's limits: 64 vCPUs, more than the cores quota.
        if sizing.beyond_quota && sizing.plan_reason == "quota" {
            Ok(pool)
        } else {
            Err(format!(
                "beyond_quota {}, quota_limited_by {:?}, plan_reason {:?}, counts {:?}",
                sizing.beyond_quota, sizing.quota_limited_by, sizing.plan_reason, pool.counts
            ))
        }
    })
    .await;
    let sizing = huge.sizing.clone().unwrap_or_default();
    assert!(
        sizing.quota_limited_by.contains("cores") && sizing.quota_limited_by.contains("64"),
        "{sizing:?}"
    );
    assert_eq!(huge.counts.unwrap_or_default().ready, 0, "{huge:?}");
    assert!(
        !env.sim.servers().iter().any(|s| s.flavor == HUGE),
        "a db.huge server exists past the quota"
    );
}

/// A buyer asking for a cold boot of db.huge is refused at once with
/// FAILED_PRECONDITION naming the quota: no release would make room.
async fn cold_boot_past_quota(env: &Env) {
    let mut cold = allocate_request(
        "order-huge",
        HUGE,
        "az1",
        new_volume(1, false),
        &env.tenant_net,
        ALLOCATE_TIMEOUT,
    );
    cold.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    let message = expect_code(env.client.allocate(cold).await, Code::FailedPrecondition);
    assert!(message.to_lowercase().contains("quota"), "{message}");
}

/// After all of the above (quota refusals all along): still serving, the
/// small pools full, db.huge still empty; nothing left attached.
async fn survived(env: &Env) {
    let pools = env.client.list_pools().await.expect("list pools");
    assert_eq!(pools.len(), 3, "{pools:?}");
    wait_ready(&env.client, SMALL, "az1", 2).await;
    wait_ready(&env.client, SMALL, "az2", 1).await;
    let huge = env
        .client
        .get_pool(HUGE, "az1")
        .await
        .expect("db.huge pool");
    assert_eq!(huge.counts.unwrap_or_default().ready, 0, "{huge:?}");
    // Every port warmpool made is gone with its allocation.
    let ports = env.sim.ports();
    assert!(
        ports.iter().all(|p| p.network_id != env.tenant_net),
        "tenant ports left behind: {ports:?}"
    );
}

/// The allocation is released and its server and port are gone from the face.
async fn wait_released(env: &Env, id: &str, a: &api::Allocation) {
    eventually(&format!("allocation {id} to be released"), || async {
        let got = env
            .client
            .get_allocation(id)
            .await
            .map_err(|e| e.to_string())?;
        if got.state == api::AllocationState::Released as i32 {
            Ok(())
        } else {
            Err(format!("{:?}", got.state))
        }
    })
    .await;
    wait_server_gone(env, &a.server_id).await;
    eventually(&format!("port {} to be deleted", a.port_id), || async {
        match env.sim.ports().iter().find(|p| p.id == a.port_id) {
            None => Ok(()),
            Some(p) => Err(format!("{p:?}")),
        }
    })
    .await;
}

fn sim_volume(env: &Env, id: &str) -> pool_manager::cloud::Volume {
    env.sim
        .volumes()
        .into_iter()
        .find(|v| v.id == id)
        .unwrap_or_else(|| panic!("volume {id} is not in the face"))
}

/// The allocation is complete, and the face agrees: the server is ACTIVE
/// with the volume and port attached, the volume is in use by it, the port
/// is bound to it with an address on tenant-net.
async fn check_allocated(env: &Env, a: &api::Allocation, az: &str) {
    assert_eq!(a.state, api::AllocationState::Allocated as i32, "{a:?}");
    assert_eq!(a.availability_zone, az, "{a:?}");
    for (field, value) in [
        ("server_id", &a.server_id),
        ("volume_id", &a.volume_id),
        ("port_id", &a.port_id),
        ("ip_address", &a.ip_address),
    ] {
        assert!(!value.is_empty(), "{field} is empty: {a:?}");
    }
    // tenant-net is 10.0.0.0/16 (HttpSettings::default).
    assert!(a.ip_address.starts_with("10.0."), "{a:?}");
    let t = a.timings.expect("timings are set");
    for (step, d) in [
        ("claim", t.claim),
        ("volume", t.volume),
        ("port", t.port),
        ("verify", t.verify),
        ("total", t.total),
    ] {
        assert!(d.is_some(), "timings.{step} unset: {t:?}");
    }
    let server = env
        .sim
        .server(&a.server_id)
        .unwrap_or_else(|| panic!("server {} is not in the face", a.server_id));
    assert_eq!(server.server.status, ServerStatus::Active, "{server:?}");
    assert_eq!(server.server.availability_zone, az, "{server:?}");
    assert_eq!(server.flavor, SMALL, "{server:?}");
    assert!(
        server.server.attached_volumes.contains(&a.volume_id),
        "{server:?}"
    );
    assert!(
        server.server.attached_ports.contains(&a.port_id),
        "{server:?}"
    );
    let volume = sim_volume(env, &a.volume_id);
    assert_eq!(volume.status, VolumeStatus::InUse, "{volume:?}");
    assert_eq!(volume.attached_to, vec![a.server_id.clone()], "{volume:?}");
    assert_eq!(volume.availability_zone, az, "{volume:?}");
    let port = env
        .sim
        .ports()
        .into_iter()
        .find(|p| p.id == a.port_id)
        .unwrap_or_else(|| panic!("port {} is not in the face", a.port_id));
    assert_eq!(port.network_id, env.tenant_net, "{port:?}");
    assert_eq!(
        port.device_id.as_deref(),
        Some(a.server_id.as_str()),
        "{port:?}"
    );
    assert_eq!(
        port.ip_address.as_deref(),
        Some(a.ip_address.as_str()),
        "{port:?}"
    );
    // The driver reads the same over HTTP.
    let over_http = env
        .driver
        .get_server(&a.server_id)
        .await
        .expect("get the allocated server over HTTP");
    assert!(
        over_http.attached_volumes.contains(&a.volume_id)
            && over_http.attached_ports.contains(&a.port_id),
        "{over_http:?}"
    );
}

async fn wait_ready(client: &Client, flavor: &str, az: &str, ready: u32) -> api::Pool {
    eventually(&format!("{flavor}@{az} to have {ready} ready"), || async {
        let pool = client
            .get_pool(flavor, az)
            .await
            .map_err(|e| e.to_string())?;
        let c = pool.counts.unwrap_or_default();
        if c.ready >= ready {
            Ok(pool)
        } else {
            Err(format!("{c:?}, last_error {:?}", pool.last_error))
        }
    })
    .await
}

/// The server is gone from the face (deleted or being deleted).
async fn wait_server_gone(env: &Env, server_id: &str) {
    eventually(&format!("server {server_id} to be deleted"), || async {
        match env.sim.server(server_id) {
            None => Ok(()),
            Some(s) if s.server.status == ServerStatus::Deleted => Ok(()),
            Some(s) => Err(format!("{:?}", s.server.status)),
        }
    })
    .await;
}

/// Polls `check` every 100 ms until it returns `Ok`, for up to [`PATIENCE`];
/// on timeout panics with `what` and the last state `check` described.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {PATIENCE:?} waiting for {what}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `warmpool_leaks_deleted_total` from the daemon's /metrics, summed over
/// its pool labels; 0 before the first leak.
async fn leaks_deleted(metrics_url: &str) -> f64 {
    let (status, _, body) = support::http_get(metrics_url).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| {
            l.strip_prefix("warmpool_leaks_deleted_total")
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unreadable sample {l:?}"))
        })
        .sum()
}
