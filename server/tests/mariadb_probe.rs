//! `pool_manager::probe::MysqlGreetingProbe` against a real MariaDB, and
//! against things that are not a ready mysqld.
//!
//! The MariaDB is the one `scripts/test.sh` installs and starts on
//! 127.0.0.1:3306; `WARMPOOL_TEST_MARIADB_ADDR` points elsewhere. Without
//! it this test fails (it is not skipped): a probe never tried against a
//! real server proves nothing.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use pool_manager::probe::{MysqlGreetingProbe, Probe, ProbeError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ADDR_VAR: &str = "WARMPOOL_TEST_MARIADB_ADDR";
const DEFAULT_ADDR: &str = "127.0.0.1:3306";

fn mariadb_addr() -> SocketAddr {
    let configured = std::env::var(ADDR_VAR).unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    configured
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{ADDR_VAR}={configured:?} is not host:port: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{ADDR_VAR}={configured:?} resolves to nothing"))
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
    // Probing is repeatable: the probe only reads the greeting and hangs up,
    // which leaves the server as it was.
    for _ in 0..5 {
        assert_eq!(probe.probe(addr).await.unwrap(), version);
    }
}

#[tokio::test]
async fn closed_port_is_not_ready() {
    // A port that was just free: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = MysqlGreetingProbe::default()
        .probe(addr)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, ProbeError::Connect { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
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
