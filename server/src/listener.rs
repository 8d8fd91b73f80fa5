//! The gRPC listener's accept loop. warmpoold runs its own rather than
//! tonic's: tonic's ends at the first accept error that is not one client's
//! (EMFILE, when file descriptors run out under a burst of connections), and
//! the server then stops as if it had been asked to, exit code 0, which a
//! supervisor (`Restart=on-failure`) does not restart. Here such an error is
//! logged and accepting resumes after a pause. Each connection is then
//! established (for TLS, its handshake: [`crate::tls`]) beside the others,
//! at most [`MAX_ESTABLISHING`] at once: one more drops the oldest. Once
//! established, a connection has [`PREFACE_TIMEOUT`] to send the HTTP/2
//! preface ([`PrefaceDue`]); from then on the keepalive pings
//! (`grpc_keepalive_interval`, `grpc_keepalive_timeout`) close it if its
//! client is gone. So a socket opened and left silent holds its file
//! descriptor for seconds, not for good, and such sockets do not pile up
//! until accepting fails for lack of descriptors (a flood faster than
//! they are closed still can: accepting then pauses, as above). The
//! metrics port accepts with the same [`accept`].

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// Connections being established at once. One more takes the slot of the
/// oldest (which is dropped): sockets opened and left silent (a scanner, an
/// attacker) would otherwise hold every slot for the handshake timeout and
/// keep clients waiting in the kernel's backlog.
const MAX_ESTABLISHING: usize = 256;

/// How long an established connection may take to send the HTTP/2
/// preface; one that has not is closed. Until then hyper waits for it with
/// no bound of its own, and the keepalive pings start only after it. A
/// gRPC client sends it as soon as it is connected, so this is as generous
/// as the TLS handshake's timeout, and it ends only sockets that are not
/// clients (or clients that are stuck).
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 client preface's length ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
/// a client that sends part of it and stops is as silent as one that
/// sends nothing.
const PREFACE_LEN: usize = 24;

/// How long accepting pauses after an error of the listener's own (as
/// axum's and hyper's examples do): connections close meanwhile, and the
/// log gets a line a second, not a flood.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The connections of `listener` that `establish` makes something of
/// (`None`: dropped; it logs why), each due to send the HTTP/2 preface
/// within [`PREFACE_TIMEOUT`] of being established. Accepting ends, and
/// the listening socket closes, when `stop` resolves (a graceful shutdown:
/// no new connections while the open ones finish) or the stream is
/// dropped. Connections still being established then are closed, and
/// so is one whose establishing ends after: the server's accept loop
/// stops with the shutdown, and such a connection would wait unserved,
/// sent no GOAWAY, until the server ends.
pub fn incoming<IO, Establish, Established>(
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
    establish: Establish,
) -> ReceiverStream<std::io::Result<PrefaceDue<IO>>>
where
    IO: Send + 'static,
    Establish: Fn(TcpStream, SocketAddr) -> Established + Send + 'static,
    Established: Future<Output = Option<IO>> + Send + 'static,
{
    let (accepted, stream) = tokio::sync::mpsc::channel(64);
    let establishing: Arc<Mutex<Establishing>> = Arc::default();
    let mut numbered = 0u64;
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                biased;
                () = accepted.closed() => return,
                next = accept(&listener, &mut stop) => next,
            };
            let Some((socket, peer)) = next else {
                let mut state = lock(&establishing);
                state.stopped = true;
                for (_, task) in state.queue.drain(..) {
                    task.abort();
                }
                return;
            };
            let _ = socket.set_nodelay(true);
            let connection = establish(socket, peer);
            let accepted = accepted.clone();
            numbered += 1;
            let number = numbered;
            let slots = Arc::clone(&establishing);
            // Locked across the spawn: the task leaves the queue only after
            // it is in it.
            let mut state = lock(&establishing);
            if state.queue.len() >= MAX_ESTABLISHING {
                if let Some((_, oldest)) = state.queue.pop_front() {
                    tracing::debug!(%peer, "{MAX_ESTABLISHING} connections being established: dropping the oldest");
                    oldest.abort();
                }
            }
            let task = tokio::spawn(async move {
                let connection = connection.await;
                {
                    // Under the lock the stop is marked with: a
                    // connection is either handed over before it, or
                    // closed.
                    let mut slots = lock(&slots);
                    slots.queue.retain(|(n, _)| *n != number);
                    if slots.stopped {
                        if connection.is_some() {
                            tracing::debug!(%peer, "established after the shutdown began: closing the connection");
                        }
                        return;
                    }
                }
                if let Some(connection) = connection {
                    let _ = accepted.send(Ok(PrefaceDue::new(connection, peer))).await;
                }
            });
            state.queue.push_back((number, task.abort_handle()));
        }
    });
    ReceiverStream::new(stream)
}

/// The connections [`incoming`] is establishing.
#[derive(Default)]
struct Establishing {
    /// Oldest first: (number, its task).
    queue: VecDeque<(u64, AbortHandle)>,
    /// Accepting has stopped: what is established from now on is closed.
    stopped: bool,
}

/// The next connection of `listener`, or `None` once `stop` resolves.
/// An accept error is never the end: one of the listener's own (EMFILE,
/// when file descriptors run out) is logged, and accepting resumes after
/// [`ACCEPT_ERROR_PAUSE`]; one of a client's is skipped.
pub async fn accept(
    listener: &TcpListener,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            // Stopping first: a shutdown closes the port at once.
            biased;
            () = &mut *stop => return None,
            next = listener.accept() => match next {
                Ok(connection) => return Some(connection),
                Err(e) if is_the_clients_doing(&e) => {}
                Err(e) => {
                    // The listener is fine; a pause lets connections
                    // close and free descriptors.
                    tracing::warn!(error = %e, "cannot accept a connection; trying again");
                    tokio::select! {
                        () = &mut *stop => return None,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    }
}

/// An established connection that is closed (its reads fail) unless it
/// sends the HTTP/2 preface within [`PREFACE_TIMEOUT`]; then it passes
/// everything through untouched.
pub struct PrefaceDue<IO> {
    io: IO,
    /// Until the preface is in: how many of its bytes are still to come,
    /// and when they are due.
    waiting: Option<(usize, Pin<Box<Sleep>>)>,
    peer: SocketAddr,
}

impl<IO> PrefaceDue<IO> {
    fn new(io: IO, peer: SocketAddr) -> Self {
        Self {
            io,
            waiting: Some((PREFACE_LEN, Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)))),
            peer,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefaceDue<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some((to_come, due)) = &mut this.waiting else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                *to_come = to_come.saturating_sub(buf.filled().len() - before);
                if *to_come == 0 {
                    this.waiting = None;
                }
            }
            Poll::Pending if due.as_mut().poll(cx).is_ready() => {
                // Debug only: every scanner of the port ends here.
                tracing::debug!(peer = %this.peer, "no HTTP/2 preface within {PREFACE_TIMEOUT:?}: closing the connection");
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no HTTP/2 preface in time",
                )));
            }
            _ => {}
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefaceDue<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
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
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for PrefaceDue<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An accept error that is one client's (it gave up before it was
/// accepted), not the listener's.
fn is_the_clients_doing(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connection whose handshake completes once the listener has been
    /// told to stop is closed, not handed over: the server's accept loop
    /// has stopped too (as tonic's does at shutdown), so it would wait,
    /// unserved and sent no GOAWAY, until the whole server ends.
    #[tokio::test]
    async fn a_handshake_that_completes_after_stop_closes_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (finish_tx, finish) = tokio::sync::watch::channel(false);
        // A handshake that ends when the test says so.
        let incoming = incoming(
            listener,
            async {
                let _ = stop_rx.await;
            },
            move |socket, _| {
                let _ = started_tx.send(());
                let mut finish = finish.clone();
                async move {
                    let _ = finish.wait_for(|done| *done).await;
                    Some(socket)
                }
            },
        );
        let mut client = TcpStream::connect(addr).await.unwrap();
        started.recv().await.expect("the handshake began");
        stop_tx.send(()).unwrap();
        // Let the accept loop see the stop before the handshake ends.
        tokio::task::yield_now().await;
        finish_tx.send_replace(true);
        // The stream is held and not read, as tonic holds it once stopped.
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            let mut byte = [0u8; 1];
            client.read(&mut byte).await
        })
        .await;
        drop(incoming);
        match closed {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("read {n} bytes from a connection that should be closed"),
            Err(_) => panic!("the connection stayed open, queued for an accept loop that stopped"),
        }
    }
}
