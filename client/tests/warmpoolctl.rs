//! The real `warmpoolctl` binary against a real warmpoold, started in-process
//! on 127.0.0.1:0 with the embedded cloud at 1/100 speed (a boot takes about
//! 0.6 s) and real MySQL-greeting listeners.
//!
//! Real clock: every wait is a bounded polling loop, and nothing asserts on
//! how long anything took.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::time::Instant;
use warmpool_server::config::Config;

#[path = "../../server/tests/support/pki.rs"]
mod pki;

/// How long any eventual condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A pool for the config file: flavor, availability zone, min_ready, max_ready.
#[derive(Clone, Debug)]
struct PoolDef(&'static str, &'static str, u32, u32);

fn pool(flavor: &'static str, az: &'static str, min_ready: u32, max_ready: u32) -> PoolDef {
    PoolDef(flavor, az, min_ready, max_ready)
}

/// A daemon config, written as the TOML an operator would write: on
/// 127.0.0.1:0 (tests run in parallel, so every daemon gets its own ports),
/// short manager intervals, and the embedded cloud at 1/100 speed with real
/// MySQL-greeting listeners (a lone boot takes 90 s simulated: 0.9 s here).
fn config(data_dir: &Path, pools: Vec<PoolDef>) -> Config {
    let mut text = String::from(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
shutdown_grace = "5s"
"#,
    );
    if pools.is_empty() {
        text.push_str("pools = []\n");
    }
    text.push_str(
        r#"
[manager]
poll_interval = "50ms"
replenish_interval = "100ms"
reconcile_interval = "1s"
max_concurrent_boots = 4

[cloud]
kind = "embedded"
time_scale = 0.01
seed = 3
"#,
    );
    for PoolDef(flavor, az, min_ready, max_ready) in pools {
        text.push_str(&format!(
            "\n[[pools]]\nflavor = {flavor:?}\navailability_zone = {az:?}\n\
             min_ready = {min_ready}\nmax_ready = {max_ready}\n\
             image = \"mysql-8.0\"\nboot_timeout = \"1m\"\n"
        ));
    }
    let mut config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.data_dir = data_dir.to_owned();
    config
}

/// A running warmpoold; stops when dropped.
struct Daemon {
    endpoint: String,
    metrics: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
    _running: warmpool_server::Running,
    _dir: tempfile::TempDir,
}

async fn start_daemon(pools: Vec<PoolDef>) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    start_daemon_with(config(dir.path(), pools), dir).await
}

async fn start_daemon_with(config: Config, dir: tempfile::TempDir) -> Daemon {
    let (stop, stopped) = oneshot::channel::<()>();
    let running = warmpool_server::start(config, async move {
        let _ = stopped.await;
    })
    .await
    .expect("warmpoold starts");
    Daemon {
        endpoint: running.grpc_addr.to_string(),
        metrics: running.metrics_addr,
        _stop: stop,
        _running: running,
        _dir: dir,
    }
}

fn ctl(endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warmpoolctl"));
    cmd.env_remove("WARMPOOL_ENDPOINT")
        .env_remove("WARMPOOL_TOKEN")
        .env_remove("WARMPOOL_TOKEN_FILE")
        .env_remove("WARMPOOL_CA_FILE")
        .env_remove("WARMPOOL_CERT_FILE")
        .env_remove("WARMPOOL_KEY_FILE")
        .arg("--endpoint")
        .arg(endpoint)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn success(self) -> String {
        assert!(self.ok, "warmpoolctl failed: {}", self.stderr);
        assert_eq!(self.stderr, "", "stderr on success");
        self.stdout
    }

    #[track_caller]
    fn json(self) -> serde_json::Value {
        let stdout = self.success();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// The one-line error a failed command prints, which must start `error: CODE: `.
    #[track_caller]
    fn error(self, code: &str) -> String {
        let (message, hint) = self.error_and_hint(code);
        assert_eq!(hint, None);
        message
    }

    /// [`Run::error`], and the `hint: ` line that may follow it.
    #[track_caller]
    fn error_and_hint(self, code: &str) -> (String, Option<String>) {
        assert!(!self.ok, "expected failure, got: {}", self.stdout);
        assert_eq!(self.stdout, "", "stdout on failure");
        let prefix = format!("error: {code}: ");
        let mut lines = self.stderr.lines();
        let message = lines.next().unwrap_or_default();
        assert!(message.starts_with(&prefix), "{:?}", self.stderr);
        let hint = lines.next().map(|hint| {
            hint.strip_prefix("hint: ")
                .unwrap_or_else(|| panic!("{:?}", self.stderr))
                .to_owned()
        });
        assert_eq!(lines.next(), None, "{:?}", self.stderr);
        (message[prefix.len()..].to_owned(), hint)
    }
}

async fn run(endpoint: &str, args: &[&str]) -> Run {
    run_with_env(endpoint, &[], args).await
}

/// [`run`] with these environment variables set.
async fn run_with_env(endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = ctl(endpoint);
    command.envs(env.iter().copied());
    let out = tokio::time::timeout(PATIENCE, command.args(args).output())
        .await
        .unwrap_or_else(|_| panic!("warmpoolctl {args:?} hung"))
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A table's rows as header -> cell maps. The pools and images of these
/// tests have no spaces in their names, so only the trailing LAST ERROR
/// column holds any, which the callers do not read (an image such as
/// "MySQL 8.0" would shift the columns after it).
fn table_rows(table: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    // Multi-word headers ("LAST ERROR") are joined by one space; find the
    // start of every column from the header's double-space separators.
    let names: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            names
                .iter()
                .zip(line.split_whitespace())
                .map(|(name, cell)| (name.to_string(), cell.to_string()))
                .collect()
        })
        .collect()
}

fn row<'a>(
    rows: &'a [BTreeMap<String, String>],
    pool: &str,
) -> Option<&'a BTreeMap<String, String>> {
    rows.iter()
        .find(|r| r.get("POOL").map(String::as_str) == Some(pool))
}

/// `key: value` lines as a map.
fn fields(detail: &str) -> BTreeMap<String, String> {
    detail
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Polls `warmpoolctl pools` until every named pool shows READY == TARGET
/// with nothing booting or warming; returns that table.
async fn wait_pools_at_target(endpoint: &str, pools: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = run(endpoint, &["pools"]).await.success();
        let rows = table_rows(&out);
        let at_target = pools.iter().all(|name| {
            row(&rows, name).is_some_and(|r| {
                r["READY"] == r["TARGET"] && r["BOOTING"] == "0" && r["WARMING"] == "0"
            })
        });
        if at_target {
            return out;
        }
        assert!(Instant::now() < deadline, "pools not at target: \n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn allocate_args<'a>(request_id: &'a str, flavor: &'a str, az: &'a str) -> Vec<&'a str> {
    vec![
        "allocate",
        "--request-id",
        request_id,
        "--tenant",
        "tenant-a",
        "--flavor",
        flavor,
        "--az",
        az,
        "--volume-size",
        "10",
        "--network",
        "tenant-net",
        "--label",
        "team=db",
        "--on-empty",
        "fail-fast",
    ]
}

#[tokio::test]
async fn pools_allocate_get_release() {
    let d = start_daemon(vec![
        pool("db.small", "az1", 2, 4),
        pool("db.medium", "az2", 1, 2),
    ])
    .await;
    let ep = d.endpoint.as_str();

    let table = wait_pools_at_target(ep, &["db.small@az1", "db.medium@az2"]).await;
    let rows = table_rows(&table);
    assert_eq!(rows.len(), 2, "{table}");
    let small = row(&rows, "db.small@az1").unwrap();
    assert_eq!(small["READY"], "2", "{table}");
    assert_eq!(small["TARGET"], "2", "{table}");
    assert_eq!(small["MIN"], "2", "{table}");
    assert_eq!(small["MAX"], "4", "{table}");
    assert_eq!(small["ALLOCATED"], "0", "{table}");
    assert_eq!(small["WARM/WAITED/COLD/FAILED"], "0/0/0/0", "{table}");
    assert_eq!(small["STATUS"], "active", "{table}");
    assert_eq!(small["IMAGE"], "mysql-8.0", "{table}");
    assert_eq!(
        row(&rows, "db.medium@az2").unwrap()["READY"],
        "1",
        "{table}"
    );

    let v = run(ep, &["pools", "--output", "json"]).await.json();
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2, "{v}");
    let small = pools.iter().find(|p| p["flavor"] == "db.small").unwrap();
    assert_eq!(small["counts"]["ready"], 2, "{v}");
    assert_eq!(small["effective_target"], 2, "{v}");
    assert_eq!(small["spec"]["boot_timeout"], "1m", "{v}");

    let detail = fields(
        &run(ep, &["pools", "get", "db.small", "az1"])
            .await
            .success(),
    );
    assert_eq!(detail["pool"], "db.small@az1");
    assert_eq!(detail["effective_target"], "2");
    assert!(detail["instances"].starts_with("ready 2,"), "{detail:?}");

    let instances = run(ep, &["instances", "--flavor", "db.small", "--az", "az1"])
        .await
        .success();
    let rows = table_rows(&instances);
    assert_eq!(rows.len(), 2, "{instances}");
    assert!(
        rows.iter()
            .all(|r| r["STATE"] == "READY" && r["SERVER"] != "-" && r["IMAGE"] == "mysql-8.0"),
        "{instances}"
    );

    // allocate: a warm hit with everything the tenant needs.
    let out = run(ep, &allocate_args("order-1", "db.small", "az1"))
        .await
        .success();
    let a = fields(&out);
    assert_eq!(a["request_id"], "order-1", "{out}");
    assert_eq!(a["tenant"], "tenant-a", "{out}");
    assert_eq!(a["pool"], "db.small@az1", "{out}");
    assert_eq!(a["state"], "ALLOCATED", "{out}");
    assert_eq!(a["warm_hit"], "yes", "{out}");
    assert_eq!(a["labels"], "team=db", "{out}");
    for key in ["instance", "server", "volume", "port"] {
        assert!(a[key] != "-" && !a[key].is_empty(), "{key} missing: {out}");
    }
    a["ip_address"]
        .parse::<std::net::IpAddr>()
        .unwrap_or_else(|_| panic!("no IP: {out}"));
    assert!(a["timings"].starts_with("claim "), "{out}");
    assert!(a["timings"].contains(", total "), "{out}");

    // The same order again, as JSON: the same allocation.
    let mut args = allocate_args("order-1", "db.small", "az1");
    args.extend(["--output", "json"]);
    let j = run(ep, &args).await.json();
    assert_eq!(j["server_id"], a["server"].as_str(), "{j}");
    // The table says what a release does to the volume; JSON has a field.
    assert_eq!(
        format!("{} (kept on release)", j["volume_id"].as_str().unwrap()),
        a["volume"],
        "{j}"
    );
    assert_eq!(j["delete_volume_on_release"], false, "{j}");
    assert_eq!(j["port_id"], a["port"].as_str(), "{j}");
    assert_eq!(j["ip_address"], a["ip_address"].as_str(), "{j}");
    assert_eq!(j["state"], "ALLOCATED", "{j}");
    assert_eq!(j["warm_hit"], true, "{j}");
    assert_eq!(j["labels"]["team"], "db", "{j}");
    assert!(j["timings"]["total"].is_string(), "{j}");

    let got = fields(&run(ep, &["get", "order-1"]).await.success());
    assert_eq!(got["server"], a["server"]);
    assert_eq!(got["state"], "ALLOCATED");
    let got = run(ep, &["get", "order-1", "--output", "json"])
        .await
        .json();
    assert_eq!(got["request_id"], "order-1");
    assert_eq!(got["server_id"], a["server"].as_str());

    let rows = table_rows(&run(ep, &["instances"]).await.success());
    let held = rows
        .iter()
        .find(|r| r["REQUEST"] == "order-1")
        .expect("the allocated instance is listed");
    assert_eq!(held["STATE"], "ALLOCATED");
    assert_eq!(held["SERVER"], a["server"]);

    // release
    let released = fields(&run(ep, &["release", "order-1"]).await.success());
    assert_eq!(released["state"], "RELEASED");
    assert_eq!(released["server"], a["server"]);
    let again = run(ep, &["release", "order-1", "--output", "json"])
        .await
        .json();
    assert_eq!(again["state"], "RELEASED");
    assert_eq!(
        fields(&run(ep, &["get", "order-1"]).await.success())["state"],
        "RELEASED"
    );

    // The pool is back at target with nothing allocated.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = run(ep, &["pools"]).await.success();
        let rows = table_rows(&table);
        let small = row(&rows, "db.small@az1").unwrap();
        if small["READY"] == "2" && small["ALLOCATED"] == "0" {
            assert_eq!(small["WARM/WAITED/COLD/FAILED"], "1/0/0/0", "{table}");
            break;
        }
        assert!(Instant::now() < deadline, "pool did not settle: \n{table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An order id already released answers its released allocation, which is
/// no server to provision: `warmpoolctl allocate ... && provision` must stop.
#[tokio::test]
async fn allocating_a_released_order_again_warns_and_fails() {
    let d = start_daemon(vec![pool("db.small", "az1", 1, 2)]).await;
    let ep = d.endpoint.as_str();
    wait_pools_at_target(ep, &["db.small@az1"]).await;
    let args = allocate_args("order-9", "db.small", "az1");
    let bought = fields(&run(ep, &args).await.success());
    assert_eq!(bought["state"], "ALLOCATED");
    run(ep, &["release", "order-9"]).await.success();

    let again = run(ep, &args).await;
    assert!(!again.ok, "exit 0 for a released order: {again:?}");
    // The answer is still shown, as the server gave it.
    let shown = fields(&again.stdout);
    assert_eq!(shown["state"], "RELEASED", "{again:?}");
    assert_eq!(shown["server"], bought["server"], "{again:?}");
    assert_eq!(
        again.stderr,
        "warning: order order-9 was already released; its server is gone. A new purchase needs a new --request-id\n"
    );
    let json = run(ep, &[&args[..], &["--output", "json"]].concat()).await;
    assert!(!json.ok, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["state"], "RELEASED", "{json:?}");
    assert_eq!(json.stderr, again.stderr);
}

/// https:// to a daemon that serves plaintext: the TLS handshake reads the
/// daemon's HTTP/2 frame as a record of an unknown type; the hint says why.
#[tokio::test]
async fn https_to_a_plaintext_daemon_hints_at_http() {
    let d = start_daemon(vec![pool("db.small", "az1", 0, 1)]).await;
    let refused = run(&format!("https://{}", d.endpoint), &["pools"]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", refused.stderr);
    assert!(lines[0].starts_with("error: "), "{}", refused.stderr);
    assert_eq!(
        lines[1],
        format!(
            "hint: the daemon does not answer in TLS: if it serves plaintext, dial http://{}",
            d.endpoint
        ),
    );
}

/// The metrics port speaks HTTP/1.1 only and cuts an HTTP/2 connection
/// off (which status tonic then reads is a race): the hint names the two
/// ports beside TLS, the other cause of a cut-off.
#[tokio::test]
async fn the_metrics_port_as_endpoint_hints_at_the_grpc_port() {
    let d = start_daemon(vec![pool("db.small", "az1", 0, 1)]).await;
    let refused = run(&d.metrics.to_string(), &["pools"]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", refused.stderr);
    assert!(lines[0].starts_with("error: "), "{}", refused.stderr);
    assert!(
        lines[1].starts_with("hint: ")
            && lines[1].contains("metrics_listen")
            && lines[1].contains("`listen` address"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn errors_print_the_code_and_exit_non_zero() {
    let d = start_daemon(vec![
        pool("db.small", "az1", 1, 1),
        pool("db.medium", "az1", 0, 1),
    ])
    .await;
    let ep = d.endpoint.as_str();

    let msg = run(ep, &["get", "nope"]).await.error("NOT_FOUND");
    assert!(msg.contains("\"nope\""), "{msg}");
    run(ep, &["release", "nope"]).await.error("NOT_FOUND");
    let msg = run(ep, &["pools", "get", "db.large", "az2"])
        .await
        .error("NOT_FOUND");
    assert!(msg.contains("db.large@az2"), "{msg}");
    let msg = run(ep, &allocate_args("order-x", "db.large", "az1"))
        .await
        .error("NOT_FOUND");
    assert!(msg.contains("db.large@az1"), "{msg}");

    // The server names the API's field; the hint, the flag that sets it.
    let (msg, hint) = run(ep, &allocate_args("bad id", "db.small", "az1"))
        .await
        .error_and_hint("INVALID_ARGUMENT");
    assert!(msg.starts_with("invalid request_id:"), "{msg}");
    assert_eq!(
        hint.as_deref(),
        Some("request_id is what --request-id sets")
    );
    // `get` and `release` take it as an argument: no flag to name.
    for command in ["get", "release"] {
        let msg = run(ep, &[command, "bad id"])
            .await
            .error("INVALID_ARGUMENT");
        assert!(msg.starts_with("invalid request_id:"), "{msg}");
    }
    let mut args = allocate_args("order-y", "db.small", "az1");
    let at = args.iter().position(|a| *a == "10").unwrap();
    args[at] = "0";
    let (msg, hint) = run(ep, &args).await.error_and_hint("INVALID_ARGUMENT");
    assert!(msg.contains("size_gib"), "{msg}");
    assert_eq!(
        hint.as_deref(),
        Some("volume.new_volume.size_gib is what --volume-size sets")
    );

    let msg = run(ep, &allocate_args("order-ff", "db.medium", "az1"))
        .await
        .error("RESOURCE_EXHAUSTED");
    assert!(msg.contains("db.medium@az1"), "{msg}");

    let msg = run(
        ep,
        &[
            "pools",
            "create",
            "db.small",
            "az1",
            "--min-ready",
            "1",
            "--max-ready",
            "1",
            "--image",
            "mysql-8.0",
        ],
    )
    .await
    .error("ALREADY_EXISTS");
    assert!(msg.contains("db.small@az1"), "{msg}");
    let msg = run(
        ep,
        &[
            "pools",
            "create",
            "db.large",
            "az1",
            "--min-ready",
            "3",
            "--max-ready",
            "1",
            "--image",
            "mysql-8.0",
        ],
    )
    .await
    .error("INVALID_ARGUMENT");
    assert!(msg.contains("max_ready"), "{msg}");
    let msg = run(
        ep,
        &["pools", "update", "db.small", "az1", "--max-ready", "0"],
    )
    .await
    .error("INVALID_ARGUMENT");
    assert!(msg.contains("max_ready"), "{msg}");
    // Accepted once, it panicked every boot of the pool.
    let msg = run(
        ep,
        &[
            "pools",
            "update",
            "db.small",
            "az1",
            "--boot-timeout",
            "100000000000y",
        ],
    )
    .await
    .error("INVALID_ARGUMENT");
    assert!(msg.contains("boot_timeout must be at most 1day"), "{msg}");

    // Same request id, other parameters.
    wait_pools_at_target(ep, &["db.small@az1"]).await;
    run(ep, &allocate_args("order-z", "db.small", "az1"))
        .await
        .success();
    let mut args = allocate_args("order-z", "db.small", "az1");
    let at = args.iter().position(|a| *a == "tenant-net").unwrap();
    args[at] = "net-b";
    let msg = run(ep, &args).await.error("ABORTED");
    assert!(msg.contains("order-z"), "{msg}");
}

#[tokio::test]
async fn a_token_comes_from_a_file_or_the_environment() {
    use warmpool_server::access::{token_sha256, Role};
    use warmpool_server::config::ApiToken;

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), vec![pool("db.small", "az1", 0, 2)]);
    config.api_tokens = vec![ApiToken {
        name: "grafana".into(),
        role: Role::Reader,
        sha256: token_sha256("s3cret-read"),
    }];
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-read\n").unwrap();
    // Readable by its owner alone: one others may read is warned of.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let d = start_daemon_with(config, dir).await;
    let token_file = token_file.to_str().unwrap();

    let msg = run(&d.endpoint, &["pools"]).await.error("UNAUTHENTICATED");
    assert!(msg.contains("--token-file FILE or WARMPOOL_TOKEN"), "{msg}");
    let listed = run(&d.endpoint, &["--token-file", token_file, "pools"])
        .await
        .success();
    assert!(listed.contains("db.small"), "{listed}");
    run_with_env(
        &d.endpoint,
        &[("WARMPOOL_TOKEN", "s3cret-read")],
        &["pools", "get", "db.small", "az1"],
    )
    .await
    .success();

    // A flag beats the environment; with both variables set, the file wins.
    for (env, args) in [
        (
            &[("WARMPOOL_TOKEN", "wrong")][..],
            &["--token-file", token_file, "pools"][..],
        ),
        (
            &[("WARMPOOL_TOKEN_FILE", "/no/such/token")],
            &["--token", "s3cret-read", "pools"],
        ),
        (
            &[
                ("WARMPOOL_TOKEN", "wrong"),
                ("WARMPOOL_TOKEN_FILE", token_file),
            ],
            &["pools"],
        ),
    ] {
        run_with_env(&d.endpoint, env, args).await.success();
    }
    // A variable exported empty counts as unset: the token comes from the
    // other one, and no TLS file is read.
    for empty in [
        "WARMPOOL_TOKEN_FILE",
        "WARMPOOL_CA_FILE",
        "WARMPOOL_CERT_FILE",
        "WARMPOOL_KEY_FILE",
    ] {
        run_with_env(
            &d.endpoint,
            &[(empty, ""), ("WARMPOOL_TOKEN", "s3cret-read")],
            &["pools"],
        )
        .await
        .success();
    }
    let help = run(&d.endpoint, &["--help"]).await.success();
    assert!(
        help.contains("A variable set to the empty string counts as unset"),
        "{help}"
    );
    let both = run(
        &d.endpoint,
        &[
            "--token-file",
            token_file,
            "--token",
            "s3cret-read",
            "pools",
        ],
    )
    .await;
    assert!(!both.ok);
    assert!(
        both.stderr
            .contains("--token-file and --token both give the token; use one"),
        "{}",
        both.stderr
    );

    let msg = run(
        &d.endpoint,
        &[
            "--token",
            "s3cret-read",
            "pools",
            "delete",
            "db.small",
            "az1",
        ],
    )
    .await
    .error("PERMISSION_DENIED");
    assert_eq!(
        msg,
        "token 'grafana' has role reader; DeletePool needs role operator"
    );
    let msg = run(&d.endpoint, &["--token", "wrong", "pools"])
        .await
        .error("UNAUTHENTICATED");
    assert!(msg.contains("not one of this daemon's api_tokens"), "{msg}");

    // A token that cannot be read or sent is refused before connecting.
    let missing = run("127.0.0.1:1", &["--token-file", "/no/such/token", "pools"]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .starts_with("error: cannot read the token file /no/such/token: "),
        "{}",
        missing.stderr
    );
    let empty = run("127.0.0.1:1", &["--token", " ", "pools"]).await;
    assert_eq!(empty.stderr, "error: unusable bearer token: it is empty\n");
}

/// A token file or client key every user of the host may read is warned
/// of, naming the file and its mode, before anything else; one its group
/// may read is not (a Kubernetes Secret mounted 0440 under fsGroup).
#[cfg(unix)]
#[tokio::test]
async fn a_secret_file_others_may_read_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Others may reach the files (/tmp is 1777): a 0700 directory would
    // keep them out.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = dir.path().join("token");
    let key = dir.path().join("client.key");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let (token, key) = (token.to_str().unwrap(), key.to_str().unwrap());
    let mode = |path: &str, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let args = [
        "--token-file",
        token,
        "--cert-file",
        key,
        "--key-file",
        key,
        "pools",
    ];
    mode(token, 0o644);
    mode(key, 0o604);
    let warned = run("https://127.0.0.1:1", &args).await;
    for (file, mode) in [(token, "0644"), (key, "0604")] {
        let warning = format!(
            "warning: {file} holds a secret and every user of this host may read it (mode {mode})"
        );
        assert!(warned.stderr.contains(&warning), "{}", warned.stderr);
    }
    mode(token, 0o640);
    mode(key, 0o440);
    let quiet = run("https://127.0.0.1:1", &args).await;
    assert!(!quiet.stderr.contains("warning:"), "{}", quiet.stderr);
}

#[tokio::test]
async fn an_https_daemon_is_reached_with_its_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Pki::new(dir.path(), "ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let ops = ca.issue("ops", &["ops"]);
    let mut config = config(dir.path(), vec![pool("db.small", "az1", 0, 2)]);
    config.tls = Some(warmpool_server::config::TlsConfig {
        cert_file: server.cert_file.clone(),
        key_file: server.key_file.clone(),
        client_ca_file: Some(ca.ca_file("ca")),
    });
    let ca_file = ca.ca_file("ca");
    let (ca_file, cert_file, key_file) = (
        ca_file.to_str().unwrap(),
        ops.cert_file.to_str().unwrap(),
        ops.key_file.to_str().unwrap(),
    );
    let d = start_daemon_with(config, dir).await;
    let https = format!("https://{}", d.endpoint);

    let listed = run(
        &https,
        &[
            "--ca-file",
            ca_file,
            "--cert-file",
            cert_file,
            "--key-file",
            key_file,
            "pools",
        ],
    )
    .await
    .success();
    assert!(listed.contains("db.small"), "{listed}");
    // Without its client certificate, trusting only the system's roots, or
    // in plaintext, the handshake fails: warmpoolctl says so in one line,
    // and what to try in a second.
    for (endpoint, args, hint) in [
        (
            &https,
            &["--ca-file", ca_file, "pools"][..],
            "--cert-file and --key-file",
        ),
        (
            &https,
            &["--cert-file", cert_file, "--key-file", key_file, "pools"][..],
            "--ca-file CA.pem",
        ),
        (&d.endpoint, &["pools"][..], "dial https://HOST:PORT"),
    ] {
        let refused = run(endpoint, args).await;
        assert!(!refused.ok, "{args:?}: {}", refused.stdout);
        let lines: Vec<&str> = refused.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {}", refused.stderr);
        assert!(lines[0].starts_with("error: "), "{}", refused.stderr);
        assert!(
            lines[1].starts_with("hint: ") && lines[1].contains(hint),
            "{args:?}: {}",
            refused.stderr
        );
    }
    // Certificates for a plaintext endpoint: refused before connecting.
    let plain = run(&d.endpoint, &["--ca-file", ca_file, "pools"]).await;
    assert!(
        plain.stderr.contains("the endpoint must be https://"),
        "{}",
        plain.stderr
    );
}

/// A TLS file holding the wrong PEM is named by the path the user gave, so
/// that a mix-up among several certificates and keys is found at once.
#[tokio::test]
async fn a_tls_file_holding_the_wrong_pem_is_named_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Pki::new(dir.path(), "ca");
    let ops = ca.issue("ops", &["ops"]);
    let other = ca.issue("other", &["other"]);
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let (cert, key, other_key) = (
        path(&ops.cert_file),
        path(&ops.key_file),
        path(&other.key_file),
    );
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/support");
    let (v1_cert, v1_key) = (
        path(&support.join("x509-v1.crt")),
        path(&support.join("x509-v1.key")),
    );
    for (args, named) in [
        // A certificate given as the key, a key as the certificate or the CA.
        (
            vec!["--cert-file", &cert, "--key-file", &cert],
            format!("the key file {cert} holds no PEM private key"),
        ),
        (
            vec!["--cert-file", &key, "--key-file", &key],
            format!("the certificate file {key} holds no PEM certificate"),
        ),
        (
            vec!["--ca-file", &key],
            format!("the CA file {key} holds no PEM certificate"),
        ),
        (
            vec!["--cert-file", &cert, "--key-file", &other_key],
            format!(
                "the key file {other_key} holds another private key than \
                 the certificate file {cert}'s certificate"
            ),
        ),
        // `openssl x509 -req` without -extfile issues X.509 v1.
        (
            vec!["--cert-file", &v1_cert, "--key-file", &v1_key],
            format!("the certificate file {v1_cert} is an X.509 v1 certificate"),
        ),
    ] {
        let refused = run("https://127.0.0.1:1", &[&args[..], &["pools"]].concat()).await;
        assert!(!refused.ok, "{args:?}: {}", refused.stdout);
        assert!(
            refused.stderr.contains(&named),
            "{args:?}: {}",
            refused.stderr
        );
    }
}

#[tokio::test]
async fn pool_admin_commands() {
    let d = start_daemon(vec![pool("db.small", "az1", 1, 2)]).await;
    let ep = d.endpoint.as_str();

    let created = fields(
        &run(
            ep,
            &[
                "pools",
                "create",
                "db.large",
                "az2",
                "--min-ready",
                "1",
                "--max-ready",
                "3",
                "--image",
                "mysql-8.0",
                "--boot-timeout",
                "2m",
            ],
        )
        .await
        .success(),
    );
    assert_eq!(created["pool"], "db.large@az2");
    assert_eq!(created["boot_timeout"], "2m");
    // Not given: the server's default, as for a pool the API or the config
    // file creates (never recycled).
    assert_eq!(created["max_age"], "never");
    wait_pools_at_target(ep, &["db.large@az2"]).await;

    let updated = run(
        ep,
        &[
            "pools",
            "update",
            "db.large",
            "az2",
            "--min-ready",
            "2",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(updated["spec"]["min_ready"], 2, "{updated}");
    assert_eq!(updated["spec"]["max_ready"], 3, "{updated}");
    assert_eq!(updated["spec"]["boot_timeout"], "2m", "{updated}");
    assert_eq!(updated["effective_target"], 2, "{updated}");
    let table = wait_pools_at_target(ep, &["db.large@az2"]).await;
    assert_eq!(
        row(&table_rows(&table), "db.large@az2").unwrap()["READY"],
        "2",
        "{table}"
    );

    let paused = fields(
        &run(
            ep,
            &["pools", "update", "db.large", "az2", "--paused", "true"],
        )
        .await
        .success(),
    );
    assert_eq!(paused["status"], "paused");

    let deleted = fields(
        &run(ep, &["pools", "delete", "db.large", "az2"])
            .await
            .success(),
    );
    assert_eq!(deleted["status"], "draining");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = run(ep, &["pools"]).await.success();
        if row(&table_rows(&table), "db.large@az2").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "pool not deleted: \n{table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run(ep, &["pools", "get", "db.large", "az2"])
        .await
        .error("NOT_FOUND");
}

/// `watch` on a pipe prints blank-line separated frames; after an
/// allocation the pool shows it and refills to its target.
#[tokio::test]
async fn watch_shows_the_pool_refilling() {
    let d = start_daemon(vec![
        pool("db.small", "az1", 2, 2),
        pool("db.medium", "az1", 1, 1),
    ])
    .await;
    let ep = d.endpoint.as_str();
    wait_pools_at_target(ep, &["db.small@az1", "db.medium@az1"]).await;

    let mut child = ctl(ep)
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frames: Vec<Vec<BTreeMap<String, String>>> = Vec::new();
    // Reads one whole frame (up to its blank line) within the time limit.
    async fn next_frame(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> Vec<BTreeMap<String, String>> {
        let mut text = String::new();
        let read = async {
            loop {
                let line = lines.next_line().await.unwrap().expect("watch ended early");
                if line.is_empty() {
                    break;
                }
                text.push_str(&line);
                text.push('\n');
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a watch frame within the time limit");
        assert!(text.starts_with("POOL "), "{text}");
        table_rows(&text)
    }

    // The first frame has both pools at target.
    let first = next_frame(&mut lines).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        row(&first, "db.small@az1").unwrap()["READY"],
        "2",
        "{first:?}"
    );
    assert_eq!(
        row(&first, "db.medium@az1").unwrap()["READY"],
        "1",
        "{first:?}"
    );
    frames.push(first);

    let a = fields(
        &run(ep, &allocate_args("order-w", "db.small", "az1"))
            .await
            .success(),
    );
    assert_eq!(a["warm_hit"], "yes");

    // Frames until the allocation shows and the pool is full again.
    loop {
        let frame = next_frame(&mut lines).await;
        let small = row(&frame, "db.small@az1").unwrap().clone();
        frames.push(frame);
        if small["ALLOCATED"] == "1"
            && small["READY"] == "2"
            && small["BOOTING"] == "0"
            && small["WARMING"] == "0"
        {
            assert_eq!(small["WARM/WAITED/COLD/FAILED"], "1/0/0/0", "{small:?}");
            break;
        }
    }
    // (Frames in between show it below target, but how many depends on
    // scheduling, so only the first and the last are checked.)
    assert!(frames.len() >= 2);

    child.kill().await.unwrap();
    let _ = child.wait().await;
}

/// The next line of `watch --output json`, parsed, within the time limit.
async fn next_json(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line within the time limit")
        .unwrap()
        .expect("watch ended early");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn watch_json_prints_one_object_per_line() {
    let d = start_daemon(vec![pool("db.small", "az2", 1, 1)]).await;
    let ep = d.endpoint.as_str();
    wait_pools_at_target(ep, &["db.small@az2"]).await;

    let mut child = ctl(ep)
        .args(["watch", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_json(&mut lines).await;
    assert_eq!(first["pool"]["flavor"], "db.small", "{first}");
    assert_eq!(first["pool"]["counts"]["ready"], 1, "{first}");
    assert!(first["at"].is_string(), "{first}");

    run(ep, &allocate_args("order-j", "db.small", "az2"))
        .await
        .success();
    loop {
        let v = next_json(&mut lines).await;
        if v["pool"]["counts"]["allocated"] == 1 && v["pool"]["counts"]["ready"] == 1 {
            assert_eq!(v["pool"]["allocations_warm"], 1, "{v}");
            assert_eq!(v["pool"]["allocations_waited"], 0, "{v}");
            break;
        }
    }
    child.kill().await.unwrap();
    let _ = child.wait().await;
}

/// One whole `watch` frame from a pipe (up to its blank line), as text.
async fn read_frame(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    let mut text = String::new();
    let read = async {
        loop {
            let line = lines.next_line().await.unwrap().expect("watch ended early");
            if line.is_empty() {
                break;
            }
            text.push_str(&line);
            text.push('\n');
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a watch frame within the time limit");
    assert!(text.starts_with("POOL "), "{text}");
    text
}

/// `watch` shows what a pool is kept at and why (target with its mode, hit
/// rate, lead time, throttle state, health), and prints pool events under
/// the table as they happen; `pools update --target auto` makes a pool
/// size itself, which `pools`, `pools get` and JSON show.
#[tokio::test]
async fn watch_shows_sizing_columns_and_event_lines() {
    let d = start_daemon(vec![pool("db.small", "az1", 1, 3)]).await;
    let ep = d.endpoint.as_str();
    wait_pools_at_target(ep, &["db.small@az1"]).await;

    let mut child = ctl(ep)
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = read_frame(&mut lines).await;
    let header = first.lines().next().unwrap();
    for column in [
        "READY", "BOOTING", "TARGET", "HIT RATE", "LEAD P90", "THROTTLE", "HEALTH",
    ] {
        assert!(header.contains(column), "no {column} in {header}");
    }
    let rows = table_rows(&first);
    let small = row(&rows, "db.small@az1").unwrap();
    assert_eq!(small["TARGET"], "1", "{first}");
    assert_eq!(small["HIT RATE"], "-", "no allocation yet: {first}");
    assert_eq!(small["THROTTLE"], "open", "{first}");
    assert_eq!(small["HEALTH"], "ok", "{first}");
    assert_ne!(small["LEAD P90"], "-", "{first}");

    let updated = run(
        ep,
        &["pools", "update", "db.small", "az1", "--target", "auto"],
    )
    .await
    .success();
    let detail = fields(&updated);
    assert!(detail["target"].starts_with("auto"), "{updated}");
    assert!(detail["lead_time"].starts_with("p50 "), "{updated}");

    // Frames until the change shows: an event line under the table, and
    // the target marked as computed.
    let (mut saw_event, mut saw_auto) = (false, false);
    while !(saw_event && saw_auto) {
        let frame = read_frame(&mut lines).await;
        saw_event |= frame.lines().any(|l| {
            l.starts_with("event ")
                && l.contains(" db.small@az1 SETTINGS_CHANGED pool settings changed")
        });
        let rows = table_rows(&frame);
        saw_auto |= row(&rows, "db.small@az1").is_some_and(|r| r["TARGET"].starts_with("auto:"));
    }

    // A purchase moves the hit rate.
    run(ep, &allocate_args("order-hit", "db.small", "az1"))
        .await
        .success();
    loop {
        let frame = read_frame(&mut lines).await;
        let rows = table_rows(&frame);
        if row(&rows, "db.small@az1").is_some_and(|r| r["HIT RATE"] == "100.0%") {
            break;
        }
    }
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let table = run(ep, &["pools"]).await.success();
    let rows = table_rows(&table);
    let small = row(&rows, "db.small@az1").unwrap();
    assert!(small["TARGET"].starts_with("auto:"), "{table}");
    assert_ne!(small["LEAD P90"], "-", "{table}");

    let v = run(ep, &["pools", "get", "db.small", "az1", "--output", "json"])
        .await
        .json();
    assert_eq!(v["spec"]["target_mode"], "AUTO", "{v}");
    assert_eq!(v["sizing"]["auto"], true, "{v}");
    assert_eq!(v["sizing"]["target"], v["effective_target"], "{v}");
    assert!(v["sizing"]["lead_time_p90"].is_string(), "{v}");
    assert_eq!(v["sizing"]["gate"]["state"], "OPEN", "{v}");
    assert_eq!(v["degraded"], false, "{v}");

    // And back to a fixed target.
    let v = run(
        ep,
        &[
            "pools", "update", "db.small", "az1", "--target", "2", "--output", "json",
        ],
    )
    .await
    .json();
    assert_eq!(v["spec"]["target_mode"], "FIXED", "{v}");
    assert_eq!(v["effective_target"], 2, "{v}");
}

/// An IOPS limit of 0 is no limit the server takes: `pools create` refuses
/// it as `pools update` does, by the flag's name and before connecting
/// (nothing listens on port 1), not as the server's INVALID_ARGUMENT or a
/// connection error.
#[tokio::test]
async fn create_refuses_a_zero_iops_limit_before_connecting() {
    for flag in ["--iops-limit", "--volume-iops-limit"] {
        for command in ["create", "update"] {
            let mut args = vec!["pools", command, "db.large", "az1", flag, "0"];
            if command == "create" {
                args.extend(["--min-ready", "1", "--max-ready", "2", "--image", "i"]);
            }
            let refused = run("127.0.0.1:1", &args).await;
            assert!(!refused.ok, "{args:?}: {refused:?}");
            assert_eq!(refused.stdout, "", "{args:?}");
            assert!(
                refused.stderr.contains(&format!("'{flag} <"))
                    && refused.stderr.contains("\"0\" is not an IOPS limit"),
                "{args:?}: {}",
                refused.stderr
            );
            assert!(
                !refused.stderr.contains("UNAVAILABLE"),
                "{args:?}: {}",
                refused.stderr
            );
        }
    }
}
