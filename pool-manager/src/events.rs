//! Events: what happened to a pool, for logs, metrics and `WatchPools`.
//!
//! The manager broadcasts each event; subscribers that fall behind lose the
//! oldest ones (a lagging dashboard must not slow allocations down).
//!
//! Judgements about a pool are made here, once, and broadcast as events of
//! their own, so that every subscriber (the metrics task, each `WatchPools`
//! stream) sees the same verdict instead of recomputing it: a pool is
//! [`EventKind::Degraded`] after [`DEGRADED_AFTER`] boots failed in a row, or
//! when its start-up cloud check failed, and [`EventKind::Recovered`] at its
//! next Ready boot, or once the check passes again (see [`HealthBook`] and
//! [`MarkProof`]): every recovery ends an episode that began with a
//! `Degraded` event. Failed boots' verdict is stored
//! ([`StoredHealth`]): a restart keeps it, and announces it again.
//! `Shared::emit` logs each operator-relevant event exactly once
//! ([`Event::log`]); subscribers do not log them again.

use crate::model::{PoolKey, PoolRecord};
use crate::text;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Boots failing in a row after which a pool is degraded.
pub const DEGRADED_AFTER: u32 = 3;

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BootOutcome {
    Ready,
    Quota,
    RateLimited,
    NoValidHost,
    Timeout,
    Failed,
}

impl BootOutcome {
    /// A short stable name, used as a metric label and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Quota => "quota",
            Self::RateLimited => "rate_limited",
            Self::NoValidHost => "no_valid_host",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

/// Why a pool became degraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DegradedCause {
    /// Its boots kept failing; the last one ended so.
    Boots(BootOutcome),
    /// Its cloud check at start-up failed (its flavor, image or zone gone
    /// since it was created), so its boots would fail: `problem` says how.
    CloudCheck { problem: String },
}

impl DegradedCause {
    /// A short stable name: the last failed boot's outcome, or
    /// `cloud_check`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Boots(outcome) => outcome.as_str(),
            Self::CloudCheck { .. } => "cloud_check",
        }
    }
}

/// What proves the problems a pool's start-up cloud check found gone
/// ([`crate::PoolManager::mark_unusable`]). Not a Ready boot alone: boots
/// never touch Cinder, so a pool marked for its volumes' zone would read
/// healthy after its next boot while every purchase with a new volume
/// failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkProof {
    /// The pool's boot spec check passing again
    /// ([`crate::cloud::Cloud::recheck_boot_spec`]: its flavor, compute
    /// zone, Cinder zone and image), tried after each pause: it looks at
    /// every problem found.
    Recheck,
    /// That check passing, then a Ready boot: a problem found is one only
    /// a boot shows mended (a management network Nova cannot boot on).
    RecheckAndBoot,
}

/// What a pool's start-up cloud check's mark still waits for
/// ([`PoolHealth::check_mark`]); the mark ends when neither is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckMark {
    /// The boot spec check is yet to pass again.
    pub recheck: bool,
    /// A Ready boot is yet to be seen ([`MarkProof::RecheckAndBoot`]).
    pub boot: bool,
}

/// How an Allocate ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocationOutcome {
    /// Served from an instance it found Ready.
    Warm,
    /// Served by a boot of its own (COLD_BOOT).
    Cold,
    /// Served from an instance that became Ready while it waited (WAIT, or
    /// COLD_BOOT in line for quota room): the pool had none for it, so it
    /// is no warm hit.
    Waited,
    /// RESOURCE_EXHAUSTED for want of an instance: none by the deadline,
    /// or a cold boot that failed or found no room in the quota. The
    /// pool's miss, in its hit rate.
    Exhausted,
    /// FAILED_PRECONDITION: the tenant's volume is in use, missing or in
    /// another zone, or the cloud refused to create its volume or port, or
    /// refused a call as one asking again does not change.
    PreconditionFailed,
    /// UNAVAILABLE: the cloud did not answer, or kept failing or throttling.
    CloudError,
    /// Anything else: ABORTED (an order id reused), DEADLINE_EXCEEDED with
    /// an instance to give, RESOURCE_EXHAUSTED for a quota refusing the
    /// order's own volume or port (no want of an instance), a rollback.
    Failed,
}

/// What an operator did to a pool's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsChange {
    /// UpdatePool changed the spec.
    Updated,
    /// DeletePool started the drain.
    Deleting,
}

/// The OpenStack service a cloud call went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloudService {
    /// Nova: servers and their volume and interface attachments.
    Compute,
    /// Cinder: volumes.
    Volume,
    /// Neutron: ports.
    Network,
    /// Glance: images.
    Image,
    /// Keystone: a token request made inside another service's call (a
    /// renewal of the token, a login again after a 401) that failed, and
    /// the call with it. Only a [`crate::cloud::SideCall`] names it: no
    /// [`crate::cloud::Cloud`] method goes to Keystone alone.
    Identity,
}

impl CloudService {
    /// The services the [`crate::cloud::Cloud`] methods go to
    /// ([`Self::Identity`] is met only inside them).
    pub const ALL: [CloudService; 4] = [Self::Compute, Self::Volume, Self::Network, Self::Image];

    /// The `service` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compute => "compute",
            Self::Volume => "volume",
            Self::Network => "network",
            Self::Image => "image",
            Self::Identity => "identity",
        }
    }
}

impl fmt::Display for CloudService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A boot finished; `lead_time` is boot request to Ready (or to failure).
    Boot {
        outcome: BootOutcome,
        /// From the boot request to its outcome; `None` for a boot resumed
        /// after a restart, whose start this process did not see.
        lead_time: Option<Duration>,
    },
    /// An Allocate finished (not emitted for idempotent replays).
    Allocation {
        /// The order's request id: a retried order is one purchase.
        request_id: String,
        outcome: AllocationOutcome,
        latency: Duration,
    },
    /// An Allocate call found no Ready instance it could claim (none, or
    /// only ones it found silent at their claim), or none at a timeout that
    /// passed while its volume and port were made. Once a call, whether it
    /// is then refused, cold-booted or served after waiting.
    Exhausted,
    /// The operator changed the pool's settings, or started its deletion.
    /// Only a change that changes something is announced.
    SettingsChanged {
        change: SettingsChange,
    },
    /// The reconciler deleted a server the store did not know.
    LeakDeleted {
        server_id: String,
    },
    Released,
    /// The pool's boots keep failing: `consecutive_failures` in a row
    /// (at least [`DEGRADED_AFTER`]), the last one with outcome `cause`;
    /// or its start-up cloud check failed (`consecutive_failures` 0).
    /// Emitted once per episode, right after the boot that crossed the
    /// line, or as start-up marks the pool.
    Degraded {
        cause: DegradedCause,
        consecutive_failures: u32,
        /// The last failed boot's error, as the pool's `last_error` shows
        /// it: what the operator has to mend, where `cause` names only its
        /// kind. `None` for a cloud check (its `problem` says it), or a
        /// verdict restored without it.
        last_error: Option<String>,
    },
    /// A boot of a degraded pool reached Ready after `after_failures`
    /// failures, or the cloud check that marked it passed again (and a boot
    /// was Ready since, where the mark asked for one).
    Recovered {
        after_failures: u32,
        /// The start-up cloud check that marked it passed again, which
        /// ended the episode (not a boot).
        checked: bool,
    },
    /// The manager paused a cloud call for `pause` because the cloud
    /// throttled it (a 429, a 413 that is not a quota, or a 503 naming a
    /// Retry-After), honouring its Retry-After when it gave one. Emitted once the
    /// pause was waited out, not when the cloud merely asked for one: a call
    /// whose deadline does not allow the pause gives up instead, and a call
    /// dropped mid-pause reports nothing.
    /// `service` is `None` when the call did not go through the manager's
    /// cloud (it cannot tell which service was asked).
    Throttled {
        service: Option<CloudService>,
        pause: Duration,
    },
    /// A volume warmpool was to delete for an order is stuck in a state
    /// Cinder refuses its delete in until a cloud admin resets it: the new
    /// volume a rolled-back purchase made left `error_attaching` (the order
    /// is refused until then), or a volume whose delete Cinder's backend
    /// failed (`error_deleting`; a rollback's, or a release's). It holds
    /// Cinder quota: warmpool's own project's, for a volume warmpool
    /// created. Emitted once: by the rollback for
    /// `error_attaching`, by the reconcile pass that first sees
    /// `error_deleting`; the reconciler deletes the volume once Cinder
    /// allows.
    VolumeStuck {
        request_id: String,
        volume_id: String,
        /// Cinder's status of it.
        status: String,
    },
}

impl EventKind {
    /// A short stable name (a log field, a metric label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Boot { .. } => "boot",
            Self::Allocation { .. } => "allocation",
            Self::Exhausted => "exhausted",
            Self::SettingsChanged { .. } => "settings_changed",
            Self::LeakDeleted { .. } => "leak_deleted",
            Self::Released => "released",
            Self::Degraded { .. } => "degraded",
            Self::Recovered { .. } => "recovered",
            Self::Throttled { .. } => "throttled",
            Self::VolumeStuck { .. } => "volume_stuck",
        }
    }

    /// Cuts the free text it carries from outside (a failed boot's error,
    /// a cloud check's problem, Cinder's status of a volume) to
    /// [`crate::text::MAX_KEPT_TEXT_CHARS`]: each goes into the logs and
    /// every `WatchPools` stream.
    pub fn cap_text(&mut self) {
        match self {
            Self::Degraded {
                cause, last_error, ..
            } => {
                text::cap(last_error);
                if let DegradedCause::CloudCheck { problem } = cause {
                    *problem = text::capped(std::mem::take(problem));
                }
            }
            Self::VolumeStuck { status, .. } => *status = text::capped(std::mem::take(status)),
            // Ids and numbers: a request id is bounded where it comes in
            // (`MAX_REQUEST_ID_LEN`), a server id is the one the store keeps.
            Self::Boot { .. }
            | Self::Allocation { .. }
            | Self::Exhausted
            | Self::SettingsChanged { .. }
            | Self::LeakDeleted { .. }
            | Self::Released
            | Self::Recovered { .. }
            | Self::Throttled { .. } => {}
        }
    }

    /// One sentence for an operator, without the pool's name (the caller
    /// shows it next to this). `None` for routine events (boots,
    /// allocations, releases) that are counted, not announced.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            Self::Boot { .. } | Self::Allocation { .. } | Self::Released => return None,
            Self::Exhausted => "pool exhausted: an Allocate found no Ready instance it could claim".into(),
            Self::SettingsChanged {
                change: SettingsChange::Updated,
            } => "pool settings changed".into(),
            Self::SettingsChanged {
                change: SettingsChange::Deleting,
            } => "pool deletion started: no more boots, its unclaimed instances are deleted and the pool goes once they are gone (allocations are kept)".into(),
            Self::LeakDeleted { server_id } => {
                format!("deleted leaked cloud server {server_id} (the store did not know it)")
            }
            Self::Degraded {
                cause: DegradedCause::Boots(outcome),
                consecutive_failures,
                last_error,
            } => format!(
                "pool degraded: {consecutive_failures} boots failed in a row, the last {}; \
                 until a boot is Ready it boots one server at a time, after a pause that \
                 grows with the failures: mend what the error names (the pool's flavor, \
                 image or network, the project's quota, the cloud's capacity; GetPool shows \
                 it as last_error)",
                match last_error {
                    Some(error) => format!("one with: {error} ({})", outcome.as_str()),
                    None => format!("one's outcome: {}", outcome.as_str()),
                }
            ),
            Self::Degraded {
                cause: DegradedCause::CloudCheck { problem },
                ..
            } => format!("pool degraded: its servers cannot boot: {problem}"),
            Self::Recovered { checked: true, .. } => {
                "pool recovered: the cloud check that marked it passes again".to_owned()
            }
            Self::Recovered {
                after_failures: 0, ..
            } => "pool recovered: a boot succeeded".to_owned(),
            Self::Recovered { after_failures, .. } => {
                format!("pool recovered: a boot succeeded after {after_failures} failures")
            }
            Self::Throttled { service, pause } => format!(
                "cloud throttled a {} call; paused {:.1}s before retrying",
                service.map_or("cloud", CloudService::as_str),
                pause.as_secs_f64()
            ),
            Self::VolumeStuck {
                request_id,
                volume_id,
                status,
            } => format!(
                "volume {volume_id} of order {request_id}, which warmpool was to delete, is \
                 stuck {status}: Cinder refuses its delete until a cloud admin resets its state \
                 (openstack volume set --state available {volume_id}; warmpool then deletes it) \
                 or force-deletes it{}",
                match status.as_str() {
                    "error_attaching" => "; the order is refused until then",
                    _ => "",
                }
            ),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `None` for events not tied to one pool (a leak of an unknown pool, a
    /// throttled call).
    pub pool: Option<PoolKey>,
    pub kind: EventKind,
    /// When it happened, on the manager's wall clock (the one
    /// `last_error_at` is read on): a subscriber may handle it much later.
    pub at: SystemTime,
}

impl Event {
    /// Logs the event if an operator should see it; the one place events are
    /// logged. Routine events (boots, allocations) are logged where they
    /// happen, with their details.
    pub fn log(&self) {
        let Some(message) = self.kind.describe() else {
            return;
        };
        let pool = self
            .pool
            .as_ref()
            .map_or_else(|| "(none)".to_string(), ToString::to_string);
        let event = self.kind.name();
        match &self.kind {
            // Logged where it happens, with the new spec.
            EventKind::SettingsChanged { .. } => {}
            EventKind::Exhausted | EventKind::LeakDeleted { .. } | EventKind::Degraded { .. } => {
                tracing::warn!(%pool, event, "{message}")
            }
            EventKind::VolumeStuck { .. } => tracing::error!(%pool, event, "{message}"),
            EventKind::Recovered { .. } => tracing::info!(%pool, event, "{message}"),
            // Pauses are routine under load; the metrics count them.
            _ => tracing::debug!(%pool, event, "{message}"),
        }
    }
}

/// A pool's boot health, as `GetPool` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolHealth {
    /// Boots that failed in a row since the pool's last Ready boot.
    pub consecutive_boot_failures: u32,
    /// At least [`DEGRADED_AFTER`] failures in a row, until a boot
    /// succeeds; or a failed cloud check of the pool at start-up, until
    /// what its mark waits for is seen ([`Self::check_mark`]).
    pub degraded: bool,
    /// The start-up cloud check's mark, while it lasts.
    pub check_mark: Option<CheckMark>,
    /// How the last failed boot ended.
    pub last_failure: Option<BootOutcome>,
    /// When the last boot failed, or the pool's start-up check: the
    /// replenisher's pause before its next boot counts from here.
    pub last_failure_at: Option<tokio::time::Instant>,
    /// Failures in a row that each came from a boot started after the
    /// failure before it: boots in flight together that fail together (a
    /// short outage) are one step of the pause, not one each.
    pub backoff_steps: u32,
    /// When an operator last changed what the pool boots (its image, its
    /// boot timeout: [`HealthBook::boot_spec_changed`]). The failures of
    /// boots started before it, of the old spec, still count toward the
    /// verdict but pause the new spec's boots no more.
    pub(crate) boot_spec_changed_at: Option<tokio::time::Instant>,
}

impl PoolHealth {
    /// Whether a Ready boot would end the pool's degraded state now, so
    /// that one at its target boots one server all the same
    /// ([`crate::sizing::decide`]): its boots failed, or its start-up
    /// check passed again and its mark waits for a boot. Not while the
    /// check is yet to pass: a boot would fail as the check does, or prove
    /// nothing of what it looks at (a Cinder zone).
    pub fn awaits_ready_boot(&self) -> bool {
        self.degraded && self.check_mark.is_none_or(|m| !m.recheck && m.boot)
    }

    /// Whether its failed boots degrade the pool (as opposed to, or beside,
    /// a failed cloud check's mark): its verdict then names their error.
    pub fn degraded_by_boots(&self) -> bool {
        self.degraded && self.consecutive_boot_failures >= DEGRADED_AFTER
    }

    /// Whether the pool's start-up check is to be made again at `now`: its
    /// mark waits for it, and its pause (as [`Self::boot_backoff`] reckons
    /// it, but never lifted for refusals the gate paces: each check made
    /// again costs the cloud calls) is over.
    pub fn recheck_due(&self, base: Duration, max: Duration, now: tokio::time::Instant) -> bool {
        self.check_pending() && self.pause_end(base, max).is_none_or(|until| until <= now)
    }

    /// Whether the pool's boots wait for its start-up check to pass again
    /// (any mark's first part): a boot would fail as the check does, or
    /// prove nothing of what it looks at (a Cinder zone). The check is made
    /// again at [`Self::recheck_due`]; until then the pool boots nothing,
    /// and needs no quota headroom read.
    pub fn check_pending(&self) -> bool {
        self.check_mark.is_some_and(|m| m.recheck)
    }

    /// When the pending start-up check is next made (`now` or before: at
    /// the next step), the throttle pauses of the services it calls aside.
    pub fn recheck_at(&self, base: Duration, max: Duration) -> Option<tokio::time::Instant> {
        self.check_pending()
            .then(|| self.pause_end(base, max))
            .flatten()
    }

    /// Until when the pool's own boots wait, and how many may then run at
    /// once, after failures: `None` when the pool boots freely. A pool
    /// whose boots keep failing (a flavor retired, an AZ closed) would
    /// otherwise send a create at every change its last failure made; it
    /// boots one at a time instead, each after a pause that starts at
    /// `base` and doubles with each failure in a row, up to `max`.
    /// Refusals for quota or rate are the throttle gate's to pace when
    /// `gate_paces_refusals` (not paused twice); with the gate off nothing
    /// else would, and a pool at its quota would be refused a create at
    /// every change its last refusal made, so they pause the pool too.
    pub fn boot_backoff(
        &self,
        base: Duration,
        max: Duration,
        gate_paces_refusals: bool,
    ) -> Option<tokio::time::Instant> {
        if !self.degraded && self.consecutive_boot_failures == 0 {
            return None;
        }
        if gate_paces_refusals
            && matches!(
                self.last_failure,
                Some(BootOutcome::Quota | BootOutcome::RateLimited)
            )
        {
            return None;
        }
        self.pause_end(base, max)
    }

    /// The end of the pause the failures (and failed checks) in a row
    /// earned: from `base`, doubling with each step, up to `max`; `None`
    /// when none runs.
    fn pause_end(&self, base: Duration, max: Duration) -> Option<tokio::time::Instant> {
        let doublings = self.backoff_steps.saturating_sub(1).min(16);
        let pause = base.saturating_mul(1 << doublings).min(max.max(base));
        let since = self.last_failure_at?;
        Some(crate::allocator::deadline_after(since, pause))
    }
}

/// What of a pool's health outlives a restart, as the store keeps it
/// ([`crate::store::Store::put_pool_health`]): its boots failing in a row
/// (the verdict follows: degraded from [`DEGRADED_AFTER`]), and what its
/// boot pause is reckoned from. Not the mark of a failed start-up cloud
/// check, which each start makes again, nor when an operator last changed
/// what the pool boots (boots resumed after a restart are taken for the
/// current spec's). A pool with no failure since its last Ready boot has
/// none stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredHealth {
    pub consecutive_boot_failures: u32,
    pub last_failure: Option<BootOutcome>,
    /// [`PoolHealth::backoff_steps`].
    pub backoff_steps: u32,
    /// When the last failure counted toward the pause happened, on the
    /// manager's wall clock; `None` when no pause runs (an UpdatePool
    /// ended it).
    pub paused_from: Option<SystemTime>,
    /// The pool record it was written for: a build that keeps no health
    /// (3474b12 and older leave this tree alone) may have deleted the pool
    /// and created it again since, and the new pool's record does not
    /// match. `None` (an earlier build of this version wrote it): matches
    /// no pool.
    #[serde(default)]
    pub written_for: Option<PoolMark>,
    /// When it was written, on the manager's wall clock: one of the pool's
    /// instances Ready after it (a build that keeps no health booted it)
    /// says its boots failing in a row have ended.
    #[serde(default)]
    pub written_at: Option<SystemTime>,
}

impl StoredHealth {
    /// Why it no longer tells `pool`'s health, if it does not: written for
    /// another record under its key, or a boot of it was Ready since (one of
    /// `ready_at`, its instances' times Ready).
    pub fn stale_for(
        &self,
        pool: &PoolRecord,
        mut ready_at: impl Iterator<Item = SystemTime>,
    ) -> Option<&'static str> {
        if !self.written_for.as_ref().is_some_and(|m| m.still_of(pool)) {
            return Some("it was written for a pool deleted since under the same key (by a warmpoold of 3474b12 or older, which keeps no boot health), or by a build that did not say which");
        }
        let written = self.written_at?;
        ready_at
            .any(|at| at > written)
            .then_some("one of the pool's boots was Ready since it was written (a warmpoold of 3474b12 or older ran the pool meanwhile)")
    }
}

/// What ties stored health to one pool record, not to another created
/// under the same key later: what only grows over a pool's life (its
/// purchases' counts, when its last error happened), which a pool created
/// again starts with none of. A degraded pool has had an error (each
/// failed boot writes one), so a record of one never matches a pool
/// created since.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolMark {
    /// `allocations_warm`, `_cold`, `_waited`, `_failed`, `_exhausted`.
    pub allocations: [u64; 5],
    pub last_error_at: Option<SystemTime>,
}

impl PoolMark {
    pub fn of(pool: &PoolRecord) -> Self {
        Self {
            allocations: [
                pool.allocations_warm,
                pool.allocations_cold,
                pool.allocations_waited,
                pool.allocations_failed,
                pool.allocations_exhausted,
            ],
            last_error_at: pool.last_error_at,
        }
    }

    /// Whether `pool` may be the record this was taken of, as it is now.
    pub fn still_of(&self, pool: &PoolRecord) -> bool {
        let now = Self::of(pool);
        self.allocations
            .iter()
            .zip(now.allocations)
            .all(|(then, now)| *then <= now)
            && self.last_error_at <= now.last_error_at
    }
}

/// [`StoredHealth`] on the book's clock: what [`HealthBook`] compares to
/// know whether a pool's stored health is out of date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LastingHealth {
    consecutive_boot_failures: u32,
    last_failure: Option<BootOutcome>,
    backoff_steps: u32,
    paused_from: Option<tokio::time::Instant>,
}

impl LastingHealth {
    /// As stored for `pool`, `now` being `wall` on the wall clock.
    pub(crate) fn stored(
        self,
        pool: &PoolRecord,
        now: tokio::time::Instant,
        wall: SystemTime,
    ) -> StoredHealth {
        StoredHealth {
            written_for: Some(PoolMark::of(pool)),
            written_at: Some(wall),
            consecutive_boot_failures: self.consecutive_boot_failures,
            last_failure: self.last_failure,
            backoff_steps: self.backoff_steps,
            paused_from: self.paused_from.map(|at| {
                let ago = now.saturating_duration_since(at);
                wall.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH)
            }),
        }
    }
}

impl PoolHealth {
    /// What a restart is to keep of it; `None` when nothing (no boot failed
    /// since the last Ready one).
    pub(crate) fn lasting(&self) -> Option<LastingHealth> {
        (self.consecutive_boot_failures > 0).then_some(LastingHealth {
            consecutive_boot_failures: self.consecutive_boot_failures,
            last_failure: self.last_failure,
            backoff_steps: self.backoff_steps,
            paused_from: self.last_failure_at,
        })
    }
}

/// Boot health of every pool; fed every boot outcome, it says when a pool
/// becomes degraded or recovers.
#[derive(Clone, Debug, Default)]
pub struct HealthBook {
    pools: BTreeMap<PoolKey, PoolHealth>,
    /// What the store holds of each pool's health, as last written or
    /// read (absent: nothing).
    stored: BTreeMap<PoolKey, LastingHealth>,
}

impl HealthBook {
    /// Records a boot outcome, ended at `now`, of a boot requested at
    /// `started` (`None`: before this process started); returns the verdict
    /// event if the pool just became degraded or recovered.
    pub fn note_boot(
        &mut self,
        pool: &PoolKey,
        outcome: BootOutcome,
        started: Option<tokio::time::Instant>,
        now: tokio::time::Instant,
    ) -> Option<EventKind> {
        let health = self.pools.entry(pool.clone()).or_default();
        if outcome == BootOutcome::Ready {
            let after_failures = health.consecutive_boot_failures;
            let was_degraded = health.degraded;
            // A boot proves nothing of what the start-up check is still to
            // see passing (a Cinder zone boots never touch): its mark, and
            // the pause its next check waits out, stay.
            let check_mark = health
                .check_mark
                .map(|m| CheckMark { boot: false, ..m })
                .filter(|m| m.recheck);
            *health = match check_mark {
                Some(_) => PoolHealth {
                    degraded: true,
                    check_mark,
                    last_failure_at: health.last_failure_at,
                    backoff_steps: health.backoff_steps,
                    boot_spec_changed_at: health.boot_spec_changed_at,
                    ..PoolHealth::default()
                },
                None => PoolHealth {
                    boot_spec_changed_at: health.boot_spec_changed_at,
                    ..PoolHealth::default()
                },
            };
            return (was_degraded && !health.degraded).then_some(EventKind::Recovered {
                after_failures,
                checked: false,
            });
        }
        health.consecutive_boot_failures = health.consecutive_boot_failures.saturating_add(1);
        health.last_failure = Some(outcome);
        // A boot of the spec an operator has since changed says nothing of
        // the new one: no pause for it (one not known to have started
        // after the change is taken for the old spec's).
        let of_old_spec = match (health.boot_spec_changed_at, started) {
            (None, _) => false,
            (Some(changed), Some(started)) => started < changed,
            (Some(_), None) => true,
        };
        if !of_old_spec {
            let after_the_last = match (health.last_failure_at, started) {
                (None, _) => true,
                (Some(last), Some(started)) => started >= last,
                (Some(_), None) => false,
            };
            if after_the_last {
                health.backoff_steps = health.backoff_steps.saturating_add(1);
            }
            health.last_failure_at = Some(now);
        }
        if !health.degraded && health.consecutive_boot_failures >= DEGRADED_AFTER {
            health.degraded = true;
            // The error is the boot's emitter's to add (the manager's
            // `emit_boot`): the book keeps outcomes, not errors.
            return Some(EventKind::Degraded {
                cause: DegradedCause::Boots(outcome),
                consecutive_failures: health.consecutive_boot_failures,
                last_error: None,
            });
        }
        None
    }

    /// Marks a pool degraded without a boot: its cloud check failed at
    /// start-up (its flavor, image, zone or volumes' Cinder zone gone), so
    /// its boots or its purchases would fail. What `proof` names ends the
    /// mark: the check passing again ([`HealthBook::note_recheck`]), made
    /// after each pause, and then, if it asks for one, a Ready boot (a
    /// degraded pool at its target boots one for that:
    /// [`crate::sizing::decide`]). Returns the verdict event, as
    /// [`HealthBook::note_boot`] does: `None` when the pool was degraded
    /// already (one event per episode).
    pub fn note_check_failed(
        &mut self,
        pool: &PoolKey,
        problem: &str,
        proof: MarkProof,
        now: tokio::time::Instant,
    ) -> Option<EventKind> {
        let health = self.pools.entry(pool.clone()).or_default();
        health.last_failure_at = Some(now);
        let boot = proof == MarkProof::RecheckAndBoot || health.check_mark.is_some_and(|m| m.boot);
        health.check_mark = Some(CheckMark {
            recheck: true,
            boot,
        });
        if health.degraded {
            return None;
        }
        health.degraded = true;
        Some(EventKind::Degraded {
            cause: DegradedCause::CloudCheck {
                problem: problem.to_owned(),
            },
            consecutive_failures: health.consecutive_boot_failures,
            last_error: None,
        })
    }

    /// The pool's start-up check, made again at `now`, passed or not: a
    /// pass ends that part of its mark (and the mark, unless it waits for a
    /// Ready boot too), a failure restarts the pause before the next, one
    /// step longer, as a failed boot does. Returns the `Recovered` event
    /// when the pool is degraded no more.
    pub fn note_recheck(
        &mut self,
        pool: &PoolKey,
        passed: bool,
        now: tokio::time::Instant,
    ) -> Option<EventKind> {
        let health = self.pools.get_mut(pool)?;
        let mark = health.check_mark.filter(|m| m.recheck)?;
        if !passed {
            health.backoff_steps = health.backoff_steps.saturating_add(1);
            health.last_failure_at = Some(now);
            return None;
        }
        health.check_mark = mark.boot.then_some(CheckMark {
            recheck: false,
            boot: true,
        });
        // Failed boots' own verdict holds until a boot is Ready.
        let boots_failing = health.consecutive_boot_failures >= DEGRADED_AFTER;
        if health.check_mark.is_some() || boots_failing {
            return None;
        }
        health.degraded = false;
        // The pause was the mark's, unless boots failed since the last
        // Ready one (they keep theirs).
        if health.consecutive_boot_failures == 0 {
            health.last_failure_at = None;
            health.backoff_steps = 0;
        }
        Some(EventKind::Recovered {
            after_failures: 0,
            checked: true,
        })
    }

    /// An operator changed what `pool` boots (UpdatePool: its image, its
    /// boot timeout), at `now`: the pause its failed boots earned ends, and
    /// its next step boots as a healthy pool's would, rather than wait up
    /// to [`crate::replenisher::BOOT_BACKOFF_MAX`] and then boot one at a
    /// time. The verdict stays (degraded until a boot is Ready, which
    /// recovers it). Whether a pause was in effect.
    pub fn boot_spec_changed(&mut self, pool: &PoolKey, now: tokio::time::Instant) -> bool {
        // Recorded for a pool with no boot outcome yet too (new, or healthy
        // since the start): the old spec's boots still on their way must
        // not earn the new one a pause when they fail.
        let health = self.pools.entry(pool.clone()).or_default();
        let paused = health.last_failure_at.is_some();
        health.last_failure_at = None;
        health.backoff_steps = 0;
        health.boot_spec_changed_at = Some(now);
        paused
    }

    pub fn health(&self, pool: &PoolKey) -> PoolHealth {
        self.pools.get(pool).copied().unwrap_or_default()
    }

    /// Forgets a pool (created anew, or deleted). Its stored health is the
    /// caller's to delete.
    pub fn forget(&mut self, pool: &PoolKey) {
        self.pools.remove(pool);
        self.stored.remove(pool);
    }

    /// Puts back the health a previous process stored for `pool`, `now`
    /// being `wall` on the wall clock: degraded if its boots had failed
    /// [`DEGRADED_AFTER`] times in a row, its pause reckoned from the same
    /// moment (from `now` if the wall clock went back since). Replaces what
    /// the book holds of it.
    pub fn restore(
        &mut self,
        pool: &PoolKey,
        stored: &StoredHealth,
        now: tokio::time::Instant,
        wall: SystemTime,
    ) -> PoolHealth {
        let paused_from = stored.paused_from.map(|at| {
            let ago = wall.duration_since(at).unwrap_or_default();
            now.checked_sub(ago).unwrap_or(now)
        });
        let health = PoolHealth {
            consecutive_boot_failures: stored.consecutive_boot_failures,
            degraded: stored.consecutive_boot_failures >= DEGRADED_AFTER,
            last_failure: stored.last_failure,
            last_failure_at: paused_from,
            backoff_steps: stored.backoff_steps,
            boot_spec_changed_at: None,
            check_mark: None,
        };
        self.pools.insert(pool.clone(), health);
        match health.lasting() {
            Some(lasting) => self.stored.insert(pool.clone(), lasting),
            None => self.stored.remove(pool),
        };
        health
    }

    /// What the store should hold of `pool`'s health, if it holds
    /// something else: `Some(None)` to delete it.
    pub(crate) fn unsaved(&self, pool: &PoolKey) -> Option<Option<LastingHealth>> {
        let lasting = self.health(pool).lasting();
        (lasting != self.stored.get(pool).copied()).then_some(lasting)
    }

    /// The store now holds `lasting` of `pool`'s health.
    pub(crate) fn saved(&mut self, pool: &PoolKey, lasting: Option<LastingHealth>) {
        match lasting {
            Some(lasting) => self.stored.insert(pool.clone(), lasting),
            None => self.stored.remove(pool),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    #[test]
    fn degraded_once_per_episode_then_recovered() {
        let pool = PoolKey::new("f", "a");
        let mut book = HealthBook::default();
        assert_eq!(
            book.note_boot(&pool, BootOutcome::Timeout, None, now()),
            None
        );
        assert_eq!(book.note_boot(&pool, BootOutcome::Quota, None, now()), None);
        assert_eq!(
            book.note_boot(&pool, BootOutcome::NoValidHost, None, now()),
            Some(EventKind::Degraded {
                cause: DegradedCause::Boots(BootOutcome::NoValidHost),
                consecutive_failures: DEGRADED_AFTER,
                last_error: None,
            })
        );
        // Still failing: no second verdict.
        assert_eq!(
            book.note_boot(&pool, BootOutcome::NoValidHost, None, now()),
            None
        );
        let health = book.health(&pool);
        assert!(health.degraded);
        assert_eq!(health.consecutive_boot_failures, DEGRADED_AFTER + 1);
        assert_eq!(
            book.note_boot(&pool, BootOutcome::Ready, None, now()),
            Some(EventKind::Recovered {
                after_failures: DEGRADED_AFTER + 1,
                checked: false,
            })
        );
        assert_eq!(book.health(&pool), PoolHealth::default());
        // A Ready boot of a healthy pool is no news.
        assert_eq!(book.note_boot(&pool, BootOutcome::Ready, None, now()), None);
    }

    /// A start-up check's mark ends when the check passes again, not at a
    /// Ready boot, which proves nothing of a Cinder zone; one that asks for
    /// a boot too (a management network) ends at whichever comes last.
    #[test]
    fn a_check_mark_ends_with_its_check_passing_and_the_boot_it_asks_for() {
        let pool = PoolKey::new("f", "a");
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(300);
        let mut book = HealthBook::default();
        let at = now();
        assert!(matches!(
            book.note_check_failed(&pool, "volumes: az1 unavailable", MarkProof::Recheck, at),
            Some(EventKind::Degraded { .. })
        ));
        let health = book.health(&pool);
        assert!(
            !health.awaits_ready_boot(),
            "a boot tells nothing of Cinder"
        );
        assert_eq!(health.boot_backoff(base, max, true), Some(at + base));
        assert!(!health.recheck_due(base, max, at));
        assert!(health.recheck_due(base, max, at + base));
        // A Ready boot (a refill) ends no mark.
        assert_eq!(book.note_boot(&pool, BootOutcome::Ready, None, at), None);
        assert!(book.health(&pool).degraded);
        // Each failed check pauses the next one, longer at each.
        assert_eq!(book.note_recheck(&pool, false, at + base), None);
        let health = book.health(&pool);
        assert!(health.degraded);
        assert_eq!(health.boot_backoff(base, max, true), Some(at + base * 2));
        assert_eq!(book.note_recheck(&pool, false, at + base * 2), None);
        assert_eq!(
            book.health(&pool).boot_backoff(base, max, true),
            Some(at + base * 4)
        );
        assert_eq!(
            book.note_recheck(&pool, true, at + base * 4),
            Some(EventKind::Recovered {
                after_failures: 0,
                checked: true
            })
        );
        assert_eq!(book.health(&pool), PoolHealth::default());
        assert_eq!(book.note_recheck(&pool, true, at), None, "no mark, no news");

        // A mark that asks for a boot too: the check, then the boot.
        assert!(book
            .note_check_failed(&pool, "network: gone", MarkProof::RecheckAndBoot, at)
            .is_some());
        assert!(!book.health(&pool).awaits_ready_boot(), "the check first");
        assert_eq!(book.note_recheck(&pool, true, at), None);
        let health = book.health(&pool);
        assert!(health.degraded && health.awaits_ready_boot(), "{health:?}");
        assert_eq!(
            book.note_boot(&pool, BootOutcome::Ready, None, at),
            Some(EventKind::Recovered {
                after_failures: 0,
                checked: false
            })
        );
        // The boot first (a refill below the target), then the check.
        book.note_check_failed(&pool, "network: gone", MarkProof::RecheckAndBoot, at);
        assert_eq!(book.note_boot(&pool, BootOutcome::Ready, None, at), None);
        assert_eq!(
            book.note_recheck(&pool, true, at),
            Some(EventKind::Recovered {
                after_failures: 0,
                checked: true
            })
        );
        // Failed boots' verdict outlasts a mark whose check passes.
        book.note_check_failed(&pool, "flavor: gone", MarkProof::Recheck, at);
        for _ in 0..DEGRADED_AFTER {
            assert_eq!(book.note_boot(&pool, BootOutcome::Failed, None, at), None);
        }
        assert_eq!(book.note_recheck(&pool, true, at), None);
        let health = book.health(&pool);
        assert!(health.degraded && health.awaits_ready_boot(), "{health:?}");
    }

    /// A pool with no boot outcome yet (new, or healthy since the start)
    /// has no pause to end, but its change is recorded all the same: the
    /// old spec's boots failing after it pause nothing. It was recorded
    /// only for a pool the book had an entry for.
    #[test]
    fn a_new_boot_spec_is_recorded_for_a_pool_with_no_outcome_yet() {
        let pool = PoolKey::new("f", "a");
        let mut book = HealthBook::default();
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let old_boot_started = now();
        let changed = old_boot_started + Duration::from_secs(10);
        assert!(!book.boot_spec_changed(&pool, changed), "no pause to end");
        let failed = changed + Duration::from_secs(60);
        for _ in 0..4 {
            book.note_boot(&pool, BootOutcome::Failed, Some(old_boot_started), failed);
        }
        let health = book.health(&pool);
        assert_eq!(health.boot_spec_changed_at, Some(changed), "{health:?}");
        assert_eq!(health.boot_backoff(base, max, true), None, "{health:?}");
        assert!(health.degraded, "the verdict counts them: {health:?}");
    }

    /// A change of what the pool boots ends its pause; a boot of the old
    /// spec failing after it does not pause the new one's, a boot of the
    /// new spec does, from the pause's start. The verdict stays.
    #[test]
    fn a_new_boot_spec_ends_the_pause_its_old_failures_earned() {
        let pool = PoolKey::new("f", "a");
        let mut book = HealthBook::default();
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        assert!(!book.boot_spec_changed(&pool, now()), "no pause to end");
        let mut at = now();
        for _ in 0..6 {
            let started = at;
            at += Duration::from_secs(60);
            book.note_boot(&pool, BootOutcome::Failed, Some(started), at);
        }
        assert_eq!(
            book.health(&pool).boot_backoff(base, max, true),
            Some(at + base * 32)
        );

        let old_boot_started = at;
        let changed = at + Duration::from_secs(10);
        assert!(book.boot_spec_changed(&pool, changed));
        let health = book.health(&pool);
        assert!(health.degraded, "{health:?}");
        assert_eq!(health.boot_backoff(base, max, true), None);
        let failed = changed + Duration::from_secs(20);
        book.note_boot(&pool, BootOutcome::Failed, Some(old_boot_started), failed);
        book.note_boot(&pool, BootOutcome::Failed, None, failed);
        assert_eq!(book.health(&pool).boot_backoff(base, max, true), None);
        assert_eq!(book.health(&pool).consecutive_boot_failures, 8);
        book.note_boot(&pool, BootOutcome::Failed, Some(changed), failed);
        assert_eq!(
            book.health(&pool).boot_backoff(base, max, true),
            Some(failed + base)
        );
    }

    /// Boots in flight together that fail together are one step of the
    /// pool's pause, not one each: it doubles only for a boot started
    /// after the failure before it.
    #[test]
    fn boots_failing_together_pause_the_pool_once() {
        let pool = PoolKey::new("f", "a");
        let mut book = HealthBook::default();
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let started = now();
        let failed = started + Duration::from_secs(30);
        for _ in 0..8 {
            book.note_boot(&pool, BootOutcome::Failed, Some(started), failed);
        }
        let health = book.health(&pool);
        assert_eq!(health.consecutive_boot_failures, 8);
        assert_eq!(health.boot_backoff(base, max, true), Some(failed + base));
        // The boot started after that pause fails too: twice the pause.
        let next = failed + base;
        let failed_again = next + Duration::from_secs(30);
        book.note_boot(&pool, BootOutcome::Failed, Some(next), failed_again);
        assert_eq!(
            book.health(&pool).boot_backoff(base, max, true),
            Some(failed_again + base * 2)
        );
    }

    /// What a restart keeps: the failures in a row, so the verdict, and
    /// the pause, which ends when it would have without the restart (on
    /// the wall clock: the new process's clock starts elsewhere). A Ready
    /// boot then asks for the stored health to go.
    #[test]
    fn stored_health_brings_back_the_verdict_and_the_pause() {
        let pool = PoolKey::new("f", "a");
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let mut book = HealthBook::default();
        assert_eq!(book.unsaved(&pool), None, "a healthy pool stores nothing");
        let start = now();
        let mut failed = start;
        for _ in 0..4 {
            let started = failed;
            failed += Duration::from_secs(60);
            book.note_boot(&pool, BootOutcome::Failed, Some(started), failed);
        }
        assert_eq!(
            book.health(&pool).boot_backoff(base, max, false),
            Some(failed + base * 8)
        );
        let lasting = book.unsaved(&pool).flatten().expect("failures to store");
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let record = crate::model::PoolRecord::new(pool.clone(), crate::model::tests::spec());
        let stored = lasting.stored(&record, failed + Duration::from_secs(10), wall);
        book.saved(&pool, Some(lasting));
        assert_eq!(book.unsaved(&pool), None);
        let stored: StoredHealth =
            serde_json::from_slice(&serde_json::to_vec(&stored).unwrap()).unwrap();

        // Restored 15 s later on the wall clock, 25 s after the failure.
        let mut restarted = HealthBook::default();
        let at = now() + Duration::from_secs(5000);
        let health = restarted.restore(&pool, &stored, at, wall + Duration::from_secs(15));
        assert!(health.degraded, "{health:?}");
        assert_eq!(health.consecutive_boot_failures, 4);
        assert_eq!(health.last_failure, Some(BootOutcome::Failed));
        assert_eq!(
            health.boot_backoff(base, max, false),
            Some(at - Duration::from_secs(25) + base * 8)
        );
        assert_eq!(restarted.unsaved(&pool), None, "nothing new to write");
        assert_eq!(
            restarted.note_boot(&pool, BootOutcome::Ready, None, at),
            Some(EventKind::Recovered {
                after_failures: 4,
                checked: false,
            })
        );
        assert_eq!(restarted.unsaved(&pool), Some(None), "the record goes");

        // A wall clock gone back: the pause counts from the restart.
        let mut turned_back = HealthBook::default();
        let health = turned_back.restore(&pool, &stored, at, wall - Duration::from_secs(60));
        assert_eq!(health.boot_backoff(base, max, false), Some(at + base * 8));
    }

    /// Quota and rate refusals pause the pool only when no gate paces them.
    #[test]
    fn refusals_pause_the_pool_only_without_the_gate() {
        let pool = PoolKey::new("f", "a");
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        for refusal in [BootOutcome::Quota, BootOutcome::RateLimited] {
            let mut book = HealthBook::default();
            let refused = now();
            book.note_boot(&pool, refusal, None, refused);
            let health = book.health(&pool);
            assert_eq!(health.boot_backoff(base, max, true), None, "{refusal:?}");
            assert_eq!(
                health.boot_backoff(base, max, false),
                Some(refused + base),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn a_success_resets_the_streak_before_it_degrades() {
        let pool = PoolKey::new("f", "a");
        let mut book = HealthBook::default();
        for _ in 0..DEGRADED_AFTER - 1 {
            assert_eq!(
                book.note_boot(&pool, BootOutcome::Failed, None, now()),
                None
            );
        }
        assert_eq!(book.note_boot(&pool, BootOutcome::Ready, None, now()), None);
        for _ in 0..DEGRADED_AFTER - 1 {
            assert_eq!(
                book.note_boot(&pool, BootOutcome::Failed, None, now()),
                None
            );
        }
        assert!(!book.health(&pool).degraded);
    }

    #[test]
    fn routine_events_are_not_announced() {
        assert_eq!(EventKind::Released.describe(), None);
        let pause = EventKind::Throttled {
            service: Some(CloudService::Compute),
            pause: Duration::from_millis(2500),
        };
        assert_eq!(
            pause.describe().unwrap(),
            "cloud throttled a compute call; paused 2.5s before retrying"
        );
    }
}
