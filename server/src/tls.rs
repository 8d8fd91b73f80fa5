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
//! One that expires while served is watched for ([`watch_expiry`]): warned
//! of in the fortnight before, an error once expired, and exported as
//! `warmpool_tls_certificate_expiry_timestamp_seconds`.

use crate::config::TlsConfig;
use crate::metrics::Metrics;
use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A client that has not finished its handshake by then is dropped: an
/// open socket that never speaks must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`watch_expiry`] compares the served certificate's notAfter
/// with the clock (and at its notAfter, so that the error comes on time).
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// How long before its notAfter a certificate is warned of: time for a
/// renewal that needs a person (a CA's request, a change window).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// How often [`watch_expiry`] repeats its warning or error about one
/// certificate: a line a day is seen, and does not flood the log.
pub const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(86_400);

/// The TLS settings new connections are accepted with. Connections already
/// open keep the settings they were accepted with.
#[derive(Clone)]
pub struct TlsHandle {
    current: Arc<RwLock<Listening>>,
    /// The served certificate's notAfter, for [`watch_expiry`]: a reload
    /// renewing it is seen at once, and the watch ends with the daemon
    /// (once every handle is dropped).
    expiry: watch::Sender<Expiry>,
}

struct Listening {
    config: Arc<ServerConfig>,
    /// Clients must present a certificate (`client_ca_file`).
    mutual: bool,
    /// The certificate served (`cert_file`'s first): a reload that finds
    /// the same one does not refuse it for its dates ([`TlsHandle::prepare`]).
    certificate: CertificateDer<'static>,
    expiry: Expiry,
}

/// The served certificate's file and notAfter (seconds since the Unix
/// epoch; `None` when its dates cannot be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub cert_file: PathBuf,
    pub not_after: Option<i64>,
}

/// [`TlsHandle::prepare`]'s refusal to drop mutual TLS.
#[derive(Debug, thiserror::Error)]
#[error("the file's [tls] has no client_ca_file while mutual TLS is in force, and a reload does not let clients in without a certificate (restart warmpoold for that)")]
pub struct WouldDropClientCertificates;

/// TLS settings [`TlsHandle::prepare`] read and checked; in force once
/// [`TlsHandle::apply`]'d.
#[must_use = "the settings are not in force until applied"]
pub struct PreparedTls {
    listening: Listening,
    /// Why the certificate, unchanged from the one served, is outside its
    /// validity window.
    stale: Option<String>,
}

impl PreparedTls {
    /// Why the certificate is outside its validity window, when the reload
    /// took it anyway because it is the one already served (expired while
    /// served): the reload's other parts (a revoked token, a new client CA)
    /// must not wait for its renewal, and serving it on changes nothing
    /// for clients. The caller logs it as an error.
    pub fn stale_certificate(&self) -> Option<&str> {
        self.stale.as_deref()
    }
}

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
        let (listening, _) = listening(tls, SystemTime::now(), None)?;
        Ok(Self {
            expiry: watch::Sender::new(listening.expiry.clone()),
            current: Arc::new(RwLock::new(listening)),
        })
    }

    /// Reads and checks `[tls]`'s files again (a renewed certificate, a
    /// new client CA), changing nothing: [`TlsHandle::apply`] puts them in
    /// force, so that a reload can check its other parts first. Files that
    /// do not load are refused; the error says why. Refuses to drop
    /// `client_ca_file` while it is in force: a file edited without it, or
    /// half written, would let anyone in where client certificates may be
    /// the API's only access control ([`WouldDropClientCertificates`]).
    /// A certificate outside its validity window is refused, unless it is
    /// the one served ([`PreparedTls::stale_certificate`]).
    pub fn prepare(&self, tls: &TlsConfig) -> anyhow::Result<PreparedTls> {
        self.prepare_at(tls, SystemTime::now())
    }

    /// Refuses `tls` (a config file's `[tls]`, read again) when it drops
    /// `client_ca_file` while mutual TLS is in force: as
    /// [`TlsHandle::prepare`] does, for a reload that reads no file.
    pub fn refuse_dropping_client_certificates(
        &self,
        tls: &TlsConfig,
    ) -> Result<(), WouldDropClientCertificates> {
        if tls.client_ca_file.is_none() && self.current().mutual {
            return Err(WouldDropClientCertificates);
        }
        Ok(())
    }

    fn prepare_at(&self, tls: &TlsConfig, now: SystemTime) -> anyhow::Result<PreparedTls> {
        self.refuse_dropping_client_certificates(tls)?;
        let served = self.current().certificate.clone();
        let (listening, stale) = listening(tls, now, Some(&served))?;
        Ok(PreparedTls { listening, stale })
    }

    /// Puts settings [`TlsHandle::prepare`] read in force: connections
    /// accepted from now on use them.
    pub fn apply(&self, prepared: PreparedTls) {
        let expiry = prepared.listening.expiry.clone();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = prepared.listening;
        self.expiry.send_replace(expiry);
    }

    /// The served certificate's notAfter, now and after each reload.
    pub fn expiry(&self) -> watch::Receiver<Expiry> {
        self.expiry.subscribe()
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
/// certificate from `client_ca_file` when it is set. A certificate outside
/// its validity window at `now` is refused, unless it is `served` (the one
/// in force): then why it is outside comes with the settings.
fn listening(
    tls: &TlsConfig,
    now: SystemTime,
    served: Option<&CertificateDer<'static>>,
) -> anyhow::Result<(Listening, Option<String>)> {
    let chain = certificates("tls.cert_file", &tls.cert_file)?;
    let key_pem = read("tls.key_file", &tls.key_file)?;
    if let Some(warning) = warmpool_proto::secret_file::world_readable(&tls.key_file) {
        tracing::warn!("tls.key_file {warning}");
    }
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
    let certificate = chain[0].clone();
    let validity = validity(&tls.cert_file, &certificate);
    let stale = match check_validity(&tls.cert_file, validity, now) {
        Ok(()) => None,
        Err(e) if served == Some(&certificate) => Some(format!("{e:#}")),
        Err(e) => return Err(e),
    };
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
    let listening = Listening {
        config: Arc::new(config),
        mutual: tls.client_ca_file.is_some(),
        certificate,
        expiry: Expiry {
            cert_file: tls.cert_file.clone(),
            not_after: validity.map(|(_, not_after)| not_after),
        },
    };
    Ok((listening, stale))
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

/// `certificate`'s (`cert_file`'s first) notBefore and notAfter, in
/// seconds since the Unix epoch; `None`, with a warning, when they cannot
/// be read.
fn validity(cert_file: &Path, certificate: &CertificateDer<'_>) -> Option<(i64, i64)> {
    match x509_parser::parse_x509_certificate(certificate) {
        Ok((_, parsed)) => {
            let validity = parsed.validity();
            Some((
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            ))
        }
        // rustls took it as the identity: refusing it for a reader's
        // limits would stop a daemon whose clients are served.
        Err(e) => {
            tracing::warn!(
                cert_file = %cert_file.display(),
                error = %e,
                "cannot read the certificate's dates (notBefore, notAfter); not checked"
            );
            None
        }
    }
}

/// Refuses a certificate (`cert_file`'s first) outside its `validity`
/// window at `now`, naming the date, as every TLS client would refuse it.
/// By the wall clock, as clients check it: a clock gone wrong shows in the
/// message.
fn check_validity(
    cert_file: &Path,
    validity: Option<(i64, i64)>,
    now: SystemTime,
) -> anyhow::Result<()> {
    let Some((not_before, not_after)) = validity else {
        return Ok(());
    };
    let now_secs = unix_seconds(now);
    let cert = cert_file.display();
    let clock = rfc3339(now_secs);
    if now_secs > not_after {
        anyhow::bail!(
            "tls.cert_file {cert}: the certificate expired at {} (its notAfter), and TLS \
             clients refuse an expired certificate: put a renewed certificate and its key in \
             place (this host's clock says {clock})",
            rfc3339(not_after)
        );
    }
    if now_secs < not_before {
        anyhow::bail!(
            "tls.cert_file {cert}: the certificate is not valid until {} (its notBefore), and \
             TLS clients refuse it until then: check this host's clock (it says {clock}), or \
             put a certificate valid now in place",
            rfc3339(not_before)
        );
    }
    Ok(())
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// How near its notAfter the served certificate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Nearness {
    Expiring,
    Expired,
}

/// Watches the served certificate (`expiry`, from [`TlsHandle::expiry`])
/// for its notAfter, by `wall_clock` (the clock clients check it by):
/// exports it in `metrics`, warns (WARN) once a day from
/// [`EXPIRY_WARNING`] before it, and logs an ERROR once a day from it on,
/// until a reload serves another certificate. Without it, a certificate
/// that expired while served failed every handshake, logged at debug only,
/// while health said SERVING. Ends once every [`TlsHandle`] is dropped.
pub async fn watch_expiry(
    mut expiry: watch::Receiver<Expiry>,
    metrics: Arc<Metrics>,
    wall_clock: impl Fn() -> SystemTime,
) {
    // What was last logged: how near, when, and of which certificate.
    let mut logged: Option<(Nearness, tokio::time::Instant, Option<i64>)> = None;
    let mut exported: Option<PathBuf> = None;
    loop {
        let current = expiry.borrow_and_update().clone();
        let cert_file = current.cert_file.display().to_string();
        if let Some(old) = exported.take().filter(|old| *old != current.cert_file) {
            metrics.forget_tls_certificate_expiry(&old.display().to_string());
        }
        match current.not_after {
            Some(not_after) => {
                metrics.set_tls_certificate_expiry(&cert_file, not_after);
                exported = Some(current.cert_file.clone());
            }
            None => metrics.forget_tls_certificate_expiry(&cert_file),
        }
        let mut wait = EXPIRY_CHECK_INTERVAL;
        if let Some(not_after) = current.not_after {
            if logged.is_some_and(|(_, _, of)| of != current.not_after) {
                // Another certificate: its state is news.
                logged = None;
            }
            let left = not_after.saturating_sub(unix_seconds(wall_clock()));
            let warning = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
            let nearness = if left < 0 {
                Some(Nearness::Expired)
            } else if left <= warning {
                Some(Nearness::Expiring)
            } else {
                None
            };
            if let Some(nearness) = nearness {
                let due = match logged {
                    None => true,
                    Some((was, at, _)) => nearness > was || at.elapsed() >= EXPIRY_LOG_INTERVAL,
                };
                if due {
                    log_expiry(&cert_file, nearness, not_after, left);
                    logged = Some((nearness, tokio::time::Instant::now(), current.not_after));
                }
            }
            if let Ok(left) = u64::try_from(left) {
                // Checked again just after it expires: the error is not
                // an hour late.
                wait = wait.min(Duration::from_secs(left + 1));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = expiry.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn log_expiry(cert_file: &str, nearness: Nearness, not_after: i64, left: i64) {
    let at = rfc3339(not_after);
    match nearness {
        Nearness::Expiring => {
            // Seconds to days, for a person: the precision of f64 is ample.
            #[allow(clippy::cast_precision_loss)]
            let days = left as f64 / 86_400.0;
            tracing::warn!(
                cert_file,
                not_after = %at,
                "the TLS certificate expires in {days:.1} days (at {at}, its notAfter), and TLS \
                 clients will then refuse it: put a renewed certificate and its key in place and \
                 reload warmpoold (SIGHUP, `systemctl reload warmpoold`)"
            );
        }
        Nearness::Expired => tracing::error!(
            cert_file,
            not_after = %at,
            "the TLS certificate expired at {at} (its notAfter): every client's TLS handshake \
             fails until a renewed certificate and its key are put in place and warmpoold is \
             reloaded (SIGHUP, `systemctl reload warmpoold`)"
        ),
    }
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
    use warmpool_test_support::Logs;

    /// A self-signed certificate valid from `not_before` to `not_after`
    /// (UTC midnights) and its key, written to `dir`, as `[tls]`.
    fn issue(dir: &Path, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        let tls = TlsConfig {
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            client_ca_file: None,
        };
        std::fs::write(&tls.cert_file, cert.pem()).unwrap();
        std::fs::write(&tls.key_file, key.serialize_pem()).unwrap();
        tls
    }

    fn at(year: i32, month: u8, day: u8) -> SystemTime {
        let date = rcgen::date_time_ymd(year, month, day);
        UNIX_EPOCH + Duration::from_secs(date.unix_timestamp().try_into().unwrap())
    }

    /// A private key every user of the host may read is warned of, naming
    /// the file and its mode, at start and at each reload; one its group
    /// may read is not (Kubernetes mounts a Secret 0440 under fsGroup).
    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Others may reach the key (/tmp is 1777): a 0700 directory would
        // keep them out.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tls = issue(dir.path(), (2020, 1, 1), (2090, 1, 1));
        let key = tls.key_file.display().to_string();
        let mode = |mode: u32| {
            std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let logs = Logs::capture();
        mode(0o644);
        let handle = TlsHandle::load(&tls).unwrap();
        handle.apply(handle.prepare_at(&tls, at(2030, 1, 1)).unwrap());
        let warned = logs.count("WARN", &format!("{key} holds a secret"));
        assert_eq!(warned, 2, "{}", logs.text());
        assert!(logs.text().contains("mode 0644"), "{}", logs.text());
        mode(0o440);
        handle.apply(handle.prepare_at(&tls, at(2030, 1, 1)).unwrap());
        assert_eq!(logs.count("WARN", &key), 2, "{}", logs.text());
    }

    /// A SIGHUP that revokes a token must not be refused because the
    /// certificate served has expired meanwhile: the file still holds that
    /// certificate, which serving on changes nothing for clients. Another
    /// certificate outside its window is still refused.
    #[test]
    fn a_reload_takes_the_served_certificate_though_it_expired_but_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let tls = issue(dir.path(), (2020, 1, 1), (2090, 1, 1));
        let handle = TlsHandle::load(&tls).unwrap();
        let prepared = handle.prepare_at(&tls, at(2091, 1, 1)).unwrap();
        let stale = prepared.stale_certificate().unwrap_or_default().to_owned();
        assert!(
            stale.contains("expired at 2090-01-01T00:00:00Z (its notAfter)"),
            "{stale}"
        );
        handle.apply(prepared);
        assert_eq!(
            handle.expiry().borrow().not_after,
            Some(unix_seconds(at(2090, 1, 1)))
        );

        let other = issue(dir.path(), (2020, 1, 1), (2090, 6, 1));
        let refused = handle
            .prepare_at(&other, at(2091, 1, 1))
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("expired at 2090-06-01T00:00:00Z"),
            "{refused}"
        );
        // Within its window, the renewal is taken, with nothing to say.
        let renewed = handle.prepare_at(&other, at(2089, 1, 1)).unwrap();
        assert_eq!(renewed.stale_certificate(), None);
    }

    /// A certificate that expires while served is warned of once a day
    /// in the last 14 days, an error once a day from its notAfter on, and
    /// exported; a renewal (a reload) stops both and exports the new date.
    /// The wall clock here runs with tokio's paused one.
    #[tokio::test(start_paused = true)]
    async fn a_certificate_expiring_while_served_is_warned_of_then_an_error() {
        const DAY: Duration = Duration::from_secs(86_400);
        const HOUR: Duration = Duration::from_secs(3600);
        let logs = Logs::capture();
        let base = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let not_after = unix_seconds(base + 15 * DAY);
        let (expiry, watching) = watch::channel(Expiry {
            cert_file: PathBuf::from("/tls/server.crt"),
            not_after: Some(not_after),
        });
        let metrics = Arc::new(Metrics::new());
        let start = tokio::time::Instant::now();
        let watcher = tokio::spawn(watch_expiry(watching, metrics.clone(), move || {
            base + start.elapsed()
        }));
        let series = |cert_file: &str, value: i64| {
            format!(
                "warmpool_tls_certificate_expiry_timestamp_seconds{{cert_file=\"{cert_file}\"}} {value}\n"
            )
        };
        let warned = || logs.count("WARN", "the TLS certificate expires in");
        let errors = || logs.count("ERROR", "the TLS certificate expired at");

        tokio::time::sleep(HOUR / 2).await;
        assert!(
            metrics
                .encode()
                .contains(&series("/tls/server.crt", not_after)),
            "{}",
            metrics.encode()
        );
        assert_eq!((warned(), errors()), (0, 0), "15 days left");
        // 14 days left at the hourly check a day in: within the fortnight.
        tokio::time::sleep(DAY).await;
        assert_eq!(warned(), 1);
        assert_eq!(
            logs.count("WARN", "expires in 14.0 days (at 2030-04-01T17:46:40Z"),
            1
        );
        tokio::time::sleep(12 * HOUR).await;
        assert_eq!(warned(), 1, "once a day");
        tokio::time::sleep(13 * HOUR).await;
        assert_eq!(warned(), 2);
        // Just past its notAfter.
        tokio::time::sleep(15 * DAY + Duration::from_secs(5) - start.elapsed()).await;
        assert_eq!(errors(), 1, "the error comes as it expires");
        let warnings = warned();
        tokio::time::sleep(12 * HOUR).await;
        assert_eq!((warned(), errors()), (warnings, 1));
        tokio::time::sleep(12 * HOUR).await;
        assert_eq!(errors(), 2, "once a day");

        // Renewed (a reload), to another file: the new date, the old
        // file's series gone, and nothing more logged.
        let renewed = unix_seconds(base + 400 * DAY);
        expiry.send_replace(Expiry {
            cert_file: PathBuf::from("/tls/renewed.crt"),
            not_after: Some(renewed),
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let body = metrics.encode();
        assert!(
            body.contains(&series("/tls/renewed.crt", renewed)),
            "{body}"
        );
        assert!(!body.contains("/tls/server.crt"), "{body}");
        tokio::time::sleep(3 * DAY).await;
        assert_eq!((warned(), errors()), (warnings, 2));

        // The daemon gone (every handle dropped), the watch ends.
        drop(expiry);
        tokio::time::timeout(DAY, watcher)
            .await
            .expect("the watch ends with the daemon")
            .unwrap();
    }

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
