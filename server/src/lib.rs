//! warmpoold: configuration, the gRPC server (warmpool.v1, health,
//! reflection) and the order of start-up and shutdown.

// Docs link internal items on purpose: they resolve under --document-private-items, the mode these docs are built in.
#![allow(rustdoc::private_intra_doc_links)]

pub mod access;
pub mod check_cloud;
pub mod config;
pub mod convert;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod starting;
pub mod tls;

/// The most calls one gRPC connection carries at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`). tonic sends no limit unless told
/// (hyper's own default of 200 goes with it), so one connection could
/// open streams without end, each costing memory and a task. 256 leave a
/// client room for its `WatchPools` streams beside its unary calls; one
/// opening more waits for one to end.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

use anyhow::Context;
use config::{CloudConfig, Config};
use futures::StreamExt;
use pool_manager::probe::{MysqlGreetingProbe, Probe};
use pool_manager::store::{NoStoreYet, SledStore, Store};
use pool_manager::{ManagerError, PoolManager};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use warmpool_proto::v1::warm_pool_server::WarmPoolServer;

/// warmpoold's exit code when its start is refused for a reason no
/// restart mends, only an operator (sysexits' EX_CONFIG):
/// [`needs_an_operator`]. deploy/warmpoold.service does not restart it
/// (`RestartPreventExitStatus=`): every 5 s, each start would log in to
/// Keystone and list the pool servers again, for ever.
pub const EXIT_NEEDS_AN_OPERATOR: u8 = 78;

/// Whether warmpoold's start failed for a reason no restart mends, only an
/// operator, so that it exits [`EXIT_NEEDS_AN_OPERATOR`]: a config file it
/// cannot take (or that is missing or unreadable to it, not UTF-8, a
/// directory), `[tls]` files it cannot take ([`TlsFilesRefused`]), a cloud config
/// (`clouds.yaml`, `secure.yaml`, the `OS_*` variables) it cannot take
/// (the same: a file's read failing otherwise may pass), a store of
/// another cloud ([`CloudChangedRefused`]), one that knows none of the
/// pool servers the cloud lists ([`UnknownServersRefused`]), a store record
/// this version cannot read, or damage sled found in the store's files.
/// Not what may pass by itself: a cloud or Keystone that does not answer
/// (or refuses a pool, which the cloud check tells apart from an outage
/// only by its wording), a port or the store's lock another process holds,
/// a disk that fails.
pub fn needs_an_operator(error: &anyhow::Error) -> bool {
    use pool_manager::store::StoreError;
    let permanent_store = |e: &StoreError| {
        matches!(
            e,
            StoreError::Unreadable { .. }
                | StoreError::UnreadableCloud { .. }
                | StoreError::Corrupt { .. }
        )
    };
    error.chain().any(|cause| {
        cause.is::<CloudChangedRefused>()
            || cause.is::<UnknownServersRefused>()
            || cause.is::<CloudConfigRefused>()
            || cause.is::<TlsFilesRefused>()
            || cause
                .downcast_ref::<config::ConfigError>()
                .is_some_and(config::ConfigError::needs_an_operator)
            || cause
                .downcast_ref::<StoreError>()
                .is_some_and(permanent_store)
            || matches!(
                cause.downcast_ref::<ManagerError>(),
                Some(ManagerError::Store(e)) if permanent_store(e)
            )
    })
}

/// [`start`]'s error when `shutdown` resolved before serving began: nothing
/// failed, the daemon was asked to stop (and did, with the store flushed).
#[derive(Debug, thiserror::Error)]
#[error("asked to shut down during start-up")]
pub struct StoppedDuringStartUp;

/// The served task's error when the store failed (see
/// [`SledStore::failed`]): the daemon stopped so that a restart reopens
/// the store.
#[derive(Debug, thiserror::Error)]
#[error("the store's disk failed: {0}; warmpoold stops so that a restart reopens the store once the disk is fixed")]
pub struct StoreFailed(String);

/// [`start`]'s error when the core refused to start on a store that knows
/// none of the pool servers the cloud lists (`ManagerError::UnknownServers`);
/// it says which store, which servers and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnknownServersRefused(String);

/// [`start`]'s error when the store recorded another cloud than the
/// configured one (`ManagerError::CloudChanged`); it names both, the store
/// and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CloudChangedRefused(String);

/// [`build_cloud`]'s error when the cloud config cannot be taken (a
/// clouds.yaml missing, unreadable to warmpoold or without the entry, no
/// credentials): nothing was asked of the cloud, and a restart reads the
/// same.
#[derive(Debug, thiserror::Error)]
#[error("the OpenStack cloud is not usable (run `warmpoold check-cloud` for the full report): {0}")]
pub struct CloudConfigRefused(String);

/// [`start`]'s error when `[tls]`'s files cannot be taken for the files'
/// own fault (missing, unreadable to warmpoold, a directory, no PEM
/// certificate or key in them, a certificate expired): nothing listens
/// yet, and a restart reads the same files.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFilesRefused(String);

/// `error`, [`TlsFilesRefused`] unless a file's read failed as a disk may
/// (see [`config::the_files_fault`]), which a restart may get past.
fn tls_refusal(error: anyhow::Error) -> anyhow::Error {
    let passing = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| !config::the_files_fault(e.kind()));
    if passing {
        error
    } else {
        TlsFilesRefused(format!("{error:#}")).into()
    }
}

/// [`build_cloud`]'s error when Keystone refused warmpool's credentials:
/// [`build_cloud_waiting_out_refusals`] waits it out rather than ending
/// start-up.
#[derive(Debug, thiserror::Error)]
#[error("the OpenStack cloud is not usable: {0}")]
struct CredentialsRefused(String);

/// [`build_cloud`]'s error when every failure of the cloud check that
/// stops start-up may pass by itself (the cloud did not answer, failed or
/// throttled: [`check_cloud::Report::passing`]):
/// [`build_cloud_waiting_out_refusals`] checks again for a while rather
/// than ending start-up at once.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct CloudFailing {
    message: String,
    /// The longest Retry-After the cloud named.
    retry_after: Option<std::time::Duration>,
}

impl CloudFailing {
    /// The start-up check's refusal `message`: a [`CloudFailing`] when
    /// every failure in `report` may pass by itself, else a plain error.
    fn or_not(message: String, report: &check_cloud::Report) -> anyhow::Error {
        match report.passing() {
            Some(passing) => CloudFailing {
                message,
                retry_after: passing.retry_after,
            }
            .into(),
            None => anyhow::anyhow!(message),
        }
    }
}

/// How long start-up checks the cloud again while it fails for what may
/// pass ([`CloudFailing`]), from its first failure: a blip (a proxy's 5xx,
/// a rate limit, a service restarting) passes within it, and exiting on it
/// would only lengthen the supervisor's back-off (a kubelet's
/// CrashLoopBackOff grows with each exit). An outage longer than this is
/// left to the supervisor, whose restart checks again from scratch.
pub const START_UP_CHECK_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// The first pause before the cloud is checked again; it doubles with each
/// failure, up to [`START_UP_CHECK_PAUSE_MAX`].
const START_UP_CHECK_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest pause between two checks, a Retry-After's too: a cloud
/// naming hours would otherwise hold start-up past
/// [`START_UP_CHECK_RETRY_FOR`] in one wait.
const START_UP_CHECK_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The pause before the cloud check's try after `failures` failures in a
/// row (the first is 1) that may pass, the last naming `retry_after`, the
/// first `tried_for` ago: an exponential back-off, or the Retry-After if
/// longer, both capped; `None` once the next try would begin past
/// [`START_UP_CHECK_RETRY_FOR`] (start-up gives up).
fn cloud_check_pause(
    failures: u32,
    retry_after: Option<std::time::Duration>,
    tried_for: std::time::Duration,
) -> Option<std::time::Duration> {
    let backoff = START_UP_CHECK_PAUSE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(START_UP_CHECK_PAUSE_MAX);
    let pause = backoff.max(
        retry_after
            .unwrap_or_default()
            .min(START_UP_CHECK_PAUSE_MAX),
    );
    (tried_for + pause <= START_UP_CHECK_RETRY_FOR).then_some(pause)
}

/// The gRPC health service name whose status says whether warmpoold runs
/// (SERVING from the moment its port is bound, starting up included,
/// until it begins to stop), where `""` and `warmpool.v1.WarmPool` say
/// whether it serves the API: what a liveness probe asks, so that a long
/// start-up is not taken for a dead daemon.
pub const LIVENESS_SERVICE: &str = "liveness";

/// A started daemon: its bound addresses and the task serving it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    pub manager: PoolManager,
    pub cloud: Option<Arc<cloudsim::SimCloud>>,
    /// The API tokens in force; a SIGHUP reloads them
    /// ([`access::AccessHandle::prepare`]).
    pub access: access::AccessHandle,
    /// The listener's TLS settings when `[tls]` is configured; a SIGHUP
    /// reads its files again ([`tls::TlsHandle::prepare`]).
    pub tls: Option<tls::TlsHandle>,
    /// What `/metrics` serves; a SIGHUP tells it how the reload went
    /// ([`metrics::Metrics::config_taken`]).
    pub metrics: Arc<metrics::Metrics>,
    pub served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds both listeners, serves gRPC health (NOT_SERVING, `LIVENESS_SERVICE`
/// SERVING) and answers warmpool.v1 UNAVAILABLE ([`starting`]) while it
/// opens the store, builds the cloud and serves metrics, reconciles and
/// creates configured pools, then serves warmpool.v1 (health SERVING) until `shutdown`
/// resolves or the store fails ([`SledStore::failed`]; logged, and the
/// served task's error is then [`StoreFailed`], an exit a supervisor
/// restarts); then turns health NOT_SERVING, ends `WatchPools` streams,
/// stops taking calls, lets in-flight unary ones finish (up to the grace
/// period), cuts the streams whose end their clients have not taken
/// ([`shutdown`]), waits (within what is left of the grace period) for
/// the manager's API calls whose callers stopped waiting
/// ([`PoolManager::finish_calls`]), stops the background tasks, flushes
/// the store and stops serving metrics. Credentials Keystone refuses do
/// not fail start-up: it tries them again, ever later, reading them anew,
/// or, when they are read at start only, waits for a restart
/// ([`build_cloud_waiting_out_refusals`]). A start-up that
/// fails after the background tasks started stops them again, so the
/// store's lock is free for the next try; so does one that `shutdown`
/// interrupts while it checks the cloud or reconciles (the error is then
/// [`StoppedDuringStartUp`]). One refused for a store that knows none of
/// the pool servers ([`UnknownServersRefused`]) takes back the store it
/// made in a data dir that held none.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    start_stoppable(config, shutdown, std::future::pending()).await
}

/// [`start`], and once shutting down, `stop_now` resolving cuts the grace
/// period short (an operator's second SIGTERM or Ctrl-C): in-flight calls
/// are dropped, their work stopped where it is (an Allocate's record is
/// rolled back by the next start's reconcile), and the store is flushed.
pub async fn start_stoppable(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop_now: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let mut shutdown = Box::pin(shutdown);
    // The TLS files before anything: a wrong path fails start-up at once.
    let tls = config
        .tls
        .as_ref()
        .map(|files| tls::TlsHandle::load(files).map_err(tls_refusal))
        .transpose()?;
    // Listeners first: a taken port fails start-up before anything boots,
    // and the start-up reconcile is already observable in the metrics.
    let metrics = Arc::new(metrics::Metrics::new());
    // The config started with is the first one taken, as Prometheus
    // counts its own.
    metrics.config_taken(std::time::SystemTime::now());
    if let Some(tls) = &tls {
        tokio::spawn(tls::watch_expiry(
            tls.expiry(),
            metrics.clone(),
            std::time::SystemTime::now,
        ));
    }
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics (metrics_listen, --metrics-listen)",
                config.metrics_listen
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen, --listen)", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    // Served from here on: a start-up can take many minutes (the cloud
    // check on a slow cloud, the start-up reconcile finishing or undoing
    // what a stop interrupted, one by one), in which health answers, ""
    // and warmpool.v1 NOT_SERVING and `LIVENESS_SERVICE` SERVING, and
    // warmpool.v1's calls UNAVAILABLE ([`starting`]), so that a supervisor
    // tells a daemon alive and starting from a dead one. A start-up that
    // fails, or is stopped, drops it with the rest.
    let (mut health, health_service) = tonic_health::server::health_reporter();
    report_starting(&mut health).await;
    let warmpool = starting::Starting::new();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(warmpool_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")?;
    let calls = shutdown::Calls::new();
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(config.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(config.grpc_keepalive_timeout))
        .add_service(shutdown::Counted::new(
            health_service,
            calls.clone(),
            &["Watch"],
        ))
        .add_service(shutdown::Counted::new(
            reflection,
            calls.clone(),
            &["ServerReflectionInfo"],
        ))
        .add_service(shutdown::Counted::new(
            warmpool.clone(),
            calls.clone(),
            &["WatchPools"],
        ));
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    // The grace period is out: the unary calls still waiting are answered.
    let (answer_now_tx, answer_now_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cut = Arc::new(shutdown::Cut::new());
    let serving = AbortOnDrop(tokio::spawn({
        let stopped = async {
            let _ = stop_rx.await;
        };
        // Shutting down, the listener closes at once: no new connections
        // (nor handshakes) while in-flight calls finish.
        let mut stopping = stopping_tx.subscribe();
        let stop_accepting = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let tls_listener = tls.clone();
        let cut = cut.clone();
        async move {
            match tls_listener {
                Some(tls) => {
                    let incoming = tls::incoming(listener, tls, stop_accepting)
                        .map(|io| io.map(|io| cut.connection(io)));
                    router.serve_with_incoming_shutdown(incoming, stopped).await
                }
                None => {
                    let incoming = listener::incoming(listener, stop_accepting, |socket, _| {
                        std::future::ready(Some(socket))
                    })
                    .map(|io| io.map(|io| cut.connection(io)));
                    router.serve_with_incoming_shutdown(incoming, stopped).await
                }
            }
        }
    }));
    tracing::info!(%grpc_addr, "warmpoold listening for gRPC; health says NOT_SERVING until start-up is done");

    if config.data_dir.exists() && !config.data_dir.is_dir() {
        anyhow::bail!(
            "data dir {} is not a directory (data_dir, --data-dir)",
            config.data_dir.display()
        );
    }
    // Noted before the store is made: a refused start takes it back
    // (`take_back_store`).
    let made_dirs_from = first_missing(&config.data_dir);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let no_store_yet = match NoStoreYet::look(&config.data_dir) {
        Ok(no_store_yet) => no_store_yet,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the data dir; a refused start leaves the store it makes");
            None
        }
    };
    // On a blocking thread: opening waits for a lock a previous process (or
    // a previous start in this one) may still hold.
    let data_dir = config.data_dir.clone();
    let cache_capacity = config.store_cache_capacity;
    let store = tokio::task::spawn_blocking(move || {
        SledStore::open_with(
            &data_dir,
            pool_manager::store::DEFAULT_LOCK_WAIT,
            cache_capacity,
        )
    })
    .await
    .context("the store's opening thread panicked")?
    .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let store_failed = store_failure(store.failed());
    let store: Arc<dyn Store> = Arc::new(store);
    // The cloud is built from the pools the store serves, so after the
    // store is opened; a start refused from here until the pools start
    // (nothing is booted before) takes back a store it made new, every
    // holder of it dropped with the block.
    let prepared = async {
        // The cloud check can wait on an unreachable cloud up to its request
        // timeout; a shutdown asked for meanwhile ends start-up here.
        let pools = served_pools(store.as_ref(), &config).await?;
        let note = warmpool.note();
        let (cloud, probe, sim, stale, servers_where) = tokio::select! {
            built = build_cloud_waiting_out_refusals(&config, &pools, &note) => built?,
            () = &mut shutdown => return Err(StoppedDuringStartUp.into()),
        };
        let cloud = Arc::new(metrics::MeteredCloud::new(cloud, metrics.clone()));
        let settings = pool_manager::ManagerSettings {
            delete_unknown_servers: config.delete_unknown_servers,
            adopt_cloud: config.adopt_cloud,
            ..config.manager.settings()
        };
        let manager = PoolManager::new(store, cloud, probe, settings);
        // Before anything is written to the store (the stale pools' marks
        // below) or started on the cloud: a store of another cloud is refused.
        let claimed = tokio::select! {
            claimed = manager.claim_store() => claimed,
            () = &mut shutdown => return Err(StoppedDuringStartUp.into()),
        };
        match claimed {
            Ok(_) => {}
            Err(ManagerError::CloudChanged { recorded, current }) => {
                return Err(CloudChangedRefused(cloud_changed_refusal(
                    &config, &recorded, &current,
                ))
                .into())
            }
            Err(e) => {
                return Err(e).context("cannot compare the cloud with the one the store serves")
            }
        }
        // Subscribed before anything happens, so the degraded episodes
        // (stale pools', and those the store keeps from before the
        // restart), start-up boots and leaks are counted.
        let events = manager.events();
        let event_task = AbortOnDrop(tokio::spawn({
            let metrics = metrics.clone();
            async move { metrics.run_events(events).await }
        }));
        // Its own task: a disk slow to answer holds up no scrape. Aborted
        // with the events' task, before a refused start takes back the store.
        let store_size_task = AbortOnDrop(tokio::spawn({
            let metrics = metrics.clone();
            let manager = manager.clone();
            async move { metrics.watch_store_size(manager).await }
        }));
        // Before the replenishers start: a stale pool's first boots are already
        // paced as failed boots are. Each mark is a DEGRADED event, logged
        // (a warning naming the pool and the problem) and counted; the check
        // passing again, made after each pause (and a Ready boot after it,
        // for what only a boot shows: `StalePool::proof`), ends it.
        for (key, pool) in &stale {
            let problem = format!(
                "start-up cloud check: {}; {}",
                pool.problems.join("; "),
                check_cloud::stale_pool_remedy(key, pool.proof)
            );
            manager
                .mark_unusable(key, &problem, pool.proof)
                .await
                .with_context(|| format!("cannot mark pool {key} unusable in the store"))?;
        }
        Ok::<_, anyhow::Error>((manager, sim, servers_where, (event_task, store_size_task)))
    }
    .await;
    let (manager, sim, servers_where, metrics_tasks) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            if let Some(made) = no_store_yet {
                take_back_store(made, &config.data_dir, made_dirs_from).await;
            }
            return Err(e);
        }
    };
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = AbortOnDrop(tokio::spawn(metrics::serve(
        metrics.clone(),
        manager.clone(),
        metrics_listener,
        async {
            let _ = metrics_stopped.await;
        },
    )));
    tracing::info!(%metrics_addr, "warmpoold serving Prometheus metrics at http://{metrics_addr}/metrics");
    let access = access::AccessHandle::new(config.access());
    warn_of_tokens_in_plaintext(config.api_tokens.len(), config.tls.is_some(), grpc_addr);
    if config.api_is_open() && !grpc_addr.ip().is_loopback() {
        tracing::warn!(%grpc_addr, "the gRPC API is open to anyone who reaches {grpc_addr}: configure [[api_tokens]] or client certificates ([tls] client_ca_file)");
    }
    // The start-up reconcile visits every instance in the store; a shutdown
    // asked for meanwhile stops it where it is (as a crash there would,
    // which the next start's reconcile resumes from).
    let started = tokio::select! {
        started = start_pools(&manager, &config, &servers_where) => started,
        () = &mut shutdown => Err(StoppedDuringStartUp.into()),
    };
    if let Err(e) = started {
        // The background tasks hold the store: stop them, or they keep
        // booting and the next start finds the data dir locked.
        if let Err(stop) = manager.shutdown().await {
            tracing::warn!(error = %stop, "stopping after a failed start-up");
        }
        if let (true, Some(made)) = (e.is::<UnknownServersRefused>(), no_store_yet) {
            // Every holder of the store let go of first.
            metrics_tasks.1.stop().await;
            drop((serving, metrics_server, metrics_tasks.0, manager));
            take_back_store(made, &config.data_dir, made_dirs_from).await;
        }
        return Err(e);
    }
    warmpool.serve(service::Checked::new(
        service::AnsweredAtStop::new(
            WarmPoolServer::new(service::WarmPoolService::new(
                manager.clone(),
                access.clone(),
                stopping_rx,
                &metrics,
            )),
            answer_now_rx,
        ),
        access.clone(),
        metrics.clone(),
    ));
    report_serving(&mut health).await;

    tracing::info!(%grpc_addr, tls = config.tls.is_some(), data_dir = %config.data_dir.display(), "warmpoold serving gRPC");

    let grace = config.shutdown_grace;
    let served_manager = manager.clone();
    let served = tokio::spawn(async move {
        let mut serving = serving;
        let serve = &mut serving.0;
        // Looked at again after it resolved: the waits after the grace
        // (the metrics port's) are not made either once it has.
        let stop_now = futures::FutureExt::shared(stop_now);
        // Serving ends by itself only on a failure: the store is still
        // flushed, and the exit is one a supervisor restarts. A failed
        // store stops the daemon as a shutdown does, with such an exit:
        // sled writes nothing more until it is opened again.
        let stop = tokio::select! {
            result = &mut *serve => Err(match result {
                Ok(Ok(())) => anyhow::anyhow!("the gRPC server stopped serving unasked"),
                Ok(Err(e)) => anyhow::Error::new(e).context("the gRPC server failed"),
                Err(e) => anyhow::Error::new(e).context("the gRPC server's task ended abnormally"),
            }),
            () = shutdown => Ok(None),
            failure = store_failed => {
                let failure = StoreFailed(failure.to_string());
                tracing::error!("{failure}");
                Ok(Some(failure))
            }
        };
        let failed = match stop {
            Err(e) => Some(e),
            Ok(failure) => {
                let stopping_since = tokio::time::Instant::now();
                let at_stop = calls.in_flight();
                tracing::info!(
                    unary_calls = at_stop.unary,
                    streams = at_stop.streams,
                    "shutting down: no new calls; waiting for in-flight ones: {}; ending {}",
                    shutdown::count(at_stop.unary, "unary call"),
                    shutdown::count(at_stop.streams, "stream"),
                );
                stop_health(&mut health).await;
                stopping_tx.send_replace(true);
                // Purchases that hold nothing yet would otherwise wait for an
                // instance up to their timeout, and hold the stop as long.
                served_manager.stop_waiting();
                let _ = stop_tx.send(());
                // The grace period is the unary calls': a stream whose end
                // its client does not read would hold it all (`shutdown`).
                let mut cut_short = false;
                let served = tokio::select! {
                    biased;
                    () = stop_now.clone() => {
                        tracing::warn!(
                            unary_calls = calls.in_flight().unary,
                            "asked again to stop: not waiting for in-flight calls"
                        );
                        cut_short = true;
                        false
                    }
                    waited = tokio::time::timeout(grace, async {
                        tokio::select! {
                            _ = &mut *serve => true,
                            () = calls.unary_done(shutdown::STREAM_END_DRAIN) => false,
                        }
                    }) => match waited {
                        Ok(served) => served,
                        Err(_) => {
                            tracing::warn!(
                                ?grace,
                                unary_calls = calls.in_flight().unary,
                                "in-flight calls outlived the grace period; stopping anyway"
                            );
                            false
                        }
                    },
                };
                if !served {
                    // The answers, and the cut, within the one patience.
                    let cut_by = tokio::time::Instant::now() + shutdown::CUT_PATIENCE;
                    let left = calls.in_flight();
                    if left.unary == 0 {
                        tracing::info!(
                            streams = left.streams,
                            "the unary calls in flight are done; cutting {} whose end the client has not taken",
                            shutdown::count(left.streams, "stream"),
                        );
                    } else {
                        tracing::warn!(
                            unary_calls = left.unary,
                            streams = left.streams,
                            "answering {} UNAVAILABLE (shutting down: their clients are told to call again once warmpoold is back), then cutting {}",
                            shutdown::count(left.unary, "unary call"),
                            shutdown::count(left.streams, "stream"),
                        );
                    }
                    // A call cut off with no status reaches its client as
                    // a transport error, which clients do not retry.
                    answer_now_tx.send_replace(true);
                    if tokio::time::timeout(shutdown::ANSWER_PATIENCE, calls.unary_none())
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            unary_calls = calls.in_flight().unary,
                            "the connections did not take the answers of {} within {:?} (clients not reading?); cutting them anyway",
                            shutdown::count(calls.in_flight().unary, "unary call"),
                            shutdown::ANSWER_PATIENCE,
                        );
                    }
                    cut.cut_and_wait(&mut *serve, cut_by).await;
                }
                if !cut_short {
                    finish_manager_calls(
                        &served_manager,
                        grace.saturating_sub(stopping_since.elapsed()),
                        &mut stop_now.clone(),
                    )
                    .await;
                }
                failure.map(anyhow::Error::new)
            }
        };
        // The metrics port closes as the store is flushed, its requests
        // under way waited for alongside (`metrics_closed`): within the
        // time a supervisor leaves for the flush, so that they add nothing
        // to the stop timeout the deploy files give.
        let _ = metrics_stop.send(());
        let stopped_now = stop_now.peek().is_some();
        let (flushed, ()) = tokio::join!(
            served_manager.shutdown(),
            metrics_closed(metrics_server, stopped_now, stop_now),
        );
        // A failed store's flush fails for the same reason, already told.
        if !failed.as_ref().is_some_and(|e| e.is::<StoreFailed>()) {
            flushed.context("flushing the store")?;
        }
        // The store-size task holds the manager, and so the store: gone
        // before warmpoold reports its end, not after, as an abort alone
        // would leave it (sled flushes, and may log, as it closes).
        let (event_task, store_size_task) = metrics_tasks;
        drop(event_task);
        store_size_task.stop().await;
        tracing::info!("stopped");
        failed.map_or(Ok(()), Err)
    });
    Ok(Running {
        grpc_addr,
        metrics_addr,
        manager,
        cloud: sim,
        access,
        tls,
        metrics,
        served,
    })
}

/// Warns that bearer tokens reach `grpc_addr` in plaintext, when `tokens`
/// are in force without TLS on an address beyond loopback: at start, and
/// after each reload, which may add the first ones.
pub fn warn_of_tokens_in_plaintext(tokens: usize, tls: bool, grpc_addr: SocketAddr) {
    if tokens > 0 && !tls && !grpc_addr.ip().is_loopback() {
        tracing::warn!(%grpc_addr, "bearer tokens reach {grpc_addr} in plaintext: configure [tls], or keep the network private");
    }
}

/// Waits, up to `left` of the grace period, for the manager's API calls
/// still running ([`PoolManager::finish_calls`]): an Allocate or Release
/// whose client hung up, or whose deadline passed, goes on without its
/// gRPC call, which the wait for in-flight calls no longer counts, and
/// stopping it midway would leave it for the next start to roll back.
/// `stop_now` resolving ends the wait; what is still running then is
/// stopped by [`PoolManager::shutdown`].
async fn finish_manager_calls(
    manager: &PoolManager,
    left: std::time::Duration,
    stop_now: &mut (impl Future<Output = ()> + Unpin),
) {
    let running = manager.calls_running();
    if running > 0 {
        tracing::info!(
            calls = running,
            "waiting for {} whose callers no longer wait (up to {left:?}, the rest of the grace period)",
            shutdown::count(running, "call"),
        );
    }
    let left_running = tokio::select! {
        biased;
        () = stop_now => {
            tracing::warn!(calls = manager.calls_running(), "asked again to stop: not waiting for the calls under way");
            return;
        }
        left_running = manager.finish_calls(left) => left_running,
    };
    if left_running > 0 {
        tracing::warn!(
            calls = left_running,
            "{} outlived the grace period; stopping them where they are (the next start's reconcile finishes or undoes them)",
            shutdown::count(left_running, "call"),
        );
    }
}

/// Waits for the metrics server, told to stop, to end: for the requests
/// under way on its connections, up to [`shutdown::CUT_PATIENCE`] (a
/// client that sent only part of a request would hold it up to hyper's
/// header read timeout, one that does not read its answer longer), and not
/// at all once `stop_now` has resolved (`stopped_now`) or when it does. The
/// server is stopped where it is then.
async fn metrics_closed(
    server: AbortOnDrop<()>,
    stopped_now: bool,
    stop_now: impl Future<Output = ()>,
) {
    if stopped_now {
        return;
    }
    tokio::select! {
        biased;
        () = stop_now => {
            tracing::warn!("asked again to stop: not waiting for the metrics port's requests under way");
        }
        ended = tokio::time::timeout(shutdown::CUT_PATIENCE, server.join()) => {
            if ended.is_err() {
                tracing::warn!(
                    patience = ?shutdown::CUT_PATIENCE,
                    "the metrics port's requests under way did not end within {:?} (a client that sent only part of a request, or does not read its answer); stopping anyway",
                    shutdown::CUT_PATIENCE,
                );
            }
        }
    }
}

/// Resolves with the store's failure once it has one; never if it has
/// none.
async fn store_failure<E: Clone>(mut failed: tokio::sync::watch::Receiver<Option<E>>) -> E {
    if let Ok(failure) = failed.wait_for(Option::is_some).await {
        if let Some(failure) = failure.clone() {
            return failure;
        }
    }
    std::future::pending().await
}

/// Says NOT_SERVING for the server as a whole ("") and for warmpool.v1
/// while warmpoold starts, and SERVING for [`LIVENESS_SERVICE`]. `""`
/// comes with a channel already SERVING: switched over, every Watch would
/// get NOT_SERVING twice (see [`report_serving`]), so it is made anew, as
/// the others are, before anyone can watch it.
async fn report_starting(health: &mut tonic_health::server::HealthReporter) {
    use tonic::server::NamedService;
    let warmpool = <WarmPoolServer<service::WarmPoolService> as NamedService>::NAME;
    for service in ["", warmpool] {
        health.clear_service_status(service).await;
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    health
        .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
}

/// Says SERVING for "" and warmpool.v1: start-up is done. A health Watch
/// opened during start-up gets SERVING, then its end (README says a
/// client watches again; keeping it open takes a Health service of our
/// own: tonic-health's reporter cannot mark its channel's first receiver
/// seen, nor hands out its service to wrap): tonic-health hands
/// each Watch a clone of the status channel's first receiver, which sees
/// every status sent since the channel was made as unseen, so a Watch
/// opened on a channel that ever changed would get its first status
/// twice (SERVING, SERVING), the second read as a change. A new channel,
/// made by clearing the status, has none.
async fn report_serving(health: &mut tonic_health::server::HealthReporter) {
    use tonic::server::NamedService;
    let warmpool = <WarmPoolServer<service::WarmPoolService> as NamedService>::NAME;
    for service in ["", warmpool] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
        health.clear_service_status(service).await;
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
}

/// Says NOT_SERVING for the server as a whole (""), for warmpool.v1 and
/// for [`LIVENESS_SERVICE`], and ends every health Watch: tonic-health ends a Watch stream only when
/// its status is cleared, and a stream still open when the unary calls are
/// done is cut ([`shutdown`]), which a load balancer watching reads as a
/// broken connection, not as the daemon stopping. A watcher gets
/// NOT_SERVING, then the end of its stream. A cleared status answers a
/// Check NOT_FOUND ("service not registered"), so NOT_SERVING is set again
/// for the Checks that still reach the daemon while in-flight calls finish
/// (those sent before their client read the connection's GOAWAY).
async fn stop_health(health: &mut tonic_health::server::HealthReporter) {
    use tonic::server::NamedService;
    let warmpool = <WarmPoolServer<service::WarmPoolService> as NamedService>::NAME;
    for service in ["", warmpool, LIVENESS_SERVICE] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
        health.clear_service_status(service).await;
        // A new channel: the watches of the cleared one have ended.
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
}

/// Reconciles and creates the configured pools a store does not have yet.
/// `servers_where` names where the pool servers are listed, for a refusal
/// to start on a store that knows none of them.
async fn start_pools(
    manager: &PoolManager,
    config: &Config,
    servers_where: &str,
) -> anyhow::Result<()> {
    match manager.start().await {
        Ok(()) => {}
        Err(ManagerError::UnknownServers {
            servers,
            sold,
            adopted,
        }) => {
            return Err(UnknownServersRefused(unknown_servers_refusal(
                config,
                servers_where,
                servers,
                sold,
                adopted,
            ))
            .into())
        }
        Err(e) => return Err(e).context("start-up reconcile failed"),
    }
    for pool in &config.pools {
        // A stored pool keeps its settings, and one an operator deleted
        // drains on: CreatePool would refuse it ("being deleted") and stop
        // the start-up, and with it the drain.
        match manager.get_pool(&pool.key()).await {
            Ok(stored) => {
                let draining = stored.record.draining;
                match pool.start_up_notice(&stored.record.spec) {
                    // A pool being deleted drains on, whatever its settings.
                    // A demo pool has no file entry to mend: told, not warned of.
                    Some(notice) if !draining && pool.built_in => {
                        tracing::info!(pool = %pool.key(), "{notice}")
                    }
                    Some(notice) if !draining => tracing::warn!(pool = %pool.key(), "{notice}"),
                    _ => {
                        tracing::info!(pool = %pool.key(), draining, "pool exists in the store; keeping its stored settings")
                    }
                }
                continue;
            }
            Err(ManagerError::PoolNotFound(_)) => {}
            Err(e) => return Err(e).context(format!("cannot read pool {}", pool.key())),
        }
        match manager.create_pool(pool.key(), pool.spec()).await {
            Ok(_) => tracing::info!(pool = %pool.key(), "created pool from config"),
            Err(ManagerError::PoolExists(key)) => {
                tracing::info!(pool = %key, "pool exists in the store; keeping its stored settings")
            }
            Err(e) => return Err(e).context(format!("cannot create pool {}", pool.key())),
        }
    }
    Ok(())
}

/// The first of `dir` and its parents that does not exist, if any: the
/// top one `create_dir_all(dir)` makes.
fn first_missing(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    dir.ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(std::path::Path::to_owned)
}

/// Takes back the store a refused start made in `data_dir` (which held
/// none): a mistyped data dir is not left holding a store that `warmpoold
/// store check` would call healthy. Only sled's files that start made go
/// ([`NoStoreYet::take_back`]), then the dirs it made, from `data_dir` up
/// to `made_dirs_from`, while they are empty. A failure is logged: the
/// start's own error is the one to tell.
async fn take_back_store(
    made: NoStoreYet,
    data_dir: &std::path::Path,
    made_dirs_from: Option<std::path::PathBuf>,
) {
    let data_dir = data_dir.to_owned();
    let taken_back = tokio::task::spawn_blocking(move || {
        let removed = made.take_back(pool_manager::store::DEFAULT_LOCK_WAIT)?;
        if let Some(top) = &made_dirs_from {
            for dir in data_dir.ancestors() {
                // Only an empty dir goes: nothing of anyone else's.
                if std::fs::remove_dir(dir).is_err() || dir == top {
                    break;
                }
            }
        }
        Ok::<_, pool_manager::store::StoreError>((data_dir, removed))
    })
    .await;
    match taken_back {
        Ok(Ok((data_dir, removed))) => {
            tracing::info!(data_dir = %data_dir.display(), ?removed, "the refused start took back the store it made")
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot take back the store the refused start made; remove its conf, db, blobs and snap.* from the data dir by hand")
        }
        Err(e) => tracing::warn!(error = %e, "the thread taking back the store panicked"),
    }
}

/// Why warmpoold does not start on a store that knows no pool server and
/// no order while the cloud lists `servers` of them, or on one adopted
/// from another cloud (`adopted`) that has no record of `servers` the
/// cloud lists, and what to do.
fn unknown_servers_refusal(
    config: &Config,
    servers_where: &str,
    servers: usize,
    sold: usize,
    adopted: bool,
) -> String {
    let shown = shown_data_dir(&config.data_dir);
    if adopted {
        return format!(
            "the store in {shown} (data_dir, --data-dir) is adopted from another cloud \
             (--adopt-cloud) and has no record of the {servers} pool servers {servers_where} \
             lists, {sold} of them sold (volumes attached: tenants' databases, whose orders this \
             store cannot answer) and {unsold} unsold; started on this store, warmpoold would \
             delete the unsold ones as leaks, so it stopped before deleting anything, and the \
             store still serves the cloud it recorded. If another warmpoold shares the project, \
             give this one a cloud.server_tag of its own; if they are meant to go, start with \
             --adopt-cloud --delete-unknown-servers: the unsold ones are deleted, the sold ones \
             are left alone and logged at every reconcile pass until deleted by hand",
            unsold = servers - sold,
        );
    }
    format!(
        "the store in {shown} (data_dir, --data-dir) knows no pool server and no order, but {servers_where} \
         lists {servers} pool servers, {sold} of them sold (volumes attached: tenants' databases, whose \
         orders this store cannot answer) and {unsold} unsold; started on this store, warmpoold would \
         delete the unsold ones as leaks, so it stopped before deleting anything. Point data_dir or \
         --data-dir at the store that knows them (a mistyped or relative path, a volume not mounted); \
         if another warmpoold shares the project, give this one a cloud.server_tag of its own; if this \
         store is meant to be new (the old one is lost), start once with --delete-unknown-servers: the \
         unsold ones are deleted, the sold ones are left alone and logged at every reconcile pass until \
         deleted by hand",
        unsold = servers - sold,
    )
}

/// Why warmpoold does not start on a store that serves another cloud than
/// the configured one (or, with --adopt-cloud, on one of a real cloud
/// while it runs the embedded demo cloud), and what to do.
fn cloud_changed_refusal(
    config: &Config,
    recorded: &pool_manager::cloud::CloudIdentity,
    current: &pool_manager::cloud::CloudIdentity,
) -> String {
    let shown = shown_data_dir(&config.data_dir);
    // The demo runs without a config file: a start on a store of a real
    // cloud most likely forgot --config, and the flag or a [cloud]
    // section to mend are no way out.
    if *current == pool_manager::cloud::CloudIdentity::Embedded {
        return format!(
            "the store in {shown} (data_dir, --data-dir) serves {recorded}, but warmpoold runs \
             the embedded demo cloud, as it does with no --config (or with a file whose [cloud] \
             kind is \"embedded\"), and the embedded demo cloud adopts no store: was --config \
             forgotten? The demo is new at every start and boots nothing real: started on \
             this store, warmpoold would forget its servers as gone and boot its pools in the \
             simulation, so it stopped before booting, deleting or changing anything, \
             --adopt-cloud or not. Start with the config file of {recorded}; for the demo, \
             give it a data dir of its own (--data-dir)"
        );
    }
    if current.change_from(recorded) == pool_manager::cloud::CloudChange::RegionNamed {
        return format!(
            "the store in {shown} (data_dir, --data-dir) serves {recorded}, recorded with no \
             region (by an older warmpoold, or one run with no region_name), and warmpoold is \
             now configured for {current}: the service catalog does not have the services \
             warmpool calls in that region alone (or refuses to be read: a warning before \
             this says why), so with none named \
             they may have gone to another region, and it stopped before booting, deleting or \
             changing anything. Check where the store's servers are: if `{}` lists them, start \
             once with --adopt-cloud (the region is then recorded as the store's, and later \
             starts need no flag); if they are in another region, set region_name to that one",
            current.server_list_command().unwrap_or_default()
        );
    }
    if current.change_from(recorded) == pool_manager::cloud::CloudChange::ServerTag {
        return format!(
            "the store in {shown} (data_dir, --data-dir) serves {recorded}, but warmpoold is \
             configured for {current} (cloud.server_tag): the store's servers are this \
             project's, but pool servers are listed by their tag, and under the new one \
             warmpoold would list none of the store's own, only servers it has no record of \
             (another warmpoold's, sharing the project?), so it stopped before booting, \
             deleting or changing anything. If server_tag is mistyped, mend it; if the tag is \
             meant to change, start once with --adopt-cloud: the store keeps serving the \
             servers it has records of (by their ids, under the old tag), new servers carry the \
             new tag, and later starts need no flag"
        );
    }
    format!(
        "the store in {shown} (data_dir, --data-dir) serves {recorded}, but warmpoold is \
         configured for {current} ([cloud]): started on this store, warmpoold would boot the \
         store's pools on this cloud and answer its orders and reconcile its instances with \
         servers this cloud never had, so it stopped before booting, deleting or changing \
         anything. Point data_dir or --data-dir at this cloud's store, or at a new data dir for \
         a new one; if the [cloud] section is the mistake, mend it; if this store is meant to \
         move to this cloud (the other is gone, its orders settled), start once with \
         --adopt-cloud: this cloud is then recorded as the store's, the store's pools boot on \
         it, and later starts need no flag",
    )
}

/// The data dir as a message shows it: a relative one (the default is one)
/// is read from the working directory, so the absolute path beside it
/// shows which store was opened.
fn shown_data_dir(dir: &std::path::Path) -> String {
    match std::path::absolute(dir) {
        Ok(absolute) if absolute != dir => format!("{} ({})", dir.display(), absolute.display()),
        _ => dir.display().to_string(),
    }
}

/// A task that is aborted when its handle is dropped, so an early return from
/// [`start`] leaves nothing running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Aborts the task and waits until it is gone, with all it held.
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }

    /// Waits for the task; `None` (and a log line) when it panicked or was aborted.
    async fn join(mut self) -> Option<T> {
        match (&mut self.0).await {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "task ended abnormally");
                None
            }
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`build_cloud`] builds: the cloud, the readiness probe, for the
/// embedded cloud the simulator itself, the stored pools the cloud
/// check found unusable, each with its problems and what ends its mark,
/// and where the pool servers are listed, for messages ("the project of
/// user pool in project service, under the tag \"warmpool\"
/// (cloud.server_tag),").
type BuiltCloud = (
    Arc<dyn pool_manager::cloud::Cloud>,
    Arc<dyn Probe>,
    Option<Arc<cloudsim::SimCloud>>,
    std::collections::BTreeMap<pool_manager::model::PoolKey, check_cloud::StalePool>,
    String,
);

/// The pools the daemon will serve, as the cloud check sees them: each one
/// the store has and is not deleting, with its stored settings, and each
/// configured one the store does not have yet.
async fn served_pools(
    store: &dyn Store,
    config: &Config,
) -> anyhow::Result<Vec<check_cloud::CheckedPool>> {
    let stored = store
        .list_pools()
        .await
        .context("cannot read the pools in the store")?;
    Ok(check_cloud::pools_to_check(&stored, config))
}

/// Logs each line of a start-up cloud check.
fn log_cloud_check(report: &check_cloud::Report) {
    for line in &report.checks {
        if line.ok {
            tracing::info!("cloud check: {line}");
        } else {
            tracing::warn!("cloud check: {line}");
        }
    }
}

/// The embedded simulated cloud the config's `[cloud] kind = "embedded"`
/// describes (what warmpoold serves from, and `check-cloud` checks).
pub fn embedded_cloud(time_scale: f64, iops_throttled: bool, seed: u64) -> Arc<cloudsim::SimCloud> {
    cloudsim::SimCloud::new(cloudsim::SimConfig {
        time_scale,
        iops_throttled,
        seed,
        // It forgets its servers when warmpoold stops, the store does
        // not: ids of a later start must not repeat them, or an old
        // allocation's release would delete a new instance's server.
        id_salt: rand::random(),
        // A second image to try an image change on.
        images: vec!["mysql-8.0".into(), "mysql-8.4".into()],
        // The tour's network: an order naming another is refused as
        // Neutron refuses its port. Shared with every project, so that an
        // order of any tenant may name it.
        networks: vec![cloudsim::SimNetwork::new(
            "tenant-net",
            "tenant-subnet",
            "10.0.0.0/16".parse().expect("a valid CIDR"),
        )
        .shared_with(pool_manager::cloud::NetworkShare::EveryProject)],
        ..cloudsim::SimConfig::default()
    })
}

/// [`build_cloud`], trying again while Keystone refuses the credentials,
/// after the pause a running daemon's refused re-logins take (30 s,
/// doubling up to 10 minutes), with clouds.yaml (and secure.yaml) read
/// again each time. Exiting instead, warmpoold would be restarted by its
/// supervisor every few seconds (systemd's RestartSec=5s, a kubelet's
/// back-off), each start trying the password once more, and a Keystone
/// with `lockout_failure_attempts` (5 is usual) would lock the account
/// within a minute or two. Credentials that cannot change until a restart
/// ([`CredentialsSource::read_again`] false) are not tried again: each
/// try would send the refused password once more, never to be taken, and
/// only bring the lockout nearer; start-up waits for the restart instead.
/// Meanwhile health says what it says through any start-up (""
/// NOT_SERVING, `liveness` SERVING), and a shutdown ends the wait (the
/// caller's select).
///
/// A check whose failures may all pass by themselves ([`CloudFailing`]: a
/// cloud that did not answer, failed or throttled) is run again for a
/// while ([`checking_again_while_failing`]), then ends start-up. Every
/// other failure ends it at once: what never heals (a flavor, image or
/// network the cloud lacks, a refused policy, a wrong region) is the
/// operator's to mend.
async fn build_cloud_waiting_out_refusals(
    config: &Config,
    pools: &[check_cloud::CheckedPool],
    note: &starting::Note,
) -> anyhow::Result<BuiltCloud> {
    let mut refusals = 0u32;
    loop {
        let built = checking_again_while_failing(|| build_cloud(config, pools), note).await;
        note.clear();
        let refused = match built {
            Err(e) => match e.downcast::<CredentialsRefused>() {
                Ok(refused) => refused,
                Err(e) => return Err(e),
            },
            built => return built,
        };
        refusals = refusals.saturating_add(1);
        let source = match &config.cloud {
            CloudConfig::OpenStack(os) => credentials_source(os),
            CloudConfig::Embedded { .. } => CredentialsSource {
                place: "the cloud config".to_owned(),
                read_again: true,
                restart: "restart warmpoold",
            },
        };
        // Said to every caller, before any token is checked: no user,
        // project or file names (an unauthenticated caller could lock the
        // account out with them); the log has them.
        if !source.read_again {
            note.set(format!(
                "warmpoold is starting, and waits for a restart: Keystone refused its cloud \
                 credentials at start-up; warmpoold reads them at start only and does not try \
                 them again. An operator must mend them (or in Keystone the user's role on the \
                 project, or a locked, disabled or expired account; warmpoold's log says which \
                 credentials and what Keystone answered), then {}",
                source.restart,
            ));
            return wait_for_a_restart(&refused, &source).await;
        }
        let pause = pool_manager::openstack::session::relogin_pause(refusals);
        let next_try =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + pause).to_string();
        note.set(format!(
            "warmpoold is starting, and waits for credentials Keystone takes: Keystone refused \
             its cloud credentials. An operator must mend them (or in Keystone the user's role \
             on the project, or a locked, disabled or expired account; warmpoold's log says \
             which credentials and what Keystone answered); warmpoold reads them again and \
             tries at {next_try}, and serves once Keystone takes them",
        ));
        tracing::error!(
            refusals,
            next_try = %next_try,
            "{refused}; mend the credentials in {}, or in Keystone the user's role on the \
             project, or the account if it says the account is locked, disabled or expired. \
             warmpoold waits rather than \
             exits (its supervisor would restart it within seconds, each start trying the \
             password again until Keystone's lockout_failure_attempts lock the account): it \
             tries again at {next_try} (in {}), reading them again, and serves once Keystone \
             takes them",
            source.place,
            humantime::format_duration(pause),
        );
        tokio::time::sleep(pause).await;
    }
}

/// `build` (the cloud check), run again while it fails for what may pass
/// ([`CloudFailing`]): after [`cloud_check_pause`], for up to
/// [`START_UP_CHECK_RETRY_FOR`] from the first failure, each time with a
/// warning naming what failed and when the next try is, and `note` saying
/// so to callers. Then the failure, saying how long it tried. Any other
/// result at once.
async fn checking_again_while_failing<T, F>(
    mut build: impl FnMut() -> F,
    note: &starting::Note,
) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let mut failures = 0u32;
    let mut first_failure = None;
    loop {
        let failing = match build().await {
            Err(e) => match e.downcast::<CloudFailing>() {
                Ok(failing) => failing,
                Err(e) => return Err(e),
            },
            built => return built,
        };
        failures = failures.saturating_add(1);
        // From the end of the first failed check: a first try that waited
        // out a request timeout does not eat the time left to the others.
        let since = *first_failure.get_or_insert_with(tokio::time::Instant::now);
        let tried_for = since.elapsed();
        let Some(pause) = cloud_check_pause(failures, failing.retry_after, tried_for) else {
            anyhow::bail!(
                "{failing} (still failing after {failures} checks over {}: warmpoold checks \
                 again for up to {} a cloud that did not answer, failed or throttled a call, \
                 then exits)",
                humantime::format_duration(std::time::Duration::from_secs(tried_for.as_secs())),
                humantime::format_duration(START_UP_CHECK_RETRY_FOR),
            );
        };
        let next_try =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + pause).to_string();
        // Said to every caller before any token is checked: the log has
        // what failed, and where.
        note.set(format!(
            "warmpoold is starting: the cloud did not answer, failed or throttled a call of its \
             start-up check; warmpoold checks it again at {next_try} (its log says what failed)",
        ));
        tracing::warn!(
            failures,
            next_try = %next_try,
            "{failing}; this may pass by itself: warmpoold checks the cloud again at {next_try} \
             (in {}), and exits if it still fails {} after the first failure",
            humantime::format_duration(pause),
            humantime::format_duration(START_UP_CHECK_RETRY_FOR),
        );
        tokio::time::sleep(pause).await;
        note.clear();
    }
}

/// Start-up's wait after Keystone refused credentials read at start only:
/// never ends (a shutdown does, the caller's select). Says once what to
/// mend, then reminds every 10 minutes, so that a log read later, or an
/// alert on error lines, still finds why warmpoold does not serve.
async fn wait_for_a_restart(
    refused: &CredentialsRefused,
    source: &CredentialsSource,
) -> anyhow::Result<BuiltCloud> {
    tracing::error!(
        "{refused}; mend the credentials in {}, or in Keystone the user's role on the \
         project, or the account if it says the account is locked, disabled or expired, then \
         {}. warmpoold does not try them again: \
         it reads them at start only, so each try would send the refused ones again, counting \
         towards Keystone's lockout_failure_attempts. It waits for the restart, starting \
         (health NOT_SERVING, liveness SERVING), rather than exit: its supervisor would \
         restart it within seconds, each start trying them again",
        source.place,
        source.restart,
    );
    let reminder = pool_manager::openstack::session::RELOGIN_PAUSE_MAX;
    let mut waited = std::time::Duration::ZERO;
    loop {
        tokio::time::sleep(reminder).await;
        waited += reminder;
        tracing::error!(
            "still not serving: Keystone refused the credentials in {} at start-up, and \
             warmpoold does not try them again; mend them, then {} (waiting for {})",
            source.place,
            source.restart,
            humantime::format_duration(waited),
        );
    }
}

/// Where the credentials Keystone refused come from, for the operator to
/// mend them there.
struct CredentialsSource {
    place: String,
    /// A mend there reaches start-up's next try: a clouds.yaml (and the
    /// secure.yaml merged over it) read again at each one. Not the OS_*
    /// variables, which the process got at start, nor a clouds.yaml or
    /// secure.yaml systemd copied at start (the unit's LoadCredential=).
    read_again: bool,
    /// What makes a mend reach warmpoold when it is not read again.
    restart: &'static str,
}

fn credentials_source(os: &config::OpenStackConfig) -> CredentialsSource {
    let entry = os
        .cloud
        .clone()
        .or_else(|| std::env::var("OS_CLOUD").ok().filter(|c| !c.is_empty()));
    let file = match (&entry, &os.clouds_yaml) {
        (Some(entry), Some(path)) => format!("the entry {entry:?} of {}", path.display()),
        (Some(entry), None) => format!("the clouds.yaml entry {entry:?}"),
        (None, _) => {
            return CredentialsSource {
                place: "the OS_* variables (OS_PASSWORD, OS_APPLICATION_CREDENTIAL_SECRET), \
                        which warmpoold reads at start only"
                    .to_owned(),
                read_again: false,
                restart: "restart warmpoold",
            }
        }
    };
    let secure = config::secure_yaml();
    let merged = match &secure {
        Some(secure) => format!(", with {} merged over it", secure.display()),
        None => String::new(),
    };
    // systemd's LoadCredential= copies a file at start: a mended original
    // reaches the copy only with a restart. The unit hands secure.yaml over
    // as it does clouds.yaml, and the password is often in secure.yaml
    // alone, so a copy of either makes the refused password the one every
    // try would send again.
    let copies: Vec<String> = os
        .clouds_yaml
        .iter()
        .chain(secure.iter())
        .filter(|path| a_systemd_credential(path))
        .map(|path| path.display().to_string())
        .collect();
    if copies.is_empty() {
        return CredentialsSource {
            place: format!("{file}{merged}"),
            read_again: true,
            restart: "restart warmpoold",
        };
    }
    CredentialsSource {
        place: format!(
            "{file}{merged} ({} copied by systemd at start, the unit's LoadCredential=: mend \
             the original, not the copy)",
            copies.join(" and ")
        ),
        read_again: false,
        restart: "`systemctl restart warmpoold`",
    }
}

/// Whether `path` lies under `$CREDENTIALS_DIRECTORY`, where systemd puts
/// the copies LoadCredential= makes (a relative path, such as the
/// `./secure.yaml` of the search path, compared once resolved).
pub fn a_systemd_credential(path: &std::path::Path) -> bool {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return false;
    };
    let dir = std::path::Path::new(&dir);
    path.starts_with(dir)
        || matches!(
            (std::fs::canonicalize(path), std::fs::canonicalize(dir)),
            (Ok(path), Ok(dir)) if path.starts_with(&dir)
        )
}

/// The configured cloud, checked first for `pools`.
async fn build_cloud(
    config: &Config,
    pools: &[check_cloud::CheckedPool],
) -> anyhow::Result<BuiltCloud> {
    match &config.cloud {
        CloudConfig::Embedded {
            time_scale,
            iops_throttled,
            seed,
        } => {
            let sim = embedded_cloud(*time_scale, *iops_throttled, *seed);
            // Checked as OpenStack's pools are, and for the same reason:
            // creating the pools one by one would store (and boot) those
            // before a bad one.
            let report = check_cloud::check_boot_specs(sim.as_ref(), pools).await;
            log_cloud_check(&report);
            if let Some(refusal) = report.refusal() {
                let message =
                    format!("the embedded simulated cloud cannot serve every pool: {refusal}");
                return Err(CloudFailing::or_not(message, &report));
            }
            tracing::info!(
                time_scale,
                iops_throttled,
                "running on the embedded simulated cloud"
            );
            Ok((
                sim.clone(),
                Arc::new(MysqlGreetingProbe {
                    timeout: config.manager.probe_timeout,
                }),
                Some(sim),
                report.stale_pools(),
                "the embedded simulated cloud".to_owned(),
            ))
        }
        CloudConfig::OpenStack(os) => {
            // The cloud is checked before anything boots: credentials,
            // networks, or a configured pool's flavor, image or zone that
            // are wrong never heal, so they stop start-up. A stored pool's
            // own failure does not (the cloud changed under it): every
            // other pool would go down with it, and deleting it takes a
            // running daemon; it is marked instead. A short quota only
            // limits how far the pools fill, so it is a warning.
            // A cloud that did not answer, failed or throttled a call may
            // heal by itself: the caller checks again for a while
            // (CloudFailing).
            let (report, cloud) = check_cloud::check_pools(os, pools).await;
            log_cloud_check(&report);
            let cloud = match (cloud, report.refusal()) {
                (Some(cloud), None) => cloud,
                (_, refusal) if report.credentials_refused => {
                    return Err(CredentialsRefused(refusal.unwrap_or_default()).into())
                }
                (_, refusal) if report.cloud_config_refused => {
                    return Err(CloudConfigRefused(refusal.unwrap_or_default()).into())
                }
                (_, refusal) => {
                    let message = format!(
                        "the OpenStack cloud is not usable (run `warmpoold check-cloud` for the full report): {}",
                        refusal.unwrap_or_default()
                    );
                    return Err(CloudFailing::or_not(message, &report));
                }
            };
            tracing::info!(
                identity = cloud.identity(),
                nova_microversion = %cloud.compute_microversion(),
                "running on OpenStack"
            );
            let servers_where = format!(
                "the project of {}, under the tag {:?} (cloud.server_tag),",
                cloud.identity(),
                os.server_tag
            );
            Ok((
                Arc::new(cloud),
                Arc::new(MysqlGreetingProbe {
                    timeout: config.manager.probe_timeout,
                }),
                None,
                report.stale_pools(),
                servers_where,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use pool_manager::cloud::CloudIdentity;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// Watches of `""` through start-up and after: each status once. A
    /// Watch opened during start-up gets NOT_SERVING, SERVING, then its
    /// end (README: the client watches again); one opened after gets
    /// SERVING once, and NOT_SERVING then its end at shutdown. `""`'s
    /// first channel, which tonic-health made SERVING, was switched to
    /// NOT_SERVING, so a start-up Watch got NOT_SERVING twice.
    #[tokio::test]
    async fn a_health_watch_gets_each_status_once_through_start_up_and_after() {
        let (mut health, service) = tonic_health::server::health_reporter();
        super::report_starting(&mut health).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = HealthClient::new(channel);
        let watch = |service: &str| {
            let mut client = client.clone();
            let request = HealthCheckRequest {
                service: service.into(),
            };
            async move { client.watch(request).await.unwrap().into_inner() }
        };
        async fn next(
            stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
        ) -> Option<ServingStatus> {
            stream.message().await.unwrap().map(|m| m.status())
        }
        use tonic::server::NamedService;
        let warmpool =
            <super::WarmPoolServer<super::service::WarmPoolService> as NamedService>::NAME;
        let mut starting = [watch("").await, watch(warmpool).await];
        for (stream, service) in starting.iter_mut().zip(["", warmpool]) {
            assert_eq!(
                next(stream).await,
                Some(ServingStatus::NotServing),
                "{service:?}"
            );
        }
        super::report_serving(&mut health).await;
        for (stream, service) in starting.iter_mut().zip(["", warmpool]) {
            assert_eq!(
                next(stream).await,
                Some(ServingStatus::Serving),
                "{service:?}"
            );
            assert_eq!(next(stream).await, None, "{service:?}");
        }
        let mut serving = watch("").await;
        assert_eq!(next(&mut serving).await, Some(ServingStatus::Serving));
        super::stop_health(&mut health).await;
        assert_eq!(next(&mut serving).await, Some(ServingStatus::NotServing));
        assert_eq!(next(&mut serving).await, None);
    }

    fn openstack(tag: &str, region: &str) -> CloudIdentity {
        CloudIdentity::OpenStack {
            project_id: "p1".into(),
            region: Some(region.into()),
            server_tag: tag.into(),
        }
    }

    /// A renamed tag leaves the store's servers where they were: its
    /// refusal says so, and not that they are another cloud's.
    #[test]
    fn a_renamed_tag_is_refused_as_such_and_another_region_as_another_cloud() {
        let config = crate::config::Config::default();
        let tag =
            super::cloud_changed_refusal(&config, &openstack("a", "r1"), &openstack("b", "r1"));
        assert!(tag.contains("(cloud.server_tag)"), "{tag}");
        assert!(tag.contains("servers it has records of"), "{tag}");
        assert!(!tag.contains("never had"), "{tag}");
        let region =
            super::cloud_changed_refusal(&config, &openstack("a", "r1"), &openstack("a", "r2"));
        assert!(region.contains("never had"), "{region}");
        assert!(region.contains("--adopt-cloud"), "{region}");
    }

    /// The embedded demo cloud adopts no store: a store of an OpenStack
    /// started on it is most likely the production store named by a
    /// start that forgot --config (the demo runs without it), so the
    /// refusal says so and offers neither --adopt-cloud nor a mend of a
    /// [cloud] section no file may have.
    #[test]
    fn the_demo_clouds_refusal_asks_whether_config_was_forgotten() {
        let config = crate::config::Config::default();
        let refusal =
            super::cloud_changed_refusal(&config, &openstack("a", "r1"), &CloudIdentity::Embedded);
        for part in [
            "the embedded demo cloud adopts no store: was --config forgotten?",
            "no --config",
            r#"OpenStack project p1 in region r1 under the server tag "a""#,
        ] {
            assert!(refusal.contains(part), "{part:?} not in: {refusal}");
        }
        for offered in [
            "start once with --adopt-cloud",
            "mend it",
            "[cloud] section",
        ] {
            assert!(!refusal.contains(offered), "{offered:?} in: {refusal}");
        }
    }

    /// The pauses between start-up's cloud checks: doubling from 1 s to
    /// 30 s, a longer Retry-After honoured up to that cap, and none once
    /// the next try would begin past `START_UP_CHECK_RETRY_FOR`.
    #[test]
    fn the_cloud_check_is_tried_again_backing_off_within_a_bound() {
        use super::cloud_check_pause as pause;
        let s = std::time::Duration::from_secs;
        let zero = s(0);
        let backoff: Vec<u64> = (1..=7)
            .map(|n| pause(n, None, zero).unwrap().as_secs())
            .collect();
        assert_eq!(backoff, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(pause(u32::MAX, None, zero), Some(s(30)));
        assert_eq!(pause(1, Some(s(10)), zero), Some(s(10)));
        assert_eq!(pause(3, Some(s(1)), zero), Some(s(4)));
        assert_eq!(pause(1, Some(s(3600)), zero), Some(s(30)));
        assert_eq!(pause(1, None, s(119)), Some(s(1)));
        assert_eq!(pause(1, None, s(120)), None);
        assert_eq!(pause(6, Some(s(5)), s(91)), None);
    }

    /// A cloud check failing for what may pass is run again until it
    /// passes, or until the bound, when start-up ends saying how long it
    /// tried; a failure that never heals ends it at the first try.
    #[tokio::test(start_paused = true)]
    async fn a_failing_cloud_check_is_run_again_until_it_passes_or_the_bound() {
        use std::cell::Cell;
        let note = super::starting::Note::default();
        let failing = || -> anyhow::Error {
            super::CloudFailing {
                message: "volumes: Cinder: throttled".into(),
                retry_after: Some(std::time::Duration::from_secs(5)),
            }
            .into()
        };
        let tries = Cell::new(0u32);
        let passed = super::checking_again_while_failing(
            || {
                tries.set(tries.get() + 1);
                let result = if tries.get() < 3 {
                    Err(failing())
                } else {
                    Ok("built")
                };
                async move { result }
            },
            &note,
        )
        .await;
        assert_eq!(passed.unwrap(), "built");
        assert_eq!(tries.get(), 3);

        // Pauses of 5, 5, 5, 8, 16, 30 and 30 s: 99 s, and a next try
        // 30 s later would begin past the 2 minutes.
        tries.set(0);
        let started = tokio::time::Instant::now();
        let err = super::checking_again_while_failing::<(), _>(
            || {
                tries.set(tries.get() + 1);
                let e = failing();
                async move { Err(e) }
            },
            &note,
        )
        .await
        .unwrap_err();
        assert_eq!(tries.get(), 8);
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(99));
        assert_eq!(
            format!("{err:#}"),
            "volumes: Cinder: throttled (still failing after 8 checks over 1m 39s: warmpoold \
             checks again for up to 2m a cloud that did not answer, failed or throttled a \
             call, then exits)"
        );
        assert!(!super::needs_an_operator(&err), "{err:#}");

        tries.set(0);
        let err = super::checking_again_while_failing::<(), _>(
            || {
                tries.set(tries.get() + 1);
                async { Err(anyhow::anyhow!("image: no image named 'mysql-9.9'")) }
            },
            &note,
        )
        .await
        .unwrap_err();
        assert_eq!(tries.get(), 1, "{err:#}");
    }

    /// Refusals only an operator mends are told from those a restart may
    /// mend, wherever in the chain of contexts they are: the former exit
    /// EX_CONFIG, which the systemd unit does not restart.
    #[test]
    fn refusals_only_an_operator_mends_are_told_from_passing_ones() {
        use crate::config::ConfigError;
        use pool_manager::store::StoreError;
        use pool_manager::ManagerError;
        use std::path::PathBuf;
        let json = || serde_json::from_str::<u8>("x").unwrap_err();
        let io = |kind| std::io::Error::from(kind);
        let in_context = |e: anyhow::Error| e.context("cannot open the store in /var/lib/warmpool");
        let operators: Vec<anyhow::Error> = vec![
            super::CloudChangedRefused("another cloud".into()).into(),
            super::UnknownServersRefused("unknown servers".into()).into(),
            super::CloudConfigRefused("cloud config: no clouds.yaml".into()).into(),
            ConfigError::Parse {
                path: PathBuf::from("w.toml"),
                message: "bad".into(),
            }
            .into(),
            ConfigError::Invalid("listen".into()).into(),
            ConfigError::Read {
                path: PathBuf::from("w.toml"),
                error: io(std::io::ErrorKind::NotFound),
            }
            .into(),
            in_context(
                StoreError::Unreadable {
                    tree: "allocations".into(),
                    key: "o-1".into(),
                    error: json(),
                }
                .into(),
            ),
            in_context(StoreError::Corrupt { at: None }.into()),
            anyhow::Error::new(ManagerError::Store(StoreError::UnreadableCloud {
                error: json(),
            }))
            .context("cannot compare the cloud with the one the store serves"),
        ];
        for e in &operators {
            assert!(super::needs_an_operator(e), "{e:#}");
        }
        let passing: Vec<anyhow::Error> = vec![
            anyhow::anyhow!("the OpenStack cloud is not usable: auth: connection refused"),
            super::StoreFailed("No space left on device".into()).into(),
            super::CredentialsRefused("Keystone refused".into()).into(),
            ConfigError::Read {
                path: PathBuf::from("w.toml"),
                error: io(std::io::ErrorKind::Interrupted),
            }
            .into(),
            in_context(
                StoreError::Locked {
                    dir: PathBuf::from("/var/lib/warmpool"),
                    waited: std::time::Duration::from_secs(5),
                }
                .into(),
            ),
            anyhow::Error::new(ManagerError::Store(StoreError::Io(
                sled::Error::Unsupported("x".into()),
            )))
            .context("start-up reconcile failed"),
        ];
        for e in &passing {
            assert!(!super::needs_an_operator(e), "{e:#}");
        }
    }

    /// `[tls]` files warmpoold cannot take are the operator's to mend, as
    /// the config file naming them is: missing, a directory, no PEM
    /// certificate in it. The start exits EX_CONFIG, not 1, which systemd
    /// would restart every 5 s for ever. One whose read failed as a disk
    /// may (/proc/self/mem's) exits 1, to be tried again.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn tls_files_warmpoold_cannot_take_need_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let refusal = |file: std::path::PathBuf| {
            let config = crate::config::Config::parse(&format!(
                "data_dir = {:?}\npools = []\n[tls]\ncert_file = {file:?}\nkey_file = {file:?}\n",
                dir.path().join("data"),
            ))
            .unwrap();
            async move {
                match super::start(config, std::future::pending()).await {
                    Ok(_) => panic!("started on TLS files {}", file.display()),
                    Err(e) => e,
                }
            }
        };
        for (file, says) in [
            (dir.path().join("missing.pem"), "No such file"),
            (dir.path().to_owned(), "Is a directory"),
            (garbage, "holds no PEM certificate"),
        ] {
            let e = refusal(file).await;
            assert!(format!("{e:#}").contains(says), "{says:?} not in: {e:#}");
            assert!(super::needs_an_operator(&e), "{e:#}");
        }
        let failing = refusal(std::path::PathBuf::from("/proc/self/mem")).await;
        assert!(
            format!("{failing:#}").contains("/proc/self/mem"),
            "{failing:#}"
        );
        assert!(!super::needs_an_operator(&failing), "{failing:#}");
    }

    /// A cloud config (clouds.yaml) missing or unreadable to warmpoold is
    /// the operator's to mend, as the config file is: the start exits
    /// EX_CONFIG. One whose read failed otherwise (an I/O error of its
    /// disk, here /proc/self/mem's) may pass, and the start exits 1 to be
    /// restarted.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_cloud_config_read_failing_as_a_disk_may_is_no_refusal_for_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let config = |clouds_yaml: &std::path::Path| {
            crate::config::Config::parse(&format!(
                "data_dir = {:?}\n[cloud]\nkind = \"openstack\"\ncloud = \"wp\"\n\
                 clouds_yaml = {:?}\nmanagement_network = \"mgmt\"\n",
                dir.path().join("data"),
                clouds_yaml,
            ))
            .unwrap()
        };
        let refusal = |config: crate::config::Config| async move {
            match super::build_cloud(&config, &[]).await {
                Ok(_) => panic!("a cloud built without a clouds.yaml"),
                Err(e) => e,
            }
        };
        let missing = refusal(config(&dir.path().join("missing.yaml"))).await;
        assert!(super::needs_an_operator(&missing), "{missing:#}");
        let failing = refusal(config(std::path::Path::new("/proc/self/mem"))).await;
        assert!(
            format!("{failing:#}").contains("/proc/self/mem"),
            "{failing:#}"
        );
        assert!(!super::needs_an_operator(&failing), "{failing:#}");
    }

    /// An adopted store's refusal over servers it has no record of says
    /// so, and how to let the start delete them.
    #[test]
    fn an_adopted_stores_refusal_over_unknown_servers_names_the_adoption() {
        let config = crate::config::Config::default();
        let adopted = super::unknown_servers_refusal(&config, "the project", 3, 1, true);
        for part in [
            "adopted from another cloud (--adopt-cloud)",
            "3 pool servers the project lists, 1 of them sold",
            "still serves the cloud it recorded",
            "--adopt-cloud --delete-unknown-servers",
        ] {
            assert!(adopted.contains(part), "{part:?} not in: {adopted}");
        }
        let new = super::unknown_servers_refusal(&config, "the project", 3, 1, false);
        assert!(new.contains("knows no pool server and no order"), "{new}");
    }
}
