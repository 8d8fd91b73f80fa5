//! Readiness of mysqld without credentials: connect and read the MySQL
//! protocol-10 greeting. A server whose mysqld does not greet stays out of the pool.

use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("no greeting from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} answered, but not with a MySQL greeting: {reason}")]
    NotMysql { addr: SocketAddr, reason: String },
}

/// Tells whether mysqld at an address is up.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    /// Returns the server version string on success.
    async fn probe(&self, addr: SocketAddr) -> Result<String, ProbeError>;
}

/// The real probe: TCP connect, then one greeting packet.
#[derive(Clone, Debug)]
pub struct MysqlGreetingProbe {
    pub timeout: Duration,
}

impl Default for MysqlGreetingProbe {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
        }
    }
}

/// The largest greeting we accept; real ones are under 200 bytes.
const MAX_GREETING: usize = 1024;

#[async_trait]
impl Probe for MysqlGreetingProbe {
    async fn probe(&self, addr: SocketAddr) -> Result<String, ProbeError> {
        match tokio::time::timeout(self.timeout, read_greeting(addr)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout {
                addr,
                timeout: self.timeout,
            }),
        }
    }
}

async fn read_greeting(addr: SocketAddr) -> Result<String, ProbeError> {
    let mut stream =
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ProbeError::Connect {
                addr,
                reason: e.to_string(),
            })?;
    let not_mysql = |reason: String| ProbeError::NotMysql { addr, reason };
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| not_mysql(format!("reading packet header: {e}")))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len == 0 || len > MAX_GREETING {
        return Err(not_mysql(format!("greeting length {len}")));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| not_mysql(format!("reading greeting: {e}")))?;
    parse_greeting(&payload).map_err(not_mysql)
}

/// MySQL errors a running mysqld sends *instead of* the greeting because of
/// who is connecting, not because it is unwell: 1129 "Host is blocked because
/// of many connection errors" (a greeting-only probe that never completes a
/// handshake counts as one such error) and 1130 "Host is not allowed to
/// connect" (the image has no account matching the prober's host). Either
/// way mysqld is up and serving its own clients, so the instance is ready.
const HOST_REFUSALS: [u16; 2] = [1129, 1130];

/// Parses a handshake payload: protocol version 10, then a NUL-terminated
/// server version. An error packet (0xff) means mysqld refuses us: not ready
/// (e.g. 1040 too many connections), except for the host refusals above.
pub fn parse_greeting(payload: &[u8]) -> Result<String, String> {
    match payload.first() {
        Some(10) => {}
        Some(0xff) => {
            let code = match payload.get(1..3) {
                Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
                _ => return Err("truncated error packet".into()),
            };
            let message = String::from_utf8_lossy(payload.get(3..).unwrap_or_default());
            let message = message.trim_start_matches('#');
            if HOST_REFUSALS.contains(&code) {
                return Ok(format!(
                    "unknown version (mysqld refused this host: {code} {message})"
                ));
            }
            return Err(format!("error packet {code}: {message}"));
        }
        Some(other) => return Err(format!("protocol version {other}, expected 10")),
        None => return Err("empty greeting".into()),
    }
    let rest = &payload[1..];
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or("server version is not NUL-terminated")?;
    String::from_utf8(rest[..end].to_vec()).map_err(|_| "server version is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_10_greeting() {
        let mut payload = vec![10];
        payload.extend_from_slice(b"10.11.6-MariaDB\0");
        payload.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(parse_greeting(&payload).unwrap(), "10.11.6-MariaDB");
    }

    #[test]
    fn rejects_other_protocols_and_error_packets() {
        assert!(parse_greeting(&[9, b'x', 0])
            .unwrap_err()
            .contains("protocol version 9"));
        let mut err = vec![0xff, 0x10, 0x04];
        err.extend_from_slice(b"#08004Too many connections");
        assert!(parse_greeting(&err)
            .unwrap_err()
            .contains("Too many connections"));
        assert!(parse_greeting(&[0xff, 0x10]).is_err());
        assert!(parse_greeting(&[10, b'a']).is_err());
        assert!(parse_greeting(&[]).is_err());
    }

    #[test]
    fn host_refusals_mean_mysqld_is_up() {
        for (code, text) in [
            (
                1130u16,
                "Host '10.0.0.5' is not allowed to connect to this MariaDB server",
            ),
            (
                1129,
                "Host '10.0.0.5' is blocked because of many connection errors",
            ),
        ] {
            let mut packet = vec![0xff];
            packet.extend_from_slice(&code.to_le_bytes());
            packet.extend_from_slice(text.as_bytes());
            let up = parse_greeting(&packet).unwrap();
            assert!(
                up.contains(&code.to_string()) && up.contains("refused"),
                "{up}"
            );
        }
    }
}
