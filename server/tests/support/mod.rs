//! What the gRPC, metrics and deploy-file tests share: a real warmpoold started
//! in-process on 127.0.0.1:0 ports with the embedded cloud (real MySQL
//! greeting listeners, 1/100 speed), a tiny HTTP client, and a reader of the
//! metric names a `/metrics` body exposes.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod pki;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Code;
use warmpool_client::{api, Client, ClientError};
use warmpool_server::config::Config;
use warmpool_server::Running;

/// The log capture (INFO and above, this thread's lines: a current-thread
/// test's tasks, the cloudsim face's and the daemon's included, run on it)
/// and the global subscriber beside it, which the tests that capture
/// nothing install for their log output (`RUST_LOG`, warn by default).
#[allow(unused_imports)] // as dead_code: a test binary may not capture
pub use warmpool_test_support::{install_global_subscriber as init_tracing, Logs};

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A pool for [`Daemon::start`]: `(flavor, az, min_ready, max_ready)`.
pub type PoolDecl<'a> = (&'a str, &'a str, u32, u32);

/// A running warmpoold and a gRPC client connected to it.
pub struct Daemon {
    pub running: Running,
    pub client: Client,
    stop: oneshot::Sender<()>,
    /// The data dir, when the daemon owns it.
    _data: Option<tempfile::TempDir>,
}

/// The config file `Daemon::start` runs with, as an operator would write
/// it: both listeners on 127.0.0.1:0 (tests run in parallel), a 5 s
/// shutdown grace, short manager intervals, the embedded cloud at 1/100
/// speed and `pools` (none: not even the demo's).
pub fn config_text(data_dir: &Path, pools: &[PoolDecl<'_>]) -> String {
    let mut text = format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = {data_dir:?}
shutdown_grace = "5s"
{no_pools}

[manager]
poll_interval = "50ms"
replenish_interval = "100ms"
reconcile_interval = "1s"
max_concurrent_boots = 4

# A lone boot takes 90 s simulated: 0.9 s here.
[cloud]
kind = "embedded"
time_scale = 0.01
seed = 7
"#,
        data_dir = data_dir.join("store").display().to_string(),
        no_pools = if pools.is_empty() { "pools = []" } else { "" },
    );
    for (flavor, az, min_ready, max_ready) in pools {
        text += &format!(
            r#"
[[pools]]
flavor = "{flavor}"
availability_zone = "{az}"
min_ready = {min_ready}
max_ready = {max_ready}
image = "mysql-8.0"
boot_timeout = "60s"
"#
        );
    }
    text
}

/// [`config_text`], parsed by the daemon's own config loader.
pub fn config(data_dir: &Path, pools: &[PoolDecl<'_>]) -> Config {
    let text = config_text(data_dir, pools);
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

impl Daemon {
    /// Starts warmpoold from [`config_text`] in a new temporary data dir, so
    /// the test goes through the daemon's own config loader.
    pub async fn start(pools: &[PoolDecl<'_>]) -> Daemon {
        let data = tempfile::tempdir().expect("temp dir");
        let text = config_text(data.path(), pools);
        Self::start_text(&text, data).await
    }

    /// Starts warmpoold from a config file text whose data dir is in `data`.
    pub async fn start_text(text: &str, data: tempfile::TempDir) -> Daemon {
        let config = Config::parse(text).expect("the test config parses");
        Self::run(config, Some(data)).await
    }

    /// Starts warmpoold from [`config_text`] with its store in `data_dir`,
    /// which outlives the daemon (a restart may open it again).
    pub async fn start_in(data_dir: &Path, pools: &[PoolDecl<'_>]) -> Daemon {
        Self::run(config(data_dir, pools), None).await
    }

    /// Starts warmpoold from `config` as parsed, its data dir the test's.
    pub async fn run_config(config: Config) -> Daemon {
        Self::run(config, None).await
    }

    async fn run(config: Config, data: Option<tempfile::TempDir>) -> Daemon {
        init_tracing();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = warmpool_server::start(config, async move {
            // A dropped sender (test over, or panicked) stops the daemon too.
            let _ = stopped.await;
        })
        .await
        .expect("warmpoold starts");
        assert!(running.metrics_addr.ip().is_loopback());
        assert_ne!(running.metrics_addr.port(), 0);
        assert_ne!(running.metrics_addr, running.grpc_addr);
        let client = Client::connect(&format!("http://{}", running.grpc_addr))
            .await
            .expect("client connects");
        Daemon {
            running,
            client,
            stop,
            _data: data,
        }
    }

    /// The gRPC endpoint, as a client dials it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.running.grpc_addr)
    }

    /// The embedded cloud the daemon runs on.
    pub fn cloud(&self) -> &cloudsim::SimCloud {
        self.running.cloud.as_deref().expect("embedded cloud")
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.running.metrics_addr)
    }

    /// One scrape of `/metrics`; panics unless it is a 200 in the
    /// OpenMetrics text format.
    pub async fn scrape(&self) -> String {
        let (status, content_type, body) = http_get(&self.metrics_url()).await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "content type {content_type}"
        );
        body
    }

    /// Asks for a graceful shutdown without waiting for it: the task
    /// serving the daemon, and the data dir it owns (if any), kept for the
    /// test to open the store once the task has ended.
    pub fn stop(
        self,
    ) -> (
        tokio::task::JoinHandle<anyhow::Result<()>>,
        Option<tempfile::TempDir>,
    ) {
        let _ = self.stop.send(());
        (self.running.served, self._data)
    }

    /// Graceful shutdown; afterwards warmpoold holds neither listening
    /// socket.
    pub async fn shut_down(self) {
        let Daemon {
            running,
            client,
            stop,
            _data,
        } = self;
        drop(client);
        let Running {
            grpc_addr,
            metrics_addr,
            served,
            ..
        } = running;
        let listening = [metrics_addr, grpc_addr].map(|addr| (addr, listening_socket(addr)));
        stop.send(()).expect("daemon still running");
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("shutdown within 30 s")
            .expect("server task did not panic")
            .expect("clean shutdown");
        // Whether the port still answers tells nothing: another test's
        // listener may have been given it since (bind(0) hands out freed
        // ports), and a child another test forks as the listener closes
        // holds a copy of it, which answers, until the child execs.
        for (addr, socket) in listening {
            assert!(
                !holds_socket(socket),
                "warmpoold still holds its listening socket on {addr} after shutdown"
            );
        }
    }
}

/// The inode of the socket listening on `addr` (an IPv4 address, known to
/// be listening), from the kernel's table (Linux): it tells the socket from
/// another one later given the same port. The table is read in chunks, and
/// an entry can be skipped when sockets come and go between two of them, so
/// it is read again until the entry is found.
pub fn listening_socket(addr: std::net::SocketAddr) -> u64 {
    const LISTEN: &str = "0A";
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not an IPv4 address");
    };
    // The table spells an address as the hex of its bytes in memory order.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let found = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&LISTEN))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        });
        if let Some(inode) = found {
            return inode;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no LISTEN entry for {addr} in /proc/net/tcp"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether one of this process's descriptors is the socket `inode` (Linux).
/// A forked child's copy is in the child's own descriptor table, not here.
pub fn holds_socket(inode: u64) -> bool {
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == &*socket))
}

/// GET `url` (plain HTTP/1.1): status, Content-Type and body.
pub async fn http_get(url: &str) -> (u16, String, String) {
    let (status, headers, body) = http_send("GET", url, &[], None).await;
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body)
}

/// GET `url` (plain HTTP/1.1): its status, or why there was none (refused,
/// not HTTP/1, no answer within 2 s), for a wait that must not panic on a
/// listener other than the one it waits for.
pub async fn http_status(url: &str) -> Result<u16, String> {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(2), client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    }
}

/// `method` `url` (plain HTTP/1.1) with `headers` and `body`: status,
/// headers and body.
pub async fn http_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, hyper::HeaderMap, String) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("a valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"))
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    )
}

/// A metric family declared in a `/metrics` body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: Option<String>,
}

/// The families a `/metrics` body declares (`# TYPE` lines) with their
/// `# HELP` text.
pub fn families(body: &str) -> Vec<Family> {
    let mut families = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let help = body.lines().find_map(|l| {
                l.strip_prefix("# HELP ")?
                    .strip_prefix(name)?
                    .strip_prefix(' ')
                    .map(str::to_owned)
            });
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                help,
            });
        }
    }
    families
}

/// Every series name a PromQL query could use against this body: the names
/// of the samples present, plus the sample names each declared family
/// implies even before it has a sample (`_total` for an OpenMetrics counter;
/// `_bucket`, `_sum`, `_count` for a histogram).
pub fn exposed_names(body: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect();
    for family in families(body) {
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{}{suffix}", family.name));
        }
    }
    names
}

/// Identifiers in `text` that look like warmpool metric names.
pub fn warmpool_identifiers(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("warmpool_") {
                found.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    found
}

/// Polls `check` every 200 ms until it returns `Ok`, for up to `patience`;
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
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The `expr` strings of a Grafana dashboard: panel targets and annotations.
pub fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The Grafana dashboard in deploy/.
pub fn dashboard() -> serde_json::Value {
    let path = deploy_dir().join("grafana/warmpool.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

// ---- request builders and checks shared by the e2e suites -----------------

/// A new volume of `size_gib`, deleted with the allocation if asked.
pub fn new_volume(size_gib: u32, delete_on_release: bool) -> api::VolumeSpec {
    api::VolumeSpec {
        source: Some(api::volume_spec::Source::NewVolume(api::NewVolume {
            size_gib,
            volume_type: String::new(),
        })),
        delete_on_release,
    }
}

/// A fail-fast purchase labelled with its order id, with a port on `network_id`.
pub fn allocate_request(
    request_id: &str,
    flavor: &str,
    az: &str,
    volume: api::VolumeSpec,
    network_id: &str,
    timeout: Duration,
) -> api::AllocateRequest {
    api::AllocateRequest {
        request_id: request_id.into(),
        tenant_project_id: "tenant".into(),
        flavor: flavor.into(),
        availability_zone: az.into(),
        volume: Some(volume),
        network: Some(api::NetworkSpec {
            network_id: network_id.into(),
            subnet_id: String::new(),
            fixed_ip: String::new(),
        }),
        labels: [("order".to_owned(), request_id.to_owned())].into(),
        empty_pool_policy: api::EmptyPoolPolicy::FailFast.into(),
        timeout: Some(prost_types::Duration {
            seconds: i64::try_from(timeout.as_secs()).expect("a timeout in range"),
            nanos: 0,
        }),
    }
}

pub fn existing_volume(id: &str) -> api::VolumeSpec {
    api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(id.to_owned())),
        delete_on_release: false,
    }
}

/// The message of a gRPC error with the expected code; panics on anything else.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, ClientError>, code: Code) -> String {
    match result {
        Err(ClientError::Status { code: got, message }) => {
            assert_eq!(got, code, "wrong code; message: {message}");
            message
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// Options dialing with `ca` as the trusted root and `identity` as the
/// client certificate.
pub fn tls_options(
    ca: Option<Vec<u8>>,
    identity: Option<&pki::Issued>,
) -> warmpool_client::ConnectOptions {
    warmpool_client::ConnectOptions {
        tls: warmpool_client::TlsOptions {
            ca_pem: ca,
            identity_pem: identity.map(|issued| {
                (
                    std::fs::read(&issued.cert_file).unwrap(),
                    std::fs::read(&issued.key_file).unwrap(),
                )
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Connects and lists pools: the whole TLS handshake and one call.
pub async fn list_pools_over(
    endpoint: &str,
    options: warmpool_client::ConnectOptions,
) -> Result<usize, String> {
    let client = Client::connect_with(endpoint, options)
        .await
        .map_err(|e| e.to_string())?;
    client
        .list_pools()
        .await
        .map(|pools| pools.len())
        .map_err(|e| e.to_string())
}
