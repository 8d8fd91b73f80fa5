//! The osauth session warmpool talks through, and the one place requests go
//! out: request ids, microversion headers, timeout, logging, re-auth.
//!
//! osauth renews a token shortly before it expires, but nothing in it
//! recovers from a 401 (a revoked token, a Keystone restart that rotated the
//! fernet keys): `Session::refresh()` only clears the endpoint cache. So
//! [`Connection`] keeps the `CloudConfig`, builds a fresh `Session` (a new
//! login) on a 401 and sends the call once more.

use super::error::{classify, classify_osauth, osauth_status, with_causes, Service};
use crate::cloud::{note_side_call, CloudError, CloudResult, SideCall};
use crate::events::CloudService;
use crate::text::{cut, MAX_CLOUD_MESSAGE_CHARS};
use osauth::services::{ServiceType, BLOCK_STORAGE, COMPUTE, IMAGE, NETWORK};
use osauth::{CloudConfig, Session};
use reqwest::Method;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One API call, described independently of osauth's per-service builder
/// types so it can be rebuilt for the retry after a re-auth.
#[derive(Clone, Debug)]
pub struct Call {
    pub service: Service,
    pub method: Method,
    pub path: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    /// Sent as the service's microversion header (Nova "2.x", Cinder "3.x").
    pub microversion: Option<(u16, u16)>,
    /// The caller takes a 403 as an answer and says what it means itself
    /// (a policy hiding what the call reads: a flavor's extra specs), so
    /// it is logged at debug here, not warned of at every call.
    pub forbidden_is_an_answer: bool,
}

impl Call {
    pub fn new<I, S>(service: Service, method: Method, path: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            service,
            method,
            path: path.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            microversion: None,
            forbidden_is_an_answer: false,
        }
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn microversion(mut self, version: Option<(u16, u16)>) -> Self {
        self.microversion = version;
        self
    }

    /// See [`Call::forbidden_is_an_answer`].
    pub fn forbidden_is_an_answer(mut self) -> Self {
        self.forbidden_is_an_answer = true;
        self
    }

    /// "POST /servers/{id}/os-volume_attachments", for logs and messages.
    pub fn describe(&self) -> String {
        format!("{} /{}", self.method, self.path.join("/"))
    }
}

/// What came back: status, the headers that matter, and the body as text.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Cinder under the catalog type deployments of the last decade register
/// it as (Kolla Ansible and Red Hat OpenStack still did in 2025); osauth's
/// `BLOCK_STORAGE` looks for `block-storage` only.
#[derive(Clone, Copy, Debug)]
struct VolumeV3;

impl osauth::services::ServiceType for VolumeV3 {
    fn catalog_type(&self) -> &'static str {
        "volumev3"
    }

    fn major_version_supported(&self, version: osauth::ApiVersion) -> bool {
        version.0 == 3
    }
}

/// The first Cinder microversion (Yoga) whose API is routed without the
/// project id in the path too.
const CINDER_PROJECT_ID_OPTIONAL: osauth::ApiVersion = osauth::ApiVersion(3, 67);

/// The most of an answer warmpool reads: far above a page of a thousand
/// servers' details, and a bound on what an endpoint streaming without end
/// for the whole request timeout can make it hold.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The body of `response`, up to [`MAX_ANSWER_BYTES`]; a longer one is a
/// transient failure.
async fn read_body(mut response: reqwest::Response, what: &str) -> CloudResult<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        CloudError::Transient(format!("{what}: reading the answer: {}", with_causes(&e)))
    })? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CloudError::Transient(format!(
                "{what}: the answer is longer than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// How long a re-login Keystone refused is answered from memory before the
/// password is tried again, after the first refusal; each refusal in a row
/// doubles it, up to [`RELOGIN_PAUSE_MAX`].
pub const RELOGIN_PAUSE: Duration = Duration::from_secs(30);

/// The longest pause between refused re-logins. A Keystone with
/// `lockout_failure_attempts` (5 is usual) locks the user after that many
/// refusals within its `lockout_duration`: a fixed 30 s pause reached 5 in
/// two minutes after a password rotation, and the account stayed locked
/// once clouds.yaml was mended. Doubling, the 5th refusal comes 7.5
/// minutes after the first.
pub const RELOGIN_PAUSE_MAX: Duration = Duration::from_secs(10 * 60);

/// The pause after `refusals` refused re-logins in a row (at least one).
pub fn relogin_pause(refusals: u32) -> Duration {
    let doublings = refusals.saturating_sub(1).min(16);
    RELOGIN_PAUSE
        .saturating_mul(1 << doublings)
        .min(RELOGIN_PAUSE_MAX)
}

/// Why a first login ([`Connection::connect`], `OpenStackCloud::connect_telling_refusal`)
/// failed: Keystone refusing the credentials is told apart from the
/// rest, because waiting does not mend them and each try counts towards
/// Keystone's `lockout_failure_attempts`, while an outage (no answer, a
/// 5xx, a rate limit) is worth trying again soon and counts for nothing.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectError {
    /// Keystone refused the credentials (401): a wrong or rotated password
    /// or secret, or an account locked, disabled or expired (the message
    /// says which when Keystone does). Mend clouds.yaml (or secure.yaml),
    /// or the account in Keystone.
    #[error("{0}")]
    CredentialsRefused(CloudError),
    /// Any other failure: the cloud did not answer, failed, or cannot be
    /// used as configured (the message says which).
    #[error("{0}")]
    Failed(CloudError),
}

impl From<ConnectError> for CloudError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::CredentialsRefused(e) | ConnectError::Failed(e) => e,
        }
    }
}

/// What failed re-logins leave behind, kept under [`Connection`]'s
/// re-login lock.
#[derive(Default)]
struct Relogins {
    /// The last re-login that failed, for whatever reason: when it ended,
    /// and its error, answered to the callers that were waiting for it.
    last_failure: Option<(tokio::time::Instant, CloudError)>,
    /// A re-login refused for a catalog grown a region (no region_name
    /// set): until when it is answered from memory, and its error. Each
    /// try posts the password (a Keystone with lockout_failure_attempts
    /// counts it should the password be rotated meanwhile) and reads the
    /// catalog, and only a config naming a region (a restart) or an admin
    /// removing the region mends it.
    region_refused: Option<(tokio::time::Instant, CloudError)>,
    /// The last re-login failure for good (a region refusal, a config or
    /// token warmpool cannot use) warned of: the 401 that asked for the
    /// re-login is at debug and its callers only carry the error, so it is
    /// a WARN, once; the same again (each re-login after the pause) is at
    /// debug.
    warned: Option<CloudError>,
}

/// Keystone's refusals of warmpool's credentials, shared by the re-logins
/// ([`Connection::relogin`]) and osauth's token renewals ([`TokenWatch`]):
/// both post the password, and a Keystone with `lockout_failure_attempts`
/// counts a refusal of either.
#[derive(Default)]
struct Refusals {
    /// The last refusal: until when the password is not posted again, and
    /// the error answered meanwhile.
    paused: Option<(tokio::time::Instant, CloudError)>,
    /// Logins Keystone refused since the last one it took (a re-login or
    /// a renewal), or since the start: the daemon reads clouds.yaml at
    /// start only.
    count: u32,
}

impl Refusals {
    /// The pause's error while it lasts.
    fn active(&self) -> Option<CloudError> {
        self.paused
            .as_ref()
            .filter(|(until, _)| tokio::time::Instant::now() < *until)
            .map(|(_, error)| error.clone())
    }

    /// Keystone refused a login (`message` says how): the next pause
    /// begins, a longer one at each refusal in a row; its error.
    fn refused(&mut self, message: &str) -> CloudError {
        self.count = self.count.saturating_add(1);
        let pause = relogin_pause(self.count);
        let error = CloudError::Fatal(format!(
            "{message} (refused {} in a row: not tried again for {}; mend the credentials in clouds.yaml and restart warmpoold)",
            match self.count {
                1 => "once".to_owned(),
                n => format!("{n} times"),
            },
            humantime::format_duration(pause),
        ));
        self.paused = Some((tokio::time::Instant::now() + pause, error.clone()));
        error
    }
}

/// What every session's [`TokenWatch`] shares with the [`Connection`].
#[derive(Clone)]
struct Watched {
    /// Token requests of the sessions' osauth that failed.
    failures: Arc<AtomicU64>,
    refusals: Arc<Mutex<Refusals>>,
    /// Who logs in, for a refused renewal's message.
    identity: Arc<str>,
    /// A client that opens no connection ([`refusing_client`]), handed to
    /// osauth during the pause: a renewal it would post fails at once.
    /// osauth renews in a token's last ten minutes and never falls back to
    /// the token it holds, so every call of a session whose renewal was
    /// refused fails during the pause; only a token with more than ten
    /// minutes left (another session's) would still serve.
    refusing: reqwest::Client,
    /// Held across every token lookup of the sessions' osauth, so one
    /// renewal is out at a time and the next looks at the pause after it.
    /// Whether osauth renews is decided inside it: calls that arrived
    /// during a renewal had each picked the connecting client before
    /// queueing on osauth's own lock, and each posted the password
    /// Keystone had just refused. A lookup of a live token is a read of
    /// osauth's cache, and osauth's renewal already blocks every lookup of
    /// the session while it is out.
    renewing: Arc<tokio::sync::Mutex<()>>,
}

impl Watched {
    fn refusals(&self) -> std::sync::MutexGuard<'_, Refusals> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the refusals in a row: Keystone took a login (a re-login or a
    /// renewal). Said once, as the refusals were warned of.
    fn took_a_login(&self) {
        let mut refusals = self.refusals();
        let count = refusals.count;
        *refusals = Refusals::default();
        drop(refusals);
        if count > 0 {
            tracing::info!(identity = %self.identity, "Keystone accepts the login again (after {count} refusals)");
        }
    }

    /// The pause's error, when osauth's failure `e` is a refused token
    /// request and the pause is on: what every caller is answered.
    fn paused(&self, e: &osauth::Error) -> Option<CloudError> {
        (e.kind() == osauth::ErrorKind::AuthenticationFailed)
            .then(|| self.refusals().active())
            .flatten()
    }
}

/// A reqwest client that fails every request before opening a connection.
/// It loads no root certificate: it never gets as far as a handshake, and
/// so cannot fail to build on a system store [`http_client`] reports.
fn refusing_client() -> CloudResult<reqwest::Client> {
    client_builder()
        .tls_built_in_root_certs(false)
        .connector_layer(RefuseConnections)
        .build()
        .map_err(|e| {
            CloudError::Fatal(format!(
                "auth: cannot build warmpool's HTTP client: {}",
                with_causes(&e)
            ))
        })
}

/// The connector layer of [`refusing_client`].
#[derive(Clone, Copy)]
struct RefuseConnections;

/// Connects nowhere: the connector [`RefuseConnections`] puts in place.
struct Refused<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Clone for Refused<S> {
    fn clone(&self) -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<S> tower_layer::Layer<S> for RefuseConnections {
    type Service = Refused<S>;

    fn layer(&self, _connector: S) -> Refused<S> {
        Refused(std::marker::PhantomData)
    }
}

impl<S, R> tower_service::Service<R> for Refused<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::future::Ready<Result<S::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        std::future::ready(Err(
            "held back: Keystone refused the password, and the re-login pause is on".into(),
        ))
    }
}

/// The session holder: the current `Session`, the config to rebuild it
/// from, and a generation so concurrent 401s cause a single re-login.
pub struct Connection {
    config: CloudConfig,
    timeout: Duration,
    current: Mutex<(u64, Session)>,
    /// Held while logging in again; holds what the re-logins that failed
    /// leave for the callers that come after them.
    relogin: tokio::sync::Mutex<Relogins>,
    generation: AtomicU64,
    /// Who warmpool logs in as, for messages ("user pool in project service").
    identity: String,
    /// The region the calls go to, as the config names it.
    region: Option<String>,
    /// The region as check-cloud's auth line says it: the one named, or,
    /// with none named, the one the catalog has.
    region_note: String,
    /// The catalog has Cinder as `volumev3` and not as `block-storage`.
    cinder_as_volumev3: AtomicBool,
    /// The id of the project warmpool's token is scoped to, once asked.
    project_id: tokio::sync::OnceCell<String>,
    /// Calls (by [`refusal_key`]) a service answered 401 though sent with
    /// a token of a fresh login, and until when their 401s are not worth
    /// another login. A pause ends by time only: a later login (for another
    /// call, or another paused call's) brings a token no better than the
    /// fresh one refused, and ending the pauses at each login had two
    /// paused calls log each other in again on every call. A new
    /// `Connection` (a restart, credentials read again) starts with none.
    refused_fresh: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Each service's troubles as warned of ([`Trouble`]): an outage (5xx,
    /// timeouts) or throttling (429) is a WARN when it begins and hourly
    /// while it lasts, its every call at debug (the metrics count them),
    /// and its end (a minute of answers, [`QUIET`]) an INFO; so an outage is
    /// neither silent nor a WARN per call and per retry. And each call's
    /// refusals of fresh tokens, apart ([`Troubles::refused_fresh`]).
    trouble: Mutex<Troubles>,
    /// What the sessions' [`TokenWatch`] share: their failed token
    /// requests, Keystone's refusals and the pause.
    watched: Watched,
}

/// How the token lookups [`TokenWatch`] made for the call
/// [`Connection::send_once`] sends went.
#[derive(Default)]
struct TokenLookups {
    /// A token request failed (or was held back during the re-login
    /// pause): the call's failure is then Keystone's.
    failed: Cell<bool>,
    /// A lookup is under way (or was, when the call's timeout dropped
    /// it): a call timing out then waited for Keystone (its renewal, or
    /// another call's it queued behind), not for the service it was for.
    pending: Cell<bool>,
    /// Keystone issued the call's token (a renewal, a forced refresh): it
    /// answers. A token served from osauth's cache is no answer of
    /// Keystone's, which may be out all the while.
    got: Cell<bool>,
}

tokio::task_local! {
    static TOKEN_LOOKUPS: TokenLookups;
}

/// Sets `flag` of the call's [`TokenLookups`], if a call is sending.
fn note_lookup(flag: impl FnOnce(&TokenLookups)) {
    // Outside a call sent by send_once there is no one to tell.
    let _ = TOKEN_LOOKUPS.try_with(flag);
}

/// A session's osauth authentication, counting its token requests that
/// failed. osauth renews a token inside any call, and its failure there
/// has the same shape as a version document's (osauth's error with the
/// status): only this count tells whether the token request failed during
/// a call. Then nothing is asked of the service about the call's failure
/// ([`Connection::behind_osauth`]), which would ask osauth for the token,
/// and so Keystone for another, at each call while Keystone refuses.
///
/// osauth's renewal posts the password (at every call once ten minutes or
/// less of the token are left): a renewal Keystone refuses is a refused
/// login, and starts the re-login pause, during which osauth gets a client
/// that opens no connection, so a renewal fails at once with the pause's
/// error. osauth never falls back to the token it holds, so during the
/// pause the session's every call fails so. Lookups are taken one at a
/// time ([`Watched::renewing`]), and a renewal Keystone takes (a new token
/// on a request) ends the refusals in a row.
#[derive(Clone)]
struct TokenWatch {
    /// The session's own client, whose authentication is used.
    auth: osauth::client::AuthenticatedClient,
    watched: Watched,
    /// The token osauth last put on a request of this session: another
    /// one is a renewal Keystone took. A token osauth finds alive tells
    /// nothing: Keystone may have revoked it, and refused the re-login.
    seen: Arc<Mutex<Option<reqwest::header::HeaderValue>>>,
}

impl std::fmt::Debug for TokenWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // osauth's AuthenticatedClient shows its login body, the password
        // or application credential secret in plain text, and its token.
        f.debug_struct("TokenWatch")
            .field("auth", &format_args!("<not shown>"))
            .finish_non_exhaustive()
    }
}

/// `error`'s message as osauth's refused token request, so that whatever
/// osauth's caller makes of it names the refusal and the pause.
fn as_refusal(error: &CloudError) -> osauth::Error {
    let message = match error {
        CloudError::Fatal(m) => m.clone(),
        other => other.to_string(),
    };
    osauth::Error::new(osauth::ErrorKind::AuthenticationFailed, message)
}

impl TokenWatch {
    /// The client osauth may post the password on, and the pause's error
    /// when it is the one that connects nowhere.
    fn client<'a>(
        &'a self,
        client: &'a reqwest::Client,
    ) -> (&'a reqwest::Client, Option<CloudError>) {
        match self.watched.refusals().active() {
            Some(pause) => (&self.watched.refusing, Some(pause)),
            None => (client, None),
        }
    }

    /// Ends the refusals in a row: Keystone took a token request, and
    /// gave the call its token.
    fn took_a_login(&self) {
        self.watched.took_a_login();
        note_lookup(|lookups| lookups.got.set(true));
    }

    /// Notes the token on `request`; a new one (not the session's first)
    /// was a renewal Keystone took.
    fn note_token(&self, request: &reqwest::RequestBuilder) {
        let Some(token) = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .and_then(|r| r.headers().get("x-auth-token").cloned())
        else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let renewed = seen.as_ref().is_some_and(|last| *last != token);
        *seen = Some(token);
        drop(seen);
        if renewed {
            self.took_a_login();
        }
    }

    fn noting<T>(
        &self,
        held_back: Option<CloudError>,
        done: Result<T, osauth::Error>,
    ) -> Result<T, osauth::Error> {
        note_lookup(|lookups| lookups.pending.set(false));
        let e = match done {
            // A service missing from the catalog sent no token request.
            Err(e) if e.kind() != osauth::ErrorKind::EndpointNotFound => e,
            done => return done,
        };
        self.watched.failures.fetch_add(1, Ordering::SeqCst);
        note_lookup(|lookups| lookups.failed.set(true));
        // Without a connection osauth can only have failed to ask for a
        // token.
        if let Some(pause) = held_back {
            return Err(as_refusal(&pause));
        }
        if e.kind() == osauth::ErrorKind::AuthenticationFailed {
            let message = refused_login(&self.watched.identity, &e);
            let refusal = self.watched.refusals().refused(&message);
            // The one warning of it: the call that asked, and those
            // refused unsent during the pause, log its error at debug.
            tracing::warn!(identity = %self.watched.identity, error = %refusal, "Keystone refused the password when asked to renew the token");
            return Err(as_refusal(&refusal));
        }
        Err(e)
    }
}

#[async_trait::async_trait]
impl osauth::AuthType for TokenWatch {
    async fn authenticate(
        &self,
        client: &reqwest::Client,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, osauth::Error> {
        note_lookup(|lookups| lookups.pending.set(true));
        let _turn = self.watched.renewing.lock().await;
        let (client, held_back) = self.client(client);
        let done = self.auth.auth_type().authenticate(client, request).await;
        if let Ok(request) = &done {
            self.note_token(request);
        }
        self.noting(held_back, done)
    }

    async fn get_endpoint(
        &self,
        client: &reqwest::Client,
        service_type: &str,
        filters: &osauth::EndpointFilters,
    ) -> Result<reqwest::Url, osauth::Error> {
        note_lookup(|lookups| lookups.pending.set(true));
        let _turn = self.watched.renewing.lock().await;
        let (client, held_back) = self.client(client);
        let done = self
            .auth
            .auth_type()
            .get_endpoint(client, service_type, filters)
            .await;
        self.noting(held_back, done)
    }

    async fn refresh(&self, client: &reqwest::Client) -> Result<(), osauth::Error> {
        note_lookup(|lookups| lookups.pending.set(true));
        let _turn = self.watched.renewing.lock().await;
        let (client, held_back) = self.client(client);
        let done = self.auth.auth_type().refresh(client).await;
        if done.is_ok() && held_back.is_none() {
            // A forced renewal, posted and taken.
            self.took_a_login();
        }
        self.noting(held_back, done)
    }
}

/// How long a call a service refused with a fresh token gets its 401s
/// answered without logging in again, whatever logins other calls make
/// meanwhile: access rules an operator mends take effect for that call
/// up to this long later. keystonemiddleware answers 401 to any request no access
/// rule of an application credential allows: such a call is refused
/// whatever the token, and logging in again for each (a quota read every
/// headroom poll) only sent Keystone a login per call and replaced the
/// session, osauth's endpoint cache with it, under the calls in flight.
/// A token revoked meanwhile is still noticed by any other call.
pub const FRESH_TOKEN_REFUSED_PAUSE: Duration = Duration::from_secs(10 * 60);

/// What tells one call's refusals from another's: the service, method and
/// path with object ids left out, and an action's name (`forceDelete`).
fn refusal_key(call: &Call) -> String {
    let is_id = |segment: &str| {
        segment.len() >= 32 && segment.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    };
    let path: Vec<&str> = call
        .path
        .iter()
        .map(|segment| {
            if is_id(segment) {
                "*"
            } else {
                segment.as_str()
            }
        })
        .collect();
    let action = match (&call.body, call.path.last()) {
        (Some(serde_json::Value::Object(body)), Some(last)) if last == "action" => {
            body.keys().next().cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    format!(
        "{} {} /{} {action}",
        call.service.name(),
        call.method,
        path.join("/")
    )
}

impl Connection {
    /// Logs in (one token request), bounded by `timeout`.
    pub async fn connect(
        config: CloudConfig,
        timeout: Duration,
    ) -> Result<Arc<Self>, ConnectError> {
        let identity = identity_of(&config);
        let region = region_of(&config);
        let watched = Watched {
            failures: Arc::new(AtomicU64::new(0)),
            refusals: Arc::default(),
            identity: identity.as_str().into(),
            refusing: refusing_client().map_err(ConnectError::Failed)?,
            renewing: Arc::default(),
        };
        let session = login(&config, timeout, &identity, &watched)
            .await
            .map_err(|failed| match failed {
                LoginFailure {
                    error,
                    credentials_rejected: true,
                } => ConnectError::CredentialsRefused(error),
                LoginFailure { error, .. } => ConnectError::Failed(error),
            })?;
        let region_note = match &region {
            Some(region) => format!("region {region}"),
            None => one_region(&config, timeout, &session)
                .await
                .map_err(ConnectError::Failed)?,
        };
        Ok(Arc::new(Self {
            config,
            timeout,
            current: Mutex::new((0, session)),
            relogin: tokio::sync::Mutex::default(),
            generation: AtomicU64::new(0),
            identity,
            region,
            region_note,
            cinder_as_volumev3: AtomicBool::new(false),
            project_id: tokio::sync::OnceCell::new(),
            refused_fresh: Mutex::default(),
            trouble: Mutex::default(),
            watched,
        }))
    }

    /// "user pool in project service", from the config.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The region warmpool's calls go to: clouds.yaml's `region_name`
    /// (`OS_REGION_NAME` when the config names no clouds.yaml entry and
    /// the `OS_*` variables say where to log in), which osauth picks
    /// endpoints of the catalog by; `None` when none is named (each
    /// service's first endpoint in the catalog, which [`Self::connect`]
    /// and each re-login found all in one region).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// "region RegionOne", or with none named what the catalog has: "no
    /// region named (the catalog has one, RegionOne)".
    pub fn region_note(&self) -> &str {
        &self.region_note
    }

    /// Whether the services warmpool calls are, in the catalog (read now,
    /// one request of Keystone's), in the named region alone: then no
    /// region named reaches this region too, each service's one. `false`
    /// with no region named. A catalog that cannot be read is an error,
    /// not `false`: a Keystone blip must not read as a catalog lacking the
    /// services, which refuses a store for good.
    pub async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        let Some(named) = &self.region else {
            return Ok(false);
        };
        let (_, session) = self.session();
        let catalog = fetch_catalog(&self.config, self.timeout, &session).await?;
        let (_, regions) = regions_in(&session, &catalog);
        Ok(regions.iter().all(|(region, _)| region == named))
    }

    /// The id of the project warmpool works in, as Keystone tells of
    /// warmpool's own token (`GET /v3/auth/tokens`, which a user may ask of
    /// its own token): clouds.yaml may name the project by name only, and
    /// what an admin lists holds every project's objects. Asked once.
    pub async fn project_id(&self) -> CloudResult<String> {
        self.project_id
            .get_or_try_init(|| self.ask_project_id())
            .await
            .cloned()
    }

    /// Not a [`Call`]: Keystone is no service osauth sends calls to, and
    /// the token asked about is the one osauth puts on the request.
    async fn ask_project_id(&self) -> CloudResult<String> {
        let what = "GET /v3/auth/tokens";
        let url = token_url(&self.config).ok_or_else(|| {
            CloudError::Fatal(format!(
                "{what}: clouds.yaml has no usable auth_url to ask Keystone about warmpool's token"
            ))
        })?;
        let (_, session) = self.session();
        let client = session.client().inner().clone();
        let request_id = format!("req-{}", uuid::Uuid::new_v4());
        let osauth_failed = |e: osauth::Error| {
            self.watched
                .paused(&e)
                .unwrap_or_else(|| classify_osauth(what, &e))
        };
        let asked = async {
            // Keystone validates a token of an application credential with
            // access rules only for a caller declaring it understands them
            // (keystone's `_validate_token_access_rules`), and answers
            // anyone else 404 "Failed to validate token". The header asks
            // a validating middleware to enforce the rules on the requests
            // it lets through; warmpool lets none through on this token, it
            // only reads which project it is scoped to.
            let request = client
                .get(url)
                .header("X-OpenStack-Request-ID", request_id.as_str())
                .header("OpenStack-Identity-Access-Rules", "1.0");
            let mut request = session
                .auth_type()
                .authenticate(&client, request)
                .await
                .map_err(osauth_failed)?
                .build()
                .map_err(|e| CloudError::Fatal(format!("{what}: {}", with_causes(&e))))?;
            let token = request
                .headers()
                .get("x-auth-token")
                .cloned()
                .ok_or_else(|| {
                    CloudError::Fatal(format!(
                        "{what}: the configured auth_type gives warmpool no token"
                    ))
                })?;
            request.headers_mut().insert("x-subject-token", token);
            let response = client
                .execute(request)
                .await
                .map_err(|e| CloudError::Transient(format!("{what}: {}", with_causes(&e))))?;
            let status = response.status().as_u16();
            if is_redirect(status) {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok());
                return Err(redirected(what, status, location));
            }
            let retry_after = retry_after_of(&response);
            let body = read_body(response, what).await?;
            Ok::<_, CloudError>(Reply {
                status,
                retry_after,
                body,
            })
        };
        let reply = tokio::time::timeout(self.timeout, asked)
            .await
            .map_err(|_| {
                CloudError::Transient(format!("{what}: no answer within {:?}", self.timeout))
            })??;
        tracing::debug!(call = what, status = reply.status, %request_id, "cloud call");
        if reply.status == 401 {
            // Keystone's own 401, not a service's keystonemiddleware's.
            return Err(CloudError::Fatal(format!(
                "{what}: Keystone refused warmpool's own token when asked which project it is scoped to (HTTP 401): \
                 either it was revoked since the login (or Keystone's fernet keys were rotated), which the next \
                 refused call mends by logging in again, or Keystone's policy identity:validate_token does not \
                 let a user validate its own token (its default does): allow it in Keystone's policy"
            )));
        }
        if !reply.is_success() {
            // Keystone's faults are one key wrapping a message, as Nova's.
            return Err(classify(
                Service::Compute,
                what,
                reply.status,
                reply.retry_after.as_deref(),
                &reply.body,
            ));
        }
        let body: serde_json::Value = serde_json::from_str(&reply.body)
            .map_err(|e| CloudError::Transient(format!("{what}: unreadable answer: {e}")))?;
        body["token"]["project"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                CloudError::Fatal(format!(
                    "{what}: warmpool's token is scoped to no project (give project_name or project_id in clouds.yaml)"
                ))
            })
    }

    /// [`catalog_miss`]'s message for `types` in `session`'s filters,
    /// with the token's catalog (`GET /v3/auth/catalog`, one request of
    /// Keystone's, asked only for a miss, which fails for good).
    async fn catalog_miss(&self, session: &Session, types: &[&str]) -> String {
        let filters = session.endpoint_filters();
        let interfaces: Vec<String> = filters.interfaces.iter().map(|i| i.to_string()).collect();
        let catalog = self.read_catalog(session).await;
        catalog_miss(
            types,
            filters.region.as_deref(),
            &interfaces,
            catalog.as_ref().map(|c| &c["catalog"]),
        )
    }

    /// Keystone's answer to `GET /v3/auth/catalog` for the session's token,
    /// `None` if there is none to read.
    async fn read_catalog(&self, session: &Session) -> Option<serde_json::Value> {
        read_catalog(&self.config, self.timeout, session).await
    }

    fn session(&self) -> (u64, Session) {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Replaces the session by a fresh login unless another caller already
    /// did since `seen_generation`.
    async fn relogin(&self, seen_generation: u64) -> CloudResult<()> {
        let asked = tokio::time::Instant::now();
        let mut relogins = self.relogin.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen_generation {
            return Ok(());
        }
        // The callers that waited here while a re-login failed hear its
        // error: each trying in turn would send Keystone one token
        // request per call failing with 401 (throttled ones too), the
        // last waiting for all the others' timeouts.
        if let Some((ended, error)) = &relogins.last_failure {
            if *ended >= asked {
                return Err(error.clone());
            }
        }
        // Every call failing with 401 must not try the password again: a
        // Keystone with lockout_failure_attempts would lock the user out.
        if let Some(error) = self.watched.refusals().active() {
            return Err(error);
        }
        if let Some((until, error)) = &relogins.region_refused {
            if tokio::time::Instant::now() < *until {
                return Err(error.clone());
            }
        }
        tracing::info!(identity = %self.identity, "the cloud answered 401; logging in again");
        let failed = match login(&self.config, self.timeout, &self.identity, &self.watched).await {
            Ok(session) => {
                self.watched.took_a_login();
                self.identity_answered();
                // The new session's endpoints are looked up afresh: with
                // no region named, a region added to the catalog since
                // the first login could send some services there. The
                // old session stays, its endpoints where they were, and
                // the calls fail for good until a region is named.
                let checked = match &self.region {
                    Some(_) => Ok(()),
                    None => one_region(&self.config, self.timeout, &session)
                        .await
                        .map(drop),
                };
                match checked {
                    Ok(()) => {
                        *relogins = Relogins::default();
                        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                            (generation, session);
                        return Ok(());
                    }
                    Err(error) => {
                        relogins.region_refused = Some((
                            tokio::time::Instant::now() + RELOGIN_PAUSE_MAX,
                            error.clone(),
                        ));
                        self.relogin_failed_for_good(&mut relogins, &error);
                        error
                    }
                }
            }
            // Keystone refused the credentials: the next callers hear it
            // from memory until the pause is over, a longer one at each
            // refusal in a row. A login that failed otherwise (throttled,
            // a proxy's page, a timeout) is tried again by the next caller
            // that did not wait for it.
            Err(LoginFailure {
                error: CloudError::Fatal(message),
                credentials_rejected: true,
            }) => {
                let refusal = self.watched.refusals().refused(&message);
                tracing::warn!(identity = %self.identity, error = %refusal, "Keystone refused the password when logging in again");
                refusal
            }
            Err(failed) => {
                // Keystone's outage or throttling, counted as a call's
                // failed renewal is; its other failures reach the caller.
                if matches!(
                    failed.error,
                    CloudError::Transient(_) | CloudError::Throttled { .. }
                ) {
                    self.token_request_failed("logging in again", &failed.error);
                } else {
                    self.relogin_failed_for_good(&mut relogins, &failed.error);
                }
                failed.error
            }
        };
        relogins.last_failure = Some((tokio::time::Instant::now(), failed.clone()));
        Err(failed)
    }

    /// A WARN of a re-login's failure for good, unless it is the one last
    /// warned of ([`Relogins::warned`]).
    fn relogin_failed_for_good(&self, relogins: &mut Relogins, error: &CloudError) {
        if relogins.warned.as_ref() == Some(error) {
            tracing::debug!(identity = %self.identity, %error, "logging in again failed");
            return;
        }
        tracing::warn!(identity = %self.identity, %error, "logging in again failed, which no retry mends: the calls the cloud answers 401 fail with this error until it is mended (warned of again only if the error changes)");
        relogins.warned = Some(error.clone());
    }

    /// The highest Nova microversion among `candidates` (`None`: none is
    /// supported, or Nova has no microversions).
    pub async fn pick_compute_version(
        &self,
        candidates: &[(u16, u16)],
    ) -> CloudResult<Option<(u16, u16)>> {
        let list: Vec<osauth::ApiVersion> = candidates
            .iter()
            .map(|&(a, b)| osauth::ApiVersion(a, b))
            .collect();
        let (_, session) = self.session();
        let token_failures = self.token_failures();
        let picked = tokio::time::timeout(self.timeout, session.pick_api_version(COMPUTE, list))
            .await
            .map_err(|_| {
                CloudError::Transient(format!(
                    "compute version discovery timed out after {:?}",
                    self.timeout
                ))
            })?;
        let picked = match picked {
            Ok(picked) => picked,
            Err(e) => {
                if let Some(pause) = self.watched.paused(&e) {
                    return Err(pause);
                }
                let what = "compute version discovery";
                if e.kind() == osauth::ErrorKind::EndpointNotFound {
                    let miss = self
                        .catalog_miss(&session, catalog_types(Service::Compute))
                        .await;
                    return Err(CloudError::Fatal(format!("{what}: {miss}")));
                }
                let failed = Failed {
                    error: &e,
                    token_failures,
                };
                return Err(self
                    .behind_osauth(
                        &session,
                        failed,
                        Service::Compute,
                        COMPUTE.catalog_type(),
                        what,
                    )
                    .await
                    .unwrap_or_else(|| classify_osauth(what, &e)));
            }
        };
        Ok(picked.map(|v| (v.0, v.1)))
    }

    /// How many token requests have failed so far.
    fn token_failures(&self) -> u64 {
        self.watched.failures.load(Ordering::SeqCst)
    }

    /// What the endpoint of `catalog_type` answered behind osauth's
    /// failure, when that tells more than osauth's error: a redirect
    /// ([`Self::redirect_behind`]) or a refusal naming a wait
    /// ([`Self::refusal_behind`]). Neither is asked when a token request
    /// failed meanwhile: the failure may be Keystone's, nothing the
    /// service said, and asking the service needs the token osauth could
    /// not get, so it would only send Keystone one more token request. A
    /// token request of another call failing at the same time counts too:
    /// the call's error is then osauth's, without a Retry-After.
    async fn behind_osauth(
        &self,
        session: &Session,
        failed: Failed<'_>,
        service: Service,
        catalog_type: &str,
        what: &str,
    ) -> Option<CloudError> {
        if self.token_failures() != failed.token_failures {
            return None;
        }
        let e = failed.error;
        match self.redirect_behind(session, e, catalog_type, what).await {
            Some(redirect) => Some(redirect),
            None => {
                self.refusal_behind(session, e, service, catalog_type, what)
                    .await
            }
        }
    }

    /// The refusal behind osauth's failure `e`, when it was a 413, 429 or
    /// 503 to the version document of the endpoint of `catalog_type`,
    /// which osauth reads before a session's first call to the service
    /// (a new process's, and every re-login's): often a name's lookup.
    /// osauth keeps no header of that answer, so the cloud's Retry-After
    /// was lost and the caller's own backoff applied instead. The document
    /// is asked for once more, unchecked, with the token the failed read
    /// had ([`Self::behind_osauth`] asks only when no token request
    /// failed), and a refusal still standing is classified as any call's
    /// answer is, its Retry-After kept. `None` when the endpoint answers
    /// otherwise now.
    async fn refusal_behind(
        &self,
        session: &Session,
        e: &osauth::Error,
        service: Service,
        catalog_type: &str,
        what: &str,
    ) -> Option<CloudError> {
        let refused = |status: u16| matches!(status, 413 | 429 | 503);
        if !osauth_status(e).is_some_and(refused) {
            return None;
        }
        let endpoint = endpoint_of(session, catalog_type).await?;
        let what = format!(
            "{what}: reading {project}'s version document (GET {endpoint}) before the session's first {project} call",
            project = service.project()
        );
        let asked = async {
            let response = session
                .client()
                .request(Method::GET, endpoint)
                .timeout(self.timeout)
                .send_unchecked()
                .await
                .ok()?;
            let status = response.status().as_u16();
            if !refused(status) {
                return None;
            }
            let retry_after = retry_after_of(&response);
            let body = read_body(response, &what).await.ok()?;
            Some(classify(
                service,
                &what,
                status,
                retry_after.as_deref(),
                &body,
            ))
        };
        tokio::time::timeout(self.timeout, asked).await.ok()?
    }

    /// The redirect behind osauth's failure `e` at the endpoint of
    /// `catalog_type`, if that is what it was. osauth reads a version
    /// discovery's answer as the version document whatever its status, so
    /// an endpoint redirected as a whole (a host sent from http to https)
    /// failed there as "error decoding response body", a transient error
    /// tried again forever; asking the endpoint once more on the client
    /// that follows no redirect names the redirect to mend instead.
    async fn redirect_behind(
        &self,
        session: &Session,
        e: &osauth::Error,
        catalog_type: &str,
        what: &str,
    ) -> Option<CloudError> {
        if e.kind() != osauth::ErrorKind::ProtocolError || osauth_status(e).is_some() {
            return None;
        }
        let endpoint = endpoint_of(session, catalog_type).await?;
        let response = tokio::time::timeout(
            self.timeout,
            session
                .client()
                .inner()
                .get(endpoint)
                .timeout(self.timeout)
                .send(),
        )
        .await
        .ok()?
        .ok()?;
        let status = response.status().as_u16();
        if !is_redirect(status) {
            return None;
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok());
        Some(redirected(what, status, location))
    }

    /// Sends `call`; on a 401 logs in again and sends it once more. Errors
    /// are transport failures only: HTTP errors come back as a [`Reply`] for
    /// the caller to classify (it knows what a 404 means for its call).
    ///
    /// A call the service refused with a fresh token too is not sent after
    /// a new login again for [`FRESH_TOKEN_REFUSED_PAUSE`]: its 401 is
    /// answered as it comes.
    pub async fn send(&self, call: &Call) -> CloudResult<Reply> {
        // An id from anywhere (an order, the config, the store) that is no
        // one path segment would be dropped or escaped by the URL join,
        // sending another call (`GET /networks/..` became the listing):
        // refused unsent, as no retry mends it.
        if let Some(problem) = call
            .path
            .iter()
            .find_map(|segment| crate::model::path_segment_problem(segment))
        {
            return Err(CloudError::Fatal(format!(
                "{}: not sent: {problem}",
                call.describe()
            )));
        }
        let (generation, session) = self.session();
        let reply = self.send_once(&session, call).await?;
        if reply.status != 401 {
            self.call_answered(call, &reply);
            return Ok(reply);
        }
        let key = refusal_key(call);
        if self.refused_with_fresh_token(&key) {
            self.fresh_token_refused(call, &key, &reply);
            return Ok(reply);
        }
        let started = tokio::time::Instant::now();
        if let Err(e) = self.relogin(generation).await {
            // The call failed at Keystone, not at its service.
            note_side_call(SideCall {
                service: CloudService::Identity,
                took: started.elapsed(),
                error: Some(e.clone()),
            });
            return Err(e);
        }
        let (_, session) = self.session();
        let reply = self.send_once(&session, call).await?;
        if reply.status == 401 {
            let until = tokio::time::Instant::now() + FRESH_TOKEN_REFUSED_PAUSE;
            self.lock_refused_fresh().insert(key.clone(), until);
            self.fresh_token_refused(call, &key, &reply);
        } else {
            self.call_answered(call, &reply);
        }
        Ok(reply)
    }

    fn lock_refused_fresh(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::time::Instant>> {
        self.refused_fresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the call `key` was refused a fresh token within the pause.
    fn refused_with_fresh_token(&self, key: &str) -> bool {
        let mut refused = self.lock_refused_fresh();
        let now = tokio::time::Instant::now();
        refused.retain(|_, until| now < *until);
        refused.contains_key(key)
    }

    /// Cinder's microversions (min, max) from its version document, looked
    /// up under `block-storage`, or else (and from then on) under
    /// `volumev3`, where [`Self::send_to_cinder`] then sends. osauth caches
    /// the document for the session.
    async fn cinder_versions(
        &self,
        session: &Session,
    ) -> Result<Option<(osauth::ApiVersion, osauth::ApiVersion)>, osauth::Error> {
        let missing = |e: &osauth::Error| e.kind() == osauth::ErrorKind::EndpointNotFound;
        if !self.cinder_as_volumev3.load(Ordering::Relaxed) {
            match session.get_api_versions(BLOCK_STORAGE).await {
                Err(e) if missing(&e) => {}
                found => return found,
            }
        }
        match session.get_api_versions(VolumeV3).await {
            // Named, with the region and interface, by send_once.
            Err(e) if missing(&e) => Err(e),
            found => {
                self.cinder_as_volumev3.store(true, Ordering::Relaxed);
                found
            }
        }
    }

    /// Sends `call` to Cinder under the catalog type
    /// [`Self::cinder_versions`] found it under.
    async fn send_to_cinder(
        &self,
        session: &Session,
        call: &Call,
        request_id: &str,
    ) -> Result<reqwest::Response, osauth::Error> {
        if self.cinder_as_volumev3.load(Ordering::Relaxed) {
            send_via(session, VolumeV3, call, request_id, self.timeout).await
        } else {
            send_via(session, BLOCK_STORAGE, call, request_id, self.timeout).await
        }
    }

    async fn send_once(&self, session: &Session, call: &Call) -> CloudResult<Reply> {
        let what = call.describe();
        let request_id = format!("req-{}", uuid::Uuid::new_v4());
        let started = tokio::time::Instant::now();
        let token_failures = self.token_failures();
        let sending = tokio::time::timeout(self.timeout, async {
            let sent = match call.service {
                Service::Compute => {
                    send_via(session, COMPUTE, call, &request_id, self.timeout).await
                }
                Service::BlockStorage => match self.cinder_versions(session).await {
                    // osauth sends to the version document's `self` link,
                    // which has no project id; a Cinder before 3.67
                    // (Yoga) routes its API only under it.
                    Ok(Some((_, max))) if max < CINDER_PROJECT_ID_OPTIONAL => {
                        let mut call = call.clone();
                        call.path.insert(0, self.project_id().await?);
                        self.send_to_cinder(session, &call, &request_id).await
                    }
                    Ok(_) => self.send_to_cinder(session, call, &request_id).await,
                    Err(e) => Err(e),
                },
                Service::Network => {
                    send_via(session, NETWORK, call, &request_id, self.timeout).await
                }
                Service::Image => send_via(session, IMAGE, call, &request_id, self.timeout).await,
            };
            let response = match sent {
                Ok(response) => response,
                // A 401 inside osauth (token renewal, version discovery) is
                // the same signal as a 401 answer: log in again. During the
                // pause the re-login is paused too: its error, at once.
                Err(e) if e.kind() == osauth::ErrorKind::AuthenticationFailed => {
                    if let Some(pause) = self.watched.paused(&e) {
                        return Err(pause);
                    }
                    return Ok((
                        Reply {
                            status: 401,
                            retry_after: None,
                            body: e.to_string(),
                        },
                        None,
                    ));
                }
                // The token request osauth made inside the call (a
                // renewal) failed, and the call with it: Keystone's
                // answer, said as Keystone's, not as the service's.
                Err(e) if TOKEN_LOOKUPS.with(|lookups| lookups.failed.get()) => {
                    let renewing = format!(
                        "{what}: renewing warmpool's token (Keystone's token request, POST /v3/auth/tokens)"
                    );
                    if unreadable_token(&e) {
                        return Err(CloudError::Fatal(format!(
                            "{renewing}: {}",
                            unreadable_token_reason(&self.identity)
                        )));
                    }
                    return Err(classify_osauth(&renewing, &e));
                }
                Err(e) if e.kind() == osauth::ErrorKind::EndpointNotFound => {
                    let miss = self
                        .catalog_miss(session, catalog_types(call.service))
                        .await;
                    return Err(CloudError::Fatal(format!("{what}: {miss}")));
                }
                Err(e) => {
                    let catalog_type = match call.service {
                        Service::Compute => COMPUTE.catalog_type(),
                        Service::BlockStorage
                            if self.cinder_as_volumev3.load(Ordering::Relaxed) =>
                        {
                            VolumeV3.catalog_type()
                        }
                        Service::BlockStorage => BLOCK_STORAGE.catalog_type(),
                        Service::Network => NETWORK.catalog_type(),
                        Service::Image => IMAGE.catalog_type(),
                    };
                    let failed = Failed {
                        error: &e,
                        token_failures,
                    };
                    return Err(self
                        .behind_osauth(session, failed, call.service, catalog_type, &what)
                        .await
                        .unwrap_or_else(|| classify_osauth(&what, &e)));
                }
            };
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if is_redirect(status) {
                return Err(redirected(&what, status, header("location").as_deref()));
            }
            let retry_after = header("retry-after");
            let cloud_id =
                header("x-openstack-request-id").or_else(|| header("x-compute-request-id"));
            let body = read_body(response, &what).await?;
            Ok::<_, CloudError>((
                Reply {
                    status,
                    retry_after,
                    body,
                },
                cloud_id,
            ))
        });
        let (result, (token_request_failed, token_pending, got_token)) = TOKEN_LOOKUPS
            .scope(TokenLookups::default(), async {
                let result = sending.await;
                let lookups = TOKEN_LOOKUPS.with(|lookups| {
                    (
                        lookups.failed.get(),
                        lookups.pending.get(),
                        lookups.got.get(),
                    )
                });
                (result, lookups)
            })
            .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let service = call.service.name();
        if got_token && !token_request_failed && !token_pending {
            // Keystone issued the call's token: it may end its outage.
            self.identity_answered();
        } else if !token_request_failed
            && !token_pending
            && matches!(&result, Ok(Ok((reply, _))) if reply.status != 401)
        {
            // A token from osauth's cache: it may only complete an end
            // a token Keystone issued began ([`Trouble::confirmed`]).
            self.identity_confirmed();
        }
        match result {
            // The call's time ran out in a token lookup: Keystone did not
            // answer its renewal (or another call's it queued behind).
            // Blamed on the service, the service's "outage" ended at its
            // next answer though it had answered every call it was sent.
            Err(_) if token_pending => {
                let e = CloudError::Transient(format!(
                    "{what}: no answer within {:?}: renewing warmpool's token, Keystone did not answer (POST /v3/auth/tokens)",
                    self.timeout
                ));
                self.token_request_failed(&what, &e);
                note_side_call(SideCall {
                    service: CloudService::Identity,
                    took: started.elapsed(),
                    error: Some(e.clone()),
                });
                Err(e)
            }
            Err(_) => {
                let said = self.noted(call.service.into(), Outcome::Failed);
                match failure_warning(&said, call.service.into(), "cloud call timed out") {
                    Some(warning) => {
                        tracing::warn!(service, call = %what, %request_id, latency_ms, "{warning}")
                    }
                    None => {
                        tracing::debug!(service, call = %what, %request_id, latency_ms, "cloud call timed out")
                    }
                }
                Err(CloudError::Transient(format!(
                    "{what}: no answer within {:?}",
                    self.timeout
                )))
            }
            Ok(Err(e)) => {
                // A call refused during Keystone's pause was never sent:
                // the refusal that began the pause was warned of, and
                // every call until it ends hears it again. A transport
                // failure (or a 5xx, a 429 to the version document) is the
                // service's outage or throttling as an answer's is; a
                // failed token request is Keystone's, counted as such.
                let paused = self.watched.refusals().active().as_ref() == Some(&e);
                let outcome = match &e {
                    _ if paused || token_request_failed => None,
                    CloudError::Transient(_) => Some(Outcome::Failed),
                    CloudError::Throttled { .. } => Some(Outcome::Throttled),
                    _ => None,
                };
                match outcome.map(|outcome| self.noted(call.service.into(), outcome)) {
                    _ if paused => {
                        tracing::debug!(service, call = %what, %request_id, latency_ms, error = %e, "cloud call not sent: Keystone's pause")
                    }
                    _ if token_request_failed => self.token_request_failed(&what, &e),
                    Some(Said::ThrottleWarned) => {
                        tracing::warn!(service, call = %what, %request_id, latency_ms, error = %e, "{THROTTLE_WARNING}")
                    }
                    Some(said) => {
                        match failure_warning(&said, call.service.into(), "cloud call failed") {
                            Some(warning) => {
                                tracing::warn!(service, call = %what, %request_id, latency_ms, error = %e, "{warning}")
                            }
                            None => {
                                tracing::debug!(service, call = %what, %request_id, latency_ms, error = %e, "cloud call failed")
                            }
                        }
                    }
                    None => {
                        tracing::warn!(service, call = %what, %request_id, latency_ms, error = %e, "cloud call failed")
                    }
                }
                if token_request_failed {
                    note_side_call(SideCall {
                        service: CloudService::Identity,
                        took: started.elapsed(),
                        error: Some(e.clone()),
                    });
                }
                Err(e)
            }
            Ok(Ok((reply, cloud_id))) => {
                let cloud_request_id = cloud_id.unwrap_or_default();
                // 404 is an expected answer (deletes are idempotent, waits
                // poll until gone). A 429 is counted in the metrics and
                // paced by the gate, and a 5xx is retried: each is warned
                // of when it begins and hourly while it lasts (`noted`).
                // Other errors are a warning each: each is its own problem.
                let outcome = match reply.status {
                    429 => Some(Outcome::Throttled),
                    // Nova's rate limit (and older Cinder's) is a 413 with
                    // a Retry-After, which `classify` reads as throttling
                    // as it does a 429; a 413 naming a quota is a refusal.
                    413 if matches!(
                        classify(
                            call.service,
                            &what,
                            reply.status,
                            reply.retry_after.as_deref(),
                            &reply.body
                        ),
                        CloudError::Throttled { .. }
                    ) =>
                    {
                        Some(Outcome::Throttled)
                    }
                    // `send` tells a 401 that a login mends (an expired or
                    // revoked token, said at INFO) from a fresh token's
                    // ([`Connection::fresh_token_refused`]).
                    401 => None,
                    s if s >= 500 => Some(Outcome::Failed),
                    _ => Some(Outcome::Answered),
                };
                let said = outcome.map_or(Said::Debug, |outcome| {
                    self.noted(call.service.into(), outcome)
                });
                // A refusal (409, 403, ...) is an answer all the same: it
                // can end an outage, and is warned of itself.
                let refused = reply.status >= 400
                    && reply.status != 404
                    && !(reply.status == 403 && call.forbidden_is_an_answer)
                    && outcome == Some(Outcome::Answered);
                if let Some(warning) = failure_warning(
                    &said,
                    call.service.into(),
                    "cloud call answered a server error",
                ) {
                    tracing::warn!(service, call = %what, status = reply.status, %request_id, %cloud_request_id, latency_ms, "{warning}");
                } else if said == Said::ThrottleWarned {
                    tracing::warn!(service, call = %what, status = reply.status, retry_after = ?reply.retry_after, %request_id, %cloud_request_id, "{THROTTLE_WARNING}");
                } else if refused {
                    tracing::warn!(service, call = %what, status = reply.status, %request_id, %cloud_request_id, latency_ms, "cloud call answered an error");
                } else {
                    tracing::debug!(service, call = %what, status = reply.status, %request_id, %cloud_request_id, latency_ms, "cloud call");
                }
                self.say_answers_again(call.service.into(), &said);
                Ok(reply)
            }
        }
    }

    /// Logs Keystone's failure `e` of a token request (for the call
    /// `what`, or a re-login) as Keystone's outage or throttling
    /// ([`Trouble`] under "identity"): one WARN when it begins and hourly,
    /// the rest at debug. Any other failure (an unreadable token) is a
    /// WARN each.
    fn token_request_failed(&self, what: &str, e: &CloudError) {
        let outcome = match e {
            CloudError::Transient(_) => Some(Outcome::Failed),
            CloudError::Throttled { .. } => Some(Outcome::Throttled),
            _ => None,
        };
        let said = outcome.map(|outcome| self.noted(Subject::Identity, outcome));
        let how = "warmpool's token request failed";
        match said {
            Some(Said::ThrottleWarned) => {
                tracing::warn!(service = "identity", call = %what, error = %e, "{THROTTLE_WARNING}")
            }
            Some(said) => match failure_warning(&said, Subject::Identity, how) {
                Some(warning) => {
                    tracing::warn!(service = "identity", call = %what, error = %e, "{warning}")
                }
                None => tracing::debug!(service = "identity", call = %what, error = %e, "{how}"),
            },
            None => tracing::warn!(service = "identity", call = %what, error = %e, "{how}"),
        }
    }

    /// Keystone gave a call its token, or took a login: it may end its
    /// warned outage or 429 spell.
    fn identity_answered(&self) {
        let said = self.noted(Subject::Identity, Outcome::Answered);
        self.say_answers_again(Subject::Identity, &said);
    }

    /// A call ran on a token from osauth's cache: the end of Keystone's
    /// outage, if Keystone issued a token since its last failure a quiet
    /// minute ago ([`Trouble::confirmed`]).
    fn identity_confirmed(&self) {
        let now = tokio::time::Instant::now();
        let said = self
            .lock_trouble()
            .subjects
            .get_mut(Subject::Identity.name())
            .map_or(Said::Debug, |trouble| trouble.confirmed(now));
        self.say_answers_again(Subject::Identity, &said);
    }

    /// The INFO of an answer ending a warned spell, when `said` is one.
    fn say_answers_again(&self, subject: Subject, said: &Said) {
        if let Said::AnswersAgain {
            failed,
            throttled,
            took,
        } = *said
        {
            tracing::info!(
                service = subject.name(),
                "{}",
                answers_again(subject, failed, throttled, took)
            );
        }
    }

    /// The service refused a token Keystone had just issued (a 401 after a
    /// fresh login, or within [`FRESH_TOKEN_REFUSED_PAUSE`] of one) to the
    /// call `key` ([`refusal_key`]): no login mends it, the credentials or
    /// the service's setup must be. One WARN at most hourly for that call
    /// ([`Troubles::refused_fresh`]), the rest at debug; its answer a
    /// minute after the last refusal ends them ([`Self::call_answered`]).
    /// Kept apart from the service's
    /// [`Trouble`]: one call refused (an access rule missing for it) says
    /// nothing of the service's other calls, and counted in its spell a
    /// refusal every few minutes kept an outage open, or ended the spell
    /// (an INFO, then a WARN again) at each of the other calls' answers.
    fn fresh_token_refused(&self, call: &Call, key: &str, reply: &Reply) {
        let said = self
            .lock_trouble()
            .refused_fresh(key, tokio::time::Instant::now());
        let (service, project) = (call.service.name(), call.service.project());
        let pause = humantime::format_duration(FRESH_TOKEN_REFUSED_PAUSE);
        let warning = match said {
            Said::RefusalWarned { refused, took } if refused > 1 => format!(
                "{service} ({project}) still refuses warmpool's fresh tokens (HTTP 401) to this call, {refused} calls over {}: check the credentials",
                humantime::format_duration(whole_seconds(took))
            ),
            Said::RefusalWarned { .. } => format!(
                "{service} ({project}) refused a token Keystone had just issued (HTTP 401): check the credentials (the user's roles in the project, an application credential's access rules), the service's keystone_authtoken settings, or Keystone's replication; this call's 401s are not met with another login for {pause}, and are logged at debug until it is answered a minute or more after the last (warned of again hourly while they last)"
            ),
            _ => {
                tracing::debug!(service, call = %call.describe(), status = reply.status, "the service refused a fresh token");
                return;
            }
        };
        tracing::warn!(service, call = %call.describe(), refused_call = key, status = reply.status, "{warning}");
    }

    /// `call` was answered `reply`: when the service took its token (no
    /// 401, nor a 5xx or 429 a proxy or rate limit in front of it may have
    /// answered), the end of the call's refusals of fresh tokens, if it
    /// had any and this answer ends them ([`Troubles::answered`]), is an
    /// INFO.
    fn call_answered(&self, call: &Call, reply: &Reply) {
        if matches!(reply.status, 401 | 429) || reply.status >= 500 {
            return;
        }
        let mut trouble = self.lock_trouble();
        if trouble.refused.is_empty() {
            return;
        }
        let key = refusal_key(call);
        let Some((refused, took)) = trouble.answered(&key, tokio::time::Instant::now()) else {
            return;
        };
        drop(trouble);
        let (service, project) = (call.service.name(), call.service.project());
        let over = match whole_seconds(took) {
            d if d.is_zero() => String::new(),
            d => format!(" over {}", humantime::format_duration(d)),
        };
        tracing::info!(service, refused_call = %key, "{service} ({project}) answers again after {refused} calls refusing warmpool's fresh token (HTTP 401){over}");
    }
}

impl Connection {
    /// Notes how a call to `subject` went, and says what that is worth in
    /// the log ([`Trouble`]).
    fn noted(&self, subject: Subject, outcome: Outcome) -> Said {
        let now = tokio::time::Instant::now();
        self.lock_trouble().noted(subject, outcome, now)
    }

    fn lock_trouble(&self) -> std::sync::MutexGuard<'_, Troubles> {
        self.trouble.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whose calls a [`Trouble`] counts: a service's, or Keystone's token
/// requests (a call's renewal, a re-login).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    Service(Service),
    Identity,
}

impl From<Service> for Subject {
    fn from(service: Service) -> Self {
        Subject::Service(service)
    }
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Service(service) => service.name(),
            Subject::Identity => "identity",
        }
    }

    fn project(self) -> &'static str {
        match self {
            Subject::Service(service) => service.project(),
            Subject::Identity => "Keystone",
        }
    }
}

/// How a call went, as [`Trouble`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// An answer other than a 429 or a 5xx (a 2xx, a 404, a 409, a 403,
    /// ...): the service is up, whatever it thinks of the call.
    Answered,
    /// A 5xx, a timeout or a transport failure: the service is out.
    Failed,
    /// A 429 (or a rate limit's 413): the service throttles warmpool's
    /// calls.
    Throttled,
}

/// What a call's [`Outcome`] is worth in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    /// Nothing above debug.
    Debug,
    /// The service's first failure since it last answered.
    OutageBegins,
    /// An hour since the outage was last warned of, and it lasts.
    OutageLasts { failed: u64, took: Duration },
    /// The first 429 of the service in an hour.
    ThrottleWarned,
    /// A call's first 401 to a fresh token, or an hour since its refusals
    /// were last warned of ([`Troubles::refused_fresh`]).
    RefusalWarned { refused: u64, took: Duration },
    /// An answer ending a warned outage or 429 spell: the service has
    /// answered and had no failure nor 429 for [`QUIET`].
    AnswersAgain {
        failed: u64,
        throttled: u64,
        took: Duration,
    },
}

const HOURLY: Duration = Duration::from_secs(3600);

/// The warning of a 429 (of a service's first in an hour).
const THROTTLE_WARNING: &str = "the cloud throttles warmpool's calls (HTTP 429): they wait out its Retry-After; warned of again in an hour if it lasts, and its end is logged (every 429 is counted in warmpool_cloud_request_duration_seconds_count{status=\"throttled\"} and logged at debug)";

/// A service's troubles as warned of. An outage (5xx, timeouts) is a WARN
/// at its first failure and hourly while it lasts; a 429 a WARN at most
/// hourly, as throttling comes and goes with the load. Either lasts until
/// the service has answered with no failure nor 429 for [`QUIET`]: its
/// first answer then is an INFO, and the next failure a new outage's
/// WARN. Every call in between is at debug (the metrics count them all).
/// Keystone's token requests have one of their own ([`Subject::Identity`]).
#[derive(Debug, Default)]
struct Trouble {
    /// When a 429 of the service was last warned of.
    throttle_warned: Option<tokio::time::Instant>,
    /// The outage or 429 spell warned of that has not ended yet.
    spell: Option<Spell>,
}

#[derive(Debug)]
struct Spell {
    since: tokio::time::Instant,
    /// When its failures were last warned of; none while it only throttles.
    failures_warned: Option<tokio::time::Instant>,
    failed: u64,
    throttled: u64,
    /// Its last failure or 429.
    last: tokio::time::Instant,
    /// The service's first answer since `last`, if any.
    answered: Option<tokio::time::Instant>,
}

/// How long a service answers without a failure or a 429 before its
/// outage or throttling is over. One answer is not enough: a service
/// failing some calls (one bad API worker behind the balancer) or
/// throttling at a rate limit mixes answers with failures, and answers
/// in flight when an outage begins arrive after its first failure; each
/// answer ending the spell made a WARN and an INFO of every failure.
const QUIET: Duration = Duration::from_secs(60);

impl Trouble {
    fn noted(&mut self, outcome: Outcome, now: tokio::time::Instant) -> Said {
        let an_hour_since =
            |at: Option<tokio::time::Instant>| at.is_none_or(|at| now.duration_since(at) >= HOURLY);
        let new_spell = || Spell {
            since: now,
            failures_warned: None,
            failed: 0,
            throttled: 0,
            last: now,
            answered: None,
        };
        // A spell whose last failure is the quiet period past is over: an
        // answer now says so; a failure now begins a new one if the
        // service answered in between (its end unsaid: no call came to
        // say it), and continues it if the service has not answered since.
        let quiet = self
            .spell
            .as_ref()
            .is_some_and(|spell| now.duration_since(spell.last) >= QUIET);
        let answered_since = self
            .spell
            .as_ref()
            .is_some_and(|spell| spell.answered.is_some());
        let over = quiet && (outcome == Outcome::Answered || answered_since);
        if over && outcome != Outcome::Answered {
            self.spell = None;
        }
        match outcome {
            Outcome::Answered => match self.spell.as_mut() {
                Some(spell) if over => {
                    let said = Said::AnswersAgain {
                        failed: spell.failed,
                        throttled: spell.throttled,
                        took: spell.answered.unwrap_or(now).duration_since(spell.since),
                    };
                    self.spell = None;
                    said
                }
                Some(spell) => {
                    spell.answered.get_or_insert(now);
                    Said::Debug
                }
                None => Said::Debug,
            },
            Outcome::Throttled => {
                // A 429 within the hour of the last warning is at debug, and
                // so is its end when no spell was open (it ended, said so).
                let warn = an_hour_since(self.throttle_warned);
                let spell = if warn {
                    self.throttle_warned = Some(now);
                    Some(self.spell.get_or_insert_with(new_spell))
                } else {
                    self.spell.as_mut()
                };
                if let Some(spell) = spell {
                    spell.throttled += 1;
                    spell.last = now;
                    spell.answered = None;
                }
                if warn {
                    Said::ThrottleWarned
                } else {
                    Said::Debug
                }
            }
            Outcome::Failed => {
                let spell = self.spell.get_or_insert_with(new_spell);
                spell.failed += 1;
                spell.last = now;
                spell.answered = None;
                let said = match spell.failures_warned {
                    None => Said::OutageBegins,
                    at if an_hour_since(at) => Said::OutageLasts {
                        failed: spell.failed,
                        took: now.duration_since(spell.since),
                    },
                    Some(_) => return Said::Debug,
                };
                spell.failures_warned = Some(now);
                said
            }
        }
    }
}

impl Trouble {
    /// A call on a token osauth served from its cache: no answer of
    /// Keystone's, so it begins no end of Keystone's outage ("identity").
    /// But once Keystone has issued a token since the outage's last
    /// failure (the spell's `answered`, too soon after that failure to end
    /// it), such a call a quiet minute ([`QUIET`]) after that failure ends
    /// it: the calls then run on that token for its lifetime (an hour),
    /// and the INFO waited for the next renewal, or never came.
    fn confirmed(&mut self, now: tokio::time::Instant) -> Said {
        match &self.spell {
            Some(spell) if spell.answered.is_some() && now.duration_since(spell.last) >= QUIET => {
                self.noted(Outcome::Answered, now)
            }
            _ => Said::Debug,
        }
    }
}

/// What [`Connection::trouble`] keeps: each service's [`Trouble`] (and
/// Keystone's, "identity"), and each call's refusals of fresh tokens.
#[derive(Debug, Default)]
struct Troubles {
    /// By [`Subject::name`].
    subjects: HashMap<&'static str, Trouble>,
    /// By [`refusal_key`]: the calls refused a fresh token whose refusals
    /// have not ended, or were warned of within the hour.
    refused: HashMap<String, CallRefusals>,
}

/// A call's 401s to fresh tokens, as warned of: as a service's 429s are
/// ([`Trouble`]), a WARN at most hourly, and an end only an answer a
/// minute ([`QUIET`]) after the last refusal makes. A call refused some
/// of the time (one of several API nodes behind the balancer with a
/// broken keystone_authtoken) is answered in between: each answer ending
/// the refusals made a WARN and an INFO of every refusal.
#[derive(Debug, Default)]
struct CallRefusals {
    /// When the call's refusals were last warned of.
    warned: Option<tokio::time::Instant>,
    /// The refusals warned of that have not ended yet. Refusals coming
    /// back within the hour of the warning are at debug, their end too.
    spell: Option<RefusalSpell>,
}

#[derive(Debug)]
struct RefusalSpell {
    since: tokio::time::Instant,
    refused: u64,
    /// Its last refusal.
    last: tokio::time::Instant,
    /// The call's first answer since `last`, if any.
    answered: Option<tokio::time::Instant>,
}

impl Troubles {
    /// How a call to `subject` went ([`Trouble::noted`]).
    fn noted(&mut self, subject: Subject, outcome: Outcome, now: tokio::time::Instant) -> Said {
        self.subjects
            .entry(subject.name())
            .or_default()
            .noted(outcome, now)
    }

    /// The call `key` was refused a fresh token: warned of when an hour
    /// has passed since its refusals were last warned of, or never were
    /// ([`Said::RefusalWarned`]); the rest [`Said::Debug`]. The service's
    /// [`Trouble`] is not touched: the call's refusals are its own.
    fn refused_fresh(&mut self, key: &str, now: tokio::time::Instant) -> Said {
        let call = self.refused.entry(key.to_owned()).or_default();
        let warn = call
            .warned
            .is_none_or(|at| now.duration_since(at) >= HOURLY);
        let spell = if warn {
            call.warned = Some(now);
            Some(call.spell.get_or_insert(RefusalSpell {
                since: now,
                refused: 0,
                last: now,
                answered: None,
            }))
        } else {
            call.spell.as_mut()
        };
        let Some(spell) = spell else {
            return Said::Debug;
        };
        spell.refused += 1;
        spell.last = now;
        spell.answered = None;
        if !warn {
            return Said::Debug;
        }
        Said::RefusalWarned {
            refused: spell.refused,
            took: now.duration_since(spell.since),
        }
    }

    /// The call `key` was answered (not 401): the refusals it ends (how
    /// many, over how long), when it is answered a minute ([`QUIET`]) or
    /// more after the last of them; an answer sooner only starts the
    /// quiet minute.
    fn answered(&mut self, key: &str, now: tokio::time::Instant) -> Option<(u64, Duration)> {
        let call = self.refused.get_mut(key)?;
        let Some(spell) = call.spell.as_mut() else {
            // Nothing to end; once its warning is an hour old the call is
            // forgotten (its next refusal is warned of as a first).
            if call
                .warned
                .is_none_or(|at| now.duration_since(at) >= HOURLY)
            {
                self.refused.remove(key);
            }
            return None;
        };
        if now.duration_since(spell.last) < QUIET {
            spell.answered.get_or_insert(now);
            return None;
        }
        let ended = (
            spell.refused,
            spell.answered.unwrap_or(now).duration_since(spell.since),
        );
        call.spell = None;
        Some(ended)
    }
}

/// The WARN of a failure (`how`: "cloud call timed out") worth one, or
/// none (debug).
fn failure_warning(said: &Said, subject: Subject, how: &str) -> Option<String> {
    let (name, project) = (subject.name(), subject.project());
    match said {
        Said::OutageBegins => Some(format!(
            "{how}; further failures of {name} ({project}) are logged at debug until it has answered steadily again (warned of again hourly while they last; the metrics count each)"
        )),
        Said::OutageLasts { failed, took } => Some(format!(
            "{how}: {name} ({project}) still fails warmpool's calls, {failed} failed over {}; further failures are logged at debug until it has answered steadily again",
            humantime::format_duration(whole_seconds(*took))
        )),
        _ => None,
    }
}

/// The INFO of the answer ending a warned outage or 429 spell.
fn answers_again(subject: Subject, failed: u64, throttled: u64, took: Duration) -> String {
    let calls = match (failed, throttled) {
        (f, 0) => format!("{f} failed calls"),
        (0, t) => format!("{t} throttled calls (throttling ended)"),
        (f, t) => format!("{f} failed and {t} throttled calls"),
    };
    let over = match whole_seconds(took) {
        d if d.is_zero() => String::new(),
        d => format!(" over {}", humantime::format_duration(d)),
    };
    format!(
        "{} ({}) answers again after {calls}{over}",
        subject.name(),
        subject.project()
    )
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// An answer's Retry-After header, as sent (seconds or an HTTP date).
fn retry_after_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// osauth's failure of a call, and how many token requests had failed
/// before the call was sent ([`Connection::token_failures`]).
struct Failed<'a> {
    error: &'a osauth::Error,
    token_failures: u64,
}

/// The endpoint of `catalog_type` osauth reads the version document of:
/// clouds.yaml's override, or the catalog's.
async fn endpoint_of(session: &Session, catalog_type: &str) -> Option<reqwest::Url> {
    match session.endpoint_overrides().get(catalog_type) {
        Some(url) => Some(url.clone()),
        None => session
            .client()
            .get_endpoint(catalog_type, session.endpoint_filters())
            .await
            .ok(),
    }
}

async fn send_via<S>(
    session: &Session,
    service: S,
    call: &Call,
    request_id: &str,
    timeout: Duration,
) -> Result<reqwest::Response, osauth::Error>
where
    S: osauth::services::ServiceType + Send + Clone + 'static,
{
    let mut builder = session
        .request(service, call.method.clone(), &call.path)
        .header("X-OpenStack-Request-ID", request_id)
        .timeout(timeout);
    if !call.query.is_empty() {
        builder = builder.query(&call.query);
    }
    if let Some(body) = &call.body {
        builder = builder.json(body);
    }
    if let Some((major, minor)) = call.microversion {
        let version = format!("{major}.{minor}");
        builder = match call.service {
            // The old-style header is the one every Nova since 2.1 reads;
            // the new-style one is what newer services expect.
            Service::Compute => builder
                .header("X-OpenStack-Nova-API-Version", version.as_str())
                .header("OpenStack-API-Version", format!("compute {version}")),
            Service::BlockStorage => {
                builder.header("OpenStack-API-Version", format!("volume {version}"))
            }
            Service::Network | Service::Image => builder,
        };
    }
    builder.send_unchecked().await
}

/// "user pool in project service" from the config's auth section, for
/// messages (the config's fields are private; its serialised form is not).
fn identity_of(config: &CloudConfig) -> String {
    let value = serde_yaml::to_value(config).unwrap_or_default();
    let auth = &value["auth"];
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| auth[*k].as_str())
            .map(str::to_owned)
    };
    let user = field(&["username", "user_id"]);
    let who = match (
        user,
        field(&["application_credential_name", "application_credential_id"]),
    ) {
        (_, Some(credential)) => format!("application credential {credential}"),
        (Some(user), None) => format!("user {user}"),
        (None, None) => "the configured user".to_owned(),
    };
    match field(&["project_name", "project_id"]) {
        Some(project) => format!("{who} in project {project}"),
        None => who,
    }
}

/// Keystone's answer to `GET /v3/auth/catalog` for `session`'s token,
/// `None` if there is none to read.
async fn read_catalog(
    config: &CloudConfig,
    timeout: Duration,
    session: &Session,
) -> Option<serde_json::Value> {
    fetch_catalog(config, timeout, session).await.ok()
}

/// [`read_catalog`], saying why the catalog could not be read: a timeout,
/// no answer or Keystone's 5xx/429 is transient, so a caller's retry asks
/// again.
async fn fetch_catalog(
    config: &CloudConfig,
    timeout: Duration,
    session: &Session,
) -> CloudResult<serde_json::Value> {
    let what = "GET /v3/auth/catalog";
    let url = keystone_url(config, "auth/catalog").ok_or_else(|| {
        CloudError::Fatal(format!(
            "{what}: clouds.yaml has no usable auth_url to read the service catalog from"
        ))
    })?;
    let client = session.client().inner().clone();
    let asked = async {
        let request = session
            .auth_type()
            .authenticate(&client, client.get(url))
            .await
            .map_err(|e| classify_osauth(what, &e))?;
        let response = request
            .send()
            .await
            .map_err(|e| CloudError::Transient(format!("{what}: {}", with_causes(&e))))?;
        let status = response.status().as_u16();
        let retry_after = retry_after_of(&response);
        let body = read_body(response, what).await?;
        if !(200..300).contains(&status) {
            // Keystone's faults are one key wrapping a message, as Nova's.
            return Err(classify(
                Service::Compute,
                what,
                status,
                retry_after.as_deref(),
                &body,
            ));
        }
        serde_json::from_str(&body)
            .map_err(|e| CloudError::Transient(format!("{what}: unreadable answer: {e}")))
    };
    tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| CloudError::Transient(format!("{what}: no answer within {timeout:?}")))?
}

/// With no region named, osauth sends each service's calls to the first
/// endpoint the catalog lists of it, each service on its own, and Keystone
/// lists a service's endpoints in no set order (by their ids, which are
/// random): on a catalog of several regions Nova could be one region's
/// and Neutron another's, and servers, volumes and ports be made apart.
/// So the catalog (one request of Keystone's) must have the services
/// warmpool calls in one region; it says which (check-cloud's auth line
/// shows it), or fails for good naming the regions. A catalog that cannot
/// be read is warned of and not checked: the login worked, and the
/// calls may too.
async fn one_region(
    config: &CloudConfig,
    timeout: Duration,
    session: &Session,
) -> CloudResult<String> {
    let Some(catalog) = read_catalog(config, timeout, session).await else {
        tracing::warn!(
            "no region_name is set, and the service catalog (GET /v3/auth/catalog) could not be \
             read to check that the services warmpool calls are in one region: each goes to the \
             region the catalog lists it in first; set region_name to be sure"
        );
        return Ok("no region named (the catalog could not be read)".to_owned());
    };
    let (interfaces, regions) = regions_in(session, &catalog);
    match regions.as_slice() {
        [] => Ok("no region named".to_owned()),
        [(region, _)] => Ok(format!("no region named (the catalog has one, {region})")),
        several => Err(CloudError::Fatal(several_regions(&interfaces, several))),
    }
}

/// The interfaces `session` looks endpoints up by, and the regions of
/// `catalog` (Keystone's answer to `GET /v3/auth/catalog`) with the
/// services warmpool calls ([`regions_of_services`]), those given an
/// endpoint override left out.
fn regions_in(
    session: &Session,
    catalog: &serde_json::Value,
) -> (Vec<String>, Vec<(String, Vec<&'static str>)>) {
    let filters = session.endpoint_filters();
    let interfaces: Vec<String> = filters.interfaces.iter().map(|i| i.to_string()).collect();
    let overridden = |kind: &str| session.endpoint_overrides().contains_key(kind);
    let regions = regions_of_services(&catalog["catalog"], &interfaces, &overridden);
    (interfaces, regions)
}

/// The refusal of no region named on a catalog with the services warmpool
/// calls in `several` regions: which has what, the regions that have them
/// all (one of which region_name must name: any other misses a service),
/// or that none has (an endpoint override is then the way), and that a
/// store an earlier start recorded with no region takes one start with
/// --adopt-cloud once a region is named.
fn several_regions(interfaces: &[String], several: &[(String, Vec<&'static str>)]) -> String {
    let each: Vec<String> = several
        .iter()
        .map(|(region, kinds)| format!("{region} ({})", kinds.join(", ")))
        .collect();
    let mut found: Vec<&str> = Vec::new();
    for kind in several.iter().flat_map(|(_, kinds)| kinds) {
        if !found.contains(kind) {
            found.push(kind);
        }
    }
    let mut whole: Vec<&str> = several
        .iter()
        .filter(|(_, kinds)| found.iter().all(|kind| kinds.contains(kind)))
        .map(|(region, _)| region.as_str())
        .collect();
    whole.sort_unstable();
    let (to_do, example) = match whole.as_slice() {
        [] => {
            // The first of those with the most: the fewest overrides.
            let (most, kinds) = several
                .iter()
                .rev()
                .max_by_key(|(_, kinds)| kinds.len())
                .expect("several regions");
            let overrides: Vec<String> = found
                .iter()
                .filter(|kind| !kinds.contains(kind))
                .map(|kind| format!("{}_endpoint_override", kind.replace('-', "_")))
                .collect();
            (
                format!(
                    "no region has them all ({}): set region_name in clouds.yaml \
                     (OS_REGION_NAME when the OS_* variables say where to log in) to one, \
                     {most} say, and give what it lacks in clouds.yaml as {}",
                    found.join(", "),
                    overrides.join(", ")
                ),
                most.to_owned(),
            )
        }
        whole => (
            format!(
                "set region_name in clouds.yaml (OS_REGION_NAME when the OS_* variables say \
                 where to log in) to {}",
                match whole {
                    [one] => format!("{one}, the one region that has them all"),
                    several => format!("one of {}, which have them all", several.join(", ")),
                }
            ),
            whole[0].to_owned(),
        ),
    };
    format!(
        "no region_name is set, and the service catalog has endpoints (interface {}) of the \
         services warmpool calls in {} regions: {}; with none named each service would go to \
         the region the catalog lists it in first, an order Keystone does not keep, so servers, \
         volumes and ports could be made in different regions: {to_do}. A store an earlier \
         start recorded with no region (its servers may be in any of these) then needs one \
         start with --adopt-cloud: check first that its servers are in that region (`openstack \
         --os-region-name {example} server list --tags TAG`, TAG being cloud.server_tag, \
         warmpool unless set)",
        interfaces.join(" or "),
        several.len(),
        each.join(", "),
    )
}

/// The regions `catalog` (Keystone's `catalog` list) has endpoints of
/// `interfaces` in of the services warmpool calls, each with the types
/// there, in the catalog's order. A service is looked up as osauth does:
/// its first type of [`catalog_types`] the catalog has such endpoints of
/// (Cinder: `block-storage`, else `volumev3`), in its first record of
/// that type; one given an endpoint override (`overridden`) is not.
fn regions_of_services(
    catalog: &serde_json::Value,
    interfaces: &[String],
    overridden: &dyn Fn(&str) -> bool,
) -> Vec<(String, Vec<&'static str>)> {
    let records = catalog.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut regions: Vec<(String, Vec<&'static str>)> = Vec::new();
    for service in [
        Service::Compute,
        Service::Network,
        Service::Image,
        Service::BlockStorage,
    ] {
        let types = catalog_types(service);
        if types.iter().any(|kind| overridden(kind)) {
            continue;
        }
        let endpoints_of = |kind: &str| -> Vec<&serde_json::Value> {
            records
                .iter()
                .find(|r| r["type"].as_str() == Some(kind))
                .and_then(|r| r["endpoints"].as_array())
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["interface"]
                        .as_str()
                        .is_some_and(|i| interfaces.iter().any(|want| want == i))
                })
                .collect()
        };
        let Some((kind, endpoints)) = types
            .iter()
            .map(|kind| (*kind, endpoints_of(kind)))
            .find(|(_, endpoints)| !endpoints.is_empty())
        else {
            continue;
        };
        for endpoint in endpoints {
            group_by_region(&mut regions, endpoint_region(endpoint), kind);
        }
    }
    regions
}

/// The region of a catalog endpoint as osauth matches it: `region_id`,
/// else the older `region` (Keystone fills both with the id), else
/// "(no region)".
fn endpoint_region(endpoint: &serde_json::Value) -> String {
    endpoint["region_id"]
        .as_str()
        .or_else(|| endpoint["region"].as_str())
        .map_or("(no region)".to_owned(), str::to_owned)
}

/// Adds `item` to `region`'s group in `groups` (kept in the order regions
/// are first met), once.
fn group_by_region<T: PartialEq>(groups: &mut Vec<(String, Vec<T>)>, region: String, item: T) {
    match groups.iter_mut().find(|(r, _)| *r == region) {
        Some((_, items)) if !items.contains(&item) => items.push(item),
        Some(_) => {}
        None => groups.push((region, vec![item])),
    }
}

/// The config's `region_name` (its fields are private; its serialised
/// form is not).
fn region_of(config: &CloudConfig) -> Option<String> {
    let value = serde_yaml::to_value(config).ok()?;
    value["region_name"]
        .as_str()
        .filter(|region| !region.is_empty())
        .map(str::to_owned)
}

/// Keystone's `/v3/auth/tokens` under the config's `auth_url`, as osauth
/// makes it for the login (with or without `/v3` at its end).
fn token_url(config: &CloudConfig) -> Option<reqwest::Url> {
    keystone_url(config, "auth/tokens")
}

/// Keystone's `/v3/{path}` under the config's `auth_url`, with or without
/// `/v3` at its end.
fn keystone_url(config: &CloudConfig, path: &str) -> Option<reqwest::Url> {
    let value = serde_yaml::to_value(config).ok()?;
    let mut url = reqwest::Url::parse(value["auth"]["auth_url"].as_str()?).ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().push("");
    let path = if url.path().ends_with("/v3/") {
        path.to_owned()
    } else {
        format!("v3/{path}")
    };
    url.join(&path).ok()
}

/// The catalog types a call to `service` is looked up under.
fn catalog_types(service: Service) -> &'static [&'static str] {
    match service {
        Service::Compute => &["compute"],
        Service::BlockStorage => &["block-storage", "volumev3"],
        Service::Network => &["network"],
        Service::Image => &["image"],
    }
}

/// What a catalog miss of `types` says (osauth's "Endpoint for service
/// compute was not found" names neither the region nor the interface it
/// looked for): the `region` (`None`: any) and `interfaces` asked for, and
/// where `catalog` (Keystone's `catalog` list, when it could be read) has
/// the service, or that it has it nowhere.
fn catalog_miss(
    types: &[&str],
    region: Option<&str>,
    interfaces: &[String],
    catalog: Option<&serde_json::Value>,
) -> String {
    let asked = format!(
        "the service catalog has no {} endpoint for {} and interface {} (clouds.yaml's region_name and interface, or OS_REGION_NAME and OS_INTERFACE when the OS_* variables say where to log in)",
        types.join(" or "),
        region.map_or("any region".to_owned(), |r| format!("region_name '{r}'")),
        interfaces.join(" or "),
    );
    let override_hint = format!(
        "or, if the service is elsewhere, give {}_endpoint_override in clouds.yaml",
        types[0].replace('-', "_")
    );
    let Some(records) = catalog.and_then(serde_json::Value::as_array) else {
        return format!("{asked}: check them against `openstack catalog list`, {override_hint}");
    };
    let type_of = |record: &serde_json::Value| record["type"].as_str().unwrap_or("").to_owned();
    let mut found = Vec::new();
    for kind in types {
        let of_kind: Vec<&serde_json::Value> =
            records.iter().filter(|r| type_of(r) == *kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        // Endpoints by region, in the catalog's order.
        let mut regions: Vec<(String, Vec<String>)> = Vec::new();
        for endpoint in of_kind
            .iter()
            .filter_map(|r| r["endpoints"].as_array())
            .flatten()
        {
            let interface = endpoint["interface"].as_str().unwrap_or("?").to_owned();
            group_by_region(&mut regions, endpoint_region(endpoint), interface);
        }
        let places: Vec<String> = regions
            .iter()
            .map(|(region, interfaces)| format!("{region} ({})", interfaces.join(", ")))
            .collect();
        let mut said = if places.is_empty() {
            format!("{kind} with no endpoint")
        } else {
            format!("{kind} in {}", places.join(", "))
        };
        if of_kind.len() > 1 {
            said.push_str(&format!(
                " (listed {} times, and warmpool's OpenStack client, osauth, reads the first only: merge them)",
                of_kind.len()
            ));
        }
        found.push(said);
    }
    if found.is_empty() {
        let mut all: Vec<String> = Vec::new();
        for kind in records.iter().map(type_of) {
            if !kind.is_empty() && !all.contains(&kind) {
                all.push(kind);
            }
        }
        return format!(
            "{asked}: it has no {} at all (it has: {}); {override_hint}",
            types.join(" nor "),
            all.join(", ")
        );
    }
    format!(
        "{asked}; it has {}: set region_name and interface to one of these, {override_hint}",
        found.join("; ")
    )
}

/// Whether osauth's failure `e` is an answer it could not read as a token:
/// reqwest's decode error (a 2xx, with no status kept).
fn unreadable_token(e: &osauth::Error) -> bool {
    e.kind() == osauth::ErrorKind::ProtocolError
        && osauth_status(e).is_none()
        && e.to_string().contains("error decoding response body")
}

/// Why a token Keystone issued to `identity` could not be read, when the
/// config names a project: osauth 0.5 reads every catalog endpoint's
/// `region` as a string, and Keystone sends `null` for an endpoint created
/// without one (`make_v3_endpoints`), of any service. osauth keeps no more
/// of the decode error than its top line, and warmpool cannot read the
/// token for itself (osauth posts the login), so this names the likely
/// cause rather than the endpoint.
fn unreadable_token_reason(identity: &str) -> String {
    format!(
        "Keystone took the login of {identity}, but its token could not be read (error decoding \
         response body): most likely an endpoint of the service catalog, of any service, has no \
         region, which warmpool's OpenStack client (osauth) cannot read; find it with `openstack \
         endpoint list` (an empty Region) and give it one with `openstack endpoint set --region \
         <region> <endpoint-id>`. Otherwise something in front of Keystone answered the login with \
         what is no token"
    )
}

/// Whether the config scopes its token to a project: it names one, or
/// logs in by an application credential (whose token always is).
fn names_project(config: &CloudConfig) -> bool {
    let Ok(value) = serde_yaml::to_value(config) else {
        return true;
    };
    let given = |key: &str| value["auth"][key].as_str().is_some_and(|v| !v.is_empty());
    given("project_id")
        || given("project_name")
        || value["auth_type"].as_str() == Some("v3applicationcredential")
}

/// Why a login failed, and whether Keystone refused the credentials (as
/// opposed to not answering, throttling, or something in front of it).
struct LoginFailure {
    error: CloudError,
    credentials_rejected: bool,
}

/// A reqwest client that follows no redirect. reqwest's default follows up
/// to ten, and on a 301 or 302 sends a POST again as a GET without its
/// body: behind a load balancer sending `http://` to `https://`, an attach
/// became a listing of attachments answered 200 (reported as done), a
/// create a listing. A redirect is answered as what it is instead
/// ([`redirected`]).
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

/// Whether `status` sends the client elsewhere. Not 300 Multiple Choices:
/// Glance's, Cinder's and Keystone's roots answer it with their version
/// list, which is no redirect.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The error for an answer `status` (a redirect, [`is_redirect`]) to
/// `what`, sent to `location` (`None`: the answer named none).
pub(super) fn redirected(what: &str, status: u16, location: Option<&str>) -> CloudError {
    CloudError::Fatal(format!(
        "{what}: answered a redirect (HTTP {status}) to {}, which warmpool does not follow \
         (a POST would be sent again as a GET): give the endpoint's final URL in the \
         service catalog, or in clouds.yaml (auth_url, *_endpoint_override), e.g. https \
         where it says http",
        location.unwrap_or("no Location")
    ))
}

/// The HTTP client every request after the login goes out on
/// ([`on_client`]): as osauth's login builds one (reqwest's defaults, which
/// trust the system's CA certificates, and clouds.yaml's `cacert`), but
/// following no redirect ([`client_builder`]). Built before the login:
/// osauth panics
/// when reqwest cannot build it (only certificates rustls cannot read, in
/// either), and keeps only the top line of a transport error, which this
/// client can ask again for its cause.
fn http_client(config: &CloudConfig) -> CloudResult<reqwest::Client> {
    let system_ca_error = |e: reqwest::Error| {
        let named: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .into_iter()
            .filter_map(|name| {
                std::env::var_os(name).map(|v| format!("{name}={}", v.to_string_lossy()))
            })
            .collect();
        let read_from = if named.is_empty() {
            "the platform's store (SSL_CERT_FILE or SSL_CERT_DIR may name others)".to_owned()
        } else {
            format!(
                "{}: point SSL_CERT_FILE or SSL_CERT_DIR at PEM CA certificates, or unset them",
                named.join(", ")
            )
        };
        CloudError::Fatal(format!(
            "auth: the system's CA certificates are unusable: {} (read from {read_from})",
            with_causes(&e)
        ))
    };
    let cacert = serde_yaml::to_value(config)
        .ok()
        .and_then(|value| value["cacert"].as_str().map(str::to_owned));
    // A cacert osauth cannot read or parse as PEM, it reports itself.
    let cert = |path: &str| reqwest::Certificate::from_pem(&std::fs::read(path).ok()?).ok();
    let Some((cert, path)) = cacert.and_then(|path| Some((cert(&path)?, path))) else {
        return client_builder().build().map_err(system_ca_error);
    };
    client_builder()
        .add_root_certificate(cert)
        .build()
        .or_else(|e| {
            client_builder().build().map_err(system_ca_error)?;
            Err(CloudError::Fatal(format!(
                "auth: clouds.yaml's cacert {path} is unusable: {}",
                with_causes(&e)
            )))
        })
}

/// What reqwest says of a request to Keystone failing before any answer,
/// below its top line (which osauth keeps): "client error (Connect):
/// invalid peer certificate: UnknownIssuer". `None` if it now succeeds.
async fn transport_cause(
    client: &reqwest::Client,
    config: &CloudConfig,
    timeout: Duration,
) -> Option<String> {
    let url = token_url(config)?;
    let e = tokio::time::timeout(timeout, client.get(url).send())
        .await
        .ok()?
        .err()?;
    let cause = with_causes(std::error::Error::source(&e)?);
    Some(if cause.contains("UnknownIssuer") {
        format!(
            "{cause}; Keystone's certificate is signed by a CA warmpool does not trust: \
             set cacert in clouds.yaml or install the CA in the system's store"
        )
    } else {
        cause
    })
}

/// What Keystone said of a login it refused when that is more than its
/// generic 401: a locked, disabled or expired account (keystone's
/// AccountLocked, UserDisabled, PasswordExpired say so, naming the user's
/// id, outside insecure_debug too), which no new password fixes. osauth
/// keeps the fault's `message` (or the body, if it has none) after the
/// kind in its error's text, and has no getter for it.
fn keystone_reason(e: &osauth::Error) -> Option<String> {
    let text = e.to_string();
    let said = text.strip_prefix(&format!("{}: ", e.kind()))?.trim();
    let nothing_more = said.is_empty()
        // A proxy's page in Keystone's stead.
        || said.starts_with('<')
        || said == "The request you have made requires authentication.";
    (!nothing_more).then(|| cut(said, MAX_CLOUD_MESSAGE_CHARS))
}

/// The message of a login of `identity` Keystone refused with `e` (401).
fn refused_login(identity: &str, e: &osauth::Error) -> String {
    format!(
        "auth: Keystone refused the login of {identity} (401): {}",
        keystone_reason(e).unwrap_or_else(|| generic_refusal(identity)),
    )
}

/// What Keystone's generic 401 may mean: it answers the same for a wrong
/// password and for names it does not resolve or a scope the user has no
/// role in (keystone hides which, outside insecure_debug), so the message
/// names every field to check and claims none.
fn generic_refusal(identity: &str) -> String {
    if identity.starts_with("application credential") {
        "Keystone says no more than that; it answers so for a wrong \
         application_credential_secret, an application_credential_id or \
         application_credential_name (with its username and user_domain_name) it does not \
         know or that expired, or a credential whose user no longer has its roles on the \
         project: check each"
            .to_owned()
    } else {
        "Keystone says no more than that; it answers so for a wrong password, a username, \
         user_domain_name, project_name or project_domain_name it does not know (names are \
         case-sensitive; the domain is often \"Default\"), or a user with no role on the \
         project: check each"
            .to_owned()
    }
}

/// `session` (osauth's, logged in on a client of its own, which follows
/// redirects) sending all else on `client`: osauth's `create_session`
/// takes no client, but the session's may be replaced once it is built.
/// Token renewals osauth makes later go out on `client` too.
fn on_client(session: Session, client: reqwest::Client, watched: &Watched) -> Session {
    let mut authenticated = session.client().clone();
    authenticated.set_inner(client);
    authenticated.set_auth_type(TokenWatch {
        auth: session.client().clone(),
        watched: watched.clone(),
        seen: Arc::default(),
    });
    Session::new_with_authenticated_client(authenticated)
        .with_endpoint_filters(session.endpoint_filters().clone())
        .with_endpoint_overrides(cinder_override(session.endpoint_overrides()))
}

/// clouds.yaml's endpoint overrides, a `volumev3_endpoint_override` given
/// for `block-storage` too when that has none: Cinder is looked up as
/// `block-storage` first ([`Connection::cinder_versions`]), and osauth
/// applies only the override of the type looked up, so the volumev3 one
/// was passed over whenever the catalog has `block-storage`, and Cinder
/// reached at the catalog's endpoint (another region's, maybe) against it.
fn cinder_override(overrides: &HashMap<String, reqwest::Url>) -> HashMap<String, reqwest::Url> {
    let mut overrides = overrides.clone();
    if let Some(url) = overrides.get("volumev3").cloned() {
        overrides.entry("block-storage".to_owned()).or_insert(url);
    }
    overrides
}

async fn login(
    config: &CloudConfig,
    timeout: Duration,
    identity: &str,
    watched: &Watched,
) -> Result<Session, LoginFailure> {
    let client = http_client(config).map_err(|error| LoginFailure {
        error,
        credentials_rejected: false,
    })?;
    let e = match tokio::time::timeout(timeout, config.clone().create_session()).await {
        Err(_) => {
            return Err(LoginFailure {
                error: CloudError::Transient(format!(
                    "auth: Keystone did not answer within {timeout:?}"
                )),
                credentials_rejected: false,
            })
        }
        Ok(Ok(session)) => return Ok(on_client(session, client, watched)),
        Ok(Err(e)) => e,
    };
    // osauth files a token request a proxy timed out (408), rate-limited
    // (413/429) or failing (5xx) under InvalidInput too; the status tells
    // them apart from a request Keystone found wrong.
    let passing = matches!(osauth_status(&e), Some(408 | 413 | 429 | 500..));
    let credentials_rejected = e.kind() == osauth::ErrorKind::AuthenticationFailed && !passing;
    Err(LoginFailure {
        credentials_rejected,
        error: match e.kind() {
            _ if passing => classify_osauth("auth", &e),
            osauth::ErrorKind::AuthenticationFailed => {
                CloudError::Fatal(refused_login(identity, &e))
            }
            osauth::ErrorKind::InvalidConfig | osauth::ErrorKind::InvalidInput => {
                CloudError::Fatal(format!("auth: unusable cloud configuration: {e}"))
            }
            // Keystone took the credentials (a 2xx) but osauth could not
            // read its token: without a project the token is unscoped and
            // carries no catalog, which osauth requires.
            osauth::ErrorKind::ProtocolError if unreadable_token(&e) && !names_project(config) => {
                CloudError::Fatal(format!(
                    "auth: Keystone took the login of {identity} but gave a token scoped to no project, \
                     which has no service catalog: clouds.yaml names no project (and the user has no \
                     default project in Keystone); give project_name (with project_domain_name) or \
                     project_id"
                ))
            }
            osauth::ErrorKind::ProtocolError if unreadable_token(&e) => {
                CloudError::Fatal(format!("auth: {}", unreadable_token_reason(identity)))
            }
            // No answer: osauth keeps reqwest's top line only ("error
            // sending request for url (..)"); asking again shows why.
            osauth::ErrorKind::ProtocolError if osauth_status(&e).is_none() => {
                match (
                    classify_osauth("auth", &e),
                    transport_cause(&client, config, timeout).await,
                ) {
                    (CloudError::Transient(message), Some(cause)) => {
                        CloudError::Transient(format!("{message}: {cause}"))
                    }
                    (error, _) => error,
                }
            }
            _ => classify_osauth("auth", &e),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outage is warned of at its first failure and hourly while it
    /// lasts, its end said once; a 429 within the hour of the last
    /// warning is at debug, and so is the end of such a spell (the one
    /// warned of ended, and was said to).
    #[test]
    fn a_services_trouble_is_warned_of_at_its_start_hourly_and_its_end_once() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        assert_eq!(t.noted(Answered, at(0)), Said::Debug);
        assert_eq!(t.noted(Failed, at(1)), Said::OutageBegins);
        assert_eq!(t.noted(Failed, at(2)), Said::Debug);
        assert_eq!(t.noted(Throttled, at(3)), Said::ThrottleWarned);
        assert_eq!(
            t.noted(Failed, at(3601)),
            Said::OutageLasts {
                failed: 3,
                took: Duration::from_secs(3600)
            }
        );
        assert_eq!(t.noted(Failed, at(3602)), Said::Debug);
        // Its end is a minute of answers after its last failure.
        assert_eq!(t.noted(Answered, at(3603)), Said::Debug);
        assert_eq!(t.noted(Answered, at(3661)), Said::Debug);
        assert_eq!(
            t.noted(Answered, at(3662)),
            Said::AnswersAgain {
                failed: 4,
                throttled: 1,
                took: Duration::from_secs(3602)
            }
        );
        assert_eq!(t.noted(Answered, at(3663)), Said::Debug);

        let mut t = Trouble::default();
        assert_eq!(t.noted(Throttled, at(0)), Said::ThrottleWarned);
        assert_eq!(t.noted(Answered, at(1)), Said::Debug);
        assert_eq!(
            t.noted(Answered, at(60)),
            Said::AnswersAgain {
                failed: 0,
                throttled: 1,
                took: Duration::from_secs(1)
            }
        );
        // Throttled again within the hour of its warning: debug, both ways.
        assert_eq!(t.noted(Throttled, at(62)), Said::Debug);
        assert_eq!(t.noted(Answered, at(200)), Said::Debug);
        // A failure after an ended spell begins an outage whenever it comes.
        assert_eq!(t.noted(Failed, at(204)), Said::OutageBegins);
        assert_eq!(t.noted(Throttled, at(3600)), Said::ThrottleWarned);
        assert_eq!(t.noted(Answered, at(3601)), Said::Debug);
        assert_eq!(
            t.noted(Answered, at(3660)),
            Said::AnswersAgain {
                failed: 1,
                throttled: 1,
                took: Duration::from_secs(3397)
            }
        );
        assert_eq!(
            answers_again(
                Service::BlockStorage.into(),
                0,
                2,
                Duration::from_millis(61_500)
            ),
            "block-storage (Cinder) answers again after 2 throttled calls (throttling ended) over 1m 1s"
        );
    }

    /// A service failing one call in two (one bad API worker behind the
    /// balancer) was a WARN and an INFO per failure: each answer ended
    /// the outage. Now it is one WARN while it flaps, and one INFO once
    /// it has answered for a minute with no failure.
    #[test]
    fn a_flapping_service_is_one_warning_and_its_end_one_info() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        let (mut warns, mut infos) = (0, 0);
        for i in 0..100u64 {
            if t.noted(Failed, at(2 * i)) != Said::Debug {
                warns += 1;
            }
            if matches!(t.noted(Answered, at(2 * i + 1)), Said::AnswersAgain { .. }) {
                infos += 1;
            }
        }
        assert_eq!((warns, infos), (1, 0), "200 s of failing half the calls");
        assert_eq!(t.noted(Answered, at(257)), Said::Debug);
        assert_eq!(
            t.noted(Answered, at(258)),
            Said::AnswersAgain {
                failed: 100,
                throttled: 0,
                took: Duration::from_secs(199)
            }
        );
    }

    /// Throttling at a rate limit mixes 429s with answers: one WARN, and
    /// "throttling ended" only once a minute passed with no 429.
    #[test]
    fn throttling_ends_after_a_minute_without_a_429() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        assert_eq!(t.noted(Throttled, at(0)), Said::ThrottleWarned);
        for s in 1..100 {
            let outcome = if s % 3 == 0 { Throttled } else { Answered };
            assert_eq!(t.noted(outcome, at(s)), Said::Debug, "at {s} s");
        }
        // The last 429 at 99 s.
        assert_eq!(t.noted(Answered, at(158)), Said::Debug);
        assert!(matches!(
            t.noted(Answered, at(159)),
            Said::AnswersAgain {
                failed: 0,
                throttled: 34,
                ..
            }
        ));
    }

    /// Refusals (409, 403, ...) are answers: an outage followed by them
    /// only ends, and the next outage is warned of. They recorded nothing,
    /// so the next outage was silent and the reminder's counts wrong.
    #[test]
    fn refusals_end_an_outage_and_the_next_one_is_warned_of() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        assert_eq!(t.noted(Failed, at(0)), Said::OutageBegins);
        // 409s, as `send` notes them.
        assert_eq!(t.noted(Answered, at(1)), Said::Debug);
        assert!(matches!(
            t.noted(Answered, at(61)),
            Said::AnswersAgain { failed: 1, .. }
        ));
        assert_eq!(
            t.noted(Failed, at(1800)),
            Said::OutageBegins,
            "a new outage"
        );
        // Answered, then no call for the quiet period: the next failure is
        // a new outage too (the last one's end went unsaid).
        assert_eq!(t.noted(Answered, at(1801)), Said::Debug);
        assert_eq!(t.noted(Failed, at(1900)), Said::OutageBegins);
        // A failure within the quiet period keeps the outage.
        assert_eq!(t.noted(Answered, at(1901)), Said::Debug);
        assert_eq!(t.noted(Failed, at(1950)), Said::Debug);
    }

    /// An outage's first answer a minute or more after its last failure
    /// says it is over: calls paused past the quiet period (a reconcile
    /// pass's next turn) left that answer at debug, the INFO waiting for
    /// a second one.
    #[test]
    fn the_first_answer_a_minute_after_the_last_failure_ends_the_outage() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        assert_eq!(t.noted(Failed, at(0)), Said::OutageBegins);
        assert_eq!(t.noted(Failed, at(5)), Said::Debug);
        assert_eq!(
            t.noted(Answered, at(70)),
            Said::AnswersAgain {
                failed: 2,
                throttled: 0,
                took: Duration::from_secs(70)
            }
        );
        // After the INFO a failure begins a new outage; one a minute after
        // its last, with no answer between, is the same outage.
        assert_eq!(t.noted(Failed, at(100)), Said::OutageBegins);
        assert_eq!(t.noted(Failed, at(200)), Said::Debug);
    }

    /// Keystone's outage: calls on a cached token begin no end of it, but
    /// complete the one a token Keystone issued (within the quiet minute
    /// of the last failure) began, a minute after that failure; a failure
    /// in between starts the wait again.
    #[test]
    fn cached_tokens_complete_only_an_end_keystone_began() {
        use Outcome::*;
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Trouble::default();
        assert_eq!(t.confirmed(at(0)), Said::Debug, "no outage");
        assert_eq!(t.noted(Failed, at(0)), Said::OutageBegins);
        assert_eq!(t.confirmed(at(100)), Said::Debug, "Keystone issued none");
        assert_eq!(t.noted(Failed, at(110)), Said::Debug);
        assert_eq!(t.noted(Answered, at(120)), Said::Debug, "within the minute");
        assert_eq!(t.confirmed(at(150)), Said::Debug, "within the minute");
        assert_eq!(
            t.confirmed(at(170)),
            Said::AnswersAgain {
                failed: 2,
                throttled: 0,
                took: Duration::from_secs(120)
            }
        );
        assert_eq!(t.confirmed(at(240)), Said::Debug, "said once");
        assert_eq!(t.noted(Failed, at(300)), Said::OutageBegins);
        assert_eq!(t.noted(Answered, at(310)), Said::Debug);
        assert_eq!(t.noted(Failed, at(320)), Said::Debug);
        assert_eq!(
            t.confirmed(at(400)),
            Said::Debug,
            "a failure after Keystone's answer: that answer began nothing"
        );
    }

    /// One call refused a fresh token every 2 minutes (an access rule
    /// missing for it) while the service answers its other calls is one
    /// WARN, hourly while it lasts, not a WARN and an INFO each time: the
    /// other calls' answers end nothing of it, its own answer does.
    #[test]
    fn an_infrequent_refused_call_is_one_warn_an_hour() {
        const REFUSED: &str = "compute GET /servers/* ";
        const OTHER: &str = "compute GET /servers/detail ";
        let nova = Subject::Service(Service::Compute);
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Troubles::default();
        let (mut said, mut ended) = (Vec::new(), 0);
        for round in 0..10u64 {
            let base = round * 120;
            said.push(t.refused_fresh(REFUSED, at(base)));
            for when in [base + 30, base + 90] {
                said.push(t.noted(nova, Outcome::Answered, at(when)));
                ended += usize::from(t.answered(OTHER, at(when)).is_some());
            }
        }
        let warns = said
            .iter()
            .filter(|s| matches!(s, Said::RefusalWarned { .. }))
            .count();
        let infos = ended
            + said
                .iter()
                .filter(|s| matches!(s, Said::AnswersAgain { .. }))
                .count();
        assert_eq!((warns, infos), (1, 0), "20 minutes of one refused call");
        assert_eq!(
            t.refused_fresh(REFUSED, at(3600)),
            Said::RefusalWarned {
                refused: 11,
                took: Duration::from_secs(3600)
            },
            "warned of again an hour later"
        );
        assert_eq!(t.refused_fresh(REFUSED, at(3630)), Said::Debug);
        assert_eq!(
            t.answered(REFUSED, at(3700)),
            Some((12, Duration::from_secs(3700))),
            "its own answer ends it"
        );
        assert_eq!(t.answered(REFUSED, at(3701)), None, "said once");
        assert_eq!(
            t.refused_fresh(REFUSED, at(3800)),
            Said::Debug,
            "refusals back within the hour of the warning are at debug"
        );
        assert_eq!(t.answered(REFUSED, at(3900)), None, "their end too");
        assert_eq!(
            t.refused_fresh(REFUSED, at(7200)),
            Said::RefusalWarned {
                refused: 1,
                took: Duration::ZERO
            },
            "refusals an hour after the warning are warned of again"
        );
    }

    /// A call refused some of the time (one of three nova-api nodes with a
    /// broken keystone_authtoken), answered in between, is one WARN an
    /// hour, not a WARN and an INFO at each switch: an answer less than a
    /// minute after a refusal ends nothing; a minute of answers does.
    #[test]
    fn an_intermittently_refused_call_is_one_warn_an_hour() {
        const CALL: &str = "compute GET /servers/* ";
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Troubles::default();
        let (mut warned, mut ended) = (Vec::new(), 0);
        for secs in (0..7200u64).step_by(30) {
            if secs % 60 == 0 {
                if let Said::RefusalWarned { refused, .. } = t.refused_fresh(CALL, at(secs)) {
                    warned.push((secs, refused));
                }
            } else {
                ended += usize::from(t.answered(CALL, at(secs)).is_some());
            }
        }
        assert_eq!(warned, [(0, 1), (3600, 61)], "hourly, one spell");
        assert_eq!(ended, 0, "no answer came a minute after a refusal");
        // The last refusal at 7140 s, answered at 7170 s and on.
        assert_eq!(
            t.answered(CALL, at(7200)),
            Some((120, Duration::from_secs(7170))),
            "a minute after the last refusal, said once"
        );
        assert_eq!(t.answered(CALL, at(7230)), None);
    }

    /// A refusal repeated every 30 s (a headroom poll's quota read, as
    /// FRESH_TOKEN_REFUSED_PAUSE names) leaves the service's outages alone:
    /// a 5-minute Nova outage ends (its INFO said), and a failure two hours
    /// later is a new outage, not the same one lasting.
    #[test]
    fn steady_refusals_leave_an_outage_to_end() {
        const QUOTA_READ: &str = "compute GET /os-quota-sets/*/detail ";
        let nova = Subject::Service(Service::Compute);
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Troubles::default();
        let mut said = Vec::new();
        for secs in (0..7200u64).step_by(30) {
            said.push(t.refused_fresh(QUOTA_READ, at(secs)));
            if (10..300).contains(&secs) {
                said.push(t.noted(nova, Outcome::Failed, at(secs + 1)));
            } else if secs > 300 {
                said.push(t.noted(nova, Outcome::Answered, at(secs + 1)));
            }
        }
        assert!(
            said.contains(&Said::AnswersAgain {
                failed: 9,
                throttled: 0,
                took: Duration::from_secs(331 - 31)
            }),
            "the outage's end is said: {said:?}"
        );
        let later = t.noted(nova, Outcome::Failed, at(7185));
        assert_eq!(later, Said::OutageBegins, "a new outage two hours later");
    }

    /// Two calls refused fresh tokens are warned of each (each is its own
    /// access rule to mend), and one's answer ends its refusals alone.
    #[test]
    fn refusals_of_fresh_tokens_are_warned_of_per_call() {
        const QUOTAS: &str = "compute GET /os-quota-sets/*/detail ";
        const LIMITS: &str = "compute GET /limits ";
        let start = tokio::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut t = Troubles::default();
        assert_eq!(
            t.refused_fresh(QUOTAS, at(0)),
            Said::RefusalWarned {
                refused: 1,
                took: Duration::ZERO
            }
        );
        assert!(matches!(
            t.refused_fresh(LIMITS, at(10)),
            Said::RefusalWarned { refused: 1, .. }
        ));
        assert_eq!(t.refused_fresh(QUOTAS, at(30)), Said::Debug);
        assert_eq!(t.answered(LIMITS, at(40)), None, "not a minute yet");
        assert_eq!(
            t.answered(LIMITS, at(75)),
            Some((1, Duration::from_secs(30)))
        );
        assert_eq!(t.refused_fresh(QUOTAS, at(90)), Said::Debug);
        assert_eq!(t.answered(QUOTAS, at(100)), None, "QUOTAS still refused");
        assert!(matches!(
            t.refused_fresh(LIMITS, at(3610)),
            Said::RefusalWarned { refused: 1, .. }
        ));
    }

    /// A refused re-login pauses the password 30 s, doubling with each
    /// refusal in a row up to 10 minutes: five refusals (a usual
    /// lockout_failure_attempts) take 7.5 minutes, not two.
    #[test]
    fn refused_re_logins_pause_ever_longer() {
        let minutes = |n: u32| relogin_pause(n).as_secs_f64() / 60.0;
        let pauses: Vec<f64> = (1..=7).map(minutes).collect();
        assert_eq!(pauses, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        assert_eq!(relogin_pause(0), RELOGIN_PAUSE);
        assert_eq!(relogin_pause(u32::MAX), RELOGIN_PAUSE_MAX);
        let to_the_fifth: Duration = (1..5).map(relogin_pause).sum();
        assert_eq!(to_the_fifth, Duration::from_secs(450));
    }

    /// One call's refusals are told from another's by what the call does,
    /// not by the objects it names: every server's forceDelete is one
    /// call, and another action on the same path another.
    #[test]
    fn refusals_are_keyed_by_call_not_object() {
        let action = |server: &str, name: &str| {
            refusal_key(
                &Call::new(
                    Service::Compute,
                    Method::POST,
                    ["servers", server, "action"],
                )
                .json(serde_json::json!({ name: null })),
            )
        };
        let a = "0b6f3f9e-3c39-4f43-9d0b-8a0cf4ab1b21";
        let b = "5d2e1a77-0c5e-4d4a-bf8e-6f1b3c2d9e10";
        assert_eq!(action(a, "forceDelete"), action(b, "forceDelete"));
        assert_ne!(action(a, "forceDelete"), action(a, "restore"));
        let quota = refusal_key(&Call::new(
            Service::Network,
            Method::GET,
            ["quotas", "b3ae6b2a8bb254549c1530f91368af2f", "details"],
        ));
        assert_eq!(quota, "network GET /quotas/*/details ");
    }

    /// A catalog miss names the region and interface asked for and where
    /// the catalog has the service: in other regions or interfaces, under
    /// a second record of its type osauth never reads, at an endpoint of
    /// no region, or nowhere.
    #[test]
    fn a_catalog_miss_says_where_the_catalog_has_the_service() {
        let endpoint = |region: Option<&str>, interface: &str| serde_json::json!({"interface": interface, "region": region, "region_id": region, "url": "http://x"});
        let catalog = serde_json::json!([
            {"type": "identity", "endpoints": [endpoint(Some("RegionOne"), "public")]},
            {"type": "compute", "endpoints": [endpoint(Some("RegionOne"), "public"), endpoint(Some("RegionOne"), "internal")]},
            {"type": "compute", "endpoints": [endpoint(Some("RegionTwo"), "public")]},
            {"type": "volumev3", "endpoints": [endpoint(None, "public")]},
        ]);
        let public = ["public".to_owned()];
        let m = catalog_miss(&["compute"], Some("RegionTwo"), &public, Some(&catalog));
        for said in [
            "no compute endpoint for region_name 'RegionTwo' and interface public",
            "compute in RegionOne (public, internal), RegionTwo (public)",
            "listed 2 times",
            "reads the first only",
        ] {
            assert!(m.contains(said), "{said} not in: {m}");
        }
        let m = catalog_miss(
            &["block-storage", "volumev3"],
            None,
            &public,
            Some(&catalog),
        );
        for said in [
            "no block-storage or volumev3 endpoint for any region",
            "volumev3 in (no region) (public)",
            "block_storage_endpoint_override",
        ] {
            assert!(m.contains(said), "{said} not in: {m}");
        }
        let m = catalog_miss(&["image"], Some("RegionOne"), &public, Some(&catalog));
        assert!(
            m.contains("no image at all (it has: identity, compute, volumev3)"),
            "{m}"
        );
        let m = catalog_miss(&["image"], Some("RegionOne"), &public, None);
        assert!(m.contains("openstack catalog list"), "{m}");
    }

    /// With no region named, the regions the services warmpool calls are
    /// in, each looked up as osauth does: endpoints of the interface
    /// asked for, in the first record of a type; Cinder as block-storage,
    /// else volumev3; a service given an endpoint override not at all. Two
    /// services each in one region, but not the same, are two regions.
    #[test]
    fn the_regions_of_the_services_warmpool_calls() {
        let endpoint = |region: &str, interface: &str| serde_json::json!({"interface": interface, "region": region, "region_id": region, "url": "http://x"});
        let catalog = serde_json::json!([
            {"type": "identity", "endpoints": [endpoint("RegionThree", "public")]},
            {"type": "compute", "endpoints": [endpoint("RegionOne", "public"), endpoint("RegionTwo", "internal")]},
            {"type": "compute", "endpoints": [endpoint("RegionFour", "public")]},
            {"type": "network", "endpoints": [endpoint("RegionOne", "public")]},
            {"type": "image", "endpoints": [endpoint("RegionOne", "public")]},
            {"type": "block-storage", "endpoints": [endpoint("RegionFive", "internal")]},
            {"type": "volumev3", "endpoints": [endpoint("RegionTwo", "public")]},
        ]);
        let public = ["public".to_owned()];
        let none = |_: &str| false;
        assert_eq!(
            regions_of_services(&catalog, &public, &none),
            [
                ("RegionOne".to_owned(), vec!["compute", "network", "image"]),
                ("RegionTwo".to_owned(), vec!["volumev3"]),
            ]
        );
        let cinder_elsewhere = |kind: &str| kind == "block-storage";
        assert_eq!(
            regions_of_services(&catalog, &public, &cinder_elsewhere),
            [("RegionOne".to_owned(), vec!["compute", "network", "image"])]
        );
        let internal = ["internal".to_owned()];
        assert_eq!(
            regions_of_services(&catalog, &internal, &none),
            [
                ("RegionTwo".to_owned(), vec!["compute"]),
                ("RegionFive".to_owned(), vec!["block-storage"]),
            ]
        );
        assert!(regions_of_services(&serde_json::json!([]), &public, &none).is_empty());
    }

    /// The refusal of no region named on several names as the region to
    /// set only those with every service found (any other misses one), or
    /// says none has them all and points to the endpoint overrides; and
    /// says a store of no region then needs --adopt-cloud once.
    #[test]
    fn the_refusal_of_several_regions_names_those_with_every_service() {
        let public = ["public".to_owned()];
        let region = |name: &str, kinds: &[&'static str]| (name.to_owned(), kinds.to_vec());
        let split = several_regions(
            &public,
            &[
                region("RegionOne", &["compute", "network", "image"]),
                region("RegionTwo", &["block-storage"]),
            ],
        );
        for part in [
            "RegionOne (compute, network, image), RegionTwo (block-storage)",
            "no region has them all (compute, network, image, block-storage)",
            "RegionOne say, and give what it lacks in clouds.yaml as block_storage_endpoint_override",
            "--adopt-cloud",
            "openstack --os-region-name RegionOne server list --tags TAG",
        ] {
            assert!(split.contains(part), "{part} not in: {split}");
        }
        assert!(!split.contains("one of"), "{split}");
        let one_whole = several_regions(
            &public,
            &[
                region("RegionTwo", &["compute", "network", "image", "volumev3"]),
                region("RegionOne", &["network"]),
            ],
        );
        for part in [
            "to RegionTwo, the one region that has them all",
            "--os-region-name RegionTwo server list",
        ] {
            assert!(one_whole.contains(part), "{part} not in: {one_whole}");
        }
        let both = several_regions(
            &public,
            &[
                region("RegionTwo", &["compute", "network"]),
                region("RegionOne", &["compute", "network"]),
            ],
        );
        assert!(
            both.contains("to one of RegionOne, RegionTwo, which have them all"),
            "{both}"
        );
    }

    /// A volumev3_endpoint_override is Cinder's under block-storage too,
    /// the type looked up first; block-storage's own is kept.
    #[test]
    fn a_volumev3_override_is_cinders_under_either_type() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let given = HashMap::from([("volumev3".to_owned(), url("http://cinder/v3/p"))]);
        let overrides = cinder_override(&given);
        assert_eq!(overrides["block-storage"], url("http://cinder/v3/p"));
        let both = HashMap::from([
            ("volumev3".to_owned(), url("http://old/v3/p")),
            ("block-storage".to_owned(), url("http://new/v3/p")),
        ]);
        assert_eq!(
            cinder_override(&both)["block-storage"],
            url("http://new/v3/p")
        );
        assert!(cinder_override(&HashMap::new()).is_empty());
    }

    /// The token URL is where the login went, whether auth_url ends in
    /// `/v3` or not.
    #[test]
    fn the_token_url_is_the_logins() {
        let url = |auth_url: &str| {
            let config: CloudConfig = serde_yaml::from_str(&format!(
                "auth:\n  auth_url: {auth_url}\n  username: pool\n  password: poolpass\n  project_name: service\n  user_domain_name: Default\n  project_domain_name: Default\n"
            ))
            .unwrap();
            token_url(&config).map(|u| u.to_string())
        };
        for (auth_url, tokens) in [
            ("http://k:5000/v3", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000/v3/", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000", "http://k:5000/v3/auth/tokens"),
            ("https://k/identity/v3", "https://k/identity/v3/auth/tokens"),
            ("https://k/identity", "https://k/identity/v3/auth/tokens"),
        ] {
            assert_eq!(url(auth_url).as_deref(), Some(tokens), "{auth_url}");
        }
    }

    /// The session warmpool builds (osauth's `Session`, whose Debug is
    /// derived) shows no password: TokenWatch's Debug printed osauth's
    /// AuthenticatedClient, whose Debug shows the login body.
    #[tokio::test]
    async fn a_sessions_debug_shows_no_password() {
        use cloudsim::http::{HttpFace, HttpSettings};
        use cloudsim::{SimCloud, SimConfig};
        // No server is made: no simulated mysqld, whose port a local
        // MySQL may hold.
        let sim = SimCloud::new(SimConfig {
            time_scale: 0.01,
            listeners: false,
            ..SimConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let face = HttpFace::serve(sim.clone(), HttpSettings::default(), listener)
            .await
            .unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&face.clouds_yaml("c")).unwrap();
        let config: CloudConfig = serde_yaml::from_value(yaml["clouds"]["c"].clone()).unwrap();
        let password = yaml["clouds"]["c"]["auth"]["password"]
            .as_str()
            .unwrap()
            .to_owned();
        let conn = Connection::connect(config, Duration::from_secs(10))
            .await
            .unwrap();
        let (_, session) = conn.session();
        let shown = format!("{session:?}");
        assert!(
            !shown.contains(&password),
            "the password {password:?} is shown: {shown}"
        );
    }
}
