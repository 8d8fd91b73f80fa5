//! What a graceful shutdown waits for, and what it cuts.
//!
//! tonic's graceful shutdown waits for every connection to close, and a
//! connection closes once its last stream has ended. The end of a
//! `WatchPools` or health `Watch` stream is a message like any other: a
//! client that stopped reading, its HTTP/2 window full, never gets it, and
//! its connection would hold the daemon for the whole grace period. So
//! the grace period is given to unary calls only ([`Calls`] counts them
//! from the moment they are called until their answer is handed to the
//! connection); once none is in flight, and has not been for
//! [`STREAM_END_DRAIN`] (the ends of streams that can be delivered go out
//! meanwhile), the connections still open are cut ([`Cuttable`]). Unary
//! calls still in flight when the grace period is out are answered
//! UNAVAILABLE just before the cut ([`crate::service::AnsweredAtStop`]):
//! cut with no status, they would reach their clients as transport errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::Connected;

/// How long no unary call must have been in flight before the connections
/// still open are cut: the ends of the streams (UNAVAILABLE, NOT_SERVING)
/// were queued at the shutdown signal and need only be written out, and a
/// call that came in just before the connection's GOAWAY starts meanwhile.
pub const STREAM_END_DRAIN: Duration = Duration::from_secs(1);

/// How long, once the grace period is out, the unary calls still in flight
/// get to be answered (UNAVAILABLE, [`crate::service::AnsweredAtStop`]) and
/// the connections then cut get to close, before serving is dropped
/// anyway: neither needs more than the connection to take what is written.
pub const CUT_PATIENCE: Duration = Duration::from_secs(5);

/// The part of [`CUT_PATIENCE`] given to the answers of the unary calls
/// still in flight when the grace period is out: made at once, only a
/// client that does not read (its HTTP/2 window full) holds one back.
pub const ANSWER_PATIENCE: Duration = Duration::from_secs(1);

/// "1 stream", "2 streams".
pub fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// The calls in flight, unary and streaming, across every service
/// [`Counted`] wraps.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<watch::Sender<InFlight>>);

/// How many calls are in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    pub unary: usize,
    pub streams: usize,
}

impl Calls {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn in_flight(&self) -> InFlight {
        *self.0.borrow()
    }

    /// Resolves once no unary call has been in flight for `quiet`.
    pub async fn unary_done(&self, quiet: Duration) {
        let mut in_flight = self.0.subscribe();
        loop {
            if in_flight.wait_for(|n| n.unary == 0).await.is_err() {
                return;
            }
            match tokio::time::timeout(quiet, in_flight.wait_for(|n| n.unary > 0)).await {
                Err(_quiet) => return,
                Ok(Err(_closed)) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Resolves once no unary call is in flight.
    pub async fn unary_none(&self) {
        let _ = self.0.subscribe().wait_for(|n| n.unary == 0).await;
    }

    fn start(&self, streaming: bool) -> CallGuard {
        self.0.send_modify(|n| match streaming {
            true => n.streams += 1,
            false => n.unary += 1,
        });
        CallGuard {
            calls: self.clone(),
            streaming,
        }
    }
}

/// One call in flight; dropped when its answer has been handed to the
/// connection (or the call was dropped).
struct CallGuard {
    calls: Calls,
    streaming: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let streaming = self.streaming;
        self.calls.0.send_modify(|n| match streaming {
            true => n.streams = n.streams.saturating_sub(1),
            false => n.unary = n.unary.saturating_sub(1),
        });
    }
}

/// A gRPC service whose calls are counted in [`Calls`]: the methods named
/// in `streaming` as streams, every other path as a unary call (an unknown
/// one is answered at once, so counting it costs nothing).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    calls: Calls,
    streaming: &'static [&'static str],
}

impl<S: NamedService> Counted<S> {
    /// `streaming`: the names of `inner`'s methods whose answer is a
    /// stream (`"WatchPools"`).
    pub fn new(inner: S, calls: Calls, streaming: &'static [&'static str]) -> Self {
        Self {
            inner,
            calls,
            streaming,
        }
    }
}

impl<S: NamedService> NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/grpc.health.v1.Health/Watch": the router sends only this
        // service's paths here.
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let guard = self.calls.start(self.streaming.contains(&method));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // The body holds the guard: the call is in flight until the
            // connection has taken its last frame (or dropped it).
            Ok(response.map(|body| {
                body.map_frame(move |frame| {
                    let _in_flight = &guard;
                    frame
                })
                .boxed_unsync()
            }))
        })
    }
}

/// Cuts every [`Cuttable`] connection made with its [`Cut::connection`].
#[derive(Debug)]
pub struct Cut(watch::Sender<bool>);

impl Default for Cut {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Cut {
    pub fn new() -> Self {
        Self::default()
    }

    /// `io`, to be cut by [`Cut::cut`].
    pub fn connection<IO>(&self, io: IO) -> Cuttable<IO> {
        let mut cut = self.0.subscribe();
        Cuttable {
            io,
            cut: Box::pin(async move {
                let _ = cut.wait_for(|cut| *cut).await;
            }),
            is_cut: false,
        }
    }

    /// Every connection fails its reads and writes from now on, so its
    /// HTTP/2 connection ends, its streams with it, and serving ends.
    pub fn cut(&self) {
        self.0.send_replace(true);
    }

    /// Cuts the connections and waits (up to `until`, the end of
    /// [`CUT_PATIENCE`]) for `serve` to end.
    pub async fn cut_and_wait<F: Future + Unpin>(&self, serve: F, until: tokio::time::Instant) {
        self.cut();
        if tokio::time::timeout_at(until, serve).await.is_err() {
            tracing::warn!(
                patience = ?CUT_PATIENCE,
                "the cut connections did not close; stopping anyway"
            );
        }
    }
}

/// A connection [`Cut::cut`] can end from outside: tonic offers no way to
/// drop a connection whose streams cannot end.
pub struct Cuttable<IO> {
    io: IO,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl<IO> Cuttable<IO> {
    /// Whether the connection is cut; the cut wakes a read or write waiting.
    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        self.is_cut
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "warmpoold stopped with this connection's streams unfinished",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Cuttable<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Cuttable<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Cuttable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
