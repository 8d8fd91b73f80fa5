//! `pool_manager::probe::MysqlGreetingProbe` against a real MariaDB, and
//! against things that are not a ready mysqld.
//!
//! The MariaDB is the one `scripts/test.sh` installs and starts on
//! 127.0.0.1:3306; `WARMPOOL_TEST_MARIADB_ADDR` points elsewhere. Without
//! it this test fails (it is not skipped): a probe never tried against a
//! real server proves nothing.
//!
//! A second one, the host-cache MariaDB, listens on the machine's first
//! non-loopback IPv4 address (`WARMPOOL_TEST_MARIADB_HOSTCACHE_ADDR`, set by
//! `scripts/test.sh`) with `--max-connect-errors=5`: MariaDB counts
//! connection errors only of hosts other than 127.0.0.1, as it would those
//! of warmpoold's address on a pool server. The test flushes its host cache
//! with `mariadb-admin flush-hosts` over its socket
//! (`WARMPOOL_TEST_MARIADB_HOSTCACHE_SOCKET`, also set by the script).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use pool_manager::probe::{MysqlGreetingProbe, Probe, ProbeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ADDR_VAR: &str = "WARMPOOL_TEST_MARIADB_ADDR";
const DEFAULT_ADDR: &str = "127.0.0.1:3306";
const HOSTCACHE_VAR: &str = "WARMPOOL_TEST_MARIADB_HOSTCACHE_ADDR";
const HOSTCACHE_SOCKET_VAR: &str = "WARMPOOL_TEST_MARIADB_HOSTCACHE_SOCKET";
/// The host-cache MariaDB's `--max-connect-errors` (scripts/test.sh's
/// HOSTCACHE_MAX_CONNECT_ERRORS).
const MAX_CONNECT_ERRORS: usize = 5;

fn mariadb_addr() -> SocketAddr {
    let configured = std::env::var(ADDR_VAR).unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    configured
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{ADDR_VAR}={configured:?} is not host:port: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{ADDR_VAR}={configured:?} resolves to nothing"))
}

/// The machine's first non-loopback IPv4 address, as `hostname -I` lists
/// them (what scripts/test.sh binds the host-cache MariaDB to).
fn first_non_loopback_ipv4() -> Option<IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

fn hostcache_addr() -> SocketAddr {
    let Ok(configured) = std::env::var(HOSTCACHE_VAR) else {
        match first_non_loopback_ipv4() {
            None => panic!(
                "this machine has no non-loopback IPv4 address (`hostname -I` lists none), \
                 and MariaDB counts connection errors (and blocks a host after \
                 max_connect_errors of them) only for addresses other than 127.0.0.1: give \
                 the machine one (any interface but lo) and run `bash scripts/test.sh`"
            ),
            Some(ip) => panic!(
                "{HOSTCACHE_VAR} is not set: run `bash scripts/test.sh`, which starts a \
                 MariaDB on {ip} with --max-connect-errors={MAX_CONNECT_ERRORS} and sets it \
                 (or set it to such a MariaDB's host:port, not on a loopback address)"
            ),
        }
    };
    let addr: SocketAddr = configured
        .parse()
        .unwrap_or_else(|e| panic!("{HOSTCACHE_VAR}={configured:?} is not ip:port: {e}"));
    assert!(
        !addr.ip().is_loopback(),
        "{HOSTCACHE_VAR}={configured} is a loopback address, which MariaDB's host cache \
         exempts: use the machine's non-loopback address, as scripts/test.sh does"
    );
    addr
}

/// How long a connection to the host-cache MariaDB waits for its first
/// packet: mysqld resolves a new client's address before it greets, and a
/// resolver that does not answer holds it up for its own timeouts.
const HOSTCACHE_WAIT: Duration = Duration::from_secs(60);

/// Connects, reads what mysqld sends first, and hangs up without logging in
/// (what the greeting-only probe did). Returns the error code mysqld sent
/// instead of a greeting, if it did.
async fn connect_and_hang_up(addr: SocketAddr) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the host-cache MariaDB at {addr}: {e}"));
    let mut header = [0u8; 4];
    tokio::time::timeout(HOSTCACHE_WAIT, stream.read_exact(&mut header))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{addr} sent nothing within {HOSTCACHE_WAIT:?}: is its reverse DNS lookup of \
                 this machine's address hanging?"
            )
        })
        .unwrap_or_else(|e| panic!("{addr} closed before its first packet: {e}"));
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .unwrap_or_else(|e| panic!("reading {addr}'s first packet: {e}"));
    // Hang up, and wait for mysqld to close its side: it counts the
    // hang-up (or not) before it closes, so the next connection sees it.
    stream
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("hanging up on {addr}: {e}"));
    tokio::time::timeout(HOSTCACHE_WAIT, stream.read_to_end(&mut Vec::new()))
        .await
        .unwrap_or_else(|_| {
            panic!("{addr} kept the connection open {HOSTCACHE_WAIT:?} after the hang-up")
        })
        .ok();
    match payload[..] {
        [0xff, lo, hi, ..] => Some(u16::from_le_bytes([lo, hi])),
        _ => None,
    }
}

/// `FLUSH HOSTS` on the host-cache MariaDB, over its socket.
fn flush_hosts() {
    let socket = std::env::var(HOSTCACHE_SOCKET_VAR).unwrap_or_else(|_| {
        panic!(
            "{HOSTCACHE_SOCKET_VAR} is not set: run `bash scripts/test.sh`, which sets it to \
             the host-cache MariaDB's socket (or set it to the socket of the MariaDB \
             {HOSTCACHE_VAR} names)"
        )
    });
    let mut failures = Vec::new();
    for admin in ["mariadb-admin", "mysqladmin"] {
        match std::process::Command::new(admin)
            .args([
                "--no-defaults",
                &format!("--socket={socket}"),
                "flush-hosts",
            ])
            .output()
        {
            Ok(out) if out.status.success() => return,
            Ok(out) => failures.push(format!(
                "{admin}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failures.push(format!("{admin}: {e}")),
        }
    }
    panic!(
        "cannot flush the host cache of the MariaDB at {socket} ({HOSTCACHE_SOCKET_VAR}): \
         {failures:?}; the test runs `mariadb-admin flush-hosts` as this OS user, whose \
         account scripts/test.sh's MariaDB has (mariadb-install-db makes it)"
    );
}

/// mysqld counts a client that hangs up without finishing the handshake as
/// a connection error of its host, and after max_connect_errors of them
/// refuses that host (error 1129) until `FLUSH HOSTS`: a probe that did so
/// would get warmpoold's address blocked on every pool server after that
/// many reconcile passes. The probe finishes the handshake instead.
///
/// First it is shown that this MariaDB does block this machine's address
/// after so many hang-ups: it counts errors only of hosts whose name
/// lookup succeeded, and without that this test would pass whatever the
/// probe did.
#[tokio::test]
async fn probing_more_than_max_connect_errors_times_from_a_real_host_keeps_it_greeted() {
    let addr = hostcache_addr();
    let mut hang_ups = 0;
    let blocked = loop {
        match connect_and_hang_up(addr).await {
            Some(1129) => break true,
            _ if hang_ups > MAX_CONNECT_ERRORS => break false,
            _ => hang_ups += 1,
        }
    };
    assert!(
        blocked,
        "{addr} still greets this machine after {hang_ups} connections that hung up before \
         logging in (its max_connect_errors is {MAX_CONNECT_ERRORS}): its host cache does not \
         count this address's connection errors (e.g. the reverse DNS lookup of {} fails \
         transiently, so the host never passes validation; or skip_name_resolve is set), and \
         this test would prove nothing; give the address a name that resolves (e.g. in \
         /etc/hosts) and run `bash scripts/test.sh` again",
        addr.ip()
    );
    flush_hosts();

    let probe = MysqlGreetingProbe {
        timeout: HOSTCACHE_WAIT,
    };
    let first = probe.probe(addr).await.unwrap_or_else(|e| {
        panic!(
            "no MariaDB greeting at {addr} ({HOSTCACHE_VAR}) after FLUSH HOSTS: {e}\n\
             Run `bash scripts/test.sh`, which starts one there."
        )
    });
    assert!(
        first.contains("MariaDB") && !first.contains("refused"),
        "{addr} answered {first:?}, not a MariaDB greeting, right after FLUSH HOSTS"
    );
    for n in 2..=3 * MAX_CONNECT_ERRORS {
        let version = probe.probe(addr).await;
        assert_eq!(
            version.as_deref(),
            Ok(first.as_str()),
            "probe {n} of {addr} (max_connect_errors {MAX_CONNECT_ERRORS}): mysqld counted \
             the earlier probes as connection errors"
        );
    }
}

#[tokio::test]
async fn probe_reads_the_greeting_of_a_real_mariadb() {
    let addr = mariadb_addr();
    let probe = MysqlGreetingProbe::default();
    let version = match probe.probe(addr).await {
        Ok(version) => version,
        Err(e) => panic!(
            "no MariaDB greeting at {addr}: {e}\n\
             This test needs a real MariaDB: run `bash scripts/test.sh`, which installs \
             and starts one on {DEFAULT_ADDR} (or set {ADDR_VAR} to a running one)."
        ),
    };
    assert!(
        version.contains("MariaDB"),
        "{addr} greeted with version {version:?}, which is not MariaDB"
    );
    // Probing is repeatable: mysqld refuses the probe's login and is none
    // the worse for it.
    for _ in 0..5 {
        assert_eq!(probe.probe(addr).await.unwrap(), version);
    }
}

#[tokio::test]
async fn closed_port_is_not_ready() {
    // A port bound but not listened on: connections to it are refused, and
    // no other process can take it meanwhile (as it could a port bound,
    // then released).
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = closed.local_addr().unwrap();
    let err = MysqlGreetingProbe::default()
        .probe(addr)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, ProbeError::Connect { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    drop(closed);
}

/// A TCP server that answers every connection with `reply` and hangs up.
async fn serve_once_per_connection(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_server_is_not_mysql() {
    let addr = serve_once_per_connection(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let err = MysqlGreetingProbe::default()
        .probe(addr)
        .await
        .expect_err("an HTTP server is not mysqld");
    assert!(matches!(err, ProbeError::NotMysql { .. }), "{err:?}");
}

#[tokio::test]
async fn error_packet_and_other_protocols_are_not_ready() {
    // What mysqld sends instead of a greeting when it is out of connections.
    let mut too_many = vec![0u8; 4];
    too_many.extend_from_slice(&[0xff, 0x10, 0x04]);
    too_many.extend_from_slice(b"#08004Too many connections");
    let len = (too_many.len() - 4) as u32;
    too_many[..3].copy_from_slice(&len.to_le_bytes()[..3]);
    let too_many: &'static [u8] = too_many.leak();
    let addr = serve_once_per_connection(too_many).await;
    let err = MysqlGreetingProbe::default().probe(addr).await.unwrap_err();
    assert!(matches!(err, ProbeError::NotMysql { .. }), "{err:?}");
    assert!(err.to_string().contains("Too many connections"), "{err}");

    // A server that closes without a word.
    let addr = serve_once_per_connection(b"").await;
    let err = MysqlGreetingProbe::default().probe(addr).await.unwrap_err();
    assert!(matches!(err, ProbeError::NotMysql { .. }), "{err:?}");

    // Protocol version 9 (pre-4.1 servers).
    let addr = serve_once_per_connection(b"\x08\x00\x00\x00\x093.23.5\x00").await;
    let err = MysqlGreetingProbe::default().probe(addr).await.unwrap_err();
    assert!(err.to_string().contains("protocol version 9"), "{err}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold connections open without sending anything.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let probe = MysqlGreetingProbe {
        timeout: Duration::from_millis(200),
    };
    let err = probe.probe(addr).await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
    holder.abort();
}
