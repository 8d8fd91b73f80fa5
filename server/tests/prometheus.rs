//! A real Prometheus (Debian's `prometheus` package) scrapes a running
//! warmpoold every second; its HTTP query API must report the pool depth the
//! gRPC API reports, and allocation counters that move after an Allocate.
//! promtool (same package) checks the alert rules and the example config and
//! runs the rules' unit tests.
//!
//! These tests fail, never skip, when Prometheus is missing:
//! `scripts/test.sh` installs it.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{deploy_dir, eventually, http_get, Daemon};
use warmpool_client::api;

/// Prometheus scrapes every second; anything it should see shows within this.
const PATIENCE: Duration = Duration::from_secs(60);

/// A binary of Debian's `prometheus` package: `/usr/bin/NAME` or on PATH.
fn prometheus_tool(name: &str) -> PathBuf {
    let mut candidates = vec![Path::new("/usr/bin").join(name)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` was not found in /usr/bin or on PATH. The Prometheus tests need a \
             real Prometheus: run the project's test command, `bash scripts/test.sh`, which \
             installs Debian's `prometheus` package when it is missing (or install it \
             yourself: `apt-get install prometheus`)."
            )
        })
}

/// A Prometheus server started for one test, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s /metrics every second, and waits
    /// until it is ready to answer queries.
    async fn start(target: SocketAddr) -> Prometheus {
        let binary = prometheus_tool("prometheus");
        // The port is chosen free, then handed over: another process could
        // take it in between, so a bind failure is retried on a new one.
        for attempt in 1..=3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: warmpool\n    static_configs:\n      - targets: [\"{target}\"]\n"
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut prometheus = Prometheus { child, addr, dir };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(log) if attempt < 3 && log.contains("address already in use") => continue,
                Err(log) => panic!("Prometheus did not become ready; its log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Waits for `/-/ready`; `Err(log)` when Prometheus exits or takes too long.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let url = format!("http://{}/-/ready", self.addr);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Err(format!("(exited: {status})\n{}", self.log()));
            }
            // Not http_get: it panics on an answer that is not HTTP/1, and
            // another test's listener (warmpoold's gRPC, HTTP/2 only) may
            // have taken the port first; that is an exit to retry from.
            if support::http_status(&url).await == Ok(200) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("(not ready after {PATIENCE:?})\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query: each series' labels and value.
    async fn query(&self, promql: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.addr,
            percent_encode(promql)
        );
        let (status, _, body) = http_get(&url).await;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if json["status"] != "success" {
            return Err(body);
        }
        let result = json["data"]["result"]
            .as_array()
            .ok_or_else(|| body.clone())?;
        result
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .ok_or("no metric labels")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .ok_or("no value")?
                    .parse::<f64>()
                    .map_err(|e| e.to_string())?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The value of a query that must select exactly one series.
    async fn one_value(&self, promql: &str) -> Result<f64, String> {
        match self.query(promql).await?.as_slice() {
            [(_, value)] => Ok(*value),
            other => Err(format!("{promql}: expected one series, got {other:?}")),
        }
    }

    /// [`Self::one_value`] as of the last scrape that succeeded, for a
    /// value read once, after a wait for another. A scrape that outlasts
    /// its 1 s timeout (on a loaded machine) marks every series of the
    /// target stale until the next scrape succeeds, and an instant query
    /// in between selects nothing: it is asked again until it selects its
    /// series; what the value is, the caller checks.
    async fn scraped_value(&self, promql: &str) -> f64 {
        let what = format!("{promql} in Prometheus");
        eventually(&what, PATIENCE, || self.one_value(promql)).await
    }

    /// [`Self::query`] as of the last scrape that succeeded: asked again
    /// while it selects nothing (see [`Self::scraped_value`]).
    async fn scraped(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let what = format!("{promql} in Prometheus");
        eventually(&what, PATIENCE, || async {
            match self.query(promql).await? {
                series if series.is_empty() => Err("no series".to_owned()),
                series => Ok(series),
            }
        })
        .await
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn allocate_request(request_id: &str, flavor: &str, az: &str) -> api::AllocateRequest {
    api::AllocateRequest {
        request_id: request_id.into(),
        tenant_project_id: "tenant-a".into(),
        flavor: flavor.into(),
        availability_zone: az.into(),
        volume: Some(api::VolumeSpec {
            source: Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                size_gib: 20,
                volume_type: String::new(),
            })),
            delete_on_release: true,
        }),
        network: Some(api::NetworkSpec {
            network_id: "tenant-net".into(),
            subnet_id: String::new(),
            fixed_ip: String::new(),
        }),
        labels: Default::default(),
        empty_pool_policy: api::EmptyPoolPolicy::Wait.into(),
        timeout: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
    }
}

fn counts(pool: &api::Pool) -> api::PoolCounts {
    pool.counts.expect("Pool.counts is always set")
}

/// Pauses or resumes db.small@az1.
/// Waits until db.small@az1's one instance is Ready.
async fn until_its_instance_is_ready(client: &warmpool_client::Client) {
    eventually("the pool's instance to be Ready", PATIENCE, || async {
        let pool = client
            .get_pool("db.small", "az1")
            .await
            .map_err(|e| e.to_string())?;
        match counts(&pool).ready {
            1 => Ok(()),
            n => Err(format!("{n} ready")),
        }
    })
    .await;
}

async fn set_paused(client: &warmpool_client::Client, paused: bool) {
    let spec = api::PoolSpec {
        paused,
        ..Default::default()
    };
    client
        .update_pool("db.small", "az1", spec, ["paused"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reports_the_pool_depth_grpc_reports_and_sees_allocations() {
    let daemon = Daemon::start(&[("db.small", "az1", 3, 6), ("db.medium", "az2", 1, 2)]).await;
    let prometheus = Prometheus::start(daemon.running.metrics_addr).await;
    let client = &daemon.client;
    let pool = r#"job="warmpool",flavor="db.small",availability_zone="az1""#;

    // Prometheus scrapes warmpoold.
    eventually("Prometheus to scrape warmpoold", PATIENCE, || async {
        match prometheus.one_value(r#"up{job="warmpool"}"#).await {
            Ok(1.0) => Ok(()),
            other => Err(format!("{other:?}\n{}", prometheus.log())),
        }
    })
    .await;

    // Once the pool is full and at rest, Prometheus' ready gauge and target
    // are exactly what GetPool says.
    let ready = eventually("Prometheus' pool depth to equal GetPool's", PATIENCE, || async {
        let grpc = client.get_pool("db.small", "az1").await.map_err(|e| e.to_string())?;
        let c = counts(&grpc);
        let ready = prometheus
            .one_value(&format!(r#"warmpool_pool_instances{{{pool},state="ready"}}"#))
            .await?;
        let target = prometheus
            .one_value(&format!("warmpool_pool_effective_target{{{pool}}}"))
            .await?;
        let at_rest = c.ready == grpc.effective_target && c.booting == 0 && c.warming == 0;
        if at_rest && ready == f64::from(c.ready) && target == f64::from(grpc.effective_target) {
            Ok(c.ready)
        } else {
            Err(format!(
                "gRPC ready {} booting {} warming {} target {}; Prometheus ready {ready} target {target}",
                c.ready, c.booting, c.warming, grpc.effective_target
            ))
        }
    })
    .await;
    assert_eq!(ready, 3, "min_ready 3 with no fixed target");

    // Every state of the pool is exported, and the sum matches GetPool's.
    let states = prometheus
        .scraped(&format!("warmpool_pool_instances{{{pool}}}"))
        .await;
    assert_eq!(states.len(), 8, "one series per instance state: {states:?}");

    // The counters exist at zero before the first allocation...
    let warm_query = format!(r#"warmpool_allocations_total{{{pool},outcome="warm"}}"#);
    let warm_latency_query =
        format!(r#"warmpool_allocate_duration_seconds_count{{{pool},path="warm"}}"#);
    assert_eq!(prometheus.scraped_value(&warm_query).await, 0.0);

    // ...and move after one.
    let allocation = client
        .allocate(allocate_request("order-prom-1", "db.small", "az1"))
        .await
        .expect("Allocate succeeds");
    assert!(allocation.warm_hit, "the pool was full: {allocation:?}");
    eventually(
        "Prometheus to count the warm allocation",
        PATIENCE,
        || async {
            let warm = prometheus.one_value(&warm_query).await?;
            let latency_count = prometheus.one_value(&warm_latency_query).await?;
            let allocated = prometheus
                .one_value(&format!(
                    r#"warmpool_pool_instances{{{pool},state="allocated"}}"#
                ))
                .await?;
            if warm == 1.0 && latency_count == 1.0 && allocated == 1.0 {
                Ok(())
            } else {
                Err(format!(
                    "warm {warm}, latency count {latency_count}, allocated {allocated}"
                ))
            }
        },
    )
    .await;
    let grpc = client.get_pool("db.small", "az1").await.unwrap();
    assert_eq!(grpc.allocations_warm, 1);
    assert_eq!(counts(&grpc).allocated, 1);

    // The replenisher refills the pool; Prometheus follows it back to full.
    eventually("Prometheus to see the pool refilled", PATIENCE, || async {
        let ready = prometheus
            .one_value(&format!(
                r#"warmpool_pool_instances{{{pool},state="ready"}}"#
            ))
            .await?;
        let boots = prometheus
            .one_value(&format!(r#"warmpool_boots_total{{{pool},result="ready"}}"#))
            .await?;
        // Three boots to fill, one to refill.
        if ready == 3.0 && boots >= 4.0 {
            Ok(())
        } else {
            Err(format!("ready {ready}, ready boots {boots}"))
        }
    })
    .await;
    let lead_times = prometheus
        .scraped_value(&format!("warmpool_boot_lead_time_seconds_count{{{pool}}}"))
        .await;
    assert!(lead_times >= 4.0, "{lead_times} boot lead times recorded");

    // The other pool is exported under its own labels.
    let medium_target = prometheus
        .scraped_value(
            r#"warmpool_pool_effective_target{flavor="db.medium",availability_zone="az2"}"#,
        )
        .await;
    assert_eq!(medium_target, 1.0);

    // The target's inputs are exported as GetPool shows them (at rest:
    // nothing in flight, so they only move when a boot finishes).
    let sizing = client
        .get_pool("db.small", "az1")
        .await
        .unwrap()
        .sizing
        .expect("Pool.sizing");
    let window = prometheus
        .scraped_value(&format!("warmpool_pool_gate_window{{{pool}}}"))
        .await;
    assert_eq!(Some(window), sizing.gate.expect("the AZ's gate").window);
    let p90 = sizing.lead_time_p90.expect("lead time p90");
    let exported = prometheus
        .scraped_value(&format!(
            r#"warmpool_pool_lead_time_estimate_seconds{{{pool},quantile="0.9"}}"#
        ))
        .await;
    let expected = p90.seconds as f64 + f64::from(p90.nanos) / 1e9;
    assert!(
        (exported - expected).abs() < 1e-6,
        "{exported} vs {expected}"
    );
    let degraded = prometheus
        .scraped_value(&format!("warmpool_pool_degraded{{{pool}}}"))
        .await;
    assert_eq!(degraded, 0.0);

    // Every query of the Grafana dashboard is PromQL this Prometheus
    // accepts, with Grafana's variables as Grafana would substitute them.
    let mut exprs = Vec::new();
    support::dashboard_exprs(&support::dashboard(), &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Most panels show something already (the rest need throttling, leaks
    // or failures to happen): counted again while a scrape that failed
    // leaves the instant selectors empty (see `scraped_value`).
    eventually(
        "most dashboard queries to return data",
        PATIENCE,
        || async {
            let mut with_data = 0;
            for expr in &exprs {
                let promql = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                    .replace("$flavor", ".*")
                    .replace("$az", ".*")
                    .replace("$instance", ".*");
                let result = prometheus.query(&promql).await.unwrap_or_else(|e| {
                    panic!("Prometheus rejects the dashboard query {expr}: {e}")
                });
                with_data += usize::from(!result.is_empty());
            }
            if with_data * 2 > exprs.len() {
                Ok(())
            } else {
                Err(format!(
                    "only {with_data} of {} queries return data",
                    exprs.len()
                ))
            }
        },
    )
    .await;

    drop(prometheus);
    daemon.shut_down().await;
}

/// The query of the dashboard's panel titled `title`, as Grafana runs it
/// for one pool over a window that holds the whole test.
fn dashboard_query(title: &str, flavor: &str, az: &str) -> String {
    fn find<'a>(value: &'a serde_json::Value, title: &str) -> Option<&'a serde_json::Value> {
        match value {
            serde_json::Value::Object(map)
                if map.get("title").and_then(|t| t.as_str()) == Some(title) =>
            {
                Some(value)
            }
            serde_json::Value::Object(map) => map.values().find_map(|v| find(v, title)),
            serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, title)),
            _ => None,
        }
    }
    let dashboard = support::dashboard();
    let panel = find(&dashboard, title).unwrap_or_else(|| panic!("no panel {title:?}"));
    let mut exprs = Vec::new();
    support::dashboard_exprs(panel, &mut exprs);
    let [expr] = exprs.as_slice() else {
        panic!("panel {title:?} has {} queries: {exprs:?}", exprs.len())
    };
    expr.replace("$__rate_interval", "10m")
        .replace("$flavor", flavor)
        .replace("$az", az)
        .replace("$instance", ".*")
}

/// Several warmpoolds scraped in one job, each with its own `server_tag`,
/// may each have a pool of one name. The "Ready vs target" panel shows
/// each daemon's pool, its Ready instances over its own target: A's
/// db.small@nova, empty and paused at target 2, at 0 %; B's, full at
/// target 3, at 100 %. Divided by flavor and zone alone, the query had two
/// targets for one pool and Prometheus refused it (many-to-many matching).
/// promtool runs the panel's query, all instances selected, on such series.
#[test]
fn the_ready_vs_target_panel_shows_each_warmpoolds_pool_of_one_name() {
    let query = dashboard_query("Ready vs target, every pool", ".*", ".*");
    let pool = |instance: &str| {
        format!(
            r#"job="warmpool",instance="{instance}",flavor="db.small",availability_zone="nova""#
        )
    };
    let (a, b) = (pool("10.0.0.7:9464"), pool("10.0.0.8:9464"));
    let mut input = String::new();
    for (series, values) in [
        (
            format!(r#"warmpool_pool_instances{{{a},state="ready"}}"#),
            "0x10",
        ),
        (
            format!(r#"warmpool_pool_instances{{{a},state="booting"}}"#),
            "0x10",
        ),
        (format!("warmpool_pool_effective_target{{{a}}}"), "2x10"),
        (format!("warmpool_pool_paused{{{a}}}"), "1x10"),
        (
            format!(r#"warmpool_pool_instances{{{b},state="ready"}}"#),
            "3x10",
        ),
        (
            format!(r#"warmpool_pool_instances{{{b},state="booting"}}"#),
            "0x10",
        ),
        (format!("warmpool_pool_effective_target{{{b}}}"), "3x10"),
        (format!("warmpool_pool_paused{{{b}}}"), "0x10"),
    ] {
        input.push_str(&format!(
            "      - series: '{series}'\n        values: '{values}'\n"
        ));
    }
    // Single-quoted YAML: a quote is written twice.
    let expr = query.replace('\'', "''");
    let test = format!(
        "rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{input}    promql_expr_test:
      - expr: '{expr}'
        eval_time: 5m
        exp_samples:
          - labels: '{{{a}}}'
            value: 0
          - labels: '{{{b}}}'
            value: 1
"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready_vs_target_test.yml");
    std::fs::write(&path, test).unwrap();
    promtool(&["test", "rules", path.to_str().unwrap()]);
}

/// warmpoolctl's HIT RATE is computed from GetPool's counters; the
/// dashboard's "Warm hit rate" panel from `warmpool_allocations_total`.
/// Both are the one measure sizing aims at, warm / (warm + cold + waited +
/// exhausted): an order id reused with other parameters (ABORTED) says
/// nothing of the pool's depth and moves neither (it showed 100 % in
/// `watch` and 50 % on the dashboard), a fail-fast purchase of an empty
/// pool is a miss in both, and so is a WAIT purchase of it served once an
/// instance became Ready (outcome "waited": it was counted warm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_get_pool_give_one_hit_rate() {
    let daemon = Daemon::start(&[("db.small", "az1", 1, 1)]).await;
    let prometheus = Prometheus::start(daemon.running.metrics_addr).await;
    let client = &daemon.client;
    let hit_rate = dashboard_query("Warm hit rate", "db.small", "az1");
    until_its_instance_is_ready(client).await;
    // Prometheus has the counters at zero before the first purchase, so
    // `rate()` sees every increase.
    eventually("Prometheus to scrape the counters at zero", PATIENCE, || async {
        let warm = prometheus
            .one_value(r#"warmpool_allocations_total{job="warmpool",flavor="db.small",availability_zone="az1",outcome="warm"}"#)
            .await?;
        match warm {
            0.0 => Ok(()),
            n => Err(format!("{n} warm")),
        }
    })
    .await;
    // Paused, the pool does not replace what it sells: it is empty after.
    set_paused(client, true).await;

    let order = allocate_request("order-hit-1", "db.small", "az1");
    assert!(client.allocate(order.clone()).await.unwrap().warm_hit);
    let mut reused = order;
    reused.tenant_project_id = "tenant-b".into();
    support::expect_code(client.allocate(reused).await, tonic::Code::Aborted);
    agree_on_the_hit_rate(&prometheus, client, &hit_rate, 2, 1.0).await;

    let mut fail_fast = allocate_request("order-hit-2", "db.small", "az1");
    fail_fast.empty_pool_policy = api::EmptyPoolPolicy::FailFast.into();
    support::expect_code(
        client.allocate(fail_fast).await,
        tonic::Code::ResourceExhausted,
    );
    agree_on_the_hit_rate(&prometheus, client, &hit_rate, 3, 0.5).await;

    let waiting = {
        let client = client.clone();
        let order = allocate_request("order-hit-3", "db.small", "az1");
        tokio::spawn(async move { client.allocate(order).await })
    };
    // The fail-fast purchase found the pool empty; the waiting one has
    // once this is 2, and only then may the pool boot its instance.
    eventually("the WAIT purchase to find the pool empty", PATIENCE, || async {
        let exhausted = prometheus
            .one_value(r#"warmpool_pool_exhausted_total{job="warmpool",flavor="db.small",availability_zone="az1"}"#)
            .await?;
        match exhausted {
            2.0 => Ok(()),
            n => Err(format!("{n} found it empty")),
        }
    })
    .await;
    set_paused(client, false).await;
    let waited = waiting.await.unwrap().expect("served once the pool boots");
    assert!(!waited.warm_hit, "it waited for its instance: {waited:?}");
    agree_on_the_hit_rate(&prometheus, client, &hit_rate, 4, 1.0 / 3.0).await;
    let pool = r#"job="warmpool",flavor="db.small",availability_zone="az1""#;
    for (series, expected) in [
        (
            format!(r#"warmpool_allocations_total{{{pool},outcome="waited"}}"#),
            1.0,
        ),
        (
            format!(r#"warmpool_allocations_total{{{pool},outcome="warm"}}"#),
            1.0,
        ),
        (
            format!(r#"warmpool_allocate_duration_seconds_count{{{pool},path="waited"}}"#),
            1.0,
        ),
        (
            format!(r#"warmpool_allocate_duration_seconds_count{{{pool},path="warm"}}"#),
            1.0,
        ),
    ] {
        assert_eq!(
            prometheus.scraped_value(&series).await,
            expected,
            "{series}"
        );
    }
    let pool = client.get_pool("db.small", "az1").await.unwrap();
    assert_eq!(
        (pool.allocations_warm, pool.allocations_waited),
        (1, Some(1)),
        "{pool:?}"
    );

    drop(prometheus);
    daemon.shut_down().await;
}

/// Waits until Prometheus has scraped `calls` Allocate calls of db.small@az1,
/// whatever their outcome, then until GetPool's counters and Prometheus'
/// answer to the dashboard's `query` both give `expected`.
async fn agree_on_the_hit_rate(
    prometheus: &Prometheus,
    client: &warmpool_client::Client,
    query: &str,
    calls: u32,
    expected: f64,
) {
    eventually("Prometheus to count every Allocate call", PATIENCE, || async {
        let scraped = prometheus
            .one_value(r#"sum(warmpool_allocations_total{job="warmpool",flavor="db.small",availability_zone="az1"})"#)
            .await?;
        if scraped == f64::from(calls) {
            Ok(())
        } else {
            Err(format!("{scraped} calls"))
        }
    })
    .await;
    eventually("GetPool's and the dashboard's hit rates", PATIENCE, || async {
        let pool = client.get_pool("db.small", "az1").await.map_err(|e| e.to_string())?;
        let exhausted = pool.allocations_exhausted.ok_or_else(|| "GetPool sent no allocations_exhausted".to_owned())?;
        let waited = pool.allocations_waited.ok_or_else(|| "GetPool sent no allocations_waited".to_owned())?;
        let needed = pool.allocations_warm + pool.allocations_cold + waited + exhausted;
        let counted = pool.allocations_warm as f64 / needed as f64;
        let plotted = prometheus.one_value(query).await?;
        if (counted - expected).abs() < 1e-9 && (plotted - expected).abs() < 1e-9 {
            Ok(())
        } else {
            Err(format!(
                "expected {expected}: GetPool's counters give {counted} (warm {}, cold {}, waited {waited}, exhausted {}, failed {}), the dashboard {plotted}",
                pool.allocations_warm, pool.allocations_cold, exhausted, pool.allocations_failed
            ))
        }
    })
    .await;
}

/// The dashboard's annotation named `name`, its query as Grafana runs it
/// for one pool.
fn dashboard_annotation(name: &str, flavor: &str, az: &str) -> String {
    let dashboard = support::dashboard();
    let annotation = dashboard["annotations"]["list"]
        .as_array()
        .expect("the dashboard's annotations")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no annotation {name:?}"));
    annotation["expr"]
        .as_str()
        .unwrap_or_else(|| panic!("annotation {name:?} has no expr"))
        .replace("$flavor", flavor)
        .replace("$az", az)
        .replace("$instance", ".*")
}

/// The "Settings changed" annotation marks every change, whatever the
/// scrape interval (up to Prometheus' default, a minute) and wherever the
/// change falls between scrapes. Grafana runs it at the annotation's step,
/// at times that are multiples of the step; a mark needs the scrape before
/// the change and the one after in one window. Over a window of one step
/// a change between the last scrape of one window and the first of the
/// next was in none: at 15 s scrapes 1 in 4 changes went unmarked, at 1 m
/// every one. promtool runs the annotation's query at every step (a
/// subquery, its steps on the same multiples) on a change at each place
/// between scrapes of each interval, and on a pool with none, which is
/// not marked.
#[test]
fn the_settings_changed_annotation_marks_every_change() {
    let dashboard = support::dashboard();
    let step = dashboard["annotations"]["list"]
        .as_array()
        .expect("the dashboard's annotations")
        .iter()
        .find(|a| a["name"] == "Settings changed")
        .and_then(|a| a["step"].as_str())
        .expect("the annotation sets its step");
    let step_secs = humantime::parse_duration(step).unwrap().as_secs();
    let query = dashboard_annotation("Settings changed", ".*", ".*");
    // Every second of 10 minutes: a sample at each scrape, none between.
    const END: u64 = 600;
    let series = |flavor: &str, scrape: u64, phase: u64, changed_after: Option<u64>| {
        let values: Vec<String> = (0..=END)
            .map(|second| match second.checked_sub(phase) {
                Some(since) if since % scrape == 0 => {
                    let changed = changed_after.is_some_and(|at| second > at);
                    u8::from(changed).to_string()
                }
                _ => "_".to_owned(),
            })
            .collect();
        format!(
            "      - series: 'warmpool_pool_settings_changes_total{{job=\"warmpool\",instance=\"a\",flavor=\"{flavor}\",availability_zone=\"az1\"}}'\n        values: '{}'\n",
            values.join(" ")
        )
    };
    let mut input = series("unchanged", 15, 0, None);
    let mut expected = String::new();
    for scrape in [15, 30, 60] {
        for phase in (0..scrape).step_by(5) {
            // A change after each scrape of one step's worth, from 4 minutes on.
            for slot in 0..step_secs / scrape {
                let after = 240 + phase + slot * scrape;
                let flavor = format!("scrape{scrape}s-at{after}s");
                input.push_str(&series(&flavor, scrape, phase, Some(after)));
                expected.push_str(&format!(
                    "          - labels: '{{flavor=\"{flavor}\",availability_zone=\"az1\"}}'\n            value: 1\n"
                ));
            }
        }
    }
    // Single-quoted YAML: a quote is written twice.
    let expr = format!("present_over_time(({query})[{}s:{step}])", END - 30).replace('\'', "''");
    let test = format!(
        "rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1s
    input_series:
{input}    promql_expr_test:
      - expr: '{expr}'
        eval_time: {END}s
        exp_samples:
{expected}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings_changed_test.yml");
    std::fs::write(&path, test).unwrap();
    promtool(&["test", "rules", path.to_str().unwrap()]);
}

/// The "Pool exhausted" annotation, as the WarmpoolPoolExhausted alert,
/// takes its share of the purchases a pool's depth decides (warm, cold,
/// waited, exhausted: the hit rate's): an order refused for itself
/// (FAILED_PRECONDITION: billing retrying one whose volume is in use) or
/// for the cloud (UNAVAILABLE) says nothing of the pool. Counted in, they
/// took a quarter of purchases missed below the 2 % it marks. promtool runs
/// the annotation's query on such a pool, and on one whose misses are
/// within the share, which is not marked.
#[test]
fn the_pool_exhausted_annotation_counts_the_purchases_a_pools_depth_decides() {
    let query = dashboard_annotation("Pool exhausted", ".*", ".*");
    let pool = |az: &str| {
        format!("job=\"warmpool\",instance=\"a\",flavor=\"db.small\",availability_zone=\"{az}\"")
    };
    let series = |metric: &str, az: &str, outcome: Option<&str>, values: &str| {
        let outcome = outcome
            .map(|o| format!(",outcome=\"{o}\""))
            .unwrap_or_default();
        format!(
            "      - series: '{metric}{{{}{outcome}}}'\n        values: '{values}'\n",
            pool(az)
        )
    };
    let mut input = String::new();
    // A purchase in four missed, among 160 refusals a minute of orders
    // and calls the pool's depth has nothing to do with.
    input.push_str(&series(
        "warmpool_pool_exhausted_total",
        "az1",
        None,
        "100+1x90",
    ));
    for (outcome, per_minute) in [
        ("warm", 3),
        ("exhausted", 1),
        ("precondition_failed", 100),
        ("cloud_error", 60),
    ] {
        let values = format!("100+{per_minute}x90");
        input.push_str(&series(
            "warmpool_allocations_total",
            "az1",
            Some(outcome),
            &values,
        ));
    }
    // One purchase in 101 missed: within the share.
    input.push_str(&series(
        "warmpool_pool_exhausted_total",
        "az2",
        None,
        "100+1x90",
    ));
    for (outcome, per_minute) in [("warm", 100), ("exhausted", 1)] {
        let values = format!("100+{per_minute}x90");
        input.push_str(&series(
            "warmpool_allocations_total",
            "az2",
            Some(outcome),
            &values,
        ));
    }
    for az in ["az1", "az2"] {
        input.push_str(&series("warmpool_pool_effective_target", az, None, "3x90"));
        input.push_str(&series("warmpool_pool_paused", az, None, "0x90"));
        input.push_str(&series("warmpool_pool_draining", az, None, "0x90"));
    }
    // Single-quoted YAML: a quote is written twice.
    let expr = query.replace('\'', "''");
    let labels = format!("{{{}}}", pool("az1")).replace('\'', "''");
    let test = format!(
        "rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{input}    promql_expr_test:
      - expr: '{expr}'
        eval_time: 70m
        exp_samples:
          - labels: '{labels}'
            value: 0.25
"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool_exhausted_test.yml");
    std::fs::write(&path, test).unwrap();
    promtool(&["test", "rules", path.to_str().unwrap()]);
}

/// The dashboard marks a pool's misses where the WarmpoolPoolExhausted
/// alert fires (a share of its purchases, 3 or more), not at each one: a
/// single miss of an active pool is not marked (it used to be: every
/// increase of the counter was), three out of a handful are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_marks_pool_exhaustion_as_the_alert_does() {
    let daemon = Daemon::start(&[("db.small", "az1", 1, 1)]).await;
    let client = &daemon.client;
    let marked = dashboard_annotation("Pool exhausted", "db.small", "az1");
    let exhausted_query = r#"warmpool_pool_exhausted_total{job="warmpool",flavor="db.small",availability_zone="az1"}"#;
    until_its_instance_is_ready(client).await;
    // Started once the pool has its target, so every scrape shows the
    // pool active with a target above 0, as the alert asks.
    let prometheus = Prometheus::start(daemon.running.metrics_addr).await;
    eventually(
        "Prometheus to scrape the counters at zero",
        PATIENCE,
        || async {
            match prometheus.one_value(exhausted_query).await? {
                0.0 => Ok(()),
                n => Err(format!("{n} exhausted")),
            }
        },
    )
    .await;
    assert!(
        client
            .allocate(allocate_request("order-mark-0", "db.small", "az1"))
            .await
            .unwrap()
            .warm_hit
    );
    // Fail-fast purchases until `misses` found the pool empty (the
    // replenisher may refill it in between: that purchase is warm).
    async fn miss_until(client: &warmpool_client::Client, so_far: &mut (u32, u32), misses: u32) {
        let (numbered, missed) = so_far;
        while *missed < misses {
            *numbered += 1;
            let mut order = allocate_request(&format!("order-mark-{numbered}"), "db.small", "az1");
            order.empty_pool_policy = api::EmptyPoolPolicy::FailFast.into();
            match client.allocate(order).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => *missed += 1,
                Err(e) => panic!("a fail-fast purchase: {e}"),
            }
        }
    }
    let mut so_far = (0, 0);
    miss_until(client, &mut so_far, 1).await;
    let exhausted_scraped = |misses: f64| {
        let prometheus = &prometheus;
        async move {
            eventually("Prometheus to scrape the misses", PATIENCE, || async {
                match prometheus.one_value(exhausted_query).await? {
                    n if n == misses => Ok(()),
                    n => Err(format!("{n} exhausted")),
                }
            })
            .await
        }
    };
    exhausted_scraped(1.0).await;
    assert_eq!(
        prometheus.query(&marked).await,
        Ok(Vec::new()),
        "one miss is marked: {marked}"
    );

    miss_until(client, &mut so_far, 3).await;
    exhausted_scraped(3.0).await;
    let marks = prometheus.query(&marked).await.unwrap();
    let [(labels, _)] = marks.as_slice() else {
        panic!("three misses of a handful of purchases are not marked once: {marks:?}\n{marked}")
    };
    assert_eq!(
        (labels.get("flavor"), labels.get("availability_zone")),
        (Some(&"db.small".to_owned()), Some(&"az1".to_owned())),
        "{labels:?}"
    );

    drop(prometheus);
    daemon.shut_down().await;
}

fn promtool(args: &[&str]) {
    let promtool = prometheus_tool("promtool");
    let output = Command::new(&promtool)
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        output.status.success(),
        "promtool {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    promtool(&["check", "rules", "prometheus/alerts.yml"]);
}

#[test]
fn promtool_accepts_the_example_prometheus_config() {
    promtool(&["check", "config", "prometheus/prometheus.yml"]);
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    promtool(&[
        "test",
        "rules",
        "prometheus/alerts_test.yml",
        "prometheus/alerts_lead_time_test.yml",
    ]);
}
