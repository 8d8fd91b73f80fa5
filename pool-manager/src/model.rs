//! The pool, instance and allocation records: what warmpool stores and why.
//!
//! Instances move through this state machine; every transition is written to
//! the store before the cloud call it announces.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Booting
//!     Booting --> Warming: server ACTIVE
//!     Warming --> Ready: mysqld greets
//!     Ready --> Claimed: Allocate (compare-and-swap)
//!     Claimed --> Allocated: volume and port attached, verified
//!     Allocated --> Releasing: Release
//!     Releasing --> Gone
//!     Booting --> Failed: boot failed
//!     Warming --> Failed: boot failed
//!     Failed --> Gone: server deleted
//!     Booting --> Deleting: drained
//!     Warming --> Deleting: drained
//!     Ready --> Deleting: drained, expired
//!     Claimed --> Deleting: attach failed (never back to Ready...)
//!     Claimed --> Ready: ...but when every attach was refused 429/413
//!     Deleting --> Gone
//! ```
//!
//! `Gone` instances are removed from the store.
//!
//! Every stored type (and each one nested in it) refuses fields it does
//! not know (`deny_unknown_fields`): such a field is a newer version's, and
//! a record read without it would be written back without it by the next
//! compare-and-swap (a rolled-back `attempt` renames an order's volume and
//! port, a lost `creates_in_doubt` leaves its twins). The store reports the
//! record as unreadable instead. So a field is never simply removed: one
//! older versions stored stays accepted as [`Retired`].

use crate::schedule::Window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// A field older versions stored and this one no longer keeps: read
/// whatever its value (so their records still open), never written, and
/// equal to any other, so records compare as if it were not there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired;

impl<'de> Deserialize<'de> for Retired {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Retired)
    }
}

/// A pool is identified by the flavor and availability zone it serves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolKey {
    pub flavor: String,
    pub availability_zone: String,
}

impl PoolKey {
    pub fn new(flavor: impl Into<String>, availability_zone: impl Into<String>) -> Self {
        Self {
            flavor: flavor.into(),
            availability_zone: availability_zone.into(),
        }
    }
}

impl PoolKey {
    /// Both names are required, at most 255 characters, free of control
    /// characters and of whitespace around them (the API's rule, so a
    /// config file cannot hold a pool the API would refuse); the error
    /// names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [
            ("flavor", &self.flavor),
            ("availability_zone", &self.availability_zone),
        ] {
            if let Some(problem) = name_problem(value) {
                return Err((field, format!("{field} {problem}")));
            }
        }
        Ok(())
    }
}

/// Unicode's format characters (category Cf: zero-width spaces and
/// joiners, byte-order marks, direction marks and overrides, tags) show as
/// nothing, or turn the text around them: a name holding one looks like
/// another name, in a log or a NOT_FOUND alike.
fn is_format(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format
}

/// What keeps `value` from naming a cloud object (a flavor, a zone, a
/// project, a volume, a network), if anything does. Whitespace around a
/// name (pasted, or padded by a form) names nothing the cloud has, and
/// would be refused later as a thing not found, by a message that does not
/// show it (a tenant id so sent would even tag a volume with it); so would
/// an invisible format character in it ([`is_format`]). The value is
/// quoted, so the caller sees what was sent.
pub fn name_problem(value: &str) -> Option<String> {
    const MAX: usize = 255;
    if value.trim().is_empty() {
        Some("is required".into())
    } else if value.chars().count() > MAX {
        Some(format!(
            "must be at most {MAX} characters, got {}",
            value.chars().count()
        ))
    } else if value.chars().any(char::is_control) {
        Some(format!(
            "{value:?} holds control characters; send the name without them"
        ))
    } else if value.chars().any(is_format) {
        Some(format!(
            "{value:?} holds invisible format characters (shown escaped: a zero-width space, a byte-order mark, a direction mark); send the name without them"
        ))
    } else if value.trim() != value {
        Some(format!(
            "{value:?} has whitespace around it; send the name without it ({:?})",
            value.trim()
        ))
    } else {
        None
    }
}

/// What keeps `id` from being one segment of a cloud API's URL path (an
/// object id the OpenStack driver puts there: `/networks/{id}`), if
/// anything does. The URL join under osauth drops a `.` or `..` segment,
/// so `GET /networks/..` went out as `GET /networks`, the listing of
/// every network, which no retry turns into the one asked for; a `/`
/// would be sent escaped and name no object either. One rule for the
/// ids an order or the config carries there and for the driver's own
/// check of every call it sends.
pub fn path_segment_problem(id: &str) -> Option<String> {
    if id.is_empty() || id == "." || id == ".." {
        Some(format!(
            "{id:?} names no object: an id goes into the cloud API's URL path, which drops an empty, \".\" or \"..\" segment"
        ))
    } else if id.contains('/') {
        Some(format!(
            "{id:?} holds a \"/\": an id goes into the cloud API's URL path as one segment"
        ))
    } else if id.chars().any(char::is_control) {
        // The URL join drops a tab or a line break inside a segment (".\t."
        // went out as ".."); no id holds one.
        Some(format!(
            "{id:?} holds a control character, which the cloud API's URL path drops or escapes"
        ))
    } else {
        None
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.flavor, self.availability_zone)
    }
}

/// The shortest `PoolSpec::boot_timeout`: a boot (Nova's build, then
/// mysqld's start) takes longer, and each boot timed out before it is done
/// would be deleted and booted again, forever.
pub const MIN_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `PoolSpec::boot_timeout`: a boot that has not answered in a
/// day never will.
pub const MAX_BOOT_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest `PoolSpec::max_age`: a boot takes a minute or more, so an
/// instance expiring sooner is replaced about as fast as it is booted, and
/// a pool keeps booting for nothing (a "1s" meant as "1d").
pub const MIN_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// The longest `PoolSpec::max_age`: a year as humantime counts it ("1y",
/// 365.25 days), so the limit prints as what an operator may write. Unset
/// means "never".
pub const MAX_MAX_AGE: Duration = Duration::from_secs(31_557_600);

/// The most windows a pool may have. A pool record is sent whole in every
/// GetPool, ListPools page and WatchPools update; thousands of windows would
/// make it larger than a gRPC message may be, and every listing would fail
/// for every client. A week's schedule needs a handful.
pub const MAX_WINDOWS: usize = 64;

/// The most instances a pool may count: its `min_ready`, `max_ready`, a
/// fixed target and a window's `min`. A DBaaS warm pool needs tens to
/// hundreds; a count of billions (4294967295 sent for "no limit") would
/// have the pool take the project's whole quota and every other pool stop
/// refilling. The API and the config file refuse a larger one alike.
pub const MAX_POOL_INSTANCES: u32 = 10_000;

/// What an operator sets for a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Never fewer than this many instances ready, warming or booting.
    pub min_ready: u32,
    /// Never more than this many.
    pub max_ready: u32,
    /// How deep the pool is kept: a fixed number, or sized from measured
    /// demand and lead time (see `crate::sizing`). Always within
    /// `min_ready..=max_ready`.
    #[serde(default)]
    pub target: Target,
    /// Image the pool's servers boot from.
    pub image: String,
    /// A server not Ready this long after the boot request is discarded.
    pub boot_timeout: Duration,
    /// Ready instances older than this are replaced (`None`: never).
    pub max_age: Option<Duration>,
    /// A paused pool boots nothing, a purchase's cold boot included (it
    /// is refused as a fail-fast purchase is), but still hands out what
    /// it has, and retires Ready instances above `max_ready`. Boots
    /// started before the pause go on.
    pub paused: bool,
    /// Operator windows raising `min_ready` while open
    /// ("Mon-Fri 09:00-18:00 min 10"). Absent in records stored before they
    /// existed: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// The flavor's disk IOPS limit (front-end QoS), if any; with
    /// `volume_iops_limit` it sets the lead-time prior before any boot is
    /// observed (`crate::sizing::lead_time_prior`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops_limit: Option<u32>,
    /// The IOPS limit of the volume type the pool's databases use, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_iops_limit: Option<u32>,
}

impl PoolSpec {
    /// The number of unclaimed instances the replenisher keeps for a fixed
    /// target. For `Target::Auto` this is only the floor (`min_ready`); the
    /// sizing module computes the real target from demand and lead time.
    pub fn effective_target(&self) -> u32 {
        match self.target {
            Target::Fixed(n) => n.max(self.min_ready).min(self.max_ready),
            Target::Auto => self.min_ready.min(self.max_ready),
        }
    }

    pub fn is_auto(&self) -> bool {
        self.target == Target::Auto
    }

    /// Checks the spec's own consistency; the error names the field (the
    /// first of [`Self::problems`]).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every rule the spec breaks, each naming its field, in the order
    /// [`Self::validate`] reports them.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        // First, so the field named is the one that is too large rather
        // than the one it was compared with.
        let fixed = match self.target {
            Target::Fixed(n) => Some(n),
            Target::Auto => None,
        };
        let window_min = self.windows.iter().map(|w| w.min).max();
        for (field, count) in [
            ("min_ready", Some(self.min_ready)),
            ("max_ready", Some(self.max_ready)),
            ("target", fixed),
            ("windows", window_min),
        ] {
            if let Some(count) = count.filter(|n| *n > MAX_POOL_INSTANCES) {
                let name = if field == "windows" {
                    "a window's min"
                } else {
                    field
                };
                problems.push((
                    field,
                    format!(
                        "{name} must be at most {MAX_POOL_INSTANCES} instances, got {count}: no warm pool needs more, and a pool that large would take the project's whole quota from every other pool"
                    ),
                ));
            }
        }
        if self.max_ready < self.min_ready {
            problems.push((
                "max_ready",
                format!(
                    "max_ready ({}) is below min_ready ({}): raise max_ready or lower min_ready",
                    self.max_ready, self.min_ready
                ),
            ));
        }
        if self.image.trim().is_empty() {
            problems.push(("image", "image must name the image to boot".into()));
        } else if let Some(problem) = name_problem(&self.image) {
            problems.push(("image", format!("image {problem}")));
        }
        if self.boot_timeout < MIN_BOOT_TIMEOUT {
            problems.push((
                "boot_timeout",
                format!(
                    "boot_timeout must be at least {}, got {}: a boot takes longer, and one timed out sooner is booted again forever",
                    humantime::format_duration(MIN_BOOT_TIMEOUT),
                    humantime::format_duration(self.boot_timeout)
                ),
            ));
        }
        if let Some(max_age) = self.max_age.filter(|age| *age < MIN_MAX_AGE) {
            problems.push((
                "max_age",
                format!(
                    "max_age must be at least {}, got {}: instances would be replaced about as fast as they boot",
                    humantime::format_duration(MIN_MAX_AGE),
                    humantime::format_duration(max_age)
                ),
            ));
        }
        // Both become Instant deadlines or wall-clock ages: an absurd value
        // overflows them, and nothing an operator means lies beyond these.
        for (field, value, limit) in [
            ("boot_timeout", Some(self.boot_timeout), MAX_BOOT_TIMEOUT),
            ("max_age", self.max_age, MAX_MAX_AGE),
        ] {
            if let Some(value) = value.filter(|v| *v > limit) {
                problems.push((
                    field,
                    format!(
                        "{field} must be at most {}, got {}",
                        humantime::format_duration(limit),
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        if let Target::Fixed(n) = self.target {
            if n > self.max_ready {
                problems.push((
                    "target",
                    format!(
                        "target {n} is above max_ready ({}): the pool would never hold it (lower the target or raise max_ready)",
                        self.max_ready
                    ),
                ));
            }
        }
        if self.windows.len() > MAX_WINDOWS {
            problems.push((
                "windows",
                format!("at most {MAX_WINDOWS} windows, got {}", self.windows.len()),
            ));
        }
        if let Some(w) = self.windows.iter().find(|w| w.min > self.max_ready) {
            problems.push((
                "windows",
                format!(
                    "window \"{w}\" asks for min {} above max_ready ({})",
                    w.min, self.max_ready
                ),
            ));
        }
        for (field, limit) in [
            ("iops_limit", self.iops_limit),
            ("volume_iops_limit", self.volume_iops_limit),
        ] {
            if limit == Some(0) {
                problems.push((
                    field,
                    format!("{field} must be positive (omit it for none)"),
                ));
            }
        }
        problems
    }

    /// `min_ready`, raised by the windows open at `at`.
    pub fn min_ready_at(&self, at: std::time::SystemTime) -> u32 {
        crate::schedule::scheduled_min(&self.windows, at)
            .map_or(self.min_ready, |m| m.max(self.min_ready))
    }

    /// The highest `min_ready_at` from `at` to `at + span`: a window opening
    /// within `span` counts from now.
    pub fn min_ready_within(&self, at: std::time::SystemTime, span: std::time::Duration) -> u32 {
        let until = at.checked_add(span).unwrap_or(at);
        crate::schedule::highest_min_within(&self.windows, at, until)
            .map_or(self.min_ready, |m| m.max(self.min_ready))
    }
}

/// A pool's target depth: `Fixed(n)` keeps `n` (raised to `min_ready`, so
/// `Fixed(0)`, the default, means "min_ready"); `Auto` sizes the pool from
/// measured demand and boot lead time.
///
/// Stored and configured as a number (`3`), `"auto"`, or `null` (an old
/// record's "no target": `Fixed(0)`). Strings `"fixed 3"`, `"3"` and
/// `"min_ready"` are accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Auto,
    Fixed(u32),
}

impl Default for Target {
    fn default() -> Self {
        Self::Fixed(0)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(0) => f.write_str("min_ready"),
            Self::Fixed(n) => write!(f, "fixed {n}"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let number = lower.strip_prefix("fixed").map(str::trim).unwrap_or(&lower);
        match lower.as_str() {
            "auto" => Ok(Self::Auto),
            "min_ready" | "min-ready" | "" => Ok(Self::Fixed(0)),
            _ => number
                .parse()
                .map(Self::Fixed)
                .map_err(|_| ParseTargetError(s.to_string())),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_u32(*n),
        }
    }
}

/// Reads what [`Target`]'s `FromStr` reads, a number (null: 0) too; an
/// error says what a target may be, whatever was given.
impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected, Visitor};
        struct TargetVisitor;
        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", a number from 0 to 4294967295, or \"fixed N\"")
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<Target, E> {
                u32::try_from(n)
                    .map(Target::Fixed)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<Target, E> {
                let n =
                    u64::try_from(n).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))?;
                self.visit_u64(n)
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Target, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_unit<E: Error>(self) -> Result<Target, E> {
                Ok(Target::Fixed(0))
            }
            fn visit_none<E: Error>(self) -> Result<Target, E> {
                Ok(Target::Fixed(0))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Target, D::Error> {
                d.deserialize_any(self)
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

/// A target string that is not `auto`, a number or `fixed N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target must be \"auto\", a number, or \"fixed N\"; got {0:?}")]
pub struct ParseTargetError(pub String);

/// A pool as stored: the spec plus lifetime counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRecord {
    pub key: PoolKey,
    pub spec: PoolSpec,
    /// Set by DeletePool: no more boots, unclaimed instances are deleted, and
    /// the record goes once nothing unclaimed is left.
    pub draining: bool,
    /// Allocates served from an instance they found Ready.
    pub allocations_warm: u64,
    /// Allocates served by a boot of their own (COLD_BOOT).
    pub allocations_cold: u64,
    /// Allocates served from an instance that became Ready while they
    /// waited for one (WAIT): no warm hit, the pool was too shallow for
    /// them. Records stored before it was kept have none (their waits are
    /// among the warm ones); not written while 0, so a version without it
    /// still reads a pool whose purchases never waited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allocations_waited: u64,
    /// Allocates that failed once under way (after the order's record
    /// was written), for any reason.
    pub allocations_failed: u64,
    /// Allocates refused for want of a Ready instance
    /// (`AllocationOutcome::Exhausted`), counted as the metrics count
    /// them, a refusal before the order was recorded too: with the warm,
    /// cold and waited ones, what the pool's hit rate is made of. Records stored
    /// before it was kept have none; not written while 0, so a version
    /// without it still reads a pool that never ran out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allocations_exhausted: u64,
    pub last_error: Option<String>,
    /// When `last_error` happened; records written before it was kept
    /// have none.
    #[serde(default)]
    pub last_error_at: Option<SystemTime>,
}

impl PoolRecord {
    pub fn new(key: PoolKey, spec: PoolSpec) -> Self {
        Self {
            key,
            spec,
            draining: false,
            allocations_warm: 0,
            allocations_cold: 0,
            allocations_waited: 0,
            allocations_failed: 0,
            allocations_exhausted: 0,
            last_error: None,
            last_error_at: None,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Ordered as the state machine runs (`ALL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    Booting,
    Warming,
    Ready,
    Claimed,
    Allocated,
    Releasing,
    Failed,
    Deleting,
}

impl InstanceState {
    /// Every state, in the order of the state machine.
    pub const ALL: [InstanceState; 8] = [
        Self::Booting,
        Self::Warming,
        Self::Ready,
        Self::Claimed,
        Self::Allocated,
        Self::Releasing,
        Self::Failed,
        Self::Deleting,
    ];

    /// Counts toward the pool's target: will be (or is) available to claim.
    pub fn is_supply(self) -> bool {
        matches!(self, Self::Booting | Self::Warming | Self::Ready)
    }

    /// Ever handed to a tenant (or about to be): must never return to a pool.
    /// One exception: a `Claimed` instance whose failed try sent no attach
    /// the cloud may have acted on (each refused 429/413) goes back
    /// `Ready` (`allocator::AttachCalls`): no tenant's volume or port ever
    /// reached it.
    pub fn is_tenant_touched(self) -> bool {
        matches!(self, Self::Claimed | Self::Allocated | Self::Releasing)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// warmpool's id, also written into the server's metadata.
    pub id: String,
    pub pool: PoolKey,
    /// Unknown until the cloud answers the create call.
    pub server_id: Option<String>,
    pub state: InstanceState,
    /// When its boot was requested: a resumed boot's `boot_timeout`
    /// counts from it. A boot a restart keeps, `Deleting`, for a create
    /// that may land late: when it was first kept so, which
    /// [`crate::reconciler::LATE_CREATE_GRACE`] counts from.
    pub created_at: SystemTime,
    pub ready_at: Option<SystemTime>,
    pub attempts: u32,
    /// Why it is being deleted; while Warming, why mysqld does not answer
    /// the probe yet (cleared at Ready).
    pub last_error: Option<String>,
    /// The allocation holding it, once claimed; for a cold boot, from birth.
    pub request_id: Option<String>,
    /// Where mysqld listens on the management network, once known.
    pub mysql_addr: Option<SocketAddr>,
    /// The image its server boots from, as the cloud named it when the
    /// instance was recorded ([`crate::cloud::Cloud::boot_image`]: the
    /// pool's, or the one image a cloud boots for every pool): a pool whose
    /// image changed replaces its Ready instances of the old one. `None` in
    /// records stored before instances kept it, until the pool's replenisher
    /// takes them to be of the pool's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Instance {
    /// A booted-for-one-request instance never counts toward pool supply.
    pub fn counts_as_supply(&self) -> bool {
        self.state.is_supply() && self.request_id.is_none()
    }

    /// Booted from an image other than `image` (the one its pool boots
    /// now). Not an instance whose image is unknown (recorded before
    /// instances kept it).
    pub fn is_of_other_image(&self, image: &str) -> bool {
        self.image.as_deref().is_some_and(|own| own != image)
    }

    /// Of `pool`, and no tenant has touched it: what
    /// [`crate::store::Store::list_untouched_instances`] lists.
    pub fn is_untouched_in(&self, pool: &PoolKey) -> bool {
        &self.pool == pool && !self.state.is_tenant_touched()
    }
}

/// Where the tenant's data volume comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum VolumeSource {
    Existing {
        volume_id: String,
    },
    New {
        size_gib: u32,
        volume_type: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    pub source: VolumeSource,
    pub delete_on_release: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    pub network_id: String,
    pub subnet_id: Option<String>,
    pub fixed_ip: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmptyPoolPolicy {
    Wait,
    FailFast,
    ColdBoot,
}

/// The parameters that define an allocation. Two Allocate calls with one
/// request id must carry equal parameters; how long to wait and what to do
/// on an empty pool are properties of the call, not of the allocation, so a
/// retry may change them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationParams {
    pub request_id: String,
    pub tenant_project_id: String,
    pub pool: PoolKey,
    pub volume: VolumeRequest,
    pub network: NetworkRequest,
    pub labels: BTreeMap<String, String>,
}

/// `id` as the cloud writes it: OpenStack's ids are UUIDs, which Cinder,
/// Neutron and Keystone (on MySQL, whose collation ignores case) find in
/// any case but always answer in lower case. An id sent in upper case
/// would then never equal the one the cloud lists (Nova's attachment of
/// the volume, a volume's project). Anything not shaped as a UUID (a
/// name) is kept as it is.
pub fn canonical_id(id: &str) -> String {
    // The hyphenated and the simple (Keystone's) forms only: a braced or
    // URN form is no id the cloud takes.
    let uuid_shaped = matches!(id.len(), 32 | 36) && uuid::Uuid::try_parse(id).is_ok();
    if uuid_shaped {
        id.to_ascii_lowercase()
    } else {
        id.to_owned()
    }
}

impl AllocationParams {
    /// These parameters with every id among them in its canonical form
    /// ([`canonical_id`]) and the fixed IP in its standard text form: what
    /// is stored and compared, so the same order sent with its ids in
    /// another case, or its address written another way, is the same order.
    pub fn canonical(mut self) -> Self {
        let canonical = |id: &mut String| *id = canonical_id(id);
        canonical(&mut self.tenant_project_id);
        match &mut self.volume.source {
            VolumeSource::Existing { volume_id } => canonical(volume_id),
            VolumeSource::New { volume_type, .. } => volume_type.iter_mut().for_each(canonical),
        }
        canonical(&mut self.network.network_id);
        self.network.subnet_id.iter_mut().for_each(canonical);
        // An address, not text: `2001:DB8::1` and `2001:db8:0::1` are the
        // same order's. One that does not parse is kept for validation to
        // refuse.
        if let Some(ip) = &mut self.network.fixed_ip {
            if let Ok(parsed) = ip.parse::<std::net::IpAddr>() {
                *ip = parsed.to_string();
            }
        }
        self
    }

    /// The request fields in which `other` differs from these, by their
    /// API paths down to the volume's and network's own fields (an ABORTED
    /// answer says which, so billing can tell what of its order changed).
    pub fn differences(&self, other: &AllocationParams) -> Vec<&'static str> {
        // Every field by name: a field added later cannot be forgotten here.
        let AllocationParams {
            request_id,
            tenant_project_id,
            pool: PoolKey {
                flavor,
                availability_zone,
            },
            volume:
                VolumeRequest {
                    source,
                    delete_on_release,
                },
            network:
                NetworkRequest {
                    network_id,
                    subnet_id,
                    fixed_ip,
                },
            labels,
        } = self;
        // The volume's source by the fields the API sends it in: of one
        // kind, the field that differs; of two, both (each is set in one
        // request and not in the other).
        let (existing_volume_id, new_volume, size_gib, volume_type) =
            match (source, &other.volume.source) {
                (
                    VolumeSource::Existing { volume_id },
                    VolumeSource::Existing { volume_id: theirs },
                ) => (volume_id != theirs, false, false, false),
                (
                    VolumeSource::New {
                        size_gib,
                        volume_type,
                    },
                    VolumeSource::New {
                        size_gib: their_size,
                        volume_type: their_type,
                    },
                ) => (
                    false,
                    false,
                    size_gib != their_size,
                    volume_type != their_type,
                ),
                _ => (true, true, false, false),
            };
        [
            ("request_id", *request_id != other.request_id),
            (
                "tenant_project_id",
                *tenant_project_id != other.tenant_project_id,
            ),
            ("flavor", *flavor != other.pool.flavor),
            (
                "availability_zone",
                *availability_zone != other.pool.availability_zone,
            ),
            ("volume.existing_volume_id", existing_volume_id),
            ("volume.new_volume", new_volume),
            ("volume.new_volume.size_gib", size_gib),
            ("volume.new_volume.volume_type", volume_type),
            (
                "volume.delete_on_release",
                *delete_on_release != other.volume.delete_on_release,
            ),
            (
                "network.network_id",
                *network_id != other.network.network_id,
            ),
            ("network.subnet_id", *subnet_id != other.network.subnet_id),
            ("network.fixed_ip", *fixed_ip != other.network.fixed_ip),
            ("labels", *labels != other.labels),
        ]
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationState {
    /// Intent recorded: from before the tenant's volume and port are made,
    /// through a wait for an instance (none named), to the claim and the
    /// attach. Left so by a failed Allocate whose rollback could not
    /// finish, until a reconcile pass finishes it.
    Allocating,
    /// Acknowledged to the caller.
    Allocated,
    Releasing,
    Released,
}

impl AllocationState {
    /// An Allocate or Release is (or was, before a crash) working on it.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Allocating | Self::Releasing)
    }
}

/// Where an Allocate spent its time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTimings {
    /// Waiting for a Ready instance or a cold boot.
    pub wait: Duration,
    pub claim: Duration,
    /// Creating a new volume (before the claim) and attaching it, over
    /// every instance tried.
    pub volume: Duration,
    /// Creating the port and attaching it, over every instance tried.
    pub port: Duration,
    pub verify: Duration,
    pub total: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub params: AllocationParams,
    pub state: AllocationState,
    /// Served from an instance it found Ready on arrival: false for a cold
    /// boot, and for an instance that became Ready while it waited; false
    /// while no instance is claimed (a failed try clears it).
    pub warm_hit: bool,
    pub instance_id: Option<String>,
    pub server_id: Option<String>,
    pub volume_id: Option<String>,
    /// warmpool created the volume (and so may delete it on rollback).
    pub volume_created: bool,
    pub port_id: Option<String>,
    pub ip_address: Option<String>,
    pub timings: StepTimings,
    pub created_at: SystemTime,
    /// Decided at Release; `None` until then.
    pub delete_volume_on_release: Option<bool>,
    /// When the release finished, on the manager's wall clock (see
    /// `ManagerSettings::keep_released`). `None` before, and in records
    /// stored before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<SystemTime>,
    /// Tells this use of the request id from an earlier one that
    /// `keep_released` forgot (whose tenant may still keep its volume):
    /// the volume and port of each are named apart, so a rollback or a
    /// lost create's lookup by name never takes the other's. `None` in
    /// records stored before it existed; their names are the request id's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// A volume or port create got an answer that did not say whether it
    /// was done (a 5xx, a timeout): a twin named as this allocation's may
    /// exist, or land later. Its name is watched for a while after the
    /// commit or the rollback ([`TwinWatch`]), and looked for at release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creates_in_doubt: bool,
    /// `twins_swept`, stored (when true) by the versions that recorded the
    /// one look for twins after a commit (2e51ef0, until 2c00f18 replaced
    /// it by the commit's [`TwinWatch`]).
    #[serde(default, skip_serializing)]
    twins_swept: Retired,
}

/// The name of an allocation's volume and port, watched after a create of
/// it may have been done without warmpool learning its id (its answer was
/// lost, or a crash came first): that create may land after any one look,
/// so the reconciler looks on every pass until `until`, and deletes what
/// carries the name but `keep`. Written before the commit (keeping what
/// the allocation uses) or the rollback (keeping nothing: a new attempt of
/// the order is named apart, so the name is never used again). A rollback
/// also writes one for its own new volume when Cinder refuses to delete it
/// (`error_attaching`, until an admin resets it), and a rollback or a
/// release for a volume it deletes, before the delete is sent, and a
/// release, a rollback or a failed try for a port it leaves bound to a
/// SOFT_DELETED server (`bound_ports`), before the record stops naming it.
/// Every volume of the name a delete was accepted for is named too
/// (`deleted_volumes`): a watch lasts past `until` until a pass has
/// deleted everything it names, and seen each of those volumes gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinWatch {
    /// [`Allocation::resource_name`] of the attempt.
    pub name: String,
    pub request_id: String,
    /// The order's pool, for the announcement of a volume stuck. `None` in
    /// watches stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolKey>,
    /// warmpool created volumes of this name (a new volume was asked for);
    /// otherwise only ports are looked for.
    pub volumes: bool,
    /// Ids of the committed allocation's own port and volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// The rolled-back attempt's new volume Cinder kept `error_attaching`,
    /// until a pass has deleted it: the order makes no other new volume
    /// meanwhile, and the metrics count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_volume: Option<String>,
    /// Volumes whose delete Cinder accepted and that nothing else names: a
    /// rollback's or a release's (maybe the tenant's), and those a look
    /// by the name deleted or found being deleted. Cinder's backend may
    /// still fail a delete (`error_deleting`), so passes look at each until
    /// Cinder answers 404, past `until` too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_volumes: Vec<DeletedVolume>,
    /// The watch is for its deleted volumes only (no create of the order
    /// lost its answer): passes look at them by id and list nothing by the
    /// order's name, which would cost every release with a volume deleted
    /// two listings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted_only: bool,
    /// Ports of the order (the tenant's, a failed try's) still bound to a
    /// server the cloud keeps SOFT_DELETED until Nova's reclaim, its
    /// forceDelete refused: Nova detaches no port from such a server and
    /// Neutron lets a project member delete no bound port, so a release, a
    /// rollback or a failed try hands each here rather than wait for the
    /// reclaim (hours, days). Passes send each a delete, without waiting,
    /// until Neutron takes it; the watch lasts until then, past `until`
    /// too. A look by the name never takes them for twins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_ports: Vec<String>,
    /// On the manager's wall clock.
    pub until: SystemTime,
}

/// See [`TwinWatch::deleted_volumes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedVolume {
    pub id: String,
    /// Cinder's backend failed the delete (`error_deleting`): counted as
    /// stuck until an admin resets it, and announced once, by the pass
    /// that marked it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stuck: bool,
}

impl TwinWatch {
    /// Passes list what carries the name (and delete it but `keep`); a
    /// watch of deleted volumes alone has them looked at by id only.
    pub fn lists_by_name(&self) -> bool {
        !self.deleted_only || self.stuck_volume.is_some()
    }

    /// Names `volume_id` among the deleted volumes, once.
    pub fn note_deleted(&mut self, volume_id: &str) {
        if !self.deleted_volumes.iter().any(|d| d.id == volume_id) {
            self.deleted_volumes.push(DeletedVolume {
                id: volume_id.to_owned(),
                stuck: false,
            });
        }
    }

    /// Names `port_id` among the ports left bound, once.
    pub fn note_bound_port(&mut self, port_id: &str) {
        if !self.bound_ports.iter().any(|p| p == port_id) {
            self.bound_ports.push(port_id.to_owned());
        }
    }

    /// The volumes it names that Cinder refuses to delete until an admin
    /// resets them: `error_attaching` or `error_deleting`.
    pub fn stuck_volumes(&self) -> impl Iterator<Item = &str> {
        let deleted = self.deleted_volumes.iter().filter(|d| d.stuck);
        self.stuck_volume
            .as_deref()
            .into_iter()
            .chain(deleted.map(|d| d.id.as_str()))
    }

    /// Makes this watch, about to be written in place of `stored` (the
    /// watch of its name as stored now), follow up what `stored` does: its
    /// deleted volumes with their stuck marks (so none is announced
    /// twice), but the one this watch names stuck `error_attaching` (its
    /// delete was refused); its ports left bound; its stuck volume, its look by the name and its
    /// end, whichever is later. What it keeps is its own: a release's
    /// watch keeps nothing of the commit's, whose port and volume are
    /// going.
    pub fn absorb(&mut self, stored: &TwinWatch) {
        for older in &stored.deleted_volumes {
            if self.stuck_volume.as_ref() == Some(&older.id) {
                // Named before its delete was sent, which Cinder refused:
                // stuck, not deleted.
                continue;
            }
            match self.deleted_volumes.iter_mut().find(|d| d.id == older.id) {
                Some(deleted) => deleted.stuck |= older.stuck,
                None => self.deleted_volumes.push(older.clone()),
            }
        }
        for port_id in &stored.bound_ports {
            self.note_bound_port(port_id);
        }
        if self.stuck_volume.is_none() {
            self.stuck_volume.clone_from(&stored.stuck_volume);
        }
        if self.pool.is_none() {
            self.pool.clone_from(&stored.pool);
        }
        self.deleted_only &= stored.deleted_only;
        self.until = self.until.max(stored.until);
    }
}

/// How long a [`TwinWatch`] lasts: far longer than a create takes to land
/// after its answer was lost on the way.
pub const TWIN_WATCH: Duration = Duration::from_secs(15 * 60);

impl Allocation {
    /// A new order's record; `salt` is the random part of its attempt's
    /// name (see below).
    pub fn new(params: AllocationParams, salt: u32) -> Self {
        let created_at = SystemTime::now();
        // Tells it from a forgotten use of the id, which began at least
        // `keep_released` (a day) earlier, and from a rolled-back attempt
        // of this order, whose name a twin watch may still delete: in the
        // same millisecond, or after the clock stepped back, only the
        // random part does.
        let millis = created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let attempt = format!("{millis:x}{salt:08x}");
        Self {
            params,
            state: AllocationState::Allocating,
            warm_hit: false,
            instance_id: None,
            server_id: None,
            volume_id: None,
            volume_created: false,
            port_id: None,
            ip_address: None,
            timings: StepTimings::default(),
            created_at,
            delete_volume_on_release: None,
            released_at: None,
            attempt: Some(attempt),
            creates_in_doubt: false,
            twins_swept: Retired,
        }
    }

    /// The name given to the volume and port warmpool creates for this
    /// request, so a crash between create and record can still find them.
    pub fn resource_name(&self) -> String {
        let names = resource_names_of(&self.params.request_id);
        match &self.attempt {
            Some(attempt) => format!("{names}-{attempt}"),
            None => names,
        }
    }

    /// It is `Released`, and was released before `before` (created
    /// before it, for records from before release times were kept).
    pub fn released_before(&self, before: SystemTime) -> bool {
        self.state == AllocationState::Released
            && self.released_at.unwrap_or(self.created_at) < before
    }
}

/// How every [`Allocation::resource_name`] of the order `request_id`
/// starts, and so the name of every [`TwinWatch`] of it; so do the names of
/// other orders whose ids start with `request_id`.
pub fn resource_names_of(request_id: &str) -> String {
    format!("warmpool-{request_id}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> PoolSpec {
        PoolSpec {
            min_ready: 1,
            max_ready: 2,
            target: Target::default(),
            image: "mysql-8.0".into(),
            boot_timeout: Duration::from_secs(15 * 60),
            max_age: None,
            paused: false,
            windows: Vec::new(),
            iops_limit: None,
            volume_iops_limit: None,
        }
    }

    #[test]
    fn resources_are_named_per_use_of_a_request_id_and_old_records_keep_their_names() {
        let params = AllocationParams {
            request_id: "order-7".into(),
            tenant_project_id: "tenant-a".into(),
            pool: PoolKey::new("db.small", "az1"),
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 10,
                    volume_type: None,
                },
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: "net".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: BTreeMap::new(),
        };
        let new = Allocation::new(params.clone(), 1);
        let name = new.resource_name();
        assert!(name.starts_with("warmpool-order-7-"), "{name}");
        // A retry made at once is named apart from the attempt before it.
        let retry = Allocation::new(params, 2);
        assert_ne!(retry.resource_name(), name);
        // A record stored before `attempt` existed reads, and names its
        // resources as they were created: by the request id alone.
        let mut stored = serde_json::to_value(&new).unwrap();
        stored.as_object_mut().unwrap().remove("attempt");
        let old: Allocation = serde_json::from_value(stored).unwrap();
        assert_eq!(old.attempt, None);
        assert_eq!(old.resource_name(), "warmpool-order-7");
    }

    #[test]
    fn ids_are_canonical_in_lower_case_and_names_are_kept() {
        let upper = "C9FBA417-A2D8-49ED-886C-0F3F03F94EC8";
        assert_eq!(canonical_id(upper), upper.to_ascii_lowercase());
        assert_eq!(
            canonical_id("0A1B2C3D4E5F60718293A4B5C6D7E8F9"),
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
        );
        for kept in [
            "Tenant-Net",
            "tenant-A",
            "{C9FBA417-A2D8-49ED-886C-0F3F03F94EC8}",
            "C9FBA417-A2D8-49ED-886C-0F3F03F94EC8 ",
        ] {
            assert_eq!(canonical_id(kept), kept);
        }

        let net = "5D6E7F80-1A2B-4C3D-9E8F-A0B1C2D3E4F5";
        let params = AllocationParams {
            request_id: "Order-7".into(),
            tenant_project_id: "0A1B2C3D4E5F60718293A4B5C6D7E8F9".into(),
            pool: PoolKey::new("DB.small", "AZ1"),
            volume: VolumeRequest {
                source: VolumeSource::Existing {
                    volume_id: upper.into(),
                },
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: net.into(),
                subnet_id: Some("Subnet-A".into()),
                fixed_ip: None,
            },
            labels: BTreeMap::from([("Plan".into(), "GOLD".into())]),
        };
        let canonical = params.clone().canonical();
        assert_eq!(
            canonical.tenant_project_id,
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
        );
        assert_eq!(
            canonical.volume.source,
            VolumeSource::Existing {
                volume_id: upper.to_ascii_lowercase()
            }
        );
        assert_eq!(canonical.network.network_id, net.to_ascii_lowercase());
        // Names, the order's own id and labels are the caller's, in its case.
        assert_eq!(canonical.network.subnet_id.as_deref(), Some("Subnet-A"));
        assert_eq!(canonical.request_id, params.request_id);
        assert_eq!(canonical.pool, params.pool);
        assert_eq!(canonical.labels, params.labels);
        assert_eq!(canonical.clone().canonical(), canonical);
    }

    /// A pool record stored before errors kept their time reads as one
    /// whose error has none.
    #[test]
    fn pool_records_without_an_error_time_still_read() {
        let mut stored =
            serde_json::to_value(PoolRecord::new(PoolKey::new("db.small", "az1"), spec())).unwrap();
        stored["last_error"] = "boot failed".into();
        stored.as_object_mut().unwrap().remove("last_error_at");
        let old: PoolRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(old.last_error.as_deref(), Some("boot failed"));
        assert_eq!(old.last_error_at, None);
    }

    /// A pool record stored before purchases that waited were counted
    /// reads as one without any; one without any is written as before, so
    /// an older build still reads it, and one with some keeps them.
    #[test]
    fn pool_records_without_waited_purchases_read_and_write_as_before() {
        let new = PoolRecord::new(PoolKey::new("db.small", "az1"), spec());
        let mut stored = serde_json::to_value(&new).unwrap();
        assert_eq!(stored.get("allocations_waited"), None, "{stored}");
        stored["allocations_warm"] = 3.into();
        let old: PoolRecord = serde_json::from_value(stored).unwrap();
        assert_eq!((old.allocations_warm, old.allocations_waited), (3, 0));
        let mut waited = old;
        waited.allocations_waited = 2;
        let written = serde_json::to_value(&waited).unwrap();
        assert_eq!(written["allocations_waited"], 2, "{written}");
        assert_eq!(
            serde_json::from_value::<PoolRecord>(written).unwrap(),
            waited
        );
    }

    /// A record stored before instances kept their image reads as one
    /// whose image is unknown, and one that has it writes it.
    #[test]
    fn instance_records_without_an_image_still_read() {
        let stored = serde_json::json!({
            "id": "i1",
            "pool": {"flavor": "db.small", "availability_zone": "az1"},
            "server_id": "s1",
            "state": "Ready",
            "created_at": {"secs_since_epoch": 1, "nanos_since_epoch": 0},
            "ready_at": {"secs_since_epoch": 2, "nanos_since_epoch": 0},
            "attempts": 1,
            "last_error": null,
            "request_id": null,
            "mysql_addr": null
        });
        let mut old: Instance = serde_json::from_value(stored).unwrap();
        assert_eq!(old.image, None);
        old.image = Some("mysql-8.4".into());
        let written = serde_json::to_value(&old).unwrap();
        assert_eq!(written["image"], "mysql-8.4");
    }

    /// Nova's and Cinder's names are up to 255 characters, not bytes.
    #[test]
    fn names_are_measured_in_characters() {
        assert_eq!(name_problem(&"é".repeat(255)), None);
        assert!(name_problem(&"é".repeat(256)).is_some());
        assert!(name_problem("db\nsmall").is_some());
        assert!(name_problem("  ").is_some());
    }

    /// Whitespace around a name, or a control character in it, is refused
    /// with the value quoted; inside a name a space is the cloud's to judge.
    #[test]
    fn names_with_whitespace_around_them_are_refused_quoted() {
        for name in ["az1 ", " az1", "db.small\u{a0}", "az1\t", "a\u{1b}[2J"] {
            let problem = name_problem(name).unwrap_or_else(|| panic!("{name:?} passed"));
            assert!(problem.contains(&format!("{name:?}")), "{problem}");
        }
        assert_eq!(name_problem("General Purpose SSD"), None);
        let key = PoolKey::new("db.small", "az1 ");
        let (field, message) = key.validate().unwrap_err();
        assert_eq!(field, "availability_zone");
        assert!(message.contains("\"az1 \""), "{message}");
    }

    /// An ABORTED answer names the very field of the volume and network
    /// that differs, by its API path, so billing can tell which of its
    /// order's parameters changed.
    #[test]
    fn differences_name_the_volume_and_network_field() {
        let params = AllocationParams {
            request_id: "o-1".into(),
            tenant_project_id: "tenant-a".into(),
            pool: PoolKey::new("db.small", "az1"),
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 20,
                    volume_type: None,
                },
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: "net".into(),
                subnet_id: Some("sub".into()),
                fixed_ip: Some("10.0.0.5".into()),
            },
            labels: BTreeMap::new(),
        };
        type Change = fn(&mut AllocationParams);
        let cases: [(Change, &[&str]); 8] = [
            (
                |p| p.volume.delete_on_release = true,
                &["volume.delete_on_release"],
            ),
            (
                |p| {
                    p.volume.source = VolumeSource::New {
                        size_gib: 30,
                        volume_type: None,
                    }
                },
                &["volume.new_volume.size_gib"],
            ),
            (
                |p| {
                    p.volume.source = VolumeSource::New {
                        size_gib: 20,
                        volume_type: Some("ssd".into()),
                    }
                },
                &["volume.new_volume.volume_type"],
            ),
            (
                |p| {
                    p.volume.source = VolumeSource::Existing {
                        volume_id: "v".into(),
                    }
                },
                &["volume.existing_volume_id", "volume.new_volume"],
            ),
            (
                |p| p.network.network_id = "other".into(),
                &["network.network_id"],
            ),
            (|p| p.network.subnet_id = None, &["network.subnet_id"]),
            (
                |p| p.network.fixed_ip = Some("10.0.0.6".into()),
                &["network.fixed_ip"],
            ),
            (
                |p| {
                    p.volume.delete_on_release = true;
                    p.network.fixed_ip = None;
                },
                &["volume.delete_on_release", "network.fixed_ip"],
            ),
        ];
        for (change, named) in cases {
            let mut other = params.clone();
            change(&mut other);
            assert_eq!(params.differences(&other), named, "{other:?}");
        }
        let existing = |id: &str| {
            let mut p = params.clone();
            p.volume.source = VolumeSource::Existing {
                volume_id: id.into(),
            };
            p
        };
        assert_eq!(
            existing("v-1").differences(&existing("v-2")),
            ["volume.existing_volume_id"]
        );
        assert!(params.differences(&params).is_empty());
    }

    /// An invisible format character (Unicode's category Cf) makes a name
    /// that looks like another: refused, quoted so the caller sees it.
    /// One of each block of the category a pasted name is likely to carry.
    #[test]
    fn names_with_invisible_format_characters_are_refused_quoted() {
        for name in [
            "db.small\u{200B}", // zero-width space
            "\u{FEFF}tenant-a", // byte-order mark
            "az\u{2060}1",      // word joiner
            "db\u{202E}llams",  // right-to-left override
            "db\u{200E}.small", // left-to-right mark
            "soft\u{AD}hyphen", // soft hyphen
            "\u{061C}az1",      // Arabic letter mark
            "tag\u{E0041}",     // a tag character
        ] {
            let problem = name_problem(name).unwrap_or_else(|| panic!("{name:?} passed"));
            assert!(problem.contains(&format!("{name:?}")), "{problem}");
            assert!(problem.contains("invisible"), "{problem}");
        }
        // Letters of any script are names.
        assert_eq!(name_problem("数据库-小"), None);
        assert_eq!(name_problem("café"), None);
    }

    #[test]
    fn a_min_ready_above_max_ready_names_both_ways_out() {
        let mut spec = spec();
        spec.min_ready = 100;
        let (field, message) = spec.validate().unwrap_err();
        assert_eq!(field, "max_ready");
        assert_eq!(
            message,
            "max_ready (2) is below min_ready (100): raise max_ready or lower min_ready"
        );
    }

    /// The URL join drops a tab, a newline or a carriage return inside a
    /// segment, so ".\t." went out as "..", which drops the segment
    /// before it (`/os-keypairs/.\t.` read the version document): no id
    /// holds a control character.
    #[test]
    fn a_path_segment_with_a_control_character_is_refused() {
        for id in [".\t.", ".\n.", "net\r1", "a\u{7}b"] {
            let problem = path_segment_problem(id).unwrap_or_else(|| panic!("{id:?} taken"));
            assert!(problem.contains("control character"), "{id:?}: {problem}");
        }
        assert_eq!(path_segment_problem("0d3b5c8e-net_1.a"), None);
    }

    /// A count no warm pool needs (4294967295 sent for "no limit") would
    /// fill the project's quota and starve every other pool: refused,
    /// naming the field, the value and the bound.
    #[test]
    fn pool_counts_beyond_the_bound_are_refused_by_name() {
        let mut ok = spec();
        ok.min_ready = 10_000;
        ok.max_ready = 10_000;
        ok.target = Target::Fixed(10_000);
        ok.windows = vec!["daily 09:00-18:00 min 10000".parse().unwrap()];
        assert_eq!(ok.validate(), Ok(()));
        let mut max = spec();
        max.max_ready = u32::MAX;
        assert_eq!(
            max.validate().unwrap_err(),
            (
                "max_ready",
                "max_ready must be at most 10000 instances, got 4294967295: no warm pool needs more, and a pool that large would take the project's whole quota from every other pool".into()
            )
        );
        let mut min = max.clone();
        min.min_ready = u32::MAX;
        assert_eq!(min.validate().unwrap_err().0, "min_ready");
        let mut target = max.clone();
        target.target = Target::Fixed(10_001);
        assert!(target
            .problems()
            .iter()
            .any(|(field, message)| *field == "target" && message.contains("got 10001")));
        let mut window = max.clone();
        window.windows = vec!["daily 09:00-18:00 min 10001".parse().unwrap()];
        assert!(window
            .problems()
            .iter()
            .any(|(field, message)| *field == "windows" && message.contains("got 10001")));
    }

    #[test]
    fn windows_are_capped() {
        let window: Window = "Mon-Fri 09:00-18:00 min 1".parse().unwrap();
        let mut ok = spec();
        ok.windows = vec![window; MAX_WINDOWS];
        assert_eq!(ok.validate(), Ok(()));
        let mut many = ok.clone();
        many.windows.push(window);
        let (field, message) = many.validate().unwrap_err();
        assert_eq!(field, "windows");
        assert_eq!(message, "at most 64 windows, got 65");
    }

    #[test]
    fn durations_beyond_their_limit_are_refused_by_name() {
        let mut ok = spec();
        ok.boot_timeout = MAX_BOOT_TIMEOUT;
        ok.max_age = Some(MAX_MAX_AGE);
        assert_eq!(ok.validate(), Ok(()));

        let huge = Duration::from_secs(i64::MAX as u64);
        let mut boot = spec();
        boot.boot_timeout = huge;
        let (field, message) = boot.validate().unwrap_err();
        assert_eq!(field, "boot_timeout");
        assert!(message.contains("at most 1day"), "{message}");
        boot.boot_timeout = MAX_BOOT_TIMEOUT + Duration::from_nanos(1);
        assert_eq!(boot.validate().unwrap_err().0, "boot_timeout");
        // Below a boot's own length, every boot timed out and booted again.
        boot.boot_timeout = MIN_BOOT_TIMEOUT - Duration::from_nanos(1);
        let (field, message) = boot.validate().unwrap_err();
        assert_eq!(field, "boot_timeout");
        assert!(message.contains("at least 1m"), "{message}");
        boot.boot_timeout = MIN_BOOT_TIMEOUT;
        assert_eq!(boot.validate(), Ok(()));

        let mut age = spec();
        age.max_age = Some(huge);
        let (field, message) = age.validate().unwrap_err();
        assert_eq!(field, "max_age");
        assert!(message.contains("at most 1year"), "{message}");
        // "1s" meant as "1d": every instance replaced as soon as it is up.
        age.max_age = Some(Duration::from_secs(1));
        let (field, message) = age.validate().unwrap_err();
        assert_eq!(field, "max_age");
        assert!(message.contains("at least 10m, got 1s"), "{message}");
        age.max_age = Some(MIN_MAX_AGE);
        assert_eq!(age.validate(), Ok(()));
    }

    /// A watch written over the stored one of its name (a release's over a
    /// failed try's, the commit's over it) goes on following the ports the
    /// stored one left bound to a SOFT_DELETED server, each named once: a
    /// port dropped there would be named nowhere, bound until the reclaim
    /// and then left for good.
    #[test]
    fn a_watch_written_over_another_follows_its_bound_ports() {
        let watch = |bound: &[&str]| TwinWatch {
            name: "warmpool-o1-a".into(),
            request_id: "o1".into(),
            pool: None,
            volumes: true,
            keep: Vec::new(),
            stuck_volume: None,
            deleted_volumes: Vec::new(),
            deleted_only: true,
            bound_ports: bound.iter().map(|p| p.to_string()).collect(),
            until: SystemTime::UNIX_EPOCH,
        };
        let mut next = watch(&["p2"]);
        next.absorb(&watch(&["p1", "p2"]));
        assert_eq!(next.bound_ports, ["p2", "p1"]);
        // Stored before the field existed: none.
        let old = serde_json::to_value(watch(&[])).unwrap();
        assert!(old.get("bound_ports").is_none(), "{old}");
        let read: TwinWatch = serde_json::from_value(old).unwrap();
        assert!(read.bound_ports.is_empty());
    }
}
