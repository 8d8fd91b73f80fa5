//! The library and the `warmpoolctl` binary against an in-process fake
//! WarmPool server: checks what goes over the wire and what the CLI prints,
//! without the real daemon (which lives in another crate).

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use warmpool_client::api::{self, warm_pool_server::WarmPoolServer};
use warmpool_client::{Client, ClientError};

fn pool(flavor: &str, az: &str, ready: u32) -> api::Pool {
    api::Pool {
        flavor: flavor.into(),
        availability_zone: az.into(),
        spec: Some(api::PoolSpec {
            min_ready: 2,
            max_ready: 4,
            image: "mysql".into(),
            ..Default::default()
        }),
        effective_target: 2,
        counts: Some(api::PoolCounts {
            ready,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sizing warmpoold answers CreatePool and UpdatePool with: the pool's
/// replenisher has made no plan for the new settings yet (an update drops
/// the old one), and a new flavor's quota has not been polled.
fn before_first_step() -> api::SizingStatus {
    api::SizingStatus {
        gate: Some(api::ThrottleGate {
            state: api::ThrottleState::Open.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status(pool: api::Pool) -> api::PoolStatus {
    api::PoolStatus {
        pool: Some(pool),
        ..Default::default()
    }
}

/// Answers from fixed data; echoes request details back where a test needs
/// to see what the client sent.
struct Fake;

/// An Allocate whose request id is [`SLOW`] never answers; this is
/// notified once one has arrived.
static SLOW_ALLOCATE_ARRIVED: tokio::sync::Notify = tokio::sync::Notify::const_new();
const SLOW: &str = "slow-order";

#[tonic::async_trait]
impl api::warm_pool_server::WarmPool for Fake {
    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let r = request.into_inner();
        if r.request_id == SLOW {
            // A purchase waiting for a Ready instance.
            SLOW_ALLOCATE_ARRIVED.notify_one();
            futures::future::pending::<()>().await;
        }
        // "state-N": answered in state N, a newer server's unknown ones
        // included.
        let state = r
            .request_id
            .strip_prefix("state-")
            .map_or(api::AllocationState::Allocated.into(), |n| {
                n.parse().unwrap()
            });
        Ok(Response::new(api::AllocateResponse {
            allocation: Some(api::Allocation {
                request_id: r.request_id,
                tenant_project_id: r.tenant_project_id,
                flavor: r.flavor,
                availability_zone: r.availability_zone,
                state,
                warm_hit: true,
                labels: r.labels,
                ..Default::default()
            }),
        }))
    }

    async fn get_allocation(
        &self,
        request: Request<api::GetAllocationRequest>,
    ) -> Result<Response<api::Allocation>, Status> {
        let id = request.into_inner().request_id;
        Err(Status::not_found(format!("no allocation {id:?}")))
    }

    async fn release(
        &self,
        request: Request<api::ReleaseRequest>,
    ) -> Result<Response<api::Allocation>, Status> {
        let r = request.into_inner();
        Ok(Response::new(api::Allocation {
            request_id: r.request_id,
            state: api::AllocationState::Released.into(),
            // Report the override back through a field the test can read.
            labels: [("delete_volume".to_owned(), format!("{:?}", r.delete_volume))].into(),
            ..Default::default()
        }))
    }

    async fn list_pools(
        &self,
        _: Request<api::ListPoolsRequest>,
    ) -> Result<Response<api::ListPoolsResponse>, Status> {
        Ok(Response::new(api::ListPoolsResponse {
            pools: vec![pool("m1", "az1", 2), pool("m2", "az1", 0)],
        }))
    }

    async fn get_pool(
        &self,
        request: Request<api::GetPoolRequest>,
    ) -> Result<Response<api::Pool>, Status> {
        let r = request.into_inner();
        Ok(Response::new(pool(&r.flavor, &r.availability_zone, 1)))
    }

    async fn create_pool(
        &self,
        request: Request<api::CreatePoolRequest>,
    ) -> Result<Response<api::Pool>, Status> {
        let r = request.into_inner();
        Ok(Response::new(api::Pool {
            spec: r.spec,
            sizing: Some(before_first_step()),
            ..pool(&r.flavor, &r.availability_zone, 0)
        }))
    }

    async fn update_pool(
        &self,
        request: Request<api::UpdatePoolRequest>,
    ) -> Result<Response<api::Pool>, Status> {
        let r = request.into_inner();
        let mask = r.update_mask.unwrap_or_default().paths.join(",");
        Ok(Response::new(api::Pool {
            last_error: format!("mask={mask}"),
            sizing: Some(before_first_step()),
            ..pool(&r.flavor, &r.availability_zone, 0)
        }))
    }

    async fn delete_pool(
        &self,
        request: Request<api::DeletePoolRequest>,
    ) -> Result<Response<api::DeletePoolResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(api::DeletePoolResponse {
            pool: Some(api::Pool {
                draining: true,
                ..pool(&r.flavor, &r.availability_zone, 0)
            }),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<api::ListInstancesRequest>,
    ) -> Result<Response<api::ListInstancesResponse>, Status> {
        // Two pages of one instance each.
        let r = request.into_inner();
        let (id, next_page_token) = match (r.flavor.as_str(), r.page_token.as_str()) {
            // A broken server: the same token again, forever.
            ("stuck", _) => ("inst-9", "stuck"),
            // Or two tokens in turn.
            ("circling", "" | "b") => ("inst-8", "a"),
            ("circling", "a") => ("inst-9", "b"),
            (_, "") => ("inst-1", "after-inst-1"),
            (_, "after-inst-1") => ("inst-2", ""),
            (_, other) => return Err(Status::invalid_argument(format!("page_token {other}"))),
        };
        Ok(Response::new(api::ListInstancesResponse {
            instances: vec![api::Instance {
                id: id.into(),
                flavor: r.flavor,
                availability_zone: r.availability_zone,
                state: api::InstanceState::Ready.into(),
                ..Default::default()
            }],
            next_page_token: next_page_token.into(),
        }))
    }

    type WatchPoolsStream = Pin<Box<dyn Stream<Item = Result<api::PoolStatus, Status>> + Send>>;

    /// Both pools, the second a moment after the first (a daemon listing
    /// many), and the mark that the snapshot is complete; then m1 gaining
    /// instances, then silence (the stream stays open, like the real one).
    async fn watch_pools(
        &self,
        _: Request<api::WatchPoolsRequest>,
    ) -> Result<Response<Self::WatchPoolsStream>, Status> {
        let first = futures::stream::iter([Ok(status(pool("m1", "az1", 2)))]);
        let rest = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(status(pool("m2", "az1", 0)))
        })
        .chain(futures::stream::iter([Ok(api::PoolStatus {
            snapshot_complete: true,
            ..Default::default()
        })]));
        let update = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(status(pool("m1", "az1", 3)))
        });
        let stream = first
            .chain(rest)
            .chain(update)
            .chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn start_fake() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WarmPoolServer::new(Fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// [`start_fake`] in a runtime of its own: shutting it down ends the
/// server and every connection at once, as killing a daemon does.
async fn start_killable_fake() -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.spawn(start_fake()).await.unwrap();
    (addr, runtime)
}

fn ctl(addr: impl std::fmt::Display) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warmpoolctl"));
    cmd.env_remove("WARMPOOL_ENDPOINT")
        .arg("--endpoint")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(addr: impl std::fmt::Display, args: &[&str]) -> Run {
    let out = ctl(addr).args(args).output().await.unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[tokio::test]
async fn library_calls_round_trip() {
    let addr = start_fake().await;
    let client = Client::connect(&addr.to_string()).await.unwrap();

    let pools = client.list_pools().await.unwrap();
    assert_eq!(pools.len(), 2);

    let updated = client
        .update_pool(
            "m1",
            "az1",
            api::PoolSpec::default(),
            ["min_ready", "paused"],
        )
        .await
        .unwrap();
    assert_eq!(updated.last_error, "mask=min_ready,paused");

    let drained = client.delete_pool("m1", "az1").await.unwrap();
    assert!(drained.draining);

    // Every page, in order.
    let instances = client.list_instances("m1", "az1").await.unwrap();
    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["inst-1", "inst-2"]);
    for broken in ["stuck", "circling"] {
        let err = client.list_instances(broken, "az1").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Malformed(m) if m.contains("page token")),
            "{broken}: {err:?}"
        );
    }

    let released = client.release("r1", Some(false)).await.unwrap();
    assert_eq!(released.labels["delete_volume"], "Some(false)");

    let err = client.get_allocation("nope").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Status {
                code: tonic::Code::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "NOT_FOUND: no allocation \"nope\"");

    let mut watch = client.watch_pools().await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.pool.unwrap().flavor, "m1");
}

#[tokio::test]
async fn cli_prints_tables_and_json() {
    let addr = start_fake().await;

    let out = run(addr, &["pools"]).await;
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("POOL"), "{}", out.stdout);
    assert!(lines[1].starts_with("m1@az1 "), "{}", out.stdout);

    let out = run(addr, &["pools", "list", "--output", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["pools"][1]["flavor"], "m2");

    let out = run(
        addr,
        &[
            "allocate",
            "--request-id",
            "o-1",
            "--tenant",
            "t",
            "--flavor",
            "m1",
            "--az",
            "az1",
            "--volume-size",
            "10",
            "--network",
            "net",
            "--label",
            "k=v",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["state"], "ALLOCATED");
    assert_eq!(v["labels"]["k"], "v");

    let out = run(
        addr,
        &[
            "pools",
            "update",
            "m1",
            "az1",
            "--max-age",
            "2h",
            "--paused",
            "true",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("mask=max_age,paused"), "{}", out.stdout);

    let out = run(addr, &["instances", "--flavor", "m1", "--az", "az1"]).await;
    assert!(
        out.stdout.lines().nth(1).unwrap().contains(" READY "),
        "{}",
        out.stdout
    );
}

/// `pools create` and `pools update` answer before the pool's next step
/// has planned for the new settings or read a new flavor's quota: the
/// lines say so and where to look, not a bare `-` beside what `pools get`
/// fills a moment later.
#[tokio::test]
async fn create_and_update_answers_say_where_the_plan_and_quota_show() {
    let addr = start_fake().await;
    for args in [
        &["pools", "update", "m1", "az1", "--min-ready", "3"][..],
        &[
            "pools",
            "create",
            "m3",
            "az1",
            "--min-ready",
            "1",
            "--max-ready",
            "2",
            "--image",
            "mysql",
        ][..],
    ] {
        let out = run(addr, args).await;
        assert!(out.ok, "{}", out.stderr);
        let line = |key: &str| {
            out.stdout
                .lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .map(|l| l[key.len() + 1..].trim().to_owned())
                .unwrap_or_else(|| panic!("no {key} line in:\n{}", out.stdout))
        };
        let pool = format!("`warmpoolctl pools get {} az1`", args[2]);
        assert_eq!(
            line("plan"),
            format!(
                "not made yet: the pool's next replenish step makes it ({pool} shows it; a failed \
                 step makes none and is logged)"
            ),
            "{args:?}"
        );
        assert_eq!(
            line("quota"),
            "not read yet (read when one of the flavor's pools or purchases boots; or unlimited, \
             if warmpoold is older than this warmpoolctl)",
            "{args:?}"
        );
    }
}

fn allocate_args(request_id: &str) -> Vec<&str> {
    vec![
        "allocate",
        "--request-id",
        request_id,
        "--tenant",
        "t",
        "--flavor",
        "m1",
        "--az",
        "az1",
        "--volume-size",
        "10",
        "--network",
        "net",
    ]
}

/// Only an ALLOCATED answer has a server to use: `warmpoolctl allocate ...
/// && provision` must stop at any other, one this client does not know
/// (a newer server's) included.
#[tokio::test]
async fn allocate_fails_for_any_state_but_allocated() {
    let addr = start_fake().await;
    for (state, shown, warned) in [
        (9, "UNKNOWN(9)", "UNKNOWN(9)"),
        (0, "UNSPECIFIED", "UNSPECIFIED"),
        (1, "ALLOCATING", "ALLOCATING"),
        (3, "RELEASING", "is being released"),
        (4, "RELEASED", "was already released"),
    ] {
        let id = format!("state-{state}");
        let out = run(addr, &allocate_args(&id)).await;
        assert!(!out.ok, "exit 0 for {shown}: {}", out.stdout);
        assert!(
            out.stdout.contains(&format!("state:      {shown}\n")),
            "{}",
            out.stdout
        );
        assert!(
            out.stderr.starts_with(&format!("warning: order {id} ")),
            "{shown}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(warned), "{shown}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    let out = run(addr, &allocate_args("state-2")).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stderr, "");
}

/// A request id may start with '-' (the proto allows it anywhere), given
/// joined to its flag.
#[tokio::test]
async fn allocate_takes_a_request_id_starting_with_a_hyphen() {
    let addr = start_fake().await;
    let mut args = allocate_args("-ord");
    args.splice(1..3, ["--request-id=-ord"]);
    let out = run(addr, &args).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("request_id: -ord\n"),
        "{}",
        out.stdout
    );
}

/// A forgotten id (an empty `$ORDER`, unquoted) is a usage error, exit 2,
/// before any call: the next flag is not taken for the id.
#[tokio::test]
async fn allocate_refuses_a_forgotten_request_id() {
    // `--request-id $ORDER --delete-volume-on-release ...`, $ORDER empty.
    let args = allocate_args("--delete-volume-on-release");
    let out = ctl("127.0.0.1:1").args(&args).output().await.unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: a value is required for '--request-id"),
        "{stderr}"
    );
    assert!(stderr.contains("--request-id=-"), "{stderr}");
}

#[tokio::test]
async fn cli_reports_grpc_errors() {
    let addr = start_fake().await;
    let out = run(addr, &["get", "nope"]).await;
    assert!(!out.ok);
    assert_eq!(out.stderr, "error: NOT_FOUND: no allocation \"nope\"\n");
    assert_eq!(out.stdout, "");
}

/// The error is one line; nothing listening there, a hint follows asking
/// whether warmpoold runs there and how to point warmpoolctl elsewhere.
#[tokio::test]
async fn cli_reports_an_unreachable_endpoint_in_one_line() {
    let out = run("127.0.0.1:1", &["pools"]).await;
    assert!(!out.ok);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with("error: cannot connect to http://127.0.0.1:1: "),
        "{}",
        out.stderr
    );
    assert!(
        lines[1].starts_with(
            "hint: nothing accepts connections at 127.0.0.1:1: is warmpoold running there?"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn cli_checks_arguments_before_connecting() {
    let out = run("127.0.0.1:1", &["pools", "update", "m1", "az1"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.starts_with("error: nothing to update"),
        "{}",
        out.stderr
    );
}

/// Reads `watch` output from a pipe: blank-line separated frames, each a
/// full table of the latest state.
#[tokio::test]
async fn cli_watch_prints_frames_to_a_pipe() {
    let addr = start_fake().await;
    let mut child = ctl(addr)
        .arg("watch")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut frame = Vec::new();
    let read_until_update = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if !line.is_empty() {
                frame.push(line);
                continue;
            }
            // A blank line ends a frame.
            assert!(frame[0].starts_with("POOL "), "{frame:?}");
            let m1_ready = frame
                .iter()
                .find(|l| l.starts_with("m1@az1 "))
                .and_then(|l| l.split_whitespace().nth(1));
            if m1_ready == Some("3") {
                return frame;
            }
            frame = Vec::new();
        }
        panic!("watch ended before the update arrived");
    };
    let last = tokio::time::timeout(Duration::from_secs(10), read_until_update)
        .await
        .expect("no updated frame within 10s");
    // Every frame holds every pool seen so far, sorted.
    assert_eq!(last.len(), 3, "{last:?}");
    assert!(last[2].starts_with("m2@az1 "), "{last:?}");
    child.kill().await.unwrap();
}

/// The first frame holds every pool, though they arrive apart: it is
/// drawn once the server marks its snapshot complete.
#[tokio::test]
async fn cli_watch_first_frame_holds_every_pool() {
    let addr = start_fake().await;
    let mut child = ctl(addr)
        .arg("watch")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frame = Vec::new();
    let read_frame = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.is_empty() {
                return;
            }
            frame.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_frame)
        .await
        .expect("a first frame within 10s");
    let pools: Vec<&str> = frame
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pools, ["m1@az1", "m2@az1"], "{frame:?}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn cli_watch_json_prints_one_object_per_update() {
    let addr = start_fake().await;
    let mut child = ctl(addr)
        .args(["watch", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ready = Vec::new();
    for _ in 0..4 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("no update within 10s")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["snapshot_complete"] == true {
            ready.push(format!("snapshot_complete pool={}", v["pool"]));
            continue;
        }
        ready.push(format!(
            "{}={}",
            v["pool"]["flavor"], v["pool"]["counts"]["ready"]
        ));
    }
    assert_eq!(
        ready,
        [
            r#""m1"=2"#,
            r#""m2"=0"#,
            "snapshot_complete pool=null",
            r#""m1"=3"#
        ]
    );
    child.kill().await.unwrap();
}

/// `warmpoolctl watch | head`, `warmpoolctl pools | head -1`: a reader
/// that leaves early ends the command quietly, exit 0 (it used to end with
/// "error: Broken pipe (os error 32)", exit 1).
#[tokio::test]
async fn cli_stops_quietly_when_its_reader_leaves() {
    let addr = start_fake().await;
    for args in [
        &["watch"][..],
        &["watch", "--output", "json"],
        &["pools"],
        &["pools", "--output", "json"],
        &["completions", "bash"],
    ] {
        let mut child = ctl(addr)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before warmpoolctl writes anything: each write meets it,
        // with no race against the pipe's buffer taking a whole answer.
        drop(child.stdout.take());
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{args:?} went on after its reader left"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, "", "{args:?}");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

/// `warmpoolctl watch | head -n 2` on quiet pools: the reader leaves while
/// the watch waits for the next update, which may never come. The watch
/// ends at once, exit 0, rather than living on until its next write (it
/// used to hang there for good).
#[tokio::test]
async fn a_watch_on_quiet_pools_stops_quietly_when_its_reader_leaves() {
    let addr = start_fake().await;
    for format in ["table", "json"] {
        let mut child = ctl(addr)
            .args(["watch", "--output", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // To the end of what the fake's last update (m1 with 3 Ready)
        // prints, after which its stream stays open and silent: its line,
        // or the blank line ending its frame.
        let read_until_quiet = async {
            let mut seen = false;
            while let Some(line) = lines.next_line().await.unwrap() {
                seen |= match format {
                    "json" => line.contains(r#""ready":3"#),
                    _ => line.starts_with("m1@az1 ") && line.split_whitespace().nth(1) == Some("3"),
                };
                if seen && (format == "json" || line.is_empty()) {
                    return;
                }
            }
            panic!("{format}: the watch ended before the last update");
        };
        tokio::time::timeout(Duration::from_secs(20), read_until_quiet)
            .await
            .expect("the last update within 20s");
        drop(lines);
        // A bound for a hang, not a timing: the status is what is checked.
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{format}: the watch went on after its reader left"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, "", "{format}");
        assert_eq!(out.status.code(), Some(0), "{format}");
    }
}

/// A daemon killed during a long Allocate: the connection worked (the
/// daemon answered its HTTP/2 handshake), so the hint is not about TLS or
/// the metrics port but about asking again for the same order.
#[tokio::test]
async fn a_connection_broken_mid_call_hints_at_asking_again() {
    let (addr, daemon) = start_killable_fake().await;
    let allocate = ctl(addr)
        .args([
            "allocate",
            "--request-id",
            SLOW,
            "--tenant",
            "t",
            "--flavor",
            "m1",
        ])
        .args(["--az", "az1", "--volume-size", "10", "--network", "net"])
        .args(["--on-empty", "wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    SLOW_ALLOCATE_ARRIVED.notified().await;
    daemon.shutdown_background();
    // A bound for a hang, not a timing.
    let out = tokio::time::timeout(Duration::from_secs(20), allocate.wait_with_output())
        .await
        .expect("allocate went on after the daemon was gone")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    let hint = lines[1].strip_prefix("hint: ").unwrap_or_default();
    assert!(
        !hint.contains("TLS") && !hint.contains("metrics"),
        "{stderr}"
    );
    assert!(
        hint.contains(&format!("--request-id {SLOW}"))
            && hint.contains(&format!("warmpoolctl get {SLOW}")),
        "{stderr}"
    );
}

/// A TCP proxy to `upstream` that can be frozen: from then on it passes
/// nothing on, either way, and closes nothing, as a host that vanished
/// (powered off, its packets dropped) does.
async fn freezable_proxy(
    upstream: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = std::sync::Arc::new(AtomicBool::new(false));
    let pass = |mut from: tokio::net::tcp::OwnedReadHalf,
                mut to: tokio::net::tcp::OwnedWriteHalf,
                frozen: std::sync::Arc<AtomicBool>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                // Held forever, with both halves open.
                futures::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let switch = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pass(client_read, server_write, switch.clone()));
            tokio::spawn(pass(server_read, client_write, switch.clone()));
        }
    });
    (addr, frozen)
}

/// A daemon gone silent without closing the connection (its host powered
/// off) ends a watch once a ping goes unanswered, instead of leaving its
/// last frame on screen as if live.
#[tokio::test]
async fn a_watch_ends_once_the_daemon_goes_silent() {
    let (proxy, frozen) = freezable_proxy(start_fake().await).await;
    let options = warmpool_client::ConnectOptions {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let client = Client::connect_with(&proxy.to_string(), options)
        .await
        .unwrap();
    let mut stream = client.watch_pools().await.unwrap();
    stream.next().await.unwrap().unwrap();
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    // A bound for a hang, not a timing: the ping fails within a second.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch outlived the silent daemon");
    // The next call fails too, rather than hanging.
    let call = tokio::time::timeout(Duration::from_secs(60), client.list_pools()).await;
    assert!(matches!(call, Ok(Err(_))), "{call:?}");
}

#[tokio::test]
async fn certificates_for_a_plaintext_endpoint_are_refused() {
    let options = warmpool_client::ConnectOptions {
        tls: warmpool_client::TlsOptions {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            identity_pem: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = Client::connect_with("127.0.0.1:1", options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Endpoint { reason, .. } if reason.contains("must be https://")),
        "{err:?}"
    );
}
