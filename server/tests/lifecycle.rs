//! warmpoold's start and stop over real sockets: a start-up that fails
//! leaves nothing running and nothing written, and open `WatchPools` and
//! health `Watch` streams do not hold up a graceful shutdown.

mod support;

use std::time::Duration;

use futures::StreamExt;
use pool_manager::store::{SledStore, Store};
use support::*;
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_taken_grpc_port_fails_start_up_before_anything_is_written() {
    init_tracing();
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = config_text(data.path(), &[("db.small", "az1", 2, 4)]).replacen(
        r#"listen = "127.0.0.1:0""#,
        &format!(r#"listen = "{addr}""#),
        1,
    );
    let config = warmpool_server::config::Config::parse(&text).unwrap();
    let error = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("warmpoold started on a taken port {addr}"),
        Err(e) => format!("{e:#}"),
    };
    // Naming the setting to change: a second warmpoold beside the demo
    // finds its ports taken.
    assert!(
        error.contains(&format!("cannot listen on {addr} (listen, --listen)")),
        "{error}"
    );

    // The store is free for the next start (nothing holds its lock), and the
    // configured pool was never created, so nothing booted for it.
    let store = store_a_failed_start_left(data.path()).await;
    assert!(store.list_pools().await.unwrap().is_empty());
}

/// The store in `data` after a start-up that failed, opened: it must be
/// free for the next start (nothing holds its lock).
async fn store_a_failed_start_left(data: &std::path::Path) -> SledStore {
    let dir = data.join("store");
    tokio::task::spawn_blocking(move || SledStore::open(&dir))
        .await
        .unwrap()
        .expect("the failed start-up let go of the store")
}

/// On the embedded cloud too, every configured pool is checked before any
/// is created: a zone it does not have in the second pool leaves the first
/// neither stored nor booting, so a fixed config file creates it anew.
#[tokio::test]
async fn an_embedded_pool_the_cloud_refuses_fails_start_up_before_anything_is_written() {
    init_tracing();
    let data = tempfile::tempdir().unwrap();
    let config = config(
        data.path(),
        &[("db.small", "az1", 1, 2), ("db.small", "az9", 1, 2)],
    );
    let error = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("warmpoold started with a pool in az9, a zone the cloud does not have"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("db.small@az9"), "{error}");
    assert!(
        error.contains("Availability zone az9 could not be found"),
        "{error}"
    );

    let store = store_a_failed_start_left(data.path()).await;
    assert!(store.list_pools().await.unwrap().is_empty());
    assert!(store.list_instances().await.unwrap().is_empty());
}

/// A start refused by its cloud (a clouds.yaml that is not there, a pool
/// in a zone the cloud lacks) leaves a data dir that held no store as it
/// found it: not there, rather than holding a new store that `warmpoold
/// store check` would call healthy.
#[tokio::test]
async fn a_start_the_cloud_refuses_takes_back_the_store_it_made() {
    init_tracing();
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("clouds.yaml");
    let openstack = format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
[cloud]
kind = "openstack"
cloud = "warmpool"
clouds_yaml = {:?}
management_network = "mgmt-net"
"#,
        missing.display().to_string()
    );
    let embedded = config_text(data.path(), &[("db.small", "az9", 1, 2)]);
    for (text, refusal) in [
        (openstack, missing.display().to_string()),
        (
            embedded,
            "Availability zone az9 could not be found".to_owned(),
        ),
    ] {
        let mut config = warmpool_server::config::Config::parse(&text).unwrap();
        let new = data.path().join("new");
        config.data_dir = new.join("store");
        let error = match warmpool_server::start(config, std::future::pending()).await {
            Ok(_) => panic!("warmpoold started: {text}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(&refusal), "{error}");
        assert!(
            !new.exists(),
            "{error}: {:?}",
            std::fs::read_dir(new.join("store")).map(|d| d.count())
        );
    }
}

/// A data dir that is a file is named as such, not as a directory that
/// "exists".
#[tokio::test]
async fn a_data_dir_that_is_a_file_is_named_as_one() {
    let data = tempfile::tempdir().unwrap();
    let text = config_text(data.path(), &[]);
    let mut config = warmpool_server::config::Config::parse(&text).unwrap();
    config.data_dir = data.path().join("a-file");
    std::fs::write(&config.data_dir, "").unwrap();
    let error = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("warmpoold started on a file as its data dir"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.ends_with("a-file is not a directory (data_dir, --data-dir)"),
        "{error}"
    );
}

/// A daemon whose grace period (the longest the config takes, 30 s) no
/// test waits out, so shutdown must not need it (`shut_down` fails unless
/// the daemon stops within 30 s).
async fn with_the_longest_grace() -> Daemon {
    let data = tempfile::tempdir().unwrap();
    let text = config_text(data.path(), &[("db.small", "az1", 1, 2)]).replacen(
        r#"shutdown_grace = "5s""#,
        r#"shutdown_grace = "30s""#,
        1,
    );
    Daemon::start_text(&text, data).await
}

#[tokio::test]
async fn an_open_watch_ends_at_shutdown_instead_of_holding_it_up() {
    let d = with_the_longest_grace().await;
    let mut watch = d.client.watch_pools().await.unwrap();
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("a first pool status")
        .expect("the stream is open")
        .expect("no stream error");
    let end = tokio::spawn(async move {
        let mut last_error = None;
        while let Some(item) = watch.next().await {
            if let Err(e) = item {
                last_error = Some(e);
            }
        }
        last_error
    });
    d.shut_down().await;
    let last_error = tokio::time::timeout(PATIENCE, end)
        .await
        .expect("the stream ended")
        .unwrap()
        .expect("the stream ended with a status saying why");
    match last_error {
        warmpool_client::ClientError::Status { code, message } => {
            assert_eq!(code, Code::Unavailable, "{message}");
            assert!(message.contains("shutting down"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// A purchase waiting on an empty pool holds nothing: shutdown answers it
/// UNAVAILABLE at once instead of waiting out the grace period for it.
#[tokio::test]
async fn a_purchase_waiting_on_an_empty_pool_does_not_hold_up_shutdown() {
    let d = with_the_longest_grace().await;
    d.client
        .update_pool(
            "db.small",
            "az1",
            warmpool_client::api::PoolSpec {
                paused: true,
                ..Default::default()
            },
            ["paused"],
        )
        .await
        .unwrap();
    // No boot is left to finish, and whatever was Ready is taken: the next
    // purchase waits.
    eventually("the paused pool's boots to end", PATIENCE, || async {
        let pool = d.client.get_pool("db.small", "az1").await.unwrap();
        let counts = pool.counts.unwrap_or_default();
        if counts.booting + counts.warming == 0 {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    let mut taken = 0;
    loop {
        let mut order = order_one();
        order.request_id = format!("order-{taken}");
        order.empty_pool_policy = warmpool_client::api::EmptyPoolPolicy::FailFast.into();
        match d.client.allocate(order).await {
            Ok(_) => taken += 1,
            Err(warmpool_client::ClientError::Status {
                code: Code::ResourceExhausted,
                ..
            }) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    // The next purchase's Exhausted event, the only one from here on, says
    // it found the pool empty and goes on to wait.
    let mut watch = d.client.watch_pools().await.unwrap();
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("a first pool status")
        .expect("the stream is open")
        .expect("no stream error");
    let mut order = order_one();
    order.request_id = "waits".into();
    order.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let client = d.client.clone();
    let waiting = tokio::spawn(async move { client.allocate(order).await });
    let exhausted = i32::from(warmpool_client::api::PoolEventKind::Exhausted);
    tokio::time::timeout(PATIENCE, async {
        loop {
            let status = watch
                .next()
                .await
                .expect("the stream is open")
                .expect("no stream error");
            if status
                .events
                .iter()
                .any(|e| e.kind == exhausted && e.availability_zone == "az1")
            {
                break;
            }
        }
    })
    .await
    .expect("the purchase found the pool empty");
    drop(watch);
    assert!(!waiting.is_finished());
    d.shut_down().await;
    match waiting.await.unwrap() {
        Err(warmpool_client::ClientError::Status { code, message }) => {
            assert_eq!(code, Code::Unavailable, "{message}");
            assert!(message.contains("shutting down"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// An Allocate whose client hung up goes on as the manager's task, which
/// the count of gRPC calls in flight no longer includes: shutdown waits
/// for it within the grace period too, so the order is sold and stays so,
/// not stopped midway for the next start to roll back.
#[tokio::test]
async fn shutdown_waits_for_a_purchase_whose_client_hung_up() {
    let logs = Logs::capture();
    let d = with_the_longest_grace().await;
    eventually("a Ready instance", PATIENCE, || async {
        let pool = d.client.get_pool("db.small", "az1").await.unwrap();
        match pool.counts.unwrap_or_default().ready {
            0 => Err("none yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    let cloud = d.running.cloud.clone().expect("embedded cloud");
    cloud.faults().hold_calls("attach_volume");
    let client = d.client.clone();
    let purchase = tokio::spawn(async move { client.allocate(order_one()).await });
    eventually("the purchase's volume attach", PATIENCE, || async {
        match cloud.call_counts().get("attach_volume") {
            Some(_) => Ok(()),
            None => Err("not yet".to_owned()),
        }
    })
    .await;
    purchase.abort();
    assert!(purchase.await.unwrap_err().is_cancelled());

    let (served, data) = d.stop();
    tokio::pin!(served);
    let waiting = eventually("warmpoold waiting for the purchase", PATIENCE, || async {
        match logs
            .text()
            .contains("waiting for 1 call whose callers no longer wait")
        {
            true => Ok(()),
            false => Err(logs.text()),
        }
    });
    tokio::select! {
        () = waiting => {}
        stopped = &mut served => panic!("warmpoold stopped with the purchase under way: {stopped:?}\n{}", logs.text()),
    }
    cloud.faults().release_calls("attach_volume");
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("shutdown once the purchase is done")
        .expect("server task did not panic")
        .expect("clean shutdown");
    let data = data.expect("the daemon's own data dir");
    let store = store_a_failed_start_left(data.path()).await;
    let sold = store.get_allocation("order-1").await.unwrap();
    assert_eq!(
        sold.map(|a| a.state),
        Some(pool_manager::model::AllocationState::Allocated),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn health_watches_see_not_serving_and_end_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let d = with_the_longest_grace().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", d.running.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut watchers = Vec::new();
    // The server as a whole (what load balancers watch) and warmpool.v1.
    for service in ["", "warmpool.v1.WarmPool"] {
        let mut stream = HealthClient::new(channel.clone())
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("a first status")
            .expect("the stream is open")
            .expect("no stream error");
        assert_eq!(
            first.status,
            i32::from(ServingStatus::Serving),
            "{service:?}"
        );
        watchers.push((
            service,
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(Ok(reply)) = stream.next().await {
                    seen.push(reply.status);
                }
                seen
            }),
        ));
    }
    drop(channel);
    d.shut_down().await;
    for (service, watcher) in watchers {
        let seen = tokio::time::timeout(PATIENCE, watcher)
            .await
            .expect("the watch ended")
            .unwrap();
        assert_eq!(
            seen.last(),
            Some(&i32::from(ServingStatus::NotServing)),
            "{service:?}: {seen:?}"
        );
    }
}

/// Health says NOT_SERVING for as long as in-flight unary calls finish: a
/// Check that reaches warmpoold then is answered NOT_SERVING, where it was
/// answered NOT_FOUND ("service not registered": tonic-health's statuses
/// were cleared, which is what ends its watches), while health watches
/// still end at once.
///
/// Shutdown sends every connection a GOAWAY at once, after which a client
/// opens no stream on it, and the port takes no new connection: only a
/// Check sent before its client read the GOAWAY reaches warmpoold. The
/// relay holds the GOAWAY back to send one; the purchase in flight keeps
/// the connection from being cut meanwhile.
#[tokio::test]
async fn a_health_check_during_shutdown_is_answered_not_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let d = with_the_longest_grace().await;
    eventually("a Ready instance", PATIENCE, || async {
        let pool = d.client.get_pool("db.small", "az1").await.unwrap();
        match pool.counts.unwrap_or_default().ready {
            0 => Err("none yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // A purchase held at its volume's create: a unary call in flight until
    // its client gives up.
    let cloud = d.running.cloud.clone().expect("embedded cloud");
    cloud.faults().hold_calls("create_volume");
    let mut order = order_one();
    order.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let client = d.client.clone();
    let purchase = tokio::spawn(async move { client.allocate(order).await });
    eventually("the purchase's volume create", PATIENCE, || async {
        match cloud.call_counts().get("create_volume") {
            Some(_) => Ok(()),
            None => Err("not yet".to_owned()),
        }
    })
    .await;

    let relay = Relay::to(d.running.grpc_addr).await;
    let relayed = tonic::transport::Endpoint::from_shared(format!("http://{}", relay.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = |service: &'static str| {
        let mut health = HealthClient::new(relayed.clone());
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|reply| reply.into_inner().status)
        }
    };
    let services = ["", "warmpool.v1.WarmPool"];
    for service in services {
        assert_eq!(
            check(service).await.unwrap(),
            i32::from(ServingStatus::Serving),
            "{service:?}"
        );
    }
    let direct = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(direct)
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async || {
        tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("the watch answered")
            .map(|reply| reply.expect("no stream error").status)
    };
    assert_eq!(next_status().await, Some(i32::from(ServingStatus::Serving)));

    relay.hold();
    let stopped = tokio::spawn(d.shut_down());
    // Shutdown has begun: the relayed connection's GOAWAY is on its way.
    assert_eq!(
        next_status().await,
        Some(i32::from(ServingStatus::NotServing))
    );
    assert_eq!(next_status().await, None, "the watch ended");
    let mut checks = Vec::new();
    for service in services {
        let sent = relay.sent();
        checks.push((service, tokio::spawn(check(service))));
        relay.wait_sent_beyond(sent).await;
    }
    relay.release();
    for (service, check) in checks {
        let answer = tokio::time::timeout(PATIENCE, check)
            .await
            .expect("the Check was answered")
            .unwrap();
        match answer {
            Ok(status) => assert_eq!(status, i32::from(ServingStatus::NotServing), "{service:?}"),
            Err(status) => panic!("{service:?}: {status:?}"),
        }
    }

    // Given up by its client, the purchase is still the daemon's to finish
    // (`shutdown_waits_for_a_purchase_whose_client_hung_up`).
    purchase.abort();
    cloud.faults().release_calls("create_volume");
    tokio::time::timeout(PATIENCE, stopped)
        .await
        .expect("shutdown once the purchase was done")
        .unwrap();
}

/// A TCP relay of one connection to `upstream` that can hold back what
/// upstream sends while passing on what the client sends, and counts the
/// latter.
struct Relay {
    addr: std::net::SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    sent: tokio::sync::watch::Receiver<u64>,
}

impl Relay {
    async fn to(upstream: std::net::SocketAddr) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, mut held) = tokio::sync::watch::channel(false);
        let (sent_tx, sent) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0; 16 * 1024];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent_tx.send_modify(|sent| *sent += n as u64);
                }
            });
            let mut buf = vec![0; 16 * 1024];
            loop {
                if held.wait_for(|held| !*held).await.is_err() {
                    break;
                }
                // Biased: once held, nothing more is read from upstream.
                let n = tokio::select! {
                    biased;
                    _ = held.wait_for(|held| *held) => continue,
                    read = server_read.read(&mut buf) => match read {
                        Ok(n @ 1..) => n,
                        _ => break,
                    },
                };
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        Relay { addr, hold, sent }
    }

    /// What upstream sends from now on waits in the relay.
    fn hold(&self) {
        self.hold.send_replace(true);
    }

    fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Bytes the client has sent upstream so far.
    fn sent(&self) -> u64 {
        *self.sent.borrow()
    }

    async fn wait_sent_beyond(&self, sent: u64) {
        let mut now = self.sent.clone();
        tokio::time::timeout(PATIENCE, now.wait_for(|now| *now > sent))
            .await
            .expect("the client sent its request")
            .unwrap();
    }
}

/// The HTTP/2 windows of [`a_client_that_reads_little`].
const LITTLE_WINDOW: u32 = 1024;

/// A client of `d` whose HTTP/2 windows are tiny: the daemon can send it
/// little before it must read, so a stream it stops reading is held up at
/// once, the end of the stream included.
async fn a_client_that_reads_little(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .initial_stream_window_size(Some(LITTLE_WINDOW))
        .initial_connection_window_size(Some(LITTLE_WINDOW))
        .connect()
        .await
        .unwrap()
}

/// A TCP relay of one HTTP/2 connection to `upstream` that reads the
/// frames going by, to tell when upstream has filled the window of the
/// connection's first stream: the DATA it sent on it reached the stream's
/// initial window ([`LITTLE_WINDOW`]) and what WINDOW_UPDATEs the client
/// sent for it.
struct FlowRelay {
    addr: std::net::SocketAddr,
    /// The DATA bytes upstream sent on the first stream, and its window.
    flow: tokio::sync::watch::Receiver<(u64, u64)>,
}

impl FlowRelay {
    async fn to(upstream: std::net::SocketAddr) -> FlowRelay {
        const DATA: u8 = 0x0;
        const WINDOW_UPDATE: u8 = 0x8;
        const FIRST_STREAM: u32 = 1;
        // What a client sends before its first frame.
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (flow_tx, flow) = tokio::sync::watch::channel((0u64, u64::from(LITTLE_WINDOW)));
        let flow_tx = std::sync::Arc::new(flow_tx);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let granted = flow_tx.clone();
            tokio::spawn(relay_frames(
                client_read,
                server_write,
                PREFACE.len(),
                move |kind, stream, payload| {
                    if kind == WINDOW_UPDATE && stream == FIRST_STREAM && payload.len() == 4 {
                        let more = u32::from_be_bytes(payload.try_into().unwrap()) & 0x7fff_ffff;
                        granted.send_modify(|(_, window)| *window += u64::from(more));
                    }
                },
            ));
            relay_frames(
                server_read,
                client_write,
                0,
                move |kind, stream, payload| {
                    if kind == DATA && stream == FIRST_STREAM {
                        flow_tx.send_modify(|(sent, _)| *sent += payload.len() as u64);
                    }
                },
            )
            .await;
        });
        FlowRelay { addr, flow }
    }

    /// Waits until upstream has sent all the first stream's window lets it:
    /// it can send nothing more on it, the stream's end included, until
    /// the client reads.
    async fn wait_window_full(&self) {
        let mut flow = self.flow.clone();
        let full = tokio::time::timeout(PATIENCE, async {
            flow.wait_for(|(sent, window)| sent >= window).await.is_ok()
        })
        .await;
        assert_eq!(
            full,
            Ok(true),
            "the stream's window is not full: (DATA sent, window) {:?}",
            *self.flow.borrow()
        );
    }
}

/// Passes on what `from` sends to `to`, telling `frame` of each HTTP/2
/// frame in it (its type, stream id and payload), after the first `skip`
/// bytes, before passing it on: a window the client grants is counted
/// before upstream can use it.
async fn relay_frames(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut skip: usize,
    mut frame: impl FnMut(u8, u32, &[u8]) + Send + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut read = vec![0; 16 * 1024];
    let mut frames = Vec::new();
    while let Ok(n @ 1..) = from.read(&mut read).await {
        frames.extend_from_slice(&read[..n]);
        let skipped = skip.min(frames.len());
        frames.drain(..skipped);
        skip -= skipped;
        // A frame: 3 bytes of length, its type, flags, 4 of stream id.
        while frames.len() >= 9 {
            let len = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
            if frames.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes(frames[5..9].try_into().unwrap()) & 0x7fff_ffff;
            frame(frames[3], stream, &frames[9..9 + len]);
            frames.drain(..9 + len);
        }
        if to.write_all(&read[..n]).await.is_err() {
            break;
        }
    }
}

/// `order_one` bought with a cold boot (its pool is empty) and an hour to
/// do it, under way in a task.
fn a_cold_purchase(
    client: &warmpool_client::Client,
) -> tokio::task::JoinHandle<Result<warmpool_client::api::Allocation, warmpool_client::ClientError>>
{
    let mut order = order_one();
    order.empty_pool_policy = warmpool_client::api::EmptyPoolPolicy::ColdBoot.into();
    order.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let client = client.clone();
    tokio::spawn(async move { client.allocate(order).await })
}

/// A `WatchPools` stream of such a client, of which one message was read
/// and no more will be, and the relay it goes through to `endpoint`
/// (`http://host:port`), which tells when its window is full.
async fn a_watch_read_once(endpoint: &str) -> (warmpool_client::PoolStatusStream, FlowRelay) {
    let upstream = endpoint
        .strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("not http://host:port: {endpoint}"));
    let relay = FlowRelay::to(upstream).await;
    let stalled = warmpool_client::Client::from_channel(
        a_client_that_reads_little(&format!("http://{}", relay.addr)).await,
    );
    let mut watch = stalled.watch_pools().await.unwrap();
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("a first pool status")
        .expect("the stream is open")
        .expect("no stream error");
    (watch, relay)
}

/// Changes db.small@`az` `times` times (paused on, off, ...): each change
/// is a message to every `WatchPools` reader.
async fn toggle_paused(client: &warmpool_client::Client, az: &str, times: usize) {
    for i in 0..times {
        client
            .update_pool(
                "db.small",
                az,
                warmpool_client::api::PoolSpec {
                    paused: i % 2 == 0,
                    ..Default::default()
                },
                ["paused"],
            )
            .await
            .unwrap();
    }
}

/// A dashboard that stopped reading its `WatchPools` stream with the
/// stream's window full: the end of the stream cannot reach it, and
/// shutdown used to wait for it for the whole grace period. It now stops
/// once no unary call is in flight.
#[tokio::test]
async fn a_watch_whose_client_stopped_reading_does_not_hold_up_shutdown() {
    let d = with_the_longest_grace().await;
    let (watch, relay) = a_watch_read_once(&d.endpoint()).await;
    // Far more than 1 KiB of pool messages, none of them read.
    toggle_paused(&d.client, "az1", 20).await;
    relay.wait_window_full().await;
    // Fails unless the daemon stops within 30 s, before the grace ends.
    d.shut_down().await;
    drop(watch);
}

/// A purchase in flight when shutdown begins is still answered, though a
/// `WatchPools` reader that stopped reading is cut without waiting out the
/// grace period.
#[tokio::test]
async fn a_purchase_in_flight_is_answered_while_a_stalled_watch_is_cut() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let data = tempfile::tempdir().unwrap();
    let text = config_text(
        data.path(),
        &[("db.small", "az1", 0, 1), ("db.small", "az2", 0, 1)],
    )
    .replacen(r#"shutdown_grace = "5s""#, r#"shutdown_grace = "30s""#, 1);
    let d = Daemon::start_text(&text, data).await;
    let (watch, relay) = a_watch_read_once(&d.endpoint()).await;

    // The purchase's cold boot cannot get past its server's create until
    // shutdown has begun, however slow the machine.
    d.cloud().faults().hold_calls("create_server");
    let cold = a_cold_purchase(&d.client);
    eventually("the purchase's cold boot, held", PATIENCE, || async {
        let instances = d.client.list_instances("db.small", "az1").await.unwrap();
        let creates = d.cloud().call_counts().get("create_server").copied();
        match (instances.len(), creates) {
            (1, Some(1)) => Ok(()),
            (n, creates) => Err(format!("{n} instances, {creates:?} creates")),
        }
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let faults = d.cloud().faults();
    let released = tokio::spawn(async move {
        // NOT_SERVING, or the stream's end, comes once shutdown has begun.
        while let Some(Ok(reply)) = health.next().await {
            if reply.status == i32::from(ServingStatus::NotServing) {
                break;
            }
        }
        faults.release_calls("create_server");
    });
    // The other pool: the purchase's own goes on as it is.
    toggle_paused(&d.client, "az2", 20).await;
    relay.wait_window_full().await;
    assert!(!cold.is_finished(), "the purchase ended before shutdown");

    // Fails unless the daemon stops within 30 s, before the grace ends.
    d.shut_down().await;
    released.await.unwrap();
    let sold = tokio::time::timeout(PATIENCE, cold)
        .await
        .expect("the purchase was answered")
        .unwrap()
        .expect("the purchase succeeded");
    assert!(!sold.server_id.is_empty(), "{sold:?}");
    drop(watch);
}

/// Order 1 of db.small@az1, waiting for an instance if none is Ready yet.
fn order_one() -> warmpool_client::api::AllocateRequest {
    let mut request = allocate_request(
        "order-1",
        "db.small",
        "az1",
        new_volume(20, false),
        "tenant-net",
        Duration::from_secs(30),
    );
    request.empty_pool_policy = warmpool_client::api::EmptyPoolPolicy::Wait.into();
    request
}

/// `warmpoold --data-dir DIR store ARGS`, run to its end.
fn store_command(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(dir)
        .arg("store")
        .args(args)
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .unwrap()
}

/// `warmpoold store ARGS --data-dir DIR`: the flag after the subcommand,
/// as `--help` says the subcommands take it.
fn store_command_flag_after(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .unwrap()
}

/// The store commands mend a store that is there: on a data dir without
/// one (mistyped, or made by hand and empty) they say so, exit 1 and
/// write nothing there (run as root, files they made could keep the
/// daemon's user out).
#[test]
fn the_store_commands_find_no_store_in_an_empty_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let runs = [store_command, store_command_flag_after];
    for (args, run) in [&["check"][..], &["set-aside", "allocations", "order-1"][..]]
        .into_iter()
        .flat_map(|args| runs.map(|run| (args, run)))
    {
        let out = run(data.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr.contains(&format!("no store in {}", data.path().display())),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches(&*data.path().display().to_string()).count(),
            1,
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(data.path()).unwrap().count(),
            0,
            "{args:?}"
        );
    }
}

/// A data dir the store commands cannot look into is not called empty
/// ("no store", which reads as a store lost): they name the path and the
/// OS error, and exit 1. A path through a regular file shows it for
/// anyone, root included (for whom no permission is missing).
#[test]
fn the_store_commands_name_a_data_dir_they_cannot_look_into() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("file");
    std::fs::write(&file, "").unwrap();
    let dir = file.join("store");
    for args in [&["check"][..], &["set-aside", "allocations", "order-1"][..]] {
        let out = store_command(&dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr.contains(&format!(
                "cannot tell whether {} holds a store",
                dir.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("Not a directory"), "{args:?}: {stderr}");
        assert!(!stderr.contains("no store in"), "{args:?}: {stderr}");
    }
}

/// The store commands take `--config` before or after the subcommand, as
/// `check-cloud` does and as `--data-dir` is taken (after it, clap used
/// to refuse it: "unexpected argument '--config' found"); the store is
/// the file's data_dir.
#[test]
fn the_store_commands_take_the_config_flag_after_the_subcommand() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("empty");
    std::fs::create_dir(&store_dir).unwrap();
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(
        &config_file,
        format!("data_dir = {:?}\n", store_dir.display().to_string()),
    )
    .unwrap();
    let config = config_file.as_os_str();
    for args in [
        &[
            "store".as_ref(),
            "check".as_ref(),
            "--config".as_ref(),
            config,
        ][..],
        &[
            "--config".as_ref(),
            config,
            "store".as_ref(),
            "check".as_ref(),
        ],
        &[
            "store".as_ref(),
            "--config".as_ref(),
            config,
            "set-aside".as_ref(),
            "allocations".as_ref(),
            "order-1".as_ref(),
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args(args)
            .env_remove("WARMPOOL_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no store in {}", store_dir.display())),
            "{args:?}: {stderr}"
        );
    }
}

/// `--delete-unknown-servers` and `--adopt-cloud` are for the daemon's
/// start: given with a subcommand, which would ignore them, they are
/// refused as a usage error before anything runs.
#[test]
fn the_start_up_flags_are_refused_beside_a_subcommand() {
    let data = tempfile::tempdir().unwrap();
    for flag in ["--delete-unknown-servers", "--adopt-cloud"] {
        for args in [&["store", "check"][..], &["check-cloud"][..]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
                .arg("--data-dir")
                .arg(data.path())
                .arg(flag)
                .args(args)
                .env_remove("WARMPOOL_CONFIG")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {args:?}: {stderr}");
            assert!(
                stderr.contains(flag) && stderr.contains(args[0]),
                "{flag} {args:?}: {stderr}"
            );
            assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
        }
    }
}

/// A listen flag given a host name is refused as the config file refuses
/// it, saying what it takes, not clap's bare "invalid socket address
/// syntax".
#[test]
fn a_listen_flag_with_a_host_name_says_what_it_takes() {
    for flag in ["--listen", "--metrics-listen"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args([flag, "localhost:50201"])
            .env_remove("WARMPOOL_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag)
                && stderr.contains("\"localhost:50201\" is not an IP:port")
                && stderr.contains("a host name is not resolved"),
            "{flag}: {stderr}"
        );
    }
}

/// A store record warmpoold cannot read stops it from starting, naming the
/// record; `warmpoold store check` lists it, `warmpoold store set-aside`
/// moves it aside, and warmpoold then starts and keeps the order's id taken.
#[tokio::test]
async fn an_unreadable_record_is_set_aside_with_the_store_commands() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(data.path(), &[("db.small", "az1", 1, 2)]).await;
    let sold = d.client.allocate(order_one()).await.unwrap();
    assert!(!sold.server_id.is_empty());
    d.shut_down().await;

    // A newer warmpoold wrote the order in a shape this one cannot read.
    let store_dir = data.path().join("store");
    let db = open_when_let_go(&store_dir);
    db.open_tree("allocations")
        .unwrap()
        .insert("order-1", br#"{"state":"Hibernating"}"#.to_vec())
        .unwrap();
    db.flush().unwrap();
    drop(db);

    let config = config(data.path(), &[("db.small", "az1", 1, 2)]);
    let refused = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("warmpoold started on a store it cannot read"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.contains("warmpoold store set-aside allocations 'order-1'"),
        "{refused}"
    );
    // Why the record cannot be read is told once, inside the message.
    assert!(refused.ends_with("to move this one aside"), "{refused}");
    // The store commands wait only a second for sled's lock, which the
    // handles dropped above (this test's, the refused start's) hold a
    // moment longer.
    wait_until_let_go(&store_dir);

    let store = |args: &[&str]| store_command(&store_dir, args);
    let check = store(&["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("unreadable allocations order-1: "), "{out}");
    // And which cloud the store serves.
    assert!(out.contains("cloud: the embedded simulated cloud"), "{out}");

    let readable = store(&["set-aside", "pools", "db.small@az1"]);
    assert_eq!(readable.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&readable.stderr).contains("can be read"),
        "{readable:?}"
    );
    let moved = store(&["set-aside", "allocations", "order-1"]);
    assert!(moved.status.success(), "{moved:?}");
    // Run again (a loop over `store check`'s list, re-run): done already.
    let again = store(&["set-aside", "allocations", "order-1"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "allocations order-1 is already set aside\n"
    );
    let check = store(&["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{out}");
    assert!(out.contains("set aside allocations order-1"), "{out}");

    let d = Daemon::start_in(data.path(), &[("db.small", "az1", 1, 2)]).await;
    let msg = expect_code(
        d.client.allocate(order_one()).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("set aside"), "{msg}");
    d.shut_down().await;
}

/// A store whose record of its cloud this version cannot read (a newer
/// warmpoold's) stops warmpoold's start. `store check` reports it as a
/// line, `cloud: cannot be read (...)`, beside the other records it
/// lists, and ends with its summary, exiting 1 as for any unreadable
/// record that stops warmpoold; it used to stop halfway with an error,
/// the records' summary never printed.
#[tokio::test]
async fn store_check_reports_an_unreadable_cloud_record_and_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("store");
    {
        let opening = store_dir.clone();
        let store = tokio::task::spawn_blocking(move || SledStore::open(&opening))
            .await
            .unwrap()
            .unwrap();
        store
            .record_cloud_identity(&pool_manager::cloud::CloudIdentity::Embedded)
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let db = open_when_let_go(&store_dir);
    // A newer warmpoold's cloud, and an order of its.
    db.open_tree("meta")
        .unwrap()
        .insert(
            "cloud",
            br#"{"kind":"vsphere","datacenter":"dc1"}"#.to_vec(),
        )
        .unwrap();
    db.open_tree("allocations")
        .unwrap()
        .insert("order-1", br#"{"state":"Hibernating"}"#.to_vec())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    wait_until_let_go(&store_dir);

    let check = store_command(&store_dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    let err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_eq!(check.status.code(), Some(1), "{out}{err}");
    assert_eq!(err, "", "{out}");
    assert!(out.contains("unreadable allocations order-1: "), "{out}");
    let cloud = out
        .lines()
        .find(|l| l.starts_with("cloud: "))
        .unwrap_or_else(|| panic!("no cloud line: {out}"));
    assert!(cloud.starts_with("cloud: cannot be read ("), "{cloud}");
    assert!(cloud.contains("vsphere"), "{cloud}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("2 record(s) cannot be read") && summary.contains("set-aside"),
        "{out}"
    );

    // The cloud's record alone: still the summary, which offers no
    // set-aside (the cloud's record cannot be set aside).
    let moved = store_command(&store_dir, &["set-aside", "allocations", "order-1"]);
    assert!(moved.status.success(), "{moved:?}");
    let check = store_command(&store_dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("cloud: cannot be read ("), "{out}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("1 record(s) cannot be read") && !summary.contains("set-aside KIND"),
        "{out}"
    );
}

/// The store in `dir`, written and opened again (sled's recovery then
/// notes how far its log goes), its log then cut off; no handle holds it
/// when this returns (the store commands and check-cloud wait only a second
/// for its lock).
fn damage_store(dir: &std::path::Path) {
    let open = || open_when_let_go(dir);
    let db = open();
    db.open_tree("pools").unwrap().insert("k", "v").unwrap();
    db.flush().unwrap();
    drop(db);
    drop(open());
    drop(open());
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_until_let_go(dir);
}

/// A store sled finds damaged stops warmpoold, and the store commands,
/// with one line naming the data dir, saying once what sled found (it
/// came twice) and what to do.
#[tokio::test]
async fn a_damaged_store_is_named_once_with_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("store");
    damage_store(&store_dir);
    let config = config(data.path(), &[("db.small", "az1", 1, 2)]);
    let refused = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("warmpoold started on a damaged store"),
        Err(e) => format!("{e:#}"),
    };
    let check = store_command(&store_dir, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let checked = String::from_utf8_lossy(&check.stderr).into_owned();
    for shown in [refused, checked] {
        assert!(
            shown.contains(&format!("cannot open the store in {}", store_dir.display())),
            "{shown}"
        );
        assert_eq!(shown.matches("corrupted data").count(), 1, "{shown}");
        assert!(shown.contains("backup"), "{shown}");
    }
}

/// A client that vanishes without closing its connection (a partition, a
/// VM killed) is found by the daemon's keepalive pings, and its connection
/// and `WatchPools` stream are closed; without them they stay open forever.
#[tokio::test]
async fn a_client_gone_without_closing_is_dropped_by_keepalive() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let data = tempfile::tempdir().unwrap();
    let text = config_text(data.path(), &[("db.small", "az1", 1, 2)]).replacen(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\ngrpc_keepalive_interval = \"1s\"\ngrpc_keepalive_timeout = \"1s\"",
        1,
    );
    let d = Daemon::start_text(&text, data).await;

    // A proxy between client and daemon that can go silent both ways while
    // keeping both sockets open, as a partition does.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let daemon_addr = d.running.grpc_addr;
    let silent = Arc::new(AtomicBool::new(false));
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let pump = {
        let silent = silent.clone();
        tokio::spawn(async move {
            let (client, _) = proxy.accept().await.unwrap();
            let daemon = tokio::net::TcpStream::connect(daemon_addr).await.unwrap();
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut daemon_rx, mut daemon_tx) = daemon.into_split();
            let up = {
                let silent = silent.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        if !silent.load(Ordering::SeqCst) {
                            let _ = daemon_tx.write_all(&buf[..n]).await;
                        }
                    }
                    daemon_tx
                })
            };
            let mut buf = vec![0u8; 16 * 1024];
            // Until the daemon closes its side.
            while let Ok(n @ 1..) = daemon_rx.read(&mut buf).await {
                if !silent.load(Ordering::SeqCst) {
                    let _ = client_tx.write_all(&buf[..n]).await;
                }
            }
            let _ = closed_tx.send(());
            up.abort();
            client_tx
        })
    };

    let client = warmpool_client::Client::connect(&format!("http://{proxy_addr}"))
        .await
        .unwrap();
    let mut watch = client.watch_pools().await.unwrap();
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("a first pool status")
        .expect("the stream is open")
        .expect("no error");

    silent.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(15), closed_rx)
        .await
        .expect("the daemon closes the connection of a client that stopped answering")
        .unwrap();
    drop(pump);
    drop(watch);
    d.shut_down().await;
}

/// A pool the config declares and an operator deleted is still draining
/// when warmpoold restarts: the start-up goes on, and the drain finishes.
/// CreatePool's "being deleted" answer made the start-up fail, so the
/// daemon crash-looped, each failed start stopping the drain again.
#[tokio::test]
async fn a_restart_during_the_drain_of_a_configured_pool_starts() {
    let data = tempfile::tempdir().unwrap();
    let pools = [("db.small", "az1", 1, 2)];
    let d = Daemon::start_in(data.path(), &pools).await;
    d.shut_down().await;

    // The operator's DeletePool was under way when the daemon stopped.
    let store_dir = data.path().join("store");
    let store = tokio::task::spawn_blocking(move || SledStore::open(&store_dir))
        .await
        .unwrap()
        .unwrap();
    let mut pool = store.list_pools().await.unwrap().remove(0);
    pool.draining = true;
    store.put_pool(&pool).await.unwrap();
    store.flush().await.unwrap();
    drop(store);

    let d = Daemon::start_in(data.path(), &pools).await;
    eventually("the drain deletes the pool", PATIENCE, || async {
        let pools = d.client.list_pools().await.unwrap();
        match pools.is_empty() {
            true => Ok(()),
            false => Err(format!("{pools:?}")),
        }
    })
    .await;
    d.shut_down().await;
}

/// A store written before free text was capped may hold a pool's
/// `last_error` as long as the cloud made it; one of over 4 MiB failed
/// ListPools and GetPool for every client. It is shown cut.
#[tokio::test]
async fn a_huge_last_error_a_store_kept_is_shown_cut() {
    let data = tempfile::tempdir().unwrap();
    let pools = [("db.small", "az1", 0, 1)];
    let d = Daemon::start_in(data.path(), &pools).await;
    d.shut_down().await;

    let store_dir = data.path().join("store");
    let store = tokio::task::spawn_blocking(move || SledStore::open(&store_dir))
        .await
        .unwrap()
        .unwrap();
    let mut pool = store.list_pools().await.unwrap().remove(0);
    pool.last_error = Some("F".repeat(64 << 10));
    store.put_pool(&pool).await.unwrap();
    store.flush().await.unwrap();
    drop(store);

    let d = Daemon::start_in(data.path(), &pools).await;
    let listed = d.client.list_pools().await.unwrap().remove(0).last_error;
    let got = d
        .client
        .get_pool("db.small", "az1")
        .await
        .unwrap()
        .last_error;
    for last_error in [listed, got] {
        assert!(
            last_error.len() <= pool_manager::text::MAX_KEPT_TEXT_CHARS
                && last_error.ends_with(" more characters)"),
            "{} bytes",
            last_error.len()
        );
    }
    d.shut_down().await;
}

/// The next line of warmpoold's log containing `needle`, without colour.
async fn log_line(log: &mut DaemonLog, needle: &str) -> String {
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("warmpoold's log ended before {needle:?}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {needle:?} in warmpoold's log"))
}

type DaemonLog = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// The warmpoold binary started on `config_file` (any free ports), once it
/// serves gRPC: the process, its log from there on and the gRPC address.
#[cfg(unix)]
async fn serving_daemon(
    config_file: &std::path::Path,
) -> (tokio::process::Child, DaemonLog, String) {
    serving_daemon_with(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold")),
        config_file,
    )
    .await
}

/// [`serving_daemon`] of one pool (db.small@az1, min 0), its config
/// written to `config_file` (its data beside it), started by a shell that
/// runs `prelude` (a limit, a trap) and then execs it, so that the prelude
/// applies to warmpoold alone.
#[cfg(unix)]
async fn serving_after_shell(
    config_file: &std::path::Path,
    prelude: &str,
) -> (tokio::process::Child, DaemonLog, String) {
    let data = config_file.parent().expect("a config file in a directory");
    std::fs::write(config_file, config_text(data, &[("db.small", "az1", 0, 1)])).unwrap();
    let mut shell = tokio::process::Command::new("sh");
    shell.args([
        "-c",
        &format!("{prelude} && exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_warmpoold"),
    ]);
    serving_daemon_with(shell, config_file).await
}

/// [`serving_daemon`], started by `command` (warmpoold, or a shell that
/// execs it).
#[cfg(unix)]
async fn serving_daemon_with(
    command: tokio::process::Command,
    config_file: &std::path::Path,
) -> (tokio::process::Child, DaemonLog, String) {
    let (daemon, log, addr, _) = serving_daemon_on(command, config_file, "127.0.0.1:0").await;
    (daemon, log, addr)
}

/// [`serving_daemon_with`], its gRPC port bound on `listen` (`--listen`):
/// the process, its log from there on, the gRPC address (127.0.0.1 for
/// one bound on every address) and the metrics address.
#[cfg(unix)]
async fn serving_daemon_on(
    mut command: tokio::process::Command,
    config_file: &std::path::Path,
    listen: &str,
) -> (tokio::process::Child, DaemonLog, String, String) {
    use tokio::io::AsyncBufReadExt;
    let mut daemon = command
        .arg("--config")
        .arg(config_file)
        .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("WARMPOOL_CONFIG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = tokio::io::BufReader::new(daemon.stderr.take().unwrap()).lines();
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let metrics = log_line(&mut log, "serving Prometheus metrics").await;
    let metrics = field(&metrics, "metrics_addr=");
    let serving = log_line(&mut log, "warmpoold serving gRPC").await;
    let addr = field(&serving, "grpc_addr=").replacen("0.0.0.0:", "127.0.0.1:", 1);
    (daemon, log, addr, metrics)
}

/// `systemctl reload`: SIGHUP to the daemon.
#[cfg(unix)]
fn hang_up(daemon: &tokio::process::Child) {
    send_signal(daemon, "-HUP");
}

/// `kill <signal>` of the daemon.
#[cfg(unix)]
fn send_signal(daemon: &tokio::process::Child, signal: &str) {
    let pid = daemon.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// A config file that does not load ends warmpoold with one line naming
/// the file, the key and its line, and no stack trace even where
/// RUST_BACKTRACE is set; with EX_CONFIG (78), which no restart mends.
#[tokio::test]
async fn a_broken_config_file_is_one_line_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(
        &config_file,
        "listen = \"127.0.0.1:0\"\n\n[cloud]\nkind = \"embedded\"\nseed = -1\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--config")
        .arg(&config_file)
        .env("RUST_BACKTRACE", "1")
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "Error: config file {}: cloud: invalid value: integer `-1`, expected u64 in `seed` (line 5)\n",
            config_file.display()
        )
    );
}

/// A start refused for what no restart mends (a store of another cloud, a
/// store record this version cannot read, a cloud config it cannot take)
/// exits with EX_CONFIG (78), which
/// the systemd unit does not restart: restarted every 5 s, each start
/// would log in to Keystone and list the pool servers again, for ever.
/// One a restart may mend (the port taken by a process that may go) exits
/// 1, as before, and is restarted.
#[tokio::test]
async fn a_refusal_only_an_operator_mends_exits_with_ex_config() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("store");
    {
        let opening = store_dir.clone();
        let store = tokio::task::spawn_blocking(move || SledStore::open(&opening))
            .await
            .unwrap()
            .unwrap();
        store
            .record_cloud_identity(&pool_manager::cloud::CloudIdentity::OpenStack {
                project_id: "5f1c".into(),
                region: Some("RegionOne".into()),
                server_tag: "warmpool".into(),
            })
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let demo = |listen: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
        command
            .arg("--data-dir")
            .arg(&store_dir)
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            .env_remove("WARMPOOL_CONFIG");
        command
    };
    let exit = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };

    // The demo (no --config) on the store of an OpenStack project.
    let (code, stderr) = exit(&demo("127.0.0.1:0").output().await.unwrap());
    assert_eq!(
        code,
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR)),
        "{stderr}"
    );
    assert!(stderr.contains("was --config forgotten?"), "{stderr}");

    // A port another process holds: it may let go of it.
    let holding = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holding.local_addr().unwrap().to_string();
    let (code, stderr) = exit(&demo(&taken).output().await.unwrap());
    assert_eq!(code, Some(1), "{stderr}");

    // A record this version cannot read.
    let db = open_when_let_go(&store_dir);
    db.open_tree("meta").unwrap().remove("cloud").unwrap();
    db.open_tree("allocations")
        .unwrap()
        .insert("order-1", br#"{"state":"Hibernating"}"#.to_vec())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    let (code, stderr) = exit(&demo("127.0.0.1:0").output().await.unwrap());
    assert_eq!(
        code,
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR)),
        "{stderr}"
    );
    assert!(stderr.contains("store set-aside allocations"), "{stderr}");

    // A cloud config it cannot take: nothing was asked of the cloud.
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [cloud]\nkind = \"openstack\"\ncloud = \"mycloud\"\nclouds_yaml = {:?}\n\
             management_network = \"mgmt\"\n",
            data.path().join("new"),
            data.path().join("missing-clouds.yaml"),
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--config")
        .arg(&config_file)
        .env_remove("WARMPOOL_CONFIG")
        .env_remove("OS_CLOUD")
        .output()
        .await
        .unwrap();
    let (code, stderr) = exit(&out);
    assert_eq!(
        code,
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR)),
        "{stderr}"
    );
    assert!(stderr.contains("missing-clouds.yaml"), "{stderr}");
}

/// `check-cloud` reads the file `--config` names, before the subcommand or
/// after it, not one `WARMPOOL_CONFIG` names: a flag beats the environment
/// (it used to be the other way round for the global flag, so an operator
/// checking a new file could be told the old one was fine).
#[tokio::test]
async fn check_cloud_reads_the_config_flag_over_the_environment() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("new.toml");
    std::fs::write(&config_file, "[cloud]\nkind = \"embedded\"\nseed = -1\n").unwrap();
    let stale = data.path().join("old.toml");
    for args in [
        vec![
            "--config".as_ref(),
            config_file.as_os_str(),
            "check-cloud".as_ref(),
        ],
        vec![
            "check-cloud".as_ref(),
            "--config".as_ref(),
            config_file.as_os_str(),
        ],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args(&args)
            .env("WARMPOOL_CONFIG", &stale)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("config file {}", config_file.display())),
            "{args:?}: {stderr}"
        );
    }
}

/// `WARMPOOL_CONFIG` exported empty counts as unset, as every WARMPOOL_*
/// variable does (README): clap used to take its empty value as --config's
/// and refuse a flag the user never typed.
#[tokio::test]
async fn an_empty_warmpool_config_counts_as_unset() {
    let data = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("check-cloud")
        .env("WARMPOOL_CONFIG", "")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("--config"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("embedded"), "{stdout}");
}

/// `check-cloud` on the embedded cloud checks the pools as its start-up
/// does (it used to print "nothing to check" and pass a config the daemon
/// then refused), and says when the data dir holds no store (a mistyped
/// --data-dir would otherwise read as "all ok").
#[tokio::test]
async fn check_cloud_checks_the_embedded_clouds_pools_and_names_a_missing_store() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("bad.toml");
    std::fs::write(
        &config_file,
        "[cloud]\nkind = \"embedded\"\n\n[[pools]]\nflavor = \"db.tiny\"\navailability_zone = \"az1\"\nimage = \"mysql-8.0\"\nmin_ready = 0\nmax_ready = 1\n",
    )
    .unwrap();
    let missing = data.path().join("no-such-dir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(&missing)
        .args(["check-cloud", "--config"])
        .arg(&config_file)
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("db.tiny"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}: no store here", missing.display())),
        "{stdout}"
    );
}

/// `warmpoold check-cloud | head -1`, `warmpoold store check | head -1`:
/// a reader that leaves early ends the report quietly (`println!` used to
/// panic, "failed printing to stdout: Broken pipe", exit 101), and the
/// exit code stays the check's, which a script under `set -o pipefail`
/// reads.
#[test]
fn a_report_into_a_closed_pipe_ends_quietly_with_the_checks_exit_code() {
    let data = tempfile::tempdir().unwrap();
    let failing = data.path().join("bad.toml");
    std::fs::write(
        &failing,
        "[cloud]\nkind = \"embedded\"\n\n[[pools]]\nflavor = \"db.tiny\"\navailability_zone = \"az1\"\nimage = \"mysql-8.0\"\nmin_ready = 0\nmax_ready = 1\n",
    )
    .unwrap();
    let no_store = data.path().join("no-store");
    let store_dir = data.path().join("store");
    drop(SledStore::open(&store_dir).unwrap());
    // `store check` waits only a second for sled's lock, which its flusher
    // holds a moment past the drop.
    wait_until_let_go(&store_dir);
    let runs: [(&[&std::ffi::OsStr], i32); 3] = [
        (&[no_store.as_ref(), "check-cloud".as_ref()], 0),
        (
            &[
                no_store.as_ref(),
                "check-cloud".as_ref(),
                "--config".as_ref(),
                failing.as_ref(),
            ],
            1,
        ),
        (&[store_dir.as_ref(), "store".as_ref(), "check".as_ref()], 0),
    ];
    for (args, code) in runs {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .arg("--data-dir")
            .args(args)
            .env_remove("WARMPOOL_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before warmpoold writes a line: each write meets it, with
        // no race against the pipe's buffer taking the whole report.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, "", "{args:?}");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    }
}

/// warmpoold's log is plain text when it goes to a pipe or a file
/// (journald, `kubectl logs`), with no colour codes, NO_COLOR or not
/// ([`serving_daemon`] leaves NO_COLOR as the test runner has it).
#[cfg(unix)]
#[tokio::test]
async fn the_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(&config_file, config_text(data.path(), &[])).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
    command.env_remove("NO_COLOR");
    let (mut daemon, mut log, _) = serving_daemon_with(command, &config_file).await;
    send_signal(&daemon, "-HUP");
    let line = log_line(&mut log, "SIGHUP").await;
    assert!(!line.contains('\x1b'), "{line:?}");
    assert!(line.contains(" INFO "), "{line:?}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// A config file whose cloud is the embedded one (said so, or no [cloud]
/// section) is most likely a demo's copied where a real cloud was meant:
/// warmpoold warns at start, naming the file, that nothing is booted for
/// real. Started without a config file, the demo, it does not, unless it
/// listens beyond loopback (the container image's default command): then
/// anyone on the network could buy servers that do not exist.
#[cfg(unix)]
#[tokio::test]
async fn a_config_file_on_the_embedded_cloud_is_warned_of() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(&config_file, config_text(data.path(), &[])).unwrap();
    for (config, listen) in [
        (Some(&config_file), "127.0.0.1:0"),
        (None, "127.0.0.1:0"),
        (None, "0.0.0.0:0"),
    ] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
        if let Some(file) = config {
            command.arg("--config").arg(file);
        }
        let mut daemon = command
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path().join("store"))
            .env("RUST_LOG", "info")
            .env_remove("WARMPOOL_CONFIG")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut log = tokio::io::BufReader::new(daemon.stderr.take().unwrap()).lines();
        let before_serving = tokio::time::timeout(PATIENCE, async {
            let mut lines = Vec::new();
            while let Some(line) = log.next_line().await.unwrap() {
                if line.contains("warmpoold serving gRPC") {
                    return lines;
                }
                lines.push(line);
            }
            panic!("warmpoold stopped before serving: {lines:#?}");
        })
        .await
        .expect("warmpoold did not serve in time");
        let warning = before_serving
            .iter()
            .find(|l| l.contains("nothing is booted for real"));
        match (config, listen, warning) {
            (Some(file), _, Some(warning)) => {
                assert!(warning.contains(" WARN "), "{warning}");
                assert!(
                    warning.contains(&file.display().to_string())
                        && warning.contains(r#"kind = "embedded""#)
                        && warning.contains(r#"kind = "openstack""#),
                    "{warning}"
                );
            }
            (None, "0.0.0.0:0", Some(warning)) => {
                assert!(warning.contains(" WARN "), "{warning}");
                assert!(
                    warning.contains("serves on 0.0.0.0:0, beyond this host")
                        && warning.contains("--config FILE")
                        && warning.contains(r#"kind = "openstack""#),
                    "{warning}"
                );
            }
            (None, "127.0.0.1:0", None) => {}
            (_, _, warning) => {
                panic!("config {config:?} on {listen}, warning {warning:?}: {before_serving:#?}")
            }
        }
        send_signal(&daemon, "-TERM");
        let status = tokio::time::timeout(PATIENCE, daemon.wait())
            .await
            .expect("warmpoold stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// A second SIGTERM (or Ctrl-C) while warmpoold waits for in-flight calls
/// stops it now, store flushed, instead of after the grace period.
#[cfg(unix)]
#[tokio::test]
async fn a_second_signal_stops_without_waiting_out_the_grace_period() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    // Real-cloud latencies: a cold boot takes 90 s, longer than the grace.
    let text = config_text(data.path(), &[("db.small", "az1", 0, 1)])
        .replacen(r#"shutdown_grace = "5s""#, r#"shutdown_grace = "30s""#, 1)
        .replacen("time_scale = 0.01", "time_scale = 1.0", 1)
        .replacen(
            "[manager]\n",
            "[manager]\nallow_short_intervals = true\n",
            1,
        );
    std::fs::write(&config_file, text).unwrap();
    let (mut daemon, mut log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let cold = a_cold_purchase(&client);
    eventually("the purchase's cold boot", PATIENCE, || async {
        let instances = client.list_instances("db.small", "az1").await.unwrap();
        match instances.len() {
            1 => Ok(()),
            n => Err(format!("{n} instances")),
        }
    })
    .await;

    let terminate = || send_signal(&daemon, "-TERM");
    terminate();
    let waiting = log_line(&mut log, "waiting for in-flight ones").await;
    assert!(waiting.contains("1 unary call;"), "{waiting}");
    assert!(!cold.is_finished());
    terminate();
    log_line(&mut log, "asked again to stop").await;
    let status = tokio::time::timeout(PATIENCE, daemon.wait())
        .await
        .expect("warmpoold stopped without waiting out the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = cold.await;
}

/// The log says what shutdown waited for and what it cut: a `WatchPools`
/// reader that stopped reading is one stream cut, and the daemon exits 0
/// before its grace period (the longest, 30 s) ends.
#[cfg(unix)]
#[tokio::test]
async fn the_log_names_the_streams_shutdown_cut() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let text = config_text(data.path(), &[("db.small", "az1", 0, 1)]).replacen(
        r#"shutdown_grace = "5s""#,
        r#"shutdown_grace = "30s""#,
        1,
    );
    std::fs::write(&config_file, text).unwrap();
    let (mut daemon, mut log, addr) = serving_daemon(&config_file).await;
    let (watch, relay) = a_watch_read_once(&format!("http://{addr}")).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    toggle_paused(&client, "az1", 20).await;
    drop(client);
    relay.wait_window_full().await;

    send_signal(&daemon, "-TERM");
    let waiting = log_line(&mut log, "waiting for in-flight ones").await;
    assert!(
        waiting.contains("0 unary calls; ending 1 stream"),
        "{waiting}"
    );
    let cut = log_line(&mut log, "cutting").await;
    assert!(cut.contains("cutting 1 stream whose end"), "{cut}");
    let status = tokio::time::timeout(PATIENCE, daemon.wait())
        .await
        .expect("warmpoold stopped before its grace period ended")
        .unwrap();
    assert!(status.success(), "{status:?}");
    drop(watch);
}

/// `systemctl reload` (SIGHUP) makes the warmpoold binary read its config
/// file again and take the new `[[api_tokens]]`; a file that does not load
/// changes nothing.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reads_the_api_tokens_again() {
    use warmpool_server::access::token_sha256;

    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let base = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let with_token = |token: &str| {
        format!(
            "{base}\n[[api_tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            token_sha256(token)
        )
    };
    std::fs::write(&config_file, with_token("old-token")).unwrap();
    let (mut daemon, mut log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let pools = |token: &str| {
        let client = client.clone().with_token(token).unwrap();
        async move { client.list_pools().await.map(|p| p.len()) }
    };
    assert_eq!(pools("old-token").await.unwrap(), 1);
    expect_code(pools("new-token").await, Code::Unauthenticated);

    let hangup = || hang_up(&daemon);
    std::fs::write(&config_file, with_token("new-token")).unwrap();
    hangup();
    log_line(&mut log, "reloaded api_tokens").await;
    assert_eq!(pools("new-token").await.unwrap(), 1);
    expect_code(pools("old-token").await, Code::Unauthenticated);

    std::fs::write(
        &config_file,
        base.clone()
            + "\n[[api_tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"new-token\"\n",
    )
    .unwrap();
    hangup();
    let refused = log_line(&mut log, "api_tokens and TLS unchanged").await;
    assert!(
        refused.contains("sha256 must be 64 hex digits"),
        "{refused}"
    );
    assert_eq!(pools("new-token").await.unwrap(), 1);

    // A file without tokens (emptied by mistake, half written) does not
    // open the API.
    std::fs::write(&config_file, &base).unwrap();
    hangup();
    let refused = log_line(&mut log, "api_tokens and TLS unchanged").await;
    assert!(refused.contains("does not open the API"), "{refused}");
    expect_code(
        client.list_pools().await.map(|p| p.len()),
        Code::Unauthenticated,
    );
    assert_eq!(pools("new-token").await.unwrap(), 1);

    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// SIGHUP also reads the `[tls]` files again: a certificate renewed on disk
/// is served to the connections that follow, without a restart.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reads_the_tls_files_again() {
    use support::pki::Pki;
    let data = tempfile::tempdir().unwrap();
    let old_ca = Pki::new(data.path(), "old-ca");
    let server = old_ca.issue("server", &["127.0.0.1"]);
    let config_file = data.path().join("warmpoold.toml");
    let text = config_text(data.path(), &[("db.small", "az1", 0, 1)]) + &server.tls_section();
    std::fs::write(&config_file, text).unwrap();
    let (daemon, mut log, addr) = serving_daemon(&config_file).await;
    let https = format!("https://{addr}");
    let pools =
        |ca: &Pki| support::list_pools_over(&https, support::tls_options(Some(ca.ca_pem()), None));
    assert_eq!(pools(&old_ca).await.unwrap(), 1);

    let new_ca = Pki::new(data.path(), "new-ca");
    new_ca.issue("server", &["127.0.0.1"]);
    hang_up(&daemon);
    log_line(&mut log, "reloaded the TLS certificate").await;
    assert_eq!(pools(&new_ca).await.unwrap(), 1);
    assert!(pools(&old_ca).await.is_err(), "the old certificate is gone");

    // A renewal half written when the signal came: the certificate in
    // force stays, and the log says which file is at fault.
    std::fs::write(&server.key_file, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    hang_up(&daemon);
    let refused = log_line(&mut log, "TLS unchanged").await;
    assert!(refused.contains("tls.key_file"), "{refused}");
    assert_eq!(pools(&new_ca).await.unwrap(), 1);
}

/// A reload is all or nothing: a file whose TLS part is refused does not
/// put its tokens in force, and one whose tokens are refused does not put
/// the renewed certificate in force. (An editor's half-written save with
/// only one of the tokens, and a key cut short, revoked the other token.)
#[cfg(unix)]
#[tokio::test]
async fn a_reload_refused_in_part_changes_nothing() {
    use support::pki::Pki;
    use warmpool_server::access::token_sha256;
    let data = tempfile::tempdir().unwrap();
    let old_ca = Pki::new(data.path(), "old-ca");
    let server = old_ca.issue("server", &["127.0.0.1"]);
    let config_file = data.path().join("warmpoold.toml");
    let plaintext = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let base = plaintext.clone() + &server.tls_section();
    let token = |token: &str| {
        format!(
            "\n[[api_tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            token_sha256(token)
        )
    };
    let with_token = |t: &str| base.clone() + &token(t);
    std::fs::write(&config_file, with_token("old")).unwrap();
    let (daemon, mut log, addr) = serving_daemon(&config_file).await;
    let https = format!("https://{addr}");
    let pools = |ca: &Pki, token: &str| {
        let connecting = warmpool_client::Client::connect_with(
            &https,
            support::tls_options(Some(ca.ca_pem()), None),
        );
        let token = token.to_owned();
        async move { connecting.await?.with_token(&token)?.list_pools().await }
    };
    assert_eq!(pools(&old_ca, "old").await.unwrap().len(), 1);

    // New tokens, and a key cut short: the TLS part is refused, so the
    // tokens are too.
    std::fs::write(&config_file, with_token("new")).unwrap();
    std::fs::write(&server.key_file, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    hang_up(&daemon);
    let refused = log_line(&mut log, "TLS unchanged").await;
    assert!(refused.contains("tls.key_file"), "{refused}");
    // Named as the other refusals name it: which file to mend.
    let in_file = format!("config file {}: ", config_file.display());
    assert!(refused.contains(&in_file), "{refused}");
    assert_eq!(
        pools(&old_ca, "old").await.unwrap().len(),
        1,
        "the tokens in force stay"
    );
    expect_code(pools(&old_ca, "new").await, Code::Unauthenticated);
    assert!(
        refused.contains("api_tokens and TLS unchanged"),
        "{refused}"
    );

    // A renewed certificate, and a file without tokens: the tokens are
    // refused, so the certificate is too.
    let new_ca = Pki::new(data.path(), "new-ca");
    new_ca.issue("server", &["127.0.0.1"]);
    std::fs::write(&config_file, &base).unwrap();
    hang_up(&daemon);
    let refused = log_line(&mut log, "unchanged").await;
    assert!(refused.contains("does not open the API"), "{refused}");
    assert!(
        refused.contains(&format!("{in_file}the file has no [[api_tokens]]")),
        "{refused}"
    );
    assert_eq!(
        pools(&old_ca, "old").await.unwrap().len(),
        1,
        "the certificate in force stays"
    );
    assert!(pools(&new_ca, "old").await.is_err(), "not yet served");
    assert!(
        refused.contains("api_tokens and TLS unchanged"),
        "{refused}"
    );

    // New tokens in a file without [tls] (half written): serving
    // plaintext takes a restart, so the tokens are refused too.
    std::fs::write(&config_file, plaintext + &token("new")).unwrap();
    hang_up(&daemon);
    let refused = log_line(&mut log, "unchanged").await;
    assert!(
        refused.contains(&format!("{in_file}the file has no [tls] section")),
        "{refused}"
    );
    expect_code(pools(&old_ca, "new").await, Code::Unauthenticated);

    // Both parts fit: both are taken.
    std::fs::write(&config_file, with_token("new")).unwrap();
    hang_up(&daemon);
    log_line(&mut log, "reloaded the TLS certificate").await;
    assert_eq!(pools(&new_ca, "new").await.unwrap().len(), 1);
    expect_code(pools(&new_ca, "old").await, Code::Unauthenticated);
}

/// A renewal that put an expired certificate in place is refused by
/// SIGHUP with an ERROR naming the file and its notAfter, and the
/// certificate in force stays. It used to be reloaded ("new connections
/// use it"), and every client then failed its handshake.
#[cfg(unix)]
#[tokio::test]
async fn sighup_refuses_an_expired_certificate() {
    use support::pki::Pki;
    let data = tempfile::tempdir().unwrap();
    let ca = Pki::new(data.path(), "ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let config_file = data.path().join("warmpoold.toml");
    let text = config_text(data.path(), &[("db.small", "az1", 0, 1)]) + &server.tls_section();
    std::fs::write(&config_file, text).unwrap();
    let (daemon, mut log, addr) = serving_daemon(&config_file).await;
    let https = format!("https://{addr}");
    let pools = || support::list_pools_over(&https, support::tls_options(Some(ca.ca_pem()), None));
    assert_eq!(pools().await.unwrap(), 1);

    ca.issue_valid("server", &["127.0.0.1"], (2001, 1, 1), (2002, 1, 1));
    hang_up(&daemon);
    let refused = log_line(&mut log, "TLS unchanged").await;
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(
        refused.contains(&format!("tls.cert_file {}", server.cert_file.display())),
        "{refused}"
    );
    assert!(
        refused.contains("expired at 2002-01-01T00:00:00Z (its notAfter)"),
        "{refused}"
    );
    assert_eq!(pools().await.unwrap(), 1, "the certificate in force stays");
}

/// A `[tls]` section added to a plaintext daemon's file is checked by the
/// reload, which is refused whole if its files do not load (the restart
/// that turns TLS on would fail); the reload names the settings it
/// leaves for a restart. The files were never read, and the log said only
/// "reloaded api_tokens".
#[cfg(unix)]
#[tokio::test]
async fn sighup_checks_a_tls_section_added_to_a_plaintext_daemon() {
    use support::pki::Pki;
    use warmpool_server::access::token_sha256;
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let plaintext = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let token = |token: &str| {
        format!(
            "\n[[api_tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            token_sha256(token)
        )
    };
    std::fs::write(&config_file, plaintext.clone() + &token("old")).unwrap();
    let (daemon, mut log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let pools = |token: &str| {
        let client = client.clone().with_token(token).unwrap();
        async move { client.list_pools().await.map(|p| p.len()) }
    };
    assert_eq!(pools("old").await.unwrap(), 1);

    let ca = Pki::new(data.path(), "ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let missing = data.path().join("missing.crt");
    let broken_tls = format!(
        "\n[tls]\ncert_file = {missing:?}\nkey_file = {:?}\n",
        server.key_file
    );
    std::fs::write(
        &config_file,
        plaintext.clone() + &token("new") + &broken_tls,
    )
    .unwrap();
    hang_up(&daemon);
    let refused = log_line(&mut log, "unchanged").await;
    assert!(
        refused.contains(&format!("cannot read tls.cert_file {}", missing.display())),
        "{refused}"
    );
    assert_eq!(pools("old").await.unwrap(), 1, "the tokens in force stay");
    expect_code(pools("new").await, Code::Unauthenticated);

    // Files that load: the tokens are taken, and the log names what waits
    // for a restart, and says a restart does not apply a changed pool.
    let longer_grace = plaintext
        .replacen(r#"shutdown_grace = "5s""#, r#"shutdown_grace = "7s""#, 1)
        .replacen("max_ready = 1", "max_ready = 2", 1);
    assert_eq!(longer_grace.matches("max_ready = 2").count(), 1);
    std::fs::write(
        &config_file,
        longer_grace + &token("new") + &server.tls_section(),
    )
    .unwrap();
    hang_up(&daemon);
    log_line(&mut log, "reloaded api_tokens").await;
    let warned = log_line(&mut log, "take a restart").await;
    assert!(warned.contains("WARN"), "{warned}");
    assert!(warned.contains("shutdown_grace, tls"), "{warned}");
    assert!(!warned.contains("listen"), "overridden by flags: {warned}");
    assert!(!warned.contains("pools"), "{warned}");
    let pool = log_line(&mut log, "the file changes pool db.small@az1").await;
    assert!(pool.contains("WARN"), "{pool}");
    assert!(
        pool.contains("keeps its stored settings across restarts"),
        "{pool}"
    );
    assert!(
        pool.contains("`warmpoolctl pools update db.small az1 ...`"),
        "{pool}"
    );
    assert_eq!(pools("new").await.unwrap(), 1);
}

/// Every `[[api_tokens]]` table, each of a token named `name` (the token
/// is its name) of role reader.
fn reader_tokens(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "\n[[api_tokens]]\nname = \"{name}\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
                warmpool_server::access::token_sha256(name)
            )
        })
        .collect()
}

/// The lines of warmpoold's log up to the first containing `needle`,
/// that one included.
async fn lines_until(log: &mut DaemonLog, needle: &str) -> Vec<String> {
    let found = tokio::time::timeout(PATIENCE, async {
        let mut lines = Vec::new();
        while let Some(line) = log.next_line().await.unwrap() {
            let done = line.contains(needle);
            lines.push(line);
            if done {
                return lines;
            }
        }
        panic!("warmpoold's log ended before {needle:?}: {lines:#?}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {needle:?} in warmpoold's log"))
}

/// The value of the sample `name` (no labels) in a /metrics body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How the last reload went, as `/metrics` at `metrics_addr` says:
/// `warmpool_config_last_reload_successful` and
/// `warmpool_config_last_reload_success_timestamp_seconds`.
async fn last_reload(metrics_addr: &str) -> (Option<f64>, Option<f64>) {
    let (status, _, body) = support::http_get(&format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    (
        sample(&body, "warmpool_config_last_reload_successful"),
        sample(
            &body,
            "warmpool_config_last_reload_success_timestamp_seconds",
        ),
    )
}

/// A reload shows in the metrics as Prometheus' own does: 1 and the time
/// of the last config taken (the start's, then each reload's), 0 from a
/// refused reload until one is taken. `systemctl reload` returns before
/// the file is read, and a refused reload was one ERROR line and nothing
/// to scrape: a token removed in a file with a typo elsewhere (a
/// `[manager]` key) kept working while the operator believed it revoked.
/// The refusal still changes nothing.
#[cfg(unix)]
#[tokio::test]
async fn a_refused_reload_shows_in_the_metrics() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let base = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    std::fs::write(
        &config_file,
        base.clone() + &reader_tokens(&["grafana", "billing"]),
    )
    .unwrap();
    let before_start = unix_now();
    let (daemon, mut log, addr, metrics) = serving_daemon_on(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold")),
        &config_file,
        "127.0.0.1:0",
    )
    .await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let pools = |token: &str| {
        let client = client.clone().with_token(token).unwrap();
        async move { client.list_pools().await.map(|p| p.len()) }
    };
    let (successful, at) = last_reload(&metrics).await;
    assert_eq!(successful, Some(1.0), "the config started with counts");
    let started_at = at.expect("the time of the config started with");
    assert!(started_at >= before_start, "{started_at} < {before_start}");

    // billing revoked, and a typo in [manager]: refused whole.
    let typo = base.replacen(r#"poll_interval = "50ms""#, r#"poll_interval = "2""#, 1);
    assert_ne!(typo, base);
    std::fs::write(&config_file, typo + &reader_tokens(&["grafana"])).unwrap();
    hang_up(&daemon);
    log_line(&mut log, "reload refused").await;
    assert_eq!(
        last_reload(&metrics).await,
        (Some(0.0), Some(started_at)),
        "a refused reload is 0, and the time of the last config taken stays"
    );
    assert_eq!(pools("billing").await.unwrap(), 1, "all or nothing");

    std::fs::write(&config_file, base + &reader_tokens(&["grafana"])).unwrap();
    let before_reload = unix_now();
    hang_up(&daemon);
    log_line(&mut log, "reloaded api_tokens").await;
    let (successful, at) = last_reload(&metrics).await;
    assert_eq!(successful, Some(1.0));
    let reloaded_at = at.unwrap();
    assert!(
        reloaded_at >= before_reload,
        "{reloaded_at} < {before_reload}"
    );
    expect_code(pools("billing").await, Code::Unauthenticated);
    assert_eq!(pools("grafana").await.unwrap(), 1);
}

/// A file cut short after its first token (an editor's save, a copy under
/// way when the signal came) has no `[cloud]`, and reads as the embedded
/// cloud; it was taken, revoking every token after the cut, while
/// warmpoold ran on OpenStack. A reload refuses a cloud of another kind
/// than the one warmpoold runs on, naming the file, and the tokens in
/// force stay.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_after_its_first_token_revokes_nothing() {
    use cloudsim::http::{HttpFace, HttpSettings};
    // No pool, no server: no simulated mysqld, whose port a local MySQL
    // may hold.
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        time_scale: 0.01,
        jitter: 0.0,
        listeners: false,
        ..cloudsim::SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let face = HttpFace::serve(sim, HttpSettings::default(), listener)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let clouds_yaml = data.path().join("clouds.yaml");
    std::fs::write(&clouds_yaml, face.clouds_yaml("cloudsim")).unwrap();
    // Tokens first, as the example has them: what follows has defaults.
    let head = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\npools = []\n",
        data.path().join("store").display().to_string()
    );
    let cloud = format!(
        "\n[cloud]\nkind = \"openstack\"\ncloud = \"cloudsim\"\nclouds_yaml = {:?}\n\
         management_network = \"mgmt-net\"\nrequest_timeout = \"10s\"\n",
        clouds_yaml.display().to_string()
    );
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(
        &config_file,
        head.clone() + &reader_tokens(&["grafana", "billing"]) + &cloud,
    )
    .unwrap();
    let (daemon, mut log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let pools = |token: &str| {
        let client = client.clone().with_token(token).unwrap();
        async move { client.list_pools().await.map(|p| p.len()) }
    };
    assert_eq!(pools("billing").await.unwrap(), 0);

    std::fs::write(&config_file, head + &reader_tokens(&["grafana"])).unwrap();
    hang_up(&daemon);
    // The error is a quoted field: its quotes escaped.
    let reloaded = log_line(&mut log, "SIGHUP:").await.replace("\\\"", "\"");
    assert!(reloaded.contains("reload refused"), "{reloaded}");
    assert!(
        reloaded.contains(&config_file.display().to_string())
            && reloaded.contains(r#"kind = "embedded""#)
            && reloaded.contains(r#"kind = "openstack""#),
        "{reloaded}"
    );
    assert!(
        reloaded.contains("api_tokens and TLS unchanged"),
        "{reloaded}"
    );
    assert_eq!(
        pools("billing").await.unwrap(),
        0,
        "billing keeps its token"
    );
    drop(face);
}

/// Tokens a reload puts in force on a plaintext listener beyond loopback
/// get the warning a start with them gives: they travel in plaintext.
/// The reload said only "reloaded api_tokens".
#[cfg(unix)]
#[tokio::test]
async fn tokens_a_reload_adds_to_a_plaintext_listener_beyond_loopback_are_warned_of() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let base = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    std::fs::write(&config_file, &base).unwrap();
    let (daemon, mut log, addr, _) = serving_daemon_on(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold")),
        &config_file,
        "0.0.0.0:0",
    )
    .await;
    std::fs::write(&config_file, base.clone() + &reader_tokens(&["grafana"])).unwrap();
    hang_up(&daemon);
    log_line(&mut log, "reloaded api_tokens").await;
    // A reload refused after it: the lines in between are the first's.
    std::fs::write(&config_file, base + "\n[[api_tokens]]\n").unwrap();
    hang_up(&daemon);
    let lines = lines_until(&mut log, "reload refused").await;
    let warned = lines
        .iter()
        .find(|line| line.contains("in plaintext"))
        .unwrap_or_else(|| panic!("no plaintext warning: {lines:#?}"));
    assert!(warned.contains(" WARN "), "{warned}");
    assert!(warned.contains("bearer tokens reach 0.0.0.0:"), "{warned}");
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    assert_eq!(
        client
            .with_token("grafana")
            .unwrap()
            .list_pools()
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A TLS key handed over with systemd's `LoadCredential=` is the copy
/// systemd made at start (under `$CREDENTIALS_DIRECTORY`): a reload keeps
/// the TLS identity started with, takes the tokens, and says that the
/// `[tls]` files take `systemctl restart`. A certificate renewed with a
/// new key was paired with the old copy and refused, and every later
/// reload with it: a revoked token kept working until a restart.
#[cfg(unix)]
#[tokio::test]
async fn a_reload_with_a_systemd_credential_key_keeps_the_tls_identity_and_takes_the_tokens() {
    use support::pki::Pki;
    let data = tempfile::tempdir().unwrap();
    let old_ca = Pki::new(data.path(), "old-ca");
    let server = old_ca.issue("server", &["127.0.0.1"]);
    let credentials = data.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let copy = credentials.join("tls.key");
    std::fs::copy(&server.key_file, &copy).unwrap();
    let tls = format!(
        "\n[tls]\ncert_file = {:?}\nkey_file = {copy:?}\n",
        server.cert_file
    );
    let base = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(&config_file, base.clone() + &reader_tokens(&["old"]) + &tls).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
    command.env("CREDENTIALS_DIRECTORY", &credentials);
    let (daemon, mut log, addr) = serving_daemon_with(command, &config_file).await;
    let https = format!("https://{addr}");
    let pools = |ca: &Pki, token: &str| {
        let connecting = warmpool_client::Client::connect_with(
            &https,
            support::tls_options(Some(ca.ca_pem()), None),
        );
        let token = token.to_owned();
        async move { connecting.await?.with_token(&token)?.list_pools().await }
    };
    assert_eq!(pools(&old_ca, "old").await.unwrap().len(), 1);

    // Renewed with a new key, in place: systemd's copy is the old key.
    let new_ca = Pki::new(data.path(), "new-ca");
    new_ca.issue("server", &["127.0.0.1"]);
    std::fs::write(&config_file, base + &reader_tokens(&["new"]) + &tls).unwrap();
    hang_up(&daemon);
    let reloaded = log_line(&mut log, "SIGHUP:").await;
    assert!(reloaded.contains("reloaded api_tokens"), "{reloaded}");
    let kept = log_line(&mut log, "LoadCredential").await;
    assert!(kept.contains(" WARN "), "{kept}");
    assert!(
        kept.contains(&copy.display().to_string())
            && kept.contains("copy")
            && kept.contains("systemctl restart warmpoold"),
        "{kept}"
    );
    assert_eq!(pools(&old_ca, "new").await.unwrap().len(), 1);
    expect_code(pools(&old_ca, "old").await, Code::Unauthenticated);
    assert!(
        pools(&new_ca, "new").await.is_err(),
        "the renewed certificate waits for the restart"
    );
}

/// A `[tls]` section added by a reload whose key is a systemd credential:
/// systemd makes the copy when the service starts, so it may not be there
/// yet; the restart that turns TLS on reads it. The reload takes the
/// tokens and says so; it was refused ("cannot read tls.key_file"),
/// although the restart would have started.
#[cfg(unix)]
#[tokio::test]
async fn a_tls_section_with_a_systemd_credential_key_is_left_to_the_restart() {
    use support::pki::Pki;
    let data = tempfile::tempdir().unwrap();
    let server = Pki::new(data.path(), "ca").issue("server", &["127.0.0.1"]);
    let credentials = data.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let base = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let config_file = data.path().join("warmpoold.toml");
    std::fs::write(&config_file, base.clone() + &reader_tokens(&["old"])).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
    command.env("CREDENTIALS_DIRECTORY", &credentials);
    let (daemon, mut log, addr) = serving_daemon_with(command, &config_file).await;

    let tls = format!(
        "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        server.cert_file,
        credentials.join("tls.key")
    );
    std::fs::write(&config_file, base + &reader_tokens(&["new"]) + &tls).unwrap();
    hang_up(&daemon);
    let reloaded = log_line(&mut log, "SIGHUP:").await;
    assert!(reloaded.contains("reloaded api_tokens"), "{reloaded}");
    let lines = lines_until(&mut log, "take a restart").await;
    assert!(
        lines
            .iter()
            .any(|line| line.contains("LoadCredential")
                && line.contains("systemctl restart warmpoold")),
        "{lines:#?}"
    );
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let client = client.with_token("new").unwrap();
    assert_eq!(client.list_pools().await.unwrap().len(), 1);
}

/// A SIGHUP that comes while warmpoold starts (`systemctl reload` is
/// allowed from the moment it is exec'd) is held until it is up, said so
/// at INFO, and then taken. One that came before the handler was in place
/// (after the config file was read) ended warmpoold, exit by signal, which
/// systemd does not restart. The config file is a FIFO, so that the
/// signal comes while warmpoold reads it, whatever the machine's speed.
#[cfg(unix)]
#[tokio::test]
async fn a_sighup_during_start_up_is_held_until_warmpoold_is_up() {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&config_file)
        .status()
        .unwrap();
    assert!(made.success());
    let text = config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--config")
        .arg(&config_file)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("WARMPOOL_CONFIG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = tokio::io::BufReader::new(daemon.stderr.take().unwrap()).lines();
    // Opening the FIFO to write returns once warmpoold opened it to read.
    let open_writer = || {
        let fifo = config_file.clone();
        async move {
            let opening = tokio::task::spawn_blocking(move || {
                std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
            });
            tokio::time::timeout(PATIENCE, opening)
                .await
                .expect("warmpoold did not open its config file")
                .unwrap()
        }
    };
    let mut writer = open_writer().await;
    hang_up(&daemon);
    // A warmpoold the signal ended has closed the FIFO (a broken pipe
    // here): what follows says so.
    let _ = writer.write_all(text.as_bytes());
    drop(writer);
    let started = tokio::time::timeout(PATIENCE, async {
        let mut lines = Vec::new();
        while let Some(line) = log.next_line().await.unwrap() {
            let serving = line.contains("warmpoold serving gRPC");
            lines.push(line);
            if serving {
                return lines;
            }
        }
        let status = daemon.wait().await.unwrap();
        panic!("warmpoold ended before serving ({status}): {lines:#?}");
    })
    .await
    .expect("warmpoold did not serve in time");
    let held = started
        .iter()
        .find(|line| line.contains("SIGHUP"))
        .unwrap_or_else(|| panic!("no word of the SIGHUP: {started:#?}"));
    assert!(held.contains(" INFO "), "{held}");
    assert!(held.contains("once start-up ends"), "{held}");
    // Then taken: warmpoold reads its config file again.
    let mut writer = open_writer().await;
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);
    log_line(&mut log, "reloaded api_tokens").await;
    assert!(daemon.try_wait().unwrap().is_none(), "warmpoold runs on");
}

/// A release, which deletes a tenant's server (and, asked, its volume),
/// is logged at INFO with the caller's token name (never the token) and
/// `delete_volume`. The line carried only the request id; the caller was
/// logged at debug.
#[cfg(unix)]
#[tokio::test]
async fn a_release_is_logged_with_its_caller_and_delete_volume() {
    use warmpool_server::access::token_sha256;
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let token = "s3cret-billing-token";
    let text = config_text(data.path(), &[("db.small", "az1", 1, 1)])
        + &format!(
            "\n[[api_tokens]]\nname = \"billing-bot\"\nrole = \"billing\"\nsha256 = \"{}\"\n",
            token_sha256(token)
        );
    std::fs::write(&config_file, text).unwrap();
    let (_daemon, mut log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr)
        .await
        .unwrap()
        .with_token(token)
        .unwrap();
    client.allocate(order_one()).await.unwrap();
    client.release("order-1", Some(true)).await.unwrap();
    let released = log_line(&mut log, "released request_id=order-1").await;
    assert!(released.contains("INFO"), "{released}");
    assert!(released.contains("caller=billing-bot"), "{released}");
    assert!(released.contains("delete_volume=true"), "{released}");
    assert!(!released.contains(token), "{released}");
}

/// Out of file descriptors under a burst of connections, warmpoold keeps
/// its gRPC listener, and serves again once connections close. (tonic's
/// own accept loop ended at the first EMFILE, and warmpoold then stopped
/// as if asked to, with exit code 0, which a supervisor does not restart.)
#[cfg(unix)]
#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_listener() {
    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let (mut daemon, mut log, addr) = serving_after_shell(&config_file, "ulimit -n 128").await;

    // More connections than the daemon has descriptors left (and fewer
    // than it has left plus the listen backlog, 128).
    let mut burst = Vec::new();
    for _ in 0..200 {
        burst.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    log_line(&mut log, "cannot accept a connection").await;
    drop(burst);

    let pools = support::eventually("warmpoold to serve again", PATIENCE, || async {
        let client = warmpool_client::Client::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        client.list_pools().await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(pools.len(), 1);
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "warmpoold is still running"
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// A store whose disk fails ends warmpoold: sled fails every write and
/// flush after its first failed one until the store is opened again, so
/// warmpoold logs why, turns NOT_SERVING, stops as on SIGTERM and exits 1,
/// for systemd (`Restart=on-failure`) or Kubernetes to start it again;
/// started again on the mended disk, it serves the same store. The disk
/// fails as a full one does: its file size limit, set on the running
/// daemon just above its log's size, fails the log's writes (EFBIG;
/// SIGXFSZ, whose default action would end it first, is ignored from the
/// shell that starts it).
#[cfg(unix)]
#[tokio::test]
async fn a_failed_store_disk_stops_warmpoold_with_an_error_and_a_restart_serves_again() {
    use rustix::process::{getrlimit, prlimit, Pid, Resource, Rlimit};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let data = tempfile::tempdir().unwrap();
    let config_file = data.path().join("warmpoold.toml");
    let (mut daemon, mut log, addr) = serving_after_shell(&config_file, "trap '' XFSZ").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, health.next())
        .await
        .expect("a first status")
        .expect("the stream is open")
        .expect("no stream error");
    assert_eq!(first.status, i32::from(ServingStatus::Serving));
    // Stored, so it outlasts the config's max_ready 1 at the restart.
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let max_ready = warmpool_client::api::PoolSpec {
        max_ready: 3,
        ..Default::default()
    };
    client
        .update_pool("db.small", "az1", max_ready, ["max_ready"])
        .await
        .unwrap();

    let log_size = std::fs::metadata(data.path().join("store/db"))
        .unwrap()
        .len();
    let pid = Pid::from_raw(i32::try_from(daemon.id().unwrap()).unwrap()).unwrap();
    prlimit(
        Some(pid),
        Resource::Fsize,
        Rlimit {
            current: Some(log_size + 16 * 1024),
            maximum: getrlimit(Resource::Fsize).maximum,
        },
    )
    .expect("limiting warmpoold's file size");
    let mut changes = 0;
    let refused = loop {
        changes += 1;
        assert!(
            changes <= 10_000,
            "{changes} pool changes stored past the limit"
        );
        let changed = client
            .update_pool(
                "db.small",
                "az1",
                warmpool_client::api::PoolSpec {
                    paused: changes % 2 == 1,
                    ..Default::default()
                },
                ["paused"],
            )
            .await;
        if let Err(e) = changed {
            break e;
        }
    };

    let logged = log_line(&mut log, "the store's disk failed").await;
    assert!(logged.contains(" ERROR "), "{logged}");
    assert!(logged.contains("File too large"), "{logged}");
    assert!(
        logged.contains("a restart reopens the store once the disk is fixed"),
        "{logged}"
    );
    let mut seen = Vec::new();
    while let Ok(Some(Ok(reply))) = tokio::time::timeout(PATIENCE, health.next()).await {
        seen.push(reply.status);
    }
    assert_eq!(
        seen.last(),
        Some(&i32::from(ServingStatus::NotServing)),
        "{seen:?}"
    );
    let status = tokio::time::timeout(PATIENCE, daemon.wait())
        .await
        .expect("warmpoold stopped")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "{status:?} (the call refused: {refused})"
    );
    let mut last = String::new();
    while let Some(line) = log.next_line().await.unwrap() {
        last = line;
    }
    assert!(last.starts_with("Error: the store's disk failed"), "{last}");

    // The disk mended (no limit on the next process), a restart opens the
    // store again and serves what it holds.
    let (mut daemon, _log, addr) = serving_daemon(&config_file).await;
    let client = warmpool_client::Client::connect(&addr).await.unwrap();
    let pool = client.get_pool("db.small", "az1").await.unwrap();
    assert_eq!(pool.spec.unwrap().max_ready, 3);
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// A store warmpoold would not open (sled finds it damaged) fails
/// `check-cloud` (exit 1), as any failed check does: only a store a running
/// daemon holds is passed over.
#[tokio::test]
async fn check_cloud_fails_on_a_damaged_store() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("store");
    damage_store(&store_dir);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(&store_dir)
        .arg("check-cloud")
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!(
            "store: {}: cannot read its pools",
            store_dir.display()
        )) && stdout.contains("corrupted data"),
        "{stdout}{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
}

/// The store in `dir` (made if there is none), opened once whoever had
/// it lets go.
fn open_when_let_go(dir: &std::path::Path) -> sled::Db {
    if dir.join("db").exists() {
        wait_until_let_go(dir);
    }
    sled::open(dir).expect("the store opens once let go")
}

/// Waits until no handle holds the store in `dir`: sled lets go of its
/// lock (an flock of its `db` file) a moment after the last handle is
/// dropped, and the store commands wait for it only a second.
fn wait_until_let_go(dir: &std::path::Path) {
    let db = std::fs::File::open(dir.join("db")).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while db.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store stays locked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pool's learned sizing this version cannot read (a newer version's)
/// does not stop warmpoold, which keeps it for the version that wrote it:
/// `store check` lists it as a note, passes, and gives no set-aside
/// advice (set aside, this version would save fresh sizing under its key,
/// and the newer version could never move it back). A record that does
/// stop warmpoold still fails the check, and only it is advised.
#[test]
fn store_check_notes_unreadable_learned_sizing_without_failing() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("store");
    let learned = pool_manager::sizing::LearnedSizing {
        saved_at: std::time::SystemTime::UNIX_EPOCH,
        demand_short: 0.1,
        demand_long: 0.05,
        demand_held: 0.0,
        held_for: None,
        allocations: 3,
        leads: Vec::new(),
        orders: Vec::new(),
    };
    let mut newer = serde_json::to_value(&learned).unwrap();
    newer["from_the_future"] = serde_json::Value::Bool(true);
    {
        let db = sled::open(&dir).unwrap();
        db.open_tree("learned_sizing")
            .unwrap()
            .insert("db.small\0az1", serde_json::to_vec(&newer).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_let_go(&dir);

    let check = store_command(&dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{out}");
    let note = out
        .lines()
        .find(|l| l.contains("learned_sizing db.small@az1"))
        .unwrap_or_else(|| panic!("no line for the learned sizing:\n{out}"));
    assert!(note.starts_with("note: "), "{out}");
    assert!(note.contains("from_the_future"), "{out}");
    assert!(note.contains("do not set it aside"), "{out}");
    assert!(!out.contains("unreadable"), "{out}");
    assert!(!out.contains("store set-aside"), "{out}");

    {
        let db = sled::open(&dir).unwrap();
        db.open_tree("allocations")
            .unwrap()
            .insert("order-1", br#"{"state":"Hibernating"}"#.to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_let_go(&dir);
    let check = store_command(&dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("unreadable allocations order-1: "), "{out}");
    assert!(out.contains("note: learned_sizing db.small@az1"), "{out}");
    assert!(
        out.contains("1 record(s) cannot be read") && out.contains("store set-aside"),
        "{out}"
    );
}

/// A pool's stored boot health this version cannot read (a newer
/// version's) does not stop warmpoold either: the pool starts healthy and
/// its next change of health writes over the record. `store check` went
/// through the record kinds only, so it never looked at the `pool_health`
/// tree; it now lists such a record as a note, passes, and gives no
/// set-aside advice (`store set-aside` does not take that tree).
#[test]
fn store_check_notes_unreadable_pool_health_without_failing() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("store");
    {
        let db = sled::open(&dir).unwrap();
        db.open_tree("pool_health")
            .unwrap()
            .insert(
                "db.small\0az1",
                br#"{"consecutive_boot_failures":3,"from_the_future":true}"#.to_vec(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_let_go(&dir);

    let check = store_command(&dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{out}");
    let note = out
        .lines()
        .find(|l| l.contains("pool_health db.small@az1"))
        .unwrap_or_else(|| panic!("no line for the pool's health:\n{out}"));
    assert!(note.starts_with("note: "), "{out}");
    assert!(note.contains("from_the_future"), "{out}");
    assert!(note.contains("starts healthy"), "{out}");
    assert!(!out.contains("unreadable"), "{out}");
    assert!(!out.contains("store set-aside"), "{out}");
    assert!(
        out.contains("every record warmpoold needs in"),
        "not every record can be read: {out}"
    );
}

/// `store check` says which records set aside are superseded (a live
/// record took their key since: they will not come back) and which wait
/// for a version that reads them; neither fails the check.
#[test]
fn store_check_says_which_set_aside_records_are_superseded() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("store");
    {
        let db = sled::open(&dir).unwrap();
        db.open_tree("set_aside")
            .unwrap()
            .insert(
                "allocations/order-1",
                br#"{"state":"Hibernating"}"#.to_vec(),
            )
            .unwrap();
        db.open_tree("set_aside_superseded")
            .unwrap()
            .insert("pools/db.small\0az1", br#"{"from_the_future":1}"#.to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_let_go(&dir);

    let check = store_command(&dir, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{out}");
    assert!(
        out.lines().any(|l| l == "set aside allocations order-1"),
        "{out}"
    );
    let pool = out
        .lines()
        .find(|l| l.starts_with("set aside pools db.small@az1"))
        .unwrap_or_else(|| panic!("no line for the pool:\n{out}"));
    assert!(
        pool.contains("superseded by the record written under its key since"),
        "{out}"
    );
    assert!(pool.contains("it will not come back"), "{out}");
}

/// The shutdown check (`Daemon::shut_down`) asks whether this process still
/// holds the daemon's listening socket, told by its inode, not whether its
/// port answers: a child another test forks as the listener closes holds a
/// copy of every descriptor until it execs, and the copy answers, as another
/// listener later given the port does.
#[test]
fn the_shutdown_check_tells_the_listener_from_a_childs_copy_and_a_later_one() {
    use std::os::fd::OwnedFd;
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let socket = support::listening_socket(addr);
    assert!(support::holds_socket(socket), "{addr}'s socket is held");

    // The child's copy, as its stdin, for as long as the test needs it.
    let copy = OwnedFd::from(first.try_clone().unwrap());
    let child = std::process::Command::new("sleep")
        .arg("600")
        .stdin(std::process::Stdio::from(copy))
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    drop(first);
    // The socket still listens, and answers, in the child alone.
    assert_eq!(support::listening_socket(addr), socket);
    assert!(std::net::TcpStream::connect(addr).is_ok(), "{addr} answers");
    assert!(
        !support::holds_socket(socket),
        "{addr}'s socket is the child's alone"
    );
    drop(child);

    // Another listener (on whatever port) is told apart by its socket.
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = support::listening_socket(second.local_addr().unwrap());
    assert_ne!(other, socket);
    assert!(support::holds_socket(other), "the second socket is held");
    drop(second);
    assert!(!support::holds_socket(other), "the second socket is let go");
}

/// A child process killed (and reaped) when the test is done with it, or
/// panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
