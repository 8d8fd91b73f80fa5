//! gRPC over TLS: the `[tls]` section's PEM files, read and checked at
//! start so that a wrong path or a file of the wrong kind stops start-up
//! with its name rather than failing every handshake later; read again on
//! SIGHUP ([`TlsHandle::prepare`]) so that a renewed certificate is served
//! without a restart. warmpoold runs the handshakes itself ([`incoming`])
//! rather than through tonic's `tls_config`, whose settings are fixed for
//! the server's life.
//!
//! A certificate outside its validity window (expired, or not valid yet by
//! this host's clock) is refused like a file that does not load: served,
//! it would fail every client's handshake while warmpoold looked healthy.

use crate::config::TlsConfig;
use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A client that has not finished its handshake by then is dropped: an
/// open socket that never speaks must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings new connections are accepted with. Connections already
/// open keep the settings they were accepted with.
#[derive(Clone)]
pub struct TlsHandle {
    current: Arc<RwLock<Listening>>,
}

struct Listening {
    config: Arc<ServerConfig>,
    /// Clients must present a certificate (`client_ca_file`).
    mutual: bool,
}

/// [`TlsHandle::prepare`]'s refusal to drop mutual TLS.
#[derive(Debug, thiserror::Error)]
#[error("the file's [tls] has no client_ca_file while mutual TLS is in force, and a reload does not let clients in without a certificate (restart warmpoold for that)")]
pub struct WouldDropClientCertificates;

/// TLS settings [`TlsHandle::prepare`] read and checked; in force once
/// [`TlsHandle::apply`]'d.
#[must_use = "the settings are not in force until applied"]
pub struct PreparedTls(Listening);

impl std::fmt::Debug for PreparedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedTls").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandle").finish_non_exhaustive()
    }
}

impl TlsHandle {
    /// Reads and checks `[tls]`'s files; the error names the file at fault.
    pub fn load(tls: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            current: Arc::new(RwLock::new(Listening {
                config: server_config(tls)?,
                mutual: tls.client_ca_file.is_some(),
            })),
        })
    }

    /// Reads and checks `[tls]`'s files again (a renewed certificate, a
    /// new client CA), changing nothing: [`TlsHandle::apply`] puts them in
    /// force, so that a reload can check its other parts first. Files that
    /// do not load are refused; the error says why. Refuses to drop
    /// `client_ca_file` while it is in force: a file edited without it, or
    /// half written, would let anyone in where client certificates may be
    /// the API's only access control ([`WouldDropClientCertificates`]).
    pub fn prepare(&self, tls: &TlsConfig) -> anyhow::Result<PreparedTls> {
        let mutual = tls.client_ca_file.is_some();
        if !mutual && self.current().mutual {
            return Err(WouldDropClientCertificates.into());
        }
        let config = server_config(tls)?;
        Ok(PreparedTls(Listening { config, mutual }))
    }

    /// Puts settings [`TlsHandle::prepare`] read in force: connections
    /// accepted from now on use them.
    pub fn apply(&self, prepared: PreparedTls) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = prepared.0;
    }

    /// [`TlsHandle::prepare`], then [`TlsHandle::apply`].
    pub fn reload(&self, tls: &TlsConfig) -> anyhow::Result<()> {
        self.apply(self.prepare(tls)?);
        Ok(())
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Listening> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current().config))
    }
}

/// The connections of `listener` whose TLS handshake completes, each with
/// the settings in force when it was accepted ([`crate::listener`]: side by
/// side, until `stop`). A handshake that fails or takes longer than
/// [`HANDSHAKE_TIMEOUT`] is logged and dropped; one that completes starts
/// the time for the HTTP/2 preface ([`crate::listener::PrefaceDue`]).
pub fn incoming(
    listener: TcpListener,
    tls: TlsHandle,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<std::io::Result<crate::listener::PrefaceDue<TlsStream<TcpStream>>>> {
    crate::listener::incoming(listener, stop, move |socket, peer| {
        let handshake = tls.acceptor().accept(socket);
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
    })
}

/// The listener's TLS settings from `[tls]`: HTTP/2 only, and a client
/// certificate from `client_ca_file` when it is set.
fn server_config(tls: &TlsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = certificates("tls.cert_file", &tls.cert_file)?;
    let key_pem = read("tls.key_file", &tls.key_file)?;
    if is_encrypted_key(&key_pem) {
        anyhow::bail!(
            "tls.key_file {} is an encrypted private key; warmpoold needs it unencrypted \
             (`openssl pkey -in KEY -out PLAIN_KEY` decrypts it; keep the plain key readable \
             by warmpoold alone)",
            tls.key_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "tls.key_file {} holds no PEM private key: {}",
            tls.key_file.display(),
            pem_problem(&e)
        )
    })?;
    // Only the server's own certificate: clients build their path to a
    // root and may skip an expired certificate further down the chain (a
    // cross-signature kept for old clients), so refusing those would
    // refuse chains that work.
    check_validity(&tls.cert_file, &chain[0], SystemTime::now())?;
    let builder = ServerConfig::builder();
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.client_ca_file", path)? {
                roots
                    .add(ca)
                    .with_context(|| format!("tls.client_ca_file {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .with_context(|| format!("tls.client_ca_file {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| identity_refused(tls, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whether `pem` is an encrypted private key: PKCS#8's encrypted form, or
/// OpenSSL's older one (PKCS#1 or SEC1 with headers). rustls reads
/// neither, and would say only that it found no key, or that the headers
/// are not base64. (warmpoolctl tells its own key the same way.)
fn is_encrypted_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// Refuses `certificate` (`cert_file`'s first) outside its validity window
/// at `now`, naming the date, as every TLS client would refuse it. By the
/// wall clock, as clients check it: a clock gone wrong shows in the
/// message.
fn check_validity(
    cert_file: &Path,
    certificate: &CertificateDer<'_>,
    now: SystemTime,
) -> anyhow::Result<()> {
    let parsed = match x509_parser::parse_x509_certificate(certificate) {
        Ok((_, parsed)) => parsed,
        // rustls took it as the identity: refusing it for a reader's
        // limits would stop a daemon whose clients are served.
        Err(e) => {
            tracing::warn!(
                cert_file = %cert_file.display(),
                error = %e,
                "cannot read the certificate's dates (notBefore, notAfter); not checked"
            );
            return Ok(());
        }
    };
    let validity = parsed.validity();
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let cert = cert_file.display();
    let clock = rfc3339(now_secs);
    if now_secs > validity.not_after.timestamp() {
        anyhow::bail!(
            "tls.cert_file {cert}: the certificate expired at {} (its notAfter), and TLS \
             clients refuse an expired certificate: put a renewed certificate and its key in \
             place (this host's clock says {clock})",
            rfc3339(validity.not_after.timestamp())
        );
    }
    if now_secs < validity.not_before.timestamp() {
        anyhow::bail!(
            "tls.cert_file {cert}: the certificate is not valid until {} (its notBefore), and \
             TLS clients refuse it until then: check this host's clock (it says {clock}), or \
             put a certificate valid now in place",
            rfc3339(validity.not_before.timestamp())
        );
    }
    Ok(())
}

/// Seconds since the Unix epoch as RFC 3339 (`2002-01-01T00:00:00Z`),
/// or as a number of seconds outside the years 1970 to 9999.
fn rfc3339(seconds: i64) -> String {
    // humantime formats up to the end of 9999 only.
    const END_OF_9999: u64 = 253_402_300_799;
    match u64::try_from(seconds) {
        Ok(secs) if secs <= END_OF_9999 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        _ => format!("{seconds} s from 1970-01-01T00:00:00Z"),
    }
}

/// Why `cert_file` and `key_file` make no TLS identity, saying what to do.
fn identity_refused(tls: &TlsConfig, e: &tokio_rustls::rustls::Error) -> anyhow::Error {
    let cert = tls.cert_file.display();
    // webpki reads X.509 v3 only (`openssl x509 -req` without -extfile
    // issues v1); its error type is not re-exported, so it is told by name.
    if e.to_string().contains("UnsupportedCertVersion") {
        return anyhow::anyhow!(
            "tls: cert_file {cert} is an X.509 v1 certificate, which TLS here does not take: \
             re-issue it as v3 (with openssl, `openssl x509 -req ... -extfile FILE` naming a \
             subjectAltName in FILE)"
        );
    }
    anyhow::anyhow!(
        "tls: cert_file {cert} and key_file {} do not make a TLS identity (a key of another certificate?): {e}",
        tls.key_file.display()
    )
}

/// The PEM parser's error in words: its own message shows the markers as
/// byte arrays ("missing section end marker: [67, 69, 82, ...]").
fn pem_problem(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block is cut short: no '-----END {}-----' line (a file half written?)",
            text(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("a malformed PEM line: '{}'", text(line))
        }
        other => other.to_string(),
    }
}

fn read(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {key} {}", path.display()))
}

/// The file's certificates, if it holds PEM certificates and nothing
/// unreadable. rustls would skip what is not PEM and report only that
/// there is no certificate, without saying which file.
fn certificates(key: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{key} {}: {}", path.display(), pem_problem(&e)))?;
    if certificates.is_empty() {
        anyhow::bail!(
            "{key} {} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
            path.display()
        );
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_outside_the_years_humantime_formats_are_shown_in_seconds() {
        assert_eq!(rfc3339(1_009_843_200), "2002-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "-1 s from 1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_pem_file_cut_short_is_named_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.crt");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n").unwrap();
        let err = certificates("tls.cert_file", &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "cut.crt: a PEM block is cut short: no '-----END CERTIFICATE-----' line (a file half written?)"
            ),
            "{err}"
        );
    }
}
