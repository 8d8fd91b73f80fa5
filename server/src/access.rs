//! Who may call which warmpool.v1 method: the bearer tokens of the config's
//! `[[api_tokens]]`, each with a role. With none configured the API is open
//! to anyone who reaches it (the embedded demo, a loopback-only daemon).
//!
//! Roles nest: a billing token may also read, an operator token may do
//! everything. Health and reflection stay open: load balancers probe
//! health without credentials, and reflection shows only the schema.

// tonic::Status is large by design and a check runs once per call.
#![allow(clippy::result_large_err)]

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Refused calls are logged at most once per this interval and kind, with
/// how many came since: a client retrying with a revoked token, guessing,
/// or calling with a token of too small a role in a loop must not flood
/// the log (`warmpool_api_calls_refused_total` counts every one).
const REFUSED_CALL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Admits a log line at most once per interval for each key.
#[derive(Debug)]
struct LogEvery {
    interval: Duration,
    /// Per key: when its last line was admitted, and how many were held back
    /// since. Keys are the daemon's token names (and one for unknown
    /// tokens), so the map stays as small as the config.
    state: Mutex<BTreeMap<String, (Instant, u64)>>,
}

impl LogEvery {
    const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(BTreeMap::new()),
        }
    }

    /// `Some(held back since the last line for key)` when a line for `key`
    /// may be logged now.
    fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.get_mut(key) {
            Some((last, held)) if now.saturating_duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some(entry) => {
                let held = entry.1;
                *entry = (now, 0);
                Some(held)
            }
            None => {
                state.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// Calls refused UNAUTHENTICATED, per kind of refusal (no token, a
/// malformed header, a token the daemon does not know), not per caller: the
/// map stays at three keys (and one per api_tokens entry holding its token
/// itself) whoever calls. Each line names the address of
/// the call it logs, so that after a token rotation the client still on
/// the old token can be found (over several lines if several are).
static UNAUTHENTICATED_LOG: LogEvery = LogEvery::new(REFUSED_CALL_LOG_INTERVAL);
/// Calls refused for their token's role, per token name: one caller's loop
/// must not hide another's refusal.
static REFUSED_ROLE_LOG: LogEvery = LogEvery::new(REFUSED_CALL_LOG_INTERVAL);

/// What a token may do, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Pools, instances and the pool watch: dashboards, `warmpoolctl` status.
    Reader,
    /// Also Allocate, GetAllocation and Release: the billing system.
    Billing,
    /// Also CreatePool, UpdatePool and DeletePool: operators.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Billing => "billing",
            Role::Operator => "operator",
        }
    }
}

/// The methods of warmpool.v1, each with the role it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Allocate,
    GetAllocation,
    Release,
    ListPools,
    GetPool,
    CreatePool,
    UpdatePool,
    DeletePool,
    ListInstances,
    WatchPools,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Allocate,
        Method::GetAllocation,
        Method::Release,
        Method::ListPools,
        Method::GetPool,
        Method::CreatePool,
        Method::UpdatePool,
        Method::DeletePool,
        Method::ListInstances,
        Method::WatchPools,
    ];

    /// The method's name in warmpool.v1 ("CreatePool").
    pub fn name(self) -> &'static str {
        match self {
            Method::Allocate => "Allocate",
            Method::GetAllocation => "GetAllocation",
            Method::Release => "Release",
            Method::ListPools => "ListPools",
            Method::GetPool => "GetPool",
            Method::CreatePool => "CreatePool",
            Method::UpdatePool => "UpdatePool",
            Method::DeletePool => "DeletePool",
            Method::ListInstances => "ListInstances",
            Method::WatchPools => "WatchPools",
        }
    }

    /// The method of this name ("CreatePool"), if warmpool.v1 has one.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn needs(self) -> Role {
        match self {
            Method::ListPools | Method::GetPool | Method::ListInstances | Method::WatchPools => {
                Role::Reader
            }
            // An allocation names the tenant's project, volume and port.
            Method::Allocate | Method::GetAllocation | Method::Release => Role::Billing,
            Method::CreatePool | Method::UpdatePool | Method::DeletePool => Role::Operator,
        }
    }
}

/// A token the daemon accepts, as the config names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Who holds it, for logs ("billing", "grafana").
    pub name: String,
    pub role: Role,
}

/// The lowercase hex SHA-256 of `token`: what `[[api_tokens]]` stores, so
/// that the config file does not hold the tokens themselves.
pub fn token_sha256(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// The daemon's tokens. Looked up by the SHA-256 of the token presented:
/// comparing digests tells a timing attacker nothing about a token.
#[derive(Clone, Debug, Default)]
pub struct Access {
    by_sha256: HashMap<String, Caller>,
}

impl Access {
    /// Every caller may call every method.
    pub fn open() -> Self {
        Self::default()
    }

    /// Accepts the tokens whose lowercase hex SHA-256 digests are given.
    pub fn with_tokens(tokens: impl IntoIterator<Item = (String, Caller)>) -> Self {
        Self {
            by_sha256: tokens.into_iter().collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.by_sha256.is_empty()
    }

    /// Whether the caller whose call carries `metadata` may call `method`:
    /// who it is (`None` when the API is open), or UNAUTHENTICATED /
    /// PERMISSION_DENIED saying what to do.
    pub fn check(&self, metadata: &MetadataMap, method: Method) -> Result<Option<&Caller>, Status> {
        self.check_from(metadata, method, None)
    }

    /// [`Access::check`] for a call from `peer`, which the log line of a
    /// refusal names.
    pub fn check_from(
        &self,
        metadata: &MetadataMap,
        method: Method,
        peer: Option<SocketAddr>,
    ) -> Result<Option<&Caller>, Status> {
        self.check_logged(metadata, method, peer, &UNAUTHENTICATED_LOG)
    }

    fn check_logged(
        &self,
        metadata: &MetadataMap,
        method: Method,
        peer: Option<SocketAddr>,
        unauthenticated_log: &LogEvery,
    ) -> Result<Option<&Caller>, Status> {
        if self.is_open() {
            return Ok(None);
        }
        let peer = Peer(peer);
        let Some(header) = metadata.get("authorization") else {
            if let Some(held_back) = unauthenticated_log.admit("missing", Instant::now()) {
                tracing::warn!(
                    method = method.name(),
                    %peer,
                    held_back,
                    "call without a bearer token (held_back: such calls not logged since the last such line; one line per {REFUSED_CALL_LOG_INTERVAL:?} at most)"
                );
            }
            return Err(Status::unauthenticated(format!(
                "{} needs a bearer token: send the header 'authorization: Bearer <token>' \
                 (warmpoolctl: --token-file FILE or WARMPOOL_TOKEN)",
                method.name()
            )));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            // The scheme's case does not matter (RFC 9110, section 11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                if let Some(held_back) = unauthenticated_log.admit("malformed", Instant::now()) {
                    tracing::warn!(
                        method = method.name(),
                        %peer,
                        held_back,
                        "call whose authorization header is not 'Bearer <token>' (held_back: such calls not logged since the last such line; one line per {REFUSED_CALL_LOG_INTERVAL:?} at most)"
                    );
                }
                Status::unauthenticated(
                    "the authorization header is not 'Bearer <token>'".to_string(),
                )
            })?;
        let Some(caller) = self.by_sha256.get(&token_sha256(token)) else {
            // 64 hex digits (`openssl rand -hex 32`) pass the config's check
            // for a digest: an entry holding the token itself is found only
            // when its token is presented. But so is any entry when its
            // digest, read from the config (meant to be safe to show, as in
            // a ConfigMap), is presented: writing that digest's SHA-256
            // there would make it a working token, so both are said. Name
            // the entry, never the token.
            if let Some(entry) = self.by_sha256.get(&token.to_ascii_lowercase()) {
                let key = format!("token in sha256: {}", entry.name);
                if let Some(held_back) = unauthenticated_log.admit(&key, Instant::now()) {
                    tracing::warn!(
                        method = method.name(),
                        api_token = %entry.name,
                        %peer,
                        held_back,
                        "call refused: its bearer token is what api_tokens entry '{}' has in sha256: either that entry holds the token itself, not its SHA-256 (then put the 64 hex digits of printf %s \"$TOKEN\" | sha256sum there and reload), or a caller at {peer} presented a digest read from the config (then change nothing, and find who read it) (held_back: such calls not logged since the last such line; one line per {REFUSED_CALL_LOG_INTERVAL:?} at most)",
                        entry.name
                    );
                }
            } else if let Some(held_back) = unauthenticated_log.admit("unknown", Instant::now()) {
                tracing::warn!(
                    method = method.name(),
                    %peer,
                    held_back,
                    "call with a bearer token this daemon does not know (held_back: such calls not logged since the last such line; one line per {REFUSED_CALL_LOG_INTERVAL:?} at most)"
                );
            }
            return Err(Status::unauthenticated(
                "the bearer token is not one of this daemon's api_tokens (revoked, or for another daemon?)",
            ));
        };
        if caller.role < method.needs() {
            if let Some(held_back) = REFUSED_ROLE_LOG.admit(&caller.name, Instant::now()) {
                tracing::warn!(
                    method = method.name(),
                    caller = %caller.name,
                    role = caller.role.name(),
                    %peer,
                    held_back,
                    "call refused: the token's role is too small (held_back: this token's refused calls not logged since its last such line; one line per {REFUSED_CALL_LOG_INTERVAL:?} at most)"
                );
            }
            return Err(Status::permission_denied(format!(
                "token '{}' has role {}; {} needs role {}",
                caller.name,
                caller.role.name(),
                method.name(),
                method.needs().name()
            )));
        }
        // Who changed a pool is worth keeping; who read or bought, less so.
        if method.needs() == Role::Operator {
            tracing::info!(method = method.name(), caller = %caller.name, "authorized");
        } else {
            tracing::debug!(method = method.name(), caller = %caller.name, "authorized");
        }
        Ok(Some(caller))
    }
}

/// A call's address in a log line: "unknown" for a call whose connection
/// carries none (not over TCP).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The address a call came from, as tonic records its connection in the
/// request's extensions (plaintext or TLS over TCP).
pub fn peer<B>(request: &tonic::codegen::http::Request<B>) -> Option<SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// [`AccessHandle::prepare`]'s refusal.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the file has no [[api_tokens]] and a reload does not open the API (restart warmpoold to run without tokens)")]
pub struct WouldOpenTheApi;

/// Tokens [`AccessHandle::prepare`] took as a reload; in force once
/// [`AccessHandle::apply`]'d.
#[derive(Debug)]
#[must_use = "the tokens are not in force until applied"]
pub struct PreparedAccess(Access);

/// The daemon's [`Access`], replaced whole when the config is read again
/// (SIGHUP): a call is checked against the tokens of the moment it came.
#[derive(Clone, Debug, Default)]
pub struct AccessHandle(Arc<RwLock<Arc<Access>>>);

impl AccessHandle {
    pub fn new(access: Access) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(access))))
    }

    pub fn current(&self) -> Arc<Access> {
        // A writer only swaps an Arc: a poisoned lock still holds a whole one.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, access: Access) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(access);
    }

    /// Checks `access` (a config file's tokens, read again) as a reload,
    /// changing nothing: [`AccessHandle::apply`] puts it in force, so that
    /// a reload can check its other parts first. Refuses to go from tokens
    /// to none: a file emptied by mistake, or half written when the signal
    /// came, would open the API to anyone who reaches it. Running without
    /// tokens takes a restart.
    pub fn prepare(&self, access: Access) -> Result<PreparedAccess, WouldOpenTheApi> {
        if access.is_open() && !self.current().is_open() {
            return Err(WouldOpenTheApi);
        }
        Ok(PreparedAccess(access))
    }

    /// Puts tokens [`AccessHandle::prepare`] took in force for the calls
    /// that follow; answers how many there are.
    pub fn apply(&self, prepared: PreparedAccess) -> usize {
        let tokens = prepared.0.by_sha256.len();
        self.replace(prepared.0);
        tokens
    }

    /// [`AccessHandle::prepare`], then [`AccessHandle::apply`].
    pub fn reload(&self, access: Access) -> Result<usize, WouldOpenTheApi> {
        Ok(self.apply(self.prepare(access)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warmpool_test_support::logged;

    #[test]
    fn log_lines_are_admitted_once_per_interval_with_what_was_held_back() {
        let every = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(every.admit("a", at(0)), Some(0));
        assert_eq!(every.admit("a", at(1)), None);
        assert_eq!(every.admit("b", at(1)), Some(0), "keys are limited apart");
        assert_eq!(every.admit("a", at(9)), None);
        assert_eq!(every.admit("a", at(10)), Some(2));
        assert_eq!(every.admit("a", at(25)), Some(0));
        assert_eq!(every.admit("b", at(25)), Some(0));
    }

    #[test]
    fn calls_refused_for_their_role_are_logged_once_per_interval_per_token() {
        // A name no other test uses: the limiter is process-wide.
        let access = Access::with_tokens([(
            token_sha256("looping-secret"),
            Caller {
                name: "looping-reader".into(),
                role: Role::Reader,
            },
        )]);
        let call = request(Some("Bearer looping-secret"));
        for _ in 0..3 {
            let refused = access.check(&call, Method::Allocate).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        }
        // The first refusal was logged; the next two were held back.
        let state = REFUSED_ROLE_LOG.state.lock().unwrap();
        assert_eq!(state.get("looping-reader").map(|(_, held)| *held), Some(2));
    }

    /// After a token rotation, the operator finds the client still sending
    /// the old token (or none) by the address the refusal's line names;
    /// each kind of refusal is limited to a line per interval of its own,
    /// so a flood of one does not hide the other.
    #[test]
    fn unauthenticated_calls_are_logged_with_the_peer_once_per_interval() {
        let access = access();
        let limit = LogEvery::new(Duration::from_secs(3600));
        let old_client: SocketAddr = "10.1.2.3:41234".parse().unwrap();
        let tokenless: SocketAddr = "10.9.8.7:50000".parse().unwrap();
        let text = logged(|| {
            for _ in 0..3 {
                let old = request(Some("Bearer revoked-secret"));
                let refused = access
                    .check_logged(&old, Method::Allocate, Some(old_client), &limit)
                    .unwrap_err();
                assert_eq!(refused.code(), tonic::Code::Unauthenticated);
                let refused = access
                    .check_logged(&request(None), Method::ListPools, Some(tokenless), &limit)
                    .unwrap_err();
                assert_eq!(refused.code(), tonic::Code::Unauthenticated);
                let basic = request(Some("Basic cmVhZC1zZWNyZXQ="));
                let refused = access
                    .check_logged(&basic, Method::GetPool, Some(tokenless), &limit)
                    .unwrap_err();
                assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            }
        });
        let malformed: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("is not 'Bearer <token>'"))
            .collect();
        assert_eq!(malformed.len(), 1, "{text}");
        assert!(malformed[0].contains("peer=10.9.8.7:50000"), "{text}");
        let unknown: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("does not know"))
            .collect();
        assert_eq!(unknown.len(), 1, "{text}");
        assert!(
            unknown[0].contains("peer=10.1.2.3:41234") && unknown[0].contains("Allocate"),
            "{text}"
        );
        let missing: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("without a bearer token"))
            .collect();
        assert_eq!(missing.len(), 1, "{text}");
        assert!(
            missing[0].contains("peer=10.9.8.7:50000") && missing[0].contains("ListPools"),
            "{text}"
        );
    }

    /// An api_tokens entry whose sha256 holds the token itself (64 hex
    /// digits, as `openssl rand -hex 32` makes, look like a digest, so the
    /// config cannot tell): the caller presenting it is refused, and the
    /// log names the entry, never the token, and the other reading of the
    /// same call: a digest read from the config, presented by its peer.
    #[test]
    fn a_token_written_as_its_own_digest_is_named_in_a_warning() {
        let token = "5f0c0e6a3be2d9c8d7a1f4e1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1";
        let access = Access::with_tokens([(
            token.to_owned(),
            Caller {
                name: "billing-plain".into(),
                role: Role::Billing,
            },
        )]);
        let limit = LogEvery::new(Duration::from_secs(3600));
        let peer: SocketAddr = "10.9.8.7:50000".parse().unwrap();
        let text = logged(|| {
            let call = request(Some(&format!("Bearer {}", token.to_ascii_uppercase())));
            let refused = access
                .check_logged(&call, Method::Allocate, Some(peer), &limit)
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        });
        let named: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(" WARN ") && line.contains("billing-plain"))
            .collect();
        assert_eq!(named.len(), 1, "{text}");
        // The same digest is what a caller who read the config (a
        // ConfigMap, a backup) presents: both readings are given, and
        // only the first is mended by writing the SHA-256 there.
        assert!(named[0].contains("holds the token itself"), "{text}");
        assert!(
            named[0].contains("a caller at 10.9.8.7:50000 presented a digest read from the config"),
            "{text}"
        );
        assert!(named[0].contains("change nothing"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains(token),
            "the token is logged: {text}"
        );
    }

    /// The address comes from the connection info tonic puts in each
    /// request's extensions; a request without it logs "unknown".
    #[test]
    fn a_calls_peer_is_read_from_its_connection_info() {
        use tonic::transport::server::TcpConnectInfo;
        let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut request = tonic::codegen::http::Request::new(());
        assert_eq!(peer(&request), None);
        assert_eq!(Peer(None).to_string(), "unknown");
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(from),
        });
        assert_eq!(peer(&request), Some(from));
    }

    fn access() -> Access {
        Access::with_tokens([
            (
                token_sha256("read-secret"),
                Caller {
                    name: "grafana".into(),
                    role: Role::Reader,
                },
            ),
            (
                token_sha256("buy-secret"),
                Caller {
                    name: "billing".into(),
                    role: Role::Billing,
                },
            ),
        ])
    }

    fn request(authorization: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn the_digest_is_sha256_in_lowercase_hex() {
        // printf %s abc | sha256sum
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_replaced_access_checks_the_next_call() {
        let handle = AccessHandle::new(Access::open());
        let call = request(Some("Bearer buy-secret"));
        assert!(handle.current().check(&call, Method::Allocate).is_ok());
        handle.replace(access());
        assert_eq!(handle.current().by_sha256.len(), 2);
        assert!(handle.current().check(&call, Method::Allocate).is_ok());
        assert!(handle.current().check(&call, Method::DeletePool).is_err());
        handle.replace(Access::with_tokens([]));
        assert_eq!(handle.current().by_sha256.len(), 0);
        assert!(handle.current().check(&call, Method::DeletePool).is_ok());
    }

    #[test]
    fn a_reload_may_close_the_api_and_change_tokens_but_not_open_it() {
        let handle = AccessHandle::new(Access::open());
        assert_eq!(handle.reload(Access::open()), Ok(0));
        assert_eq!(handle.reload(access()), Ok(2));
        assert_eq!(handle.reload(Access::open()), Err(WouldOpenTheApi));
        assert_eq!(
            handle.current().by_sha256.len(),
            2,
            "a refused reload changes nothing"
        );
        let fewer = Access::with_tokens([(
            token_sha256("buy-secret"),
            Caller {
                name: "billing".into(),
                role: Role::Billing,
            },
        )]);
        assert_eq!(handle.reload(fewer), Ok(1));
        let call = request(Some("Bearer read-secret"));
        assert!(handle.current().check(&call, Method::ListPools).is_err());
    }

    #[test]
    fn an_open_api_lets_everyone_call_everything() {
        for method in Method::ALL {
            assert_eq!(Access::open().check(&request(None), method).unwrap(), None);
        }
    }

    #[test]
    fn roles_nest_reader_billing_operator() {
        assert!(Role::Reader < Role::Billing && Role::Billing < Role::Operator);
        let access = access();
        let reader = request(Some("bearer read-secret"));
        let billing = request(Some("Bearer buy-secret"));
        for method in Method::ALL {
            let allowed =
                |r: &MetadataMap| access.check(r, method).map(|c| c.unwrap().name.clone());
            let caller = |r: &MetadataMap| allowed(r).ok();
            match method.needs() {
                Role::Reader => {
                    assert_eq!(caller(&reader).as_deref(), Some("grafana"), "{method:?}");
                    assert_eq!(caller(&billing).as_deref(), Some("billing"), "{method:?}");
                }
                Role::Billing => {
                    let refused = allowed(&reader).unwrap_err();
                    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
                    assert_eq!(
                        refused.message(),
                        format!(
                            "token 'grafana' has role reader; {} needs role billing",
                            method.name()
                        )
                    );
                    assert_eq!(caller(&billing).as_deref(), Some("billing"), "{method:?}");
                }
                Role::Operator => {
                    for r in [&reader, &billing] {
                        let refused = allowed(r).unwrap_err();
                        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{method:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_missing_malformed_or_unknown_token_is_unauthenticated() {
        let access = access();
        for (header, says) in [
            (None, "needs a bearer token"),
            (Some("read-secret"), "is not 'Bearer <token>'"),
            (Some("Basic cmVhZC1zZWNyZXQ="), "is not 'Bearer <token>'"),
            (Some("Bearer "), "is not 'Bearer <token>'"),
            (
                Some("Bearer read-secreT"),
                "not one of this daemon's api_tokens",
            ),
        ] {
            let refused = access
                .check(&request(header), Method::ListPools)
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{header:?}");
            assert!(
                refused.message().contains(says),
                "{header:?}: {}",
                refused.message()
            );
        }
    }
}
