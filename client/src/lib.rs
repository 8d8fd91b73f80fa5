//! Typed client for the `warmpool.v1.WarmPool` gRPC service.
//!
//! This crate owns the caller's side of the wire: connecting to a warmpool
//! daemon, turning each RPC into one async method with plain Rust arguments,
//! and turning transport failures and gRPC statuses into [`ClientError`].
//! It does not interpret the answers; the wire types are re-exported as
//! [`api`] so callers never need to depend on `warmpool-proto` themselves.
//! The `warmpoolctl` binary in this crate is built on top of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warmpool_client::ClientError> {
//! let client = warmpool_client::Client::connect("127.0.0.1:50051").await?;
//! for pool in client.list_pools().await? {
//!     println!("{}@{}", pool.flavor, pool.availability_zone);
//! }
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use warmpool_proto::v1 as api;

use api::warm_pool_client::WarmPoolClient;

/// TLS for an `https://` endpoint (a daemon with `[tls]`). Its `Debug`
/// shows what is set, not the private key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates the daemon's certificate must chain to; `None`:
    /// the system's trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key to present, for a daemon
    /// that requires client certificates (`tls.client_ca_file`).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Where the PEMs were read from, for the messages about them.
    pub files: TlsFiles,
}

/// The files a [`TlsOptions`]' PEMs were read from, named in the messages
/// about them ("the key file ops.crt holds no PEM private key"): one user
/// may hold several certificates and keys. Unset, a file is named by what
/// it is for alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// "the key file /etc/warmpool/ops.key", or "the key file".
    fn name(what: &str, path: Option<&std::path::Path>) -> String {
        match path {
            Some(path) => format!("the {what} file {}", path.display()),
            None => format!("the {what} file"),
        }
    }

    fn ca(&self) -> String {
        Self::name("CA", self.ca.as_deref())
    }

    fn cert(&self) -> String {
        Self::name("certificate", self.cert.as_deref())
    }

    fn key(&self) -> String {
        Self::name("key", self.key.as_deref())
    }
}

impl TlsOptions {
    fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.identity_pem.is_some()
    }

    /// Whether each file holds the PEM it is for: given another file (a key
    /// as the CA), the TLS library would take it and the handshake fail as
    /// if the daemon's certificate were wrong.
    fn check(&self) -> Result<(), String> {
        let holds = |pem: &[u8], what: &str| {
            String::from_utf8_lossy(pem).contains(&format!("-----BEGIN {what}"))
        };
        if self
            .ca_pem
            .as_deref()
            .is_some_and(|ca| !holds(ca, "CERTIFICATE-----"))
        {
            return Err(format!(
                "{} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
                self.files.ca()
            ));
        }
        if let Some((cert, key)) = &self.identity_pem {
            if !holds(cert, "CERTIFICATE-----") {
                return Err(format!(
                    "{} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
                    self.files.cert()
                ));
            }
            // PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY"), SEC1 ("EC PRIVATE KEY").
            let key_text = String::from_utf8_lossy(key);
            if !key_text.contains("PRIVATE KEY-----") {
                return Err(format!("{} holds no PEM private key", self.files.key()));
            }
            // PKCS#8's encrypted form, and OpenSSL's older one (PKCS#1 with
            // headers): rustls reads neither, and would say only that it
            // found no key.
            if key_text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || key_text.contains("Proc-Type: 4,ENCRYPTED")
            {
                return Err(format!(
                    "{} is an encrypted private key; this client needs it \
                     unencrypted (`openssl pkey -in KEY -out PLAIN_KEY` decrypts it)",
                    self.files.key()
                ));
            }
            check_identity(cert, key, &self.files)?;
        }
        Ok(())
    }
}

/// Whether the certificate and key files make the TLS identity tonic will
/// build from them, built the same way (rustls' client configuration) so
/// that what it would refuse as the connection is set up, without naming
/// either file, is refused here.
fn check_identity(cert: &[u8], key: &[u8], files: &TlsFiles) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ClientConfig, Error, InconsistentKeys, RootCertStore};

    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} holds no readable PEM certificate: {e}", files.cert()))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("{} holds no readable PEM private key: {e}", files.key()))?;
    match ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, key)
    {
        Ok(_) => Ok(()),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
            "{} holds another private key than {}'s certificate \
             (a key of another certificate?)",
            files.key(),
            files.cert()
        )),
        // webpki reads X.509 v3 only; its error type is not re-exported.
        Err(e) if e.to_string().contains("UnsupportedCertVersion") => Err(format!(
            "{} is an X.509 v1 certificate, which TLS here does not take: re-issue it as v3 \
             (with openssl, `openssl x509 -req ... -extfile FILE` naming a subjectAltName in FILE)",
            files.cert()
        )),
        Err(e) => Err(format!(
            "{} and {} do not make a TLS identity: {e}",
            files.cert(),
            files.key()
        )),
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field(
                "identity_pem",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("files", &self.files)
            .finish()
    }
}

/// How a [`Client`] connects and notices a daemon gone silent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How long the TCP connect and, for `https://`, the TLS handshake may
    /// take together. Without a bound, an unroutable address would hang the
    /// caller for the OS default, and a peer that accepts TCP but never
    /// answers the TLS handshake would hang it forever.
    pub connect_timeout: Duration,
    /// How often an HTTP/2 ping goes out while the connection is open,
    /// idle or not, and how long its answer may take before the connection
    /// is closed and every call on it fails. Without it, a daemon whose host
    /// vanished (powered off, packets dropped: no TCP reset) would leave a
    /// `watch` showing its last frame as live, and a call hanging, forever.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Used with an `https://` endpoint.
    pub tls: TlsOptions,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            tls: TlsOptions::default(),
        }
    }
}

/// Everything a [`Client`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is one this client cannot use.
    #[error("cannot use endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// The endpoint could not be parsed or reached.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        endpoint: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)";
        /// tonic's own message ("transport error") says nothing useful.
        reason: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with a non-OK gRPC status.
    #[error("{}: {message}", code_name(*.code))]
    Status { code: tonic::Code, message: String },
    /// The server answered OK but left out a field the API promises.
    #[error("malformed response: missing {0}")]
    MissingField(&'static str),
    /// The server answered OK with something the API rules out.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The bearer token cannot go in an HTTP header.
    #[error("unusable bearer token: {0}")]
    Token(String),
}

impl ClientError {
    /// The gRPC status code, when the failure came from the server.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // A status made on this side of a failed connection says only
        // "transport error"; what failed is at the end of its sources.
        let message = match std::error::Error::source(&status) {
            Some(source) => {
                let cause = root_cause(source);
                if cause == status.message() {
                    cause
                } else {
                    format!("{}: {cause}", status.message())
                }
            }
            None => status.message().to_owned(),
        };
        ClientError::Status {
            code: status.code(),
            message,
        }
    }
}

/// The canonical upper-case name of a gRPC code ("NOT_FOUND"), as grpcurl and
/// the other gRPC tools print it. tonic's `Display` gives a prose description
/// instead, and its `Debug` gives the Rust variant name.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Accepts "host:port" as well as a full URI: operators type the former,
/// tonic only understands the latter.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    match endpoint.split_once("://") {
        // A scheme is case-insensitive; TLS is chosen by comparing it.
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => format!("http://{endpoint}"),
    }
}

/// Refuses an endpoint URI (as [`normalize_endpoint`] gives it) that names
/// no host, or whose port is no TCP port: the URI parser reads no port out
/// of "99999" and hyper would dial the scheme's default port (80, 443)
/// instead, with the bearer token. A URI without a port keeps the
/// scheme's default, as a proxy's `https://name` means it.
fn check_host_and_port(uri: &str) -> Result<(), ClientError> {
    let refused = |reason: String| ClientError::Endpoint {
        endpoint: uri.to_owned(),
        reason,
    };
    let authority = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, after)| after);
    let (host, port) = match host_and_port.strip_prefix('[') {
        // An IPv6 address's colons are its own: a port follows the ']'.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (bracketed, None),
        },
        None => match host_and_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_and_port, None),
        },
    };
    if host.is_empty() {
        return Err(refused("it names no host: write host:port".into()));
    }
    match port {
        None => Ok(()),
        Some("") => Err(refused(
            "the port after the colon is missing: write one of 1-65535".into(),
        )),
        Some(port) => match port.parse::<u16>() {
            Ok(1..) => Ok(()),
            _ => Err(refused(format!(
                "port {port} is not a TCP port: write one of 1-65535"
            ))),
        },
    }
}

/// Refuses to send a bearer token in plaintext by default: an endpoint
/// without a scheme means plaintext HTTP/2, which is fine on loopback but
/// elsewhere is more likely a forgotten `https://` (the token would go out
/// in the first request, before a TLS daemon could refuse it). An explicit
/// `http://` says plaintext is meant.
pub fn check_token_transport(endpoint: &str) -> Result<(), ClientError> {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        return Ok(());
    }
    // Before the advice to write a scheme, which would keep the bad port.
    check_host_and_port(&format!("http://{endpoint}")).map_err(|refused| match refused {
        ClientError::Endpoint { reason, .. } => ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        },
        other => other,
    })?;
    let uri: tonic::codegen::http::Uri =
        format!("http://{endpoint}")
            .parse()
            .map_err(|_| ClientError::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: "it is not host:port".into(),
            })?;
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "not sending a bearer token there in plaintext: write https://{endpoint} \
                 for a daemon with TLS, or http://{endpoint} to send it unencrypted on purpose"
            ),
        });
    }
    Ok(())
}

/// The innermost error message in a source chain: for a refused connection
/// that is the OS error, which is what a person needs to see.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn connect_error(endpoint: &str, source: tonic::transport::Error) -> ClientError {
    ClientError::Connect {
        endpoint: endpoint.to_owned(),
        reason: root_cause(&source),
        source,
    }
}

/// Dials the daemon as tonic's own connector does, and watches each
/// plaintext connection for the daemon's answer to the HTTP/2 handshake.
#[derive(Clone)]
struct Dialer {
    http: HttpConnector,
    handshake_answered: Arc<AtomicBool>,
}

type DialFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<TokioIo<Watched>, Box<dyn std::error::Error + Send + Sync>>,
            > + Send,
    >,
>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Dialer {
    type Response = TokioIo<Watched>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = DialFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        // Under TLS the bytes seen here are records, not HTTP/2 frames.
        let answered = (uri.scheme_str() != Some("https")).then(|| self.handshake_answered.clone());
        let connecting = tonic::codegen::Service::call(&mut self.http, uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(Watched {
                tcp,
                head: [0; 9],
                seen: 0,
                answered,
            }))
        })
    }
}

/// A connection whose first 9 bytes from the daemon are checked for the
/// server's HTTP/2 preface. A TLS daemon dialled in plaintext answers with
/// an alert, an HTTP/1.1 port (warmpoold's metrics) with "HTTP/1.1" or by
/// closing: neither is a SETTINGS frame.
struct Watched {
    tcp: TcpStream,
    head: [u8; 9],
    seen: usize,
    answered: Option<Arc<AtomicBool>>,
}

/// Whether `head` is the header of a frame that can open an HTTP/2 server's
/// side: SETTINGS (type 4), not an acknowledgement, on stream 0, its length
/// a whole number of 6-byte settings (RFC 9113 §3.4, §6.5).
fn is_server_preface(head: &[u8; 9]) -> bool {
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let (kind, flags) = (head[3], head[4]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    kind == 4 && flags & 1 == 0 && stream == 0 && length.is_multiple_of(6)
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Some(answered) = &this.answered {
            let new = &buf.filled()[before..];
            let take = new.len().min(this.head.len() - this.seen);
            this.head[this.seen..this.seen + take].copy_from_slice(&new[..take]);
            this.seen += take;
            if this.seen == this.head.len() {
                if is_server_preface(&this.head) {
                    answered.store(true, Ordering::Relaxed);
                }
                this.answered = None;
            }
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The stream returned by [`Client::watch_pools`].
pub type PoolStatusStream = BoxStream<'static, Result<api::PoolStatus, ClientError>>;

/// The `authorization: Bearer <token>` header every call of a [`Client`]
/// carries, if it has a token. Its `Debug` does not show the token.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// `token` as a header value; surrounding whitespace (a token file's
    /// newline) and a byte order mark (a file saved by Windows Notepad) are
    /// not part of it.
    pub fn new(token: &str) -> Result<Self, ClientError> {
        let token = token.trim().trim_start_matches('\u{feff}').trim();
        if token.is_empty() {
            return Err(ClientError::Token("it is empty".into()));
        }
        // A bearer token is printable ASCII without spaces (RFC 6750).
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Token(
                "a bearer token is printable ASCII without spaces".into(),
            ));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Token("it cannot go in an HTTP header".into()))?;
        // HTTP/2 then never puts it in a compression table a proxy could
        // keep (RFC 7541, section 7.1.3), and its Debug shows no token.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("BearerToken(<redacted>)"),
            None => f.write_str("BearerToken(None)"),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated tonic stub a [`Client`] calls through.
pub type Stub = WarmPoolClient<InterceptedService<Channel, BearerToken>>;

/// A connection to one warmpool daemon.
///
/// Cloning is cheap and clones share the underlying HTTP/2 connection, so a
/// `Client` can be handed to many tasks. Methods take `&self` for the same
/// reason: each call works on its own clone of the tonic stub.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    token: BearerToken,
    /// The endpoint as given to [`Client::connect_with`], which
    /// [`check_token_transport`] checks before a token is set; `None` for a
    /// channel built by the caller.
    endpoint: Option<String>,
    /// Set once the daemon has answered the HTTP/2 handshake on one of the
    /// channel's connections; see [`Client::handshake_answered`].
    handshake_answered: Arc<AtomicBool>,
}

impl Client {
    /// Connects to `endpoint` ("host:port" or "http://host:port") and fails
    /// at once if nothing answers, rather than on the first call.
    pub async fn connect(endpoint: &str) -> Result<Client, ClientError> {
        Self::connect_with(endpoint, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with other timeouts.
    pub async fn connect_with(
        endpoint: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let uri_given = endpoint;
        let uri = normalize_endpoint(endpoint);
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(ClientError::Endpoint {
                endpoint: uri,
                reason: "the scheme must be http:// or https://".into(),
            });
        }
        check_host_and_port(&uri)?;
        let mut endpoint =
            Endpoint::from_shared(uri.clone()).map_err(|e| connect_error(&uri, e))?;
        if uri.starts_with("https://") {
            options
                .tls
                .check()
                .map_err(|reason| ClientError::Endpoint {
                    endpoint: uri.clone(),
                    reason,
                })?;
            let mut tls = ClientTlsConfig::new();
            tls = match &options.tls.ca_pem {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &options.tls.identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| connect_error(&uri, e))?;
        } else if options.tls.is_set() {
            // Certificates given for a plaintext endpoint: the caller
            // meant TLS, and would otherwise talk without it.
            return Err(ClientError::Endpoint {
                endpoint: uri,
                reason: "TLS certificates are given, so the endpoint must be https://".into(),
            });
        }
        // What Endpoint::connect dials with (TLS, when set, goes on top),
        // but each connection watched for the daemon's answer to the
        // handshake. The connect timeout bounds the TCP connect here, and the
        // endpoint's bounds TCP and TLS together: without the latter a peer
        // that accepts TCP and never answers the ClientHello (a frozen
        // daemon, a load balancer with a dead backend) hangs the connect.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(options.connect_timeout));
        let handshake_answered = Arc::new(AtomicBool::new(false));
        let dialer = Dialer {
            http,
            handshake_answered: handshake_answered.clone(),
        };
        let channel = endpoint
            .connect_timeout(options.connect_timeout)
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_with_connector(dialer)
            .await
            .map_err(|e| connect_error(&uri, e))?;
        Ok(Client {
            handshake_answered,
            endpoint: Some(uri_given.to_owned()),
            ..Client::from_channel(channel)
        })
    }

    /// Wraps an already built channel (e.g. a lazily connecting one, or one
    /// with TLS or custom timeouts configured by the caller). Such a client
    /// cannot tell whether the daemon answered the handshake:
    /// [`Client::handshake_answered`] stays false.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            channel,
            token: BearerToken::default(),
            endpoint: None,
            handshake_answered: Arc::default(),
        }
    }

    /// Whether the daemon has answered the HTTP/2 handshake (sent its
    /// SETTINGS) on a connection of this client: a call that failed after
    /// that was cut off mid-way (the daemon stopped, a proxy or the network
    /// cut it), not refused for the connection's setup (a TLS daemon dialled
    /// in plaintext, an HTTP/1.1 port), though both may read "broken pipe".
    /// Only a plaintext connection is seen: over TLS this stays false.
    pub fn handshake_answered(&self) -> bool {
        self.handshake_answered.load(Ordering::Relaxed)
    }

    /// Every call from now on (of this client and its clones made later)
    /// presents `token`, for a daemon configured with `[[api_tokens]]`.
    ///
    /// Refused for an endpoint given without a scheme that is not loopback
    /// ([`check_token_transport`]): the token would go out unencrypted, in
    /// the first request. Write `https://` for a daemon with TLS, or
    /// `http://` to send it in plaintext on purpose. A client of
    /// [`Client::from_channel`] is not checked: its channel is the caller's.
    pub fn with_token(self, token: &str) -> Result<Client, ClientError> {
        self.authorized(BearerToken::new(token)?)
    }

    /// [`Client::with_token`] with a token already checked.
    pub fn authorized(self, token: BearerToken) -> Result<Client, ClientError> {
        if let Some(endpoint) = &self.endpoint {
            check_token_transport(endpoint)?;
        }
        Ok(Client { token, ..self })
    }

    /// The generated tonic stub, for anything this wrapper does not cover
    /// (per-call metadata, compression). It presents this client's token.
    pub fn raw(&self) -> Stub {
        WarmPoolClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    /// Hands out a warm instance. Idempotent on `request.request_id`.
    pub async fn allocate(
        &self,
        request: api::AllocateRequest,
    ) -> Result<api::Allocation, ClientError> {
        let response = self.raw().allocate(request).await?.into_inner();
        response
            .allocation
            .ok_or(ClientError::MissingField("AllocateResponse.allocation"))
    }

    /// Looks an allocation up by the request id it was made with.
    pub async fn get_allocation(
        &self,
        request_id: impl Into<String>,
    ) -> Result<api::Allocation, ClientError> {
        let request = api::GetAllocationRequest {
            request_id: request_id.into(),
        };
        Ok(self.raw().get_allocation(request).await?.into_inner())
    }

    /// Releases an allocation. `delete_volume` overrides the allocation's
    /// own delete-on-release choice when `Some`.
    pub async fn release(
        &self,
        request_id: impl Into<String>,
        delete_volume: Option<bool>,
    ) -> Result<api::Allocation, ClientError> {
        let request = api::ReleaseRequest {
            request_id: request_id.into(),
            delete_volume,
        };
        Ok(self.raw().release(request).await?.into_inner())
    }

    pub async fn list_pools(&self) -> Result<Vec<api::Pool>, ClientError> {
        let response = self.raw().list_pools(api::ListPoolsRequest {}).await?;
        Ok(response.into_inner().pools)
    }

    pub async fn get_pool(
        &self,
        flavor: impl Into<String>,
        availability_zone: impl Into<String>,
    ) -> Result<api::Pool, ClientError> {
        let request = api::GetPoolRequest {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
        };
        Ok(self.raw().get_pool(request).await?.into_inner())
    }

    pub async fn create_pool(
        &self,
        flavor: impl Into<String>,
        availability_zone: impl Into<String>,
        spec: api::PoolSpec,
    ) -> Result<api::Pool, ClientError> {
        let request = api::CreatePoolRequest {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
            spec: Some(spec),
        };
        Ok(self.raw().create_pool(request).await?.into_inner())
    }

    /// Changes the fields of the pool's spec named in `update_mask`
    /// (`PoolSpec` field names such as "min_ready"); other fields of `spec`
    /// are not read by the server, whatever they hold.
    pub async fn update_pool<S: Into<String>>(
        &self,
        flavor: impl Into<String>,
        availability_zone: impl Into<String>,
        spec: api::PoolSpec,
        update_mask: impl IntoIterator<Item = S>,
    ) -> Result<api::Pool, ClientError> {
        let request = api::UpdatePoolRequest {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
            spec: Some(spec),
            update_mask: Some(prost_types::FieldMask {
                paths: update_mask.into_iter().map(Into::into).collect(),
            }),
        };
        Ok(self.raw().update_pool(request).await?.into_inner())
    }

    /// Drains a pool and returns its state as of the call.
    pub async fn delete_pool(
        &self,
        flavor: impl Into<String>,
        availability_zone: impl Into<String>,
    ) -> Result<api::Pool, ClientError> {
        let request = api::DeletePoolRequest {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
        };
        let response = self.raw().delete_pool(request).await?.into_inner();
        response
            .pool
            .ok_or(ClientError::MissingField("DeletePoolResponse.pool"))
    }

    /// Lists instances of one pool, or of every pool when `flavor` and
    /// `availability_zone` are both empty: every page of them.
    pub async fn list_instances(
        &self,
        flavor: impl Into<String>,
        availability_zone: impl Into<String>,
    ) -> Result<Vec<api::Instance>, ClientError> {
        let mut request = api::ListInstancesRequest {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
            ..Default::default()
        };
        let mut instances = Vec::new();
        let mut tokens_seen = std::collections::HashSet::new();
        loop {
            let page = self
                .raw()
                .list_instances(request.clone())
                .await?
                .into_inner();
            instances.extend(page.instances);
            if page.next_page_token.is_empty() {
                return Ok(instances);
            }
            // A token that comes round again would be asked for forever.
            if !tokens_seen.insert(page.next_page_token.clone()) {
                return Err(ClientError::Malformed(
                    "ListInstances answered a page token it had given before as the next one"
                        .into(),
                ));
            }
            request.page_token = page.next_page_token;
        }
    }

    /// Subscribes to pool status: one item per pool at once, then one with
    /// `snapshot_complete` set (from a server that knows it), then one per
    /// change. The stream ends when the server closes it; a broken stream
    /// yields one `Err` and then ends.
    pub async fn watch_pools(&self) -> Result<PoolStatusStream, ClientError> {
        let stream = self
            .raw()
            .watch_pools(api::WatchPoolsRequest {})
            .await?
            .into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from)).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_without_scheme_gets_http() {
        assert_eq!(
            normalize_endpoint("10.0.0.1:50051"),
            "http://10.0.0.1:50051"
        );
        assert_eq!(normalize_endpoint(" localhost:1 "), "http://localhost:1");
    }

    #[test]
    fn endpoint_with_scheme_is_kept() {
        assert_eq!(normalize_endpoint("http://h:1"), "http://h:1");
        assert_eq!(normalize_endpoint("https://h:1"), "https://h:1");
        assert_eq!(normalize_endpoint("HTTPS://H:1"), "https://H:1");
    }

    #[tokio::test]
    async fn an_endpoint_or_tls_file_that_cannot_be_meant_is_refused_before_connecting() {
        let refused = |endpoint: &str, tls: TlsOptions| {
            let endpoint = endpoint.to_owned();
            async move {
                match Client::connect_with(
                    &endpoint,
                    ConnectOptions {
                        tls,
                        ..Default::default()
                    },
                )
                .await
                {
                    Err(ClientError::Endpoint { reason, .. }) => reason,
                    other => panic!("{endpoint}: {:?}", other.map(|_| ())),
                }
            }
        };
        let reason = refused("ftp://127.0.0.1:1", TlsOptions::default()).await;
        assert!(reason.contains("http:// or https://"), "{reason}");
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_vec();
        for (tls, expect) in [
            (
                TlsOptions {
                    ca_pem: Some(key.clone()),
                    identity_pem: None,
                    ..Default::default()
                },
                "the CA file holds no PEM certificate",
            ),
            (
                TlsOptions {
                    ca_pem: None,
                    identity_pem: Some((key.clone(), key.clone())),
                    ..Default::default()
                },
                "the certificate file holds no PEM certificate",
            ),
            (
                TlsOptions {
                    ca_pem: None,
                    identity_pem: Some((cert.clone(), cert.clone())),
                    ..Default::default()
                },
                "the key file holds no PEM private key",
            ),
        ] {
            let reason = refused("https://127.0.0.1:1", tls).await;
            assert!(reason.starts_with(expect), "{reason}");
        }

        // TLS itself would refuse these only as the connection is set up,
        // without naming the key file: "no RSA or PKCS8-encoded keys found",
        // "KeyMismatch".
        let ops = rcgen::generate_simple_self_signed(vec!["ops".to_owned()]).unwrap();
        let ops_cert = ops.cert.pem().into_bytes();
        let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
            MIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQIq3hN2Pz6bPkCAggA\n\
            -----END ENCRYPTED PRIVATE KEY-----\n";
        // OpenSSL's older form: PKCS#1 with encryption headers.
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\n\
            Proc-Type: 4,ENCRYPTED\n\
            DEK-Info: AES-128-CBC,5A1C4B0E63A1F1F3B9D1D3C6A1E5F7B2\n\n\
            MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n\
            -----END RSA PRIVATE KEY-----\n";
        for (key, expect) in [
            (
                encrypted.as_bytes(),
                "the key file is an encrypted private key",
            ),
            (
                legacy.as_bytes(),
                "the key file is an encrypted private key",
            ),
            (
                other_key.as_bytes(),
                "the key file holds another private key than the certificate file's",
            ),
        ] {
            let tls = TlsOptions {
                ca_pem: None,
                identity_pem: Some((ops_cert.clone(), key.to_vec())),
                ..Default::default()
            };
            let reason = refused("https://127.0.0.1:1", tls).await;
            assert!(reason.starts_with(expect), "{reason}");
        }
        // The certificate's own key passes, and only the connection fails.
        let tls = TlsOptions {
            ca_pem: None,
            identity_pem: Some((ops_cert, ops.key_pair.serialize_pem().into_bytes())),
            ..Default::default()
        };
        let options = ConnectOptions {
            tls,
            ..Default::default()
        };
        match Client::connect_with("https://127.0.0.1:1", options).await {
            Err(ClientError::Connect { .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// An endpoint whose port is no TCP port, or that names no host, is
    /// refused before anything is dialled: the URI parser reads no port
    /// out of "99999", and the connection would go to the scheme's
    /// default port (80, 443) with the bearer token.
    #[tokio::test]
    async fn an_endpoint_without_a_host_or_with_a_port_out_of_range_is_refused() {
        for (endpoint, expect) in [
            (
                "127.0.0.1:99999",
                "port 99999 is not a TCP port: write one of 1-65535",
            ),
            (
                "https://127.0.0.1:65536",
                "port 65536 is not a TCP port: write one of 1-65535",
            ),
            (
                "http://[::1]:0",
                "port 0 is not a TCP port: write one of 1-65535",
            ),
            (
                "127.0.0.1:",
                "the port after the colon is missing: write one of 1-65535",
            ),
            (
                "http://127.0.0.1:5x",
                "port 5x is not a TCP port: write one of 1-65535",
            ),
            ("http://", "it names no host: write host:port"),
            ("http://:50051", "it names no host: write host:port"),
        ] {
            match Client::connect_with(endpoint, ConnectOptions::default()).await {
                Err(ClientError::Endpoint { reason, .. }) => {
                    assert_eq!(reason, expect, "{endpoint}")
                }
                other => panic!("{endpoint}: {:?}", other.map(|_| ())),
            }
        }
        // Nor told to write a scheme before it, which would keep the port.
        match check_token_transport("db-pool:99999") {
            Err(ClientError::Endpoint { endpoint, reason }) => assert_eq!(
                (endpoint.as_str(), reason.as_str()),
                (
                    "db-pool:99999",
                    "port 99999 is not a TCP port: write one of 1-65535"
                )
            ),
            other => panic!("{other:?}"),
        }
        assert!(check_token_transport("[::1]:50051").is_ok());
    }

    #[test]
    fn tls_options_never_print_the_private_key() {
        let options = TlsOptions {
            ca_pem: Some(b"ca".to_vec()),
            identity_pem: Some((b"cert".to_vec(), b"SECRET KEY".to_vec())),
            ..Default::default()
        };
        let shown = format!(
            "{:?}",
            ConnectOptions {
                tls: options,
                ..Default::default()
            }
        );
        // Neither as text nor as the bytes a derived Debug would list.
        let key_bytes = format!("{:?}", b"SECRET KEY");
        let key_bytes = key_bytes.trim_matches(['[', ']']);
        assert!(
            !shown.contains("SECRET") && !shown.contains(key_bytes),
            "{shown}"
        );
        assert!(
            shown.contains("identity_pem: Some(\"<redacted>\")"),
            "{shown}"
        );
    }

    /// The library refuses, as warmpoolctl does, a token bound in
    /// plaintext for a remote host given without a scheme; loopback, an
    /// explicit http:// and https:// take it.
    #[tokio::test]
    async fn a_token_goes_in_plaintext_only_to_loopback_or_when_asked() {
        let lazy = Channel::from_static("http://db-pool:50051").connect_lazy();
        let given = |endpoint: &str| Client {
            endpoint: Some(endpoint.to_owned()),
            ..Client::from_channel(lazy.clone())
        };
        for endpoint in [
            "db-pool:50051",
            "10.0.0.7:50051",
            "[fd00::7]:50051",
            " db-pool:1 ",
        ] {
            let err = given(endpoint)
                .with_token("s3cret")
                .unwrap_err()
                .to_string();
            let endpoint = endpoint.trim();
            assert!(
                err.contains(&format!("https://{endpoint}"))
                    && err.contains(&format!("http://{endpoint}")),
                "{err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
        for endpoint in [
            "127.0.0.1:50051",
            "localhost:50051",
            "[::1]:50051",
            "http://db-pool:50051",
            "HTTP://db-pool:50051",
            "https://db-pool:50051",
        ] {
            given(endpoint)
                .with_token("s3cret")
                .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        }
        // A channel the caller built is the caller's to judge.
        Client::from_channel(lazy).with_token("s3cret").unwrap();
    }

    #[test]
    fn a_bearer_token_is_trimmed_checked_and_never_printed() {
        use tonic::service::Interceptor;
        let mut token = BearerToken::new("s3cret\n").unwrap();
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let sent = token.call(tonic::Request::new(())).unwrap();
        let header = sent.metadata().get("authorization").unwrap();
        assert_eq!(header, "Bearer s3cret");
        // Marked sensitive: HPACK never indexes it (RFC 7541, 7.1.3), and
        // its Debug does not show it.
        assert!(header.is_sensitive(), "the header is not marked sensitive");
        assert!(!format!("{header:?}").contains("s3cret"), "{header:?}");
        let bom = BearerToken::new("\u{feff}s3cret\r\n").unwrap();
        assert_eq!(
            bom.clone()
                .call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .unwrap(),
            "Bearer s3cret"
        );
        for (bad, says) in [
            ("", "it is empty"),
            ("\u{feff}", "it is empty"),
            ("to\nken", "printable ASCII"),
            ("tök", "printable ASCII"),
            ("a b", "without spaces"),
        ] {
            let err = BearerToken::new(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let none = BearerToken::default()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(none.metadata().get("authorization").is_none());
    }

    /// The daemon's first frame is told from what a TLS daemon or an
    /// HTTP/1.1 port answers a plaintext HTTP/2 client with.
    #[test]
    fn the_server_preface_is_a_settings_frame() {
        let head = |bytes: &[u8]| -> [u8; 9] { bytes[..9].try_into().unwrap() };
        // SETTINGS with three settings; and an empty one.
        assert!(is_server_preface(&head(&[0, 0, 18, 4, 0, 0, 0, 0, 0])));
        assert!(is_server_preface(&head(&[0, 0, 0, 4, 0, 0, 0, 0, 0])));
        // An acknowledgement, another frame type, a stream's frame.
        assert!(!is_server_preface(&head(&[0, 0, 0, 4, 1, 0, 0, 0, 0])));
        assert!(!is_server_preface(&head(&[0, 0, 8, 6, 0, 0, 0, 0, 0])));
        assert!(!is_server_preface(&head(&[0, 0, 6, 4, 0, 0, 0, 0, 1])));
        // A TLS alert record, a TLS handshake record, an HTTP/1.1 answer.
        assert!(!is_server_preface(&head(&[
            0x15, 3, 3, 0, 2, 2, 0x46, 0, 0
        ])));
        assert!(!is_server_preface(&head(&[
            0x16, 3, 3, 0, 0x7a, 2, 0, 0, 0x76
        ])));
        assert!(!is_server_preface(&head(b"HTTP/1.1 400 Bad Request")));
    }

    #[test]
    fn status_error_prints_canonical_code_and_message() {
        let err = ClientError::from(tonic::Status::not_found("no allocation \"x\""));
        assert_eq!(err.to_string(), "NOT_FOUND: no allocation \"x\"");
        assert_eq!(err.code(), Some(tonic::Code::NotFound));
    }

    #[tokio::test]
    async fn refused_connection_names_the_endpoint() {
        // Port 1 on loopback: nothing listens there on any sane test machine.
        let err = Client::connect("127.0.0.1:1").await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot connect to http://127.0.0.1:1: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    /// A peer that accepts TCP and then says nothing (a frozen daemon, a TCP
    /// load balancer whose backend is dead) fails the connect once the
    /// connect timeout has passed, TLS handshake included, rather than
    /// hanging the caller.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_the_tls_handshake_within_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted and held open, never answered.
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let options = ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            tls: TlsOptions {
                ca_pem: Some(ca.cert.pem().into_bytes()),
                ..Default::default()
            },
            ..Default::default()
        };
        // Only a guard against a hang; the paused clock runs ahead to it.
        let connected = tokio::time::timeout(
            Duration::from_secs(600),
            Client::connect_with(&format!("https://{addr}"), options),
        )
        .await;
        held.abort();
        match connected {
            Ok(Err(ClientError::Connect { .. })) => {}
            Ok(other) => panic!("{:?}", other.map(|_| ())),
            Err(_) => panic!("the TLS handshake with a silent peer was never given up"),
        }
    }

    #[tokio::test]
    async fn unparsable_endpoint_is_a_connect_error() {
        let err = Client::connect("not a uri").await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }
}
