//! warmpoold's configuration file (TOML) and its defaults.
//!
//! Durations are humantime strings ("30s", "15m"). Unknown fields are errors,
//! so a typo never silently falls back to a default.

use pool_manager::model::{PoolKey, PoolSpec, Target};
use pool_manager::ManagerSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where `/metrics` is served by default: loopback only, like gRPC.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_DATA_DIR: &str = "warmpool-data";
/// The embedded cloud runs 20x faster than a real one, so the demo fills in seconds.
pub const DEFAULT_EMBEDDED_TIME_SCALE: f64 = 0.05;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`, plain HTTP).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Directory of the sled store; created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub manager: ManagerConfig,
    #[serde(default)]
    pub cloud: CloudConfig,
    /// Pools created at start when the store does not have them yet. A pool
    /// already in the store keeps its stored settings (the API may have changed them).
    #[serde(default = "demo_pools")]
    pub pools: Vec<PoolConfig>,
    /// How long shutdown waits for in-flight RPCs before stopping anyway.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default")
}
fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN.parse().expect("valid default")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// How often server, volume and port status is polled while waiting.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often each pool is re-checked without a nudge.
    #[serde(with = "humantime_serde")]
    pub replenish_interval: Duration,
    /// How often the store is reconciled with the cloud.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Boots in flight per pool, at most.
    pub max_concurrent_boots: u32,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        let d = ManagerSettings::default();
        Self {
            poll_interval: d.poll_interval,
            replenish_interval: d.replenish_interval,
            reconcile_interval: d.reconcile_interval,
            max_concurrent_boots: d.max_concurrent_boots,
        }
    }
}

impl ManagerConfig {
    pub fn settings(&self) -> ManagerSettings {
        ManagerSettings {
            poll_interval: self.poll_interval,
            replenish_interval: self.replenish_interval,
            reconcile_interval: self.reconcile_interval,
            max_concurrent_boots: self.max_concurrent_boots,
            ..ManagerSettings::default()
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CloudConfig {
    /// The in-process simulated cloud (cloudsim): no OpenStack needed.
    Embedded {
        /// Multiplies every simulated latency; 1.0 is real-cloud speed.
        #[serde(default = "default_time_scale")]
        time_scale: f64,
        /// Simulated IOPS throttling (boots 3-5x slower).
        #[serde(default)]
        iops_throttled: bool,
        /// Seed of the simulator's randomness.
        #[serde(default)]
        seed: u64,
    },
}

fn default_time_scale() -> f64 {
    DEFAULT_EMBEDDED_TIME_SCALE
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

#[derive(Clone, Debug, Deserialize)]
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
    #[serde(default = "default_boot_timeout", with = "humantime_serde")]
    pub boot_timeout: Duration,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub paused: bool,
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
        }
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
    };
    vec![
        pool("db.small", "az1", 3),
        pool("db.small", "az2", 2),
        pool("db.medium", "az1", 2),
    ]
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config is valid")
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message for a bad value says what is wrong ("expected a
            // duration") but not where; name the key and the line.
            let (key, line) = match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    (key_at(text, span.start), format!(" (line {line})"))
                }
                None => (None, String::new()),
            };
            ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message: key.map(|k| format!("{k}: ")).unwrap_or_default() + e.message() + &line,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for pool in &self.pools {
            if !seen.insert(pool.key()) {
                return Err(ConfigError::Invalid(format!(
                    "pool {} is declared twice",
                    pool.key()
                )));
            }
            pool.spec().validate().map_err(|(field, message)| {
                ConfigError::Invalid(format!("pool {}: {field}: {message}", pool.key()))
            })?;
        }
        if self.metrics_listen == self.listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "metrics_listen and listen are both {}; give metrics its own address",
                self.listen
            )));
        }
        if self.manager.max_concurrent_boots == 0 {
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
        let CloudConfig::Embedded { time_scale, .. } = self.cloud;
        if !(time_scale.is_finite() && time_scale > 0.0) {
            return Err(ConfigError::Invalid(
                "cloud.time_scale must be a positive number".into(),
            ));
        }
        Ok(())
    }
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

    #[test]
    fn empty_config_runs_the_embedded_demo() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.metrics_listen, default_metrics_listen());
        assert!(matches!(config.cloud, CloudConfig::Embedded { .. }));
        assert_eq!(config.pools.len(), 3);
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
            poll_interval = "500ms"
            replenish_interval = "2s"
            reconcile_interval = "1m"
            max_concurrent_boots = 8
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
        assert_eq!(config.manager.poll_interval, Duration::from_millis(500));
        assert_eq!(config.metrics_listen, "0.0.0.0:6001".parse().unwrap());
        assert_eq!(config.pools[0].spec().effective_target(), 2);
        assert_eq!(config.pools[0].max_age, Some(Duration::from_secs(86400)));
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
        assert!(err.contains("openstack"), "{err}");
    }
}
