//! The simulated mysqld: a MySQL protocol-10 greeting and the per-server TCP
//! listener that sends it.
//!
//! The listener's port is reserved when the server is created (socket bound,
//! not listening) so `mysql_addr` is stable; connections are refused until
//! mysqld is ready, and again once it stops (the server failed, its mysqld
//! stopped), the port still bound, until the server is deleted. Meanwhile
//! every connection gets a greeting, and a login gets
//! what MySQL 8.0 answers a user it does not have: an auth switch to
//! caching_sha2_password (unless the client asked for that plugin), then
//! error 1045, access denied. That is all warmpool's credential-less probe
//! sends and reads.

use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Stops the listener task when dropped (server deleted, cloud dropped),
/// which frees the port.
#[derive(Debug)]
pub(crate) struct ListenerGuard {
    task: AbortHandle,
    stop: watch::Sender<bool>,
}

impl ListenerGuard {
    /// mysqld stops: connections are refused from now on, but the port stays
    /// bound, so no other server's listener gets it while this server, and
    /// its address, still exist.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Capability flags a MySQL 8.0 server advertises (lower and upper halves).
const CAPABILITIES_LOW: u16 = 0xffff;
const CAPABILITIES_HIGH: u16 = 0xdfff;
/// utf8mb4_0900_ai_ci
const CHARSET: u8 = 0xff;
/// SERVER_STATUS_AUTOCOMMIT
const STATUS: u16 = 0x0002;
const AUTH_PLUGIN: &[u8] = b"caching_sha2_password";

/// One complete handshake packet: 4-byte header (3-byte little-endian payload
/// length, sequence id 0) and a protocol-10 payload as MySQL 8.0 sends it.
pub fn greeting_packet(version: &str, thread_id: u32) -> Vec<u8> {
    let scramble = scramble(thread_id);
    let mut p = Vec::with_capacity(96);
    p.push(10);
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&thread_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0); // filler
    p.extend_from_slice(&CAPABILITIES_LOW.to_le_bytes());
    p.push(CHARSET);
    p.extend_from_slice(&STATUS.to_le_bytes());
    p.extend_from_slice(&CAPABILITIES_HIGH.to_le_bytes());
    p.push(21); // length of auth-plugin-data (20 + NUL)
    p.extend_from_slice(&[0; 10]); // reserved
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(AUTH_PLUGIN);
    p.push(0);
    let len = p.len() as u32;
    let mut packet = len.to_le_bytes()[..3].to_vec();
    packet.push(0); // sequence id
    packet.extend_from_slice(&p);
    packet
}

/// How long a connection may take to send its login (mysqld's
/// `connect_timeout`), so a client that never does holds no task for ever.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet a client's login may be.
const MAX_LOGIN: usize = 64 * 1024;
const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;

/// A client's HandshakeResponse41, as far as the answer depends on it.
#[derive(Debug, PartialEq)]
struct Login {
    seq: u8,
    user: String,
    plugin: Option<String>,
}

async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len > MAX_LOGIN {
        return None;
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(seq);
    packet.extend_from_slice(payload);
    packet
}

/// The user and auth plugin of a HandshakeResponse41; `None` for anything
/// else (mysqld would answer "Bad handshake", which no client here sends).
fn parse_login(seq: u8, p: &[u8]) -> Option<Login> {
    let caps = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let rest = p.get(32..)?;
    let nul = |b: &[u8]| b.iter().position(|&c| c == 0);
    let end = nul(rest)?;
    let user = String::from_utf8_lossy(&rest[..end]).into_owned();
    let mut rest = &rest[end + 1..];
    // The auth data: one length byte (no client here sends a longer
    // length-encoded one), or NUL-terminated.
    if caps & (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION) != 0 {
        let len = *rest.first()? as usize;
        rest = rest.get(1 + len..)?;
    } else {
        rest = rest.get(nul(rest)? + 1..)?;
    }
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        rest = rest.get(nul(rest)? + 1..)?;
    }
    let plugin = if caps & CLIENT_PLUGIN_AUTH != 0 {
        let end = nul(rest).unwrap_or(rest.len());
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    } else {
        None
    };
    Some(Login { seq, user, plugin })
}

/// What MySQL 8.0 answers a login of a user it does not have, after its
/// greeting: an auth switch to its plugin if the client asked for another,
/// then, whatever the client sends, 1045.
async fn refuse_login<S>(stream: &mut S, peer: IpAddr, thread_id: u32)
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some((seq, payload)) = read_packet(stream).await else {
        return;
    };
    let Some(login) = parse_login(seq, &payload) else {
        return;
    };
    let mut seq = login.seq.wrapping_add(1);
    if login.plugin.as_deref().map(str::as_bytes) != Some(AUTH_PLUGIN) {
        let mut switch = vec![0xfe];
        switch.extend_from_slice(AUTH_PLUGIN);
        switch.push(0);
        switch.extend_from_slice(&scramble(thread_id));
        switch.push(0);
        if stream.write_all(&packet(seq, &switch)).await.is_err() {
            return;
        }
        let Some((answer_seq, _)) = read_packet(stream).await else {
            return;
        };
        seq = answer_seq.wrapping_add(1);
    }
    let mut refusal = vec![0xff];
    refusal.extend_from_slice(&1045u16.to_le_bytes());
    refusal.extend_from_slice(b"#28000");
    refusal.extend_from_slice(
        format!(
            "Access denied for user '{}'@'{peer}' (using password: NO)",
            login.user
        )
        .as_bytes(),
    );
    let _ = stream.write_all(&packet(seq, &refusal)).await;
}

/// The scramble need not be secret here: nobody authenticates.
fn scramble(thread_id: u32) -> Vec<u8> {
    (0..20u8)
        .map(|i| 0x21 + (thread_id as u8).wrapping_mul(7).wrapping_add(i * 3) % 0x5e)
        .collect()
}

/// A socket bound to 127.0.0.1:0 whose port is the server's `mysql_addr`.
pub(crate) fn reserve() -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    Ok(socket)
}

/// A socket bound to `addr` (the HTTP face gives each server its own
/// loopback address, so Nova's `addresses` name where mysqld greets).
/// Not `SO_REUSEADDR`: a clash with another process's socket must fail here.
pub(crate) fn reserve_at(addr: std::net::SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Starts listening at `ready_at` (tokio time) and greets every connection
/// until [`ListenerGuard::stop`]. With `ready_at == None` (mysqld never
/// starts) the socket stays bound but never listens, so the port keeps
/// refusing and is not reused by another server; so does a stopped one.
/// Must be called within a tokio runtime.
pub(crate) fn spawn_listener(
    socket: TcpSocket,
    ready_at: Option<Instant>,
    version: String,
) -> ListenerGuard {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let Some(ready_at) = ready_at else {
            return hold(socket).await;
        };
        let stopped_before_ready = tokio::select! {
            () = tokio::time::sleep_until(ready_at) => false,
            _ = stopped.wait_for(|stop| *stop) => true,
        };
        if stopped_before_ready {
            return hold(socket).await;
        }
        // Only now, not at the reservation's bind (which must clash with
        // any other socket there): the connections accepted inherit it, so
        // their TIME_WAIT does not keep a stopped mysqld's port from being
        // bound again below.
        if let Err(e) = socket.set_reuseaddr(true) {
            tracing::debug!("cloudsim: SO_REUSEADDR on a simulated mysqld's socket: {e}");
        }
        let listener = match socket.listen(128) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cloudsim: cannot listen for simulated mysqld: {e}");
                return;
            }
        };
        let mut thread_id: u32 = 0;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((mut stream, peer)) => {
                    thread_id = thread_id.wrapping_add(1);
                    let packet = greeting_packet(&version, thread_id);
                    // One task per connection so a client that does not read
                    // cannot stall the accept loop.
                    tokio::spawn(async move {
                        if stream.write_all(&packet).await.is_ok() {
                            let _ = tokio::time::timeout(
                                LOGIN_TIMEOUT,
                                refuse_login(&mut stream, peer.ip(), thread_id),
                            )
                            .await;
                        }
                        let _ = stream.shutdown().await;
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::debug!("cloudsim: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        // mysqld stopped: no listening socket can stop listening, so it is
        // closed and the port bound again at once, not listening.
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!("cloudsim: a stopped simulated mysqld's port is unknown ({e}); it may go to another server");
                return;
            }
        };
        drop(listener);
        match rebind(addr) {
            Ok(socket) => hold(socket).await,
            Err(e) => tracing::warn!(
                "cloudsim: cannot keep {addr} bound after its simulated mysqld stopped ({e}); another server may get the port"
            ),
        }
    });
    ListenerGuard {
        task: task.abort_handle(),
        stop,
    }
}

/// Keeps `socket` bound, not listening, until the task is aborted.
async fn hold(socket: TcpSocket) {
    let _keep = socket;
    std::future::pending::<()>().await
}

fn rebind(addr: std::net::SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_parses_and_has_consistent_length() {
        let packet = greeting_packet("8.0.36-cloudsim", 42);
        let len = u32::from_le_bytes([packet[0], packet[1], packet[2], 0]) as usize;
        assert_eq!(packet[3], 0, "sequence id");
        assert_eq!(len, packet.len() - 4);
        let payload = &packet[4..];
        assert_eq!(
            pool_manager::probe::parse_greeting(payload).unwrap(),
            "8.0.36-cloudsim"
        );
        // thread id follows the version's NUL
        let at = 1 + "8.0.36-cloudsim".len() + 1;
        assert_eq!(&payload[at..at + 4], &42u32.to_le_bytes());
        assert!(payload.ends_with(b"caching_sha2_password\0"));
    }

    /// The connections a stopped mysqld closed first leave TIME_WAIT on its
    /// port, which must not keep the port from being bound again.
    #[tokio::test]
    async fn a_stopped_listener_keeps_its_port_after_closing_connections_first() {
        let socket = reserve().unwrap();
        let addr = socket.local_addr().unwrap();
        let guard = spawn_listener(socket, Some(Instant::now()), "8.0.36".into());
        let mut login = (0x200u32 | 0x8000 | 0x8_0000).to_le_bytes().to_vec();
        login.extend_from_slice(&[0; 28]);
        login.extend_from_slice(b"someone\0\0caching_sha2_password\0");
        let login = packet(1, &login);
        for _ in 0..3 {
            let mut stream = loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => break stream,
                    Err(_) => tokio::task::yield_now().await,
                }
            };
            let (_, greeting) = read_packet(&mut stream).await.unwrap();
            assert_eq!(greeting[0], 10);
            stream.write_all(&login).await.unwrap();
            // The refusal, then the server's close, before this end's.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(&rest[4..7], &[0xff, 0x15, 0x04], "1045");
        }
        guard.stop();
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
        // Refused, so the listener is closed, and in the same step bound
        // again (the task goes on holding it) or given up (it ended).
        assert!(!guard.task.is_finished(), "the port was not bound again");
        let err = TcpSocket::new_v4().unwrap().bind(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_login_is_read_for_its_user_and_plugin() {
        let mut p = (0x200u32 | 0x8000 | 0x8_0000).to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        p.extend_from_slice(b"warmpool-probe\0\0mysql_native_password\0");
        assert_eq!(
            parse_login(1, &p),
            Some(Login {
                seq: 1,
                user: "warmpool-probe".into(),
                plugin: Some("mysql_native_password".into()),
            })
        );
        assert_eq!(parse_login(1, &p[..20]), None);
    }
}
