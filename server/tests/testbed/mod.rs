//! What the tests against deploy/testbed share: where the testbed is, a
//! check that fails (never skips) when it is not up, warmpoold configs for
//! it, a daemon started in-process, and direct OpenStack access through
//! warmpool's own driver for what a test must do behind the daemon's back
//! (a tenant's volume, a leaked server, checking what the cloud holds).
//!
//! The testbed is a real OpenStack on 127.0.0.1 (Keystone :5000, Nova :8774,
//! Cinder :8776, Neutron :9696, Glance :9292) whose servers run on Nova's
//! fake virt driver: they go ACTIVE but run no mysqld, so the daemon is
//! configured with `probe_address_override` = the testbed's own MariaDB.
//! See deploy/testbed/README.md.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pool_manager::openstack::{OpenStackCloud, OpenStackSettings};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use warmpool_client::Client;
use warmpool_server::config::{clouds_yaml_entry, Config};
use warmpool_server::Running;

/// The testbed's APIs (deploy/testbed/common.sh) that warmpool talks to.
pub const ENDPOINTS: [(&str, &str); 5] = [
    ("Keystone", "127.0.0.1:5000"),
    ("Nova", "127.0.0.1:8774"),
    ("Cinder", "127.0.0.1:8776"),
    ("Neutron", "127.0.0.1:9696"),
    ("Glance", "127.0.0.1:9292"),
];
/// The testbed's MariaDB: every pool server is probed here.
pub const MARIADB: &str = "127.0.0.1:3306";

/// clouds.yaml entries (deploy/testbed/bootstrap_warmpool.py). One project
/// per consumer: a warmpoold deletes every warmpool server its store does
/// not know, so the e2e suite must not share a project with anyone else.
pub const E2E_CLOUD: &str = "warmpool-e2e";
pub const E2E_PASSWORD: &str = "e2epass";
pub const E2E_NETWORK: &str = "warmpool-e2e-net";
pub const NOQUOTA_CLOUD: &str = "warmpool-noquota";
pub const NOQUOTA_NETWORK: &str = "warmpool-noquota-net";
/// A pool user with the member role only (no admin), as on a cloud that
/// grants warmpool's user no more.
pub const MEMBER_CLOUD: &str = "warmpool-member";
pub const MEMBER_NETWORK: &str = "warmpool-member-net";
pub const TENANT_CLOUD: &str = "ostb-tenant";
pub const TENANT_NETWORK: &str = "tenant-net";
/// The image warmpool's pools name; the fake virt driver never reads it.
pub const IMAGE: &str = "mysql-8.0";
/// The testbed's Cinder has one availability zone, Nova has az1 and az2.
pub const VOLUME_AZ: &str = "nova";

/// How long a single eventual condition may take. A fake-virt boot is ACTIVE
/// in 1-2 s on an idle testbed; this is generous for a loaded 2-core CI.
pub const PATIENCE: Duration = Duration::from_secs(180);

pub use warmpool_test_support::install_global_subscriber as init_tracing;

pub fn testbed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/testbed")
}

pub fn clouds_yaml() -> PathBuf {
    testbed_dir().join("clouds.yaml")
}

/// What to tell someone whose testbed is not there.
pub const HOW_TO_START: &str = "bring the testbed up with `sudo deploy/testbed/up.sh` \
     (about 3 minutes from scratch), or run `bash scripts/test.sh`, which starts it";

/// Why the testbed at `endpoints` + `mariadb` is unusable, or `Ok`.
pub async fn check_reachable(endpoints: &[(&str, &str)], mariadb: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    for (name, addr) in endpoints {
        let connect = tokio::net::TcpStream::connect(*addr);
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("{name} at {addr}: {e}")),
            Err(_) => problems.push(format!("{name} at {addr}: no answer in 3 s")),
        }
    }
    if problems.is_empty() {
        if let Err(e) = mariadb_greeting(mariadb).await {
            problems.push(format!("MariaDB at {mariadb}: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the OpenStack testbed (deploy/testbed) is not reachable: {}. To run this test, {HOW_TO_START}.",
            problems.join("; ")
        ))
    }
}

/// Panics (fails the test, never skips it) unless the testbed answers.
pub async fn require_testbed() {
    if let Err(message) = check_reachable(&ENDPOINTS, MARIADB).await {
        panic!("{message}");
    }
}

/// The first bytes MariaDB sends a TCP client: its greeting, or an error
/// packet such as 1130 (host not allowed), which fails every warmpool probe.
async fn mariadb_greeting(addr: &str) -> Result<(), String> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 512];
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .map_err(|_| "no greeting in 3 s".to_owned())??;
    if text.contains("MariaDB") {
        Ok(())
    } else {
        Err(format!("no MariaDB greeting, got {text:?}"))
    }
}

/// A connection to the testbed as one clouds.yaml entry, through warmpool's
/// own driver.
pub async fn cloud_as(cloud: &str, management_network: &str) -> OpenStackCloud {
    let auth = clouds_yaml_entry(&clouds_yaml(), cloud)
        .unwrap_or_else(|e| panic!("{}: {e}", clouds_yaml().display()));
    OpenStackCloud::connect(OpenStackSettings::new(auth, management_network))
        .await
        .unwrap_or_else(|e| panic!("cannot log in to the testbed as {cloud}: {e}"))
}

/// An osauth session of the clouds.yaml entry `cloud`'s user, for calls
/// straight to the services, past warmpool's driver.
async fn log_in_as(cloud: &str) -> osauth::Session {
    let auth = clouds_yaml_entry(&clouds_yaml(), cloud)
        .unwrap_or_else(|e| panic!("{}: {e}", clouds_yaml().display()));
    let session = auth
        .create_session()
        .await
        .unwrap_or_else(|e| panic!("cannot log in to the testbed as {cloud}: {e}"));
    session
}

/// The first page of a listing as the clouds.yaml entry `cloud`'s user
/// reads it straight from the service, past warmpool's driver and with no
/// marker: its number of items under `key`, and whether it links a next
/// page (`{key}_links`). `version`: the `OpenStack-API-Version` header, if
/// any ("compute 2.52" for tag filters; "volume 3.67" for Cinder's paths
/// without the project id, as osauth's catalog lookup gives them).
pub async fn first_page<Srv>(
    cloud: &str,
    service: Srv,
    version: Option<&str>,
    path: &[&str],
    query: &[(&str, &str)],
    key: &str,
) -> (usize, bool)
where
    Srv: osauth::services::ServiceType + Send + Clone,
{
    let session = log_in_as(cloud).await;
    let mut request = session.get(service, path).query(query);
    if let Some(version) = version {
        request = request.header("OpenStack-API-Version", version);
    }
    let body: serde_json::Value = request
        .fetch()
        .await
        .unwrap_or_else(|e| panic!("GET {} as {cloud}: {e}", path.join("/")));
    let items = body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .len();
    let next = body[format!("{key}_links")]
        .as_array()
        .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"));
    (items, next)
}

/// The ids of the servers tagged `tag` Nova shows SOFT_DELETED, in every
/// project, read as `cloud` (an admin). Nova's listings leave those out
/// unless asked for them by status, so a client's own listing misses the
/// servers a daemon deleted on a Nova that soft-deletes. Follows the
/// pages (the testbed pages Nova at 2 items).
pub async fn soft_deleted_servers(cloud: &str, tag: &str) -> Vec<String> {
    let session = log_in_as(cloud).await;
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..1000 {
        let mut query = vec![
            ("status", "SOFT_DELETED".to_owned()),
            ("all_tenants", "1".to_owned()),
            ("tags", tag.to_owned()),
        ];
        if let Some(marker) = ids.last() {
            query.push(("marker", marker.clone()));
        }
        let body: serde_json::Value = session
            .get(osauth::services::COMPUTE, &["servers", "detail"])
            .query(&query)
            .header("OpenStack-API-Version", "compute 2.52")
            .fetch()
            .await
            .unwrap_or_else(|e| panic!("GET servers/detail?status=SOFT_DELETED as {cloud}: {e}"));
        let page: Vec<String> = body["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("no servers in {body}"))
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        let next = body["servers_links"]
            .as_array()
            .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"));
        let last = page.is_empty() || !next;
        ids.extend(page);
        if last {
            return ids;
        }
    }
    panic!("Nova's SOFT_DELETED listing still links a next page after 1000")
}

/// A pool for [`config_text`].
#[derive(Clone, Debug)]
pub struct PoolDecl {
    pub flavor: &'static str,
    pub az: &'static str,
    pub min_ready: u32,
    pub max_ready: u32,
}

/// `[cloud] kind = "openstack"` for the testbed as `cloud`, as an operator
/// would write it (see deploy/testbed/README.md).
pub fn cloud_section(cloud: &str, management_network: &str) -> String {
    format!(
        r#"
[cloud]
kind = "openstack"
cloud = "{cloud}"
clouds_yaml = {clouds_yaml:?}
management_network = "{management_network}"
# Fake-virt servers run no mysqld: probe the testbed's MariaDB for each.
probe_address_override = "{MARIADB}"
request_timeout = "60s"

# Cinder has a single zone, "nova"; Nova has az1 and az2.
[cloud.availability_zones.az1]
volume_availability_zone = "{VOLUME_AZ}"
[cloud.availability_zones.az2]
volume_availability_zone = "{VOLUME_AZ}"
"#,
        clouds_yaml = clouds_yaml().display().to_string(),
    )
}

/// A whole warmpoold config for the testbed: loopback listeners on free
/// ports, short manager intervals (the reconciler runs every 2 s), `pools`.
pub fn config_text(data_dir: &Path, cloud: &str, network: &str, pools: &[PoolDecl]) -> String {
    let mut text = format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = {data_dir:?}
shutdown_grace = "10s"
{pools_empty}
[manager]
poll_interval = "250ms"
replenish_interval = "1s"
reconcile_interval = "2s"
max_concurrent_boots = 2
# The testbed's Nova runs the fake virt driver: boots take seconds.
allow_short_intervals = true
{cloud}"#,
        data_dir = data_dir.display().to_string(),
        pools_empty = if pools.is_empty() { "pools = []" } else { "" },
        cloud = cloud_section(cloud, network),
    );
    for p in pools {
        text += &format!(
            r#"
[[pools]]
flavor = "{flavor}"
availability_zone = "{az}"
min_ready = {min}
max_ready = {max}
image = "{IMAGE}"
boot_timeout = "3m"
"#,
            flavor = p.flavor,
            az = p.az,
            min = p.min_ready,
            max = p.max_ready,
        );
    }
    text
}

/// A warmpoold running in-process against the testbed, and a gRPC client.
pub struct Daemon {
    pub running: Running,
    pub client: Client,
    stop: oneshot::Sender<()>,
}

impl Daemon {
    pub async fn start(config_text: &str) -> Daemon {
        init_tracing();
        let config = Config::parse(config_text)
            .unwrap_or_else(|e| panic!("{e}\n--- config:\n{config_text}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let running = warmpool_server::start(config, async move {
            // A dropped sender (test over, or panicked) stops the daemon too.
            let _ = stopped.await;
        })
        .await
        .unwrap_or_else(|e| panic!("warmpoold does not start against the testbed: {e:#}"));
        let client = Client::connect(&format!("http://{}", running.grpc_addr))
            .await
            .expect("client connects");
        Daemon {
            running,
            client,
            stop,
        }
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.running.metrics_addr)
    }

    /// Graceful shutdown, bounded.
    pub async fn shut_down(self) {
        let Daemon {
            running,
            client,
            stop,
        } = self;
        drop(client);
        let Running {
            served, manager, ..
        } = running;
        drop(manager);
        stop.send(()).expect("daemon still running");
        tokio::time::timeout(Duration::from_secs(60), served)
            .await
            .expect("shutdown within 60 s")
            .expect("server task did not panic")
            .expect("clean shutdown");
    }
}

/// Polls `check` every 500 ms until it returns `Ok`, for up to `patience`;
/// on timeout panics with `what` and the last state `check` described.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {patience:?} waiting for {what}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A name no earlier run used: tests re-run against the same testbed.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{:x}", nanos % (1 << 40))
}

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("local addr")
}
