//! Events: what happened to a pool, for logs, metrics and `WatchPools`.
//!
//! The manager broadcasts each event; subscribers that fall behind lose the
//! oldest ones (a lagging dashboard must not slow allocations down).

use crate::model::PoolKey;
use std::time::Duration;

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootOutcome {
    Ready,
    Quota,
    RateLimited,
    NoValidHost,
    Timeout,
    Failed,
}

/// How an Allocate ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocationOutcome {
    Warm,
    Cold,
    Exhausted,
    VolumeUnavailable,
    CloudError,
    Failed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A boot finished; `lead_time` is boot request to Ready (or to failure).
    Boot {
        outcome: BootOutcome,
        lead_time: Duration,
    },
    /// An Allocate finished (not emitted for idempotent replays).
    Allocation {
        outcome: AllocationOutcome,
        latency: Duration,
    },
    /// An Allocate found no Ready instance.
    Exhausted,
    /// The operator changed the pool's settings.
    SettingsChanged,
    /// The reconciler deleted a server the store did not know.
    LeakDeleted {
        server_id: String,
    },
    Released,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `None` for events not tied to one pool (a leak of an unknown pool).
    pub pool: Option<PoolKey>,
    pub kind: EventKind,
}
