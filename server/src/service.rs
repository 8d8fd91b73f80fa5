//! The warmpool.v1 gRPC service: check the caller ([`Checked`], before the
//! message is decoded), decode, call `PoolManager`, encode.

use crate::access::{AccessHandle, Caller, Method};
use crate::convert;
use crate::metrics::Metrics;
use futures::future::Either;
use pool_manager::changes::ChangeCursor;
use pool_manager::error::ApiCall;
use pool_manager::events::Event;
use pool_manager::model::PoolKey;
use pool_manager::{ManagerError, PoolManager};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use warmpool_proto::v1 as api;
use warmpool_proto::v1::warm_pool_server::WarmPool;

pub struct WarmPoolService {
    manager: PoolManager,
    access: AccessHandle,
    stopping: watch::Receiver<bool>,
    /// A permit per open `WatchPools` stream ([`MAX_WATCH_STREAMS`]).
    watch_slots: Arc<Semaphore>,
    /// `warmpool_watch_streams`: the streams holding a slot.
    watch_streams: Gauge,
}

impl WarmPoolService {
    /// `stopping` turns true when the daemon starts shutting down: streams
    /// end then, since a graceful shutdown waits for every open one.
    /// The caller was checked before (serve it behind [`Checked`]);
    /// `access` checks a watch's caller again as it goes.
    pub fn new(
        manager: PoolManager,
        access: AccessHandle,
        stopping: watch::Receiver<bool>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            manager,
            access,
            stopping,
            watch_slots: Arc::new(Semaphore::new(MAX_WATCH_STREAMS)),
            watch_streams: metrics.watch_streams(),
        }
    }
}

/// A gRPC service behind the access check: each call of a warmpool.v1
/// method is checked from its path and headers before its message is read,
/// so a caller without a valid token learns nothing from how what it sent
/// decodes, and no handler can forget the check. Refusals are counted.
#[derive(Clone)]
pub struct Checked<S> {
    inner: S,
    access: AccessHandle,
    metrics: Arc<Metrics>,
}

impl<S> Checked<S> {
    pub fn new(inner: S, access: AccessHandle, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            access,
            metrics,
        }
    }
}

impl<S: NamedService> NamedService for Checked<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Checked<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>>,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/warmpool.v1.WarmPool/Allocate": the router sends only this
        // service's paths here.
        let name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let Some(method) = Method::from_name(name) else {
            // The generated service's UNIMPLEMENTED says nothing; a client
            // newer than the daemon is the likely caller. Reflection shows
            // the methods to anyone, so this needs no token either.
            let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            // Echoed cut short: a name of kilobytes would make an answer
            // too large for the header a client accepts.
            let mut shown: String = name.chars().take(64).collect();
            if shown.len() < name.len() {
                shown.push_str("...");
            }
            let unknown = Status::unimplemented(format!(
                "warmpool.v1.WarmPool has no method {shown:?} in this daemon (a client newer than it?); its methods: {}",
                known.join(", ")
            ));
            return Either::Right(ready(Ok(unknown.into_http())));
        };
        let metadata = MetadataMap::from_headers(request.headers().clone());
        let access = self.access.current();
        let caller = match access.check_from(&metadata, method, crate::access::peer(&request)) {
            Ok(caller) => caller,
            Err(refused) => {
                self.metrics.api_call_refused(method, refused.code());
                return Either::Right(ready(Ok(refused.into_http())));
            }
        };
        let mut request = request;
        // For a handler that logs who called ([`WarmPool::release`]).
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller.clone());
        }
        Either::Left(self.inner.call(request))
    }
}

/// A warmpool.v1 service whose calls still waiting for their answer when
/// `grace_over` turns true (the grace period of a graceful stop is out) are
/// answered UNAVAILABLE at once ([`ManagerError::ShuttingDown`], which says
/// how to call again), just before the connections are cut: a call cut
/// with no status reaches its client as a transport error (UNKNOWN to a
/// tonic client, which does not retry that), or a bare connection error.
/// What the call started goes on as the manager's own
/// ([`PoolManager::finish_calls`]), until the manager stops.
#[derive(Clone)]
pub struct AnsweredAtStop<S> {
    inner: S,
    grace_over: watch::Receiver<bool>,
}

impl<S> AnsweredAtStop<S> {
    pub fn new(inner: S, grace_over: watch::Receiver<bool>) -> Self {
        Self { inner, grace_over }
    }
}

impl<S: NamedService> NamedService for AnsweredAtStop<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for AnsweredAtStop<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn futures::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let call = match Method::from_name(name) {
            Some(Method::Allocate) => ApiCall::Allocate,
            Some(Method::Release) => ApiCall::Release,
            Some(Method::CreatePool) => ApiCall::CreatePool,
            Some(Method::UpdatePool) => ApiCall::UpdatePool,
            Some(Method::DeletePool) => ApiCall::DeletePool,
            _ => ApiCall::Read,
        };
        let answer = self.inner.call(request);
        let grace_over = self.grace_over.clone();
        Box::pin(async move {
            tokio::select! {
                biased;
                answer = answer => answer,
                () = stopping(&grace_over) => {
                    Ok(convert::status(ManagerError::ShuttingDown { call }).into_http())
                }
            }
        })
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl WarmPool for WarmPoolService {
    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Reply<api::AllocateResponse> {
        let request = convert::allocate_request(request.into_inner())?;
        let allocation = self
            .manager
            .allocate(request)
            .await
            .map_err(convert::status)?;
        // A repeat during a release answers RELEASING: with why it is
        // stuck, as GetAllocation does.
        let release_error = self.manager.release_error(&allocation.params.request_id);
        Ok(Response::new(api::AllocateResponse {
            allocation: Some(convert::allocation(allocation, release_error)),
        }))
    }

    async fn get_allocation(
        &self,
        request: Request<api::GetAllocationRequest>,
    ) -> Reply<api::Allocation> {
        let request_id = request.into_inner().request_id;
        let allocation = self
            .manager
            .get_allocation(&request_id)
            .await
            .map_err(convert::status)?;
        let release_error = self.manager.release_error(&request_id);
        Ok(Response::new(convert::allocation(
            allocation,
            release_error,
        )))
    }

    async fn release(&self, request: Request<api::ReleaseRequest>) -> Reply<api::Allocation> {
        // A release deletes a tenant's server (maybe its volume): its log
        // lines, "released" among them, name the token that asked for it
        // (by its name in the config, never the token).
        let span = match request.extensions().get::<Caller>() {
            Some(caller) => tracing::info_span!("release", caller = %caller.name),
            None => tracing::Span::none(),
        };
        let request = request.into_inner();
        let allocation = self
            .manager
            .release(&request.request_id, request.delete_volume)
            .instrument(span)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::allocation(allocation, None)))
    }

    async fn list_pools(
        &self,
        _request: Request<api::ListPoolsRequest>,
    ) -> Reply<api::ListPoolsResponse> {
        let pools = self.manager.list_pools().await.map_err(convert::status)?;
        Ok(Response::new(api::ListPoolsResponse {
            pools: pools.into_iter().map(convert::pool).collect(),
        }))
    }

    async fn get_pool(&self, request: Request<api::GetPoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let pool = self.manager.get_pool(&key).await.map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn create_pool(&self, request: Request<api::CreatePoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("invalid spec: is required"))?;
        let spec = convert::pool_spec_from_proto(spec)?;
        let pool = self
            .manager
            .create_pool(key, spec)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn update_pool(&self, request: Request<api::UpdatePoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        // Without a spec every masked field would read as zero (max_ready 0
        // retires every ready instance): the values must be sent.
        let spec = match request.spec {
            Some(spec) => spec,
            None if paths.is_empty() => api::PoolSpec::default(),
            None => {
                return Err(Status::invalid_argument(
                    "invalid spec: is required with an update_mask; the masked fields take their new values from it",
                ))
            }
        };
        let update = convert::SpecUpdate::from_proto(&spec, &paths)?;
        let pool = self
            .manager
            .update_pool(&key, move |spec| update.apply(spec))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn delete_pool(
        &self,
        request: Request<api::DeletePoolRequest>,
    ) -> Reply<api::DeletePoolResponse> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let pool = self
            .manager
            .delete_pool(&key)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(api::DeletePoolResponse {
            pool: Some(convert::pool(pool)),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<api::ListInstancesRequest>,
    ) -> Reply<api::ListInstancesResponse> {
        let request = request.into_inner();
        let key = match (
            request.flavor.is_empty(),
            request.availability_zone.is_empty(),
        ) {
            (true, true) => None,
            _ => Some(convert::pool_key(
                &request.flavor,
                &request.availability_zone,
            )?),
        };
        let instances = self
            .manager
            .list_instances(key.as_ref())
            .await
            .map_err(convert::status)?;
        // A deleted pool's instances are listed while tenants hold them; a
        // pool neither known nor named by any instance is likelier a typo
        // than an empty pool. Only a first page says so: a later one may
        // find the last instance gone since.
        if let Some(key) = key.as_ref().filter(|_| instances.is_empty()) {
            if request.page_token.is_empty() {
                if let Err(ManagerError::PoolNotFound(_)) = self.manager.get_pool(key).await {
                    return Err(Status::not_found(format!(
                        "no pool {:?}, and no instance names it (check --flavor and --az; `warmpoolctl pools` or ListPools lists the pools)",
                        key.to_string()
                    )));
                }
            }
        }
        let page = convert::instances_page(
            instances,
            key.as_ref(),
            request.page_size,
            &request.page_token,
        )?;
        Ok(Response::new(page))
    }

    type WatchPoolsStream =
        Pin<Box<dyn futures::Stream<Item = Result<api::PoolStatus, Status>> + Send>>;

    async fn watch_pools(
        &self,
        request: Request<api::WatchPoolsRequest>,
    ) -> Reply<Self::WatchPoolsStream> {
        // A watch lasts: it is checked again as it goes, so that a token
        // a reload revoked stops receiving.
        let Ok(permit) = self.watch_slots.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "{MAX_WATCH_STREAMS} WatchPools streams are open, the most warmpoold serves at once; \
                 watchers should share one stream (a dashboard's back end reads one for all its \
                 viewers): close streams no longer read, and watch again once one has ended"
            )));
        };
        let slot = WatchSlot::new(permit, self.watch_streams.clone(), request.remote_addr());
        let still_allowed = recheck(self.access.clone(), &request, Method::WatchPools);
        let (_watcher, stream) = open_watch(
            &self.manager,
            self.stopping.clone(),
            still_allowed,
            slot,
            WATCH_BUFFER,
        );
        Ok(Response::new(stream))
    }
}

/// Starts a watch's task and returns it with the stream its reader reads,
/// which holds up to `buffer` messages.
fn open_watch(
    manager: &PoolManager,
    stopping: watch::Receiver<bool>,
    still_allowed: StillAllowed,
    slot: WatchSlot,
    buffer: usize,
) -> (
    tokio::task::JoinHandle<()>,
    <WarmPoolService as WarmPool>::WatchPoolsStream,
) {
    let (tx, rx) = mpsc::channel(buffer);
    let (ended_tx, ended) = oneshot::channel();
    let reads = Arc::new(AtomicU64::new(0));
    let watcher = Watcher::spawn(
        manager,
        stopping.clone(),
        still_allowed.clone(),
        tx,
        ended_tx,
        slot,
        reads.clone(),
    );
    (
        watcher,
        watch_stream(rx, ended, stopping, still_allowed, reads),
    )
}

/// What a `WatchPools` caller reads: the watcher's messages until the
/// daemon starts shutting down, then UNAVAILABLE, so the client watches
/// again once it is back; or until a reload removed the caller's token,
/// then UNAUTHENTICATED; or, once the watcher stopped, the status it
/// stopped with (`ended`). These statuses are made here, on the reading
/// side, not sent by the watcher: a reader that is behind has no room left
/// in the buffer for them, and what is still in the buffer then is stale
/// or no longer the caller's to read. A watch never ends without one: the
/// plain end of a stream would read as complete, and its reader would not
/// know to watch again.
fn watch_stream(
    rx: mpsc::Receiver<api::PoolStatus>,
    ended: oneshot::Receiver<Status>,
    stopping_rx: watch::Receiver<bool>,
    still_allowed: StillAllowed,
    reads: Arc<AtomicU64>,
) -> <WarmPoolService as WarmPool>::WatchPoolsStream {
    Box::pin(futures::stream::unfold(
        Some((rx, ended, stopping_rx, still_allowed, reads)),
        |open| async move {
            let (mut rx, mut ended, stopping_rx, still_allowed, reads) = open?;
            tokio::select! {
                // Shutdown first: the backlog of a reader that is behind is
                // dropped rather than read out ahead of the status.
                biased;
                () = stopping(&stopping_rx) => Some((
                    Err(Status::unavailable(
                        "warmpoold is shutting down; watch again once it is back",
                    )),
                    None,
                )),
                // Checked at each message, and at the end the watcher
                // makes when it finds the token gone.
                item = rx.recv() => match (still_allowed(), item) {
                    (Err(refused), _) => Some((Err(refused), None)),
                    (Ok(()), Some(item)) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        Some((Ok(item), Some((rx, ended, stopping_rx, still_allowed, reads))))
                    }
                    // The watcher sent why it stopped before it let go of
                    // the channel (a token revoked, though a later reload
                    // gave it back); it may also have panicked.
                    (Ok(()), None) => Some((
                        Err(ended.try_recv().unwrap_or_else(|_| {
                            Status::unavailable("warmpoold's watch of the pools stopped; watch again")
                        })),
                        None,
                    )),
                },
            }
        },
    ))
}

/// How often a watch re-reads the pools even when nothing in the store
/// changed: the computed target, lead time and throttle gate move without
/// writing anything.
const WATCH_REFRESH: Duration = Duration::from_secs(1);

/// Messages a `WatchPools` stream holds for a slow reader.
const WATCH_BUFFER: usize = 64;

/// The longest a watch's messages wait unread before it ends: its reader
/// has read nothing for that long while there was something to read (a
/// client that keeps its HTTP/2 window shut, or is stuck), and what it
/// would read is stale anyway. It frees the stream's slot among the
/// [`MAX_WATCH_STREAMS`], which would otherwise be held for as long as the
/// connection lasts (keepalive PINGs are answered by a client that does
/// not read). Measured from the reader's last read, not from a send's wait
/// for room: a quiet pool's watch sends a message or two, which fit in the
/// buffer, and never waits.
const WATCH_STALL_LIMIT: Duration = Duration::from_secs(120);

/// The most `WatchPools` streams served at once, over every connection.
/// Each has a task of its own re-listing every pool every second and a
/// buffer of [`WATCH_BUFFER`] messages, and any reader token (anyone, on
/// an open API) may open them: 8,000 on one connection took 0.65 of a
/// core and 337 MB, and slowed GetPool twentyfold. A few dashboards need
/// a handful; a front end serving many viewers reads one and shares it.
pub const MAX_WATCH_STREAMS: usize = 256;

/// One `WatchPools` stream.
struct Watcher {
    manager: PoolManager,
    changes: ChangeCursor,
    events: broadcast::Receiver<Event>,
    stopping: watch::Receiver<bool>,
    /// Whether the caller's token still allows the watch.
    still_allowed: StillAllowed,
    /// The last pool message sent per pool: only changes go out, and a pool
    /// that disappears gets a last message with its last known state.
    sent: HashMap<PoolKey, Sent>,
    tx: mpsc::Sender<api::PoolStatus>,
    /// Given back when the watcher ends, which it does as soon as its
    /// reader's stream is dropped (`tx.closed()`), or its reader fell
    /// [`WATCH_STALL_LIMIT`] behind.
    slot: WatchSlot,
    /// Messages its reader has read (counted by `watch_stream`).
    reads: Arc<AtomicU64>,
    /// `reads` when last looked at, and since when messages have waited
    /// with none read ([`Watcher::check_reader`]). A lock only because
    /// `send` borrows the watcher across an await.
    unread: std::sync::Mutex<(u64, Option<tokio::time::Instant>)>,
}

/// A `WatchPools` stream's place among the [`MAX_WATCH_STREAMS`], counted
/// in `warmpool_watch_streams` while it is held.
struct WatchSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    /// The caller's address, for the log.
    peer: Option<SocketAddr>,
}

impl WatchSlot {
    fn new(permit: OwnedSemaphorePermit, open: Gauge, peer: Option<SocketAddr>) -> Self {
        open.inc();
        WatchSlot {
            _permit: permit,
            open,
            peer,
        }
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A pool as a watch last sent it.
struct Sent {
    /// Tells it from a pool created again under its key
    /// (`pool_manager::PoolStatus::generation`).
    generation: u64,
    pool: api::Pool,
}

/// Checks the caller of `request` for `method` against the tokens in force
/// each time it is called.
// tonic::Status is large by design and this runs once a second and
// once per message read.
#[allow(clippy::result_large_err)]
fn recheck<T>(access: AccessHandle, request: &Request<T>, method: Method) -> StillAllowed {
    // Only the credentials: the rest of the call's metadata is not kept.
    let mut caller = MetadataMap::new();
    if let Some(value) = request.metadata().get("authorization") {
        caller.insert("authorization", value.clone());
    }
    let peer = request.remote_addr();
    Arc::new(move || access.current().check_from(&caller, method, peer).map(drop))
}

/// Checks a watch's caller again; the refusal ends the watch. Shared by
/// the watcher and the stream its reader reads.
// tonic::Status is large by design and this runs once a second and
// once per message read.
#[allow(clippy::result_large_err)]
type StillAllowed = Arc<dyn Fn() -> Result<(), Status> + Send + Sync>;

/// Why a watcher stopped: the status its stream ends with, once its
/// reader has read what was sent before (`watch_stream`).
struct Stop(Status);

impl Stop {
    /// The reader went away: no one reads this.
    fn reader_gone() -> Self {
        Stop(Status::cancelled("the WatchPools reader went away"))
    }

    /// `watch_stream` says so itself, ahead of any backlog.
    fn shutting_down() -> Self {
        Stop(Status::unavailable(
            "warmpoold is shutting down; watch again once it is back",
        ))
    }
}

impl Watcher {
    fn spawn(
        manager: &PoolManager,
        stopping: watch::Receiver<bool>,
        still_allowed: StillAllowed,
        tx: mpsc::Sender<api::PoolStatus>,
        ended: oneshot::Sender<Status>,
        slot: WatchSlot,
        reads: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        // Subscribed before the first listing, so nothing that happens after
        // the first messages is missed.
        let mut watcher = Watcher {
            changes: manager.subscribe(),
            events: manager.events(),
            manager: manager.clone(),
            stopping,
            still_allowed,
            sent: HashMap::new(),
            tx,
            slot,
            reads,
            unread: std::sync::Mutex::new((0, None)),
        };
        tokio::spawn(async move {
            let Err(Stop(status)) = watcher.serve().await;
            // Before the channel closes (the watcher dropped), so the
            // stream finds it once it reads the channel's end.
            let _ = ended.send(status);
            drop(watcher);
        })
    }

    async fn serve(&mut self) -> Result<Infallible, Stop> {
        let mut opening = true;
        loop {
            (self.still_allowed)().map_err(Stop)?;
            self.check_reader()?;
            self.refresh().await?;
            if std::mem::take(&mut opening) {
                // A reader draws its first view once it has every pool
                // (none is a snapshot too), and drops what it held of an
                // earlier stream that is not among them.
                let mut complete = status_message(None, Vec::new());
                complete.snapshot_complete = true;
                self.send(complete).await?;
            }
            let next_refresh = tokio::time::Instant::now() + WATCH_REFRESH;
            // Events may come in bursts: handle them all before re-listing,
            // but re-list at least every WATCH_REFRESH.
            loop {
                tokio::select! {
                    _ = self.tx.closed() => return Err(Stop::reader_gone()),
                    () = stopping(&self.stopping) => return Err(Stop::shutting_down()),
                    _ = self.changes.changed() => break,
                    event = self.events.recv() => match event {
                        Ok(event) => self.on_event(&event).await?,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            // The pool states are re-read below; the events
                            // are lost, and the reader is told so.
                            tracing::debug!(missed, "a WatchPools stream fell behind the events");
                            let event = convert::events_missed_event(missed, SystemTime::now());
                            self.send(status_message(None, vec![event])).await?;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(Stop(Status::unavailable(
                                "warmpoold's pool manager stopped; watch again once warmpoold is back",
                            )))
                        }
                    },
                    _ = tokio::time::sleep_until(next_refresh) => break,
                }
            }
        }
    }

    /// Waits for room in the stream, but not past the start of a shutdown
    /// (a reader that stopped reading would otherwise hold the daemon up
    /// for its whole grace period), nor past the removal of the caller's
    /// token (`watch_stream` tells the reader, whenever it reads again),
    /// nor past [`WATCH_STALL_LIMIT`].
    async fn send(&self, status: api::PoolStatus) -> Result<(), Stop> {
        let send = self.tx.send(status);
        tokio::pin!(send);
        let start = tokio::time::Instant::now() + WATCH_REFRESH;
        let mut recheck = tokio::time::interval_at(start, WATCH_REFRESH);
        loop {
            tokio::select! {
                sent = &mut send => return sent.map_err(|_| Stop::reader_gone()),
                () = stopping(&self.stopping) => return Err(Stop::shutting_down()),
                _ = recheck.tick() => {
                    (self.still_allowed)().map_err(Stop)?;
                    self.check_reader()?;
                }
            }
        }
    }

    /// Ends the watch once messages have waited [`WATCH_STALL_LIMIT`] in
    /// its buffer with none read. Called about every second: at each
    /// refresh, and while a send waits for room.
    // tonic::Status is large by design, and this runs once a second.
    #[allow(clippy::result_large_err)]
    fn check_reader(&self) -> Result<(), Stop> {
        let now = tokio::time::Instant::now();
        let reads = self.reads.load(Ordering::Relaxed);
        let waiting = self.tx.capacity() < self.tx.max_capacity();
        let mut unread = self.unread.lock().expect("unread lock");
        let (last_reads, since) = &mut *unread;
        if !waiting || reads != std::mem::replace(last_reads, reads) {
            // Nothing to read, or the reader read since: its clock starts
            // again with what still waits.
            *since = waiting.then_some(now);
            return Ok(());
        }
        if now.duration_since(*since.get_or_insert(now)) < WATCH_STALL_LIMIT {
            return Ok(());
        }
        drop(unread);
        let peer = self
            .slot
            .peer
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            %peer,
            "a WatchPools stream ended: its reader read nothing for {} s while messages waited \
             (a client that stopped reading, or keeps its HTTP/2 window shut); its slot is given back",
            WATCH_STALL_LIMIT.as_secs()
        );
        Err(Stop(Status::resource_exhausted(format!(
            "this WatchPools stream fell more than {} s behind (its reader read nothing for \
             that long) and was ended; watch again",
            WATCH_STALL_LIMIT.as_secs()
        ))))
    }

    /// Sends every pool that changed since it was last sent, and a last
    /// message for every pool that is gone.
    async fn refresh(&mut self) -> Result<(), Stop> {
        let pools = match self.manager.list_pools().await {
            Ok(pools) => pools,
            // Ends the stream once its reader has read what came before.
            Err(e) => return Err(Stop(convert::status(e))),
        };
        let mut listed = HashSet::new();
        for status in pools {
            let key = status.record.key.clone();
            let generation = status.generation;
            let pool = convert::pool(status);
            listed.insert(key.clone());
            if self.sent.get(&key).is_some_and(|sent| {
                sent.generation == generation && same_for_watchers(&sent.pool, &pool)
            }) {
                continue;
            }
            self.note_sent(&key, generation, pool.clone()).await?;
            self.send(status_message(Some(pool), Vec::new())).await?;
        }
        let gone: Vec<PoolKey> = self
            .sent
            .keys()
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            self.send_gone(&key).await?;
        }
        Ok(())
    }

    /// Records `pool` as the one sent for `key`. One of another generation
    /// sent before was deleted meanwhile (a reader that is behind, or the
    /// deletion and creation within one refresh): its last message goes
    /// first, so the reader does not take the new pool for the old one.
    async fn note_sent(
        &mut self,
        key: &PoolKey,
        generation: u64,
        pool: api::Pool,
    ) -> Result<(), Stop> {
        if self
            .sent
            .get(key)
            .is_some_and(|sent| sent.generation != generation)
        {
            self.send_gone(key).await?;
        }
        self.sent.insert(key.clone(), Sent { generation, pool });
        Ok(())
    }

    /// Sends the last message of the pool sent for `key`: it is gone.
    async fn send_gone(&mut self, key: &PoolKey) -> Result<(), Stop> {
        let last = self.sent.remove(key).map(|sent| sent.pool);
        let event = convert::pool_deleted_event(key, SystemTime::now());
        let mut message = status_message(last, vec![event]);
        message.deleted = true;
        self.send(message).await
    }

    /// Sends an event worth showing, with its pool's current state.
    async fn on_event(&mut self, event: &Event) -> Result<(), Stop> {
        let Some(shown) = convert::pool_event(event) else {
            return Ok(());
        };
        let pool = match &event.pool {
            None => None,
            Some(key) => match self.manager.get_pool(key).await {
                Ok(status) => {
                    let generation = status.generation;
                    let pool = convert::pool(status);
                    self.note_sent(key, generation, pool.clone()).await?;
                    Some(pool)
                }
                // Gone meanwhile: the next refresh says so; show its last state.
                Err(_) => self.sent.get(key).map(|sent| sent.pool.clone()),
            },
        };
        self.send(status_message(pool, vec![shown])).await
    }
}

/// Resolves once the daemon is shutting down; a closed channel counts too:
/// the daemon is gone.
async fn stopping(stopping: &watch::Receiver<bool>) {
    let _ = stopping.clone().wait_for(|stopping| *stopping).await;
}

fn status_message(pool: Option<api::Pool>, events: Vec<api::PoolEvent>) -> api::PoolStatus {
    api::PoolStatus {
        pool,
        at: Some(SystemTime::now().into()),
        events,
        deleted: false,
        snapshot_complete: false,
    }
}

/// How far a demand figure moves, relative to the larger of the value a
/// watch last sent and the current one, before the watch sends it again.
const DEMAND_MOVE: f64 = 0.1;

/// Demand rates (per second) apart by this little are the same to a
/// watch whatever their ratio: about one purchase in twelve days. Without
/// it a decaying rate, which never reaches 0, would be sent forever, a
/// tenth of its time constant apart (every 32 s for the 5 min EWMA).
const DEMAND_RATE_FLOOR: f64 = 1e-6;

/// The same floor for `demand_in_lead_time`, in allocations.
const DEMAND_IN_LEAD_TIME_FLOOR: f64 = 1e-3;

/// Whether a watcher would see no difference: the demand rates decay and the
/// pause countdown ticks continuously, so they alone do not make a message
/// at every refresh (a reader counts the time left to `paused_until`
/// itself); demand that moved past [`DEMAND_MOVE`] since it was sent does
/// ([`demand_moved`]), as does a pause's end moved later by the cloud
/// extending its hold.
fn same_for_watchers(a: &api::Pool, b: &api::Pool) -> bool {
    fn steady(pool: &api::Pool) -> api::Pool {
        let mut pool = pool.clone();
        if let Some(s) = pool.sizing.as_mut() {
            s.demand_short_per_second = 0.0;
            s.demand_long_per_second = 0.0;
            s.demand_forecast_per_second = 0.0;
            s.demand_in_lead_time = 0.0;
            if let Some(g) = s.gate.as_mut() {
                g.paused_until = None;
                g.pause_remaining = None;
            }
            s.backoff_until = None;
            // Read afresh from two clocks at each listing, so it wobbles;
            // and a pool short of its target reads its limits every
            // `headroom_interval`, which is no news unless what was read
            // changed (the headroom, the binding quota, an error): only its
            // first read is, which tells unlimited from not read.
            s.quota_read_at = s.quota_read_at.map(|_| prost_types::Timestamp::default());
        }
        pool
    }
    steady(a) == steady(b) && !pause_extended(a, b) && !backoff_moved(a, b) && !demand_moved(a, b)
}

/// Whether a demand figure of `b` moved from `a`'s by more than
/// [`DEMAND_MOVE`] of the larger of the two, and by more than its floor.
/// Measured from what the watch last sent, not from the last refresh, so
/// a slow decay adds up to a message: a watch's demand stays within that
/// of GetPool's, in about ten messages per time constant of a decay, not
/// one a refresh, and none once the rates are below their floor.
fn demand_moved(a: &api::Pool, b: &api::Pool) -> bool {
    fn figures(pool: &api::Pool) -> [(f64, f64); 4] {
        let s = pool.sizing.clone().unwrap_or_default();
        [
            (s.demand_short_per_second, DEMAND_RATE_FLOOR),
            (s.demand_long_per_second, DEMAND_RATE_FLOOR),
            (s.demand_forecast_per_second, DEMAND_RATE_FLOOR),
            (s.demand_in_lead_time, DEMAND_IN_LEAD_TIME_FLOOR),
        ]
    }
    figures(a)
        .into_iter()
        .zip(figures(b))
        .any(|((a, floor), (b, _))| {
            let apart = (a - b).abs();
            // A NaN (none is expected) compares unequal, so it is sent
            // once rather than hidden or sent at every refresh.
            apart > floor && apart > DEMAND_MOVE * a.abs().max(b.abs()) || a.is_nan() != b.is_nan()
        })
}

/// Whether the pool's backoff after failed boots began, ended or moved
/// (a failure since). Its end wobbles as the gate's pause does.
fn backoff_moved(a: &api::Pool, b: &api::Pool) -> bool {
    let end = |pool: &api::Pool| {
        let until = pool.sizing.as_ref()?.backoff_until?;
        SystemTime::try_from(until).ok()
    };
    match (end(a), end(b)) {
        (Some(a), Some(b)) => {
            let apart = b.duration_since(a).unwrap_or_else(|e| e.duration());
            apart >= Duration::from_secs(1)
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// Whether `b`'s pause ends a second or more after `a`'s, and later than
/// now. `paused_until` is recomputed at each listing from the hold's
/// instant and the wall clock, so it wobbles by their drift (and, on a
/// paused tokio clock, drifts earlier); a hold whose end is overdue (a
/// quota hold waiting for a headroom poll) reads as ending now, whenever
/// listed.
fn pause_extended(a: &api::Pool, b: &api::Pool) -> bool {
    fn gate(pool: &api::Pool) -> Option<&api::ThrottleGate> {
        pool.sizing.as_ref()?.gate.as_ref()
    }
    let end = |gate: &api::ThrottleGate| SystemTime::try_from(gate.paused_until?).ok();
    let (Some(a), Some(b)) = (gate(a), gate(b)) else {
        return false;
    };
    let overdue = b
        .pause_remaining
        .is_none_or(|left| left.seconds <= 0 && left.nanos <= 0);
    match (end(a), end(b)) {
        (Some(a), Some(b)) if !overdue => b
            .duration_since(a)
            .is_ok_and(|later| later >= Duration::from_secs(1)),
        // A pause starting or ending changes the gate's state.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use pool_manager::model::PoolSpec;
    use std::sync::Arc;

    /// A watch is not sent a pool for its pause counting down, nor for the
    /// wobble of `paused_until` (read afresh from two clocks at each
    /// listing), but is for a hold the cloud extended: a reader counting
    /// down to the old end would see the pause over while it goes on.
    #[test]
    fn a_pause_extended_is_sent_but_its_countdown_is_not() {
        let held = |until: SystemTime, remaining: u64| api::Pool {
            sizing: Some(api::SizingStatus {
                gate: Some(api::ThrottleGate {
                    state: api::ThrottleState::Throttled.into(),
                    paused_until: Some(until.into()),
                    pause_remaining: Some(convert::duration_to_proto(Duration::from_secs(
                        remaining,
                    ))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        let sent = held(end, 60);
        assert!(same_for_watchers(&sent, &held(end, 55)));
        let wobble = Duration::from_micros(300);
        assert!(same_for_watchers(&sent, &held(end + wobble, 50)));
        assert!(same_for_watchers(&sent, &held(end - wobble, 50)));
        assert!(
            !same_for_watchers(&sent, &held(end + Duration::from_secs(30), 85)),
            "the hold was extended by 30 s"
        );
        // An overdue end reads as the time of each listing: not sent every
        // second, but an end set afresh after it is.
        let overdue = held(end, 0);
        assert!(same_for_watchers(
            &overdue,
            &held(end + Duration::from_secs(1), 0)
        ));
        assert!(!same_for_watchers(
            &overdue,
            &held(end + Duration::from_secs(61), 60)
        ));
    }

    /// A backoff's end, read afresh from two clocks at each listing, is
    /// sent when it begins, moves (another failure) or ends, not for its
    /// wobble.
    #[test]
    fn a_backoff_is_sent_when_it_moves_not_for_its_wobble() {
        let backing_off = |until: Option<SystemTime>| api::Pool {
            sizing: Some(api::SizingStatus {
                plan_reason: "backoff".into(),
                backoff_until: until.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        let sent = backing_off(Some(end));
        let wobble = Duration::from_micros(300);
        assert!(same_for_watchers(&sent, &backing_off(Some(end + wobble))));
        assert!(same_for_watchers(&sent, &backing_off(Some(end - wobble))));
        assert!(!same_for_watchers(
            &sent,
            &backing_off(Some(end + Duration::from_secs(4)))
        ));
        assert!(!same_for_watchers(&sent, &backing_off(None)));
        assert!(!same_for_watchers(&backing_off(None), &sent));
    }

    /// A watch is sent a pool whose flavor's limits were read for the
    /// first time (unlimited is then told from not read), not for each
    /// read after, nor for the wobble of the read's time.
    #[test]
    fn the_first_quota_read_is_sent_not_the_later_ones() {
        let read = |at: Option<SystemTime>| api::Pool {
            sizing: Some(api::SizingStatus {
                quota_read_at: at.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        assert!(!same_for_watchers(&read(None), &read(Some(at))));
        assert!(!same_for_watchers(&read(Some(at)), &read(None)));
        let wobble = Duration::from_micros(300);
        assert!(same_for_watchers(&read(Some(at)), &read(Some(at + wobble))));
        assert!(same_for_watchers(
            &read(Some(at)),
            &read(Some(at + Duration::from_secs(30)))
        ));
    }

    /// A watch is sent a pool whose demand moved by more than a tenth
    /// since it was last sent (to 0 too), not for less, nor for rates
    /// apart by less than their floor.
    #[test]
    fn demand_is_sent_when_it_moved_a_tenth() {
        let demanding = |short: f64, in_lead_time: f64| api::Pool {
            sizing: Some(api::SizingStatus {
                demand_short_per_second: short,
                demand_in_lead_time: in_lead_time,
                ..Default::default()
            }),
            ..Default::default()
        };
        let sent = demanding(0.2, 2.0);
        assert!(same_for_watchers(&sent, &demanding(0.19, 2.0)));
        assert!(same_for_watchers(&sent, &demanding(0.21, 2.0)));
        assert!(!same_for_watchers(&sent, &demanding(0.17, 2.0)));
        assert!(!same_for_watchers(&sent, &demanding(0.0, 2.0)));
        assert!(!same_for_watchers(&demanding(0.0, 2.0), &sent));
        assert!(!same_for_watchers(&sent, &demanding(0.2, 1.7)));
        // Near 0, a ratio means nothing.
        let faint = demanding(DEMAND_RATE_FLOOR / 2.0, 0.0);
        assert!(same_for_watchers(&faint, &demanding(0.0, 0.0)));
        assert!(same_for_watchers(
            &faint,
            &demanding(DEMAND_RATE_FLOOR, 0.0)
        ));
        assert!(!same_for_watchers(
            &faint,
            &demanding(DEMAND_RATE_FLOOR * 2.0, 0.0)
        ));
    }

    /// A started manager with two paused pools: a watch's first two
    /// messages. Its wall clock runs on the paused tokio clock.
    async fn two_paused_pools() -> PoolManager {
        paused_pools(&["az1", "az2"]).await
    }

    /// A started manager with a paused db.small pool in each of `azs`.
    async fn paused_pools(azs: &[&str]) -> PoolManager {
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::deterministic());
        let mut settings = pool_manager::ManagerSettings::default();
        settings.sizing.wall_clock_start = Some(pool_manager::schedule::unix(1_700_000_000));
        let manager = PoolManager::new(
            Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            Arc::new(sim.probe()),
            settings,
        );
        manager.start().await.unwrap();
        for az in azs {
            let spec = PoolSpec {
                min_ready: 0,
                max_ready: 1,
                target: Default::default(),
                image: "mysql-8.0".into(),
                boot_timeout: Duration::from_secs(600),
                max_age: None,
                paused: true,
                windows: Vec::new(),
                iops_limit: None,
                volume_iops_limit: None,
            };
            manager
                .create_pool(PoolKey::new("db.small", *az), spec)
                .await
                .unwrap();
        }
        manager
    }

    /// A `WatchPools` slot of a semaphore of its own.
    fn slot() -> WatchSlot {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        WatchSlot::new(permit, Gauge::default(), None)
    }

    /// A watch whose reader stopped reading (its buffer full) does not
    /// keep the watch's task alive once shutdown starts, which would hold
    /// the daemon's graceful shutdown for its whole grace period; and its
    /// stream still ends with UNAVAILABLE, so its client knows to watch
    /// again, rather than with the end of a stream that looks complete.
    #[tokio::test(start_paused = true)]
    async fn a_watch_whose_buffer_is_full_at_shutdown_ends_unavailable() {
        let manager = two_paused_pools().await;
        let (stop, stopping) = watch::channel(false);
        // Room for one message: the first pool's fills it and the second
        // pool's waits.
        let open = recheck(
            AccessHandle::default(),
            &Request::new(()),
            Method::WatchPools,
        );
        let (watcher, stream) = open_watch(&manager, stopping, open, slot(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watcher.is_finished(), "the watch ended before shutdown");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("the watch ended at shutdown")
            .unwrap();
        let items: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect())
            .await
            .expect("the stream ended");
        match items.last() {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains("shutting down"), "{status:?}");
            }
            other => panic!("the stream's last item: {other:?} (of {})", items.len()),
        }
        // The backlog is stale once the daemon stops: not sent.
        assert_eq!(items.len(), 1, "{items:?}");
    }

    /// A watch whose reader reads nothing for [`WATCH_STALL_LIMIT`] (a
    /// client that keeps its HTTP/2 window shut while it answers PINGs)
    /// ends and gives its slot back: 256 such streams would otherwise lock
    /// every other watcher out for as long as their connection lasts. Its
    /// reader, should it read again, gets RESOURCE_EXHAUSTED saying to
    /// watch again, after what was buffered.
    #[tokio::test(start_paused = true)]
    async fn a_watch_whose_reader_reads_nothing_for_two_minutes_ends_and_frees_its_slot() {
        // Room for one message: the first pool's fills it and the second
        // pool's waits.
        a_reader_that_reads_nothing(1).await;
    }

    /// The same for a quiet watch whose few messages fit in its buffer: its
    /// sends never wait, yet its reader reads nothing.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_whose_reader_reads_nothing_for_two_minutes_ends_and_frees_its_slot() {
        a_reader_that_reads_nothing(WATCH_BUFFER).await;
    }

    async fn a_reader_that_reads_nothing(buffer: usize) {
        let manager = two_paused_pools().await;
        let (_stop, stopping) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(1));
        let open = recheck(
            AccessHandle::default(),
            &Request::new(()),
            Method::WatchPools,
        );
        let open_streams = Gauge::default();
        let permit = slots.clone().try_acquire_owned().unwrap();
        let slot = WatchSlot::new(permit, open_streams.clone(), None);
        let (watcher, stream) = open_watch(&manager, stopping, open, slot, buffer);
        tokio::time::sleep(Duration::from_secs(110)).await;
        assert!(
            !watcher.is_finished(),
            "a reader 110 s behind still watches"
        );
        assert_eq!(slots.available_permits(), 0);
        assert_eq!(open_streams.get(), 1, "warmpool_watch_streams");
        tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .expect("the watch ends once its reader is 2 minutes behind")
            .unwrap();
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
        assert_eq!(open_streams.get(), 0, "warmpool_watch_streams");
        let items: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect())
            .await
            .expect("the stream ended");
        match items.last() {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("watch again"), "{status:?}");
            }
            other => panic!("the stream's last item: {other:?} (of {})", items.len()),
        }
    }

    /// An event reaches a reader that is behind when the reader catches
    /// up, but says when it happened: a DEGRADED of 10:00 read at 10:01
    /// reads 10:00, the time the pool's `last_error_at` records too.
    #[tokio::test(start_paused = true)]
    async fn an_event_read_late_carries_when_it_happened() {
        let manager = two_paused_pools().await;
        let (_stop, stopping) = watch::channel(false);
        // Room for one message: the first pool's fills it and the second
        // pool's waits, so the watcher is not reading events.
        let open = recheck(
            AccessHandle::default(),
            &Request::new(()),
            Method::WatchPools,
        );
        let (_watcher, mut stream) = open_watch(&manager, stopping, open, slot(), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let key = PoolKey::new("db.small", "az1");
        manager
            .mark_unusable(
                &key,
                "flavor db.small is gone",
                pool_manager::events::MarkProof::Recheck,
            )
            .await
            .unwrap();
        let happened = manager.get_pool(&key).await.unwrap().record.last_error_at;
        assert!(happened.is_some());
        // Behind, but by less than WATCH_STALL_LIMIT, which ends the watch.
        tokio::time::sleep(Duration::from_secs(100)).await;
        let degraded = loop {
            let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("a message within a minute")
                .expect("the stream goes on")
                .expect("no error");
            if let Some(event) = item
                .events
                .into_iter()
                .find(|e| e.kind() == api::PoolEventKind::Degraded)
            {
                break event;
            }
        };
        assert_eq!(
            degraded.at.map(|at| SystemTime::try_from(at).unwrap()),
            happened,
            "{degraded:?}"
        );
    }

    /// What a reader that is behind reads once a reload revoked its token
    /// (the watch's task has ended, within a second of the reload, though
    /// the reader never read) and, with `give_back`, a second reload gave
    /// the token back before it read.
    async fn read_behind_a_revoked_token(
        give_back: bool,
    ) -> Vec<Result<api::PoolStatus, tonic::Status>> {
        use crate::access::{token_sha256, Access, Caller, Role};
        let token = |token: &str, name: &str, role| {
            let caller = Caller {
                name: name.into(),
                role,
            };
            Access::with_tokens([(token_sha256(token), caller)])
        };
        let manager = two_paused_pools().await;
        let (_stop, stopping) = watch::channel(false);
        let access = AccessHandle::new(token("dash-token", "dash", Role::Reader));
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer dash-token".parse().unwrap());
        // Room for one message: the first pool's fills it and the second
        // pool's waits.
        let allowed = recheck(access.clone(), &request, Method::WatchPools);
        let (watcher, stream) = open_watch(&manager, stopping, allowed, slot(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watcher.is_finished(), "the watch ended before the reload");
        access
            .reload(token("ops-token", "ops", Role::Operator))
            .unwrap();
        tokio::time::timeout(WATCH_REFRESH * 2, watcher)
            .await
            .expect("the watch's task ends within a second of the reload")
            .unwrap();
        if give_back {
            access
                .reload(token("dash-token", "dash", Role::Reader))
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), stream.collect())
            .await
            .expect("the stream ended")
    }

    /// A reader that is behind when a reload revokes its token gets
    /// UNAUTHENTICATED as its next message, not its backlog first; and the
    /// watch's task ends within a second, though the reader never reads.
    #[tokio::test(start_paused = true)]
    async fn a_revoked_watch_ends_though_its_reader_is_behind() {
        let items = read_behind_a_revoked_token(false).await;
        match items.as_slice() {
            [Err(status)] => assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}"),
            other => panic!("the stream after the reload: {other:?}"),
        }
    }

    /// A watch its token's revocation stopped ends UNAUTHENTICATED though a
    /// second reload gave the token back before its reader read its backlog:
    /// never with the plain end of a stream that looks complete.
    #[tokio::test(start_paused = true)]
    async fn a_revoked_watch_ends_unauthenticated_though_its_token_came_back() {
        let items = read_behind_a_revoked_token(true).await;
        match items.last() {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}")
            }
            other => panic!("the stream's last item: {other:?} (of {items:?})"),
        }
    }

    /// A pool deleted and created again under its key while the reader is
    /// behind is two pools: the reader gets the old one's last message,
    /// `deleted` set, before the new one, not an update that reads as the
    /// old pool's settings changed.
    #[tokio::test(start_paused = true)]
    async fn a_pool_created_again_while_the_reader_is_behind_is_sent_deleted_first() {
        let manager = two_paused_pools().await;
        let (_stop, stopping) = watch::channel(false);
        let open = recheck(
            AccessHandle::default(),
            &Request::new(()),
            Method::WatchPools,
        );
        // Room for one message: the first pool's fills it and the second
        // pool's waits.
        let (_watcher, mut stream) = open_watch(&manager, stopping, open, slot(), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let key = PoolKey::new("db.small", "az1");
        let old = manager.get_pool(&key).await.unwrap().record.spec;
        manager.delete_pool(&key).await.unwrap();
        let gone = async {
            while manager.get_pool(&key).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), gone)
            .await
            .expect("the empty pool's drain finishes");
        let mut spec = old.clone();
        spec.max_ready = 2;
        manager.create_pool(key.clone(), spec).await.unwrap();
        let mut az1 = Vec::new();
        while az1.len() < 3 {
            let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("a message within a minute")
                .expect("the stream goes on")
                .expect("no error");
            let Some(pool) = item.pool.as_ref() else {
                continue;
            };
            if pool.availability_zone == "az1" {
                let max_ready = pool.spec.as_ref().unwrap().max_ready;
                az1.push((max_ready, item.deleted));
            }
        }
        // The first message is the opening one, sent before the delete.
        assert_eq!(az1, [(1, false), (1, true), (2, false)]);
    }

    /// A watch's opening messages, one per pool, end with one marking the
    /// snapshot complete, which carries no pool or event; so does a watch
    /// of no pool, at once.
    #[tokio::test(start_paused = true)]
    async fn the_opening_snapshot_ends_with_a_marker() {
        for azs in [&["az1", "az2"][..], &[]] {
            let manager = paused_pools(azs).await;
            let (_stop, stopping) = watch::channel(false);
            let open = recheck(
                AccessHandle::default(),
                &Request::new(()),
                Method::WatchPools,
            );
            let (_watcher, mut stream) = open_watch(&manager, stopping, open, slot(), 64);
            let mut opening = Vec::new();
            for _ in 0..=azs.len() {
                let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                    .await
                    .expect("a message within a minute")
                    .expect("the stream goes on")
                    .expect("no error");
                opening.push(item);
            }
            let (marker, pools) = opening.split_last().unwrap();
            assert!(
                marker.snapshot_complete && marker.pool.is_none() && marker.events.is_empty(),
                "{azs:?}: {marker:?}"
            );
            let mut sent: Vec<&str> = pools
                .iter()
                .map(|p| {
                    assert!(!p.snapshot_complete, "{p:?}");
                    p.pool.as_ref().unwrap().availability_zone.as_str()
                })
                .collect();
            sent.sort();
            assert_eq!(sent, azs);
            // Once only: later refreshes send changes, no marker.
            tokio::time::sleep(WATCH_REFRESH * 3).await;
            let spec = PoolSpec {
                min_ready: 0,
                max_ready: 1,
                target: Default::default(),
                image: "mysql-8.0".into(),
                boot_timeout: Duration::from_secs(600),
                max_age: None,
                paused: true,
                windows: Vec::new(),
                iops_limit: None,
                volume_iops_limit: None,
            };
            manager
                .create_pool(PoolKey::new("db.medium", "az1"), spec)
                .await
                .unwrap();
            let next = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("a message within a minute")
                .expect("the stream goes on")
                .expect("no error");
            assert!(!next.snapshot_complete, "{next:?}");
            assert_eq!(next.pool.unwrap().flavor, "db.medium");
        }
    }

    /// A started manager with a db.small@az1 pool of fixed target 1 that
    /// sold `purchases` warm instances one after the other and refilled.
    async fn a_pool_that_sold(purchases: usize) -> PoolManager {
        use pool_manager::model::{
            AllocationParams, EmptyPoolPolicy, NetworkRequest, Target, VolumeRequest, VolumeSource,
        };
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::deterministic());
        let mut settings = pool_manager::ManagerSettings::default();
        settings.sizing.wall_clock_start = Some(pool_manager::schedule::unix(1_700_000_000));
        // Boots' lead times are forgotten an hour old by default, a change
        // of its own: kept, the pool's demand is all that moves.
        settings.sizing.lead_max_age = Duration::from_secs(24 * 3600);
        let manager = PoolManager::new(
            Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            Arc::new(sim.probe()),
            settings,
        );
        manager.start().await.unwrap();
        let key = PoolKey::new("db.small", "az1");
        let spec = PoolSpec {
            min_ready: 1,
            max_ready: 1,
            target: Target::Fixed(1),
            image: "mysql-8.0".into(),
            boot_timeout: Duration::from_secs(600),
            max_age: None,
            paused: false,
            windows: Vec::new(),
            iops_limit: None,
            volume_iops_limit: None,
        };
        manager.create_pool(key.clone(), spec).await.unwrap();
        for i in 0..purchases {
            let id = format!("order-{i}");
            let order = pool_manager::AllocateRequest {
                params: AllocationParams {
                    request_id: id.clone(),
                    tenant_project_id: "tenant-a".into(),
                    pool: key.clone(),
                    volume: VolumeRequest {
                        source: VolumeSource::New {
                            size_gib: 20,
                            volume_type: None,
                        },
                        delete_on_release: true,
                    },
                    network: NetworkRequest {
                        network_id: "tenant-net".into(),
                        subnet_id: None,
                        fixed_ip: None,
                    },
                    labels: Default::default(),
                },
                empty_pool: EmptyPoolPolicy::Wait,
                timeout: Some(Duration::from_secs(600)),
            };
            manager.allocate(order).await.unwrap();
            manager.release(&id, Some(true)).await.unwrap();
        }
        for _ in 0..600 {
            let status = manager.get_pool(&key).await.unwrap();
            let counts = convert::pool(status).counts.unwrap();
            if counts.ready == 1 && counts.booting == 0 && counts.warming == 0 {
                return manager;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("db.small@az1 did not refill to 1 Ready within 10 minutes");
    }

    /// The pool messages for db.small@az1 a watch sends within `span`.
    async fn pool_messages_within(
        stream: &mut <WarmPoolService as WarmPool>::WatchPoolsStream,
        span: Duration,
    ) -> Vec<api::Pool> {
        let end = tokio::time::Instant::now() + span;
        let mut pools = Vec::new();
        loop {
            tokio::select! {
                item = stream.next() => {
                    let item = item.expect("the stream goes on").expect("no error");
                    pools.extend(item.pool.filter(|p| p.availability_zone == "az1"));
                }
                _ = tokio::time::sleep_until(end) => return pools,
            }
        }
    }

    /// The demand figures of a pool's sizing.
    fn demand(pool: &api::Pool) -> [f64; 4] {
        let s = pool.sizing.as_ref().expect("Pool.sizing is always set");
        [
            s.demand_short_per_second,
            s.demand_long_per_second,
            s.demand_forecast_per_second,
            s.demand_in_lead_time,
        ]
    }

    /// A quiet pool's demand decays after a burst while its counts and
    /// target stay put: a watch still follows GetPool's demand, within
    /// the documented bound (10 %, or near 0), and does so in a bounded
    /// number of messages, not one a refresh.
    #[tokio::test(start_paused = true)]
    async fn a_watch_follows_a_quiet_pools_decaying_demand() {
        let manager = a_pool_that_sold(20).await;
        let key = PoolKey::new("db.small", "az1");
        let (_stop, stopping) = watch::channel(false);
        let open = recheck(
            AccessHandle::default(),
            &Request::new(()),
            Method::WatchPools,
        );
        let (_watcher, mut stream) = open_watch(&manager, stopping, open, slot(), WATCH_BUFFER);
        let opening = pool_messages_within(&mut stream, Duration::from_millis(500)).await;
        assert_eq!(opening.len(), 1, "{opening:?}");
        let burst = demand(&opening[0]);
        assert!(burst[0] > 0.001, "the purchases' demand: {burst:?}");

        let hour = Duration::from_secs(3600);
        let sent = pool_messages_within(&mut stream, hour).await;
        let shown = convert::pool(manager.get_pool(&key).await.unwrap());
        let last = sent.last().unwrap_or_else(|| {
            panic!(
                "no message in an hour: the watch shows demand {burst:?}, GetPool {:?}",
                demand(&shown)
            )
        });
        let floors = [
            DEMAND_RATE_FLOOR,
            DEMAND_RATE_FLOOR,
            DEMAND_RATE_FLOOR,
            DEMAND_IN_LEAD_TIME_FLOOR,
        ];
        for ((watched, now), floor) in demand(last).into_iter().zip(demand(&shown)).zip(floors) {
            // A refresh's worth of decay on top of the bound.
            let bound = (0.11 * watched.abs().max(now.abs())).max(floor);
            assert!(
                (watched - now).abs() <= bound,
                "the watch shows demand {:?}, GetPool {:?}",
                demand(last),
                demand(&shown)
            );
        }
        // About ten messages per time constant of each figure's decay
        // (5 min short, 1 h long) down to its floor, not one a refresh.
        assert!(sent.len() <= 120, "{} messages in an hour", sent.len());
        let later = pool_messages_within(&mut stream, hour).await;
        assert!(
            later.len() <= 15,
            "{} messages in the next hour",
            later.len()
        );
    }
}
