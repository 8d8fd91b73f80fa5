//! Sizing: how deep each pool should be, and how many boots to start now.
//!
//! A pool must hold enough supply (ready + warming + booting) that a purchase
//! finds a Ready instance even though every replacement takes one *lead time*
//! to boot. If purchases arrive at rate λ and a boot takes L, about
//! D = λ·L purchases arrive while one replacement boots; with Poisson arrivals
//! that count has standard deviation √D, so
//!
//! ```text
//! target = clamp(min_ready, max_ready, ceil(D + z·√D)),   D = λ_forecast · L_p90
//! ```
//!
//! with `z` from the configured service level (0.995 -> z = 2.576). The pool
//! is deep exactly when boots are slow: under IOPS throttling L grows 3-5x
//! and so does the target.
//!
//! One edge: an auto pool keeps nothing once a purchase within a lead time
//! is unlikely. None comes within one with probability e^-D (Poisson), and
//! while that is at least the service level, D <= -ln(service level) (0.005
//! at 0.995), the auto target is 0 and the pool falls to `min_ready`. That
//! meets no service level: the rare purchase that comes anyway finds a pool
//! of `min_ready` 0 empty and misses (or waits, or cold-boots, as its
//! empty-pool policy says). A pool whose rare purchases must find a warm
//! instance needs `min_ready` 1 or more. What the edge buys is an end to
//! idle instances: without it the target would be 1 for any D > 0, and the
//! demand EWMAs decay toward 0 but reach it only at float underflow (~736
//! time constants: a month for `demand_long` 1 h after a single purchase),
//! so a `min_ready` 0 pool would keep an instance that long.
//!
//! `D + z·√D` is the normal approximation of the demand in a lead time. A
//! pool that replaces what it hands out is Erlang's loss system, and below
//! D ≈ 1 the approximation keeps less than the service level needs at a
//! steady rate: D = 0.36 gives 2 instances, which a purchase finds Ready
//! 95.5 % of the time (4 are needed for 99.5 %); D = 1 gives 4, 98.5 %.
//! What makes up for it at such rates is the held forecast, which errs
//! high (the benchmark's pools reach the level). Fed the exact rate, the
//! formula at z = 2.576 gives 98.0 % on the benchmark's Azure trace and
//! needs z = 3.54 for 99.5 % (`bench::bound::formula_sizing`;
//! docs/benchmarks.md).
//!
//! This module owns the estimators and one pure, synchronous decider:
//!
//! - [`LeadTimes`]: boot request -> Ready of recent boots (p50/p90 over the
//!   last `lead_samples` boots no older than `lead_max_age`); before any boot
//!   is observed, and again once every one is older than `lead_max_age`
//!   (a pool that booted nothing for that long), the prior. Boots still in flight count as
//!   lower bounds, so a sudden slowdown lifts the estimate before the first
//!   slow boot finishes.
//! - [`Demand`]: short and long EWMAs of allocations. The forecast is the
//!   larger of the two, and it is *held*: a burst lifts it at once (the
//!   high is taken at the purchase that makes it, however late a step
//!   reads it), a quiet spell lowers it only after `cooldown` without a
//!   new high, and from then on it follows the estimate down until the
//!   next high. A purchase counts when it finds its pool empty (a cold
//!   boot or a wait would report it only a lead time later), any other
//!   at its end; each order once.
//! - [`decide`]: inputs (spec, supply, estimates, what the throttle gate
//!   allows) -> [`BootPlan`] `{ target, boots_now, reason }`. Golden tests in
//!   `tests/sizing.rs`.
//!
//! - [`lead_time_prior`]: before a pool's first boot is observed, the prior
//!   comes from the flavor's and volume type's IOPS limits when they are
//!   known (calibration.md: boots are disk-bound and stretch 3-5x under
//!   IOPS throttling), else it is the configured `prior_lead_time`. The
//!   flavor's is the pool's `iops_limit` when set, else what the cloud
//!   tells of the flavor (its extra specs' front-end QoS,
//!   [`prior_iops_limit`]); the volume type's is the pool's
//!   `volume_iops_limit` alone.
//!
//! - [`surplus_kept`]: how many fresh Ready instances a pool keeps once it
//!   has held more than its target for a cooldown (the purchases expected
//!   within the cooldown, by the same edge: none below -ln(service level)).
//!   The replenisher keeps at least the highest floor in force within a
//!   cooldown from then, too: a window opening within it would boot the
//!   surplus back.
//!
//! - [`LearnedSizing`]: what the estimators learned, as stored, so a restart
//!   resumes from it instead of from nothing (the orders counted too, so
//!   that one asked again after the restart counts once).
//!
//! Operator time windows ("Mon-Fri 09:00-18:00 min 10", [`crate::schedule`])
//! raise `min_ready` while they are open, from their start: a pool fills
//! to the raised floor only then (the replenisher wakes at each window's
//! start and end), so a window for a planned sale opens a fill time early.
//! The caller passes the raised floor. Once a window closes, what it booted
//! is a surplus like any other, retired after a cooldown unless a window
//! opening within that cooldown needs it.
//!
//! All instants are tokio instants passed in by the caller; nothing here
//! reads a clock, sleeps or does I/O.

use crate::gate::{Admission, GateStatus, HeadroomStatus, Hold};
use crate::model::{PoolKey, Target};
use crate::schedule::WallClock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Default probability that a purchase finds a warm instance.
pub const DEFAULT_SERVICE_LEVEL: f64 = 0.995;
/// The highest service level: [`z_for`]'s approximation is kept to it
/// (z = 4.753), so a higher one would be sized as this one.
pub const MAX_SERVICE_LEVEL: f64 = 0.999_999;
/// Lead time assumed before a pool's first boot finishes: an unthrottled
/// boot with mysqld's start, about 90 s (calibration.md: a Trove primary
/// in 1.5 min on a cloud without IOPS limits).
pub const DEFAULT_PRIOR_LEAD_TIME: Duration = Duration::from_secs(90);
pub const DEFAULT_LEAD_SAMPLES: usize = 20;
pub const DEFAULT_LEAD_MAX_AGE: Duration = Duration::from_secs(3600);
pub const DEFAULT_DEMAND_SHORT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_DEMAND_LONG: Duration = Duration::from_secs(3600);
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(15 * 60);
/// The longest prior lead time (a pool's boot timeout is at most a day, too).
pub const MAX_PRIOR_LEAD_TIME: Duration = Duration::from_secs(24 * 3600);
/// The longest a completed boot, a demand EWMA's time constant, counts.
pub const MAX_SIZING_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest cooldown of a lower forecast.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// With fewer completed boots than this, the prior still bounds p90 from below.
const MIN_OBSERVED: usize = 3;

/// How pools are sized. Defaults suit a real cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct SizingSettings {
    /// Probability that a purchase finds a warm instance; sets `z`.
    pub service_level: f64,
    /// Lead time assumed before any boot of the pool was observed, or
    /// when every one observed is older than `lead_max_age`.
    pub prior_lead_time: Duration,
    /// Completed boots kept for the lead-time percentiles.
    pub lead_samples: usize,
    /// Completed boots older than this no longer count: with none younger
    /// the estimate is the prior again. They are kept (and stored) until
    /// newer boots push them out of `lead_samples`.
    pub lead_max_age: Duration,
    /// Time constant of the short demand EWMA (reacts to bursts).
    pub demand_short: Duration,
    /// Time constant of the long demand EWMA (the level).
    pub demand_long: Duration,
    /// A lower forecast takes effect only after this long without a new
    /// high; a surplus of Ready instances above the target goes only after
    /// it lasted this long ([`surplus_kept`]), and not below the floor of a
    /// window opening within this long.
    pub cooldown: Duration,
    /// The wall-clock time operator windows, ages and release times are
    /// read on, at the manager's first use of it; later readings add tokio
    /// time. `None`: the system clock, read at each use. Tests and replays
    /// on the paused clock set it.
    pub wall_clock_start: Option<SystemTime>,
}

impl Default for SizingSettings {
    fn default() -> Self {
        Self {
            service_level: DEFAULT_SERVICE_LEVEL,
            prior_lead_time: DEFAULT_PRIOR_LEAD_TIME,
            lead_samples: DEFAULT_LEAD_SAMPLES,
            lead_max_age: DEFAULT_LEAD_MAX_AGE,
            demand_short: DEFAULT_DEMAND_SHORT,
            demand_long: DEFAULT_DEMAND_LONG,
            cooldown: DEFAULT_COOLDOWN,
            wall_clock_start: None,
        }
    }
}

/// A sizing setting out of its range; the message starts with the
/// setting's name (as the field, and `warmpoold`'s config key, is named).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSizing(String);

impl SizingSettings {
    pub fn z(&self) -> f64 {
        z_for(self.service_level)
    }

    /// Refuses settings the estimators cannot work with (a service level
    /// outside [`z_for`]'s range, which it would size as the bound while
    /// GetPool shows the level configured, a zero time constant or window,
    /// a short EWMA slower than the long one, durations beyond any sensible
    /// setting that would overflow time arithmetic), so whoever builds them
    /// can say which.
    pub fn validate(&self) -> Result<(), InvalidSizing> {
        let invalid = |m: String| Err(InvalidSizing(m));
        if !(self.service_level >= 0.5 && self.service_level <= MAX_SERVICE_LEVEL) {
            return invalid(format!(
                "service_level must be at least 0.5 and at most {MAX_SERVICE_LEVEL} (e.g. 0.995), got {}",
                self.service_level
            ));
        }
        if self.lead_samples == 0 {
            return invalid("lead_samples must be at least 1".into());
        }
        for (name, d) in [
            ("prior_lead_time", self.prior_lead_time),
            ("lead_max_age", self.lead_max_age),
            ("demand_short", self.demand_short),
            ("demand_long", self.demand_long),
        ] {
            if d.is_zero() {
                return invalid(format!("{name} must be positive"));
            }
        }
        for (name, d, max) in [
            ("prior_lead_time", self.prior_lead_time, MAX_PRIOR_LEAD_TIME),
            ("lead_max_age", self.lead_max_age, MAX_SIZING_MEMORY),
            ("demand_short", self.demand_short, MAX_SIZING_MEMORY),
            ("demand_long", self.demand_long, MAX_SIZING_MEMORY),
            ("cooldown", self.cooldown, MAX_COOLDOWN),
        ] {
            if d > max {
                return invalid(format!(
                    "{name} must be at most {}, got {}",
                    humantime::format_duration(max),
                    humantime::format_duration(d)
                ));
            }
        }
        if self.demand_short > self.demand_long {
            return invalid(format!(
                "demand_short ({}) must not be longer than demand_long ({})",
                humantime::format_duration(self.demand_short),
                humantime::format_duration(self.demand_long)
            ));
        }
        Ok(())
    }
}

// ---- lead time --------------------------------------------------------------

/// Where a lead-time estimate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeadSource {
    /// The prior (configured, stretched for the IOPS limits: [`prior_for`]): no boot
    /// observed yet, or too few to outweigh a prior above them, or none
    /// within `lead_max_age` (older ones are kept but not counted).
    Prior,
    /// Completed boots.
    Observed,
    /// Boots in flight are already older than the completed ones suggest.
    InFlight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadEstimate {
    pub p50: Duration,
    pub p90: Duration,
    /// Completed boots behind the estimate.
    pub samples: usize,
    pub source: LeadSource,
}

/// Recent boot lead times of one pool.
#[derive(Clone, Debug, Default)]
pub struct LeadTimes {
    /// (finished at, lead time), oldest first.
    samples: VecDeque<(Instant, Duration)>,
}

impl LeadTimes {
    /// Completed boots as stored: how long before `now` each finished.
    fn learned(&self, now: Instant) -> Vec<LearnedLead> {
        self.samples
            .iter()
            .map(|(at, lead)| LearnedLead {
                finished_before: now.saturating_duration_since(*at),
                lead: *lead,
            })
            .collect()
    }

    /// Boots stored `elapsed` ago, dated back from `now`; those that have
    /// aged out of the window (or predate this process's clock) are dropped.
    fn restore(
        &mut self,
        learned: &[LearnedLead],
        elapsed: Duration,
        now: Instant,
        settings: &SizingSettings,
    ) {
        let mut dated: Vec<(Instant, Duration)> = learned
            .iter()
            .filter_map(|l| {
                let age = l.finished_before.saturating_add(elapsed);
                let at = now.checked_sub(age)?;
                (age <= settings.lead_max_age).then_some((at, l.lead))
            })
            .collect();
        dated.sort_by_key(|(at, _)| *at);
        for (at, lead) in dated {
            self.record(at, lead, settings);
        }
    }

    pub fn record(&mut self, now: Instant, lead: Duration, settings: &SizingSettings) {
        self.samples.push_back((now, lead));
        while self.samples.len() > settings.lead_samples.max(1) {
            self.samples.pop_front();
        }
    }

    /// p50/p90 of recent boots; `in_flight_ages` (how long each boot still
    /// in flight has run) are lower bounds that can only raise the estimate.
    pub fn estimate(
        &self,
        now: Instant,
        in_flight_ages: &[Duration],
        settings: &SizingSettings,
    ) -> LeadEstimate {
        self.estimate_with_prior(now, in_flight_ages, settings.prior_lead_time, settings)
    }

    /// As [`LeadTimes::estimate`], with the pool's own prior (see
    /// [`lead_time_prior`]) in place of the configured one.
    pub fn estimate_with_prior(
        &self,
        now: Instant,
        in_flight_ages: &[Duration],
        prior: Duration,
        settings: &SizingSettings,
    ) -> LeadEstimate {
        let recent: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= settings.lead_max_age)
            .map(|(_, lead)| *lead)
            .collect();
        let (mut estimate, base) = if recent.is_empty() {
            (
                LeadEstimate {
                    p50: prior,
                    p90: prior,
                    samples: 0,
                    source: LeadSource::Prior,
                },
                vec![prior],
            )
        } else {
            let observed = percentile(&recent, 0.9);
            // Too few boots to outweigh the prior: it bounds p90 from
            // below, and is then what p90 says.
            let held = recent.len() < MIN_OBSERVED && prior > observed;
            (
                LeadEstimate {
                    p50: percentile(&recent, 0.5),
                    p90: if held { prior } else { observed },
                    samples: recent.len(),
                    source: if held {
                        LeadSource::Prior
                    } else {
                        LeadSource::Observed
                    },
                },
                recent,
            )
        };
        if !in_flight_ages.is_empty() {
            let mut all = base;
            all.extend_from_slice(in_flight_ages);
            let p50 = percentile(&all, 0.5);
            let p90 = percentile(&all, 0.9);
            if p90 > estimate.p90 {
                estimate.p90 = p90;
                estimate.source = LeadSource::InFlight;
            }
            estimate.p50 = estimate.p50.max(p50);
        }
        estimate
    }
}

// ---- IOPS-derived prior ------------------------------------------------------
//
// calibration.md measured one production cloud against its unthrottled test
// twin: sequential guest I/O of 465 MB/s unthrottled and 52.4 MB/s throttled
// (8 KiB blocks: about 57 000 and 6 400 IOPS), and under that throttling the
// Nova phase of a boot took x2..x3 as long, mysqld's start x3..x5. A phase
// that takes `t` unthrottled is modelled as a fixed part plus a disk-bound
// part that scales with 1/IOPS:
//
//     t(iops) = t · ((1 - p) + p · max(1, REFERENCE_IOPS / iops))
//
// with the disk-bound share `p` chosen so that the throttled cloud's IOPS
// give the middle of each measured range (x2.5, x4). An unthrottled lead time
// splits 25 s : 65 s between the phases (a lone boot to ACTIVE, then the
// guest agent and mysqld: calibration.md's 90 s cold create).

/// Guest IOPS of the unthrottled cloud in calibration.md (465 MB/s / 8 KiB).
pub const REFERENCE_IOPS: f64 = 56_800.0;
/// Guest IOPS of the throttled production cloud (52.4 MB/s / 8 KiB).
pub const CALIBRATED_THROTTLED_IOPS: f64 = 6_400.0;
/// Stretch of the Nova phase at [`CALIBRATED_THROTTLED_IOPS`] (x2..x3).
pub const CALIBRATED_NOVA_STRETCH: f64 = 2.5;
/// Stretch of mysqld's start at [`CALIBRATED_THROTTLED_IOPS`] (x3..x5).
pub const CALIBRATED_MYSQLD_STRETCH: f64 = 4.0;
/// Share of an unthrottled lead time spent before ACTIVE (25 s of 90 s).
pub const NOVA_SHARE: f64 = 25.0 / 90.0;

/// How much longer a phase with disk-bound stretch `calibrated` (at the
/// calibrated throttled IOPS) takes at `iops`.
fn stretch(calibrated: f64, iops: f64) -> f64 {
    let ratio_at_calibration = REFERENCE_IOPS / CALIBRATED_THROTTLED_IOPS;
    let disk_share = (calibrated - 1.0) / (ratio_at_calibration - 1.0);
    let ratio = (REFERENCE_IOPS / iops.max(1.0)).max(1.0);
    (1.0 - disk_share) + disk_share * ratio
}

/// The lead time to assume before a pool's first boot is observed.
///
/// `unthrottled` is the configured prior (an unthrottled boot with mysqld
/// start). The flavor's disk IOPS limit (`iops_limit`, the system disk the
/// image boots from) stretches the Nova phase; mysqld's start reads and
/// writes through both limits when the pool's volume type is limited too
/// (the flavor's front-end QoS and the volume type's back-end QoS both
/// apply), so the lower of the two stretches it. No limit: `unthrottled`.
pub fn lead_time_prior(
    unthrottled: Duration,
    iops_limit: Option<u32>,
    volume_iops_limit: Option<u32>,
) -> Duration {
    let flavor = iops_limit.map(f64::from);
    let data = match (iops_limit, volume_iops_limit) {
        (Some(a), Some(b)) => Some(f64::from(a.min(b))),
        (a, b) => a.or(b).map(f64::from),
    };
    let nova = flavor.map_or(1.0, |iops| stretch(CALIBRATED_NOVA_STRETCH, iops));
    let mysqld = data.map_or(1.0, |iops| stretch(CALIBRATED_MYSQLD_STRETCH, iops));
    let factor = NOVA_SHARE * nova + (1.0 - NOVA_SHARE) * mysqld;
    // A pathological limit (1 IOPS) must not overflow: a day is plenty.
    let stretched = Duration::try_from_secs_f64(unthrottled.as_secs_f64() * factor.clamp(1.0, 1e6))
        .unwrap_or(Duration::MAX);
    stretched.min(MAX_PRIOR_LEAD_TIME.max(unthrottled))
}

/// Where the flavor disk IOPS limit a pool's prior is stretched for comes
/// from ([`prior_iops_limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IopsLimitSource {
    /// The pool's own `iops_limit`, the operator's: it overrides the cloud's.
    Pool,
    /// The flavor's extra specs, as the cloud tells them
    /// ([`crate::cloud::Cloud::flavor_disk_iops`]).
    CloudFlavor,
}

/// The flavor disk IOPS limit a pool's prior is stretched for, and where
/// it comes from: the pool's `iops_limit` when set, else `cloud_flavor`,
/// the limit the cloud told for the pool's flavor (none, unknown, or not
/// read yet: `None`).
pub fn prior_iops_limit(
    spec: &crate::model::PoolSpec,
    cloud_flavor: Option<u32>,
) -> Option<(u32, IopsLimitSource)> {
    spec.iops_limit
        .map(|iops| (iops, IopsLimitSource::Pool))
        .or(cloud_flavor.map(|iops| (iops, IopsLimitSource::CloudFlavor)))
}

/// The prior of a pool with this spec, whose flavor the cloud tells
/// `cloud_flavor` IOPS for (see [`prior_iops_limit`]). The volume type's
/// limit is the pool's `volume_iops_limit` alone: Cinder shows QoS specs
/// to admins only by default.
pub fn prior_for(
    spec: &crate::model::PoolSpec,
    settings: &SizingSettings,
    cloud_flavor: Option<u32>,
) -> Duration {
    lead_time_prior(
        settings.prior_lead_time,
        prior_iops_limit(spec, cloud_flavor).map(|(iops, _)| iops),
        spec.volume_iops_limit,
    )
}

/// Nearest-rank percentile of a non-empty slice.
fn percentile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- demand -----------------------------------------------------------------

/// An event-rate EWMA: each event adds `1/tau`, and the sum decays with time
/// constant `tau`, so a steady rate λ reads λ.
#[derive(Clone, Copy, Debug, PartialEq)]
struct RateEwma {
    tau: f64,
    rate: f64,
    at: Option<Instant>,
}

impl RateEwma {
    fn new(tau: Duration) -> Self {
        Self {
            tau: tau.as_secs_f64().max(1e-3),
            rate: 0.0,
            at: None,
        }
    }

    fn rate_at(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                self.rate * (-now.saturating_duration_since(at).as_secs_f64() / self.tau).exp()
            }
        }
    }

    /// The rate `saved` as stored `elapsed` ago, decayed to `now`.
    fn restored(tau: Duration, saved: f64, elapsed: Duration, now: Instant) -> Self {
        let mut ewma = Self::new(tau);
        // Stored bytes are outside input: garbage reads as no demand.
        if saved.is_finite() && saved > 0.0 {
            ewma.rate = saved * (-elapsed.as_secs_f64() / ewma.tau).exp();
            ewma.at = Some(now);
        }
        ewma
    }

    /// Adds an event that happened at `at` (at or before `now`).
    fn add(&mut self, at: Instant, now: Instant) {
        let now = self.at.map_or(now, |last| now.max(last));
        let age = now.saturating_duration_since(at).as_secs_f64();
        self.rate = self.rate_at(now) + (-age / self.tau).exp() / self.tau;
        self.at = Some(now);
    }
}

/// Allocation rates of one pool, per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DemandEstimate {
    pub short: f64,
    pub long: f64,
    /// What the target is sized for: the held maximum of short and long.
    pub forecast: f64,
}

impl DemandEstimate {
    pub const ZERO: Self = Self {
        short: 0.0,
        long: 0.0,
        forecast: 0.0,
    };

    /// A steady rate (all three equal), e.g. for tests.
    pub fn steady(per_second: f64) -> Self {
        Self {
            short: per_second,
            long: per_second,
            forecast: per_second,
        }
    }
}

/// Allocation demand of one pool.
#[derive(Clone, Debug)]
pub struct Demand {
    short: RateEwma,
    long: RateEwma,
    /// The forecast last given: a high held through its cooldown, then
    /// the estimate it follows down.
    held: f64,
    /// When the last new high was reached; a lower estimate is the
    /// forecast once it is a cooldown old.
    held_at: Option<Instant>,
    cooldown: Duration,
    /// Allocations recorded, ever.
    pub total: u64,
}

impl Demand {
    pub fn new(settings: &SizingSettings) -> Self {
        Self {
            short: RateEwma::new(settings.demand_short),
            long: RateEwma::new(settings.demand_long),
            held: 0.0,
            held_at: None,
            cooldown: settings.cooldown,
            total: 0,
        }
    }

    /// One allocation (purchase) that started at `at`; `now` is when it is
    /// recorded (a purchase that found its pool empty when it did, any
    /// other when it finished).
    ///
    /// A rate average peaks exactly at an event and only decays between
    /// events, so a new high is taken here, not when a step next reads the
    /// estimate: a step stalled on the cloud would read a burst decayed and
    /// hold that lower value for the cooldown, while `peek` (GetPool)
    /// showed the peak.
    pub fn record(&mut self, at: Instant, now: Instant) {
        // The forecast just before the event: the held high, or, its
        // cooldown over, the estimate it follows down.
        let before = self.at(now).0.forecast;
        self.short.add(at, now);
        self.long.add(at, now);
        self.total += 1;
        let after = self.short.rate_at(now).max(self.long.rate_at(now));
        if after > before || self.held_at.is_none() {
            self.held = after;
            self.held_at = Some(now);
        }
    }

    /// The rates at `now`, updating the held forecast.
    pub fn estimate(&mut self, now: Instant) -> DemandEstimate {
        let (estimate, moved) = self.at(now);
        if let Some(moved) = moved {
            self.held = estimate.forecast;
            // Only a new high starts a cooldown: once one ran out the
            // forecast follows the estimate down, not in steps of one
            // cooldown each.
            if moved == Moved::Up {
                self.held_at = Some(now);
            }
        }
        estimate
    }

    /// Puts back demand stored `elapsed` ago. Rates decay over the time in
    /// between (purchases then found no warmpool, so they tell nothing), and
    /// the held forecast counts that time toward its cooldown.
    fn restore(
        &mut self,
        learned: &LearnedSizing,
        elapsed: Duration,
        now: Instant,
        settings: &SizingSettings,
    ) {
        self.short = RateEwma::restored(settings.demand_short, learned.demand_short, elapsed, now);
        self.long = RateEwma::restored(settings.demand_long, learned.demand_long, elapsed, now);
        let held = learned.demand_held;
        self.held = if held.is_finite() && held > 0.0 {
            held
        } else {
            0.0
        };
        self.held_at = learned
            .held_for
            .and_then(|held_for| now.checked_sub(held_for.saturating_add(elapsed)));
        self.total = learned.allocations;
    }

    /// The rates at `now` without updating anything (for status readers,
    /// so that looking does not change what the replenisher decides).
    pub fn peek(&self, now: Instant) -> DemandEstimate {
        self.at(now).0
    }

    /// The estimate at `now`, and whether (and how) the held forecast
    /// moves to it.
    fn at(&self, now: Instant) -> (DemandEstimate, Option<Moved>) {
        let short = self.short.rate_at(now);
        let long = self.long.rate_at(now);
        let current = short.max(long);
        let cooled = self
            .held_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.cooldown);
        // Strictly above: the estimate read twice at one instant is no new
        // high, and must not restart the cooldown of a forecast following
        // it down.
        let moved = if current > self.held || self.held_at.is_none() {
            Some(Moved::Up)
        } else if current == self.held || cooled {
            Some(Moved::Down)
        } else {
            None
        };
        let forecast = if moved.is_some() { current } else { self.held };
        (
            DemandEstimate {
                short,
                long,
                forecast,
            },
            moved,
        )
    }
}

/// How the held demand forecast moves to the estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moved {
    /// A new high: held for a cooldown from now.
    Up,
    /// Down (or level), the cooldown of the last high over.
    Down,
}

// ---- target and decider -----------------------------------------------------

/// The standard normal quantile for `service_level` (Acklam's rational
/// approximation, relative error below 1.2e-9), clamped to [0.5,
/// [`MAX_SERVICE_LEVEL`]] (`validate` refuses levels outside it; the clamp
/// keeps z finite whatever it is given).
pub fn z_for(service_level: f64) -> f64 {
    let p = if service_level.is_nan() {
        0.5
    } else {
        service_level.clamp(0.5, MAX_SERVICE_LEVEL)
    };
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_HIGH: f64 = 1.0 - 0.024_25;
    if p <= P_HIGH {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Whether `expected` purchases (a Poisson mean) are so few that none
/// comes with at least `service_level`'s probability: e^-m >= level, i.e.
/// m <= -ln(level). Then nothing is kept for them: a demand EWMA decays
/// toward 0 but reaches it only at float underflow (~736 time constants: a
/// month for `demand_long` 1 h), and any m above 0 rounds up to a whole
/// instance. That is no hit rate met: a purchase that comes anyway finds
/// only what `min_ready` keeps.
fn no_purchase_likely(expected: f64, service_level: f64) -> bool {
    // As `z_for` reads a level out of range (`validate` refuses it).
    let level = if service_level.is_nan() {
        0.5
    } else {
        service_level.clamp(0.5, 1.0)
    };
    expected.is_nan() || expected <= -level.ln()
}

/// `ceil(D + z·√D)`, or 0 when a purchase within the lead time is unlikely
/// ([`no_purchase_likely`]: D <= -ln(level), 0.005 at 0.995). A 0 leaves
/// the rare purchase that comes what `min_ready` keeps: nothing at
/// `min_ready` 0, where it misses (the module doc's edge).
pub fn auto_target(demand_in_lead: f64, z: f64, service_level: f64) -> u32 {
    if no_purchase_likely(demand_in_lead, service_level) {
        return 0;
    }
    let raw = (demand_in_lead + z.max(0.0) * demand_in_lead.sqrt()).ceil();
    if raw >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        raw as u32
    }
}

/// The target for a spec: a fixed one, or the auto one from `D`, clamped to
/// `min_ready..=max_ready`.
pub fn target_for(
    min_ready: u32,
    max_ready: u32,
    target: Target,
    demand_in_lead: f64,
    service_level: f64,
) -> u32 {
    let raw = match target {
        Target::Fixed(n) => n,
        Target::Auto => auto_target(demand_in_lead, z_for(service_level), service_level),
    };
    raw.max(min_ready).min(max_ready)
}

/// The fresh Ready instances a pool keeps when it has held more than
/// `target` for a whole cooldown: the target, and what purchases at the
/// `forecast` rate (per second) are expected to take within the cooldown,
/// `ceil(m)`; none when no purchase is likely at `service_level`
/// ([`no_purchase_likely`]: m <= -ln(level)).
/// An instance purchases will take soon is already paid for; retiring it
/// would cost a boot and, at low demand, a miss.
pub fn surplus_kept(target: u32, forecast: f64, cooldown: Duration, service_level: f64) -> u32 {
    let expected = forecast.max(0.0) * cooldown.as_secs_f64();
    let expected = if no_purchase_likely(expected, service_level) {
        0.0
    } else {
        expected.ceil()
    };
    let keep = f64::from(target) + expected;
    if keep >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        keep as u32
    }
}

/// Everything [`decide`] looks at; plain values so golden tests can spell them.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The spec's `min_ready`, raised by any open operator window.
    pub min_ready: u32,
    pub max_ready: u32,
    pub target: Target,
    /// Unclaimed instances ready, warming or booting.
    pub supply: u32,
    /// Of those, still booting or warming.
    pub in_flight: u32,
    pub demand: DemandEstimate,
    pub lead: LeadEstimate,
    /// Probability that a purchase finds a warm instance (sets z).
    pub service_level: f64,
    /// Boots in flight per pool, at most.
    pub pool_boot_cap: u32,
    /// The pool's own pause after failed boots, if it is in one.
    pub backoff: Option<Backoff>,
    /// The pool is degraded and a Ready boot would end that (its boots
    /// failed, or its start-up cloud check's mark waits for one:
    /// [`crate::events::PoolHealth::awaits_ready_boot`]), so it keeps one
    /// boot in flight at or above its target too ([`decide`]).
    pub awaits_ready_boot: bool,
    /// What the pool's availability zone allows now.
    pub gate: Admission,
}

/// The pool's own pace after failed boots (a retired flavor, a closed
/// zone: [`crate::events::PoolHealth::boot_backoff`]), apart from the
/// gate's, which paces the AZ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backoff {
    /// None of the pool's boots until then.
    Paused { until: Instant },
    /// The pause is over: one boot in flight at a time until one is Ready.
    OneAtATime,
}

impl Backoff {
    /// The boots in flight the pool allows itself at `cap` otherwise.
    pub fn cap(backoff: Option<Self>, cap: u32) -> u32 {
        match backoff {
            None => cap,
            Some(Self::Paused { .. }) => 0,
            Some(Self::OneAtATime) => cap.min(1),
        }
    }
}

/// Why a plan boots what it boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanReason {
    /// Supply is at or above the target: nothing to boot.
    AtTarget,
    /// Booting the whole deficit.
    Deficit,
    /// Less than the deficit: the pool's own boot cap is reached.
    PoolCap,
    /// Less than the deficit: the pool's boots failed, and it boots
    /// nothing until the pause ends, then one at a time. A degraded pool
    /// at or above its target whose degraded state a Ready boot would end
    /// shows it too: it boots one server all the same, until one is Ready
    /// ([`decide`]).
    Backoff(Backoff),
    /// Less than the deficit: the AZ's boot-concurrency window is full.
    Window,
    /// Nothing now: the AZ is paused after a 429/413 until its Retry-After.
    Throttled,
    /// Nothing now: the cloud refused for quota recently, or its limits
    /// leave no headroom; only purchases boot. A degraded pool at its
    /// target shows it when the quota leaves no room for its one boot.
    Quota,
    /// Less than the deficit: the quota headroom left after purchases.
    Headroom,
}

impl PlanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtTarget => "at_target",
            Self::Deficit => "deficit",
            Self::PoolCap => "pool_cap",
            Self::Backoff(_) => "backoff",
            Self::Window => "window",
            Self::Throttled => "throttled",
            Self::Quota => "quota",
            Self::Headroom => "headroom",
        }
    }
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootPlan {
    pub target: u32,
    /// D: forecast demand rate x lead time p90.
    pub demand_in_lead: f64,
    pub boots_now: u32,
    pub reason: PlanReason,
}

/// The boots a pool at `target` wants before any cap or hold: its
/// deficit, or one for a degraded pool with nothing to refill that a Ready
/// boot would mend (after its pause, as its refills would): failed boots'
/// verdict ends only so, and a pool degraded while it held its target
/// would otherwise stay degraded, its alert firing, long after the cloud
/// was fixed. Not a pool that keeps nothing. Above 0 exactly when the pool
/// would boot given room, so a replenish step polls the quota headroom
/// then (a pool at its target wanting its one boot too), not at rest.
pub fn wanted(inputs: &Inputs, target: u32) -> u32 {
    let probe = inputs.awaits_ready_boot && target > 0 && inputs.in_flight == 0;
    target.saturating_sub(inputs.supply).max(u32::from(probe))
}

/// How many boots to start now. Pure.
///
/// The gate's window limits speculative refills, but never below what
/// sustains the long-run demand at the current lead time (Little's law:
/// `ceil(λ_long · L_p50)` boots in flight): holding back those boots would
/// only drain the pool, it would not make the cloud faster. Nor below one
/// boot in flight for a pool below the depth its operator set: its floor
/// (`min_ready`, an open window's included), or a fixed target. A pool
/// whose demand keeps more builds in flight than the window holds would
/// otherwise leave the AZ's other pools no room for as long as its demand
/// lasts, and one with no demand of its own would never reach that depth
/// (a fixed target is no speculation on demand: it is the depth asked
/// for). So every pool makes progress, and the AZ's gated builds exceed
/// the window by at most one per such pool. Quota headroom is a hard cap:
/// a boot past it would only be refused.
pub fn decide(inputs: &Inputs) -> BootPlan {
    let lead_p90 = inputs.lead.p90.as_secs_f64();
    let demand_in_lead = inputs.demand.forecast.max(0.0) * lead_p90;
    let target = target_for(
        inputs.min_ready,
        inputs.max_ready,
        inputs.target,
        demand_in_lead,
        inputs.service_level,
    );
    let plan = |boots_now, reason| BootPlan {
        target,
        demand_in_lead,
        boots_now,
        reason,
    };
    let deficit = wanted(inputs, target);
    if deficit == 0 {
        return plan(0, PlanReason::AtTarget);
    }
    match inputs.gate.hold {
        Some(Hold::Throttled { .. }) => return plan(0, PlanReason::Throttled),
        Some(Hold::Quota { .. }) => return plan(0, PlanReason::Quota),
        None => {}
    }
    let pool_cap = Backoff::cap(inputs.backoff, inputs.pool_boot_cap);
    let cap_room = pool_cap.saturating_sub(inputs.in_flight);
    let sustain = (inputs.demand.long.max(0.0) * inputs.lead.p50.as_secs_f64()).ceil();
    let sustain = if sustain >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        sustain as u32
    };
    // Below a fixed target the deficit is below the operator's depth too.
    let owed_progress =
        u32::from(inputs.supply < inputs.min_ready || matches!(inputs.target, Target::Fixed(_)));
    let window_room = inputs
        .gate
        .room
        .max(sustain.max(owed_progress).saturating_sub(inputs.in_flight));
    let headroom = inputs.gate.headroom.unwrap_or(u32::MAX);
    if headroom == 0 {
        return plan(0, PlanReason::Quota);
    }
    let boots_now = deficit.min(cap_room).min(window_room).min(headroom);
    let reason = if boots_now == deficit && inputs.supply >= target {
        // The probe above: the pool backs off, at its target too.
        PlanReason::Backoff(inputs.backoff.unwrap_or(Backoff::OneAtATime))
    } else if boots_now == deficit {
        PlanReason::Deficit
    } else if headroom <= cap_room.min(window_room) {
        PlanReason::Headroom
    } else if cap_room <= window_room {
        match inputs.backoff {
            Some(backoff) if pool_cap < inputs.pool_boot_cap => PlanReason::Backoff(backoff),
            _ => PlanReason::PoolCap,
        }
    } else {
        PlanReason::Window
    };
    plan(boots_now, reason)
}

// ---- what survives a restart ------------------------------------------------

/// A pool's estimators as stored. Without them a restarted manager sizes
/// every auto pool from nothing: no demand (the target falls to `min_ready`)
/// and the prior lead time, until purchases and boots are seen again, which
/// under throttling is exactly when a shallow pool hurts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedSizing {
    /// Wall-clock time of the snapshot; what is restored ages by the time since.
    pub saved_at: SystemTime,
    /// The demand EWMAs at `saved_at`, purchases per second.
    pub demand_short: f64,
    pub demand_long: f64,
    /// The held forecast, and how long before `saved_at` its last new high
    /// was reached (`None`: none yet); past a cooldown the forecast follows
    /// the estimate.
    pub demand_held: f64,
    pub held_for: Option<Duration>,
    pub allocations: u64,
    /// Completed boots, oldest first.
    pub leads: Vec<LearnedLead>,
    /// The orders counted within `demand_long` before `saved_at` (the
    /// [`MAX_STORED_ORDERS`] last asked for), oldest first: a stop cuts
    /// the calls of purchases counted when they found their pool empty,
    /// the start rolls their orders back, and their callers ask again
    /// with the same ids, as do those of orders refused RESOURCE_EXHAUSTED.
    /// Without them each such order would count twice. None in a record of
    /// a build that stored none; none is written when there is none, so an
    /// older build still reads the record of a pool with no recent order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<LearnedOrder>,
}

/// The most orders a pool's [`LearnedSizing`] keeps: the last asked for.
/// It covers every order of a pool selling fewer than 1000 an hour (at the
/// default `demand_long`), and otherwise those of the last stretch, where
/// the orders a stop cut are; an older one asked again counts again, one
/// purchase among more than a thousand. A record is rewritten at most
/// once a minute, while its pool sells: at most about 200 KB.
pub const MAX_STORED_ORDERS: usize = 1000;

/// One order counted in a pool's demand, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedOrder {
    pub request_id: String,
    /// How long before the snapshot it was last asked for.
    pub asked_before: Duration,
}

/// One completed boot as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedLead {
    /// How long before the snapshot the boot reached Ready.
    pub finished_before: Duration,
    pub lead: Duration,
}

// ---- per-manager book -------------------------------------------------------

/// Estimators of one pool.
#[derive(Clone, Debug)]
pub struct PoolSizing {
    pub demand: Demand,
    pub lead: LeadTimes,
    /// Boots in flight: instance id -> started at.
    in_flight: BTreeMap<String, Instant>,
    pub last_plan: Option<BootPlan>,
    /// Since when every step found more fresh Ready instances than the
    /// pool keeps ([`surplus_kept`]); `None` while it holds no more.
    surplus_since: Option<Instant>,
    /// Orders counted in `demand` within `demand_long`: request id ->
    /// when last asked for.
    orders_counted: BTreeMap<String, Instant>,
    /// The same askings in the order they came, so that those older than
    /// `demand_long` are forgotten from the front, not by a scan of every
    /// order at each purchase.
    orders_asked: VecDeque<(Instant, String)>,
    /// Whether the pool learned something since its last save that a
    /// restart could not derive from that record by ageing it over the
    /// time since ([`SizingBook::restore`]): an order counted, a boot's
    /// lead time, a new high of the held forecast. Only then is the record
    /// rewritten: every pool's rewritten every minute, changed or not, left
    /// most of the store's disk to sled's garbage.
    unsaved: bool,
}

impl PoolSizing {
    fn lead_estimate(
        &self,
        now: Instant,
        prior: Duration,
        settings: &SizingSettings,
    ) -> LeadEstimate {
        let ages: Vec<Duration> = self
            .in_flight
            .values()
            .map(|started| now.saturating_duration_since(*started))
            .collect();
        self.lead.estimate_with_prior(now, &ages, prior, settings)
    }

    /// Puts back the orders stored `elapsed` ago that are still within
    /// `demand_long`, in place of any the pool holds.
    fn restore_orders(
        &mut self,
        learned: &[LearnedOrder],
        elapsed: Duration,
        now: Instant,
        settings: &SizingSettings,
    ) {
        let mut dated: Vec<(Instant, &str)> = learned
            .iter()
            .filter_map(|order| {
                let age = order.asked_before.saturating_add(elapsed);
                // Older than this process's clock (the host restarted
                // within the hour): dated now, it is remembered a little
                // longer than `demand_long` rather than counted twice.
                let asked = now.checked_sub(age).unwrap_or(now);
                (age < settings.demand_long).then_some((asked, order.request_id.as_str()))
            })
            .collect();
        // The front is forgotten first: oldest first.
        dated.sort_by_key(|(asked, _)| *asked);
        self.orders_counted.clear();
        self.orders_asked.clear();
        for (asked, order) in dated {
            self.orders_counted.insert(order.to_string(), asked);
            self.orders_asked.push_back((asked, order.to_string()));
        }
    }

    fn new(settings: &SizingSettings) -> Self {
        Self {
            demand: Demand::new(settings),
            lead: LeadTimes::default(),
            in_flight: BTreeMap::new(),
            last_plan: None,
            surplus_since: None,
            orders_counted: BTreeMap::new(),
            orders_asked: VecDeque::new(),
            unsaved: false,
        }
    }
}

/// The estimators of every pool of one manager, and the wall clock that
/// operator windows are read on.
#[derive(Clone, Debug, Default)]
pub struct SizingBook {
    pools: BTreeMap<PoolKey, PoolSizing>,
    clock: Option<WallClock>,
}

impl SizingBook {
    /// The wall-clock time now, on the manager's [`WallClock`] (the system
    /// clock, or simulated from `settings.wall_clock_start` at first use).
    pub fn wall_now(&mut self, settings: &SizingSettings) -> SystemTime {
        self.clock
            .get_or_insert_with(|| WallClock::new(settings.wall_clock_start))
            .now()
    }

    pub fn pool(&mut self, key: &PoolKey, settings: &SizingSettings) -> &mut PoolSizing {
        self.pools
            .entry(key.clone())
            .or_insert_with(|| PoolSizing::new(settings))
    }

    /// One purchase of order `request_id`. An order already counted
    /// within `demand_long` (a billing system retrying it after
    /// RESOURCE_EXHAUSTED, say) is not counted again, a restart in between
    /// too ([`LearnedSizing::orders`]): one order is one purchase, however
    /// often it is asked for. A purchase counted when it
    /// found its pool empty is asked for again at its end, and counts once
    /// unless it outlasted `demand_long` (its second count, dated to its
    /// start, has then decayed at least e-fold).
    pub fn record_allocation(
        &mut self,
        key: &PoolKey,
        request_id: &str,
        at: Instant,
        now: Instant,
        settings: &SizingSettings,
    ) {
        let pool = self.pool(key, settings);
        // Asked again, it is remembered from now: that is new too.
        pool.unsaved = true;
        while let Some((asked, _)) = pool.orders_asked.front() {
            if now.saturating_duration_since(*asked) < settings.demand_long {
                break;
            }
            if let Some((asked, order)) = pool.orders_asked.pop_front() {
                // Asked again since: that later asking keeps it.
                if pool.orders_counted.get(&order) == Some(&asked) {
                    pool.orders_counted.remove(&order);
                }
            }
        }
        pool.orders_asked.push_back((now, request_id.to_string()));
        if pool
            .orders_counted
            .insert(request_id.to_string(), now)
            .is_none()
        {
            pool.demand.record(at, now);
        }
    }

    pub fn boot_started(
        &mut self,
        key: &PoolKey,
        instance: &str,
        now: Instant,
        settings: &SizingSettings,
    ) {
        self.pool(key, settings)
            .in_flight
            .insert(instance.to_string(), now);
    }

    /// A boot ended; `lead` is its lead time if it reached Ready.
    pub fn boot_finished(
        &mut self,
        key: &PoolKey,
        instance: &str,
        lead: Option<Duration>,
        now: Instant,
        settings: &SizingSettings,
    ) {
        let pool = self.pool(key, settings);
        pool.in_flight.remove(instance);
        if let Some(lead) = lead {
            pool.lead.record(now, lead, settings);
            pool.unsaved = true;
        }
    }

    /// Demand and lead-time estimates of a pool at `now`, as the
    /// replenisher uses them (this moves the held demand forecast). `prior`
    /// is the pool's lead time before any boot is observed ([`prior_for`]).
    pub fn estimates(
        &mut self,
        key: &PoolKey,
        now: Instant,
        prior: Duration,
        settings: &SizingSettings,
    ) -> (DemandEstimate, LeadEstimate) {
        let pool = self.pool(key, settings);
        let lead = pool.lead_estimate(now, prior, settings);
        let held_at = pool.demand.held_at;
        let demand = pool.demand.estimate(now);
        // A new high without a purchase (none is expected: rates only decay
        // between purchases, which take their highs themselves). Following
        // the estimate down is what a restart does too, from the old high
        // once its cooldown is over; a first reading of no demand is as
        // good as none.
        if pool.demand.held_at != held_at && pool.demand.held > 0.0 {
            pool.unsaved = true;
        }
        (demand, lead)
    }

    /// The same estimates for a status reader: changes nothing.
    pub fn peek(
        &self,
        key: &PoolKey,
        now: Instant,
        prior: Duration,
        settings: &SizingSettings,
    ) -> (DemandEstimate, LeadEstimate, Option<BootPlan>) {
        match self.pools.get(key) {
            Some(pool) => (
                pool.demand.peek(now),
                pool.lead_estimate(now, prior, settings),
                pool.last_plan,
            ),
            None => (
                DemandEstimate::ZERO,
                LeadTimes::default().estimate_with_prior(now, &[], prior, settings),
                None,
            ),
        }
    }

    /// Keeps the pool's plan; returns the one it replaces.
    /// Notes whether `key` holds more fresh Ready instances than it keeps
    /// ([`surplus_kept`]) now; whether it has at every step for a whole
    /// `cooldown`, so that its surplus goes. The same wait as a falling demand forecast: a
    /// target that dips and comes back within it costs no server.
    pub fn surplus_outlasted(
        &mut self,
        key: &PoolKey,
        surplus: bool,
        now: Instant,
        settings: &SizingSettings,
    ) -> bool {
        let pool = self.pool(key, settings);
        if !surplus {
            pool.surplus_since = None;
            return false;
        }
        let since = *pool.surplus_since.get_or_insert(now);
        now.saturating_duration_since(since) >= settings.cooldown
    }

    pub fn set_plan(
        &mut self,
        key: &PoolKey,
        plan: BootPlan,
        settings: &SizingSettings,
    ) -> Option<BootPlan> {
        self.pool(key, settings).last_plan.replace(plan)
    }

    /// Drops the pool's last plan: it was made for settings that changed,
    /// and the next step makes the new one.
    pub fn drop_plan(&mut self, key: &PoolKey) {
        if let Some(pool) = self.pools.get_mut(key) {
            pool.last_plan = None;
        }
    }

    pub fn forget(&mut self, key: &PoolKey) {
        self.pools.remove(key);
    }

    /// What the book learned about `key` if it learned something since
    /// the last time this was asked ([`PoolSizing::unsaved`]), to store;
    /// `None` otherwise. A caller whose write fails calls
    /// [`SizingBook::unsaved`] so that the next save tries again.
    pub fn learned_since_saved(
        &mut self,
        key: &PoolKey,
        now: Instant,
        settings: &SizingSettings,
    ) -> Option<LearnedSizing> {
        // Read first, as `learned` does: a simulated wall clock starts at
        // its first reading, which must not move with whether anything was
        // saved.
        self.wall_now(settings);
        let pool = self.pools.get_mut(key)?;
        if !std::mem::take(&mut pool.unsaved) {
            return None;
        }
        self.learned(key, now, settings)
    }

    /// Notes that `key` holds what its stored record does not: the next
    /// [`SizingBook::learned_since_saved`] returns it.
    pub fn unsaved(&mut self, key: &PoolKey) {
        if let Some(pool) = self.pools.get_mut(key) {
            pool.unsaved = true;
        }
    }

    /// What the book learned about `key`, to store; `None` for a pool it
    /// has not seen.
    pub fn learned(
        &mut self,
        key: &PoolKey,
        now: Instant,
        settings: &SizingSettings,
    ) -> Option<LearnedSizing> {
        // A clock before 1970 cannot be stored (nor be right).
        let saved_at = self.wall_now(settings).max(std::time::UNIX_EPOCH);
        let pool = self.pools.get(key)?;
        let demand = &pool.demand;
        // Those asked for longer ago are forgotten at the next purchase.
        let mut orders: Vec<(&String, Instant)> = pool
            .orders_counted
            .iter()
            .map(|(order, asked)| (order, *asked))
            .filter(|(_, asked)| now.saturating_duration_since(*asked) < settings.demand_long)
            .collect();
        orders.sort_by_key(|(_, asked)| *asked);
        let dropped = orders.len().saturating_sub(MAX_STORED_ORDERS);
        let orders = orders[dropped..]
            .iter()
            .map(|(order, asked)| LearnedOrder {
                request_id: order.to_string(),
                asked_before: now.saturating_duration_since(*asked),
            })
            .collect();
        Some(LearnedSizing {
            saved_at,
            demand_short: demand.short.rate_at(now),
            demand_long: demand.long.rate_at(now),
            demand_held: demand.held,
            held_for: demand.held_at.map(|at| now.saturating_duration_since(at)),
            allocations: demand.total,
            leads: pool.lead.learned(now),
            orders,
        })
    }

    /// Resumes `key` from what a previous manager stored. Time between the
    /// snapshot and now (read on this book's wall clock) ages it; a
    /// snapshot from the future (a clock set back) counts as just taken.
    pub fn restore(
        &mut self,
        key: &PoolKey,
        learned: &LearnedSizing,
        now: Instant,
        settings: &SizingSettings,
    ) {
        let elapsed = self.wall_now(settings).duration_since(learned.saved_at);
        // From the future, it is aged by nothing: saved again, it is aged
        // from now at the next start, not again from the future.
        let from_the_future = elapsed.is_err();
        let elapsed = elapsed.unwrap_or_default();
        let pool = self.pool(key, settings);
        pool.unsaved |= from_the_future;
        pool.demand.restore(learned, elapsed, now, settings);
        pool.lead = LeadTimes::default();
        pool.lead.restore(&learned.leads, elapsed, now, settings);
        pool.restore_orders(&learned.orders, elapsed, now, settings);
    }
}

/// A pool's sizing as `GetPool` shows it: the computed target and its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct SizingStatus {
    pub auto: bool,
    /// The target the replenisher works toward now (0 while the pool drains).
    pub target: u32,
    pub demand: DemandEstimate,
    /// D = forecast x lead p90.
    pub demand_in_lead: f64,
    pub lead: LeadEstimate,
    pub z: f64,
    /// The pool's availability zone's throttle gate.
    pub gate: GateStatus,
    /// The flavor's quota headroom as last polled.
    pub quota: HeadroomStatus,
    /// The `min` of the operator window open now, if any raises `min_ready`.
    pub window_min: Option<u32>,
    /// The replenisher's last decision.
    pub last_plan: Option<BootPlan>,
    /// The lead time assumed before boots are measured ([`prior_for`]).
    pub prior: Duration,
    /// The flavor disk IOPS limit `prior` is stretched for, and whence.
    pub prior_iops_limit: Option<(u32, IopsLimitSource)>,
    /// Why `prior_iops_limit` has no limit from the cloud's flavor, when
    /// the pool sets none of its own and none was read: not read yet, the
    /// flavor's extra specs set none, the cloud will not tell, the read
    /// failed or the flavor is gone. Shown to the operator, who otherwise
    /// had only an INFO log line.
    pub prior_iops_unknown: Option<String>,
}

// Rates are finite by construction; equality is used by tests and watchers only.
impl Eq for SizingStatus {}
