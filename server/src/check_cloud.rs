//! `warmpoold check-cloud`: is the configured OpenStack usable for the
//! configured pools? Credentials, flavors, image(s), management networks,
//! the key pair and security groups pool servers (and tenants' ports) get, Nova's and Cinder's
//! availability zones and compute quota headroom, one line per check; and,
//! informing only, each flavor's disk IOPS limit for the lead-time prior.
//!
//! The daemon runs the same checks before serving (see [`crate::start`]),
//! for the pools it will serve: each pool its store has, with the stored
//! settings (changed through the API, say to a new image), and each
//! configured pool the store does not have yet. A failure every pool
//! shares (credentials, a service, the management network, the one image
//! of every pool) stops start-up: it never heals by itself and no pool
//! could work. (A cloud that did not answer, failed or throttled a call
//! may heal: start-up checks again for a while first, [`Report::passing`].) So does one of a configured pool the store does not have
//! yet: the config file is the operator's input, fixed before it is used.
//! A failure of stored pools only (a flavor retired, a zone closed for
//! patching since the pool was created) does not: every other pool and
//! tenant would lose the service, and deleting the pool takes a running
//! daemon. That pool is marked degraded instead ([`Report::stale_pools`]).
//! A quota shortfall is logged and the pools fill as far as the quota
//! lets them; a zone override no pool is in is logged too. The command
//! checks the same pools, reading the store when no running daemon holds
//! it ([`check`]): a pool created through the API whose flavor was
//! retired since is reported, not "all ok". It also compares the cloud
//! the store serves with the configured one, as the daemon's start does
//! (`PoolManager::claim_store`): a store of another cloud fails the report.
//!
//! The embedded cloud's start-up check is [`check_boot_specs`], judged
//! the same way.

use crate::config::{Config, ConfigError, OpenStackConfig, PoolConfig};
use pool_manager::cloud::{
    some_names, Cloud, CloudChange, CloudError, CloudIdentity, CloudResult, FlavorIops,
    ServerStatus, EXTRA_SPEC_READ_IOPS, EXTRA_SPEC_TOTAL_IOPS, EXTRA_SPEC_WRITE_IOPS,
    PORTS_PER_SERVER,
};
use pool_manager::events::MarkProof;
use pool_manager::model::{PoolKey, PoolRecord, PoolSpec};
use pool_manager::openstack::neutron::{Named, SecurityGroupRule};
use pool_manager::openstack::{
    missing_compute_zone, volume_zone_problem, ConnectError, OpenStackCloud, OpenStackSettings,
};
use pool_manager::store::{StoreError, StoreRepair};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Config,
    Auth,
    Flavor,
    /// Each pool flavor's disk IOPS limit, as warmpoold reads it for the
    /// lead-time prior, and the extra spec that sets it, or why there is
    /// none. Informs; never fails the report: a flavor without front-end
    /// QoS is the usual case, and the prior works without the limit.
    FlavorIops,
    Image,
    Network,
    /// `key_name` is a key pair of the user warmpool logs in as.
    KeyPair,
    /// Each of `security_groups` and `tenant_port_security_groups` is one
    /// group of warmpool's project; which groups tenant ports get.
    SecurityGroup,
    /// The management ports' groups (`security_groups`, or the default
    /// group where unset) let pool servers reach one another's mysqld.
    /// Warns; never fails the report: nothing stops working. It concerns
    /// every pool, so it is no failure of "no pool yet" either (whose
    /// claim an unread store qualifies).
    ManagementGroup,
    /// Each pool's AZ is one of Nova's.
    Zone,
    /// Cinder reachable, and a zone of it for each pool AZ's volumes.
    Volume,
    Quota,
    /// A `[cloud.availability_zones.<az>]` of a zone no pool is in (a
    /// misspelt zone?). Warns; never fails the report.
    ZoneOverride,
    /// Which pools were checked: the store's, or the config's alone when
    /// there is no store yet or it cannot be read. A store warmpoold would
    /// not start on (damaged, a pool record it cannot read, a data dir it
    /// may not look into) fails the report.
    Store,
    /// The store is held by a running warmpoold, so the config's pools
    /// alone were checked. Informs; never fails the report: the daemon
    /// checked its stored pools when it started.
    StoreInUse,
    /// The check runs as root and the data dir is another user's: the
    /// store is left unopened (sled rewrites its files as whoever opens
    /// it, and root's would lock its owner's warmpoold out), so the
    /// config's pools alone were checked. Informs, as [`Self::StoreInUse`]
    /// does: the daemon checks its stored pools at every start.
    StoreOfAnotherUser,
    /// The cloud the store serves, as it records it, against the configured
    /// one: warmpoold refuses to start on a store of another
    /// (`ManagerError::CloudChanged`).
    StoreCloud,
    /// The store was not read (held by a running warmpoold, left unopened
    /// by root, failed), so its cloud was not compared. Informs, as those
    /// store lines do: a pass then says nothing of the store's cloud.
    StoreCloudUnread,
    /// A pool's flavor, zone, volume zone and image, asked of a cloud as
    /// one ([`check_boot_specs`]).
    Pool,
}

impl CheckKind {
    /// What shows a stored pool's failure of this kind mended, ending its
    /// mark ([`pool_manager::PoolManager::mark_unusable`]): the pool's boot
    /// spec check passing again (`Cloud::check_boot_spec` looks at its
    /// flavor, compute zone, Cinder zone and image; the embedded cloud's
    /// whole start-up check is that one), and for a management network,
    /// which it does not look at, a Ready boot after it.
    pub fn mark_proof(self) -> MarkProof {
        match self {
            CheckKind::Flavor
            | CheckKind::Image
            | CheckKind::Zone
            | CheckKind::Volume
            | CheckKind::Pool => MarkProof::Recheck,
            _ => MarkProof::RecheckAndBoot,
        }
    }

    fn label(self) -> &'static str {
        match self {
            CheckKind::Config => "cloud config",
            CheckKind::Auth => "auth",
            CheckKind::Flavor => "flavor",
            CheckKind::FlavorIops => "flavor iops",
            CheckKind::Image => "image",
            CheckKind::Network => "network",
            CheckKind::KeyPair => "key pair",
            CheckKind::SecurityGroup | CheckKind::ManagementGroup => "security group",
            CheckKind::Zone => "zones",
            CheckKind::Volume => "volumes",
            CheckKind::Quota => "quota",
            CheckKind::ZoneOverride => "zone overrides",
            CheckKind::Store | CheckKind::StoreInUse | CheckKind::StoreOfAnotherUser => "store",
            CheckKind::StoreCloud | CheckKind::StoreCloudUnread => "store cloud",
            CheckKind::Pool => "pool",
        }
    }
}

/// The pools a failed check concerns, when not every pool. Empty: no pool
/// yet, as for a setting of a zone no pool is in: a warning, which stops
/// no start-up, marks no pool and fails no check (a pool created there
/// later would meet it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Pools the store has: a failure of these alone does not stop
    /// start-up.
    pub stored: Vec<PoolKey>,
    /// Pools only the config file declares (start-up would create them).
    pub configured: Vec<PoolKey>,
}

impl Scope {
    fn of<'a>(pools: impl IntoIterator<Item = &'a CheckedPool>) -> Self {
        let mut scope = Scope::default();
        for pool in pools {
            let list = if pool.stored {
                &mut scope.stored
            } else {
                &mut scope.configured
            };
            if !list.contains(&pool.key) {
                list.push(pool.key.clone());
            }
        }
        scope
    }

    /// Whether it concerns no pool yet.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.configured.is_empty()
    }
}

fn keys(pools: &[PoolKey]) -> String {
    pools
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an operator does about a stored pool the cloud no longer serves,
/// and what ends its mark (`proof`).
pub fn stale_pool_remedy(key: &PoolKey, proof: MarkProof) -> String {
    let ends = match proof {
        MarkProof::Recheck => {
            "warmpoold checks the pool again after each pause, of up to 5 min, and clears the mark once the check passes"
        }
        MarkProof::RecheckAndBoot => {
            "warmpoold checks the pool again after each pause, of up to 5 min; once the check passes, the pool's next Ready boot clears the mark (one at its target boots one server for it)"
        }
    };
    format!(
        "fix the cloud ({ends}), or delete the pool: `warmpoolctl pools delete {} {}`",
        key.flavor, key.availability_zone
    )
}

/// A stored pool its own failures leave unusable ([`Report::stale_pools`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePool {
    /// Each failure, as its line says it.
    pub problems: Vec<String>,
    /// What shows them all mended: a boot too if one of them asks for it.
    pub proof: MarkProof,
}

/// One printed line: `auth: ok (user pool in project service, region RegionOne, Nova microversion 2.79)`
/// or `image: no image named 'mysql-8.0' is visible to ...`; a failure of
/// some pools only names them and what start-up does about them.
#[derive(Clone, Debug)]
pub struct Check {
    pub kind: CheckKind,
    pub ok: bool,
    pub message: String,
    /// The pools a failure concerns; `None`: every pool.
    pub scope: Option<Scope>,
    /// A failure the cloud may get past by itself: it did not answer,
    /// failed (5xx, an answer cut short) or throttled the call
    /// ([`Report::passing`]).
    pub passing: Option<Passing>,
}

/// How a failure the cloud may get past by itself asks to be tried again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Passing {
    /// The wait the cloud named (Retry-After), if it throttled.
    pub retry_after: Option<std::time::Duration>,
}

impl Passing {
    /// Of `e`, if it is a failure of the moment: a cloud that did not
    /// answer, failed or throttled. Not a refusal, a missing object or a
    /// quota, which a new try meets again.
    pub fn of(e: &CloudError) -> Option<Self> {
        match e {
            CloudError::Transient(_) => Some(Passing::default()),
            CloudError::Throttled { retry_after, .. } => Some(Passing {
                retry_after: *retry_after,
            }),
            _ => None,
        }
    }
}

impl Check {
    /// Whether this failure stops warmpoold's start-up: quota, zone
    /// override, management group, flavor IOPS and store lines never do; a failure
    /// does unless it concerns only pools the store has, or no pool yet.
    pub fn stops_start_up(&self) -> bool {
        if self.ok
            || matches!(
                self.kind,
                CheckKind::Quota
                    | CheckKind::ZoneOverride
                    | CheckKind::ManagementGroup
                    | CheckKind::FlavorIops
                    | CheckKind::Store
                    | CheckKind::StoreInUse
                    | CheckKind::StoreOfAnotherUser
                    | CheckKind::StoreCloudUnread
            )
        {
            return false;
        }
        self.scope.as_ref().is_none_or(|s| !s.configured.is_empty())
    }

    /// The line as start-up's refusal gives it: a configured pool's
    /// failure says it is the config file's.
    pub fn refusal_line(&self) -> String {
        match self.scope.as_ref() {
            Some(scope) if !scope.configured.is_empty() => format!(
                "{} [{} declared in the config file and not in the store yet: fix the config file or the cloud; nothing was created]",
                self.problem(),
                keys(&scope.configured)
            ),
            _ => self.to_string(),
        }
    }

    /// The line without what start-up does about it.
    pub fn problem(&self) -> String {
        format!("{}: {}", self.kind.label(), self.message)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            return write!(f, "{}: ok ({})", self.kind.label(), self.message);
        }
        write!(f, "{}", self.problem())?;
        // Only a failure that does not stop start-up says what start-up
        // does instead; one that stops it is the report's plain line.
        match &self.scope {
            Some(scope)
                if self.kind != CheckKind::Quota
                    && !scope.stored.is_empty()
                    && !self.stops_start_up() =>
            {
                let remedies: Vec<String> = scope
                    .stored
                    .iter()
                    .map(|key| stale_pool_remedy(key, self.kind.mark_proof()))
                    .collect();
                write!(
                    f,
                    " [stored pool {}: warmpoold starts, serves the other pools and shows it degraded; {}]",
                    keys(&scope.stored),
                    remedies.join("; ")
                )
            }
            _ => Ok(()),
        }
    }
}

/// Every check run, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Keystone refused the credentials (the auth line's failure): no
    /// wait mends them, and each login tried counts towards Keystone's
    /// lockout, so the daemon's start-up waits for a mended clouds.yaml
    /// rather than exiting to be restarted.
    pub credentials_refused: bool,
    /// The cloud config (clouds.yaml, secure.yaml, the `OS_*` variables)
    /// could not be taken for what only an operator mends
    /// ([`ConfigError::needs_an_operator`]): the config line's failure, but
    /// for a file's read that may pass (a disk's I/O error).
    pub cloud_config_refused: bool,
}

impl Report {
    /// Whether every check passed (the lines of a store a running daemon
    /// holds or root left unopened, of a store's cloud not compared, of
    /// zone overrides, management groups and flavor IOPS limits, and
    /// failures of no pool yet only inform).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| {
            c.ok || matches!(
                c.kind,
                CheckKind::StoreInUse
                    | CheckKind::StoreOfAnotherUser
                    | CheckKind::StoreCloudUnread
                    | CheckKind::ZoneOverride
                    | CheckKind::ManagementGroup
                    | CheckKind::FlavorIops
            ) || c.scope.as_ref().is_some_and(Scope::is_empty)
        })
    }

    /// Failures that stop start-up ([`Check::stops_start_up`]).
    pub fn start_up_refusals(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.stops_start_up()).collect()
    }

    /// The failures that stop start-up as its refusal gives them, one
    /// line each ([`Check::refusal_line`]); `None` when start-up goes on.
    pub fn refusal(&self) -> Option<String> {
        let lines: Vec<String> = self
            .start_up_refusals()
            .iter()
            .map(|c| c.refusal_line())
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }

    /// Whether every failure that stops start-up may pass by itself (the
    /// cloud did not answer, failed or throttled), so that start-up checks
    /// again rather than exits; the longest Retry-After among them. `None`
    /// when start-up goes on, or when one of them never heals (a missing
    /// flavor, image or network, refused credentials or policy, a config
    /// it cannot take): that one stops it at once.
    pub fn passing(&self) -> Option<Passing> {
        let refusals = self.start_up_refusals();
        if refusals.is_empty() || self.credentials_refused || self.cloud_config_refused {
            return None;
        }
        refusals
            .iter()
            .map(|c| c.passing)
            .try_fold(Passing::default(), |longest, passing| {
                let passing = passing?;
                Some(Passing {
                    retry_after: longest.retry_after.max(passing.retry_after),
                })
            })
    }

    /// The stored pools failures of their own leave unusable, each with
    /// its problems: start-up goes on and marks them degraded.
    pub fn stale_pools(&self) -> BTreeMap<PoolKey, StalePool> {
        let mut stale: BTreeMap<PoolKey, StalePool> = BTreeMap::new();
        for check in &self.checks {
            if check.ok || check.stops_start_up() || check.kind == CheckKind::Quota {
                continue;
            }
            let proof = check.kind.mark_proof();
            for key in check.scope.iter().flat_map(|s| &s.stored) {
                let pool = stale.entry(key.clone()).or_insert(StalePool {
                    problems: Vec::new(),
                    proof,
                });
                pool.problems.push(check.problem());
                if proof == MarkProof::RecheckAndBoot {
                    pool.proof = proof;
                }
            }
        }
        stale
    }

    fn ok(&mut self, kind: CheckKind, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: true,
            message: message.into(),
            scope: None,
            passing: None,
        });
    }

    fn fail(&mut self, kind: CheckKind, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: false,
            message: message.into(),
            scope: None,
            passing: None,
        });
    }

    /// A failure of every pool for the cloud's error `e`: one that may
    /// pass ([`Passing::of`]) says so.
    fn fail_on(&mut self, kind: CheckKind, e: &CloudError, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: false,
            message: message.into(),
            scope: None,
            passing: Passing::of(e),
        });
    }

    /// A failure of no pool yet: a warning ([`Scope`]).
    fn warn(&mut self, kind: CheckKind, message: impl Into<String>) {
        self.checks.push(Check {
            kind,
            ok: false,
            message: message.into(),
            scope: Some(Scope::default()),
            passing: None,
        });
    }

    /// A warning of every pool's management ports
    /// ([`CheckKind::ManagementGroup`]).
    fn warn_management_group(&mut self, message: impl Into<String>) {
        self.fail(CheckKind::ManagementGroup, message);
    }

    /// A failure of `pools` only.
    fn fail_pools<'a>(
        &mut self,
        kind: CheckKind,
        message: impl Into<String>,
        pools: impl IntoIterator<Item = &'a CheckedPool>,
    ) {
        self.checks.push(Check {
            kind,
            ok: false,
            message: message.into(),
            scope: Some(Scope::of(pools)),
            passing: None,
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
        CloudError::QuotaExceeded(m)
        | CloudError::Fatal(m)
        | CloudError::LeftToReclaim(m)
        | CloudError::PolicyRefused(m) => m.clone(),
        CloudError::Conflict(m) => m.clone(),
        CloudError::NotFound(m) => m.clone(),
        CloudError::Transient(m) => format!("cloud unreachable or failing: {m}"),
    };
    text.strip_prefix("auth: ")
        .map(str::to_owned)
        .unwrap_or(text)
}

/// `e`'s reason, and when the cloud has nothing of the name looked up, the
/// names it has (`listed`, awaited only then), as `what`: a misspelt
/// name is seen at a glance. A listing that fails adds nothing.
async fn reason_naming(
    e: &CloudError,
    what: &str,
    listed: impl std::future::Future<Output = CloudResult<Vec<String>>>,
) -> String {
    let reason = reason(e);
    if !matches!(e, CloudError::NotFound(_)) {
        return reason;
    }
    match listed.await {
        Ok(names) => format!("{reason} ({what}: {})", some_names(&names)),
        Err(_) => reason,
    }
}

/// Whether a failed lookup of a flavor or boot spec says something about
/// the resource looked up (it is missing), and so about the pools naming
/// it: a cloud that did not answer, throttled, refused the call or never
/// got it (osauth's catalog and version discovery, a listing paging
/// without end) says nothing of one pool, and is every pool's problem
/// (start-up stops, as for any unreachable service, once checking again
/// did not help). Images and networks
/// are judged by the driver's
/// [`LookupError`](pool_manager::openstack::LookupError), which also tells the
/// lookup's own verdicts (several named so, not active) apart.
fn about_the_resource(e: &CloudError) -> bool {
    matches!(e, CloudError::NotFound(_))
}

/// A pool as the checks see it: where it boots, what, and how many at
/// least, and whether the store has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedPool {
    pub key: PoolKey,
    pub image: String,
    pub min_ready: u32,
    /// Its own flavor disk IOPS limit, which overrides the flavor's
    /// extra specs for its lead-time prior.
    pub iops_limit: Option<u32>,
    /// The highest `min` of its operator windows, when above `min_ready`:
    /// what the pool keeps while that window is open.
    pub window_min: Option<u32>,
    /// The store has it (with these settings); else only the config file
    /// declares it.
    pub stored: bool,
}

impl CheckedPool {
    /// A pool the config file declares and the store does not have.
    pub fn new(key: PoolKey, spec: &PoolSpec) -> Self {
        Self {
            key,
            image: spec.image.clone(),
            min_ready: spec.min_ready,
            iops_limit: spec.iops_limit,
            window_min: spec
                .windows
                .iter()
                .map(|w| w.min)
                .max()
                .filter(|&min| min > spec.min_ready),
            stored: false,
        }
    }

    /// The servers the pool keeps at its peak: its highest window's min,
    /// or `min_ready`.
    pub fn peak(&self) -> u32 {
        self.window_min.unwrap_or(self.min_ready)
    }

    /// A pool the store has, with its stored settings.
    pub fn stored(key: PoolKey, spec: &PoolSpec) -> Self {
        Self {
            stored: true,
            ..Self::new(key, spec)
        }
    }
}

impl From<&PoolConfig> for CheckedPool {
    fn from(pool: &PoolConfig) -> Self {
        Self::new(pool.key(), &pool.spec())
    }
}

/// The pools warmpoold serves, as the checks see them: each one the store
/// has and is not deleting, with its stored settings, and each configured
/// one the store does not have yet (a stored pool keeps its settings).
pub fn pools_to_check(stored: &[PoolRecord], config: &Config) -> Vec<CheckedPool> {
    let mut pools: Vec<CheckedPool> = stored
        .iter()
        .filter(|p| !p.draining)
        .map(|p| CheckedPool::stored(p.key.clone(), &p.spec))
        .collect();
    for pool in &config.pools {
        if !stored.iter().any(|p| p.key == pool.key()) {
            pools.push(pool.into());
        }
    }
    pools
}

/// How long the command waits for the store's lock: a daemon stopping lets
/// go of it at once, a running one never does.
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the command read of the store at `dir`: its pools, the report's
/// line about them, and the cloud it serves.
struct StoreRead {
    pools: Vec<PoolRecord>,
    line: Option<Check>,
    cloud: StoreCloud,
}

impl StoreRead {
    /// Whether there is a store whose pools were not read (a running
    /// daemon holds it, root left another user's unopened, it failed): its
    /// line is a failed one, where no store or a read one passes.
    fn pools_unread(&self) -> bool {
        self.line.as_ref().is_some_and(|line| !line.ok)
    }
}

/// The cloud a store serves, as the command could read it.
enum StoreCloud {
    /// No store in the data dir yet.
    NoStore,
    /// The store was not read (its line says why), nor its cloud.
    Unread(Unread),
    /// What the store records (`None`: no start recorded one yet), or why
    /// that record cannot be read.
    Read(Result<Option<CloudIdentity>, StoreError>),
}

/// Why the cloud a store records was not read.
#[derive(Clone, Copy, Debug)]
enum Unread {
    /// A running warmpoold holds the store ([`CheckKind::StoreInUse`]).
    Held,
    /// Root left another user's store unopened
    /// ([`CheckKind::StoreOfAnotherUser`]).
    Unopened,
    /// Opening or reading it failed (a failed store line).
    Failed,
}

/// The pools in the store at `dir`, and the report's line about them:
/// none when there is no store yet or it has no pool. A store that cannot
/// be read gives no pools and a line saying so: a failed one, unless a
/// running daemon holds it ([`CheckKind::StoreInUse`]) or the check runs
/// as root on another user's ([`CheckKind::StoreOfAnotherUser`]).
async fn stored_pools(dir: &std::path::Path) -> StoreRead {
    stored_pools_as(dir, rustix::process::geteuid().as_raw()).await
}

/// The name `/etc/passwd` gives `uid`, if any (a systemd dynamic user has
/// none there).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The line of a store the check leaves unopened because it runs as root
/// (`euid` 0) and the data dir belongs to another user; `None` otherwise,
/// and when the data dir cannot be looked at (opening it says why).
fn another_users_store(dir: &std::path::Path, euid: u32) -> Option<Check> {
    use std::os::unix::fs::MetadataExt;
    if euid != 0 {
        return None;
    }
    let meta = std::fs::metadata(dir).ok()?;
    let uid = meta.uid();
    if uid == 0 {
        return None;
    }
    Some(another_users_line(dir, uid, user_name(uid)))
}

/// [`another_users_store`]'s line for a data dir of `uid` (`name` in
/// `/etc/passwd`, if any).
fn another_users_line(dir: &std::path::Path, uid: u32, name: Option<String>) -> Check {
    let unopened = "not to root, who runs this check, so it was not opened (sled rewrites a \
         store's files as whoever opens it, and root's would lock its owner's warmpoold out \
         with \"Permission denied\"); only the configured pools were checked, with the \
         config file's settings, and none created through the API";
    let message = match name {
        Some(name) => format!(
            "{} belongs to uid {uid} ({name}), {unopened}. To check its stored pools too, run \
             check-cloud as its owner with the same arguments, while no warmpoold holds it: \
             sudo -u {name} warmpoold check-cloud ...; warmpoold checks them itself at every \
             start",
            dir.display()
        ),
        // A systemd DynamicUser= (deploy/warmpoold.service) has no entry
        // there, and nothing can run as it once its service stops (its
        // credential is gone, its state under root-only /var/lib/private):
        // no command to offer, only where the stored pools were checked.
        None => format!(
            "{} belongs to uid {uid}, which /etc/passwd does not name (a systemd \
             DynamicUser=, likely), {unopened}. Its stored pools are checked by its warmpoold \
             itself at every start: a running one checked them when it started",
            dir.display()
        ),
    };
    Check {
        kind: CheckKind::StoreOfAnotherUser,
        ok: false,
        message,
        scope: None,
        passing: None,
    }
}

/// [`stored_pools`] for a check running as user `euid`.
async fn stored_pools_as(dir: &std::path::Path, euid: u32) -> StoreRead {
    if let Some(line) = another_users_store(dir, euid) {
        return StoreRead {
            pools: Vec::new(),
            line: Some(line),
            cloud: StoreCloud::Unread(Unread::Unopened),
        };
    }
    let unread = |line: Check, why: Unread| StoreRead {
        pools: Vec::new(),
        line: Some(line),
        cloud: StoreCloud::Unread(why),
    };
    // Not created here (`read_pools` makes none): a config whose daemon
    // never ran has no store, and an empty data_dir (made by hand, a fresh
    // volume) must stay empty (a store created by root here could be
    // unreadable to the daemon's user).
    let line = |ok: bool, message: String| Check {
        kind: CheckKind::Store,
        ok,
        message,
        scope: None,
        passing: None,
    };
    let only_configured = "only the configured pools were checked, with the config file's \
         settings (a pool's stored ones, changed through the API, may differ), and none \
         created through the API";
    let shown = dir.display();
    let opening = dir.to_owned();
    // The pools alone: opening the store for service would read every
    // instance and order ever made, for its index.
    // Each read on its own: a pool record this version cannot read must
    // not hide which cloud the store serves.
    let read = tokio::task::spawn_blocking(move || {
        let store = StoreRepair::open(&opening, STORE_LOCK_WAIT)?;
        Ok::<_, StoreError>((store.pools(), store.cloud_identity()))
    })
    .await;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            let message = format!("{shown}: opening it failed ({e}); {only_configured}");
            return unread(line(false, message), Unread::Failed);
        }
    };
    match read {
        Ok((Err(e), cloud)) => {
            let message = format!("{shown}: cannot read its pools ({e}); {only_configured}");
            StoreRead {
                pools: Vec::new(),
                line: Some(line(false, message)),
                cloud: StoreCloud::Read(cloud),
            }
        }
        Ok((Ok(pools), cloud)) if pools.is_empty() => StoreRead {
            pools: Vec::new(),
            line: None,
            cloud: StoreCloud::Read(cloud),
        },
        Ok((Ok(pools), cloud)) => {
            let (deleting, checked): (Vec<&PoolRecord>, Vec<&PoolRecord>) =
                pools.iter().partition(|p| p.draining);
            let names = |list: &[&PoolRecord]| {
                list.iter()
                    .map(|p| p.key.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut message = format!(
                "{shown}: stored pools checked with their stored settings: {}",
                if checked.is_empty() {
                    "none".to_owned()
                } else {
                    names(&checked)
                }
            );
            if !deleting.is_empty() {
                message.push_str(&format!(
                    "; being deleted, not checked: {}",
                    names(&deleting)
                ));
            }
            StoreRead {
                pools,
                line: Some(line(true, message)),
                cloud: StoreCloud::Read(cloud),
            }
        }
        Err(StoreError::NoStore { .. }) => {
            // Said, not left out: a mistyped --data-dir (or the relative
            // default, run from another directory) would read as "all ok".
            let message =
                format!("{shown}: no store here, so only the configured pools were checked");
            StoreRead {
                pools: Vec::new(),
                line: Some(line(true, message)),
                cloud: StoreCloud::NoStore,
            }
        }
        Err(StoreError::Locked { .. }) => {
            let message = format!(
                "{shown} is held by a running warmpoold, so {only_configured}; the daemon checked its stored pools when it started (a failing one shows degraded in `warmpoolctl pools list`)"
            );
            let held = Check {
                kind: CheckKind::StoreInUse,
                ..line(false, message)
            };
            unread(held, Unread::Held)
        }
        // Names the data dir itself.
        Err(e @ StoreError::Inaccessible { .. }) => unread(
            line(false, format!("{e}; {only_configured}")),
            Unread::Failed,
        ),
        Err(e) => {
            let message = format!("{shown}: cannot read its pools ({e}); {only_configured}");
            unread(line(false, message), Unread::Failed)
        }
    }
}

/// The line comparing the cloud the store at `dir` serves with `current`,
/// the configured one, as warmpoold's start does
/// (`PoolManager::claim_store`); when the store could not be read, one
/// saying it was not compared, and why ([`CheckKind::StoreCloudUnread`]):
/// a run that passes says nothing of it then, and a start with this
/// config on a store of another cloud is refused.
/// `region_alone`: the cloud's catalog has the services warmpool calls in
/// its named region alone ([`Cloud::services_in_named_region_alone`]).
fn store_cloud_line(
    dir: &std::path::Path,
    store: &StoreCloud,
    current: &CloudIdentity,
    region_alone: bool,
) -> Check {
    let shown = dir.display();
    let unknown = "so this run says nothing of it: warmpoold refuses to start with this config \
         on a store of another cloud (another [cloud] project or region, another server_tag)";
    let (ok, message) = match store {
        StoreCloud::Unread(why) => {
            let message = match why {
                Unread::Held => format!(
                    "not compared: {shown} is held by a running warmpoold, so the cloud it \
                     records was not read, {unknown}. The running warmpoold compared it with \
                     the config it started with; `warmpoold store check` shows it while no \
                     warmpoold runs"
                ),
                Unread::Unopened => format!(
                    "not compared: {shown} was not opened (see the store line), so the cloud \
                     it records was not read, {unknown}"
                ),
                Unread::Failed => format!(
                    "not compared: {shown} could not be read (see the store line), nor the \
                     cloud it records"
                ),
            };
            return Check {
                kind: CheckKind::StoreCloudUnread,
                ok: false,
                message,
                scope: None,
                passing: None,
            };
        }
        StoreCloud::NoStore => (
            true,
            format!(
                "{shown}: not recorded yet (no store here): warmpoold records {current} as the \
                 cloud of the store it makes"
            ),
        ),
        StoreCloud::Read(Ok(None)) => (
            true,
            format!(
                "{shown}: not recorded yet (a store of an older warmpoold): warmpoold records \
                 {current} at its next start"
            ),
        ),
        StoreCloud::Read(Err(e)) => (false, format!("{shown}: {e}")),
        StoreCloud::Read(Ok(Some(recorded))) => match current.change_from(recorded) {
            CloudChange::None => (true, format!("{shown} serves {recorded}")),
            CloudChange::RegionNamed if region_alone => (
                true,
                format!(
                    "{shown} serves {recorded}, recorded with no region (by an older warmpoold, \
                     or one run with no region_name); the service catalog has the services \
                     warmpool calls in the region the config names alone, which none named \
                     reached too: warmpoold records {current} at its next start"
                ),
            ),
            CloudChange::RegionNamed => (
                false,
                format!(
                    "{shown} serves {recorded}, recorded with no region (by an older warmpoold, \
                     or one run with no region_name), but the config names {current}, and the \
                     service catalog does not have the services warmpool calls in that region \
                     alone: with none named they may have gone to another, so warmpoold \
                     refuses to start on this store. If `{}` lists the store's servers, start \
                     warmpoold once with --adopt-cloud; if they are in another region, set \
                     region_name to that one",
                    current.server_list_command().unwrap_or_default()
                ),
            ),
            CloudChange::ServerTag => (
                false,
                format!(
                    "{shown} serves {recorded}, but the config names {current}: warmpoold \
                     refuses to start on this store (pool servers are listed by their tag, \
                     and the store's are under the old one). If server_tag is mistyped, mend \
                     it; if the tag is meant to change, start warmpoold once with \
                     --adopt-cloud: the store keeps serving the servers it has records of"
                ),
            ),
            // The demo runs without a config file: a store of a real
            // cloud checked against it most likely means --config was
            // left out, and the flag or a [cloud] section to mend are no
            // way out.
            CloudChange::Cloud if *current == CloudIdentity::Embedded => (
                false,
                format!(
                    "{shown} serves {recorded}, but the config names {current}, which \
                     warmpoold runs with no --config (or with a file whose [cloud] kind is \
                     \"embedded\"), and the embedded demo cloud adopts no store: was --config \
                     forgotten? warmpoold refuses to start on this store with that config, \
                     whatever its flags. Pass the config file of {recorded}; for the demo, give \
                     it a data dir of its own (--data-dir)"
                ),
            ),
            CloudChange::Cloud => (
                false,
                format!(
                    "{shown} serves {recorded}, but the config names {current}: warmpoold \
                     refuses to start on this store (its records name servers, volumes and \
                     ports of the other cloud). Point data_dir or --data-dir at this cloud's \
                     store, or at a new data dir; mend [cloud] if it is the mistake; if the \
                     store is meant to move to this cloud, start warmpoold once with \
                     --adopt-cloud"
                ),
            ),
        },
    };
    Check {
        kind: CheckKind::StoreCloud,
        ok,
        message,
        scope: None,
        passing: None,
    }
}

/// The store's lines first: its pools', then its cloud's against the one
/// `cloud` is (when it answers; a cloud that does not has a failed line
/// of its own).
async fn put_store_lines(
    report: &mut Report,
    dir: &std::path::Path,
    read: StoreRead,
    cloud: Option<&dyn Cloud>,
) {
    let mut first = Vec::new();
    first.extend(read.line);
    if let Some(cloud) = cloud {
        match cloud.cloud_identity().await {
            Ok(current) => {
                let region_named = matches!(
                    &read.cloud,
                    StoreCloud::Read(Ok(Some(recorded)))
                        if current.change_from(recorded) == CloudChange::RegionNamed
                );
                let alone = match region_named {
                    true => cloud.services_in_named_region_alone().await,
                    false => Ok(false),
                };
                match alone {
                    Ok(alone) => first.push(store_cloud_line(dir, &read.cloud, &current, alone)),
                    // Not "the catalog lacks the services": it was not
                    // read. An outage fails warmpoold's start (asked
                    // again); a refusal for good, the store is refused
                    // as when the catalog lacks them.
                    Err(e) => {
                        let then = if e.is_retryable() {
                            "warmpoold's start asks it again, and fails until it can be read"
                                .to_owned()
                        } else {
                            format!(
                                "refused for good, it cannot tell, and warmpoold refuses to \
                                 start on this store. If `{}` lists the store's servers, start \
                                 warmpoold once with --adopt-cloud; if they are in another \
                                 region, set region_name to that one",
                                current.server_list_command().unwrap_or_default()
                            )
                        };
                        first.push(Check {
                            kind: CheckKind::StoreCloud,
                            ok: false,
                            message: format!(
                                "{} records no region, and the config names {current}: the \
                                 service catalog could not be read to tell whether the \
                                 services warmpool calls are in that region alone ({then}): {}",
                                dir.display(),
                                reason(&e)
                            ),
                            scope: None,
                            passing: Passing::of(&e),
                        })
                    }
                }
            }
            Err(e) => first.push(Check {
                kind: CheckKind::StoreCloud,
                ok: false,
                message: format!(
                    "cannot ask which cloud this is, to compare it with the store's: {}",
                    reason(&e)
                ),
                scope: None,
                passing: Passing::of(&e),
            }),
        }
    }
    report.checks.splice(0..0, first);
}

/// Runs every check against the cloud `os` names, for the pools warmpoold
/// would serve: the store's (at `config.data_dir`, unless a running daemon
/// holds it) and the configured ones the store lacks. A line about the
/// store comes first when it has pools or cannot be read. Returns the
/// report, and the connected cloud when the login worked.
pub async fn check(config: &Config, os: &OpenStackConfig) -> (Report, Option<OpenStackCloud>) {
    // The cloud config first: opening the store rewrites its files as the
    // user running the check, so a run that fails on a clouds.yaml it cannot
    // read (root's, say, while the unit's credential is gone) must not have
    // opened it.
    let settings = match os.settings() {
        Ok(s) => s,
        Err(e) => return (cloud_config_failed(&e), None),
    };
    let read = stored_pools(&config.data_dir).await;
    let pools = pools_to_check(&read.pools, config);
    let (mut report, cloud) = check_with(settings, os, &pools).await;
    if read.pools_unread() {
        about_the_file_only(&mut report);
    }
    let asked = cloud.as_ref().map(|c| c as &dyn Cloud);
    put_store_lines(&mut report, &config.data_dir, read, asked).await;
    (report, cloud)
}

/// Says of each claim that no pool is somewhere (a zone override, a
/// setting only an unused zone's pools would meet) that it is about the
/// config file's pools only: the store was not read, so a pool created
/// through the API may be right there.
fn about_the_file_only(report: &mut Report) {
    for check in &mut report.checks {
        let no_pool = check.kind == CheckKind::ZoneOverride
            || check.scope.as_ref().is_some_and(Scope::is_empty);
        if !check.ok && no_pool {
            check.message.push_str(
                " (the store was not read: \"no pool\" means none the config file declares; \
                 pools created through the API were not checked, and one may be there)",
            );
        }
    }
}

/// [`check`] for the embedded simulated cloud: each pool warmpoold would
/// serve (the store's and the configured ones) by [`check_boot_specs`],
/// the check its start-up makes.
pub async fn check_embedded(config: &Config, cloud: &dyn Cloud) -> Report {
    let read = stored_pools(&config.data_dir).await;
    let pools = pools_to_check(&read.pools, config);
    let mut report = check_boot_specs(cloud, &pools).await;
    put_store_lines(&mut report, &config.data_dir, read, Some(cloud)).await;
    report
}

/// Runs every check against the cloud `os` names, for `pools`. Returns the
/// report, and the connected cloud when the login worked (the daemon keeps
/// it).
pub async fn check_pools(
    os: &OpenStackConfig,
    pools: &[CheckedPool],
) -> (Report, Option<OpenStackCloud>) {
    match os.settings() {
        Ok(settings) => check_with(settings, os, pools).await,
        Err(e) => (cloud_config_failed(&e), None),
    }
}

/// The report of a cloud config that could not be taken: nothing else was
/// checked.
fn cloud_config_failed(e: &ConfigError) -> Report {
    let mut report = Report {
        cloud_config_refused: e.needs_an_operator(),
        ..Report::default()
    };
    report.fail(CheckKind::Config, e.to_string());
    report
}

/// [`check_pools`] with the driver's settings already read from `os`.
async fn check_with(
    settings: OpenStackSettings,
    os: &OpenStackConfig,
    pools: &[CheckedPool],
) -> (Report, Option<OpenStackCloud>) {
    let mut report = Report::default();
    if let Some(unused) = os.unused_region_variables(&settings.auth) {
        report.warn(CheckKind::Config, unused);
    }
    let cloud = match OpenStackCloud::connect_telling_refusal(settings).await {
        Ok(cloud) => {
            report.ok(
                CheckKind::Auth,
                format!(
                    "{}, {}, Nova microversion {}",
                    cloud.identity(),
                    cloud.region_note(),
                    cloud.compute_microversion()
                ),
            );
            cloud
        }
        Err(e) => {
            report.credentials_refused = matches!(e, ConnectError::CredentialsRefused(_));
            let e = CloudError::from(e);
            report.fail_on(CheckKind::Auth, &e, reason(&e));
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
            Err(e) if !about_the_resource(&e) => report.fail_on(CheckKind::Flavor, &e, reason(&e)),
            Err(e) => report.fail_pools(
                CheckKind::Flavor,
                reason(&e),
                pools.iter().filter(|p| p.key.flavor == name),
            ),
        }
    }
    flavor_iops_check(pools, &cloud, &flavors, &mut report).await;

    // The driver's one image for every pool is the config's, and every
    // pool's: its failure is no single pool's.
    let one_image = cloud.settings().image.is_some();
    let images: BTreeSet<&str> = match &cloud.settings().image {
        Some(image) => BTreeSet::from([image.as_str()]),
        None => pools.iter().map(|p| p.image.as_str()).collect(),
    };
    for image in images {
        match cloud.look_up_image(image).await {
            Ok(id) if id == image => report.ok(CheckKind::Image, image),
            Ok(id) => report.ok(CheckKind::Image, format!("{image} = {id}")),
            Err(e) if one_image || !e.is_about_the_object() => {
                let reason = reason_naming(e.error(), "visible images", cloud.image_names()).await;
                report.fail_on(CheckKind::Image, e.error(), reason)
            }
            Err(e) => report.fail_pools(
                CheckKind::Image,
                reason_naming(e.error(), "visible images", cloud.image_names()).await,
                pools.iter().filter(|p| p.image == image),
            ),
        }
    }
    own_image_check(pools, &cloud, &mut report).await;

    let settings = cloud.settings();
    for network in settings.management_networks() {
        let problem = match cloud.look_up_network(network).await {
            Ok(n) => {
                let named = settings_naming(settings, network);
                match groups_cannot_be_applied(&settings.security_groups, &named, network, &n) {
                    None => {
                        let name = n.name.as_deref().unwrap_or(network);
                        report.ok(CheckKind::Network, format!("{name} = {}", n.id));
                        continue;
                    }
                    Some(problem) => problem,
                }
            }
            Err(e) if !e.is_about_the_object() => {
                report.fail_on(CheckKind::Network, e.error(), reason(e.error()));
                continue;
            }
            Err(e) => reason_naming(e.error(), "visible networks", cloud.network_names()).await,
        };
        management_network_failure(settings, network, problem, pools, &mut report);
    }

    key_pair_check(&cloud, &mut report).await;
    security_group_check(os, &cloud, &mut report).await;
    zone_check(pools, &cloud, &mut report).await;
    zone_override_check(os, pools, &mut report);
    volume_check(pools, &cloud, &mut report).await;
    quota_check(pools, &cloud, &flavors, &mut report).await;
    (report, Some(cloud))
}

/// Each found pool flavor's disk IOPS limit, read as the replenisher reads
/// it for the lead-time prior of pools that set no `iops_limit` (the
/// driver's cache keeps it for the daemon's first read), and the extra
/// spec it comes from, or why there is none: an operator sees what the
/// prior will assume before a pool boots. Never a failure: a failed read
/// is an informing line ([`CheckKind::FlavorIops`]), as warmpoold goes on
/// without the limit and reads it again.
async fn flavor_iops_check(
    pools: &[CheckedPool],
    cloud: &OpenStackCloud,
    flavors: &BTreeMap<String, pool_manager::openstack::nova::Flavor>,
    report: &mut Report,
) {
    for name in flavors.keys() {
        let iops = match cloud.flavor_disk_iops_of(name).await {
            Ok(iops) => iops,
            Err(e) => {
                report.fail(
                    CheckKind::FlavorIops,
                    format!(
                        "{name}: its disk IOPS limit could not be read: {}; warmpoold reads it again \
                         at its pools' steps, sizing their lead-time prior without it meanwhile",
                        reason(&e)
                    ),
                );
                continue;
            }
        };
        let of_flavor = || pools.iter().filter(|p| &p.key.flavor == name);
        let overriding: Vec<String> = of_flavor()
            .filter_map(|p| p.iops_limit.map(|own| format!("{} ({own})", p.key)))
            .collect();
        let stretched = if overriding.is_empty() {
            ": the lead-time prior of its pools is stretched for it".to_owned()
        } else {
            let others = if overriding.len() < of_flavor().count() {
                "; the lead-time prior of its other pools is stretched for it"
            } else {
                ""
            };
            format!(
                "; the own iops_limit of {} overrides it{others}",
                overriding.join(", ")
            )
        };
        // Without the flavor's limit a pool's own still stretches its prior.
        let own_limits = match overriding.len() {
            0 => String::new(),
            1 => format!(
                "; the own iops_limit of {} stretches that pool's lead-time prior",
                overriding[0]
            ),
            _ => format!(
                "; the own iops_limit of {} stretches those pools' lead-time prior",
                overriding.join(", ")
            ),
        };
        let message = match iops {
            FlavorIops::Limited(iops, from) => format!(
                "{name}: {iops} IOPS, from its extra spec {}{stretched}",
                from.key()
            ),
            FlavorIops::Unlimited => format!(
                "{name}: none: its extra specs set no {EXTRA_SPEC_TOTAL_IOPS}, \
                 {EXTRA_SPEC_READ_IOPS} or {EXTRA_SPEC_WRITE_IOPS} (no front-end QoS): \
                 the lead-time prior is not stretched for it{own_limits}"
            ),
            FlavorIops::Unknown(why) => {
                format!("{name}: unknown: {why}; a pool's own iops_limit gives it{own_limits}")
            }
        };
        report.ok(CheckKind::FlavorIops, message);
    }
}

/// The start-up check of a cloud that is not OpenStack (the embedded
/// simulator): each pool's flavor, zone and image, by the check a pool
/// created through the API gets ([`Cloud::check_boot_spec`]). Its
/// failures are judged as [`check_pools`]' are: a configured pool's stops
/// start-up before any pool is created, a stored pool's marks it.
pub async fn check_boot_specs(cloud: &dyn Cloud, pools: &[CheckedPool]) -> Report {
    let mut report = Report::default();
    for pool in pools {
        match cloud.check_boot_spec(&pool.key, &pool.image).await {
            Ok(()) => report.ok(CheckKind::Pool, format!("{}: {}", pool.key, pool.image)),
            Err(e) if !about_the_resource(&e) => report.fail_on(CheckKind::Pool, &e, reason(&e)),
            Err(e) => report.fail_pools(
                CheckKind::Pool,
                format!("{}: {}", pool.key, reason(&e)),
                [pool],
            ),
        }
    }
    report
}

/// Under the `image` override, the own image of each configured pool the
/// store does not have yet, as CreatePool looks it up (it boots once the
/// override is unset): one Glance lacks would stop start-up at that pool's
/// creation, after the pools before it were created. A stored pool's was
/// looked up when it was set, and boots nothing now.
async fn own_image_check(pools: &[CheckedPool], cloud: &OpenStackCloud, report: &mut Report) {
    let Some(every_pool) = cloud.settings().image.as_deref() else {
        return;
    };
    let new = || pools.iter().filter(|p| !p.stored && p.image != every_pool);
    let images: BTreeSet<&str> = new().map(|p| p.image.as_str()).collect();
    for image in images {
        match cloud.check_image(image).await {
            Ok(id) => report.ok(
                CheckKind::Image,
                format!("{image} = {id}, a pool's own image (cloud.image boots every pool)"),
            ),
            Err(e) if !e.is_about_the_object() => {
                report.fail_on(CheckKind::Image, e.error(), reason(e.error()))
            }
            Err(e) => report.fail_pools(
                CheckKind::Image,
                reason_naming(e.error(), "visible images", cloud.image_names()).await,
                new().filter(|p| p.image == image),
            ),
        }
    }
}

/// The pools in availability zone `az`.
fn pools_in<'a>(pools: &'a [CheckedPool], az: &'a str) -> impl Iterator<Item = &'a CheckedPool> {
    pools.iter().filter(move |p| p.key.availability_zone == az)
}

/// The availability zones of the pools.
fn pool_azs(pools: &[CheckedPool]) -> BTreeSet<&str> {
    pools
        .iter()
        .map(|p| p.key.availability_zone.as_str())
        .collect()
}

/// The settings that name management network `name`: the default, and
/// each zone's own.
fn settings_naming(settings: &OpenStackSettings, name: &str) -> String {
    let default = (settings.management_network == name).then(|| "cloud.management_network".into());
    let zones = settings
        .availability_zones
        .iter()
        .filter(|(_, zone)| zone.management_network.as_deref() == Some(name))
        .map(|(az, _)| format!("cloud.availability_zones.{az}.management_network"));
    default
        .into_iter()
        .chain(zones)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Reports `problem` of management network `name` as whose it is, as the
/// other per-zone checks do: the pools in the zones that boot on it (their
/// zone's own setting names it, or they have none and it is the default),
/// so a configured pool's stops start-up and a stored pool's marks it. One
/// no pool boots on yet (a zone's override no pool is in; a default every
/// pool's zone overrides) is a warning: an unused zone's provider network
/// without port security would otherwise keep every other pool down.
fn management_network_failure(
    settings: &OpenStackSettings,
    name: &str,
    problem: String,
    pools: &[CheckedPool],
    report: &mut Report,
) {
    let uses = |p: &&CheckedPool| settings.management_network_for(&p.key.availability_zone) == name;
    if pools.iter().any(|p| uses(&p)) {
        return report.fail_pools(CheckKind::Network, problem, pools.iter().filter(uses));
    }
    let mut zones: Vec<String> = settings
        .availability_zones
        .iter()
        .filter(|(_, zone)| zone.management_network.as_deref() == Some(name))
        .map(|(az, _)| az.clone())
        .collect();
    if settings.management_network == name {
        zones.push("a zone without a management_network of its own".into());
    }
    report.warn(
        CheckKind::Network,
        format!(
            "{problem} [no pool is in {} yet: warmpoold starts, and a pool created there would fail every boot until this is mended]",
            zones.join(", or ")
        ),
    );
}

/// Why Nova would end every boot on management network `name` (found as
/// `network`; `named`: the settings naming it) in ERROR, "Network requires
/// port_security_enabled and subnet associated in order to apply security
/// groups."
/// (`SecurityGroupCannotBeApplied`, met on the compute host after the boot
/// was accepted, so every pool server would be booted again and again): a
/// network with port security and no subnet takes no group, not even the
/// default one (and gives the server no address to probe mysqld at); one
/// without port security takes none that `security_groups` names (Nova
/// drops a lone `default` before). A network whose answer leaves either
/// fact out is taken as Nova takes it: port security on, subnets unknown
/// (not refused).
fn groups_cannot_be_applied(
    security_groups: &[String],
    named: &str,
    name: &str,
    network: &pool_manager::openstack::neutron::Named,
) -> Option<String> {
    let which = format!("{named} {name:?} ({})", network.id);
    let no_subnet = network.subnets.as_ref().is_some_and(Vec::is_empty);
    let asked = !security_groups.is_empty() && security_groups != ["default"];
    match network.port_security_enabled.unwrap_or(true) {
        true if no_subnet => Some(format!(
            "{which} has no subnet, and port security on: Nova applies security groups (the default one at least) only on a network with a subnet, so every boot would end in ERROR (\"Network requires port_security_enabled and subnet associated in order to apply security groups.\"), and a server would get no address to probe mysqld at; give the network a subnet, or set {named} to one with a subnet"
        )),
        false if asked => Some(format!(
            "cloud.security_groups {security_groups:?} cannot be applied on {which}: it has port security off (port_security_enabled = false), and Nova ends every boot naming groups there in ERROR (\"Network requires port_security_enabled and subnet associated in order to apply security groups.\"); unset cloud.security_groups (ports there filter nothing), or enable port security on the network (`openstack network set --enable-port-security {name}`)"
        )),
        _ => None,
    }
}

/// Whether `key_name` is a key pair of the user warmpool logs in as: Nova
/// refuses every boot naming another ("Invalid key_name provided"). Every
/// pool's failure: the setting is the config file's.
async fn key_pair_check(cloud: &OpenStackCloud, report: &mut Report) {
    let Some(name) = cloud.settings().key_name.as_deref() else {
        return;
    };
    match cloud.key_pair(name).await {
        Ok(_) => report.ok(CheckKind::KeyPair, name),
        Err(e) => report.fail_on(
            CheckKind::KeyPair,
            &e,
            format!("cloud.key_name {name:?}: {}", reason(&e)),
        ),
    }
}

/// Whether each of `security_groups` names exactly one group of warmpool's
/// project: Nova refuses every boot naming one it does not find there, or
/// finds twice. So must each of `tenant_port_security_groups`, or the
/// driver refuses every sale's port; a group both name is reported once.
/// Every pool's failure, as for the key pair. One line says which groups
/// tenant ports get: they (or the default group) must admit the tenants'
/// clients to mysqld. Then [`management_exposure_check`]'s warnings.
async fn security_group_check(os: &OpenStackConfig, cloud: &OpenStackCloud, report: &mut Report) {
    let settings = cloud.settings();
    let mut found = BTreeMap::new();
    let mut management_groups = Vec::new();
    let named = settings
        .security_groups
        .iter()
        .map(|g| ("security_groups", g))
        .chain(
            settings
                .tenant_port_security_groups
                .iter()
                .map(|g| ("tenant_port_security_groups", g)),
        );
    for (setting, group) in named {
        if found.contains_key(group) {
            continue;
        }
        match cloud.security_group(group).await {
            Ok(g) => {
                let line = format!("{} = {}", g.name.as_deref().unwrap_or(group), g.id);
                if setting == "security_groups" {
                    report.ok(CheckKind::SecurityGroup, line.clone());
                    management_groups.push((group.clone(), g));
                }
                found.insert(group, Some(line));
            }
            Err(e) => {
                let what = "the project's security groups";
                let reason = reason_naming(&e, what, cloud.security_group_names()).await;
                report.fail_on(
                    CheckKind::SecurityGroup,
                    &e,
                    format!("cloud.{setting} {group:?}: {reason}"),
                );
                found.insert(group, None);
            }
        }
    }
    let tenant_ports: Option<Vec<String>> = settings
        .tenant_port_security_groups
        .iter()
        .map(|g| found.get(g).cloned().flatten())
        .collect();
    let tenant_ports = match (tenant_ports, &os.tenant_port_security_groups) {
        (None, _) => None,
        (Some(groups), _) if !groups.is_empty() => Some(groups.join(", ")),
        (_, None) => {
            Some("the project's default group (tenant_port_security_groups unset)".to_owned())
        }
        (_, Some(_)) => {
            Some("the project's default group (tenant_port_security_groups empty)".to_owned())
        }
    };
    if let Some(tenant_ports) = tenant_ports {
        report.ok(
            CheckKind::SecurityGroup,
            format!("tenant ports: {tenant_ports}"),
        );
    }
    management_exposure_check(cloud, &management_groups, report).await;
}

/// What every warning of [`management_exposure_check`] ends with.
const KEEP_THEM_APART: &str = "every pool server (a sold one too: it keeps its management port) reaches every other's mysqld; admit mysql_port from warmpoold's address only, as a /32 (README, \"A sold server stays on the management network\")";

/// Warns (never fails: warmpoold works either way, and a deployment may
/// filter the management network otherwise) when the management ports'
/// groups let pool servers reach one another's mysqld: `security_groups`
/// unset or naming the project's default group (whose rules admit every
/// port of the group), or a group with an ingress rule admitting
/// `mysql_port` from a remote group or from a prefix covering a subnet of
/// a management network ([`management_exposures`]). Subnets that cannot be
/// read leave only the remote-group and every-address rules judged.
async fn management_exposure_check(
    cloud: &OpenStackCloud,
    groups: &[(String, Named)],
    report: &mut Report,
) {
    let settings = cloud.settings();
    if settings.security_groups.is_empty() {
        return report.warn_management_group(
            format!("cloud.security_groups is unset, so the management ports get the project's default group, which admits every protocol from every port in it: {KEEP_THEM_APART}"),
        );
    }
    let mut subnets = Vec::new();
    for name in settings.management_networks() {
        if let Ok(network) = cloud.network(name).await {
            if let Ok(cidrs) = cloud.subnet_cidrs(&network.id).await {
                subnets.extend(cidrs);
            }
        }
    }
    for (setting, group) in groups {
        if group.name.as_deref() == Some("default") {
            report.warn_management_group(
                format!("cloud.security_groups {setting:?} is the project's default group, which admits every protocol from every port in it: {KEEP_THEM_APART}"),
            );
            continue;
        }
        let rules = group.security_group_rules.as_deref().unwrap_or_default();
        for why in management_exposures(rules, settings.mysql_port, &subnets) {
            report.warn_management_group(format!(
                "cloud.security_groups {setting:?} admits mysql_port {} {why}: {KEEP_THEM_APART}",
                settings.mysql_port
            ));
        }
    }
}

/// The ingress rules of `rules` admitting TCP to `mysql_port` from more
/// than one address: from a remote group's ports (the rule's own group's
/// too), or from a prefix (none: every address) covering a subnet of
/// `subnets` (`cidr`s) or every address. Each as "from ...".
pub fn management_exposures(
    rules: &[SecurityGroupRule],
    mysql_port: u16,
    subnets: &[String],
) -> Vec<String> {
    let mut found = Vec::new();
    for rule in rules {
        let tcp = match rule.protocol.as_deref() {
            None | Some("any" | "tcp" | "6") => true,
            Some(_) => false,
        };
        let port = match (rule.port_range_min, rule.port_range_max) {
            (None, _) => true,
            (Some(min), max) => (min..=max.unwrap_or(min)).contains(&mysql_port),
        };
        if rule.direction.as_deref() != Some("ingress") || !tcp || !port {
            continue;
        }
        if let Some(group) = &rule.remote_group_id {
            found.push(format!("from every port of security group {group}"));
            continue;
        }
        let v6 = rule.ethertype.as_deref() == Some("IPv6");
        let prefix = rule
            .remote_ip_prefix
            .clone()
            .unwrap_or_else(|| if v6 { "::/0" } else { "0.0.0.0/0" }.to_owned());
        let Some(admitted) = parse_cidr(&prefix) else {
            continue;
        };
        if admitted.1 == 0 {
            found.push(format!("from every address ({prefix})"));
            continue;
        }
        let covered: Vec<&String> = subnets
            .iter()
            .filter(|s| parse_cidr(s).is_some_and(|subnet| covers(admitted, subnet)))
            .collect();
        if let Some(subnet) = covered.first() {
            found.push(format!(
                "from {prefix}, which covers the management subnet {subnet}"
            ));
        }
    }
    found
}

/// `address/length`, as Neutron writes a prefix or a subnet's `cidr`.
fn parse_cidr(cidr: &str) -> Option<(std::net::IpAddr, u8)> {
    let (address, length) = cidr.split_once('/')?;
    let address: std::net::IpAddr = address.parse().ok()?;
    let length: u8 = length.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    (length <= bits).then_some((address, length))
}

/// Whether prefix `outer` holds every address of `inner` (same family).
fn covers(outer: (std::net::IpAddr, u8), inner: (std::net::IpAddr, u8)) -> bool {
    use std::net::IpAddr;
    let masked = |bits: u128, width: u32, length: u8| -> u128 {
        let length = u32::from(length);
        if length == 0 {
            0
        } else {
            bits >> (width - length)
        }
    };
    let (o, i, width) = match (outer.0, inner.0) {
        (IpAddr::V4(o), IpAddr::V4(i)) => (u128::from(u32::from(o)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(o), IpAddr::V6(i)) => (u128::from(o), u128::from(i), 128),
        _ => return false,
    };
    outer.1 <= inner.1 && masked(o, width, outer.1) == masked(i, width, outer.1)
}

/// Whether each pool's availability zone is one Nova boots servers in.
async fn zone_check(pools: &[CheckedPool], cloud: &OpenStackCloud, report: &mut Report) {
    let zones = match cloud.compute_zones().await {
        Ok(zones) => zones,
        Err(e) => return report.fail_on(CheckKind::Zone, &e, format!("Nova: {}", reason(&e))),
    };
    let missing: Vec<(&str, String)> = pool_azs(pools)
        .into_iter()
        .filter_map(|az| missing_compute_zone(az, &zones).map(|problem| (az, problem)))
        .collect();
    if missing.is_empty() {
        report.ok(CheckKind::Zone, format!("Nova zones: {}", zones.join(", ")));
    }
    for (az, problem) in missing {
        report.fail_pools(CheckKind::Zone, problem, pools_in(pools, az));
    }
}

/// Warns of each `[cloud.availability_zones.<az>]` no pool is in.
fn zone_override_check(os: &OpenStackConfig, pools: &[CheckedPool], report: &mut Report) {
    let azs = pool_azs(pools);
    let zones = if azs.is_empty() {
        "no pools yet".to_owned()
    } else {
        format!(
            "the pools' zones: {}",
            azs.iter().copied().collect::<Vec<_>>().join(", ")
        )
    };
    for az in os.unused_az_overrides(azs.iter().copied()) {
        report.fail(
            CheckKind::ZoneOverride,
            format!(
                "cloud.availability_zones.{az} applies to no pool, none is in {az} ({zones}); if the zone is misspelt, its pools use the defaults (cloud.management_network, a Cinder zone of their zone's name)"
            ),
        );
    }
}

/// Whether Cinder answers, and has the zone each pool AZ's new volumes are
/// created in, taking volumes: every purchase with a new volume needs
/// both, and a Cinder whose zones are not named like Nova's (a single
/// "nova") is common.
async fn volume_check(pools: &[CheckedPool], cloud: &OpenStackCloud, report: &mut Report) {
    let zones = match cloud.volume_zones().await {
        Ok(zones) => zones,
        Err(e) => return report.fail_on(CheckKind::Volume, &e, format!("Cinder: {}", reason(&e))),
    };
    let mut failed = false;
    for az in pool_azs(pools) {
        let zone = cloud.volume_az(az);
        let Some(problem) = volume_zone_problem(az, &zone, &zones) else {
            continue;
        };
        failed = true;
        if zones.is_unavailable(&zone) {
            // The zone's pools' failure, as a Nova zone listed but not
            // available is: the config is right and the cloud is in
            // maintenance, which must not stop every other pool.
            report.fail_pools(CheckKind::Volume, problem, pools_in(pools, az));
        } else {
            // Every pool's failure, stored or not: the zone is the config
            // file's (volume_availability_zone, or the AZ's own name), and
            // boots never touch Cinder, so a stored pool marked for it
            // would look healthy after its next boot while every purchase
            // with a new volume failed.
            report.fail(CheckKind::Volume, problem);
        }
    }
    if !failed {
        report.ok(
            CheckKind::Volume,
            format!("Cinder zones: {}", zones.available.join(", ")),
        );
    }
}

/// The instances, cores and RAM that `more` servers of each flavor take,
/// saturating: a flavor's sizes are the cloud's to say, and one absurd
/// (garbage, or a huge number meant as "unlimited") must read as more than
/// any quota, not overflow.
fn quota_demand(
    more: &BTreeMap<&str, u64>,
    flavors: &BTreeMap<String, pool_manager::openstack::nova::Flavor>,
) -> [u64; 3] {
    let mut demand = [0u64; 3];
    for (name, &count) in more {
        let Some(flavor) = flavors.get(*name) else {
            continue;
        };
        for (total, each) in demand.iter_mut().zip([1, flavor.vcpus, flavor.ram]) {
            *total = total.saturating_add(count.saturating_mul(each));
        }
    }
    demand
}

/// Whether the compute quota admits every pool's servers at its peak
/// ([`CheckedPool::peak`]: `min_ready`, or its highest window's min), net
/// of the pool's servers that could still be handed out (every server
/// counts as used). Windows open at different times are counted as if
/// open at once: the quota must hold them whenever they meet.
async fn quota_check(
    pools: &[CheckedPool],
    cloud: &OpenStackCloud,
    flavors: &BTreeMap<String, pool_manager::openstack::nova::Flavor>,
    report: &mut Report,
) {
    let limits = match cloud.limits().await {
        Ok(l) => l,
        Err(e) => return report.fail_on(CheckKind::Quota, &e, reason(&e)),
    };
    let existing = match cloud.list_pool_servers().await {
        Ok(servers) => servers,
        Err(e) => return report.fail_on(CheckKind::Quota, &e, reason(&e)),
    };
    // More servers of a flavor to boot, per flavor; and the unsold ones
    // there are.
    let mut more: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unsold = 0;
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
        unsold += have;
        let need = u64::from(pool.peak()).saturating_sub(have);
        if need > 0 && flavors.contains_key(&pool.key.flavor) {
            let more = more.entry(pool.key.flavor.as_str()).or_default();
            *more = more.saturating_add(need);
        }
    }
    let demand = quota_demand(&more, flavors);
    // A flavor no server of which fits the whole quota never boots,
    // whatever is released: named first, as the quota to raise.
    let beyond = pools
        .iter()
        .filter_map(|pool| flavors.get(&pool.key.flavor))
        .map(|flavor| limits.headroom(flavor, None))
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
    // Neutron's port quota (when it tells): a pool server holds its own
    // port and takes the tenant's when sold, both in warmpool's project.
    // Unread, the verdict is Nova's quotas' alone, as the daemon's headroom
    // is then, and the line says so: the driver's warning of it is below
    // check-cloud's log filter.
    let (ports, ports_unknown) = match cloud.port_quota().await {
        Ok(ports) => (ports, None),
        Err(unread) => (None, Some(unread.to_string())),
    };
    let ports_needed = demand[0]
        .saturating_mul(PORTS_PER_SERVER)
        .saturating_add(unsold);
    if let Some(p) = ports
        .as_ref()
        .filter(|p| p.max >= 0 && p.free() < ports_needed)
    {
        short.push(format!(
            "ports {} of {} used, {ports_needed} more needed (each server to boot takes its own and \
             its sale's, each unsold one its sale's)",
            p.used, p.max
        ));
    }
    let mut wanted = if more.is_empty() {
        "no more servers".to_owned()
    } else {
        more.iter()
            .map(|(f, n)| format!("{n} more {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Counted above min_ready: said, or a "300 more" for a pool of
    // min_ready 2 would read as a miscount.
    let at_windows: Vec<String> = pools
        .iter()
        .filter(|pool| flavors.contains_key(&pool.key.flavor))
        .filter_map(|pool| {
            let min = pool.window_min?;
            Some(format!(
                "{} counted at its highest window min {min}, above min_ready {}",
                pool.key, pool.min_ready
            ))
        })
        .collect();
    if !at_windows.is_empty() {
        wanted = format!("{wanted} ({})", at_windows.join("; "));
    }
    let used = limits
        .quotas()
        .iter()
        .chain(ports.as_ref())
        .map(|q| {
            if q.max < 0 {
                format!("{} {} used (unlimited)", q.resource, q.used)
            } else {
                format!("{} {} of {}", q.resource, q.used, q.max)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut uncounted = ports_unknown
        .map(|why| format!("; ports: not counted ({why})"))
        .unwrap_or_default();
    // A pool whose flavor was not read has no size to count: said, or an
    // "ok" would read as room for every pool.
    let unread: BTreeSet<String> = pools
        .iter()
        .filter(|pool| !flavors.contains_key(&pool.key.flavor))
        .map(|pool| pool.key.to_string())
        .collect();
    if !unread.is_empty() {
        let whose = if unread.len() == 1 {
            "its flavor"
        } else {
            "their flavors"
        };
        let unread: Vec<String> = unread.into_iter().collect();
        uncounted.push_str(&format!(
            "; not counted: {} ({whose} could not be read: see the flavor line)",
            unread.join(", ")
        ));
    }
    if short.is_empty() {
        report.ok(
            CheckKind::Quota,
            format!("{used}; pools need room for {wanted}{uncounted}"),
        );
    } else {
        report.fail(
            CheckKind::Quota,
            format!(
                "{}; pools need room for {wanted}{uncounted}",
                short.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(flavor: &str, stored: bool) -> CheckedPool {
        CheckedPool {
            key: PoolKey::new(flavor, "az1"),
            image: "mysql-8.0".into(),
            min_ready: 1,
            iops_limit: None,
            window_min: None,
            stored,
        }
    }

    /// The quota a flavor of absurd sizes takes saturates at u64::MAX,
    /// more than any quota, rather than overflowing.
    #[test]
    fn the_quota_demand_of_absurd_flavors_saturates() {
        let flavor = |name: &str, vcpus: u64, ram: u64| {
            let flavor: pool_manager::openstack::nova::Flavor = serde_json::from_value(
                serde_json::json!({"id": name, "name": name, "vcpus": vcpus, "ram": ram}),
            )
            .unwrap();
            (name.to_owned(), flavor)
        };
        let flavors = BTreeMap::from([
            flavor("db.cores", u64::MAX, 1024),
            flavor("db.ram", 1, u64::MAX / 2),
            flavor("db.small", 1, 1024),
        ]);
        let more = BTreeMap::from([("db.cores", 3), ("db.ram", 3), ("db.small", 2)]);
        assert_eq!(quota_demand(&more, &flavors), [8, u64::MAX, u64::MAX]);
        let more = BTreeMap::from([("db.small", u64::MAX), ("db.ram", 1)]);
        assert_eq!(
            quota_demand(&more, &flavors),
            [u64::MAX, u64::MAX, u64::MAX]
        );
        let more = BTreeMap::from([("db.small", 2)]);
        assert_eq!(quota_demand(&more, &flavors), [2, 2, 2048]);
    }

    /// check-cloud reads a store that exists and creates none, not even in
    /// an empty data_dir; it says there was none to read.
    #[tokio::test]
    async fn an_empty_data_dir_stays_empty() {
        let dir = tempfile::tempdir().unwrap();
        let read = stored_pools(dir.path()).await;
        assert!(read.pools.is_empty());
        assert!(matches!(read.cloud, StoreCloud::NoStore));
        let line = read.line.expect("a line saying there is no store");
        assert!(line.ok && line.message.contains("no store here"), "{line}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Waits until no handle holds the store in `dir`: sled lets go of
    /// its lock (an flock of its `db` file) a moment after the last
    /// handle is dropped, and the command waits for it only a second.
    fn wait_until_let_go(dir: &std::path::Path) {
        let db = std::fs::File::open(dir.join("db")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while db.try_lock().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the store stays locked"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The report of the store's lines alone, against the embedded cloud.
    async fn store_lines(dir: &std::path::Path) -> Report {
        let read = stored_pools(dir).await;
        let cloud = crate::embedded_cloud(1.0, false, 1);
        let mut report = Report::default();
        put_store_lines(&mut report, dir, read, Some(cloud.as_ref())).await;
        report
    }

    fn line(report: &Report, kind: CheckKind) -> &Check {
        report
            .checks
            .iter()
            .find(|c| c.kind == kind)
            .unwrap_or_else(|| panic!("no {} line: {report}", kind.label()))
    }

    /// A pool record this version cannot read fails the store's line (and
    /// the run: warmpoold would not start on the store), and leaves which
    /// cloud the store serves still read and compared: a store of another
    /// cloud is said to be one, not passed over.
    #[tokio::test]
    async fn an_unreadable_pool_record_still_compares_the_stores_cloud() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree(pool_manager::store::RecordKind::Pool.tree())
                .unwrap()
                .insert("db.small\0az1", br#"{"from_the_future":true}"#.to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        {
            use pool_manager::store::{SledStore, Store};
            let store = SledStore::open(dir.path()).unwrap();
            let other = CloudIdentity::OpenStack {
                project_id: "5f1c".into(),
                region: Some("RegionOne".into()),
                server_tag: "warmpool".into(),
            };
            store.record_cloud_identity(&other).await.unwrap();
            store.flush().await.unwrap();
        }
        wait_until_let_go(dir.path());

        let report = store_lines(dir.path()).await;
        let store = line(&report, CheckKind::Store);
        assert!(!store.ok, "{report}");
        assert!(store.message.contains("cannot read its pools"), "{report}");
        let cloud = line(&report, CheckKind::StoreCloud);
        assert!(!cloud.ok, "{report}");
        assert!(
            cloud.message.contains("but the config names the embedded"),
            "{report}"
        );
        assert!(!report.passed(), "{report}");
    }

    /// A store of an OpenStack checked against the embedded demo cloud
    /// (check-cloud without --config) is refused as the daemon refuses
    /// it, --adopt-cloud or not: the line asks whether --config was
    /// forgotten and offers neither the flag nor a mend of [cloud].
    #[test]
    fn the_demo_clouds_store_line_asks_whether_config_was_forgotten() {
        let recorded = CloudIdentity::OpenStack {
            project_id: "5f1c".into(),
            region: Some("RegionOne".into()),
            server_tag: "warmpool".into(),
        };
        let dir = std::path::Path::new("warmpool-data");
        let line = store_cloud_line(
            dir,
            &StoreCloud::Read(Ok(Some(recorded))),
            &CloudIdentity::Embedded,
            false,
        );
        assert!(!line.ok, "{line}");
        for part in [
            "the embedded demo cloud adopts no store: was --config forgotten?",
            "no --config",
        ] {
            assert!(line.message.contains(part), "{part:?} not in: {line}");
        }
        for offered in ["--adopt-cloud", "mend [cloud]"] {
            assert!(!line.message.contains(offered), "{offered:?} in: {line}");
        }
    }

    /// A store the command cannot look into is a failed store line, not
    /// "no store here" (and a cloud "not recorded yet"), and fails the run.
    #[tokio::test]
    async fn a_store_the_command_cannot_look_into_fails_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let report = store_lines(&file.join("store")).await;
        let store = line(&report, CheckKind::Store);
        assert!(!store.ok, "{report}");
        assert!(
            store.message.contains("cannot tell whether")
                && store.message.contains("Not a directory"),
            "{report}"
        );
        assert!(!report.to_string().contains("no store here"), "{report}");
        assert!(!report.to_string().contains("not recorded yet"), "{report}");
        assert!(!report.passed(), "{report}");
    }

    /// A store a running warmpoold holds only informs: the daemon checked
    /// its stored pools when it started, and the run is the configured
    /// pools'.
    #[tokio::test]
    async fn a_store_a_running_daemon_holds_does_not_fail_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let _held = pool_manager::store::SledStore::open(dir.path()).unwrap();
        let report = store_lines(dir.path()).await;
        let held = format!(
            "store: {} is held by a running warmpoold",
            dir.path().display()
        );
        assert!(report.to_string().starts_with(&held), "{report}");
        assert!(report.passed(), "{report}");
    }

    /// A store a running warmpoold holds is not read, nor the cloud it
    /// records: the report says that cloud was not compared, and why, so
    /// that its pass is not taken for the store serving the configured
    /// cloud (the restart with this config would be refused on a store
    /// of another). It informs, as the store's line does.
    #[tokio::test]
    async fn a_held_stores_cloud_is_said_not_to_be_compared() {
        let dir = tempfile::tempdir().unwrap();
        {
            use pool_manager::store::{SledStore, Store};
            let store = SledStore::open(dir.path()).unwrap();
            let other = CloudIdentity::OpenStack {
                project_id: "5f1c".into(),
                region: Some("RegionOne".into()),
                server_tag: "warmpool".into(),
            };
            store.record_cloud_identity(&other).await.unwrap();
            store.flush().await.unwrap();
        }
        wait_until_let_go(dir.path());
        let _held = pool_manager::store::SledStore::open(dir.path()).unwrap();
        let report = store_lines(dir.path()).await;
        let shown = report.to_string();
        let cloud = shown
            .lines()
            .find(|l| l.starts_with("store cloud: "))
            .unwrap_or_else(|| panic!("no store cloud line: {report}"));
        assert!(cloud.starts_with("store cloud: not compared"), "{cloud}");
        assert!(cloud.contains("held by a running warmpoold"), "{cloud}");
        assert!(report.passed(), "{report}");
    }

    /// Every file under `dir`: its size, a digest of its bytes, its mode:
    /// what a run that touched nothing leaves as it was.
    fn files_in(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, (u64, String, String)> {
        use sha2::Digest;
        use std::os::unix::fs::PermissionsExt;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                files.extend(files_in(&path));
            } else {
                let digest = sha2::Sha256::digest(std::fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let mode = format!("{:o}", meta.permissions().mode());
                files.insert(path, (meta.len(), hex, mode));
            }
        }
        files
    }

    /// A cloud config check-cloud cannot read fails before the store is
    /// opened: opening it rewrites its files, as the user running the
    /// check (root's umask 077 once left a snapshot the daemon could not
    /// read), and a config failure must leave the store as it was.
    #[tokio::test]
    async fn a_broken_clouds_yaml_leaves_the_data_dir_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        {
            use pool_manager::store::{SledStore, Store};
            let store = SledStore::open(&data).unwrap();
            let identity = CloudIdentity::OpenStack {
                project_id: "5f1c".into(),
                region: None,
                server_tag: "warmpool".into(),
            };
            store.record_cloud_identity(&identity).await.unwrap();
            store.flush().await.unwrap();
        }
        wait_until_let_go(&data);
        let before = files_in(&data);

        let clouds = dir.path().join("clouds.yaml");
        std::fs::write(&clouds, "clouds: [this is not a mapping\n").unwrap();
        let config = crate::config::Config::parse(&format!(
            "data_dir = {data:?}\n\
             [cloud]\n\
             kind = \"openstack\"\n\
             cloud = \"mycloud\"\n\
             clouds_yaml = {clouds:?}\n\
             management_network = \"mgmt\"\n",
        ))
        .unwrap();
        let crate::config::CloudConfig::OpenStack(os) = &config.cloud else {
            panic!("not an OpenStack config");
        };
        let (report, cloud) = check(&config, os).await;
        assert!(cloud.is_none(), "{report}");
        assert!(!report.passed(), "{report}");
        let failed = line(&report, CheckKind::Config);
        assert!(failed.message.contains("clouds.yaml"), "{report}");
        assert_eq!(files_in(&data), before, "the store was touched: {report}");
    }

    /// A check run as root leaves a store another user owns unopened
    /// (opening it would leave root's files in it, which its daemon cannot
    /// read), names the owner and how to run as them, and only informs:
    /// the configured pools are still checked.
    #[tokio::test]
    async fn root_leaves_a_store_another_user_owns_unopened() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        {
            use pool_manager::store::{SledStore, Store};
            let store = SledStore::open(&data).unwrap();
            store.flush().await.unwrap();
        }
        wait_until_let_go(&data);
        // The check runs as root (uid 0) below; the store is another
        // user's: the one running the tests, or, when that is root, nobody.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        }
        let owner = std::fs::metadata(&data).unwrap().uid();
        assert_ne!(owner, 0);
        let before = files_in(&data);

        let read = stored_pools_as(&data, 0).await;
        assert!(read.pools.is_empty());
        assert!(matches!(read.cloud, StoreCloud::Unread(_)));
        let unread = store_cloud_line(&data, &read.cloud, &CloudIdentity::Embedded, false);
        assert!(
            unread.to_string().starts_with("store cloud: not compared")
                && unread.message.contains("not opened"),
            "{unread}"
        );
        let line = read.line.expect("a line saying why the store was not read");
        assert!(
            line.message.contains(&format!("uid {owner}"))
                && line.message.contains("sudo -u")
                && line
                    .message
                    .contains("only the configured pools were checked"),
            "{line}"
        );
        assert_eq!(files_in(&data), before, "the store was touched: {line}");
        let report = Report {
            checks: vec![line],
            ..Report::default()
        };
        assert!(report.passed(), "{report}");
    }

    /// A data dir whose uid /etc/passwd does not name is a systemd
    /// DynamicUser's (deploy/warmpoold.service): no command runs as it
    /// while the service is stopped (its credential is gone, its state
    /// under root-only /var/lib/private), so the line offers none.
    #[test]
    fn a_store_of_a_uid_without_a_name_is_not_told_to_be_checked_as_it() {
        let dir = std::path::Path::new("/var/lib/warmpool");
        let line = another_users_line(dir, 61234, None);
        assert!(!line.ok && matches!(line.kind, CheckKind::StoreOfAnotherUser));
        assert!(
            line.message.contains("uid 61234")
                && line.message.contains("DynamicUser")
                && line
                    .message
                    .contains("only the configured pools were checked")
                && !line.message.contains("setpriv")
                && !line.message.contains("sudo -u"),
            "{line}"
        );
        let named = another_users_line(dir, 61234, Some("warmpool".into()));
        assert!(named.message.contains("sudo -u warmpool"), "{named}");
        let report = Report {
            checks: vec![line],
            ..Report::default()
        };
        assert!(report.passed(), "{report}");
    }

    /// What a lookup's failure says of the pools naming the resource.
    #[test]
    fn a_service_refusing_the_lookup_is_every_pools_failure() {
        let token = CloudError::Fatal("GET /v2/images?name=x: the service refused a token Keystone had just issued (HTTP 401): check ...".into());
        let policy = CloudError::Fatal("GET /v2/images?name=x: Not authorized (HTTP 403)".into());
        assert!(!about_the_resource(&token));
        assert!(!about_the_resource(&policy));
        assert!(!about_the_resource(&CloudError::Transient("503".into())));
        assert!(about_the_resource(&CloudError::NotFound(
            "no image named 'x'".into()
        )));
        // The lookup's own verdicts are the driver's to tell.
        use pool_manager::openstack::LookupError;
        let ambiguous = CloudError::Fatal("2 images are named 'x'; give its id instead".into());
        assert!(LookupError::Object(ambiguous.clone()).is_about_the_object());
        assert!(
            !LookupError::Service(CloudError::Fatal("a page came round again".into()))
                .is_about_the_object()
        );
    }

    /// What osauth fails on before any service answers about an object
    /// (the service missing from the catalog for the region, a version
    /// document refused or routed nowhere) says nothing of the image or
    /// network looked up: every pool's failure, whatever its words.
    #[test]
    fn a_lookup_osauth_failed_before_any_answer_is_every_pools_failure() {
        use osauth::ErrorKind as K;
        use pool_manager::openstack::error::classify_osauth;
        for kind in [K::EndpointNotFound, K::AccessDenied, K::ResourceNotFound] {
            let e = classify_osauth(
                "GET /v2/images?name=x",
                &osauth::Error::new(kind, "Requested endpoint was not found"),
            );
            assert!(!about_the_resource(&e), "{e}");
        }
    }

    /// A missing name's reason lists at most ten of those the cloud has,
    /// and how many more; other failures list nothing, nor does a listing
    /// that fails.
    #[tokio::test]
    async fn a_missing_names_reason_lists_ten_names_and_counts_the_rest() {
        let missing = CloudError::NotFound("no network named 'x'".into());
        let names = |n: usize| (1..=n).map(|i| format!("net{i:02}")).collect::<Vec<_>>();
        let listed = |n: usize| async move { Ok(names(n)) };
        assert_eq!(
            reason_naming(&missing, "visible networks", listed(12)).await,
            "no network named 'x' (visible networks: net01, net02, net03, net04, net05, net06, net07, net08, net09, net10 and 2 more)"
        );
        assert_eq!(
            reason_naming(&missing, "visible networks", listed(2)).await,
            "no network named 'x' (visible networks: net01, net02)"
        );
        assert_eq!(
            reason_naming(&missing, "visible networks", listed(0)).await,
            "no network named 'x' (visible networks: none)"
        );
        let unlisted = async { Err(CloudError::Transient("503".into())) };
        assert_eq!(
            reason_naming(&missing, "visible networks", unlisted).await,
            "no network named 'x'"
        );
        let ambiguous = CloudError::Fatal("2 networks are named 'x'; give its id instead".into());
        assert_eq!(
            reason_naming(&ambiguous, "visible networks", listed(2)).await,
            "2 networks are named 'x'; give its id instead"
        );
    }

    /// A stored pool's own failure marks it; a configured pool's, or one
    /// every pool shares, stops start-up.
    #[test]
    fn failures_stop_start_up_by_whose_they_are() {
        let mut report = Report::default();
        report.fail_pools(
            CheckKind::Flavor,
            "no flavor named 'db.old'",
            [&pool("db.old", true)],
        );
        assert!(report.start_up_refusals().is_empty());
        assert_eq!(
            report.stale_pools()[&PoolKey::new("db.old", "az1")],
            StalePool {
                problems: vec!["flavor: no flavor named 'db.old'".into()],
                proof: MarkProof::Recheck,
            }
        );
        assert!(report.checks[0]
            .to_string()
            .ends_with("[stored pool db.old@az1: warmpoold starts, serves the other pools and shows it degraded; fix the cloud (warmpoold checks the pool again after each pause, of up to 5 min, and clears the mark once the check passes), or delete the pool: `warmpoolctl pools delete db.old az1`]"));

        report.fail_pools(
            CheckKind::Flavor,
            "no flavor named 'db.new'",
            [&pool("db.new", false), &pool("db.new", true)],
        );
        report.fail(CheckKind::Network, "no network named 'mgmt'");
        report.fail(CheckKind::Quota, "instances 2 of 2 used");
        let refusals: Vec<String> = report
            .start_up_refusals()
            .iter()
            .map(|c| c.refusal_line())
            .collect();
        assert_eq!(
            refusals,
            [
                "flavor: no flavor named 'db.new' [db.new@az1 declared in the config file and not in the store yet: fix the config file or the cloud; nothing was created]",
                "network: no network named 'mgmt'",
            ]
        );
    }

    /// Start-up checks again only when every failure that stops it may
    /// pass (a cloud that did not answer, failed or throttled), waiting
    /// the longest Retry-After; a failure that never heals beside them, or
    /// refused credentials, stops it at once. A quota short for a moment
    /// stops nothing, so it asks for no new try.
    #[test]
    fn start_up_checks_again_only_when_every_refusal_may_pass() {
        let s = std::time::Duration::from_secs;
        let throttled = |secs: Option<u64>| CloudError::Throttled {
            retry_after: secs.map(s),
            message: "rate-limited".into(),
            unavailable: false,
        };
        let failing = CloudError::Transient("HTTP 500".into());
        let missing = CloudError::NotFound("no network named 'mgmt'".into());

        let mut report = Report::default();
        report.fail_on(CheckKind::Quota, &failing, "HTTP 500");
        assert_eq!(report.passing(), None, "nothing stops start-up");
        report.fail_on(CheckKind::Zone, &failing, "Nova: HTTP 500");
        assert_eq!(report.passing(), Some(Passing { retry_after: None }));
        report.fail_on(CheckKind::Volume, &throttled(Some(7)), "Cinder: throttled");
        report.fail_on(CheckKind::KeyPair, &throttled(Some(3)), "throttled");
        report.fail_on(CheckKind::Flavor, &throttled(None), "throttled");
        assert_eq!(
            report.passing(),
            Some(Passing {
                retry_after: Some(s(7))
            })
        );
        let mut credentials = report.clone();
        credentials.credentials_refused = true;
        assert_eq!(credentials.passing(), None);
        report.fail_on(CheckKind::Network, &missing, "no network named 'mgmt'");
        assert_eq!(report.passing(), None, "{report}");
    }

    /// An override of a zone no pool is in is a warning: a pool created
    /// through the API later may be in it.
    #[test]
    fn an_unused_zone_override_only_warns() {
        let mut report = Report::default();
        report.fail(
            CheckKind::ZoneOverride,
            "cloud.availability_zones.az-1 applies to no pool",
        );
        assert!(report.passed());
        assert!(report.start_up_refusals().is_empty());
        assert!(report.stale_pools().is_empty());
        assert_eq!(
            report.to_string(),
            "zone overrides: cloud.availability_zones.az-1 applies to no pool\n"
        );
    }

    /// A failure of no pool yet (a management network only an unused
    /// zone boots on) is a warning: it stops no start-up, marks no pool,
    /// fails no check, and says nothing of stored pools.
    #[test]
    fn a_failure_of_no_pool_yet_only_warns() {
        let mut report = Report::default();
        report.warn(
            CheckKind::Network,
            "no network named 'x' [no pool is in az9 yet]",
        );
        assert!(report.passed());
        assert!(report.start_up_refusals().is_empty());
        assert!(report.stale_pools().is_empty());
        assert_eq!(
            report.to_string(),
            "network: no network named 'x' [no pool is in az9 yet]\n"
        );
    }

    /// A management group's warning concerns every pool: it passes and
    /// stops nothing, as a failure of no pool yet does, but an unread
    /// store, which qualifies only claims that no pool is somewhere, adds
    /// nothing to it.
    #[test]
    fn a_management_group_warning_is_no_claim_of_no_pool() {
        let mut report = Report::default();
        report.warn_management_group("cloud.security_groups is unset");
        report.warn(
            CheckKind::Network,
            "no network named 'x' [no pool is in az9 yet]",
        );
        about_the_file_only(&mut report);
        assert!(report.passed());
        assert!(report.start_up_refusals().is_empty());
        assert!(report.stale_pools().is_empty());
        let lines: Vec<String> = report.checks.iter().map(ToString::to_string).collect();
        assert_eq!(lines[0], "security group: cloud.security_groups is unset");
        assert!(
            lines[1].contains("[no pool is in az9 yet] (the store was not read"),
            "{}",
            lines[1]
        );
    }

    /// A lookup the cloud did not answer is no pool's own failure.
    #[test]
    fn an_unanswered_lookup_is_every_pools_problem() {
        assert!(!about_the_resource(&CloudError::Transient("503".into())));
        assert!(!about_the_resource(&CloudError::Throttled {
            message: "429".into(),
            retry_after: None,
            unavailable: false,
        }));
        assert!(about_the_resource(&CloudError::NotFound(
            "no flavor named 'db.old'".into()
        )));
    }

    /// What Neutron makes the default group with, and what an operator
    /// adds: the warnings name the rules that let pool servers reach one
    /// another's mysqld (3306 here), and no other.
    #[test]
    fn management_rules_admitting_a_group_or_the_subnet_are_named() {
        let ingress = |protocol: Option<&str>, ports: Option<(u16, u16)>| SecurityGroupRule {
            direction: Some("ingress".into()),
            ethertype: Some("IPv4".into()),
            protocol: protocol.map(Into::into),
            port_range_min: ports.map(|p| p.0),
            port_range_max: ports.map(|p| p.1),
            ..SecurityGroupRule::default()
        };
        let from = |prefix: &str, rule: SecurityGroupRule| SecurityGroupRule {
            ethertype: Some(if prefix.contains(':') { "IPv6" } else { "IPv4" }.into()),
            remote_ip_prefix: Some(prefix.into()),
            ..rule
        };
        let subnets = ["10.0.0.0/24".to_owned(), "fd00:10::/64".to_owned()];
        let judged = |rule: SecurityGroupRule| management_exposures(&[rule], 3306, &subnets);
        let mysql = || ingress(Some("tcp"), Some((3306, 3306)));

        // warmpoold's address alone, in the subnet or not; other ports;
        // another protocol; a way out; a prefix beside the subnet.
        for fine in [
            from("10.0.0.5/32", mysql()),
            from("192.0.2.7/32", mysql()),
            from("fd00:10::5/128", mysql()),
            from("10.0.0.0/24", ingress(Some("tcp"), Some((22, 22)))),
            from("10.0.0.0/24", ingress(Some("udp"), None)),
            SecurityGroupRule {
                direction: Some("egress".into()),
                ..ingress(None, None)
            },
            from("10.0.1.0/24", mysql()),
            from("10.0.0.0/28", mysql()),
        ] {
            assert_eq!(judged(fine.clone()), Vec::<String>::new(), "{fine:?}");
        }

        // The default group's own rule: every protocol from its members.
        let members = SecurityGroupRule {
            remote_group_id: Some("9b5c1a00-default".into()),
            ..ingress(None, None)
        };
        assert_eq!(
            judged(members),
            ["from every port of security group 9b5c1a00-default"]
        );
        for (rule, why) in [
            (
                from("10.0.0.0/16", mysql()),
                "from 10.0.0.0/16, which covers the management subnet 10.0.0.0/24",
            ),
            (
                from("10.0.0.0/24", ingress(Some("6"), Some((3000, 4000)))),
                "from 10.0.0.0/24, which covers the management subnet 10.0.0.0/24",
            ),
            (
                from("fd00::/16", ingress(None, None)),
                "from fd00::/16, which covers the management subnet fd00:10::/64",
            ),
            (mysql(), "from every address (0.0.0.0/0)"),
        ] {
            assert_eq!(judged(rule), [why]);
        }
        // A subnet that could not be read judges no prefix but every
        // address.
        assert!(management_exposures(&[from("10.0.0.0/16", mysql())], 3306, &[]).is_empty());
    }
}
