//! `warmpoold check-cloud`: is the configured OpenStack usable for the
//! configured pools? Credentials, flavors, image(s), management networks,
//! Nova's and Cinder's availability zones and compute quota headroom, one
//! line per check.
//!
//! The daemon runs the same checks before serving (see [`crate::start`]):
//! anything but quota failing stops start-up, because a wrong password,
//! flavor, image or network never heals by itself; a quota shortfall is
//! logged and the pools fill as far as the quota lets them. It checks the
//! pools it will serve: a pool its store has, with the stored settings
//! (changed through the API, say to a new image), and a configured pool the
//! store does not have yet. The command, which cannot open a store a
//! running daemon holds, checks the configured pools.

use crate::config::{Config, OpenStackConfig, PoolConfig};
use pool_manager::cloud::{Cloud, CloudError, ServerStatus};
use pool_manager::model::{PoolKey, PoolSpec};
use pool_manager::openstack::{missing_compute_zone, OpenStackCloud};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Config,
    Auth,
    Flavor,
    Image,
    Network,
    /// Each pool's AZ is one of Nova's.
    Zone,
    /// Cinder reachable, and a zone of it for each pool AZ's volumes.
    Volume,
    Quota,
}

impl CheckKind {
    fn label(self) -> &'static str {
        match self {
            CheckKind::Config => "cloud config",
            CheckKind::Auth => "auth",
            CheckKind::Flavor => "flavor",
            CheckKind::Image => "image",
            CheckKind::Network => "network",
            CheckKind::Zone => "zones",
            CheckKind::Volume => "volumes",
            CheckKind::Quota => "quota",
        }
    }
}

/// One printed line: `auth: ok (user pool in project service, Nova 2.101)`
/// or `image: no image named 'mysql-8.0' is visible to ...`.
#[derive(Clone, Debug)]
pub struct Check {
    pub kind: CheckKind,
    pub ok: bool,
    pub message: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            write!(f, "{}: ok ({})", self.kind.label(), self.message)
        } else {
            write!(f, "{}: {}", self.kind.label(), self.message)
        }
    }
}

/// Every check run, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Failures that make the cloud unusable (everything but quota).
    pub fn blocking_failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| !c.ok && c.kind != CheckKind::Quota)
            .collect()
    }

    fn ok(&mut self, kind: CheckKind, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: true,
            message: message.into(),
        });
    }

    fn fail(&mut self, kind: CheckKind, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: false,
            message: message.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

/// The message of a cloud error without its class prefix, and without a
/// leading "auth: " the driver adds to login failures.
fn reason(e: &CloudError) -> String {
    let text = match e {
        CloudError::Throttled { message, .. } => format!("throttled: {message}"),
        CloudError::QuotaExceeded(m) | CloudError::Fatal(m) => m.clone(),
        CloudError::Conflict(m) => m.clone(),
        CloudError::NotFound(m) => m.clone(),
        CloudError::Transient(m) => format!("cloud unreachable or failing: {m}"),
    };
    text.strip_prefix("auth: ")
        .map(str::to_owned)
        .unwrap_or(text)
}

/// A pool as the checks see it: where it boots, what, and how many at least.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedPool {
    pub key: PoolKey,
    pub image: String,
    pub min_ready: u32,
}

impl CheckedPool {
    pub fn new(key: PoolKey, spec: &PoolSpec) -> Self {
        Self {
            key,
            image: spec.image.clone(),
            min_ready: spec.min_ready,
        }
    }
}

impl From<&PoolConfig> for CheckedPool {
    fn from(pool: &PoolConfig) -> Self {
        Self::new(pool.key(), &pool.spec())
    }
}

/// Runs every check against the cloud `config` names, for the configured
/// pools. Returns the report, and the connected cloud when the login worked.
pub async fn check(config: &Config, os: &OpenStackConfig) -> (Report, Option<OpenStackCloud>) {
    let pools: Vec<CheckedPool> = config.pools.iter().map(CheckedPool::from).collect();
    check_pools(os, &pools).await
}

/// Runs every check against the cloud `os` names, for `pools`. Returns the
/// report, and the connected cloud when the login worked (the daemon keeps
/// it).
pub async fn check_pools(
    os: &OpenStackConfig,
    pools: &[CheckedPool],
) -> (Report, Option<OpenStackCloud>) {
    let mut report = Report::default();
    let settings = match os.settings() {
        Ok(s) => s,
        Err(e) => {
            report.fail(CheckKind::Config, e.to_string());
            return (report, None);
        }
    };
    let cloud = match OpenStackCloud::connect(settings).await {
        Ok(cloud) => {
            report.ok(
                CheckKind::Auth,
                format!(
                    "{}, Nova microversion {}",
                    cloud.identity(),
                    cloud.compute_microversion()
                ),
            );
            cloud
        }
        Err(e) => {
            report.fail(CheckKind::Auth, reason(&e));
            return (report, None);
        }
    };

    let mut flavors = BTreeMap::new();
    let names: BTreeSet<&str> = pools.iter().map(|p| p.key.flavor.as_str()).collect();
    for name in names {
        match cloud.flavor(name).await {
            Ok(f) => {
                report.ok(
                    CheckKind::Flavor,
                    format!("{name}: {} vCPU, {} MiB RAM", f.vcpus, f.ram),
                );
                flavors.insert(name.to_owned(), f);
            }
            Err(e) => report.fail(CheckKind::Flavor, reason(&e)),
        }
    }

    let images: BTreeSet<&str> = match &cloud.settings().image {
        Some(image) => BTreeSet::from([image.as_str()]),
        None => pools.iter().map(|p| p.image.as_str()).collect(),
    };
    for image in images {
        match cloud.image_id(image).await {
            Ok(id) if id == image => report.ok(CheckKind::Image, image),
            Ok(id) => report.ok(CheckKind::Image, format!("{image} = {id}")),
            Err(e) => report.fail(CheckKind::Image, reason(&e)),
        }
    }

    let mut networks_found = true;
    for network in cloud.settings().management_networks() {
        match cloud.network(network).await {
            Ok(n) => report.ok(
                CheckKind::Network,
                format!("{} = {}", n.name.as_deref().unwrap_or(network), n.id),
            ),
            Err(e) => {
                networks_found = false;
                report.fail(CheckKind::Network, reason(&e))
            }
        }
    }

    zone_check(pools, &cloud, &mut report).await;
    volume_check(pools, &cloud, &mut report).await;
    quota_check(pools, &cloud, &flavors, networks_found, &mut report).await;
    (report, Some(cloud))
}

/// The availability zones of the pools.
fn pool_azs(pools: &[CheckedPool]) -> BTreeSet<&str> {
    pools
        .iter()
        .map(|p| p.key.availability_zone.as_str())
        .collect()
}

/// Whether each pool's availability zone is one Nova boots servers in.
async fn zone_check(pools: &[CheckedPool], cloud: &OpenStackCloud, report: &mut Report) {
    let zones = match cloud.compute_zones().await {
        Ok(zones) => zones,
        Err(e) => return report.fail(CheckKind::Zone, format!("Nova: {}", reason(&e))),
    };
    let missing: Vec<String> = pool_azs(pools)
        .into_iter()
        .filter_map(|az| missing_compute_zone(az, &zones))
        .collect();
    if missing.is_empty() {
        report.ok(CheckKind::Zone, format!("Nova zones: {}", zones.join(", ")));
    }
    for problem in missing {
        report.fail(CheckKind::Zone, problem);
    }
}

/// Whether Cinder answers, and has the zone each pool AZ's new volumes are
/// created in: every purchase with a new volume needs both, and a Cinder
/// whose zones are not named like Nova's (a single "nova") is common.
async fn volume_check(pools: &[CheckedPool], cloud: &OpenStackCloud, report: &mut Report) {
    let zones = match cloud.volume_zones().await {
        Ok(zones) => zones,
        Err(e) => return report.fail(CheckKind::Volume, format!("Cinder: {}", reason(&e))),
    };
    let mut missing = false;
    for az in pool_azs(pools) {
        let zone = cloud.volume_az(az);
        if !zones.contains(&zone) {
            missing = true;
            report.fail(
                CheckKind::Volume,
                format!(
                    "volumes of pools in {az} are created in Cinder zone '{zone}', which Cinder does not have (its zones: {}); set volume_availability_zone for {az}",
                    zones.join(", ")
                ),
            );
        }
    }
    if !missing {
        report.ok(
            CheckKind::Volume,
            format!("Cinder zones: {}", zones.join(", ")),
        );
    }
}

/// Whether the compute quota admits every pool's `min_ready` servers, net
/// of the pool's servers that could still be handed out (every server
/// counts as used).
async fn quota_check(
    pools: &[CheckedPool],
    cloud: &OpenStackCloud,
    flavors: &BTreeMap<String, pool_manager::openstack::nova::Flavor>,
    networks_found: bool,
    report: &mut Report,
) {
    let limits = match cloud.limits().await {
        Ok(l) => l,
        Err(e) => return report.fail(CheckKind::Quota, reason(&e)),
    };
    let existing = match cloud.list_pool_servers().await {
        Ok(servers) => servers,
        // Listing the pools' servers reads their management networks: the
        // network check's error again would read as a second problem.
        Err(_) if !networks_found => {
            return report.fail(
                CheckKind::Quota,
                "not checked: listing the pool servers needs the management network above",
            )
        }
        Err(e) => return report.fail(CheckKind::Quota, reason(&e)),
    };
    // More servers of a flavor to boot, per flavor.
    let mut more: BTreeMap<&str, u64> = BTreeMap::new();
    for pool in pools {
        let key = pool.key.to_string();
        // Supply is what could still be handed out: a server a purchase
        // holds keeps its pool's tag, and an ERROR server is deleted, not
        // sold (as is one being deleted); all use quota all the same.
        let have = existing
            .iter()
            .filter(|s| s.metadata.get(pool_manager::cloud::META_POOL) == Some(&key))
            .filter(|s| !s.holds_a_tenant_volume())
            .filter(|s| s.status != ServerStatus::Error && !s.is_going())
            .count() as u64;
        let need = u64::from(pool.min_ready).saturating_sub(have);
        if need > 0 && flavors.contains_key(&pool.key.flavor) {
            *more.entry(pool.key.flavor.as_str()).or_default() += need;
        }
    }
    let mut demand = [0u64; 3];
    for (name, count) in &more {
        let f = &flavors[*name];
        demand[0] += count;
        demand[1] += count * f.vcpus;
        demand[2] += count * f.ram;
    }
    // A flavor no server of which fits the whole quota never boots,
    // whatever is released: named first, as the quota to raise.
    let beyond = pools
        .iter()
        .filter_map(|pool| flavors.get(&pool.key.flavor))
        .map(|flavor| limits.headroom(flavor))
        .filter(|headroom| headroom.beyond_quota)
        .filter_map(|headroom| headroom.limited_by)
        .collect::<std::collections::BTreeSet<_>>();
    let mut short: Vec<String> = beyond.into_iter().collect();
    short.extend(
        limits
            .quotas()
            .iter()
            .zip(demand)
            .filter(|(q, need)| q.max >= 0 && q.free() < *need)
            .map(|(q, _)| {
                let unit = q.unit();
                format!("{} {}{unit} of {}{unit} used", q.resource, q.used, q.max)
            }),
    );
    let wanted = if more.is_empty() {
        "no more servers".to_owned()
    } else {
        more.iter()
            .map(|(f, n)| format!("{n} more {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let used = limits
        .quotas()
        .iter()
        .map(|q| {
            if q.max < 0 {
                format!("{} {} used (unlimited)", q.resource, q.used)
            } else {
                format!("{} {} of {}", q.resource, q.used, q.max)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if short.is_empty() {
        report.ok(
            CheckKind::Quota,
            format!("{used}; pools need room for {wanted}"),
        );
    } else {
        report.fail(
            CheckKind::Quota,
            format!("{}; pools need room for {wanted}", short.join(", ")),
        );
    }
}
