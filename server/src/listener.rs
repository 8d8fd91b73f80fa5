//! The gRPC listener's accept loop. warmpoold runs its own rather than
//! tonic's: tonic's ends at the first accept error that is not one client's
//! (EMFILE, when file descriptors run out under a burst of connections), and
//! the server then stops as if it had been asked to, exit code 0, which a
//! supervisor (`Restart=on-failure`) does not restart. Here such an error is
//! logged and accepting resumes after a pause. Each connection is then
//! established (for TLS, its handshake: [`crate::tls`]) beside the others,
//! at most [`MAX_ESTABLISHING`] at once: one more drops the oldest.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;

/// Connections being established at once. One more takes the slot of the
/// oldest (which is dropped): sockets opened and left silent (a scanner, an
/// attacker) would otherwise hold every slot for the handshake timeout and
/// keep clients waiting in the kernel's backlog.
const MAX_ESTABLISHING: usize = 256;

/// How long accepting pauses after an error of the listener's own (as
/// axum's and hyper's examples do): connections close meanwhile, and the
/// log gets a line a second, not a flood.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The connections of `listener` that `establish` makes something of
/// (`None`: dropped; it logs why). Accepting ends, and the listening socket
/// closes, when `stop` resolves (a graceful shutdown: no new connections
/// while the open ones finish) or the stream is dropped.
pub fn incoming<IO, Establish, Established>(
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
    establish: Establish,
) -> ReceiverStream<std::io::Result<IO>>
where
    IO: Send + 'static,
    Establish: Fn(TcpStream, SocketAddr) -> Established + Send + 'static,
    Established: Future<Output = Option<IO>> + Send + 'static,
{
    let (accepted, stream) = tokio::sync::mpsc::channel(64);
    // Connections being established, oldest first: (number, its task).
    let establishing: Arc<Mutex<VecDeque<(u64, AbortHandle)>>> = Arc::default();
    let mut numbered = 0u64;
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let (socket, peer) = tokio::select! {
                // Stopping first: a shutdown closes the port at once.
                biased;
                () = &mut stop => return,
                () = accepted.closed() => return,
                next = listener.accept() => match next {
                    Ok(connection) => connection,
                    Err(e) => {
                        if !is_the_clients_doing(&e) {
                            // The listener is fine; a pause lets
                            // connections close and free descriptors.
                            tracing::warn!(error = %e, "cannot accept a connection; trying again");
                            tokio::select! {
                                () = &mut stop => return,
                                () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            }
                        }
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let connection = establish(socket, peer);
            let accepted = accepted.clone();
            numbered += 1;
            let number = numbered;
            let slots = Arc::clone(&establishing);
            // Locked across the spawn: the task leaves the queue only after
            // it is in it.
            let mut queue = lock(&establishing);
            if queue.len() >= MAX_ESTABLISHING {
                if let Some((_, oldest)) = queue.pop_front() {
                    tracing::debug!(%peer, "{MAX_ESTABLISHING} connections being established: dropping the oldest");
                    oldest.abort();
                }
            }
            let task = tokio::spawn(async move {
                let connection = connection.await;
                lock(&slots).retain(|(n, _)| *n != number);
                if let Some(connection) = connection {
                    let _ = accepted.send(Ok(connection)).await;
                }
            });
            queue.push_back((number, task.abort_handle()));
        }
    });
    ReceiverStream::new(stream)
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
