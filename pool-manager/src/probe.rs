//! Readiness of mysqld without credentials: connect, read the MySQL
//! protocol-10 greeting, then finish the handshake as a user no image has
//! ([`PROBE_USER`], no password). A server whose mysqld does not greet
//! stays out of the pool.
//!
//! The handshake is finished, not dropped after the greeting, because
//! mysqld counts a client that hangs up before authenticating as a
//! connection error of its host, and after `max_connect_errors` of them
//! (100 by default; one probe a reconcile pass) refuses that host with
//! error 1129 until `FLUSH HOSTS`: warmpoold's address, on every pool
//! server. A refused login (1045, access denied) is no such error. mysqld
//! still logs one line per probe (MariaDB: `Access denied for user
//! 'warmpool-probe'@...`, a warning at the default `log_warnings = 2`);
//! README ("Running against OpenStack") says what an image can do about it.

use async_trait::async_trait;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The user the probe logs in as, with no password: one no image should
/// have, so mysqld refuses it (1045). An image that has it without a
/// password (and no privileges) lets the probe in: it then quits cleanly.
pub const PROBE_USER: &str = "warmpool-probe";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// The TCP connect failed: refused (nothing listens: mysqld is not up),
    /// or another error of the connect itself.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The TCP connect got no answer within the timeout: something drops
    /// the packets, as a host without mysqld would refuse at once.
    #[error(
        "cannot connect to {addr}: TCP connect did not complete within {timeout:?}; a host \
         without mysqld would refuse at once, so a security group or firewall likely drops \
         mysql_port from warmpoold's address: the security groups of the servers' management \
         port (cloud.security_groups) must admit it"
    )]
    ConnectUnanswered { addr: SocketAddr, timeout: Duration },
    /// Connected, but mysqld said nothing more within the timeout.
    #[error(
        "connected to {addr}, but got no {waiting_for} within {timeout:?}: mysqld may \
         still be starting, or be stalled (e.g. resolving warmpoold's address in a DNS \
         that does not answer; manager.probe_timeout is how long a probe waits)"
    )]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        /// "greeting", or "answer to the probe's login".
        waiting_for: &'static str,
    },
    #[error("{addr} answered, but not as a ready mysqld: {reason}")]
    NotMysql { addr: SocketAddr, reason: String },
}

impl ProbeError {
    /// As shown for a server still booting, within its boot timeout. Nova
    /// reports ACTIVE before the guest has brought its network up, and a
    /// fabric that answers ARP for the port (OVN, ML2/OVS's l2pop) lets
    /// the connect go unanswered meanwhile: no sign of a firewall yet.
    pub fn while_booting(&self) -> String {
        match self {
            Self::ConnectUnanswered { addr, timeout } => format!(
                "cannot connect to {addr}: TCP connect did not complete within {timeout:?}: \
                 the guest is still booting (its network not up yet), or a security \
                 group/firewall drops mysql_port from warmpoold's address"
            ),
            other => other.to_string(),
        }
    }
}

/// Tells whether mysqld at an address is up.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    /// Returns the server version string on success.
    async fn probe(&self, addr: SocketAddr) -> Result<String, ProbeError>;
}

/// How long a probe waits, connect, greeting and login together
/// (`manager.probe_timeout`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The real probe: TCP connect, the greeting, a login mysqld refuses.
#[derive(Clone, Debug)]
pub struct MysqlGreetingProbe {
    /// Bound on the whole probe; the connect, the greeting and the answer
    /// to the login each fail with their own error when it runs out.
    pub timeout: Duration,
}

impl Default for MysqlGreetingProbe {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }
}

/// The largest greeting we accept; real ones are under 200 bytes.
const MAX_GREETING: usize = 1024;
/// The largest answer to the login we read; real ones (an error, an auth
/// switch request) are under 200 bytes.
const MAX_REPLY: usize = 16 * 1024;
/// Auth switch requests answered before taking mysqld's word as given: one
/// is usual (MySQL 8 switches an unknown user to caching_sha2_password).
const MAX_AUTH_SWITCHES: usize = 2;

// Capability flags (MySQL's CLIENT_*).
const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
/// utf8_general_ci, which every server since 4.1 knows.
const CHARSET_UTF8: u8 = 33;
const AUTH_PLUGIN: &[u8] = b"mysql_native_password";
/// "Too many connections": mysqld is up but serves no one more, so the
/// instance is not ready, whenever it comes.
const TOO_MANY_CONNECTIONS: u16 = 1040;
const ACCESS_DENIED: u16 = 1045;

#[async_trait]
impl Probe for MysqlGreetingProbe {
    async fn probe(&self, addr: SocketAddr) -> Result<String, ProbeError> {
        self.probe_with(addr, tokio::net::TcpStream::connect(addr))
            .await
    }
}

impl MysqlGreetingProbe {
    /// The probe over the stream `connect` opens (a test's in-memory pipe,
    /// or a connect that never completes, stand in for TCP).
    async fn probe_with<S, C>(&self, addr: SocketAddr, connect: C) -> Result<String, ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        C: Future<Output = std::io::Result<S>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout = self.timeout;
        // Timed apart from the rest: a connect nobody answers is a
        // firewall's doing (a host without mysqld refuses at once), where
        // a missing greeting is mysqld's.
        let mut stream = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(ProbeError::Connect {
                    addr,
                    reason: e.to_string(),
                })
            }
            Err(_) => return Err(ProbeError::ConnectUnanswered { addr, timeout }),
        };
        let timed_out = |waiting_for| ProbeError::Timeout {
            addr,
            timeout,
            waiting_for,
        };
        let not_mysql = |reason: String| ProbeError::NotMysql { addr, reason };
        let (seq, payload) =
            tokio::time::timeout_at(deadline, read_packet(&mut stream, MAX_GREETING))
                .await
                .map_err(|_| timed_out("greeting"))?
                .map_err(|e| not_mysql(format!("reading the greeting: {e}")))?;
        let (version, capabilities) = match parse_hello(&payload).map_err(not_mysql)? {
            // mysqld closes the connection after such an error, and counts it
            // as no connection error of ours.
            Hello::HostRefused(text) => return Ok(text),
            Hello::Greeting {
                version,
                capabilities,
            } => (version, capabilities),
        };
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            // A pre-4.1 server (or a greeting cut short of its flags): no
            // HandshakeResponse41 to send it.
            return Ok(version);
        }
        tokio::time::timeout_at(deadline, log_in(&mut stream, addr, seq, capabilities))
            .await
            .map_err(|_| timed_out("answer to the probe's login"))?
            .map_err(|e| not_mysql(format!("greeted with {version:?}, then {e}")))?;
        Ok(version)
    }
}

/// When each unexpected error code answering the login was last warned
/// about. Keyed by the code alone: an image answering every login with the
/// same code (say 3159, `require_secure_transport`) would otherwise warn
/// once per new server address, and Neutron reuses addresses, so a code
/// seen at a reused address would never be warned of again. At most one
/// entry per code.
static WARNED: std::sync::Mutex<std::collections::BTreeMap<u16, tokio::time::Instant>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// How often an unexpected login error code is warned about while it lasts.
const WARN_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the login's answer `code` is to be warned about now: the first
/// time, then at most once per [`WARN_AGAIN_AFTER`].
fn due_warning(code: u16) -> bool {
    let now = tokio::time::Instant::now();
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    match warned.get(&code) {
        Some(last) if now.saturating_duration_since(*last) < WARN_AGAIN_AFTER => false,
        _ => {
            warned.insert(code, now);
            true
        }
    }
}

/// Sends the login of [`PROBE_USER`] and reads mysqld's answers until one
/// settles it. Any well-formed answer means mysqld is up, but 1040.
async fn log_in<S>(
    stream: &mut S,
    addr: SocketAddr,
    greeting_seq: u8,
    capabilities: u32,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut seq = greeting_seq.wrapping_add(1);
    write_packet(stream, seq, &handshake_response(capabilities))
        .await
        .map_err(|e| format!("sending the login failed: {e}"))?;
    let mut switches = 0;
    loop {
        let (reply_seq, reply) = read_packet(stream, MAX_REPLY)
            .await
            .map_err(|e| format!("no answer to the login: {e}"))?;
        match reply.first() {
            Some(0xff) => {
                let (code, message) = error_packet(&reply)?;
                if code == TOO_MANY_CONNECTIONS {
                    return Err(format!("error packet {code}: {message}"));
                }
                // Up all the same, but some such errors (1043, "Bad
                // handshake") mysqld counts against warmpoold's address,
                // as it did the hang-ups the login replaced: visible, once
                // an hour per code (`due_warning`).
                if code != ACCESS_DENIED && due_warning(code) {
                    tracing::warn!(%addr, code, reason = %message, "mysqld answered the probe's login with an error other than 1045 (access denied): counted as up, but if mysqld counts it as a connection error of warmpoold's address (1043, bad handshake, is one) it blocks that address (1129) after max_connect_errors probes; see mysqld's error log, and report it to warmpool's developers with mysqld's version (warned once an hour per code)");
                }
                return Ok(());
            }
            Some(0x00) => {
                // The image lets PROBE_USER in without a password: say
                // goodbye (COM_QUIT), or mysqld logs an aborted connection.
                let _ = write_packet(stream, 0, &[0x01]).await;
                return Ok(());
            }
            // An auth switch request: the same empty password, for the
            // plugin mysqld asks for.
            Some(0xfe) if switches < MAX_AUTH_SWITCHES => {
                switches += 1;
                seq = reply_seq.wrapping_add(1);
                write_packet(stream, seq, &[])
                    .await
                    .map_err(|e| format!("answering an auth switch request failed: {e}"))?;
            }
            _ => return Ok(()),
        }
    }
}

/// HandshakeResponse41 of [`PROBE_USER`] with empty auth data.
fn handshake_response(server_capabilities: u32) -> Vec<u8> {
    let mut capabilities = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
    if server_capabilities & CLIENT_PLUGIN_AUTH != 0 {
        capabilities |= CLIENT_PLUGIN_AUTH;
    }
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&capabilities.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes()); // max packet size
    p.push(CHARSET_UTF8);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(PROBE_USER.as_bytes());
    p.push(0);
    p.push(0); // auth data: none
    if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        p.extend_from_slice(AUTH_PLUGIN);
        p.push(0);
    }
    p
}

/// One packet: its sequence id and payload.
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<(u8, Vec<u8>), String> {
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading packet header: {e}"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len == 0 || len > max {
        return Err(format!("packet length {len}"));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading a {len}-byte packet: {e}"))?;
    Ok((header[3], payload))
}

async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len() as u32;
    let mut packet = Vec::with_capacity(4 + payload.len());
    packet.extend_from_slice(&len.to_le_bytes()[..3]);
    packet.push(seq);
    packet.extend_from_slice(payload);
    stream.write_all(&packet).await?;
    stream.flush().await
}

/// MySQL errors a running mysqld sends *instead of* the greeting because of
/// who is connecting, not because it is unwell: 1129 "Host is blocked because
/// of many connection errors" (clients of that host hung up before logging
/// in) and 1130 "Host is not allowed to connect" (the image has no account
/// matching the prober's host). Either way mysqld is up and serving its own
/// clients, so the instance is ready.
const HOST_REFUSALS: [u16; 2] = [1129, 1130];

enum Hello {
    Greeting {
        version: String,
        capabilities: u32,
    },
    /// What to report as the version: mysqld refused this host.
    HostRefused(String),
}

/// An error packet's code and message (without the SQL state, which only
/// errors after the greeting carry).
fn error_packet(payload: &[u8]) -> Result<(u16, String), String> {
    let code = match payload.get(1..3) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => return Err("truncated error packet".into()),
    };
    let rest = payload.get(3..).unwrap_or_default();
    let rest = match rest.strip_prefix(b"#") {
        Some(after) => after.get(5..).unwrap_or_default(),
        None => rest,
    };
    Ok((code, String::from_utf8_lossy(rest).into_owned()))
}

fn parse_hello(payload: &[u8]) -> Result<Hello, String> {
    match payload.first() {
        Some(10) => {}
        Some(0xff) => {
            let (code, message) = error_packet(payload)?;
            if HOST_REFUSALS.contains(&code) {
                return Ok(Hello::HostRefused(format!(
                    "unknown version (mysqld refused this host: {code} {message})"
                )));
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
    let version =
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "server version is not UTF-8")?;
    // After the version: thread id (4), scramble (8), filler (1), then the
    // flags' lower half; character set (1) and status (2) before the upper.
    let at = 1 + end + 1 + 4 + 8 + 1;
    let half = |at: usize| {
        payload
            .get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u32)
    };
    let capabilities = half(at) | half(at + 2 + 1 + 2) << 16;
    Ok(Hello::Greeting {
        version,
        capabilities,
    })
}

/// Parses a handshake payload: protocol version 10, then a NUL-terminated
/// server version. An error packet (0xff) means mysqld refuses us: not ready
/// (e.g. 1040 too many connections), except for the host refusals above.
pub fn parse_greeting(payload: &[u8]) -> Result<String, String> {
    Ok(match parse_hello(payload)? {
        Hello::Greeting { version, .. } => version,
        Hello::HostRefused(text) => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use warmpool_test_support::Logs;

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
        err.extend_from_slice(b"Too many connections");
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

    /// A MySQL 8.0 greeting (sequence 0), as cloudsim sends it.
    fn greeting(version: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(version.as_bytes());
        p.push(0);
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xffffu16.to_le_bytes());
        p.push(0xff);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0xdfffu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0caching_sha2_password\0");
        packet(0, &p)
    }

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        packet.push(seq);
        packet.extend_from_slice(payload);
        packet
    }

    fn error(seq: u8, code: u16, state: &str, message: &str) -> Vec<u8> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(message.as_bytes());
        packet(seq, &p)
    }

    /// A packet the client sent, empty ones too (an empty password).
    async fn client_packet(server: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 4];
        server.read_exact(&mut header).await.ok()?;
        let mut payload =
            vec![0; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        server.read_exact(&mut payload).await.ok()?;
        Some((header[3], payload))
    }

    /// What the server end of the pipe received: packets, as (seq, payload).
    async fn packets(server: &mut DuplexStream) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(p) = client_packet(server).await {
            got.push(p);
        }
        got
    }

    /// Runs the probe against a scripted server that sends `script[0]`,
    /// then after each packet it receives the next entry; returns the
    /// verdict and what the server received.
    async fn probe_scripted(
        script: Vec<Vec<u8>>,
    ) -> (Result<String, ProbeError>, Vec<(u8, Vec<u8>)>) {
        probe_scripted_at("10.0.0.5:3306".parse().unwrap(), script).await
    }

    /// [`probe_scripted`] of a server at `addr`.
    async fn probe_scripted_at(
        addr: SocketAddr,
        script: Vec<Vec<u8>>,
    ) -> (Result<String, ProbeError>, Vec<(u8, Vec<u8>)>) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            for answer in script {
                server.write_all(&answer).await.unwrap();
                match client_packet(&mut server).await {
                    Some(p) => got.push(p),
                    None => return got,
                }
            }
            // mysqld closes after its last word; what the client still
            // sends (COM_QUIT) is read first.
            server.shutdown().await.unwrap();
            got.extend(packets(&mut server).await);
            got
        });
        let verdict = MysqlGreetingProbe::default()
            .probe_with(addr, async { Ok(client) })
            .await;
        (verdict, server.await.unwrap())
    }

    /// The probe's login: a HandshakeResponse41 of PROBE_USER with no auth data.
    fn assert_login(seq: u8, payload: &[u8]) {
        assert_eq!(seq, 1, "the answer to greeting 0");
        let caps = u32::from_le_bytes(payload[..4].try_into().unwrap());
        assert_ne!(caps & CLIENT_PROTOCOL_41, 0);
        assert_ne!(caps & CLIENT_SECURE_CONNECTION, 0);
        let user = &payload[32..];
        let end = user.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&user[..end], PROBE_USER.as_bytes());
        assert_eq!(user[end + 1], 0, "auth data length");
        assert_eq!(&user[end + 2..], b"mysql_native_password\0");
    }

    /// A security group that drops packets to mysql_port leaves the TCP
    /// connect unanswered (a stopped mysqld's refusal comes at once): the
    /// probe's error says so, rather than blaming mysqld's greeting.
    #[tokio::test(start_paused = true)]
    async fn a_connect_that_never_completes_is_a_connect_failure_naming_the_firewall() {
        let addr: SocketAddr = "10.0.0.5:3306".parse().unwrap();
        let probe = MysqlGreetingProbe {
            timeout: Duration::from_secs(7),
        };
        let err = probe
            .probe_with(
                addr,
                std::future::pending::<std::io::Result<DuplexStream>>(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ProbeError::ConnectUnanswered {
                addr,
                timeout: Duration::from_secs(7)
            }
        );
        let shown = err.to_string();
        assert!(shown.contains("did not complete within 7s"), "{shown}");
        assert!(shown.contains("security group"), "{shown}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connect_is_a_connect_failure() {
        let addr: SocketAddr = "10.0.0.5:3306".parse().unwrap();
        let err = MysqlGreetingProbe::default()
            .probe_with(addr, async {
                Err::<DuplexStream, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    /// Connected, then nothing: mysqld is starting, or stalled (e.g. on a
    /// reverse-DNS lookup of warmpoold's address), not a firewall.
    #[tokio::test(start_paused = true)]
    async fn a_connection_without_greeting_is_a_timeout() {
        let addr: SocketAddr = "10.0.0.5:3306".parse().unwrap();
        let (client, _server) = tokio::io::duplex(1024);
        let err = MysqlGreetingProbe::default()
            .probe_with(addr, async { Ok(client) })
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("no greeting"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_greeting_without_answer_to_the_login_is_a_timeout() {
        let addr: SocketAddr = "10.0.0.5:3306".parse().unwrap();
        let (client, mut server) = tokio::io::duplex(1024);
        server.write_all(&greeting("8.0.36")).await.unwrap();
        let err = MysqlGreetingProbe::default()
            .probe_with(addr, async { Ok(client) })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProbeError::Timeout { waiting_for, .. } if waiting_for.contains("login")),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_logs_in_and_an_access_denied_means_up() {
        let (verdict, got) = probe_scripted(vec![
            greeting("8.0.36"),
            error(
                2,
                1045,
                "28000",
                "Access denied for user 'warmpool-probe'@'10.0.0.1' (using password: NO)",
            ),
        ])
        .await;
        assert_eq!(verdict.unwrap(), "8.0.36");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_login(got[0].0, &got[0].1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_auth_switch_is_answered_with_an_empty_password() {
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"caching_sha2_password\0abcdefghijklmnopqrst\0");
        let (verdict, got) = probe_scripted(vec![
            greeting("8.0.36"),
            packet(2, &switch),
            error(4, 1045, "28000", "Access denied"),
        ])
        .await;
        assert_eq!(verdict.unwrap(), "8.0.36");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_login(got[0].0, &got[0].1);
        assert_eq!(got[1], (3, vec![]), "empty auth data, next sequence id");
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_let_in_says_goodbye() {
        let (verdict, got) =
            probe_scripted(vec![greeting("8.0.36"), packet(2, &[0, 0, 0, 2, 0, 0, 0])]).await;
        assert_eq!(verdict.unwrap(), "8.0.36");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], (0, vec![0x01]), "COM_QUIT");
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_connections_after_the_login_is_not_ready() {
        let (verdict, _) = probe_scripted(vec![
            greeting("8.0.36"),
            error(2, 1040, "08004", "Too many connections"),
        ])
        .await;
        let err = verdict.unwrap_err();
        assert!(matches!(err, ProbeError::NotMysql { .. }), "{err:?}");
        assert!(
            err.to_string().contains("1040: Too many connections"),
            "{err}"
        );
    }

    /// An error other than 1045 (and 1040) answering the login still means
    /// mysqld is up, but may be one mysqld counts against the host (1043
    /// "Bad handshake": a login it could not parse), which would bring
    /// back the 1129 block the login exists to avoid: it is logged at
    /// WARN once an hour per code (not per address: Neutron reuses them),
    /// not once per reconcile pass.
    #[tokio::test(start_paused = true)]
    async fn an_unexpected_login_error_is_up_and_warned_once_an_hour_per_code() {
        let logs = Logs::capture_at(tracing::Level::DEBUG);
        let first: SocketAddr = "10.0.9.1:3306".parse().unwrap();
        let second: SocketAddr = "10.0.9.2:3306".parse().unwrap();
        let bad_handshake = || vec![greeting("8.0.36"), error(2, 1043, "08S01", "Bad handshake")];
        for addr in [first, first, second, first] {
            let (verdict, _) = probe_scripted_at(addr, bad_handshake()).await;
            assert_eq!(verdict.unwrap(), "8.0.36");
        }
        let (verdict, _) = probe_scripted_at(
            second,
            vec![greeting("8.0.36"), error(2, 1044, "42000", "Access denied")],
        )
        .await;
        assert_eq!(verdict.unwrap(), "8.0.36");
        let (verdict, _) = probe_scripted_at(
            first,
            vec![greeting("8.0.36"), error(2, 1045, "28000", "Access denied")],
        )
        .await;
        assert_eq!(verdict.unwrap(), "8.0.36");
        // Still answered so an hour on: warned again.
        tokio::time::advance(WARN_AGAIN_AFTER).await;
        let (verdict, _) = probe_scripted_at(second, bad_handshake()).await;
        assert_eq!(verdict.unwrap(), "8.0.36");

        let warnings = logs.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        for (line, (addr, code)) in
            warnings
                .iter()
                .zip([(first, "1043"), (second, "1044"), (second, "1043")])
        {
            assert!(
                line.contains(&addr.to_string()) && line.contains(code),
                "{line}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_greeting_then_silence_on_close_is_not_mysql() {
        let (verdict, _) = probe_scripted(vec![greeting("8.0.36")]).await;
        let err = verdict.unwrap_err();
        assert!(matches!(err, ProbeError::NotMysql { .. }), "{err:?}");
        assert!(err.to_string().contains("no answer to the login"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_refusal_is_up_and_gets_no_login() {
        let (verdict, got) = probe_scripted(vec![error(
            0,
            1130,
            "HY000",
            "Host '10.0.0.1' is not allowed to connect",
        )])
        .await;
        assert!(verdict.unwrap().contains("refused this host: 1130"));
        assert!(got.is_empty(), "{got:?}");
    }
}
