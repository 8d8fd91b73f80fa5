//! The simulated mysqld: a MySQL protocol-10 greeting and the per-server TCP
//! listener that sends it.
//!
//! The listener's port is reserved when the server is created (socket bound,
//! not listening) so `mysql_addr` is stable; connections are refused until
//! mysqld is ready, then every connection gets one greeting and is closed.
//! That is all warmpool's credential-less probe reads.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Stops the listener task when dropped (server deleted, cloud dropped).
#[derive(Debug)]
pub(crate) struct ListenerGuard(AbortHandle);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
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
    // The scramble need not be secret here: nobody authenticates.
    let scramble: Vec<u8> = (0..20u8)
        .map(|i| 0x21 + (thread_id as u8).wrapping_mul(7).wrapping_add(i * 3) % 0x5e)
        .collect();
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

/// Starts listening at `ready_at` (tokio time) and greets every connection.
/// With `ready_at == None` (mysqld never starts) the socket stays bound but
/// never listens, so the port keeps refusing and is not reused by another
/// server. Must be called within a tokio runtime.
pub(crate) fn spawn_listener(
    socket: TcpSocket,
    ready_at: Option<Instant>,
    version: String,
) -> ListenerGuard {
    let task = tokio::spawn(async move {
        let Some(ready_at) = ready_at else {
            let _keep = socket;
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep_until(ready_at).await;
        let listener = match socket.listen(128) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cloudsim: cannot listen for simulated mysqld: {e}");
                return;
            }
        };
        let mut thread_id: u32 = 0;
        loop {
            match listener.accept().await {
                Ok((mut stream, _)) => {
                    thread_id = thread_id.wrapping_add(1);
                    let packet = greeting_packet(&version, thread_id);
                    // One task per connection so a client that does not read
                    // cannot stall the accept loop.
                    tokio::spawn(async move {
                        let _ = stream.write_all(&packet).await;
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
    });
    ListenerGuard(task.abort_handle())
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
}
