//! warmpool's benchmarks, run against the in-process cloudsim on tokio's
//! paused clock (simulated time jumps ahead whenever every task waits):
//!
//! - `trace-replay`: demand scenarios and arrival traces replayed against
//!   several pool-sizing policies side by side, plus the host-contention
//!   concurrency sweep; writes a markdown table and SVG plots.
//! - `time-to-ready`: a warm purchase against a Trove-style cold create,
//!   throttled and not.
//! - `store-listing`: the sled store's hot paths (wall clock, real
//!   sled) as tenants' databases and finished orders accumulate.
//! - `bound`: a model of how well any sizing could do on a trace, knowing
//!   its demand rate, to read the replay's trace results against.
//!
//! Results and the exact commands: `docs/benchmarks.md`.

pub mod bound;
pub mod contention;
pub mod counting;
pub mod demand;
pub mod memstore;
pub mod replay;
pub mod report;
pub mod ttr;

/// A command-line count that must be at least 1 (purchases, threads, ...).
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// A pool held at a fixed `depth` of Ready instances (at least room for
/// one), booting the benchmark's image: the static policies' pools and
/// the time-to-ready and contention fills.
pub fn fixed_pool(depth: u32, boot_timeout: std::time::Duration) -> pool_manager::model::PoolSpec {
    use pool_manager::model::{PoolSpec, Target};
    PoolSpec {
        min_ready: depth,
        max_ready: depth.max(1),
        target: Target::Fixed(depth),
        image: "mysql-8.0".into(),
        boot_timeout,
        max_age: None,
        paused: false,
        windows: Vec::new(),
        iops_limit: None,
        volume_iops_limit: None,
    }
}
