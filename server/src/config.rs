//! warmpoold's configuration file (TOML) and its defaults.
//!
//! Durations are humantime strings ("30s", "15m"). Unknown fields are errors,
//! so a typo never silently falls back to a default.

use crate::access::{Access, Caller, Role};
use pool_manager::gate::GateSettings;
use pool_manager::model::{PoolKey, PoolSpec, Target};
use pool_manager::schedule::Window;
use pool_manager::sizing::SizingSettings;
use pool_manager::ManagerSettings;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where `/metrics` is served by default: loopback only, like gRPC.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_DATA_DIR: &str = "warmpool-data";
/// The embedded cloud runs 20x faster than a real one, so the demo fills in seconds.
pub const DEFAULT_EMBEDDED_TIME_SCALE: f64 = 0.05;

/// `store_cache_capacity` at least: below it sled rereads its pages from
/// disk on every listing.
pub const MIN_STORE_CACHE_CAPACITY: u64 = 1 << 20;
/// `store_cache_capacity` at most: far beyond any store warmpool writes,
/// so a larger value is a typo (bytes meant as KiB, a unit left out).
pub const MAX_STORE_CACHE_CAPACITY: u64 = 64 << 30;

/// Upper bounds of the `[manager]` intervals and pauses.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
pub const MAX_REPLENISH_INTERVAL: Duration = Duration::from_secs(60 * 60);
pub const MAX_RECONCILE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
pub const MAX_QUOTA_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);
pub const MAX_QUOTA_POLL_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Lower bounds of the `[manager]` intervals that pace cloud calls, on a
/// real cloud: below them a unit typo (`1ms` meant as `1m` or `1s`) hammers
/// Nova, Cinder and Neutron (every boot in flight polls at `poll_interval`;
/// a reconcile pass lists every pool server, volume and port; a quota poll
/// reads Nova's /limits and Neutron's quota per flavor). The embedded cloud
/// takes them times its `time_scale` when that is below 1 (its simulated
/// seconds pass faster); `manager.allow_short_intervals` lifts them for a
/// test cloud that answers in milliseconds.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_REPLENISH_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
pub const MIN_QUOTA_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// `manager.probe_timeout` at least, unless `manager.allow_short_intervals`:
/// below it a unit typo (`5ms` meant as `5s`) fails every readiness probe,
/// so no instance ever becomes Ready, and the errors blame mysqld.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// `manager.probe_timeout` at most: a purchase waits it out for each
/// instance it claims whose mysqld is silent, and a reconcile pass for each
/// silent Ready one; a mysqld that takes longer to greet is not serving.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// The embedded cloud at most this many times slower than a real one.
pub const MAX_EMBEDDED_TIME_SCALE: f64 = 100.0;
/// `shutdown_grace` at least: less cuts every call in flight at the first
/// SIGTERM.
pub const MIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// `shutdown_grace` at most: the shortest stop timeout deploy/ ships (45 s:
/// the StatefulSet's terminationGracePeriodSeconds, the Containerfile's
/// `--stop-timeout`; the systemd unit waits 60 s) less the wait for cut
/// connections to close ([`crate::shutdown::CUT_PATIENCE`]) and
/// [`SHUTDOWN_FLUSH_MARGIN`], so no grace the file can set has a shipped
/// supervisor kill warmpoold before its final flush.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// What a supervisor must leave warmpoold after `shutdown_grace` to flush
/// the store and save the pools' learned sizing.
pub const SHUTDOWN_FLUSH_MARGIN: Duration = Duration::from_secs(10);
/// `manager.keep_released` at least: a billing system's retry of an order
/// comes within minutes, and one after the record is forgotten allocates anew.
pub const MIN_KEEP_RELEASED: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is in the message, not a `source`: a chain printed
    // whole ("{:#}") would say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("config file {path}: {message}")]
    InvalidFile { path: PathBuf, message: String },
    /// A file read beside the config (secure.yaml) that could not be:
    /// `message` names it and what to do, `kind` is the read's failure.
    #[error("config: {message}")]
    Unreadable {
        message: String,
        kind: std::io::ErrorKind,
    },
}

impl ConfigError {
    /// Whether only an operator mends it, so that a restart reads it
    /// alike: all but a file's read failing otherwise than for the file's
    /// own fault ([`the_files_fault`]: an I/O error of its disk, an NFS
    /// mount gone stale), which may pass.
    pub fn needs_an_operator(&self) -> bool {
        match self {
            ConfigError::Read { error, .. } => the_files_fault(error.kind()),
            ConfigError::Unreadable { kind, .. } => the_files_fault(*kind),
            _ => true,
        }
    }

    /// The error as one of the file at `path`.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Invalid(message) => ConfigError::InvalidFile {
                path: path.to_owned(),
                message,
            },
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        }
    }
}

/// Whether a file's read that failed as `kind` did for the file itself,
/// which every restart reads alike until an operator mends it: missing,
/// unreadable to warmpoold, not UTF-8 text, a directory named (or a
/// path through a file). Any other failure (an I/O error of its disk, an
/// NFS mount gone stale) may pass.
pub fn the_files_fault(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind;
    matches!(
        kind,
        ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::InvalidData
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
    )
}

/// `path`'s text. std's words for a file not UTF-8 ("stream did not
/// contain valid UTF-8") and for a directory name neither the fault nor
/// what to do: the error says both, its kind kept.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::ErrorKind;
    std::fs::read_to_string(path).map_err(|error| {
        let words = match error.kind() {
            ErrorKind::InvalidData => Some("it is not UTF-8 text (Latin-1?): save it as UTF-8"),
            ErrorKind::IsADirectory => Some("it is a directory: name the file itself"),
            _ => None,
        };
        ConfigError::Read {
            path: path.to_owned(),
            error: match words {
                Some(words) => std::io::Error::new(error.kind(), words),
                None => error,
            },
        }
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen", deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`, plain HTTP).
    #[serde(default = "default_metrics_listen", deserialize_with = "socket_addr")]
    pub metrics_listen: SocketAddr,
    /// Directory of the sled store; created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bytes of the store's page cache (sled's; its own default, 1 GiB, is
    /// lowered only to a cgroup v1 limit): bytes or "64MiB" in the file.
    #[serde(
        default = "default_store_cache_capacity",
        deserialize_with = "byte_size"
    )]
    pub store_cache_capacity: u64,
    #[serde(default)]
    pub manager: ManagerConfig,
    #[serde(default)]
    pub cloud: CloudConfig,
    /// Pools created at start when the store does not have them yet. A pool
    /// already in the store keeps its stored settings (the API may have changed them).
    /// Without a `pools` key: the demo's pools on the embedded cloud, none
    /// on a real one (see [`Config::parse`]).
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// How long shutdown waits for in-flight unary RPCs before stopping
    /// anyway, between [`MIN_SHUTDOWN_GRACE`] and [`MAX_SHUTDOWN_GRACE`].
    /// Streams are not waited for: their end is sent at once, and a client
    /// that does not take it is cut off ([`crate::shutdown`]).
    #[serde(default = "default_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// How often the gRPC server pings each client connection (HTTP/2
    /// PING): a client gone without closing (a partition, a VM killed)
    /// otherwise keeps its connection and its `WatchPools` stream forever.
    #[serde(default = "default_keepalive_interval", with = "duration")]
    pub grpc_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(default = "default_keepalive_timeout", with = "duration")]
    pub grpc_keepalive_timeout: Duration,
    /// The bearer tokens callers must present (see [`crate::access`]).
    /// None: the API is open to anyone who reaches `listen`.
    #[serde(default)]
    pub api_tokens: Vec<ApiToken>,
    /// Serve gRPC over TLS; plaintext HTTP/2 when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// warmpoold's `--delete-unknown-servers`, never read from the file (a
    /// file would keep it for every later start): start on a store that
    /// knows no pool server and no order although the cloud lists some
    /// (see `pool_manager::ManagerSettings::delete_unknown_servers`).
    #[serde(skip)]
    pub delete_unknown_servers: bool,
    /// warmpoold's `--adopt-cloud`, never read from the file, for the
    /// same reason: start on a store that recorded another cloud, and
    /// record this one as its own (see
    /// `pool_manager::ManagerSettings::adopt_cloud`).
    #[serde(skip)]
    pub adopt_cloud: bool,
}

/// `[tls]`: the gRPC listener's certificate, read at start and again on
/// SIGHUP (`crate::tls::TlsHandle::prepare`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, every client must present a
    /// certificate one of them signed (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `[[api_tokens]]`: one bearer token the API accepts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; logs name the caller by it.
    pub name: String,
    pub role: Role,
    /// The token's SHA-256 in hex (`printf %s "$TOKEN" | sha256sum`): the
    /// file need not hold the token itself.
    pub sha256: String,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default")
}
/// An `IP:port` whose error names the value (serde's says only
/// "invalid socket address syntax").
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// A [`socket_addr`] that may be left out (`#[serde(default)]` makes it
/// `None`; this is called only when the key is there).
fn optional_socket_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

/// A listen address as the config file and warmpoold's flags take it.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an IP:port (e.g. 127.0.0.1:50051 or [::]:50051; a host name is not resolved)"
        )
    })
}

fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN.parse().expect("valid default")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_store_cache_capacity() -> u64 {
    pool_manager::store::DEFAULT_CACHE_CAPACITY
}

/// A size in bytes: an integer, or a string of one with an optional unit
/// (B, KiB, MiB, GiB). Decimal units (MB) are refused rather than guessed.
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size: bytes (67108864) or a string with KiB, MiB or GiB (\"64MiB\")")
        }
        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }
        fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::custom(not_a_size(&bytes.to_string())))
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_byte_size(text).ok_or_else(|| E::custom(not_a_size(&format!("{text:?}"))))
        }
    }
    d.deserialize_any(Size)
}

fn not_a_size(value: &str) -> String {
    format!("{value} is not a size: bytes (67108864) or a string with KiB, MiB or GiB (\"64MiB\")")
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let factor: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A size for messages: "64 MiB", "1536 KiB", "100 bytes".
fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A duration as the file writes it: a humantime string ("90s", "10m",
/// "1h 30m"). Its error says so and keeps humantime's reason, where
/// humantime_serde's says only "expected a duration".
mod duration {
    use std::time::Duration;

    const EXAMPLES: &str = "use e.g. \"90s\", \"10m\", \"1h 30m\"";

    struct Human;

    impl serde::de::Visitor<'_> for Human {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a duration in quotes; {EXAMPLES}")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text)
                .map_err(|e| E::custom(format!("{text:?} is not a duration ({e}); {EXAMPLES}")))
        }
        fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{number} is not a duration: a number needs a unit, in quotes (\"{number}s\"); {EXAMPLES}"
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{number} is not a duration: a number needs a unit, in quotes (\"{number}s\"); {EXAMPLES}"
            )))
        }
        fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{number} is not a duration: a number needs a unit, in quotes (\"{number}s\"); {EXAMPLES}"
            )))
        }
        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Duration, E> {
            Err(E::custom(format!("{value} is not a duration; {EXAMPLES}")))
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Human)
    }
}

/// An optional [`duration`]: absent (the field's default) is `None`.
mod optional_duration {
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_keepalive_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(20)
}

/// Longest keepalive interval or timeout: beyond it a dead client is kept
/// for longer than anyone means.
const MAX_KEEPALIVE: Duration = Duration::from_secs(3600);
/// Shortest keepalive interval or timeout, on any cloud (it is about the
/// network, not the cloud): below it a unit typo (`20ms` meant as `20s`)
/// closes the connection of every client whose ping takes longer than
/// that, and `1ms` or `1ns` of every client at once.
const MIN_KEEPALIVE: Duration = Duration::from_secs(1);

/// `max_concurrent_boots` when it is unset and `gate = false`. The core's
/// default (64, the gate's largest window) is only a ceiling over the gate's
/// AIMD window; without the gate nothing else paces boots (no window, no
/// quota polling, no Retry-After pause; only a pool's pause after refused or
/// failed boots), so a config that turned the gate off keeps the ceiling it
/// had before the default was raised.
const GATELESS_MAX_CONCURRENT_BOOTS: u32 = 4;

/// `[manager]`: every key optional; defaults from `ManagerSettings`,
/// `pool_manager::sizing` and `pool_manager::gate`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// How often server, volume and port status is polled while waiting.
    /// A cleanup (a release's detach and delete until gone, a rollback)
    /// waits 30 of them for the cloud, and at least 2 min
    /// (`pool_manager::cleanup_budget`).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How often each pool is re-checked without a nudge.
    #[serde(with = "duration")]
    pub replenish_interval: Duration,
    /// How often the store is reconciled with the cloud.
    #[serde(with = "duration")]
    pub reconcile_interval: Duration,
    /// Boots in flight per pool, at most; unset: the core's default with
    /// the gate on, `GATELESS_MAX_CONCURRENT_BOOTS` with it off.
    pub max_concurrent_boots: Option<u32>,
    /// Released allocations older than this are forgotten (GetAllocation
    /// answers NOT_FOUND, an Allocate with the id allocates anew); unset:
    /// kept forever.
    #[serde(with = "optional_duration")]
    pub keep_released: Option<Duration>,
    /// How long a readiness probe of a server's mysqld waits, TCP connect,
    /// greeting and login together.
    #[serde(with = "duration")]
    pub probe_timeout: Duration,

    // Sizing of `target = "auto"` pools.
    /// Probability that a purchase finds a warm instance (0.5 to 0.999999).
    pub service_level: f64,
    /// Lead time assumed before a pool's first boot is observed (stretched
    /// for a flavor's disk IOPS limit, the pool's `iops_limit` or else the
    /// flavor's extra specs, and for a pool's `volume_iops_limit`).
    #[serde(with = "duration")]
    pub prior_lead_time: Duration,
    /// Completed boots kept for the lead-time percentiles.
    pub lead_samples: usize,
    /// Completed boots older than this no longer count (with none younger,
    /// the prior is used again); they are kept, and stored, until newer
    /// boots push them out of `lead_samples`.
    #[serde(with = "duration")]
    pub lead_max_age: Duration,
    /// Time constant of the short demand EWMA (reacts to bursts).
    #[serde(with = "duration")]
    pub demand_short: Duration,
    /// Time constant of the long demand EWMA.
    #[serde(with = "duration")]
    pub demand_long: Duration,
    /// A lower demand forecast takes effect only after this long without a new high.
    #[serde(with = "duration")]
    pub cooldown: Duration,

    // The per-AZ throttle gate on replenishment boots.
    /// Off: no AIMD window, no Retry-After or quota pauses, no quota polling;
    /// only max_concurrent_boots limits boots.
    pub gate: bool,
    /// Replenishment boots in flight per AZ the window starts at, and its bounds.
    pub gate_initial_window: u32,
    pub gate_min_window: u32,
    pub gate_max_window: u32,
    /// Boots finishing within this factor of the baseline lead time grow the window.
    pub gate_grow_below: f64,
    /// Boots slower than this factor of the baseline halve it.
    pub gate_shrink_above: f64,
    /// Pause after a 429/413 without Retry-After.
    #[serde(with = "duration")]
    pub retry_after_default: Duration,
    /// Retry-After is stretched by a random factor in [1, 1 + jitter].
    pub retry_after_jitter: f64,
    /// First pause of refills after a quota refusal; doubles up to quota_backoff_max.
    #[serde(with = "duration")]
    pub quota_backoff: Duration,
    #[serde(with = "duration")]
    pub quota_backoff_max: Duration,
    /// How often each flavor's quota headroom (Nova /limits, Neutron's port
    /// quota) is polled.
    #[serde(with = "duration")]
    pub quota_poll_interval: Duration,
    /// Lifts the intervals' minimums ([`MIN_POLL_INTERVAL`] and the others),
    /// `probe_timeout`'s ([`MIN_PROBE_TIMEOUT`]) and `cloud.request_timeout`'s
    /// ([`MIN_OPENSTACK_REQUEST_TIMEOUT`]):
    /// for a test cloud that answers in milliseconds (cloudsim's OpenStack
    /// front, a devstack on Nova's fake driver), never a production one.
    pub allow_short_intervals: bool,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        let d = ManagerSettings::default();
        let (s, g) = (SizingSettings::default(), GateSettings::default());
        Self {
            poll_interval: d.poll_interval,
            replenish_interval: d.replenish_interval,
            reconcile_interval: d.reconcile_interval,
            max_concurrent_boots: None,
            keep_released: d.keep_released,
            probe_timeout: pool_manager::probe::DEFAULT_PROBE_TIMEOUT,
            service_level: s.service_level,
            prior_lead_time: s.prior_lead_time,
            lead_samples: s.lead_samples,
            lead_max_age: s.lead_max_age,
            demand_short: s.demand_short,
            demand_long: s.demand_long,
            cooldown: s.cooldown,
            gate: g.enabled,
            gate_initial_window: g.initial_window,
            gate_min_window: g.min_window,
            gate_max_window: g.max_window,
            gate_grow_below: g.grow_below,
            gate_shrink_above: g.shrink_above,
            retry_after_default: g.default_retry_after,
            retry_after_jitter: g.retry_after_jitter,
            quota_backoff: g.quota_backoff,
            quota_backoff_max: g.quota_backoff_max,
            quota_poll_interval: g.headroom_interval,
            allow_short_intervals: false,
        }
    }
}

impl ManagerConfig {
    /// `max_concurrent_boots` as set, else by whether the gate is on.
    pub fn max_concurrent_boots(&self) -> u32 {
        self.max_concurrent_boots.unwrap_or(if self.gate {
            ManagerSettings::default().max_concurrent_boots
        } else {
            GATELESS_MAX_CONCURRENT_BOOTS
        })
    }

    pub fn settings(&self) -> ManagerSettings {
        ManagerSettings {
            poll_interval: self.poll_interval,
            replenish_interval: self.replenish_interval,
            reconcile_interval: self.reconcile_interval,
            max_concurrent_boots: self.max_concurrent_boots(),
            keep_released: self.keep_released,
            sizing: SizingSettings {
                service_level: self.service_level,
                prior_lead_time: self.prior_lead_time,
                lead_samples: self.lead_samples,
                lead_max_age: self.lead_max_age,
                demand_short: self.demand_short,
                demand_long: self.demand_long,
                cooldown: self.cooldown,
                ..SizingSettings::default()
            },
            gate: GateSettings {
                enabled: self.gate,
                initial_window: self.gate_initial_window,
                min_window: self.gate_min_window,
                max_window: self.gate_max_window,
                grow_below: self.gate_grow_below,
                shrink_above: self.gate_shrink_above,
                default_retry_after: self.retry_after_default,
                retry_after_jitter: self.retry_after_jitter,
                quota_backoff: self.quota_backoff,
                quota_backoff_max: self.quota_backoff_max,
                headroom_interval: self.quota_poll_interval,
                ..GateSettings::default()
            },
            ..ManagerSettings::default()
        }
    }

    /// The sizing and gate keys' own consistency; the error names the key.
    fn validate_sizing_and_gate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("manager.{m}")));
        if let Err(e) = self.settings().sizing.validate() {
            return invalid(e.to_string());
        }
        for (name, d) in [
            ("retry_after_default", self.retry_after_default),
            ("quota_backoff", self.quota_backoff),
            ("quota_poll_interval", self.quota_poll_interval),
        ] {
            if d.is_zero() {
                return invalid(format!("{name} must be positive"));
            }
        }
        if self.gate_min_window == 0 {
            return invalid("gate_min_window must be at least 1".into());
        }
        if !(self.gate_min_window <= self.gate_initial_window
            && self.gate_initial_window <= self.gate_max_window)
        {
            return invalid(format!(
                "gate_initial_window must be within gate_min_window..=gate_max_window, got {} not in {}..={}",
                self.gate_initial_window, self.gate_min_window, self.gate_max_window
            ));
        }
        if !(self.gate_grow_below >= 1.0 && self.gate_grow_below < self.gate_shrink_above) {
            return invalid(format!(
                "gate_grow_below must be at least 1 and below gate_shrink_above, got {} and {}",
                self.gate_grow_below, self.gate_shrink_above
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_after_jitter) {
            return invalid(format!(
                "retry_after_jitter must be between 0 and 1, got {}",
                self.retry_after_jitter
            ));
        }
        if self.quota_backoff_max < self.quota_backoff {
            return invalid("quota_backoff_max must be at least quota_backoff".into());
        }
        Ok(())
    }
}

/// `[cloud]`: `kind` selects the variant, the other keys are its fields.
///
/// Read through a TOML table rather than serde's internally tagged enums:
/// those buffer the table and lose the key of a bad value, so "expected a
/// duration" could not say `request_timeout`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub enum CloudConfig {
    /// The in-process simulated cloud (cloudsim): no OpenStack needed.
    Embedded {
        /// Multiplies every simulated latency; 1.0 is real-cloud speed.
        time_scale: f64,
        /// Simulated IOPS throttling (boots 3-5x slower).
        iops_throttled: bool,
        /// Seed of the simulator's randomness.
        seed: u64,
    },
    /// A real OpenStack: Keystone v3, Nova, Cinder v3, Neutron, Glance.
    // Boxed: it is much larger than the embedded variant.
    OpenStack(Box<OpenStackConfig>),
}

/// The fields of `kind = "embedded"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedFields {
    #[serde(default = "default_time_scale")]
    time_scale: f64,
    #[serde(default)]
    iops_throttled: bool,
    #[serde(default)]
    seed: u64,
}

impl TryFrom<toml::Table> for CloudConfig {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => return Err(format!("kind: expected a string, found {other}")),
            None => return Err("missing field `kind` (\"embedded\" or \"openstack\")".into()),
        };
        // toml's own error names the key ("... in `request_timeout`"), over
        // several lines: one line reads better after "cloud: ".
        let one_line = |e: toml::de::Error| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let fields = toml::Value::Table(table);
        match kind.as_str() {
            "embedded" => {
                let f: EmbeddedFields = fields.try_into().map_err(one_line)?;
                Ok(CloudConfig::Embedded {
                    time_scale: f.time_scale,
                    iops_throttled: f.iops_throttled,
                    seed: f.seed,
                })
            }
            "openstack" => Ok(CloudConfig::OpenStack(Box::new(
                fields.try_into().map_err(one_line)?,
            ))),
            other => Err(format!(
                "unknown variant `{other}`, expected `embedded` or `openstack`"
            )),
        }
    }
}

/// Defaults of `[cloud] kind = "openstack"`.
pub const DEFAULT_OPENSTACK_REQUEST_TIMEOUT: Duration =
    pool_manager::openstack::DEFAULT_REQUEST_TIMEOUT;
/// `cloud.request_timeout` at most: OpenStack's APIs answer in seconds (a
/// create is accepted at once, then polled), so a call unanswered this
/// long is not coming, and a cloud that stopped answering holds the
/// start-up login, check-cloud and every purchase's call this long.
pub const MAX_OPENSTACK_REQUEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `cloud.request_timeout` at least, unless `manager.allow_short_intervals`:
/// below it a unit typo (`30ms` meant as `30s`) times out every call, the
/// start-up login first, and the errors blame the cloud.
pub const MIN_OPENSTACK_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// `[cloud] kind = "openstack"`: where the credentials are and how pool
/// servers are built. Turned into the driver's settings by [`OpenStackConfig::settings`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackConfig {
    /// Entry of clouds.yaml to use; without one, the `OS_*` environment
    /// variables (or `OS_CLOUD`) say where and who.
    #[serde(default)]
    pub cloud: Option<String>,
    /// clouds.yaml to read; default: `OS_CLIENT_CONFIG_FILE`, then
    /// ./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml.
    /// secure.yaml is looked for on its own search path either way
    /// ([`clouds_yaml_entry`]).
    #[serde(default)]
    pub clouds_yaml: Option<PathBuf>,
    /// Network (name or id) every pool server gets its first port on; mysqld
    /// is probed on that port's fixed address.
    pub management_network: String,
    /// Image (name or id) every pool boots, overriding the pools' `image`.
    #[serde(default)]
    pub image: Option<String>,
    /// Security groups (names or ids, of warmpool's project) of pool
    /// servers, given to their port on the management network; empty: the
    /// project's default.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Security groups (names or ids, of warmpool's project) of the port
    /// made on the tenant's network at each sale. It is warmpool's
    /// project's, so the tenant cannot change them: they (or the default
    /// group, when none are named) must admit the tenant's clients to
    /// mysqld. Absent or empty: none named, so the project's default group
    /// applies, as before the setting (not `security_groups`: an upgrade
    /// would have put those on every tenant's port).
    #[serde(default)]
    pub tenant_port_security_groups: Option<Vec<String>>,
    /// Nova keypair injected into pool servers (one of the user warmpool
    /// logs in as).
    #[serde(default)]
    pub key_name: Option<String>,
    /// Server names are this prefix plus the instance id (a UUID): at most
    /// 219 characters, for Nova's 255.
    #[serde(default = "default_server_name_prefix")]
    pub server_name_prefix: String,
    /// Tag on every pool server; the reconciler lists servers by it.
    #[serde(default = "default_server_tag")]
    pub server_tag: String,
    /// mysqld's port on a server's management address.
    #[serde(default = "default_mysql_port")]
    pub mysql_port: u16,
    /// Bound on every cloud call, the login included.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// For test clouds whose servers run no mysqld (e.g. deploy/testbed on
    /// Nova's fake virt driver): probe this IP:port for every server.
    #[serde(default, deserialize_with = "optional_socket_addr")]
    pub probe_address_override: Option<SocketAddr>,
    /// Per availability zone overrides, keyed by the pools' AZ names.
    #[serde(default)]
    pub availability_zones: std::collections::BTreeMap<String, OpenStackAzConfig>,
}

/// `[cloud.availability_zones.<az>]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackAzConfig {
    /// Management network of servers in this AZ (name or id).
    #[serde(default)]
    pub management_network: Option<String>,
    /// Cinder AZ for new volumes of pools in this AZ (when Cinder's zones are
    /// not named like Nova's, e.g. one "nova" zone).
    #[serde(default)]
    pub volume_availability_zone: Option<String>,
}

fn default_server_name_prefix() -> String {
    pool_manager::openstack::DEFAULT_SERVER_NAME_PREFIX.to_owned()
}
fn default_server_tag() -> String {
    pool_manager::openstack::DEFAULT_SERVER_TAG.to_owned()
}
fn default_mysql_port() -> u16 {
    pool_manager::openstack::DEFAULT_MYSQL_PORT
}
fn default_request_timeout() -> Duration {
    DEFAULT_OPENSTACK_REQUEST_TIMEOUT
}

impl OpenStackConfig {
    /// The driver's settings: reads the credentials from clouds.yaml (or the
    /// environment) now, so a missing file or entry fails start-up with a
    /// message naming it.
    pub fn settings(&self) -> Result<pool_manager::openstack::OpenStackSettings, ConfigError> {
        let auth = self.auth()?;
        let mut settings =
            pool_manager::openstack::OpenStackSettings::new(auth, self.management_network.clone());
        settings.image = self.image.clone();
        settings.security_groups = self.security_groups.clone();
        settings.tenant_port_security_groups =
            self.tenant_port_security_groups.clone().unwrap_or_default();
        settings.key_name = self.key_name.clone();
        settings.server_name_prefix = self.server_name_prefix.clone();
        settings.server_tag = self.server_tag.clone();
        settings.mysql_port = self.mysql_port;
        settings.request_timeout = self.request_timeout;
        settings.probe_address_override = self.probe_address_override;
        settings.availability_zones = self
            .availability_zones
            .iter()
            .map(|(az, o)| {
                (
                    az.clone(),
                    pool_manager::openstack::AzSettings {
                        management_network: o.management_network.clone(),
                        volume_availability_zone: o.volume_availability_zone.clone(),
                    },
                )
            })
            .collect();
        Ok(settings)
    }

    /// The `[cloud.availability_zones.<az>]` sections of no zone in
    /// `pool_azs`. Such a section is no error (a pool created through the
    /// API later may be in its zone), but it is likely a misspelt zone,
    /// whose pools boot on the defaults instead.
    pub fn unused_az_overrides<'a>(
        &self,
        pool_azs: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&str> {
        let used: std::collections::BTreeSet<&str> = pool_azs.into_iter().collect();
        self.availability_zones
            .keys()
            .map(String::as_str)
            .filter(|az| !used.contains(az))
            .collect()
    }

    /// The clouds.yaml entry named by `cloud` (or `OS_CLOUD`), else the
    /// `OS_*` variables. clouds.yaml (and secure.yaml) are read here
    /// rather than by osauth, which ignores `OS_CLIENT_CONFIG_FILE`.
    fn auth(&self) -> Result<pool_manager::openstack::CloudConfig, ConfigError> {
        self.auth_in(&|name| std::env::var_os(name))
    }

    /// What to warn of when `OS_REGION_NAME` or `OS_INTERFACE` is set to
    /// another value than `auth` (the config [`Self::settings`] read)
    /// uses, beside a named clouds.yaml entry: the entry is read whole,
    /// and of the `OS_*` variables only OS_CLOUD with it (the openstack CLI
    /// would go by these two, so an operator checking with it may be
    /// looking at another region).
    pub fn unused_region_variables(
        &self,
        auth: &pool_manager::openstack::CloudConfig,
    ) -> Option<String> {
        self.unused_region_variables_in(auth, &|name| std::env::var_os(name))
    }

    fn unused_region_variables_in(
        &self,
        auth: &pool_manager::openstack::CloudConfig,
        env: &Env,
    ) -> Option<String> {
        let os_cloud = env("OS_CLOUD").filter(|c| !c.is_empty());
        let entry = match (&self.cloud, os_cloud) {
            (Some(name), _) => format!("'{name}' ([cloud] cloud)"),
            (None, Some(name)) => format!("'{}' (OS_CLOUD)", name.to_string_lossy()),
            (None, None) => return None,
        };
        let used = serde_yaml::to_value(auth).ok()?;
        let unused: Vec<String> = [
            ("OS_REGION_NAME", "region_name"),
            ("OS_INTERFACE", "interface"),
        ]
        .into_iter()
        .filter_map(|(variable, key)| {
            let set = env(variable)?.to_string_lossy().into_owned();
            let used = used[key].as_str().unwrap_or_default();
            // Compared as osauth reads them: an interface unset is public,
            // and publicURL/internalURL (older openrc files) are
            // public/internal.
            let same = if key == "interface" {
                effective_interface(&set) == effective_interface(used)
            } else {
                set == used
            };
            (!set.is_empty() && !same).then(|| {
                let used = if used.is_empty() && key == "interface" {
                    "none (public)".to_owned()
                } else if used.is_empty() {
                    "none".to_owned()
                } else {
                    format!("'{used}'")
                };
                format!("{variable} is '{set}' and the entry's {key} {used} is used")
            })
        })
        .collect();
        (!unused.is_empty()).then(|| {
            format!(
                "{}: the clouds.yaml entry {entry} is read whole, and beside it warmpool reads no OS_* variable but OS_CLOUD (the openstack CLI would go by these); set the entry's region_name and interface, or unset the variables",
                unused.join("; ")
            )
        })
    }

    /// [`Self::auth`] with the environment read through `env` (osauth's
    /// own loading and secure.yaml's search read the process's).
    fn auth_in(&self, env: &Env) -> Result<pool_manager::openstack::CloudConfig, ConfigError> {
        let os_cloud = env("OS_CLOUD").map(|c| c.to_string_lossy().into_owned());
        let env_cloud = os_cloud.clone().filter(|c| !c.is_empty());
        match self.cloud.clone().or(env_cloud) {
            Some(name) => {
                let path = match &self.clouds_yaml {
                    Some(path) => path.clone(),
                    None => find_clouds_yaml(env)?,
                };
                clouds_yaml_entry(&path, &name)
            }
            // osauth's from_env reads clouds.yaml and secure.yaml itself
            // when OS_CLOUD is set at all, and its errors quote their
            // values, secrets too.
            // A clouds.yaml named is meant to be read: the OS_* variables
            // (an openrc sourced in the shell) would log in as someone else.
            None if os_cloud.is_none() && self.clouds_yaml.is_some() => {
                let path = self.clouds_yaml.as_deref().unwrap_or(Path::new(""));
                let entries = match clouds_yaml_names(path) {
                    Ok(names) if names.is_empty() => "it has no entries".to_owned(),
                    Ok(names) => format!("it has: {}", names.join(", ")),
                    Err(e) => e.to_string(),
                };
                Err(ConfigError::Invalid(format!(
                    "cloud: clouds_yaml is {} but no entry of it is named; set [cloud] cloud (or OS_CLOUD) to the one to log in as ({entries})",
                    path.display()
                )))
            }
            None if os_cloud.is_some() => Err(ConfigError::Invalid(
                "cloud: OS_CLOUD is set but empty; name the clouds.yaml entry in `cloud` or OS_CLOUD, or unset OS_CLOUD to log in with the other OS_* variables".into(),
            )),
            // Nothing says where to log in: osauth would go on, and its
            // login fail with "configuration file cannot be found or is
            // invalid", blaming a clouds.yaml that may be fine. (OS_ENDPOINT
            // alone serves auth_type "none".)
            None if ["OS_AUTH_URL", "OS_ENDPOINT"]
                .iter()
                .all(|name| env(name).is_none_or(|v| v.is_empty())) =>
            {
                Err(no_cloud_named(env))
            }
            None => {
                let unusable = |e: &dyn std::fmt::Display| {
                    ConfigError::Invalid(format!(
                        "cloud: no `cloud` named and the OS_* environment variables are unusable: {e}"
                    ))
                };
                let config =
                    pool_manager::openstack::CloudConfig::from_env().map_err(|e| unusable(&e))?;
                // The domain variables osauth does not read, beside those
                // it did.
                let mut value = serde_yaml::to_value(&config).map_err(|e| unusable(&e))?;
                if let Some(entry) = value.as_mapping_mut() {
                    let auth = entry
                        .entry("auth".into())
                        .or_insert_with(|| serde_yaml::Mapping::new().into());
                    if let Some(auth) = auth.as_mapping_mut() {
                        for key in ["user_domain_id", "domain_id", "domain_name"] {
                            let variable = format!("OS_{}", key.to_uppercase());
                            if let Some(v) = env(&variable).filter(|v| !v.is_empty()) {
                                auth.insert(key.into(), v.to_string_lossy().into_owned().into());
                            }
                        }
                    }
                }
                let named = |key: &str| {
                    format!("OS_{}", key.trim_start_matches("auth.").to_uppercase())
                };
                carry_domains(&mut value, &named)
                    .and_then(|()| settle_region(&mut value, &named))
                    .map_err(|e| ConfigError::Invalid(format!("cloud: {e}")))?;
                serde_yaml::from_value(value).map_err(|e| unusable(&e))
            }
        }
    }
}

/// The default domain's id, which every Keystone has (its name is
/// "Default"): devstack's clouds.yaml names the user's domain by it.
const DEFAULT_DOMAIN_ID: &str = "default";

/// The domain keys of a clouds.yaml entry (or of the `OS_*` variables, put
/// in the same shape) that osauth, warmpool's OpenStack client, does not
/// read and would drop in silence, logging in to domain "Default":
/// mapped onto the ones it reads, or refused naming the key (`named`
/// names `auth.user_domain_id` as the source spells it).
///
/// - `domain_id`/`domain_name` (in `auth` or beside it): with a project
///   named, the default of the user's and the project's domain, as the
///   openstack CLI reads them, each where neither its id nor its name is
///   given; without one they scope the token to a domain, which warmpool
///   cannot work in: refused.
/// - `user_domain_id`: osauth names the user's domain by name only. A
///   `user_domain_name` beside it is used; the default domain's id
///   (`default`, in any case) is its name "Default"; any other id is refused, for password logins (the
///   other methods name no user domain).
///
/// `project_domain_id` osauth reads itself.
fn carry_domains(
    entry: &mut serde_yaml::Value,
    named: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let Some(entry) = entry.as_mapping_mut() else {
        return Ok(());
    };
    let password = match entry.get("auth_type").and_then(|t| t.as_str()) {
        None => true,
        Some(auth_type) => auth_type == "password",
    };
    let beside: Vec<(&str, serde_yaml::Value)> = ["domain_id", "domain_name"]
        .into_iter()
        .filter_map(|key| entry.remove(key).map(|value| (key, value)))
        .collect();
    let Some(auth) = entry.get_mut("auth").and_then(|a| a.as_mapping_mut()) else {
        return Ok(());
    };
    let given = |auth: &serde_yaml::Mapping, key: &str| {
        auth.get(key)
            .and_then(|v| v.as_str())
            .is_some_and(|v| !v.is_empty())
    };
    let password = password && !given(auth, "token");
    // Where each value came from, for the messages: `auth` wins over the
    // entry, as the CLI moves keys into `auth` only where it has none.
    let mut origin: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for (key, value) in beside {
        if !auth.contains_key(key) {
            auth.insert(key.into(), value);
            origin.insert(key, named(key));
        }
    }
    let scoped = given(auth, "project_id") || given(auth, "project_name");
    let mut user_domain_id_from = named("auth.user_domain_id");
    for (shorthand, kind) in [("domain_id", "id"), ("domain_name", "name")] {
        let Some(value) = auth.remove(shorthand) else {
            continue;
        };
        let from = origin
            .remove(shorthand)
            .unwrap_or_else(|| named(&format!("auth.{shorthand}")));
        if !scoped {
            return Err(format!(
                "{from} scopes the token to a domain, and warmpool works in a project: give {} (or {}), with {} and {} for the domains",
                named("auth.project_name"),
                named("auth.project_id"),
                named("auth.user_domain_name"),
                named("auth.project_domain_name"),
            ));
        }
        for side in ["user", "project"] {
            if !given(auth, &format!("{side}_domain_id"))
                && !given(auth, &format!("{side}_domain_name"))
            {
                auth.insert(format!("{side}_domain_{kind}").into(), value.clone());
                if side == "user" && kind == "id" {
                    user_domain_id_from = from.clone();
                }
            }
        }
    }
    let Some(id) = auth.remove("user_domain_id") else {
        return Ok(());
    };
    if given(auth, "user_domain_name") || !password {
        return Ok(());
    }
    match id.as_str() {
        // Keystone on MySQL (utf8_general_ci) matches domain ids without
        // regard to case, and the CLI logs in with `Default` as well.
        Some(id) if id.eq_ignore_ascii_case(DEFAULT_DOMAIN_ID) => {
            auth.insert("user_domain_name".into(), "Default".into());
            Ok(())
        }
        Some("") | None => Ok(()),
        Some(id) => Err(format!(
            "{user_domain_id_from}: warmpool's OpenStack client (osauth) names the user's domain by name only, and knows only the default domain's id ('{DEFAULT_DOMAIN_ID}'); give {} instead (`openstack domain show {id}` prints the domain's name)",
            named("auth.user_domain_name"),
        )),
    }
}

/// An endpoint interface as osauth reads it: unset (or empty) is `public`,
/// and the catalog-v2 spellings `publicURL`, `internalURL` and `adminURL`
/// are the interfaces they name.
fn effective_interface(interface: &str) -> &str {
    match interface {
        "" | "publicURL" => "public",
        "internalURL" => "internal",
        "adminURL" => "admin",
        other => other,
    }
}

/// The region keys of a clouds.yaml entry (or of the `OS_*` variables,
/// put in the same shape) as openstacksdk and keystoneauth read them,
/// where osauth, warmpool's OpenStack client, would not (`named` names a
/// key as the source spells it):
///
/// - an empty `region_name` or `interface` (`OS_REGION_NAME=` in an
///   EnvironmentFile) is none given: osauth looked for a region named ""
///   and missed every service, and refused "" as an interface;
/// - with no `region_name`, `regions` (a list of names, or of mappings
///   with a `name`), which osauth dropped in silence, names the region
///   by its first, as openstacksdk takes it; that region's `values` (its
///   own settings), which warmpool does not read, are refused. Beside a
///   `region_name`, `regions` is left unread, as it always was.
fn settle_region(
    entry: &mut serde_yaml::Value,
    named: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let Some(entry) = entry.as_mapping_mut() else {
        return Ok(());
    };
    for key in ["region_name", "interface"] {
        if entry.get(key).and_then(|v| v.as_str()) == Some("") {
            entry.remove(key);
        }
    }
    if entry.get("region_name").is_some_and(|v| !v.is_null()) {
        return Ok(());
    }
    let Some(regions) = entry.remove("regions") else {
        return Ok(());
    };
    let key = named("regions");
    let regions = match regions {
        serde_yaml::Value::Sequence(regions) => regions,
        serde_yaml::Value::Null => return Ok(()),
        _ => return Err(format!("{key} must be a list of region names")),
    };
    let Some(first) = regions.first() else {
        return Ok(());
    };
    let name = match first {
        serde_yaml::Value::String(name) => Some(name.as_str()),
        serde_yaml::Value::Mapping(region) => {
            if let Some(other) = region
                .keys()
                .filter_map(|k| k.as_str())
                .find(|k| !matches!(*k, "name" | "values"))
            {
                return Err(format!(
                    "{key}[0].{other}: a region is a name, or a mapping of `name` and `values`"
                ));
            }
            if region
                .get("values")
                .is_some_and(|v| !v.is_null() && v.as_mapping().is_none_or(|v| !v.is_empty()))
            {
                return Err(format!(
                    "{key}[0].values: warmpool does not read a region's own settings; give them in the entry itself, or name the region in region_name"
                ));
            }
            region.get("name").and_then(|n| n.as_str())
        }
        _ => None,
    };
    match name {
        Some(name) if !name.is_empty() => {
            entry.insert("region_name".into(), name.into());
            Ok(())
        }
        _ => Err(format!(
            "{key}[0] names no region: give a name, or a mapping with `name`"
        )),
    }
}

/// The error for a `[cloud]` that names no clouds.yaml entry where neither
/// OS_CLOUD nor OS_AUTH_URL is set: the ways to name one, with the entries
/// of the clouds.yaml the search finds.
fn no_cloud_named(env: &Env) -> ConfigError {
    let entries = match clouds_yaml_candidates(env).iter().find(|p| p.is_file()) {
        Some(path) => match clouds_yaml_names(path) {
            Ok(names) if names.is_empty() => format!(" ({} has no entries)", path.display()),
            Ok(names) => format!(" ({} has: {})", path.display(), names.join(", ")),
            Err(e) => format!(" ({e})"),
        },
        None => String::new(),
    };
    ConfigError::Invalid(format!(
        "cloud: no cloud named to log in to: [cloud] has no `cloud`, and neither OS_CLOUD nor \
         OS_AUTH_URL is set; set `cloud = \"NAME\"` in [cloud] to a clouds.yaml entry{entries}, \
         or OS_CLOUD to one, or the OS_* variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, \
         OS_PROJECT_NAME, ...: an openrc file sets them)"
    ))
}

/// An environment variable's value, by name: the process's, or a test's.
type Env = dyn Fn(&str) -> Option<std::ffi::OsString>;

/// Where clouds.yaml is looked for when `clouds_yaml` is not set: the
/// openstack CLI's order.
fn clouds_yaml_candidates(env: &Env) -> Vec<PathBuf> {
    openstack_file_candidates("OS_CLIENT_CONFIG_FILE", "clouds.yaml", env)
}

/// Where secure.yaml is looked for (whether or not `clouds_yaml` is set):
/// the openstack CLI's order, as for clouds.yaml; the first found is read.
fn secure_yaml_candidates() -> Vec<PathBuf> {
    openstack_file_candidates("OS_CLIENT_SECURE_FILE", "secure.yaml", &|name| {
        std::env::var_os(name)
    })
}

/// The secure.yaml whose entries are merged over clouds.yaml's: the first
/// found on its search path ([`clouds_yaml_entry`]), if any.
pub fn secure_yaml() -> Option<PathBuf> {
    secure_yaml_candidates().into_iter().find(|p| p.is_file())
}

/// `file` at the variable's path, then in ./, the user's
/// ~/.config/openstack and /etc/openstack.
fn openstack_file_candidates(variable: &str, file: &str, env: &Env) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(path) = env(variable).filter(|f| !f.is_empty()) {
        found.push(PathBuf::from(path));
    }
    found.push(PathBuf::from(file));
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config_home {
        found.push(dir.join("openstack").join(file));
    }
    found.push(Path::new("/etc/openstack").join(file));
    found
}

fn find_clouds_yaml(env: &Env) -> Result<PathBuf, ConfigError> {
    let candidates = clouds_yaml_candidates(env);
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            ConfigError::Invalid(format!(
                "cloud: no clouds.yaml found (tried {}); set cloud.clouds_yaml",
                tried.join(", ")
            ))
        })
}

/// A clouds.yaml (or secure.yaml) file's YAML, its merge keys applied.
fn read_clouds_yaml(path: &Path) -> Result<serde_yaml::Value, ConfigError> {
    let text = read_text(path)?;
    let parse_error = |e: serde_yaml::Error| ConfigError::Parse {
        path: path.to_owned(),
        message: without_values(&e.to_string()),
    };
    let mut root = serde_yaml::from_str(&text).map_err(parse_error)?;
    apply_merge_keys(&mut root).map_err(parse_error)?;
    // Only a file holding a password, an application credential secret or
    // a token: a clouds.yaml whose secrets its secure.yaml holds is no
    // secret.
    if holds_a_secret(&root) {
        if let Some(warning) = warmpool_proto::secret_file::world_readable(path) {
            tracing::warn!("{warning}");
        }
    }
    Ok(root)
}

/// Whether a clouds.yaml or secure.yaml `value` holds a secret anywhere:
/// a key osauth and the openstack CLI read one from, with a value.
fn holds_a_secret(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Mapping(mapping) => mapping.iter().any(|(key, value)| {
            let secret = matches!(
                key.as_str(),
                Some("password" | "application_credential_secret" | "token")
            );
            let given = !value.is_null() && value.as_str() != Some("");
            (secret && given) || holds_a_secret(value)
        }),
        serde_yaml::Value::Sequence(sequence) => sequence.iter().any(holds_a_secret),
        serde_yaml::Value::Tagged(tagged) => holds_a_secret(&tagged.value),
        _ => false,
    }
}

/// `<<: *anchor` merged into its mapping, as the openstack CLI's PyYAML
/// does (serde_yaml leaves `<<` a plain key, which osauth would take for
/// an unknown option, leaving the entry without the anchored `auth`).
/// Innermost first: serde_yaml's `apply_merge` merges a mapping before
/// the ones it takes in, so an anchored mapping's own `<<` would be copied
/// in as a key.
fn apply_merge_keys(value: &mut serde_yaml::Value) -> Result<(), serde_yaml::Error> {
    match value {
        serde_yaml::Value::Mapping(mapping) => {
            for child in mapping.values_mut() {
                apply_merge_keys(child)?;
            }
        }
        serde_yaml::Value::Sequence(sequence) => {
            for child in sequence {
                apply_merge_keys(child)?;
            }
        }
        serde_yaml::Value::Tagged(tagged) => apply_merge_keys(&mut tagged.value)?,
        _ => return Ok(()),
    }
    value.apply_merge()
}

/// The names of a clouds.yaml's entries.
fn clouds_yaml_names(path: &Path) -> Result<Vec<String>, ConfigError> {
    let root = read_clouds_yaml(path)?;
    Ok(root
        .get("clouds")
        .and_then(|c| c.as_mapping())
        .map(|c| {
            c.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// One entry of a clouds.yaml file, as osauth's config, with the entry of
/// the same name in the first secure.yaml on the openstack CLI's search
/// path (`OS_CLIENT_SECURE_FILE` first) merged over it.
pub fn clouds_yaml_entry(
    path: &Path,
    name: &str,
) -> Result<pool_manager::openstack::CloudConfig, ConfigError> {
    clouds_yaml_entry_with(path, name, &secure_yaml_candidates())
}

/// [`clouds_yaml_entry`], secure.yaml looked for in `secure_candidates`.
fn clouds_yaml_entry_with(
    path: &Path,
    name: &str,
    secure_candidates: &[PathBuf],
) -> Result<pool_manager::openstack::CloudConfig, ConfigError> {
    let root = read_clouds_yaml(path)?;
    let secure = match secure_candidates.iter().find(|p| p.is_file()) {
        Some(secure) => match read_clouds_yaml(secure) {
            Ok(root) => Some((secure, root)),
            // A secure.yaml only root may read, in /etc/openstack beside a
            // clouds.yaml handed over as a systemd credential.
            Err(ConfigError::Read { path, error }) => {
                return Err(ConfigError::Unreadable {
                    message: format!(
                        "cloud: cannot read {} ({error}), the first secure.yaml on the openstack CLI's search path, whose entries are merged over clouds.yaml's; make it readable to warmpoold, or point OS_CLIENT_SECURE_FILE at one it can read (under systemd, a LoadCredential= of it)",
                        path.display()
                    ),
                    kind: error.kind(),
                })
            }
            Err(other) => return Err(other),
        },
        None => None,
    };
    let clouds =
        |root: &serde_yaml::Value| root.get("clouds").and_then(|c| c.as_mapping()).cloned();
    let (public, secret) = (
        clouds(&root),
        secure.as_ref().and_then(|(_, root)| clouds(root)),
    );
    let mut entry = match (
        public.as_ref().and_then(|c| c.get(name)),
        secret.as_ref().and_then(|c| c.get(name)),
    ) {
        (Some(entry), Some(over)) => merged(entry.clone(), over),
        (Some(entry), None) | (None, Some(entry)) => entry.clone(),
        (None, None) => {
            let mut names: Vec<&str> = Vec::new();
            for key in public.iter().chain(secret.iter()).flat_map(|c| c.keys()) {
                if let Some(key) = key.as_str().filter(|k| !names.contains(k)) {
                    names.push(key);
                }
            }
            let files = match &secure {
                Some((secure, _)) => format!("{} (nor {})", path.display(), secure.display()),
                None => path.display().to_string(),
            };
            return Err(ConfigError::Invalid(format!(
                "cloud: {files} has no cloud named '{name}' (it has: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        }
    };
    let named = |key: &str| format!("clouds.{name}.{key}");
    carry_domains(&mut entry, &named)
        .and_then(|()| settle_region(&mut entry, &named))
        .map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
    serde_path_to_error::deserialize(entry).map_err(|e| {
        let at = e.path().to_string();
        let key = if at == "." {
            format!("clouds.{name}")
        } else {
            format!("clouds.{name}.{at}")
        };
        let merged = match &secure {
            Some((secure, _)) => format!(" (with {} merged over it)", secure.display()),
            None => String::new(),
        };
        ConfigError::Parse {
            path: path.to_owned(),
            message: format!("{key}: {}{merged}", without_values(&e.inner().to_string())),
        }
    })
}

/// `over` deep-merged over `base`, as openstacksdk merges secure.yaml over
/// clouds.yaml: mappings key by key, any other value replaced.
fn merged(base: serde_yaml::Value, over: &serde_yaml::Value) -> serde_yaml::Value {
    match (base, over) {
        (serde_yaml::Value::Mapping(mut base), serde_yaml::Value::Mapping(over)) => {
            for (key, value) in over {
                let value = match base.remove(key) {
                    Some(old) => merged(old, value),
                    None => value.clone(),
                };
                base.insert(key.clone(), value);
            }
            serde_yaml::Value::Mapping(base)
        }
        (_, over) => over.clone(),
    }
}

/// serde's "invalid type: integer `8675309`, expected a string" without
/// the value it quotes ("invalid type: integer, expected a string; quote
/// it"): clouds.yaml holds passwords, secrets and tokens, and a secret
/// written as a number or true/false (unquoted) would be shown in the
/// error, logged and printed by check-cloud. serde_yaml's other messages
/// (the YAML scanner's, a duplicate key's) quote no value.
fn without_values(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        let Some((before, rest)) = message.split_once(marker) else {
            continue;
        };
        // The value's kind ("integer", "string", "map"), before the value
        // itself, which serde puts in backticks or quotes.
        let kind = rest
            .split(['`', '"'])
            .next()
            .and_then(|k| k.split(", expected ").next())
            .unwrap_or_default()
            .trim();
        // The expected type comes last, after any value (which may itself
        // hold ", expected ").
        return match rest.rsplit_once(", expected ") {
            Some((_, expected)) => {
                let scalar = matches!(kind, "integer" | "floating point" | "boolean");
                let quote = if scalar && expected.starts_with("a string") {
                    "; quote it"
                } else {
                    ""
                };
                format!("{before}{marker}{kind}, expected {expected}{quote} (clouds.yaml's values are never shown)")
            }
            None => format!("{before}{marker}{kind} (clouds.yaml's values are never shown)"),
        };
    }
    message.to_owned()
}

fn default_time_scale() -> f64 {
    DEFAULT_EMBEDDED_TIME_SCALE
}

impl CloudConfig {
    /// `[cloud] kind`, as the file spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            CloudConfig::Embedded { .. } => "embedded",
            CloudConfig::OpenStack(_) => "openstack",
        }
    }
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self::Embedded {
            time_scale: DEFAULT_EMBEDDED_TIME_SCALE,
            iops_throttled: false,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub flavor: String,
    pub availability_zone: String,
    pub min_ready: u32,
    pub max_ready: u32,
    /// `"auto"` (sized from demand and boot lead time), or a fixed number;
    /// defaults to min_ready.
    #[serde(default)]
    pub target: Option<Target>,
    pub image: String,
    #[serde(default = "default_boot_timeout", with = "duration")]
    pub boot_timeout: Duration,
    #[serde(default, with = "optional_duration")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub paused: bool,
    /// Operator windows raising min_ready while open, UTC unless a window
    /// names its offset: `"Mon-Fri 09:00-18:00 min 10"` or
    /// `{ days = "Mon-Fri", from = "09:00", to = "18:00", min = 10, utc_offset = "+01:00" }`.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// The flavor's disk IOPS limit, if it has one: stretches the lead-time
    /// prior before any boot is observed. Unset: the limit the cloud tells
    /// of the flavor (its extra specs), if any; set, it overrides that.
    #[serde(default)]
    pub iops_limit: Option<u32>,
    /// The IOPS limit of the pool's volume type, if it has one (never read
    /// from the cloud: Cinder shows QoS specs to admins only by default).
    #[serde(default)]
    pub volume_iops_limit: Option<u32>,
    /// One of the demo's pools ([`demo_pools`]), which no file declares:
    /// start-up names it so rather than as a `[[pools]]` entry.
    #[serde(skip)]
    pub built_in: bool,
}

fn default_boot_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

impl PoolConfig {
    pub fn key(&self) -> PoolKey {
        PoolKey::new(&self.flavor, &self.availability_zone)
    }

    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            min_ready: self.min_ready,
            max_ready: self.max_ready,
            target: self.target.unwrap_or_default(),
            image: self.image.clone(),
            boot_timeout: self.boot_timeout,
            max_age: self.max_age,
            paused: self.paused,
            windows: self.windows.clone(),
            iops_limit: self.iops_limit,
            volume_iops_limit: self.volume_iops_limit,
        }
    }

    /// The keys of this entry whose values differ from `stored`, the
    /// settings the store holds for the pool, in the file's order.
    pub fn keys_differing_from(&self, stored: &PoolSpec) -> Vec<&'static str> {
        // Destructured whole, so that a new setting is compared here.
        let PoolSpec {
            min_ready,
            max_ready,
            target,
            image,
            boot_timeout,
            max_age,
            paused,
            windows,
            iops_limit,
            volume_iops_limit,
        } = self.spec();
        let mut differing = Vec::new();
        let mut differs = |key, different: bool| {
            if different {
                differing.push(key);
            }
        };
        differs("min_ready", min_ready != stored.min_ready);
        differs("max_ready", max_ready != stored.max_ready);
        differs("target", target != stored.target);
        differs("image", image != stored.image);
        differs("boot_timeout", boot_timeout != stored.boot_timeout);
        differs("max_age", max_age != stored.max_age);
        differs("paused", paused != stored.paused);
        differs("windows", windows != stored.windows);
        differs("iops_limit", iops_limit != stored.iops_limit);
        differs(
            "volume_iops_limit",
            volume_iops_limit != stored.volume_iops_limit,
        );
        differing
    }

    /// What start-up tells of this entry when the store holds the pool
    /// with `stored` settings, or None when they agree: the store's stay
    /// (the API may have changed them), so an operator who edited the
    /// entry and restarted must hear that the restart did not apply it.
    /// A demo pool ([`PoolConfig::built_in`]) has no entry to edit: it is
    /// named as the demo's, and only what stays is said.
    pub fn start_up_notice(&self, stored: &PoolSpec) -> Option<String> {
        let differing = self.keys_differing_from(stored);
        (!differing.is_empty()).then(|| {
            if self.built_in {
                return format!(
                    "the demo's built-in pool {} differs from the stored pool in {}: a pool \
                     already in the store keeps its stored settings across restarts (changed \
                     through the API, say); `warmpoolctl pools get {} {}` shows them",
                    self.key(),
                    differing.join(", "),
                    self.flavor,
                    self.availability_zone,
                );
            }
            format!(
                "the file's [[pools]] entry for {} differs from the stored pool in {}, which \
                 this start does not apply: a pool already in the store keeps its stored \
                 settings across restarts; change it with `warmpoolctl pools update {} {} ...`, \
                 or make the entry match the pool (`warmpoolctl pools get {} {}`)",
                self.key(),
                differing.join(", "),
                self.flavor,
                self.availability_zone,
                self.flavor,
                self.availability_zone,
            )
        })
    }
}

/// The first value under `value` written as a placeholder, `"<...>"` (as
/// deploy/'s production configs mark what an operator must fill in), with
/// its key (`cloud.management_network`, `pools[0].image`): left in, it
/// would be looked up in the cloud as a name, or boot under it.
fn placeholder(value: &toml::Value, key: String) -> Option<(String, &str)> {
    match value {
        toml::Value::String(text)
            if text.len() > 2 && text.starts_with('<') && text.ends_with('>') =>
        {
            Some((key, text))
        }
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| placeholder(item, format!("{key}[{i}]"))),
        toml::Value::Table(table) => table.iter().find_map(|(name, item)| {
            let key = if key.is_empty() {
                name.clone()
            } else {
                format!("{key}.{name}")
            };
            placeholder(item, key)
        }),
        _ => None,
    }
}

/// The pools a newcomer sees with no config at all.
fn demo_pools() -> Vec<PoolConfig> {
    let pool = |flavor: &str, az: &str, target: u32| PoolConfig {
        flavor: flavor.into(),
        availability_zone: az.into(),
        min_ready: target,
        max_ready: target * 4,
        target: None,
        image: "mysql-8.0".into(),
        boot_timeout: default_boot_timeout(),
        max_age: None,
        paused: false,
        windows: Vec::new(),
        iops_limit: None,
        volume_iops_limit: None,
        built_in: true,
    };
    vec![
        pool("db.small", "az1", 3),
        pool("db.small", "az2", 2),
        pool("db.medium", "az1", 2),
    ]
}

impl Default for Config {
    /// What warmpoold runs with no config file: the embedded demo.
    fn default() -> Self {
        Self::parse("").expect("the empty config is valid")
    }
}

impl Config {
    /// The config with warmpoold's command-line overrides applied, checked
    /// again as a whole (a `--listen` on the metrics address is as wrong as
    /// the same two keys in the file).
    pub fn overridden(
        mut self,
        listen: Option<SocketAddr>,
        metrics_listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        self.listen = listen.unwrap_or(self.listen);
        self.metrics_listen = metrics_listen.unwrap_or(self.metrics_listen);
        self.data_dir = data_dir.unwrap_or(self.data_dir);
        self.validate()?;
        Ok(self)
    }

    /// The keys of `file` (the config file read again) that differ from
    /// this config (the one warmpoold started with) and that only a
    /// restart puts in force: all but `api_tokens` and `pools` (see
    /// [`Config::pools_reload_notice`]), and `tls` only when it is turned
    /// on or off (a reload reads its files again).
    pub fn changed_needing_restart(&self, file: &Config) -> Vec<&'static str> {
        // Destructured whole, so that a new key is placed on one side or
        // the other here.
        let Config {
            listen,
            metrics_listen,
            data_dir,
            store_cache_capacity,
            manager,
            cloud,
            pools,
            shutdown_grace,
            grpc_keepalive_interval,
            grpc_keepalive_timeout,
            api_tokens: _,
            tls,
            delete_unknown_servers: _,
            adopt_cloud: _,
        } = self;
        let mut changed = Vec::new();
        let mut differs = |key, different: bool| {
            if different {
                changed.push(key);
            }
        };
        differs("listen", *listen != file.listen);
        differs("metrics_listen", *metrics_listen != file.metrics_listen);
        differs("data_dir", *data_dir != file.data_dir);
        differs(
            "store_cache_capacity",
            *store_cache_capacity != file.store_cache_capacity,
        );
        differs("manager", *manager != file.manager);
        differs("cloud", *cloud != file.cloud);
        // Not a key a restart puts in force: pools_reload_notice.
        let _ = pools;
        differs("shutdown_grace", *shutdown_grace != file.shutdown_grace);
        differs(
            "grpc_keepalive_interval",
            *grpc_keepalive_interval != file.grpc_keepalive_interval,
        );
        differs(
            "grpc_keepalive_timeout",
            *grpc_keepalive_timeout != file.grpc_keepalive_timeout,
        );
        differs("tls", tls.is_some() != file.tls.is_some());
        changed
    }

    /// Refuses `file` (the config file read again by a reload) when its
    /// cloud is of another kind than this config's, the one warmpoold runs
    /// on. Every section may be left out, `[cloud]` too: a file cut
    /// short after its first token (half written when the signal came)
    /// reads as the embedded cloud, and taken, it would revoke every
    /// token after the cut. A reload never changes the
    /// cloud, so nothing is lost by refusing.
    pub fn refuse_another_cloud_kind(&self, file: &Config) -> Result<(), ConfigError> {
        let (running, read) = (self.cloud.kind(), file.cloud.kind());
        if running == read {
            return Ok(());
        }
        let cut_short = match file.cloud {
            CloudConfig::Embedded { .. } => {
                " (as a file without a [cloud] section reads: one cut short, half written?)"
            }
            CloudConfig::OpenStack(_) => "",
        };
        Err(ConfigError::Invalid(format!(
            "[cloud] kind = \"{read}\"{cut_short}, while warmpoold runs on kind = \"{running}\": \
             a reload refuses a file of another cloud, and warmpoold keeps its tokens and TLS; \
             write the whole config to a temporary name, rename it over this one and reload \
             again (changing the cloud takes a restart)"
        )))
    }

    /// What a restart would do with the `[[pools]]` entries of `file` that
    /// differ from this config's, or None when none do. Not "a restart
    /// applies it", as for the other keys: a pool already in the store
    /// keeps its stored settings across restarts (the API may have changed
    /// them), and only a pool new to the store is created from the file.
    pub fn pools_reload_notice(&self, file: &Config) -> Option<String> {
        let started: HashMap<PoolKey, &PoolConfig> =
            self.pools.iter().map(|p| (p.key(), p)).collect();
        let in_file: HashMap<PoolKey, &PoolConfig> =
            file.pools.iter().map(|p| (p.key(), p)).collect();
        let mut notices = Vec::new();
        for pool in &file.pools {
            let key = pool.key();
            match started.get(&key) {
                Some(was) if *was == pool => {}
                Some(_) => notices.push(format!(
                    "the file changes pool {key}, which a restart does not apply: a pool \
                     already in the store keeps its stored settings across restarts; change \
                     it with `warmpoolctl pools update {} {} ...`",
                    pool.flavor, pool.availability_zone
                )),
                None => notices.push(format!(
                    "the file adds pool {key}: the next start creates it from the file unless \
                     the store holds it already (`warmpoolctl pools create` creates it now)"
                )),
            }
        }
        for pool in &self.pools {
            if !in_file.contains_key(&pool.key()) {
                notices.push(format!(
                    "the file no longer declares pool {}: a restart leaves it in the store \
                     (`warmpoolctl pools delete {} {}` drains it)",
                    pool.key(),
                    pool.flavor,
                    pool.availability_zone
                ));
            }
        }
        (!notices.is_empty()).then(|| notices.join("; "))
    }

    /// The file, checked as a whole; an error names the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate().map_err(|e| e.in_file(path))?;
        Ok(config)
    }

    /// The file as written, not yet checked as a whole: for warmpoold,
    /// whose command-line flags override keys of the file before the check
    /// ([`Config::overridden`]), so a flag can mend what it replaces.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        Self::parse_unchecked(&text).map_err(|e| e.in_file(path))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config = Self::parse_unchecked(text)?;
        config.validate()?;
        Ok(config)
    }

    fn parse_unchecked(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // toml's message for a bad value says what is wrong ("expected a
            // duration") but not where; name the key and the line.
            let (key, line) = match e.span() {
                Some(span) => {
                    // A table read whole ([cloud]) spans from its header; its
                    // message names the key ("... in `seed`"): point at that.
                    let at = inner_key(e.message())
                        .and_then(|inner| line_of_key(text, span.start, inner))
                        .unwrap_or(span.start);
                    let line = text[..at].matches('\n').count() + 1;
                    (key_at(text, span.start), format!(" (line {line})"))
                }
                None => (None, String::new()),
            };
            ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message: key.map(|k| format!("{k}: ")).unwrap_or_default() + e.message() + &line,
            }
        })?;
        // (Valid TOML: it parsed just above.)
        let file = toml::Value::Table(text.parse().unwrap_or_default());
        if let Some((key, value)) = placeholder(&file, String::new()) {
            return Err(ConfigError::Invalid(format!(
                "{key} = {value:?} is a placeholder: replace it with the value it describes \
                 (deploy/'s configs mark so what only the operator knows)"
            )));
        }
        // The demo's pools are for the embedded cloud only: on a real one
        // they would boot servers nobody declared, and again after every
        // restart once deleted.
        let declares_pools = file.get("pools").is_some();
        if !declares_pools && matches!(config.cloud, CloudConfig::Embedded { .. }) {
            config.pools = demo_pools();
        }
        Ok(config)
    }

    /// Whether anyone who reaches `listen` may call every method: no
    /// tokens, and no client certificates asked for.
    pub fn api_is_open(&self) -> bool {
        self.api_tokens.is_empty()
            && self
                .tls
                .as_ref()
                .is_none_or(|tls| tls.client_ca_file.is_none())
    }

    /// Who may call what, from `api_tokens`.
    pub fn access(&self) -> Access {
        Access::with_tokens(self.api_tokens.iter().map(|token| {
            (
                token.sha256.to_ascii_lowercase(),
                Caller {
                    name: token.name.clone(),
                    role: token.role,
                },
            )
        }))
    }

    fn validate_api_tokens(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("api_tokens: {m}")));
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashMap::new();
        for (n, token) in self.api_tokens.iter().enumerate() {
            if token.name.trim().is_empty() {
                return invalid("a token has an empty name".into());
            }
            // Logged as the caller of each call (`caller = ...`) and named
            // in PERMISSION_DENIED: a newline in it forged log lines. The
            // rule pool keys follow; the entry is named by its place, the
            // name being what cannot be shown as it is.
            if let Some(problem) = pool_manager::model::name_problem(&token.name) {
                return invalid(format!("entry {}: name {problem}", n + 1));
            }
            if !names.insert(token.name.as_str()) {
                return invalid(format!("the name '{}' is used twice", token.name));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!(
                    "token '{}': sha256 must be 64 hex digits, the SHA-256 of the token \
                     (printf %s \"$TOKEN\" | sha256sum), not the token itself",
                    token.name
                ));
            }
            if let Some(other) = digests.insert(token.sha256.to_ascii_lowercase(), &token.name) {
                return invalid(format!(
                    "tokens '{other}' and '{}' are the same token",
                    token.name
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_api_tokens()?;
        // An empty path would put the store in the working directory, or
        // fail at start with a message that names no file.
        let tls = self.tls.as_ref();
        let clouds_yaml = match &self.cloud {
            CloudConfig::OpenStack(os) => os.clouds_yaml.as_ref(),
            CloudConfig::Embedded { .. } => None,
        };
        let store = format!("the store's directory (default {DEFAULT_DATA_DIR})");
        for (field, path, what) in [
            ("data_dir", Some(&self.data_dir), store.as_str()),
            (
                "cloud.clouds_yaml",
                clouds_yaml,
                "a clouds.yaml, or leave it out to look for one where the openstack CLI does",
            ),
            ("tls.cert_file", tls.map(|t| &t.cert_file), "a PEM file"),
            ("tls.key_file", tls.map(|t| &t.key_file), "a PEM file"),
            (
                "tls.client_ca_file",
                tls.and_then(|t| t.client_ca_file.as_ref()),
                "a PEM file",
            ),
        ] {
            if path.is_some_and(|p| p.as_os_str().to_string_lossy().trim().is_empty()) {
                return Err(ConfigError::Invalid(format!(
                    "{field} is empty; name {what}"
                )));
            }
        }
        if !(MIN_STORE_CACHE_CAPACITY..=MAX_STORE_CACHE_CAPACITY)
            .contains(&self.store_cache_capacity)
        {
            let bound = if self.store_cache_capacity < MIN_STORE_CACHE_CAPACITY {
                format!("at least {}", show_size(MIN_STORE_CACHE_CAPACITY))
            } else {
                format!("at most {}", show_size(MAX_STORE_CACHE_CAPACITY))
            };
            return Err(ConfigError::Invalid(format!(
                "store_cache_capacity is {}; it must be {bound} (default {})",
                show_size(self.store_cache_capacity),
                show_size(pool_manager::store::DEFAULT_CACHE_CAPACITY)
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for pool in &self.pools {
            if !seen.insert(pool.key()) {
                return Err(ConfigError::Invalid(format!(
                    "pool {} is declared twice",
                    pool.key()
                )));
            }
            // Checked here, not when start creates the pools: by then the
            // pools before a bad one are in the store.
            pool.key()
                .validate()
                .and_then(|()| pool.spec().validate())
                .map_err(|(field, message)| {
                    ConfigError::Invalid(format!("pool {}: {field}: {message}", pool.key()))
                })?;
        }
        // An unspecified address (0.0.0.0, ::) takes its port on every
        // address, so the second bind would fail, blamed on another process.
        let (listen, metrics) = (self.listen, self.metrics_listen);
        if listen.port() == metrics.port()
            && listen.port() != 0
            && (listen.ip() == metrics.ip()
                || listen.ip().is_unspecified()
                || metrics.ip().is_unspecified())
        {
            return Err(ConfigError::Invalid(format!(
                "listen ({listen}) and metrics_listen ({metrics}) share port {}{}; give metrics its own port (or address)",
                listen.port(),
                if listen.ip() == metrics.ip() {
                    ""
                } else {
                    ", and an unspecified address (0.0.0.0, ::) takes it on every address"
                }
            )));
        }
        self.manager.validate_sizing_and_gate()?;
        if self.manager.max_concurrent_boots() == 0 {
            return Err(ConfigError::Invalid(
                "manager.max_concurrent_boots must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("manager.poll_interval", self.manager.poll_interval),
            (
                "manager.replenish_interval",
                self.manager.replenish_interval,
            ),
            (
                "manager.reconcile_interval",
                self.manager.reconcile_interval,
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        for (name, value, why) in [
            (
                "grpc_keepalive_interval",
                self.grpc_keepalive_interval,
                "every client connection is pinged this often: a `60ms` meant as `60s` floods them with pings",
            ),
            (
                "grpc_keepalive_timeout",
                self.grpc_keepalive_timeout,
                "a ping unanswered this long closes the connection: a `20ms` meant as `20s` drops every client farther away than that",
            ),
        ] {
            if value < MIN_KEEPALIVE {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least {} ({why}), got {}",
                    humantime::format_duration(MIN_KEEPALIVE),
                    humantime::format_duration(value)
                )));
            }
        }
        // The core adds these to Instants and multiplies them (poll_interval
        // by 32): an absurd value overflows that arithmetic and panics a
        // background task, and nothing an operator means lies beyond them.
        let m = &self.manager;
        for (name, value, limit) in [
            ("manager.poll_interval", m.poll_interval, MAX_POLL_INTERVAL),
            (
                "manager.replenish_interval",
                m.replenish_interval,
                MAX_REPLENISH_INTERVAL,
            ),
            (
                "manager.reconcile_interval",
                m.reconcile_interval,
                MAX_RECONCILE_INTERVAL,
            ),
            (
                "manager.retry_after_default",
                m.retry_after_default,
                pool_manager::cloud::MAX_RETRY_AFTER,
            ),
            ("manager.quota_backoff", m.quota_backoff, MAX_QUOTA_BACKOFF),
            (
                "grpc_keepalive_interval",
                self.grpc_keepalive_interval,
                MAX_KEEPALIVE,
            ),
            (
                "grpc_keepalive_timeout",
                self.grpc_keepalive_timeout,
                MAX_KEEPALIVE,
            ),
            (
                "manager.quota_backoff_max",
                m.quota_backoff_max,
                MAX_QUOTA_BACKOFF,
            ),
            (
                "manager.quota_poll_interval",
                m.quota_poll_interval,
                MAX_QUOTA_POLL_INTERVAL,
            ),
        ] {
            if value > limit {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at most {}, got {}",
                    humantime::format_duration(limit),
                    humantime::format_duration(value)
                )));
            }
        }
        if !(MIN_SHUTDOWN_GRACE..=MAX_SHUTDOWN_GRACE).contains(&self.shutdown_grace) {
            return Err(ConfigError::Invalid(format!(
                "shutdown_grace must be between {} and {} (a supervisor waits it out, up to {} for cut connections to close and {} more for the final flush; deploy/'s shortest stop timeout is {}), got {}",
                humantime::format_duration(MIN_SHUTDOWN_GRACE),
                humantime::format_duration(MAX_SHUTDOWN_GRACE),
                humantime::format_duration(crate::shutdown::CUT_PATIENCE),
                humantime::format_duration(SHUTDOWN_FLUSH_MARGIN),
                humantime::format_duration(
                    MAX_SHUTDOWN_GRACE + crate::shutdown::CUT_PATIENCE + SHUTDOWN_FLUSH_MARGIN
                ),
                humantime::format_duration(self.shutdown_grace)
            )));
        }
        if m.probe_timeout.is_zero() || m.probe_timeout > MAX_PROBE_TIMEOUT {
            return Err(ConfigError::Invalid(format!(
                "manager.probe_timeout must be positive and at most {} (a purchase waits it out for each instance whose mysqld is silent), got {}",
                humantime::format_duration(MAX_PROBE_TIMEOUT),
                humantime::format_duration(m.probe_timeout)
            )));
        }
        if let Some(keep) = m.keep_released {
            if keep < MIN_KEEP_RELEASED {
                return Err(ConfigError::Invalid(format!(
                    "manager.keep_released must be at least {} (a retried order whose record is forgotten is allocated again), got {}",
                    humantime::format_duration(MIN_KEEP_RELEASED),
                    humantime::format_duration(keep)
                )));
            }
        }
        match &self.cloud {
            CloudConfig::Embedded { time_scale, .. } => {
                // cloudsim scales its latencies with Duration::mul_f64, which
                // panics past Duration::MAX.
                if !(time_scale.is_finite()
                    && *time_scale > 0.0
                    && *time_scale <= MAX_EMBEDDED_TIME_SCALE)
                {
                    return Err(ConfigError::Invalid(format!(
                        "cloud.time_scale must be a positive number at most {MAX_EMBEDDED_TIME_SCALE} (1.0 is real-cloud speed), got {time_scale}"
                    )));
                }
            }
            CloudConfig::OpenStack(os) => {
                // Nova refuses an empty key pair or security group name on
                // every boot (and a tenant port's group could be no group
                // of the project); server names need their prefix.
                let optional = os
                    .key_name
                    .iter()
                    .map(|v| ("key_name", v))
                    .chain(os.security_groups.iter().map(|v| ("security_groups", v)))
                    .chain(
                        os.tenant_port_security_groups
                            .iter()
                            .flatten()
                            .map(|v| ("tenant_port_security_groups", v)),
                    );
                for (key, value) in [
                    ("management_network", &os.management_network),
                    ("server_tag", &os.server_tag),
                    ("server_name_prefix", &os.server_name_prefix),
                ]
                .into_iter()
                .chain(optional)
                {
                    if value.trim().is_empty() {
                        return Err(ConfigError::Invalid(format!(
                            "cloud.{key} must not be empty"
                        )));
                    }
                }
                // The key pair is read at `/os-keypairs/{name}`, where a
                // "." or ".." is dropped: the read became the listing.
                if let Some(problem) = os
                    .key_name
                    .as_deref()
                    .and_then(pool_manager::model::path_segment_problem)
                {
                    return Err(ConfigError::Invalid(format!("cloud.key_name {problem}")));
                }
                // Nor does an empty name fall back to what its absence
                // means: the entry named "" would be looked for in
                // clouds.yaml, the image named "" in Glance.
                for (key, value, default) in [
                    ("cloud", &os.cloud, "OS_CLOUD or the OS_* variables"),
                    ("image", &os.image, "each pool's image"),
                ] {
                    if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                        return Err(ConfigError::Invalid(format!(
                            "cloud.{key} must not be empty; leave it out for {default}"
                        )));
                    }
                }
                // An empty override would not fall back to the default: the
                // driver would look up a network, or create volumes in a
                // Cinder zone, named "".
                for (az, o) in &os.availability_zones {
                    for (key, value, default) in [
                        (
                            "management_network",
                            &o.management_network,
                            "cloud.management_network",
                        ),
                        (
                            "volume_availability_zone",
                            &o.volume_availability_zone,
                            "the pool's zone",
                        ),
                    ] {
                        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                            return Err(ConfigError::Invalid(format!(
                                "cloud.availability_zones.{az}.{key} must not be empty; leave it out for {default}"
                            )));
                        }
                    }
                }
                // Nova refuses a longer server name on every boot.
                let prefix = os.server_name_prefix.chars().count();
                let most = pool_manager::openstack::MAX_SERVER_NAME_PREFIX_CHARS;
                if prefix > most {
                    return Err(ConfigError::Invalid(format!(
                        "cloud.server_name_prefix is {prefix} characters long; at most {most} fit (a server's name is the prefix and its 36-character instance id, and Nova takes names of at most {} characters)",
                        pool_manager::openstack::MAX_SERVER_NAME_CHARS
                    )));
                }
                // Nova's rules for a server tag (compute API 2.26+); the
                // reconciler's `?tags=` filter reads a comma as a list.
                let tag = &os.server_tag;
                if tag.chars().count() > 60 || tag.contains(['/', ',']) {
                    return Err(ConfigError::Invalid(format!(
                        "cloud.server_tag must be at most 60 characters without '/' or ',' (Nova's rule for tags), got {tag:?}"
                    )));
                }
                if os.mysql_port == 0 {
                    return Err(ConfigError::Invalid(
                        "cloud.mysql_port must not be 0".into(),
                    ));
                }
                if os.request_timeout.is_zero()
                    || os.request_timeout > MAX_OPENSTACK_REQUEST_TIMEOUT
                {
                    return Err(ConfigError::Invalid(format!(
                        "cloud.request_timeout must be positive and at most {} (the start-up login, check-cloud and every call wait it out for a cloud that does not answer), got {}",
                        humantime::format_duration(MAX_OPENSTACK_REQUEST_TIMEOUT),
                        humantime::format_duration(os.request_timeout)
                    )));
                }
            }
        }
        self.validate_interval_minimums()
    }

    /// The intervals pacing cloud calls, and the cloud's request timeout,
    /// at least their minimums (see [`MIN_POLL_INTERVAL`],
    /// [`MIN_OPENSTACK_REQUEST_TIMEOUT`]); after the cloud's check, so
    /// `time_scale` is a valid factor.
    fn validate_interval_minimums(&self) -> Result<(), ConfigError> {
        let m = &self.manager;
        if m.allow_short_intervals {
            return Ok(());
        }
        let time_scale = match self.cloud {
            CloudConfig::Embedded { time_scale, .. } if time_scale < 1.0 => Some(time_scale),
            _ => None,
        };
        for (name, value, minimum, why) in [
            (
                "poll_interval",
                m.poll_interval,
                MIN_POLL_INTERVAL,
                "every boot in flight polls its server, volume and ports this often",
            ),
            (
                "replenish_interval",
                m.replenish_interval,
                MIN_REPLENISH_INTERVAL,
                "every pool is re-checked this often",
            ),
            (
                "reconcile_interval",
                m.reconcile_interval,
                MIN_RECONCILE_INTERVAL,
                "each pass lists every pool server, volume and port",
            ),
            (
                "quota_poll_interval",
                m.quota_poll_interval,
                MIN_QUOTA_POLL_INTERVAL,
                "each poll reads Nova's /limits and Neutron's quota per flavor",
            ),
        ] {
            let (least, scaled) = match time_scale {
                Some(scale) => (
                    minimum.mul_f64(scale),
                    format!(
                        " ({} at time_scale {scale})",
                        humantime::format_duration(minimum)
                    ),
                ),
                None => (minimum, String::new()),
            };
            if value < least {
                return Err(ConfigError::Invalid(format!(
                    "manager.{name} must be at least {}{scaled} ({why}: a `1ms` meant as `1m` hammers the cloud), got {}; a test cloud answering in milliseconds may set manager.allow_short_intervals = true",
                    humantime::format_duration(least),
                    humantime::format_duration(value)
                )));
            }
        }
        if m.probe_timeout < MIN_PROBE_TIMEOUT {
            return Err(ConfigError::Invalid(format!(
                "manager.probe_timeout must be at least {} (every readiness probe fails unanswered within it, so no instance becomes Ready: a `5ms` meant as `5s` fails them all), got {}; a test cloud answering in milliseconds may set manager.allow_short_intervals = true",
                humantime::format_duration(MIN_PROBE_TIMEOUT),
                humantime::format_duration(m.probe_timeout)
            )));
        }
        if let CloudConfig::OpenStack(os) = &self.cloud {
            if os.request_timeout < MIN_OPENSTACK_REQUEST_TIMEOUT {
                return Err(ConfigError::Invalid(format!(
                    "cloud.request_timeout must be at least {} (every cloud call, the login first, fails unanswered within it: a `30ms` meant as `30s` fails them all), got {}; a test cloud answering in milliseconds may set manager.allow_short_intervals = true",
                    humantime::format_duration(MIN_OPENSTACK_REQUEST_TIMEOUT),
                    humantime::format_duration(os.request_timeout)
                )));
            }
        }
        Ok(())
    }
}

/// The key a table's own check names at the end of its message: "... in `seed`".
fn inner_key(message: &str) -> Option<&str> {
    let (_, key) = message.trim_end().strip_suffix('`')?.rsplit_once(" in `")?;
    Some(key)
}

/// Where the line assigning `key` starts, at `table_start` or after it,
/// before the next table header.
fn line_of_key(text: &str, table_start: usize, key: &str) -> Option<usize> {
    let mut offset = table_start;
    for (n, line) in text[table_start..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if n > 0 && trimmed.starts_with('[') {
            return None;
        }
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(offset);
            }
        }
        offset += line.len();
    }
    None
}

/// The dotted key ("manager.poll_interval") of the `key = value` line, or
/// the table header, that holds byte `offset` of `text`; `None` when the
/// line is neither (e.g. inside an inline table).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let header = |line: &str| {
        let line = line.trim();
        line.starts_with('[').then(|| {
            line.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
    };
    let line = text[start..].lines().next().unwrap_or_default();
    if let Some(table) = header(line) {
        return Some(table);
    }
    let key = line.split_once('=')?.0.trim();
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if !bare(key) {
        return None;
    }
    match text[..start].lines().rev().find_map(header) {
        Some(table) => Some(format!("{table}.{key}")),
        None => Some(key.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reload names as waiting for a restart: every key but the
    /// tokens, and `[tls]` only turned on or off.
    #[test]
    fn a_reload_names_the_keys_that_take_a_restart() {
        let started = Config::parse("").unwrap();
        assert!(started.changed_needing_restart(&started).is_empty());
        let file = Config::parse(
            r#"
listen = "127.0.0.1:7000"
shutdown_grace = "7s"
[manager]
poll_interval = "3s"
[[pools]]
flavor = "db.small"
availability_zone = "az1"
min_ready = 1
max_ready = 2
image = "mysql-8"
[[api_tokens]]
name = "dash"
role = "reader"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[tls]
cert_file = "a.crt"
key_file = "a.key"
"#,
        )
        .unwrap();
        assert_eq!(
            started.changed_needing_restart(&file),
            ["listen", "manager", "shutdown_grace", "tls"]
        );
        let other_files = Config::parse(
            r#"
[tls]
cert_file = "b.crt"
key_file = "b.key"
"#,
        )
        .unwrap();
        assert!(file
            .changed_needing_restart(&other_files)
            .contains(&"listen"));
        assert!(!file.changed_needing_restart(&other_files).contains(&"tls"));
    }

    /// A reload refuses a file of another cloud than the one warmpoold
    /// runs on, a file without `[cloud]` (cut short) included, naming
    /// both kinds; one of the same kind, changed, is left to
    /// `changed_needing_restart`.
    #[test]
    fn a_reload_refuses_a_file_of_another_cloud_kind() {
        let openstack =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"mgmt-net\"\n")
                .unwrap();
        let cut_short = Config::parse("").unwrap();
        let refused = openstack
            .refuse_another_cloud_kind(&cut_short)
            .unwrap_err()
            .in_file(Path::new("/etc/warmpool/warmpoold.toml"))
            .to_string();
        assert!(
            refused.starts_with("config file /etc/warmpool/warmpoold.toml: [cloud] kind = \"embedded\" (as a file without a [cloud] section reads"),
            "{refused}"
        );
        assert!(
            refused.contains("runs on kind = \"openstack\""),
            "{refused}"
        );
        assert!(refused.contains("keeps its tokens"), "{refused}");
        let refused = cut_short
            .refuse_another_cloud_kind(&openstack)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(
                "[cloud] kind = \"openstack\", while warmpoold runs on kind = \"embedded\""
            ),
            "{refused}"
        );
        let other_network =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"other-net\"\n")
                .unwrap();
        assert!(openstack.refuse_another_cloud_kind(&other_network).is_ok());
        assert!(cut_short.refuse_another_cloud_kind(&cut_short).is_ok());
        assert_eq!(openstack.changed_needing_restart(&other_network), ["cloud"]);
    }

    /// A restart does not apply a changed `[[pools]]` entry (start_pools
    /// keeps a stored pool's settings), so a reload must not say it does:
    /// the pools have their own notice, naming `warmpoolctl pools update`.
    #[test]
    fn a_reload_tells_what_a_restart_does_with_changed_pools() {
        let pool = |flavor: &str, min_ready: u32| {
            format!(
                "[[pools]]\nflavor = \"{flavor}\"\navailability_zone = \"az1\"\n\
                 min_ready = {min_ready}\nmax_ready = 4\nimage = \"mysql-8\"\n"
            )
        };
        let started = Config::parse(&(pool("db.small", 1) + &pool("db.old", 1))).unwrap();
        assert_eq!(started.pools_reload_notice(&started), None);
        let file = Config::parse(&(pool("db.small", 2) + &pool("db.large", 1))).unwrap();
        assert!(
            !started.changed_needing_restart(&file).contains(&"pools"),
            "a restart does not put a changed pool in force"
        );
        let notice = started.pools_reload_notice(&file).unwrap();
        assert!(
            notice.contains(
                "the file changes pool db.small@az1, which a restart does not apply: a pool \
                 already in the store keeps its stored settings across restarts; change it with \
                 `warmpoolctl pools update db.small az1 ...`"
            ),
            "{notice}"
        );
        assert!(
            notice.contains(
                "the file adds pool db.large@az1: the next start creates it from the file unless \
                 the store holds it already (`warmpoolctl pools create` creates it now)"
            ),
            "{notice}"
        );
        assert!(
            notice.contains(
                "the file no longer declares pool db.old@az1: a restart leaves it in the store \
                 (`warmpoolctl pools delete db.old az1` drains it)"
            ),
            "{notice}"
        );
        assert!(!notice.contains("take a restart"), "{notice}");
    }

    /// Start-up compares each configured pool the store holds with its
    /// stored settings, and names the keys that differ.
    #[test]
    fn a_start_names_the_settings_a_stored_pool_keeps_against_the_file() {
        let config = Config::parse(
            "[[pools]]\nflavor = \"db.small\"\navailability_zone = \"az1\"\n\
             min_ready = 1\nmax_ready = 4\nimage = \"mysql-8\"\n",
        )
        .unwrap();
        let pool = &config.pools[0];
        let mut stored = pool.spec();
        assert_eq!(pool.start_up_notice(&stored), None);
        stored.image = "mysql-8.4".into();
        stored.target = Target::Auto;
        stored.max_age = Some(Duration::from_secs(3600));
        assert_eq!(
            pool.keys_differing_from(&stored),
            ["target", "image", "max_age"]
        );
        let notice = pool.start_up_notice(&stored).unwrap();
        assert!(
            notice.contains(
                "the file's [[pools]] entry for db.small@az1 differs from the stored pool in \
                 target, image, max_age, which this start does not apply"
            ),
            "{notice}"
        );
        assert!(
            notice.contains("`warmpoolctl pools update db.small az1 ...`"),
            "{notice}"
        );
    }

    /// The demo's pools come from no file: a restart that finds one changed
    /// in the store names it as the demo's built-in pool, not as a file's
    /// entry to make match.
    #[test]
    fn a_start_names_a_changed_demo_pool_built_in() {
        let config = Config::parse("").unwrap();
        let pool = &config.pools[0];
        let mut stored = pool.spec();
        stored.min_ready = 1;
        let notice = pool.start_up_notice(&stored).unwrap();
        assert!(!notice.contains("[[pools]]"), "{notice}");
        assert!(
            notice.starts_with(
                "the demo's built-in pool db.small@az1 differs from the stored pool in min_ready"
            ),
            "{notice}"
        );
    }

    #[test]
    fn command_line_overrides_are_checked_like_the_file() {
        let config = Config::parse("").unwrap();
        let metrics = config.metrics_listen;
        let err = config
            .clone()
            .overridden(Some(metrics), None, None)
            .unwrap_err();
        assert!(
            err.to_string().contains("give metrics its own port"),
            "{err}"
        );
        let moved: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let config = config
            .overridden(Some(moved), None, Some("/tmp/x".into()))
            .unwrap();
        assert_eq!(
            (config.listen, config.data_dir),
            (moved, PathBuf::from("/tmp/x"))
        );
    }

    /// An unspecified address (0.0.0.0, ::) takes its port on every
    /// address: metrics_listen on that port anywhere fails to bind, blamed
    /// on another process.
    #[test]
    fn listen_and_metrics_listen_on_one_port_are_refused() {
        let text = |listen: &str, metrics: &str| {
            format!("listen = \"{listen}\"\nmetrics_listen = \"{metrics}\"\n")
        };
        for (listen, metrics) in [
            ("0.0.0.0:51101", "127.0.0.1:51101"),
            ("127.0.0.1:51101", "0.0.0.0:51101"),
            ("[::]:51101", "127.0.0.1:51101"),
            ("10.0.0.1:51101", "[::]:51101"),
            ("127.0.0.1:51101", "127.0.0.1:51101"),
        ] {
            let err = Config::parse(&text(listen, metrics))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "listen ({listen}) and metrics_listen ({metrics}) share port 51101"
                )) && err.contains("give metrics its own port"),
                "{listen} {metrics}: {err}"
            );
        }
        for (listen, metrics) in [
            ("127.0.0.1:51101", "127.0.0.2:51101"),
            ("0.0.0.0:51101", "0.0.0.0:51102"),
            ("0.0.0.0:0", "127.0.0.1:0"),
        ] {
            assert!(
                Config::parse(&text(listen, metrics)).is_ok(),
                "{listen} {metrics}"
            );
        }
    }

    #[test]
    fn a_flag_can_mend_the_key_of_the_file_it_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warmpoold.toml");
        let metrics = default_metrics_listen();
        std::fs::write(&path, format!("listen = \"{metrics}\"\n")).unwrap();
        // The file alone is wrong, and its error names the file.
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config file {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("give metrics its own port"), "{err}");
        // A --metrics-listen elsewhere mends it.
        let elsewhere: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let config = Config::read(&path)
            .unwrap()
            .overridden(None, Some(elsewhere), None)
            .unwrap();
        assert_eq!((config.listen, config.metrics_listen), (metrics, elsewhere));
    }

    #[test]
    fn api_tokens_are_configured_by_digest_with_a_role() {
        use crate::access::token_sha256;
        let config = Config::parse(&format!(
            r#"
            [[api_tokens]]
            name = "billing"
            role = "billing"
            sha256 = "{}"
            [[api_tokens]]
            name = "ops"
            role = "operator"
            sha256 = "{}"
            "#,
            token_sha256("buy").to_uppercase(),
            token_sha256("run"),
        ))
        .unwrap();
        let access = config.access();
        assert!(!access.is_open());
        let call = |token: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            let value = format!("Bearer {token}").parse().unwrap();
            metadata.insert("authorization", value);
            access
                .check(&metadata, crate::access::Method::CreatePool)
                .map(|caller| caller.unwrap().name.clone())
                .map_err(|refused| refused.code())
        };
        assert_eq!(call("run"), Ok("ops".into()));
        assert_eq!(call("buy"), Err(tonic::Code::PermissionDenied));
        assert!(Config::parse("").unwrap().access().is_open());
        assert!(!config.api_is_open());
        assert!(Config::parse("").unwrap().api_is_open());
        let tls = |client_ca: &str| {
            Config::parse(&format!(
                "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n{client_ca}"
            ))
            .unwrap()
        };
        assert!(tls("").api_is_open(), "TLS alone lets anyone in");
        assert!(!tls("client_ca_file = \"ca\"\n").api_is_open());

        let token = |name: &str, role: &str, sha256: &str| {
            format!("[[api_tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n")
        };
        let digest = token_sha256("x");
        for (text, says) in [
            (token("b", "admin", &digest), "unknown variant `admin`"),
            (
                token("b", "billing", "x"),
                "token 'b': sha256 must be 64 hex digits",
            ),
            (
                token("b", "billing", &"g".repeat(64)),
                "sha256 must be 64 hex digits",
            ),
            (token(" ", "billing", &digest), "a token has an empty name"),
            (
                token("b", "billing", &digest) + &token("b", "reader", &token_sha256("y")),
                "the name 'b' is used twice",
            ),
            (
                token("b", "billing", &digest) + &token("c", "reader", &digest.to_uppercase()),
                "tokens 'b' and 'c' are the same token",
            ),
        ] {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    /// A token's name is logged as the caller of every call it makes and
    /// named in PERMISSION_DENIED: it follows the name rule pool keys do.
    /// Only a blank name was refused, so a newline in one forged log lines
    /// (at start, and at a reload, which reads the file through the same
    /// check).
    #[test]
    fn a_token_name_a_log_would_not_show_as_it_is_is_refused() {
        use crate::access::token_sha256;
        let digest = token_sha256("x");
        for (name, says) in [
            (
                r"ops\n2026-12-07T13:00:00Z ERROR warmpool_server: store corrupted",
                "holds control characters",
            ),
            (r"ops\u200b", "invisible format characters"),
            (" ops", "whitespace around it"),
        ] {
            let text = format!(
                "[[api_tokens]]\nname = \"b\"\nrole = \"billing\"\nsha256 = \"{}\"\n\
                 [[api_tokens]]\nname = \"{name}\"\nrole = \"operator\"\nsha256 = \"{digest}\"\n",
                token_sha256("y")
            );
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("api_tokens: entry 2: name ") && err.contains(says),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn empty_config_runs_the_embedded_demo() {
        // warmpoold with no config file runs Config::default().
        assert_eq!(Config::default().pools.len(), 3);
        let config = Config::parse("").unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.metrics_listen, default_metrics_listen());
        assert!(matches!(config.cloud, CloudConfig::Embedded { .. }));
        assert_eq!(config.pools.len(), 3);
    }

    #[test]
    fn a_listen_address_that_is_not_one_is_named() {
        for (text, value) in [
            ("listen = \"nope\"\n", "\"nope\""),
            (
                "metrics_listen = \"localhost:9464\"\n",
                "\"localhost:9464\"",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{value} is not an IP:port")),
                "{text}: {err}"
            );
        }
        let spaced = Config::parse("listen = \" 127.0.0.1:7000 \"\n").unwrap();
        assert_eq!(spaced.listen, "127.0.0.1:7000".parse().unwrap());
    }

    /// The probe override is an IP:port as `listen` is, and says so
    /// (serde's own error is a bare "invalid socket address syntax").
    #[test]
    fn a_probe_address_override_that_is_not_one_is_named() {
        let text = |address: &str| {
            format!("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nprobe_address_override = {address:?}\n")
        };
        let err = Config::parse(&text("localhost:3306"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"localhost:3306\" is not an IP:port")
                && err.contains("a host name is not resolved")
                && err.contains("probe_address_override"),
            "{err}"
        );
        let CloudConfig::OpenStack(os) = Config::parse(&text(" 127.0.0.1:3306")).unwrap().cloud
        else {
            unreachable!()
        };
        assert_eq!(
            os.probe_address_override,
            Some("127.0.0.1:3306".parse().unwrap())
        );
        let CloudConfig::OpenStack(os) =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\n")
                .unwrap()
                .cloud
        else {
            unreachable!()
        };
        assert_eq!(os.probe_address_override, None);
    }

    #[test]
    fn empty_paths_are_refused_by_name() {
        // sled would open the store in the working directory: `/` under systemd.
        for text in ["data_dir = \"\"\n", "data_dir = \"  \"\n"] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains("data_dir is empty"), "{text}: {err}");
        }
        for (text, field) in [
            (
                "[tls]\ncert_file = \"\"\nkey_file = \"k\"\n",
                "tls.cert_file",
            ),
            (
                "[tls]\ncert_file = \"c\"\nkey_file = \"\"\n",
                "tls.key_file",
            ),
            (
                "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"\"\n",
                "tls.client_ca_file",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{field} is empty; name a PEM file")),
                "{text}: {err}"
            );
        }
    }

    /// `[cloud]`'s optional names, empty, are refused by key with what
    /// leaving them out means: an empty clouds_yaml failed at start with
    /// "cannot read config file : No such file or directory", naming no
    /// key; an empty `cloud` looked for an entry named "", an empty
    /// `image` for an image named "" in Glance.
    #[test]
    fn empty_cloud_names_are_refused_by_key() {
        let base = "[cloud]\nkind = \"openstack\"\nmanagement_network = \"mgmt\"\n";
        for (key, expect) in [
            (
                "clouds_yaml",
                "cloud.clouds_yaml is empty; name a clouds.yaml, or leave it out",
            ),
            ("cloud", "cloud.cloud must not be empty; leave it out for"),
            (
                "image",
                "cloud.image must not be empty; leave it out for each pool's image",
            ),
        ] {
            for value in ["", " "] {
                let text = format!("{base}{key} = {value:?}\n");
                let err = Config::parse(&text).unwrap_err().to_string();
                assert!(err.contains(expect), "{text}: {err}");
            }
        }
    }

    #[test]
    fn the_stores_cache_capacity_is_bytes_or_a_size_and_bounded() {
        const MIB: u64 = 1 << 20;
        // sled's own default is 1 GiB, which it lowers only to a cgroup v1
        // limit: a container with a 512Mi limit would be killed.
        assert_eq!(Config::default().store_cache_capacity, 64 * MIB);
        for (text, bytes) in [
            ("store_cache_capacity = 33554432\n", 32 * MIB),
            ("store_cache_capacity = \"32MiB\"\n", 32 * MIB),
            ("store_cache_capacity = \" 1 GiB \"\n", 1024 * MIB),
            ("store_cache_capacity = \"1536KiB\"\n", 3 * MIB / 2),
            ("store_cache_capacity = \"1048576\"\n", MIB),
        ] {
            let config = Config::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(config.store_cache_capacity, bytes, "{text}");
        }
        for (text, says) in [
            ("store_cache_capacity = 0\n", "at least 1 MiB"),
            ("store_cache_capacity = \"0MiB\"\n", "at least 1 MiB"),
            ("store_cache_capacity = 1000\n", "at least 1 MiB"),
            ("store_cache_capacity = \"65GiB\"\n", "at most 64 GiB"),
            ("store_cache_capacity = -1\n", "a size"),
            ("store_cache_capacity = \"64MB\"\n", "a size"),
            ("store_cache_capacity = \"lots\"\n", "a size"),
            (
                "store_cache_capacity = \"99999999999999999999GiB\"\n",
                "a size",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains("store_cache_capacity"), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn an_unreadable_file_names_its_os_error_once() {
        let err = Config::load(Path::new("/nonexistent/warmpool.toml")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(
            text.starts_with("cannot read config file /nonexistent/warmpool.toml: "),
            "{text}"
        );
    }

    /// A pool count beyond the bound in a config file stops the start
    /// (exit 78) and, as every file `Config::load` refuses, a reload.
    #[test]
    fn a_pool_count_beyond_the_bound_needs_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warmpoold.toml");
        std::fs::write(
            &file,
            "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 0\nmax_ready = 10000\nimage = \"i\"\nwindows = [\"daily 09:00-18:00 min 10000\"]\n",
        )
        .unwrap();
        Config::load(&file).expect("10000 is within the bound");
        std::fs::write(
            &file,
            "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 0\nmax_ready = 4294967295\nimage = \"i\"\n",
        )
        .unwrap();
        let err = Config::load(&file).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "pool f@a: max_ready: max_ready must be at most 10000 instances, got 4294967295"
            ),
            "{text}"
        );
        assert!(
            crate::needs_an_operator(&anyhow::Error::from(err)),
            "{text}"
        );
    }

    /// A config file warmpoold cannot take as it is (not UTF-8, a
    /// directory named) is the operator's to mend, as a missing one is:
    /// the start exits EX_CONFIG rather than 1, which systemd would
    /// restart every 5 s for ever. The error says what to do.
    #[test]
    fn a_file_not_utf8_or_a_directory_needs_an_operator_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let latin1 = dir.path().join("warmpoold.toml");
        // "café" in Latin-1: é is the lone byte 0xE9.
        std::fs::write(&latin1, b"# caf\xe9\nlisten = \"127.0.0.1:7000\"\n").unwrap();
        for (path, says) in [
            (
                latin1.as_path(),
                "is not UTF-8 text (Latin-1?): save it as UTF-8",
            ),
            (dir.path(), "is a directory: name the file itself"),
        ] {
            let err = Config::load(path).unwrap_err();
            assert!(err.needs_an_operator(), "{err}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(says), "{text}");
        }
        let failing = ConfigError::Read {
            path: latin1,
            error: std::io::Error::from(std::io::ErrorKind::Interrupted),
        };
        assert!(!failing.needs_an_operator(), "{failing}");
    }

    #[test]
    fn the_demo_pools_are_the_embedded_clouds_only() {
        let openstack = "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\n";
        for (text, pools) in [
            ("[cloud]\nkind = \"embedded\"\n".to_owned(), 3),
            ("pools = []\n".to_owned(), 0),
            (openstack.to_owned(), 0),
            (
                format!("{openstack}[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n"),
                1,
            ),
        ] {
            assert_eq!(Config::parse(&text).unwrap().pools.len(), pools, "{text}");
        }
    }

    #[test]
    fn full_config_parses_with_humantime_durations() {
        let config = Config::parse(
            r#"
            listen = "0.0.0.0:6000"
            metrics_listen = "0.0.0.0:6001"
            data_dir = "/var/lib/warmpool"
            shutdown_grace = "10s"
            [manager]
            poll_interval = "1500ms"
            replenish_interval = "2s"
            reconcile_interval = "1m"
            max_concurrent_boots = 8
            keep_released = "90days"
            [cloud]
            kind = "embedded"
            time_scale = 1.0
            [[pools]]
            flavor = "db.large"
            availability_zone = "az2"
            min_ready = 1
            max_ready = 5
            target = 2
            image = "mysql-8.0"
            boot_timeout = "20m"
            max_age = "1day"
            "#,
        )
        .unwrap();
        assert_eq!(config.manager.poll_interval, Duration::from_millis(1500));
        assert_eq!(
            config.manager.settings().keep_released,
            Some(Duration::from_secs(90 * 86400))
        );
        assert_eq!(
            Config::parse("").unwrap().manager.settings().keep_released,
            None,
            "kept forever unless set"
        );
        assert_eq!(config.metrics_listen, "0.0.0.0:6001".parse().unwrap());
        assert_eq!(config.pools[0].spec().effective_target(), 2);
        assert_eq!(config.pools[0].max_age, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn max_concurrent_boots_defaults_to_4_without_the_gate_and_64_with_it() {
        let boots = |manager: &str| {
            Config::parse(&format!("[manager]\n{manager}"))
                .unwrap()
                .manager
                .settings()
                .max_concurrent_boots
        };
        assert_eq!(
            boots("gate = false"),
            4,
            "no window: the ceiling alone limits boots"
        );
        assert_eq!(boots(""), 64, "the gate paces boots below it");
        assert_eq!(boots("gate = true"), 64);
        assert_eq!(boots("gate = false\nmax_concurrent_boots = 32"), 32);
        assert_eq!(boots("max_concurrent_boots = 2"), 2);
        assert_eq!(
            Config::parse("")
                .unwrap()
                .manager
                .settings()
                .max_concurrent_boots,
            ManagerSettings::default().max_concurrent_boots,
            "no [manager]: the core's default"
        );
    }

    #[test]
    fn pool_targets_are_auto_or_fixed() {
        let pool = |target: &str| {
            format!(
                "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 9\nimage = \"i\"\n{target}"
            )
        };
        let target = |line: &str| Config::parse(&pool(line)).map(|c| c.pools[0].spec().target);
        assert_eq!(target("target = \"auto\"").unwrap(), Target::Auto);
        assert_eq!(target("target = 3").unwrap(), Target::Fixed(3));
        assert_eq!(target("target = \"fixed 4\"").unwrap(), Target::Fixed(4));
        assert_eq!(target("").unwrap(), Target::Fixed(0), "default: min_ready");
        let err = target("target = \"lots\"").unwrap_err().to_string();
        assert!(err.contains("target") && err.contains("lots"), "{err}");
    }

    #[test]
    fn sizing_gate_and_pool_windows_parse_with_clear_errors() {
        let config = Config::parse(
            r#"
            [manager]
            service_level = 0.99
            prior_lead_time = "2m"
            cooldown = "30m"
            demand_short = "10m"
            demand_long = "2h"
            gate_min_window = 2
            gate_max_window = 32
            retry_after_jitter = 0.5
            quota_poll_interval = "1m"
            [[pools]]
            flavor = "f"
            availability_zone = "a"
            min_ready = 1
            max_ready = 20
            image = "i"
            iops_limit = 6400
            volume_iops_limit = 3000
            windows = [
                { days = "Mon-Fri", from = "09:00", to = "18:00", min = 10 },
                { days = "Sat", from = "22:00", to = "02:00", min = 4, utc_offset = "+02:00" },
                "daily 12:00-13:00 min 12",
            ]
            "#,
        )
        .unwrap();
        let settings = config.manager.settings();
        assert_eq!(
            settings.poll_interval,
            ManagerSettings::default().poll_interval
        );
        assert_eq!(settings.sizing.service_level, 0.99);
        assert_eq!(settings.sizing.prior_lead_time, Duration::from_secs(120));
        assert_eq!(settings.sizing.cooldown, Duration::from_secs(1800));
        assert_eq!(settings.sizing.demand_long, Duration::from_secs(7200));
        assert_eq!(settings.gate.min_window, 2);
        assert_eq!(settings.gate.max_window, 32);
        assert_eq!(settings.gate.retry_after_jitter, 0.5);
        assert_eq!(settings.gate.headroom_interval, Duration::from_secs(60));
        assert!(settings.gate.enabled);
        let spec = config.pools[0].spec();
        assert_eq!(
            (spec.iops_limit, spec.volume_iops_limit),
            (Some(6400), Some(3000))
        );
        assert_eq!(spec.windows.len(), 3);
        assert_eq!(
            spec.windows[0],
            "Mon-Fri 09:00-18:00 min 10".parse().unwrap()
        );
        assert_eq!(
            spec.windows[1].to_string(),
            "Sat 22:00-02:00 min 4 UTC+02:00"
        );

        let pool = |extra: &str| {
            format!("[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 9\nimage = \"i\"\n{extra}")
        };
        for (text, expect) in [
            ("[manager]\nservice_level = 1.5".to_owned(), "manager.service_level"),
            ("[manager]\nservice_level = 0.9999999".to_owned(), "manager.service_level must be at least 0.5 and at most 0.999999"),
            ("[manager]\ngate_min_window = 9\ngate_initial_window = 8".to_owned(), "gate_initial_window"),
            ("[manager]\ncooldown = \"soon\"".to_owned(), "manager.cooldown"),
            ("[manager]\ndemand_short = \"2h\"".to_owned(), "demand_short"),
            ("[manager]\ngate_windw = 3".to_owned(), "unknown field `gate_windw`"),
            (pool("windows = [\"Mon-Fry 09:00-18:00 min 3\"]"), "Mon-Fry"),
            (pool("windows = [{ days = \"Mon\", from = \"9am\", to = \"18:00\", min = 3 }]"), "9am"),
            // TOML reads an unquoted time as a time value, not a string.
            (pool("windows = [{ days = \"Mon\", from = 09:00:00, to = \"18:00\", min = 3 }]"), "from: a time of day is a quoted string, from = \"09:00\""),
            (pool("windows = [\"Mon-Fri 09:00-18:00 3\"]"), "write the floor as \"min 3\""),
            (pool("windows = [\"Sat, Sun 10:00-16:00 min 3\"]"), "without spaces"),
            (pool("windows = [{ from = \"09:00\", to = \"18:00\", min = 1, utc_offset = \"EST5EDT\" }]"), "time zones are not read by name"),
            (pool("windows = [{ days = \"Mon\", from = \"09:00\", to = \"18:00\", min = 3, tz = \"CET\" }]"), "unknown field `tz`, expected one of `days`, `from`, `to`, `min`, `utc_offset`"),
            (pool("windows = [5]"), "expected a window: \"Mon-Fri 09:00-18:00 min 10\" or {"),
            (pool("windows = [\"daily 09:00-18:00 min 30\"]"), "above max_ready"),
            (pool("windows = [\"daily 09:00-18:00 min 1 +1é1\"]"), "\"+1é1\" is not a UTC offset"),
            (pool("windows = [{ from = \"09:00\", to = \"18:00\", min = 1, utc_offset = \"-€1\" }]"), "\"-€1\" is not a UTC offset"),
            (pool("iops_limit = 0"), "iops_limit"),
            (pool("target = 50"), "pool f@a: target: target 50 is above max_ready (9)"),
            ("[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 4294967295\nimage = \"i\"".to_owned(), "pool f@a: max_ready: max_ready must be at most 10000 instances, got 4294967295"),
            ("[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 10001\nmax_ready = 10001\nimage = \"i\"".to_owned(), "pool f@a: min_ready: min_ready must be at most 10000 instances, got 10001"),
            (pool("target = -1"), "invalid value: integer `-1`, expected \"auto\", a number from 0 to 4294967295, or \"fixed N\""),
            (pool("target = 2.5"), "expected \"auto\", a number"),
            (pool("target = 5000000000"), "invalid value: integer `5000000000`"),
            (pool("target = \"most\""), "target must be \"auto\", a number, or \"fixed N\"; got \"most\""),
            (pool("boot_timeout = \"300000000000y\""), "pool f@a: boot_timeout: boot_timeout must be at most 1day"),
            (pool("max_age = \"2y\""), "pool f@a: max_age: max_age must be at most 1year"),
            (pool("max_age = \"1s\""), "pool f@a: max_age: max_age must be at least 10m, got 1s"),
            ("[manager]\npoll_interval = \"100000000000y\"".to_owned(), "manager.poll_interval must be at most 1m"),
            ("[manager]\nreplenish_interval = \"2h\"".to_owned(), "manager.replenish_interval must be at most 1h"),
            ("[manager]\nreconcile_interval = \"100000000000y\"".to_owned(), "manager.reconcile_interval must be at most 1day"),
            ("[manager]\nretry_after_default = \"100000000000y\"".to_owned(), "manager.retry_after_default must be at most 1h"),
            ("[manager]\nquota_backoff = \"100000000000y\"\nquota_backoff_max = \"100000000000y\"".to_owned(), "manager.quota_backoff must be at most 1day"),
            ("[manager]\nquota_backoff_max = \"100000000000y\"".to_owned(), "manager.quota_backoff_max must be at most 1day"),
            ("[manager]\nquota_poll_interval = \"100000000000y\"".to_owned(), "manager.quota_poll_interval must be at most 1h"),
            ("[cloud]\nkind = \"embedded\"\ntime_scale = 1e300".to_owned(), "cloud.time_scale must be a positive number at most 100"),
            ("[manager]\nkeep_released = \"1h\"".to_owned(), "manager.keep_released must be at least 1day"),
            ("[manager]\nprior_lead_time = \"100000000y\"".to_owned(), "manager.prior_lead_time must be at most 1day"),
            ("[manager]\ncooldown = \"100000000000y\"".to_owned(), "manager.cooldown must be at most 1day"),
            ("[manager]\ndemand_long = \"30days\"".to_owned(), "manager.demand_long must be at most 7days"),
            ("[manager]\nkeep_released = \"forever\"".to_owned(), "keep_released"),
            ("grpc_keepalive_interval = \"0s\"".to_owned(), "grpc_keepalive_interval must be at least 1s"),
            ("grpc_keepalive_timeout = \"2h\"".to_owned(), "grpc_keepalive_timeout must be at most 1h"),
        ] {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    /// A grace of nothing cuts every call in flight at the first SIGTERM;
    /// one longer than the shipped supervisors wait (less the final
    /// flush's margin) has the flush killed.
    #[test]
    fn the_shutdown_grace_is_bounded_by_the_shipped_stop_timeouts() {
        for (grace, ok) in [
            ("0s", false),
            ("500ms", false),
            ("1s", true),
            ("30s", true),
            ("31s", false),
            ("35s", false),
            ("10m", false),
        ] {
            match Config::parse(&format!("shutdown_grace = \"{grace}\"")) {
                Ok(config) => {
                    assert!(ok, "{grace} was taken");
                    assert_eq!(
                        config.shutdown_grace,
                        humantime::parse_duration(grace).unwrap()
                    );
                }
                Err(e) => {
                    assert!(!ok, "{grace}: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("shutdown_grace must be between 1s and 30s")
                            && e.ends_with(&format!("got {grace}")),
                        "{e}"
                    );
                }
            }
        }
    }

    /// The configs deploy/ ships for production mark what only an
    /// operator knows (the management network, ...) as `"<...>"`: left
    /// in, such a value is refused by its key before anything starts,
    /// rather than looked up in the cloud under that name.
    #[test]
    fn a_placeholder_left_in_the_file_is_refused_by_its_key() {
        let text = "[cloud]\nkind = \"openstack\"\nmanagement_network = \"<the network mysqld is probed on>\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(
            err.contains(
                r#"cloud.management_network = "<the network mysqld is probed on>" is a placeholder"#
            ),
            "{err}"
        );
        let text = "[cloud]\nkind = \"openstack\"\nmanagement_network = \"mgmt\"\nsecurity_groups = [\"mysql\", \"<a group>\"]\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("cloud.security_groups[1] = "), "{err}");
        let text = "[[pools]]\nflavor = \"db.small\"\navailability_zone = \"<zone>\"\nmin_ready = 1\nmax_ready = 1\nimage = \"i\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("pools[0].availability_zone = "), "{err}");
        // Angle brackets inside a value are no placeholder.
        Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"a<b>c\"\n").unwrap();
    }

    #[test]
    fn errors_name_the_problem() {
        let err = Config::parse("listn = \"x\"").unwrap_err().to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
        let err = Config::parse("[manager]\npoll_interval = \"soon\"\nreplenish_interval=\"1s\"\nreconcile_interval=\"1s\"\nmax_concurrent_boots=1").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("manager.poll_interval: "), "{err}");
        let err = Config::parse("[[pools]]\nflavor=\"f\"\navailability_zone=\"a\"\nmin_ready=5\nmax_ready=1\nimage=\"i\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_ready"), "{err}");
        let err = Config::parse("listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_listen"), "{err}");
        let err = Config::parse("[cloud]\nkind = \"openstack\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("management_network"), "{err}");
        let err = Config::parse(
            "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nrequest_timeout = \"soon\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("request_timeout"), "{err}");
        // The line of the key, not of the [cloud] header.
        assert!(err.ends_with("in `request_timeout` (line 4)"), "{err}");
        let err =
            Config::parse("listen = \"127.0.0.1:1\"\n[cloud]\nkind = \"embedded\"\nseed = -1\n")
                .unwrap_err()
                .to_string();
        assert!(err.ends_with("in `seed` (line 4)"), "{err}");
        let err = Config::parse(
            "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\ncloud_name = \"x\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `cloud_name`"), "{err}");
        let err = Config::parse("[cloud]\nkind = \"openstak\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("openstak"), "{err}");
    }

    /// An override's keys are refused empty as the top-level ones are, and
    /// an override of a zone no pool is in is found: a misspelt zone's
    /// pools boot on the default management network and Cinder zone.
    #[test]
    fn availability_zone_overrides_are_checked() {
        let base = "[cloud]\nkind = \"openstack\"\nmanagement_network = \"mgmt\"\n";
        for (key, default) in [
            ("management_network", "cloud.management_network"),
            ("volume_availability_zone", "the pool's zone"),
        ] {
            for value in ["", " "] {
                let text = format!("{base}[cloud.availability_zones.az1]\n{key} = {value:?}\n");
                let err = Config::parse(&text).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!("config: cloud.availability_zones.az1.{key} must not be empty; leave it out for {default}")
                );
            }
        }

        let text = format!(
            "{base}[cloud.availability_zones.az-1]\nmanagement_network = \"mgmt-1\"\n\
             [cloud.availability_zones.az2]\nvolume_availability_zone = \"nova\"\n"
        );
        let CloudConfig::OpenStack(os) = Config::parse(&text).unwrap().cloud else {
            unreachable!()
        };
        assert_eq!(os.unused_az_overrides(["az1", "az2"]), ["az-1"]);
        assert!(os.unused_az_overrides(["az-1", "az2"]).is_empty());
        assert_eq!(
            os.unused_az_overrides([]),
            ["az-1", "az2"],
            "with no pools yet, no override is used"
        );
    }

    #[test]
    fn openstack_config_parses_and_reads_its_clouds_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  ostb-service:\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: pool\n      password: poolpass\n      project_name: service\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
        )
        .unwrap();
        let text = format!(
            r#"
            [cloud]
            kind = "openstack"
            cloud = "ostb-service"
            clouds_yaml = "{}"
            management_network = "service-net"
            image = "ostb-image"
            security_groups = ["mysql"]
            key_name = "ops"
            server_tag = "wp"
            mysql_port = 13306
            request_timeout = "5s"
            probe_address_override = "127.0.0.1:3306"
            [cloud.availability_zones.az2]
            management_network = "service-net-2"
            volume_availability_zone = "nova"
            "#,
            clouds.display()
        );
        let config = Config::parse(&text).unwrap();
        let CloudConfig::OpenStack(os) = &config.cloud else {
            panic!("not openstack: {:?}", config.cloud)
        };
        let settings = os.settings().unwrap();
        assert_eq!(settings.request_timeout, Duration::from_secs(5));
        assert_eq!(settings.server_name_prefix, "warmpool-");
        assert_eq!(settings.management_network_for("az1"), "service-net");
        assert_eq!(settings.management_network_for("az2"), "service-net-2");
        assert_eq!(settings.mysql_port, 13306);
        assert_eq!(
            settings.probe_address_override,
            Some("127.0.0.1:3306".parse().unwrap())
        );
        let auth = serde_yaml::to_value(&settings.auth).unwrap();
        assert_eq!(auth["auth"]["username"].as_str(), Some("pool"));
        assert_eq!(auth["region_name"].as_str(), Some("RegionOne"));
        // The tenant's port gets no group named unless told (the project's
        // default group, as before the setting: not the pool servers'
        // groups, which an upgrade would put on every tenant's port); an
        // empty list is the same.
        assert!(
            settings.tenant_port_security_groups.is_empty(),
            "{:?}",
            settings.tenant_port_security_groups
        );
        for (groups, expected) in [("[]", vec![]), (r#"["db-clients"]"#, vec!["db-clients"])] {
            let text = text.replace(
                r#"key_name = "ops""#,
                &format!("key_name = \"ops\"\ntenant_port_security_groups = {groups}"),
            );
            let CloudConfig::OpenStack(os) = Config::parse(&text).unwrap().cloud else {
                unreachable!()
            };
            let settings = os.settings().unwrap();
            assert_eq!(settings.tenant_port_security_groups, expected, "{groups}");
            assert_eq!(settings.security_groups, ["mysql"], "{groups}");
        }

        let missing = text.replace("cloud = \"ostb-service\"", "cloud = \"nope\"");
        let CloudConfig::OpenStack(os) = Config::parse(&missing).unwrap().cloud else {
            unreachable!()
        };
        let err = os.settings().unwrap_err().to_string();
        assert!(
            err.contains("no cloud named 'nope'") && err.contains("ostb-service"),
            "{err}"
        );
        let gone = text.replace("clouds.yaml", "nothing.yaml");
        let CloudConfig::OpenStack(os) = Config::parse(&gone).unwrap().cloud else {
            unreachable!()
        };
        let err = os.settings().unwrap_err().to_string();
        assert!(err.contains("nothing.yaml"), "{err}");

        // Empty names Nova would refuse on every boot are refused at load.
        for (from, to) in [
            (r#"key_name = "ops""#, r#"key_name = """#),
            (
                r#"security_groups = ["mysql"]"#,
                r#"security_groups = ["mysql", " "]"#,
            ),
            (
                r#"security_groups = ["mysql"]"#,
                "security_groups = [\"mysql\"]\ntenant_port_security_groups = [\"\"]",
            ),
        ] {
            let bad = text.replace(from, to);
            assert_ne!(bad, text);
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(err.contains("must not be empty"), "{to}: {err}");
        }

        // The key pair is read at /os-keypairs/{name}, where the URL join
        // drops a "." or ".." segment: the read would be the listing.
        for key in [".", ".."] {
            let bad = text.replace(r#"key_name = "ops""#, &format!("key_name = {key:?}"));
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("cloud.key_name {key:?} names no object")),
                "{key}: {err}"
            );
        }

        // A tag Nova would refuse on every boot is refused at load.
        let long = "t".repeat(61);
        for tag in ["warm,pool", "warm/pool", long.as_str()] {
            let bad = text.replace(r#"server_tag = "wp""#, &format!("server_tag = {tag:?}"));
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(
                err.contains("cloud.server_tag must be at most 60"),
                "{tag}: {err}"
            );
        }
        let longest = text.replace(
            r#"server_tag = "wp""#,
            &format!("server_tag = {:?}", "é".repeat(60)),
        );
        assert!(Config::parse(&longest).is_ok());
    }

    /// serde's messages quote the value they could not read: a clouds.yaml
    /// entry's error names the key and the type it needs, never the value
    /// (a password, an application credential's secret, a token).
    #[test]
    fn a_malformed_clouds_yaml_names_the_key_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        let entry = |auth: &str| {
            format!("clouds:\n  wp:\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: pool\n{auth}      project_name: service\n    region_name: RegionOne\n")
        };
        for (yaml, key, expected, secret) in [
            (
                entry("      password: 8675309\n"),
                "clouds.wp.auth.password",
                "expected a string",
                "8675309",
            ),
            (
                entry("      password: 8675.309e1\n"),
                "clouds.wp.auth.password",
                "expected a string",
                "86753",
            ),
            (
                entry("      application_credential_secret: true\n"),
                "clouds.wp.auth.application_credential_secret",
                "expected a string",
                "true",
            ),
            (
                entry("      token: [s3cr3t, x]\n"),
                "clouds.wp.auth.token",
                "expected a string",
                "s3cr3t",
            ),
            (
                entry("      token: !!int s3cr3t\n"),
                "clouds.wp.auth.token",
                "expected an integer",
                "s3cr3t",
            ),
            (
                entry("      password: !!float \"s3cr3t, expected a string\"\n"),
                "clouds.wp.auth.password",
                "expected a float",
                "s3cr3t",
            ),
            (
                "clouds:\n  wp:\n    auth: s3cr3t\n".to_owned(),
                "clouds.wp.auth",
                "expected struct",
                "s3cr3t",
            ),
        ] {
            std::fs::write(&path, &yaml).unwrap();
            let err = clouds_yaml_entry(&path, "wp").unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(expected), "{yaml}: {err}");
            let scalar = ["8675309", "86753", "true"].contains(&secret);
            assert_eq!(err.contains("; quote it"), scalar, "{yaml}: {err}");
            assert!(!err.contains(secret), "{yaml}: the value is shown: {err}");
        }
    }

    /// A clouds.yaml or secure.yaml holding a secret that every user of
    /// the host may read is warned of, naming the file and its mode (at
    /// start and by check-cloud, which both read it here); one its group
    /// may read is not (Kubernetes mounts a Secret 0440 under fsGroup on
    /// purpose), nor a clouds.yaml whose secrets secure.yaml holds.
    #[cfg(unix)]
    #[test]
    fn a_clouds_yaml_others_may_read_is_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        // Others may reach the files (/tmp is 1777): a 0700 directory
        // would keep them out.
        mode(dir.path(), 0o755);
        let clouds = dir.path().join("clouds.yaml");
        let public =
            "clouds:\n  wp:\n    auth:\n      auth_url: http://keystone\n      username: pool\n";
        std::fs::write(&clouds, public).unwrap();
        let secure = dir.path().join("secure.yaml");
        std::fs::write(
            &secure,
            "clouds:\n  wp:\n    auth:\n      password: s3cr3t\n",
        )
        .unwrap();
        let warnings = || {
            let logs = warmpool_test_support::Logs::capture();
            clouds_yaml_entry_with(&clouds, "wp", std::slice::from_ref(&secure)).unwrap();
            logs.warnings()
        };
        mode(&clouds, 0o644);
        mode(&secure, 0o604);
        // clouds.yaml holds no secret: secure.yaml alone is named.
        let shown = warnings();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].contains(&secure.display().to_string()) && shown[0].contains("mode 0604"),
            "{shown:?}"
        );
        for secret in [
            "password: old",
            "application_credential_secret: old",
            "token: old",
        ] {
            std::fs::write(&clouds, format!("{public}      {secret}\n")).unwrap();
            let shown = warnings();
            assert_eq!(shown.len(), 2, "{secret}: {shown:?}");
            assert!(
                shown[0].contains(&clouds.display().to_string()) && shown[0].contains("mode 0644"),
                "{shown:?}"
            );
        }
        mode(&clouds, 0o440);
        mode(&secure, 0o640);
        assert_eq!(warnings(), Vec::<String>::new());
        // In a directory others cannot search, out of their reach.
        mode(&clouds, 0o644);
        mode(&secure, 0o644);
        mode(dir.path(), 0o700);
        assert_eq!(warnings(), Vec::<String>::new());
    }

    /// secure.yaml, found where clouds.yaml is looked for, holds the
    /// secrets of clouds.yaml's entries: its entry is deep-merged over
    /// clouds.yaml's, as the openstack CLI does.
    #[test]
    fn secure_yaml_is_merged_over_the_clouds_yaml_entry() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  wp:\n    region_name: RegionOne\n    auth:\n      auth_url: http://keystone\n      username: pool\n      password: old\n",
        )
        .unwrap();
        let secure = dir.path().join("secure.yaml");
        std::fs::write(
            &secure,
            "clouds:\n  wp:\n    auth:\n      password: s3cr3t\n  only-secret:\n    auth:\n      password: x\n",
        )
        .unwrap();
        let missing = dir.path().join("not-there.yaml");
        let entry = |secure_candidates: &[PathBuf]| {
            let entry = clouds_yaml_entry_with(&clouds, "wp", secure_candidates).unwrap();
            serde_yaml::to_value(&entry).unwrap()
        };
        // The first secure.yaml found wins.
        let merged = entry(&[missing.clone(), secure.clone()]);
        assert_eq!(merged["auth"]["password"].as_str(), Some("s3cr3t"));
        assert_eq!(merged["auth"]["username"].as_str(), Some("pool"));
        assert_eq!(merged["auth"]["auth_url"].as_str(), Some("http://keystone"));
        assert_eq!(merged["region_name"].as_str(), Some("RegionOne"));
        // None found: clouds.yaml's alone.
        let alone = entry(std::slice::from_ref(&missing));
        assert_eq!(alone["auth"]["password"].as_str(), Some("old"));
        // A name clouds.yaml lacks is listed with secure.yaml's names.
        let err = clouds_yaml_entry_with(&clouds, "nowhere", std::slice::from_ref(&secure))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wp, only-secret"), "{err}");
        assert!(err.contains(&secure.display().to_string()), "{err}");
        // A malformed secure.yaml is named, its values never shown.
        std::fs::write(
            &secure,
            "clouds:\n  wp:\n    auth:\n      password: [s3cr3t\n",
        )
        .unwrap();
        let err = clouds_yaml_entry_with(&clouds, "wp", std::slice::from_ref(&secure))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&secure.display().to_string()), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    /// A secure.yaml missing from where it was found, or unreadable to
    /// warmpoold, is the operator's to mend (start-up exits EX_CONFIG); one
    /// whose read failed otherwise (an I/O error of its disk, here
    /// /proc/self/mem's) may pass, so it is told apart, as the config
    /// file's own read is.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_secure_yaml_read_failing_as_a_disk_may_is_no_refusal_for_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  wp:\n    auth:\n      auth_url: http://keystone\n",
        )
        .unwrap();
        let err =
            clouds_yaml_entry_with(&clouds, "wp", &[PathBuf::from("/proc/self/mem")]).unwrap_err();
        assert!(err.to_string().contains("/proc/self/mem"), "{err}");
        assert!(err.to_string().contains("OS_CLIENT_SECURE_FILE"), "{err}");
        let err = anyhow::Error::from(err);
        assert!(!crate::needs_an_operator(&err), "{err:#}");
    }

    /// YAML merge keys (`<<: *anchor`) are applied, as the openstack CLI's
    /// PyYAML applies them, in clouds.yaml and secure.yaml alike: the
    /// entry gets the anchored keys, its own keys winning, merges within
    /// a merged mapping included.
    #[test]
    fn yaml_merge_keys_are_applied_in_clouds_and_secure_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "base: &base\n  auth:\n    auth_url: http://keystone\n    username: pool\n    password: s3cr3t\n    project_name: service\n  region_name: Base\n\
             tokyo: &tokyo\n  <<: *base\n  interface: internal\n\
             clouds:\n  plain:\n    <<: *base\n    region_name: R\n  chained:\n    <<: *tokyo\n",
        )
        .unwrap();
        let none: &[PathBuf] = &[];
        let entry = |name: &str, secure: &[PathBuf]| {
            let entry = clouds_yaml_entry_with(&clouds, name, secure).unwrap();
            serde_yaml::to_value(&entry).unwrap()
        };
        let plain = entry("plain", none);
        assert_eq!(plain["auth"]["auth_url"].as_str(), Some("http://keystone"));
        assert_eq!(plain["auth"]["username"].as_str(), Some("pool"));
        assert_eq!(plain["region_name"].as_str(), Some("R"), "its own key wins");
        let chained = entry("chained", none);
        assert_eq!(chained["auth"]["username"].as_str(), Some("pool"));
        assert_eq!(chained["region_name"].as_str(), Some("Base"));
        assert_eq!(chained["interface"].as_str(), Some("internal"));

        let secure = dir.path().join("secure.yaml");
        std::fs::write(
            &secure,
            "secrets: &secrets\n  auth:\n    password: fromsecure\nclouds:\n  plain:\n    <<: *secrets\n",
        )
        .unwrap();
        let merged = entry("plain", std::slice::from_ref(&secure));
        assert_eq!(merged["auth"]["password"].as_str(), Some("fromsecure"));
        assert_eq!(merged["auth"]["username"].as_str(), Some("pool"));

        // A merge of no mapping is named, its value never shown.
        std::fs::write(&clouds, "clouds:\n  plain:\n    <<: s3cr3t\n").unwrap();
        let err = clouds_yaml_entry_with(&clouds, "plain", none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&clouds.display().to_string()) && err.contains("merging"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    /// osauth, warmpool's OpenStack client, names the user's domain by
    /// name only and knows no `domain_id`/`domain_name`: it dropped them
    /// in silence and logged in to domain "Default", so a user of another
    /// domain got a 401 naming a `user_domain_name` their file lacks (or
    /// logged in as a namesake of Default). The default domain's id
    /// (devstack's `user_domain_id: default`) is its name "Default"; a name
    /// beside an id is used; the shorthands fill both domains where a
    /// project is named, as the openstack CLI reads them; anything else is
    /// refused naming the key and what to give instead.
    #[test]
    fn domain_ids_and_domain_shorthands_are_honoured_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        let none: &[PathBuf] = &[];
        let entry = |auth: &str, top: &str| -> Result<serde_yaml::Value, String> {
            std::fs::write(
                &clouds,
                format!("clouds:\n  wp:\n{top}    auth:\n      auth_url: http://keystone/v3\n      username: pool\n      password: pw\n{auth}"),
            )
            .unwrap();
            clouds_yaml_entry_with(&clouds, "wp", none)
                .map(|c| serde_yaml::to_value(&c).unwrap())
                .map_err(|e| e.to_string())
        };
        let project = "      project_name: service\n";
        let auth = |v: &serde_yaml::Value, key: &str| v["auth"][key].as_str().map(str::to_owned);

        // devstack's clouds.yaml.
        let v = entry(
            &format!("{project}      user_domain_id: default\n      project_domain_id: default\n"),
            "",
        )
        .unwrap();
        assert_eq!(auth(&v, "user_domain_name").as_deref(), Some("Default"));
        assert_eq!(auth(&v, "project_domain_id").as_deref(), Some("default"));
        // A name beside the id is the one used.
        let v = entry(
            &format!("{project}      user_domain_id: 4c2b9e\n      user_domain_name: Users\n"),
            "",
        )
        .unwrap();
        assert_eq!(auth(&v, "user_domain_name").as_deref(), Some("Users"));
        // Another id alone: refused, naming the key and the way out.
        let err = entry(&format!("{project}      user_domain_id: 4c2b9e\n"), "").unwrap_err();
        for said in [
            "clouds.wp.auth.user_domain_id",
            "user_domain_name",
            "openstack domain show 4c2b9e",
        ] {
            assert!(err.contains(said), "{said} not in: {err}");
        }
        // The shorthands, in auth or beside it, with a project named: the
        // default of both domains; a domain named on its own wins.
        let v = entry(&format!("{project}      domain_name: Users\n"), "").unwrap();
        assert_eq!(auth(&v, "user_domain_name").as_deref(), Some("Users"));
        assert_eq!(auth(&v, "project_domain_name").as_deref(), Some("Users"));
        let v = entry(project, "    domain_name: Users\n").unwrap();
        assert_eq!(auth(&v, "user_domain_name").as_deref(), Some("Users"));
        assert_eq!(auth(&v, "project_domain_name").as_deref(), Some("Users"));
        let v = entry(
            &format!("{project}      domain_id: default\n      project_domain_name: Projects\n"),
            "",
        )
        .unwrap();
        assert_eq!(auth(&v, "user_domain_name").as_deref(), Some("Default"));
        assert_eq!(auth(&v, "project_domain_name").as_deref(), Some("Projects"));
        assert_eq!(auth(&v, "project_domain_id"), None);
        let err = entry(&format!("{project}      domain_id: 4c2b9e\n"), "").unwrap_err();
        assert!(
            err.contains("clouds.wp.auth.domain_id") && err.contains("user_domain_name"),
            "{err}"
        );
        // Without a project they scope the token to the domain, which
        // warmpool cannot work in.
        let err = entry("      domain_name: Users\n", "").unwrap_err();
        assert!(
            err.contains("clouds.wp.auth.domain_name") && err.contains("project_name"),
            "{err}"
        );
    }

    /// The `OS_*` variables osauth does not read (`OS_USER_DOMAIN_ID`,
    /// `OS_DOMAIN_ID`, `OS_DOMAIN_NAME`) are honoured or refused as their
    /// clouds.yaml keys are, named as variables.
    #[test]
    fn os_domain_variables_osauth_does_not_read_are_honoured_or_refused() {
        let config =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"").unwrap();
        let CloudConfig::OpenStack(os) = config.cloud else {
            unreachable!()
        };
        let url = ("OS_AUTH_URL", "http://keystone/v3");
        let user_domain = |vars: &[(&str, &str)]| {
            let auth = os.auth_in(&env(vars)).map_err(|e| e.to_string())?;
            let value = serde_yaml::to_value(&auth).unwrap();
            Ok::<_, String>(
                value["auth"]["user_domain_name"]
                    .as_str()
                    .map(str::to_owned),
            )
        };
        assert_eq!(
            user_domain(&[url, ("OS_USER_DOMAIN_ID", "default")])
                .unwrap()
                .as_deref(),
            Some("Default")
        );
        let err = user_domain(&[url, ("OS_USER_DOMAIN_ID", "4c2b9e")]).unwrap_err();
        assert!(
            err.contains("OS_USER_DOMAIN_ID") && err.contains("OS_USER_DOMAIN_NAME"),
            "{err}"
        );
        let err = user_domain(&[url, ("OS_DOMAIN_NAME", "Users")]).unwrap_err();
        assert!(
            err.contains("OS_DOMAIN_NAME") && err.contains("OS_PROJECT_NAME"),
            "{err}"
        );
    }

    /// Keystone on MySQL (utf8_general_ci) matches domain ids without
    /// regard to case, so the openstack CLI logs in with
    /// `user_domain_id: Default`: it is the default domain, as `default`.
    #[test]
    fn the_default_domains_id_in_any_case_is_the_default_domain() {
        let config =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"").unwrap();
        let CloudConfig::OpenStack(os) = config.cloud else {
            unreachable!()
        };
        for id in ["default", "Default", "DEFAULT"] {
            let auth = os
                .auth_in(&env(&[
                    ("OS_AUTH_URL", "http://keystone/v3"),
                    ("OS_USER_DOMAIN_ID", id),
                ]))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            let value = serde_yaml::to_value(&auth).unwrap();
            assert_eq!(
                value["auth"]["user_domain_name"].as_str(),
                Some("Default"),
                "{id}"
            );
        }
    }

    /// The driver's settings hold osauth's `CloudConfig`, whose Debug
    /// prints the credentials as they are; the settings' own Debug (what a
    /// `{:?}` in a log or a panic message would show) leaves them out.
    #[test]
    fn the_driver_settings_debug_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(
            &path,
            "clouds:\n  wp:\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: pool\n      password: s3cr3t-pw\n      project_name: service\n    region_name: RegionOne\n",
        )
        .unwrap();
        let config = Config::parse(&format!(
            "[cloud]\nkind = \"openstack\"\ncloud = \"wp\"\nclouds_yaml = {:?}\nmanagement_network = \"mgmt\"",
            path.display().to_string()
        ))
        .unwrap();
        let CloudConfig::OpenStack(os) = config.cloud else {
            unreachable!()
        };
        let settings = os.settings().unwrap();
        assert!(format!("{:?}", settings.auth).contains("s3cr3t-pw"));
        let shown = format!("{settings:?}");
        assert!(shown.contains("mgmt"), "{shown}");
        assert!(
            !shown.contains("s3cr3t-pw"),
            "the password is shown: {shown}"
        );
    }

    /// The region keys as openstacksdk reads them: an empty region_name
    /// or interface is none given; with no region_name the first of
    /// `regions` (a name, or a mapping's `name`) is the region; beside a
    /// region_name `regions` is left unread; a first region with its own
    /// settings, or naming none, is refused by key.
    #[test]
    fn region_name_interface_and_regions_as_openstacksdk_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        let entry = |keys: &str| {
            std::fs::write(
                &clouds,
                format!("clouds:\n  wp:\n    auth:\n      auth_url: http://keystone\n      username: pool\n      password: pw\n      project_name: service\n{keys}"),
            )
            .unwrap();
            clouds_yaml_entry_with(&clouds, "wp", &[])
                .map(|entry| serde_yaml::to_value(&entry).unwrap())
                .map_err(|e| e.to_string())
        };
        let region = |keys: &str| {
            let entry = entry(keys).unwrap();
            (
                entry["region_name"].as_str().map(str::to_owned),
                entry["interface"].as_str().map(str::to_owned),
            )
        };
        assert_eq!(
            region("    region_name: ''\n    interface: ''\n"),
            (None, None)
        );
        assert_eq!(
            region("    regions: [RegionTwo, RegionOne]\n"),
            (Some("RegionTwo".into()), None)
        );
        assert_eq!(
            region("    region_name: ''\n    regions:\n      - name: RegionTwo\n        values: {}\n      - RegionOne\n"),
            (Some("RegionTwo".into()), None)
        );
        assert_eq!(
            region(
                "    region_name: RegionOne\n    regions: [RegionTwo, {name: x, values: {a: 1}}]\n"
            ),
            (Some("RegionOne".into()), None)
        );
        assert_eq!(region("    regions: []\n"), (None, None));
        for (keys, said) in [
            (
                "    regions:\n      - name: RegionTwo\n        values:\n          interface: internal\n",
                "clouds.wp.regions[0].values: warmpool does not read a region's own settings",
            ),
            ("    regions: [{values: {}}]\n", "clouds.wp.regions[0] names no region"),
            ("    regions: ['']\n", "clouds.wp.regions[0] names no region"),
            (
                "    regions: [{name: R, interface: public}]\n",
                "clouds.wp.regions[0].interface: a region is a name",
            ),
            ("    regions: RegionOne\n", "clouds.wp.regions must be a list"),
        ] {
            let err = entry(keys).unwrap_err();
            assert!(err.contains(said), "{keys}: {err}");
        }
    }

    /// OS_REGION_NAME and OS_INTERFACE beside a named clouds.yaml entry are
    /// read by the openstack CLI, not by warmpool: warned of when they
    /// differ from what the entry gives, named with what is used.
    #[test]
    fn region_variables_beside_a_named_entry_are_warned_of() {
        let parse = |cloud: &str| {
            let CloudConfig::OpenStack(os) = Config::parse(&format!(
                "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\n{cloud}"
            ))
            .unwrap()
            .cloud
            else {
                unreachable!()
            };
            os
        };
        let auth: pool_manager::openstack::CloudConfig =
            serde_yaml::from_str("auth:\n  auth_url: http://keystone\nregion_name: RegionOne\n")
                .unwrap();
        let named = parse("cloud = \"wp\"\n");
        let warned = |os: &OpenStackConfig, vars: &[(&str, &str)]| {
            os.unused_region_variables_in(&auth, &env(vars))
        };
        assert_eq!(warned(&named, &[]), None);
        assert_eq!(warned(&named, &[("OS_REGION_NAME", "RegionOne")]), None);
        assert_eq!(warned(&named, &[("OS_REGION_NAME", "")]), None);
        let said = warned(
            &named,
            &[
                ("OS_REGION_NAME", "RegionTwo"),
                ("OS_INTERFACE", "internal"),
            ],
        )
        .unwrap();
        for part in [
            "OS_REGION_NAME is 'RegionTwo' and the entry's region_name 'RegionOne' is used",
            "OS_INTERFACE is 'internal' and the entry's interface none (public) is used",
            "'wp' ([cloud] cloud)",
        ] {
            assert!(said.contains(part), "{part} not in: {said}");
        }
        let by_env = parse("");
        let said = warned(
            &by_env,
            &[("OS_CLOUD", "wp"), ("OS_REGION_NAME", "RegionTwo")],
        )
        .unwrap();
        assert!(said.contains("'wp' (OS_CLOUD)"), "{said}");
        // No entry named: the variables are what osauth reads.
        assert_eq!(warned(&by_env, &[("OS_REGION_NAME", "RegionTwo")]), None);
    }

    /// OS_INTERFACE is compared with the interface in use: an entry's
    /// unset one is public, and publicURL/internalURL are public/internal.
    #[test]
    fn os_interface_public_beside_an_entry_with_none_is_not_warned_of() {
        let CloudConfig::OpenStack(os) = Config::parse(
            "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\ncloud = \"wp\"\n",
        )
        .unwrap()
        .cloud
        else {
            unreachable!()
        };
        let auth: pool_manager::openstack::CloudConfig =
            serde_yaml::from_str("auth:\n  auth_url: http://keystone\nregion_name: RegionOne\n")
                .unwrap();
        // Horizon's openrc exports OS_INTERFACE=public; the entry's
        // unset interface is public too, and an older openrc's publicURL
        // is public.
        for set in ["public", "publicURL"] {
            assert_eq!(
                os.unused_region_variables_in(&auth, &env(&[("OS_INTERFACE", set)])),
                None,
                "{set}"
            );
        }
        let internal: pool_manager::openstack::CloudConfig = serde_yaml::from_str(
            "auth:\n  auth_url: http://keystone\nregion_name: RegionOne\ninterface: internal\n",
        )
        .unwrap();
        assert_eq!(
            os.unused_region_variables_in(&internal, &env(&[("OS_INTERFACE", "internalURL")])),
            None
        );
        let said = os
            .unused_region_variables_in(&internal, &env(&[("OS_INTERFACE", "public")]))
            .unwrap();
        assert!(
            said.contains("OS_INTERFACE is 'public' and the entry's interface 'internal' is used"),
            "{said}"
        );
    }

    /// osauth's own loading, which warmpool leaves to it only for the OS_*
    /// variables, reads clouds.yaml (and secure.yaml) whenever OS_CLOUD is
    /// set, empty too, and its errors quote the files' values.
    #[test]
    fn an_empty_os_cloud_is_refused_before_osauth_reads_clouds_yaml() {
        let config =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"").unwrap();
        let CloudConfig::OpenStack(os) = config.cloud else {
            unreachable!()
        };
        let err = os
            .auth_in(&env(&[("OS_CLOUD", "")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OS_CLOUD is set but empty"), "{err}");
    }

    /// A clouds_yaml with no entry named (neither `cloud` nor OS_CLOUD)
    /// would fall back to the OS_* variables (whoever an openrc sourced
    /// logs in as) or osauth's error naming neither file nor key: refused,
    /// naming the key, the file and its entries.
    #[test]
    fn a_clouds_yaml_without_a_cloud_named_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  prod:\n    auth: {auth_url: 'http://k'}\n  staging:\n    auth: {auth_url: 'http://k'}\n",
        )
        .unwrap();
        let os = |clouds: &Path| {
            let config = Config::parse(&format!(
                "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nclouds_yaml = {:?}",
                clouds.display().to_string()
            ))
            .unwrap();
            let CloudConfig::OpenStack(os) = config.cloud else {
                unreachable!()
            };
            os
        };
        let err = os(&clouds).auth_in(&env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("[cloud] cloud")
                && err.contains(&clouds.display().to_string())
                && err.contains("prod, staging"),
            "{err}"
        );
        // OS_CLOUD names the entry as `cloud` would.
        let err = os(&clouds)
            .auth_in(&env(&[("OS_CLOUD", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no cloud named 'nowhere'"), "{err}");
        // A file that is not there says so.
        let missing = dir.path().join("missing.yaml");
        let err = os(&missing).auth_in(&env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("[cloud] cloud") && err.contains(&missing.display().to_string()),
            "{err}"
        );
    }

    /// An environment with only `vars` set, for [`OpenStackConfig::auth_in`].
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    /// No cloud named (no `cloud`, no OS_CLOUD) and no OS_AUTH_URL: osauth
    /// was left to log in with nothing, and its "configuration file cannot
    /// be found or is invalid: Password authentication requires an
    /// authentication URL" blamed a clouds.yaml that was fine. Said as it
    /// is, with the fixes, and the entries of the clouds.yaml found.
    #[test]
    fn no_cloud_named_and_no_auth_url_names_the_fixes() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(
            &clouds,
            "clouds:\n  prod:\n    auth: {auth_url: 'http://k'}\n  staging:\n    auth: {auth_url: 'http://k'}\n",
        )
        .unwrap();
        let home = dir.path().join("home");
        let config =
            Config::parse("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"").unwrap();
        let CloudConfig::OpenStack(os) = config.cloud else {
            unreachable!()
        };
        let clouds_path = clouds.display().to_string();
        let home_path = home.display().to_string();
        let found = env(&[
            ("OS_CLIENT_CONFIG_FILE", &clouds_path),
            ("HOME", &home_path),
        ]);
        let err = os.auth_in(&found).unwrap_err().to_string();
        for part in [
            "no cloud named",
            "OS_AUTH_URL",
            "cloud = \"NAME\"",
            "OS_CLOUD",
            &format!("{clouds_path} has: prod, staging"),
        ] {
            assert!(err.contains(part), "{part:?}: {err}");
        }
        assert!(!err.contains("configuration file"), "{err}");
        // No clouds.yaml anywhere: the fixes, without entries to list.
        let err = os
            .auth_in(&env(&[("HOME", &home_path)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no cloud named") && err.contains("cloud = \"NAME\""),
            "{err}"
        );
        // OS_AUTH_URL set: the OS_* variables are meant, as before.
        let meant = os.auth_in(&env(&[("OS_AUTH_URL", "http://k/v3")]));
        assert!(
            meant
                .as_ref()
                .err()
                .is_none_or(|e| !e.to_string().contains("no cloud named")),
            "{meant:?}"
        );
    }

    /// A duration's error says what one looks like and keeps humantime's
    /// reason (serde's alone says "expected a duration").
    #[test]
    fn a_duration_that_is_not_one_says_what_one_looks_like() {
        let pool = "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n";
        for (text, expect) in [
            (
                "shutdown_grace = 30".to_owned(),
                "shutdown_grace: 30 is not a duration: a number needs a unit, in quotes (\"30s\"); use e.g. \"90s\", \"10m\", \"1h 30m\"",
            ),
            (
                format!("{pool}boot_timeout = \"15\""),
                "boot_timeout: \"15\" is not a duration (time unit needed, for example 15sec or 15ms); use e.g. \"90s\", \"10m\", \"1h 30m\"",
            ),
            (
                format!("{pool}max_age = \"2 fortnights\""),
                "max_age: \"2 fortnights\" is not a duration (unknown time unit",
            ),
            (
                "[manager]\nkeep_released = true".to_owned(),
                "keep_released: true is not a duration",
            ),
            (
                "[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nrequest_timeout = \"soon\"".to_owned(),
                "cloud: \"soon\" is not a duration (expected number at 0); use e.g. \"90s\", \"10m\", \"1h 30m\" in `request_timeout`",
            ),
        ] {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
        let config = Config::parse(&format!("{pool}max_age = \"2days\"")).unwrap();
        assert_eq!(
            config.pools[0].max_age,
            Some(Duration::from_secs(2 * 86400))
        );
    }

    /// Every cloud call, the start-up login and check-cloud's included,
    /// waits up to request_timeout for an answer.
    #[test]
    fn the_request_timeout_is_bounded() {
        let text = |timeout: &str| {
            format!("[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nrequest_timeout = \"{timeout}\"")
        };
        for (timeout, ok) in [
            ("0s", false),
            ("1s", true),
            ("10m", true),
            ("10m 1s", false),
            ("1000000years", false),
        ] {
            match Config::parse(&text(timeout)) {
                Ok(_) => assert!(ok, "{timeout} was taken"),
                Err(e) => {
                    assert!(!ok, "{timeout}: {e}");
                    assert!(
                        e.to_string()
                            .contains("cloud.request_timeout must be positive and at most 10m"),
                        "{e}"
                    );
                }
            }
        }
    }

    /// A keepalive in milliseconds is a unit typo (`20ms` meant as `20s`):
    /// a timeout that short drops every client farther away than it, and
    /// one of `1ms` or `1ns` every client at once. Refused by key, value
    /// and minimum, on any cloud (it is about the network, not the cloud).
    #[test]
    fn keepalives_below_their_minimum_are_refused() {
        for (key, value) in [
            ("grpc_keepalive_timeout", "20ms"),
            ("grpc_keepalive_timeout", "1ns"),
            ("grpc_keepalive_interval", "1ms"),
            ("grpc_keepalive_interval", "0s"),
        ] {
            for manager in ["", "[manager]\nallow_short_intervals = true\n"] {
                let text = format!("{key} = \"{value}\"\n{manager}");
                let err = Config::parse(&text).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("{key} must be at least 1s"))
                        && err.contains(&format!("got {value}")),
                    "{text}: {err}"
                );
            }
        }
        let config =
            Config::parse("grpc_keepalive_interval = \"1s\"\ngrpc_keepalive_timeout = \"1s\"\n")
                .unwrap();
        assert_eq!(
            (
                config.grpc_keepalive_interval,
                config.grpc_keepalive_timeout
            ),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
    }

    /// How long a readiness probe waits is a setting (an image whose
    /// mysqld greets late, e.g. after reverse-DNS lookups of warmpoold's
    /// address, needs more than 5 s), bounded: below 1s a unit typo fails
    /// every probe, and a purchase waits it out for each silent instance.
    #[test]
    fn the_probe_timeout_is_a_bounded_setting() {
        let parse = |manager: &str| Config::parse(&format!("[manager]\n{manager}"));
        assert_eq!(
            parse("").unwrap().manager.probe_timeout,
            pool_manager::probe::DEFAULT_PROBE_TIMEOUT
        );
        assert_eq!(
            parse("probe_timeout = \"20s\"")
                .unwrap()
                .manager
                .probe_timeout,
            Duration::from_secs(20)
        );
        for (value, expect) in [
            ("0s", "manager.probe_timeout must be positive"),
            ("500ms", "manager.probe_timeout must be at least 1s"),
            (
                "2m",
                "manager.probe_timeout must be positive and at most 1m",
            ),
            ("soon", "manager.probe_timeout: \"soon\" is not a duration"),
        ] {
            let err = parse(&format!("probe_timeout = \"{value}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{value}: {err}");
        }
        parse("allow_short_intervals = true\nprobe_timeout = \"200ms\"").unwrap();
        let err = parse("allow_short_intervals = true\nprobe_timeout = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manager.probe_timeout must be positive"),
            "{err}"
        );
    }

    /// A request timeout in milliseconds is a unit typo (`30ms` meant as
    /// `30s`): every cloud call, the login first, would time out, blamed
    /// on the cloud. Refused below 1s unless a test cloud lifts it.
    #[test]
    fn a_request_timeout_below_its_minimum_is_refused() {
        let text = |timeout: &str, manager: &str| {
            format!("[manager]\n{manager}\n[cloud]\nkind = \"openstack\"\nmanagement_network = \"n\"\nrequest_timeout = \"{timeout}\"")
        };
        for timeout in ["30ms", "999ms"] {
            let err = Config::parse(&text(timeout, "")).unwrap_err().to_string();
            assert!(
                err.contains("cloud.request_timeout must be at least 1s")
                    && err.contains(&format!("got {timeout}"))
                    && err.contains("allow_short_intervals"),
                "{timeout}: {err}"
            );
            let lifted = text(timeout, "allow_short_intervals = true");
            assert!(Config::parse(&lifted).is_ok(), "{lifted}");
        }
        assert!(Config::parse(&text("1s", "")).is_ok());
        // Nothing lifts the zero.
        let err = Config::parse(&text("0s", "allow_short_intervals = true"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud.request_timeout must be positive"),
            "{err}"
        );
    }

    /// Server names are the prefix and a 36-character instance id, and
    /// Nova refuses a name past 255 characters on every boot: a prefix that
    /// leaves no room for the id is refused at load, by name.
    #[test]
    fn a_server_name_prefix_nova_names_cannot_hold_is_refused() {
        let text = |prefix: &str| {
            format!(
                r#"
                [cloud]
                kind = "openstack"
                management_network = "service-net"
                server_name_prefix = {prefix:?}
                "#
            )
        };
        let err = Config::parse(&text(&"p".repeat(220)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud.server_name_prefix is 220 characters long; at most 219 fit"),
            "{err}"
        );
        // Characters, not bytes, as Nova counts them.
        assert!(Config::parse(&text(&"é".repeat(219))).is_ok());
    }
    /// A unit typo (`1ms` meant as `1m`) in an interval that paces cloud
    /// calls hammers the cloud: each is refused below its minimum, by key,
    /// value and minimum; the embedded cloud's minimums shrink with its
    /// time_scale (its simulated seconds pass faster), and a test cloud may
    /// lift them explicitly.
    #[test]
    fn intervals_below_their_minimum_are_refused() {
        let openstack = |manager: &str| {
            format!("[manager]\n{manager}\n[cloud]\nkind = \"openstack\"\nmanagement_network = \"net\"\n")
        };
        for (key, value, minimum) in [
            ("poll_interval", "1ms", "1s"),
            ("replenish_interval", "500ms", "1s"),
            ("reconcile_interval", "5s", "10s"),
            ("quota_poll_interval", "2s", "10s"),
        ] {
            let err = Config::parse(&openstack(&format!("{key} = \"{value}\"")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("manager.{key} must be at least {minimum}"))
                    && err.contains(&format!("got {value}"))
                    && err.contains("allow_short_intervals"),
                "{err}"
            );
            let lifted = format!("{key} = \"{value}\"\nallow_short_intervals = true");
            assert!(Config::parse(&openstack(&lifted)).is_ok(), "{lifted}");
            assert!(Config::parse(&openstack(&format!("{key} = \"{minimum}\""))).is_ok());
        }
        let embedded = |manager: &str, time_scale: f64| {
            format!(
                "[manager]\n{manager}\n[cloud]\nkind = \"embedded\"\ntime_scale = {time_scale}\n"
            )
        };
        // The demo's 20x: 1 s is 50 ms.
        let err = Config::parse(&embedded("poll_interval = \"1ms\"", 0.05))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manager.poll_interval must be at least 50ms (1s at time_scale 0.05)")
                && err.contains("got 1ms"),
            "{err}"
        );
        assert!(Config::parse(&embedded(
            "poll_interval = \"50ms\"\nreconcile_interval = \"500ms\"",
            0.05
        ))
        .is_ok());
        // A slower than real cloud needs no longer intervals.
        assert!(Config::parse(&embedded("", 100.0)).is_ok());
        assert!(Config::parse(&embedded("poll_interval = \"500ms\"", 1.0)).is_err());
    }
}
