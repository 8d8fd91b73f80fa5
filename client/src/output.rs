//! Value formatting shared by both output modes, and the JSON views.
//!
//! prost types do not derive serde, so `--output json` goes through the small
//! view structs below. Their shape follows the proto messages (same snake_case
//! field names), with three deliberate differences that make the output
//! pleasant for scripts: enums are their names ("READY", not 3), durations
//! are humantime strings ("1m 30s", "60days": days, never humantime's
//! inexact months or years), timestamps are RFC 3339. Absent
//! messages are `null`; maps are sorted by key so the output is stable.
//!
//! Top-level shapes: list commands print `{"pools": [...]}` /
//! `{"instances": [...]}` like the List responses; `allocate`, `get` and
//! `release` all print the Allocation object itself (so `jq .state` works
//! on any of them); pool commands print the Pool object; `watch` prints one
//! PoolStatus (`{"pool": {...}, "at": "...", "events": [...], "deleted": false}`)
//! per line.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use warmpool_client::api;

// ---- scalar formatting -------------------------------------------------------

/// An enum's wire name without its type prefix: "READY" rather than
/// "INSTANCE_STATE_READY". Proto style prefixes values with the enum name to
/// avoid C++ scoping clashes; that prefix is noise to an operator.
/// Unknown numbers (a newer server) are shown, not hidden.
fn enum_name(known: Option<&'static str>, prefix: &str, value: i32) -> String {
    match known {
        Some(name) => name.strip_prefix(prefix).unwrap_or(name).to_owned(),
        None => format!("UNKNOWN({value})"),
    }
}

pub fn allocation_state(value: i32) -> String {
    let known = api::AllocationState::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "ALLOCATION_STATE_", value)
}

pub fn instance_state(value: i32) -> String {
    let known = api::InstanceState::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "INSTANCE_STATE_", value)
}

pub fn target_mode(value: i32) -> String {
    let known = api::TargetMode::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "TARGET_MODE_", value)
}

pub fn lead_time_source(value: i32) -> String {
    let known = api::LeadTimeSource::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "LEAD_TIME_SOURCE_", value)
}

pub fn throttle_state(value: i32) -> String {
    let known = api::ThrottleState::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "THROTTLE_STATE_", value)
}

pub fn pool_event_kind(value: i32) -> String {
    let known = api::PoolEventKind::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "POOL_EVENT_KIND_", value)
}

/// A duration as one short token for table cells ("450ms", "2.5s",
/// "1m30s", "2h5m"): cells must not contain spaces.
pub fn duration_compact(d: &prost_types::Duration) -> String {
    std_duration(d).map_or_else(|| "-".to_owned(), compact)
}

fn compact(d: Duration) -> String {
    // Seconds show a tenth, rounded: the unit is chosen after rounding, or
    // 59.95 s would read "60s" where 60 s reads "1m0s". Minutes and hours
    // are cut, not rounded: nothing rounds up into the next unit there.
    let tenths = (d.as_secs_f64() * 10.0).round();
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if tenths < 600.0 {
        let text = format!("{:.1}", tenths / 10.0);
        format!("{}s", text.trim_end_matches(".0"))
    } else if secs < 3600 {
        let secs = secs.max(60);
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    }
}

/// A protobuf duration as std's; `None` if negative. By hand: prost-types'
/// `TryFrom` negates a negative duration's seconds, which overflows (a
/// panic in debug builds) on `i64::MIN`, a value any server may send.
fn std_duration(d: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    // Duration::new carries whole seconds out of `nanos`, and panics if
    // that overflows.
    seconds.checked_add(u64::from(nanos / 1_000_000_000))?;
    Some(Duration::new(seconds, nanos))
}

/// The pool's hit rate (see `allocations_exhausted` in the proto): warm
/// hits among the Allocate calls that needed an instance, warm, cold,
/// served after waiting for one to become Ready, or refused for want of
/// one (each call: an order refused and asked again counts each time);
/// other failures say nothing of the pool's depth. As a percentage with one decimal, rounded down: 199 of 200 (the
/// default service level) is "99.5%", and only a pool without a miss
/// shows "100.0%". "-" before any. In u128: counters near u64::MAX must
/// not overflow.
///
/// A server older than `allocations_exhausted` does not send it and counts
/// those refusals once under way among `allocations_failed` only: read as
/// 0, its empty pool's refusals would be no miss at all. Then the rate is
/// warm / (warm + cold + failed), what warmpoolctl showed before the field.
/// One older than `allocations_waited` counts the purchases that waited
/// among the warm ones: none can be told apart.
pub fn hit_rate_cell(pool: &api::Pool) -> String {
    let warm = u128::from(pool.allocations_warm);
    let misses = pool
        .allocations_exhausted
        .unwrap_or(pool.allocations_failed);
    let waited = pool.allocations_waited.unwrap_or(0);
    let total = warm + u128::from(pool.allocations_cold) + u128::from(waited) + u128::from(misses);
    if total == 0 {
        return "-".to_owned();
    }
    let permille = warm * 1000 / total;
    format!("{}.{}%", permille / 10, permille % 10)
}

/// Whether the pool sizes itself (an older server that sends no mode and no
/// sizing is read as fixed).
pub fn is_auto(pool: &api::Pool) -> bool {
    pool.spec
        .as_ref()
        .is_some_and(|s| s.target_mode == i32::from(api::TargetMode::Auto))
        || pool.sizing.as_ref().is_some_and(|s| s.auto)
}

/// The target as a table cell: the number, marked "auto:" when computed.
pub fn target_cell(pool: &api::Pool) -> String {
    if is_auto(pool) {
        format!("auto:{}", pool.effective_target)
    } else {
        pool.effective_target.to_string()
    }
}

/// The lead-time p90 the target is sized for, as a table cell; "~"
/// marks the prior (no boot measured yet, or too few to outweigh it, or
/// none within the daemon's `lead_max_age`).
pub fn lead_cell(pool: &api::Pool) -> String {
    let Some(sizing) = &pool.sizing else {
        return "-".to_owned();
    };
    let Some(p90) = &sizing.lead_time_p90 else {
        return "-".to_owned();
    };
    let prior = sizing.lead_time_source == i32::from(api::LeadTimeSource::Prior);
    format!("{}{}", if prior { "~" } else { "" }, duration_compact(p90))
}

/// The pool's throttle gate hold as one token: "open", "throttled:4.5s"
/// (a service's Retry-After pause, every AZ's: `throttled_service` names
/// it), "quota:30s" (time left at `now`), "off" (gate disabled). The time left is counted to `paused_until`: a watch is not
/// sent a pool as its pause counts down, so the `pause_remaining` of the
/// last message would stand still. A client clock off the daemon's shifts
/// it by as much; `pause_remaining` serves a daemon that sends no end.
pub fn throttle_cell(pool: &api::Pool, now: SystemTime) -> String {
    let Some(gate) = pool.sizing.as_ref().and_then(|s| s.gate.as_ref()) else {
        return "-".to_owned();
    };
    let left = || match gate.paused_until.as_ref().and_then(system_time) {
        Some(until) => format!(
            ":{}",
            compact(until.duration_since(now).unwrap_or_default())
        ),
        None => gate
            .pause_remaining
            .as_ref()
            .map_or_else(String::new, |d| format!(":{}", duration_compact(d))),
    };
    match api::ThrottleState::try_from(gate.state) {
        Ok(api::ThrottleState::Open) => "open".to_owned(),
        Ok(api::ThrottleState::Disabled) => "off".to_owned(),
        Ok(api::ThrottleState::Throttled) => format!("throttled{}", left()),
        Ok(api::ThrottleState::QuotaPaused) => format!("quota{}", left()),
        _ => throttle_state(gate.state).to_lowercase(),
    }
}

/// The time left of a pool's backoff after failed boots at `now`, counted
/// to `backoff_until` as a throttle pause's; `None` when none is paused.
pub fn backoff_left(sizing: &api::SizingStatus, now: SystemTime) -> Option<String> {
    let until = sizing.backoff_until.as_ref().and_then(system_time)?;
    Some(compact(until.duration_since(now).unwrap_or_default()))
}

/// A pool's boot health as one word.
pub fn health_cell(pool: &api::Pool) -> String {
    if pool.degraded {
        "degraded".to_owned()
    } else if pool.consecutive_boot_failures > 0 {
        format!("failing:{}", pool.consecutive_boot_failures)
    } else {
        "ok".to_owned()
    }
}

/// A protobuf duration in humantime's words, exactly ("1s 234ms 567us",
/// "60days 12h"). Negative durations are invalid on this API but are still
/// shown honestly.
pub fn duration_exact(d: &prost_types::Duration) -> String {
    match std_duration(d) {
        Some(d) => in_days(d),
        None => {
            let abs = Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs());
            format!("-{}", in_days(abs))
        }
    }
}

/// As humantime writes a duration, but with days the largest unit:
/// humantime's months are 30.44 days and its years 365.25, so a max_age
/// of 60 days read "1month 29days 13h 26m 24s". humantime parses what
/// this writes ("60days"), so a value shown can be given back to a flag.
fn in_days(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let days = secs / 86_400;
    let parts = [
        (days, if days == 1 { "day" } else { "days" }),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1000 % 1000, "us"),
        (nanos % 1000, "ns"),
    ];
    let text = parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text
    }
}

/// A duration for tables: whole milliseconds are plenty for a person
/// ("1s 234ms"); only sub-millisecond values keep their precision so they do
/// not all read as "0s".
pub fn duration_short(d: &prost_types::Duration) -> String {
    let mut d = *d;
    if d.seconds != 0 || d.nanos.unsigned_abs() >= 1_000_000 {
        d.nanos -= d.nanos % 1_000_000;
    }
    duration_exact(&d)
}

/// The time a timestamp names, if RFC 3339 can show it: humantime's
/// formatters panic before 1970 and fail after year 9999 (a server with a
/// wrong clock could send either).
fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    const YEAR_10000: u64 = 253_402_300_800;
    SystemTime::try_from(*ts).ok().filter(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|since| since.as_secs() < YEAR_10000)
    })
}

/// How long before `now` a timestamp was, in its largest whole unit
/// ("45s", "12m", "5h", "30d"); "0s" for one after `now` (a daemon's clock
/// ahead of this one's). `None` if RFC 3339 cannot show the time either.
pub fn age_short(ts: &prost_types::Timestamp, now: SystemTime) -> Option<String> {
    let age = now.duration_since(system_time(ts)?).unwrap_or_default();
    let secs = age.as_secs();
    Some(match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    })
}

/// A timestamp as RFC 3339 with milliseconds (JSON), or with seconds (tables).
pub fn timestamp(ts: &prost_types::Timestamp, millis: bool) -> String {
    match system_time(ts) {
        Some(t) if millis => humantime::format_rfc3339_millis(t).to_string(),
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("{}s{}ns", ts.seconds, ts.nanos),
    }
}

/// The name operators use for a pool.
pub fn pool_name(flavor: &str, availability_zone: &str) -> String {
    // Names come from the server: no control character reaches the terminal.
    crate::table::one_line(&format!("{flavor}@{availability_zone}"))
}

/// One word for what the pool manager does with a pool.
pub fn pool_status(pool: &api::Pool) -> &'static str {
    if pool.draining {
        "draining"
    } else if pool.spec.as_ref().is_some_and(|s| s.paused) {
        "paused"
    } else {
        "active"
    }
}

// ---- JSON views --------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct PoolSpecView<'a> {
    min_ready: u32,
    max_ready: u32,
    target_mode: String,
    target: u32,
    image: &'a str,
    boot_timeout: Option<String>,
    max_age: Option<String>,
    paused: bool,
    windows: &'a [String],
    iops_limit: Option<u32>,
    volume_iops_limit: Option<u32>,
}

impl<'a> From<&'a api::PoolSpec> for PoolSpecView<'a> {
    fn from(s: &'a api::PoolSpec) -> Self {
        PoolSpecView {
            min_ready: s.min_ready,
            max_ready: s.max_ready,
            target_mode: target_mode(s.target_mode),
            target: s.target,
            image: &s.image,
            boot_timeout: s.boot_timeout.as_ref().map(duration_exact),
            max_age: s.max_age.as_ref().map(duration_exact),
            paused: s.paused,
            windows: &s.windows,
            iops_limit: s.iops_limit,
            volume_iops_limit: s.volume_iops_limit,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolCountsView {
    booting: u32,
    warming: u32,
    ready: u32,
    claimed: u32,
    allocated: u32,
    releasing: u32,
    failed: u32,
    deleting: u32,
}

impl From<&api::PoolCounts> for PoolCountsView {
    fn from(c: &api::PoolCounts) -> Self {
        PoolCountsView {
            booting: c.booting,
            warming: c.warming,
            ready: c.ready,
            claimed: c.claimed,
            allocated: c.allocated,
            releasing: c.releasing,
            failed: c.failed,
            deleting: c.deleting,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolView<'a> {
    flavor: &'a str,
    availability_zone: &'a str,
    spec: Option<PoolSpecView<'a>>,
    effective_target: u32,
    counts: Option<PoolCountsView>,
    draining: bool,
    allocations_warm: u64,
    allocations_cold: u64,
    /// null from a server older than the field (which counts them among
    /// the warm).
    allocations_waited: Option<u64>,
    allocations_failed: u64,
    /// null from a server older than the field.
    allocations_exhausted: Option<u64>,
    last_error: &'a str,
    last_error_at: Option<String>,
    sizing: Option<SizingView<'a>>,
    consecutive_boot_failures: u32,
    degraded: bool,
}

#[derive(Debug, Serialize)]
pub struct GateView {
    state: String,
    paused_until: Option<String>,
    pause_remaining: Option<String>,
    /// THROTTLED only: the API service whose Retry-After pause (every
    /// AZ's) holds the pool's boots.
    throttled_service: Option<String>,
    /// The AZ's AIMD window, fractional as it grows: the AZ admits its
    /// floor in builds. `null` when the gate is disabled: nothing limits
    /// boots to a window.
    window: Option<f64>,
    in_flight: u32,
    gated_in_flight: u32,
    baseline: Option<String>,
    latency_ratio: f64,
    throttled_responses: u64,
    window_decreases: u64,
    quota_refusals: u64,
}

impl From<&api::ThrottleGate> for GateView {
    fn from(g: &api::ThrottleGate) -> Self {
        GateView {
            state: throttle_state(g.state),
            paused_until: g.paused_until.as_ref().map(|t| timestamp(t, true)),
            pause_remaining: g.pause_remaining.as_ref().map(duration_exact),
            throttled_service: Some(g.throttled_service.clone()).filter(|s| !s.is_empty()),
            window: g.window,
            in_flight: g.in_flight,
            gated_in_flight: g.gated_in_flight,
            baseline: g.baseline.as_ref().map(duration_exact),
            latency_ratio: g.latency_ratio,
            throttled_responses: g.throttled_responses,
            window_decreases: g.window_decreases,
            quota_refusals: g.quota_refusals,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SizingView<'a> {
    auto: bool,
    target: u32,
    demand_short_per_second: f64,
    demand_long_per_second: f64,
    demand_forecast_per_second: f64,
    demand_in_lead_time: f64,
    lead_time_p50: Option<String>,
    lead_time_p90: Option<String>,
    lead_time_source: String,
    lead_time_samples: u32,
    service_level: f64,
    z: f64,
    gate: Option<GateView>,
    plan_reason: &'a str,
    plan_boots: u32,
    boots_in_flight: u32,
    window_min: Option<u32>,
    quota_headroom: Option<u64>,
    quota_limited_by: &'a str,
    beyond_quota: bool,
    backoff_until: Option<String>,
    quota_error: &'a str,
    quota_ports_unknown: &'a str,
    quota_read_at: Option<String>,
    lead_time_prior: Option<String>,
    prior_iops_limit: Option<u32>,
    prior_iops_limit_source: &'a str,
    prior_iops_limit_unknown: &'a str,
}

impl<'a> From<&'a api::SizingStatus> for SizingView<'a> {
    fn from(s: &'a api::SizingStatus) -> Self {
        SizingView {
            auto: s.auto,
            target: s.target,
            demand_short_per_second: s.demand_short_per_second,
            demand_long_per_second: s.demand_long_per_second,
            demand_forecast_per_second: s.demand_forecast_per_second,
            demand_in_lead_time: s.demand_in_lead_time,
            lead_time_p50: s.lead_time_p50.as_ref().map(duration_exact),
            lead_time_p90: s.lead_time_p90.as_ref().map(duration_exact),
            lead_time_source: lead_time_source(s.lead_time_source),
            lead_time_samples: s.lead_time_samples,
            service_level: s.service_level,
            z: s.z,
            gate: s.gate.as_ref().map(Into::into),
            plan_reason: &s.plan_reason,
            plan_boots: s.plan_boots,
            boots_in_flight: s.boots_in_flight,
            window_min: s.window_min,
            quota_headroom: s.quota_headroom,
            quota_limited_by: &s.quota_limited_by,
            beyond_quota: s.beyond_quota,
            backoff_until: s.backoff_until.as_ref().map(|t| timestamp(t, true)),
            quota_error: &s.quota_error,
            quota_ports_unknown: &s.quota_ports_unknown,
            quota_read_at: s.quota_read_at.as_ref().map(|t| timestamp(t, true)),
            lead_time_prior: s.lead_time_prior.as_ref().map(duration_exact),
            prior_iops_limit: s.prior_iops_limit,
            prior_iops_limit_source: &s.prior_iops_limit_source,
            prior_iops_limit_unknown: &s.prior_iops_limit_unknown,
        }
    }
}

impl<'a> From<&'a api::Pool> for PoolView<'a> {
    fn from(p: &'a api::Pool) -> Self {
        PoolView {
            flavor: &p.flavor,
            availability_zone: &p.availability_zone,
            spec: p.spec.as_ref().map(Into::into),
            effective_target: p.effective_target,
            counts: p.counts.as_ref().map(Into::into),
            draining: p.draining,
            allocations_warm: p.allocations_warm,
            allocations_cold: p.allocations_cold,
            allocations_waited: p.allocations_waited,
            allocations_failed: p.allocations_failed,
            allocations_exhausted: p.allocations_exhausted,
            last_error: &p.last_error,
            last_error_at: p.last_error_at.as_ref().map(|t| timestamp(t, true)),
            sizing: p.sizing.as_ref().map(Into::into),
            consecutive_boot_failures: p.consecutive_boot_failures,
            degraded: p.degraded,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TimingsView {
    claim: Option<String>,
    volume: Option<String>,
    port: Option<String>,
    verify: Option<String>,
    wait: Option<String>,
    total: Option<String>,
}

impl From<&api::StepTimings> for TimingsView {
    fn from(t: &api::StepTimings) -> Self {
        let f = |d: &Option<prost_types::Duration>| d.as_ref().map(duration_exact);
        TimingsView {
            claim: f(&t.claim),
            volume: f(&t.volume),
            port: f(&t.port),
            verify: f(&t.verify),
            wait: f(&t.wait),
            total: f(&t.total),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AllocationView<'a> {
    request_id: &'a str,
    tenant_project_id: &'a str,
    flavor: &'a str,
    availability_zone: &'a str,
    state: String,
    warm_hit: bool,
    instance_id: &'a str,
    server_id: &'a str,
    volume_id: &'a str,
    delete_volume_on_release: Option<bool>,
    port_id: &'a str,
    ip_address: &'a str,
    timings: Option<TimingsView>,
    created_at: Option<String>,
    released_at: Option<String>,
    labels: BTreeMap<&'a str, &'a str>,
    /// While RELEASING, why the latest try to finish it failed ("" when
    /// none has, and in every other state).
    last_error: &'a str,
}

impl<'a> From<&'a api::Allocation> for AllocationView<'a> {
    fn from(a: &'a api::Allocation) -> Self {
        AllocationView {
            request_id: &a.request_id,
            tenant_project_id: &a.tenant_project_id,
            flavor: &a.flavor,
            availability_zone: &a.availability_zone,
            state: allocation_state(a.state),
            warm_hit: a.warm_hit,
            instance_id: &a.instance_id,
            server_id: &a.server_id,
            volume_id: &a.volume_id,
            delete_volume_on_release: a.delete_volume_on_release,
            port_id: &a.port_id,
            ip_address: &a.ip_address,
            timings: a.timings.as_ref().map(Into::into),
            created_at: a.created_at.as_ref().map(|t| timestamp(t, true)),
            released_at: a.released_at.as_ref().map(|t| timestamp(t, true)),
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            last_error: &a.last_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InstanceView<'a> {
    id: &'a str,
    flavor: &'a str,
    availability_zone: &'a str,
    server_id: &'a str,
    state: String,
    created_at: Option<String>,
    ready_at: Option<String>,
    attempts: u32,
    last_error: &'a str,
    request_id: &'a str,
    image: &'a str,
}

impl<'a> From<&'a api::Instance> for InstanceView<'a> {
    fn from(i: &'a api::Instance) -> Self {
        InstanceView {
            id: &i.id,
            flavor: &i.flavor,
            availability_zone: &i.availability_zone,
            server_id: &i.server_id,
            state: instance_state(i.state),
            created_at: i.created_at.as_ref().map(|t| timestamp(t, true)),
            ready_at: i.ready_at.as_ref().map(|t| timestamp(t, true)),
            attempts: i.attempts,
            last_error: &i.last_error,
            request_id: &i.request_id,
            image: &i.image,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolEventView<'a> {
    kind: String,
    message: &'a str,
    at: Option<String>,
    flavor: &'a str,
    availability_zone: &'a str,
    service: &'a str,
    pause: Option<String>,
    cause: &'a str,
}

impl<'a> From<&'a api::PoolEvent> for PoolEventView<'a> {
    fn from(e: &'a api::PoolEvent) -> Self {
        PoolEventView {
            kind: pool_event_kind(e.kind),
            message: &e.message,
            at: e.at.as_ref().map(|t| timestamp(t, true)),
            flavor: &e.flavor,
            availability_zone: &e.availability_zone,
            service: &e.service,
            pause: e.pause.as_ref().map(duration_exact),
            cause: &e.cause,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolStatusView<'a> {
    pool: Option<PoolView<'a>>,
    at: Option<String>,
    events: Vec<PoolEventView<'a>>,
    deleted: bool,
    /// The server's first messages (one per pool) are over; written only
    /// on that message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshot_complete: bool,
}

impl<'a> From<&'a api::PoolStatus> for PoolStatusView<'a> {
    fn from(s: &'a api::PoolStatus) -> Self {
        PoolStatusView {
            pool: s.pool.as_ref().map(Into::into),
            at: s.at.as_ref().map(|t| timestamp(t, true)),
            events: s.events.iter().map(Into::into).collect(),
            deleted: s.deleted,
            snapshot_complete: s.snapshot_complete,
        }
    }
}

pub fn pools_json(pools: &[api::Pool]) -> Value {
    let views: Vec<PoolView> = pools.iter().map(Into::into).collect();
    json!({ "pools": views })
}

pub fn instances_json(instances: &[api::Instance]) -> Value {
    let views: Vec<InstanceView> = instances.iter().map(Into::into).collect();
    json!({ "instances": views })
}

/// Serializes any view. The views hold only strings, numbers, options and
/// string maps, so this cannot fail.
pub fn to_json(view: impl Serialize) -> Value {
    serde_json::to_value(view).expect("views serialize to JSON")
}

#[cfg(test)]
pub(crate) mod tests {

    /// Timestamps and durations a server sends are shown whatever they are:
    /// before 1970, after year 9999, nanos at their extreme.
    #[test]
    fn out_of_range_times_are_shown_raw_not_panicked_on() {
        for seconds in [-1, i64::MIN, 253_402_300_800, i64::MAX] {
            let ts = prost_types::Timestamp { seconds, nanos: 0 };
            for millis in [true, false] {
                assert_eq!(timestamp(&ts, millis), format!("{seconds}s0ns"));
            }
        }
        let ts = prost_types::Timestamp {
            seconds: 253_402_300_799,
            nanos: 0,
        };
        assert_eq!(timestamp(&ts, false), "9999-12-31T23:59:59Z");
        for nanos in [i32::MIN, i32::MAX] {
            let d = prost_types::Duration { seconds: 0, nanos };
            assert!(!duration_short(&d).is_empty());
        }
        for (seconds, nanos) in [(i64::MIN, 0), (i64::MIN, i32::MIN), (i64::MAX, i32::MAX)] {
            let d = prost_types::Duration { seconds, nanos };
            assert!(!duration_short(&d).is_empty());
            assert!(!duration_compact(&d).is_empty());
        }
        let pool = api::Pool {
            allocations_warm: u64::MAX,
            allocations_cold: u64::MAX,
            ..Default::default()
        };
        assert_eq!(hit_rate_cell(&pool), "50.0%");
        // A name with an escape sequence is shown escaped.
        let name = pool_name("m1\u{1b}[2J", "az\n1");
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }
    use super::*;

    pub(crate) fn d(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    pub(crate) fn sample_pools() -> Vec<api::Pool> {
        vec![
            api::Pool {
                flavor: "m1.large".into(),
                availability_zone: "az1".into(),
                spec: Some(api::PoolSpec {
                    min_ready: 2,
                    max_ready: 5,
                    target: 0,
                    image: "mysql-8.0".into(),
                    boot_timeout: d(600, 0),
                    max_age: d(86_400, 0),
                    paused: false,
                    ..Default::default()
                }),
                effective_target: 2,
                counts: Some(api::PoolCounts {
                    booting: 1,
                    warming: 0,
                    ready: 2,
                    allocated: 7,
                    ..Default::default()
                }),
                draining: false,
                allocations_warm: 12,
                allocations_cold: 1,
                allocations_failed: 0,
                allocations_exhausted: Some(0),
                allocations_waited: Some(0),
                last_error: String::new(),
                ..Default::default()
            },
            api::Pool {
                flavor: "m1.xlarge".into(),
                availability_zone: "az2".into(),
                spec: Some(api::PoolSpec {
                    min_ready: 1,
                    max_ready: 3,
                    target: 3,
                    image: "mysql-8.4".into(),
                    paused: true,
                    ..Default::default()
                }),
                effective_target: 3,
                counts: Some(api::PoolCounts {
                    warming: 3,
                    failed: 1,
                    ..Default::default()
                }),
                draining: false,
                allocations_warm: 0,
                allocations_cold: 0,
                allocations_failed: 4,
                // Paused and empty: fail-fast purchases refused.
                allocations_exhausted: Some(4),
                allocations_waited: Some(0),
                last_error: "boot timed out\nafter 10m".into(),
                ..Default::default()
            },
        ]
    }

    pub(crate) fn sample_allocation() -> api::Allocation {
        api::Allocation {
            request_id: "order-42".into(),
            tenant_project_id: "tenant-a".into(),
            flavor: "m1.large".into(),
            availability_zone: "az1".into(),
            state: api::AllocationState::Allocated.into(),
            warm_hit: true,
            instance_id: "inst-1".into(),
            server_id: "srv-1".into(),
            volume_id: "vol-1".into(),
            port_id: "port-1".into(),
            ip_address: "10.0.0.5".into(),
            timings: Some(api::StepTimings {
                claim: d(0, 3_000_000),
                volume: d(1, 250_000_000),
                port: d(0, 400_000_000),
                verify: d(0, 80_500_000),
                total: d(1, 733_500_000),
                wait: None,
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_764_000_000,
                nanos: 123_000_000,
            }),
            labels: [("tier", "gold"), ("app", "billing")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            released_at: None,
            delete_volume_on_release: Some(true),
            last_error: String::new(),
        }
    }

    #[test]
    fn enum_names_drop_the_type_prefix() {
        assert_eq!(
            allocation_state(api::AllocationState::Allocated.into()),
            "ALLOCATED"
        );
        assert_eq!(instance_state(api::InstanceState::Ready.into()), "READY");
        assert_eq!(instance_state(0), "UNSPECIFIED");
        assert_eq!(instance_state(99), "UNKNOWN(99)");
    }

    #[test]
    fn durations() {
        let p = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(duration_exact(&p(90, 0)), "1m 30s");
        assert_eq!(duration_exact(&p(1, 234_567_000)), "1s 234ms 567us");
        assert_eq!(duration_short(&p(1, 234_567_000)), "1s 234ms");
        assert_eq!(duration_short(&p(0, 450_000)), "450us");
        assert_eq!(duration_short(&p(0, 0)), "0s");
        assert_eq!(duration_exact(&p(-2, 0)), "-2s");
    }

    /// humantime counts months of 30.44 days and years of 365.25: a
    /// max_age of 60 days read "1month 29days 13h 26m 24s". Days are the
    /// largest unit shown, in JSON and tables alike.
    #[test]
    fn durations_of_days_read_in_days_never_months_or_years() {
        let p = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(duration_exact(&p(5_184_000, 0)), "60days");
        assert_eq!(duration_short(&p(5_184_000, 0)), "60days");
        assert_eq!(duration_exact(&p(90 * 86_400 + 12 * 3600, 0)), "90days 12h");
        assert_eq!(duration_exact(&p(86_400, 0)), "1day");
        assert_eq!(duration_exact(&p(31_557_600, 0)), "365days 6h");
        assert_eq!(
            duration_exact(&p(2 * 86_400 + 61, 5_000_001)),
            "2days 1m 1s 5ms 1ns"
        );
        assert_eq!(
            duration_short(&p(2 * 86_400 + 61, 5_000_001)),
            "2days 1m 1s 5ms"
        );
        assert_eq!(duration_exact(&p(-5_184_000, 0)), "-60days");
        let mut pool = sample_pools().remove(0);
        pool.spec.as_mut().unwrap().max_age = d(5_184_000, 0);
        let v = to_json(PoolView::from(&pool));
        assert_eq!(v["spec"]["max_age"], "60days");
        let text = crate::table::pool_detail(&pool, SystemTime::now());
        assert!(text.contains("max_age:           60days\n"), "{text}");
    }

    #[test]
    fn pool_json_shape() {
        let pools = sample_pools();
        let v = pools_json(&pools);
        let first = &v["pools"][0];
        assert_eq!(first["flavor"], "m1.large");
        assert_eq!(first["availability_zone"], "az1");
        assert_eq!(first["spec"]["boot_timeout"], "10m");
        assert_eq!(first["spec"]["max_age"], "1day");
        assert_eq!(first["counts"]["ready"], 2);
        assert_eq!(first["allocations_warm"], 12);
        assert_eq!(first["last_error"], "");
        // Unset durations are null, not "0s": the server's default applies.
        assert_eq!(v["pools"][1]["spec"]["boot_timeout"], Value::Null);
        assert_eq!(v["pools"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn allocation_json_shape() {
        let alloc = sample_allocation();
        let v = to_json(AllocationView::from(&alloc));
        assert_eq!(v["state"], "ALLOCATED");
        assert_eq!(v["warm_hit"], true);
        assert_eq!(v["timings"]["volume"], "1s 250ms");
        assert_eq!(v["timings"]["wait"], Value::Null);
        assert_eq!(v["created_at"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["released_at"], serde_json::Value::Null, "not released");
        assert_eq!(v["delete_volume_on_release"], true);
        assert_eq!(v["last_error"], "");
        assert_eq!(v["labels"], json!({"app": "billing", "tier": "gold"}));
        // Sorted labels make the text stable across runs (HashMap order is not).
        let text = serde_json::to_string(&v["labels"]).unwrap();
        assert_eq!(text, r#"{"app":"billing","tier":"gold"}"#);
    }

    #[test]
    fn instance_and_status_json_shape() {
        let inst = api::Instance {
            id: "inst-9".into(),
            state: api::InstanceState::Warming.into(),
            attempts: 2,
            ..Default::default()
        };
        let v = instances_json(std::slice::from_ref(&inst));
        assert_eq!(v["instances"][0]["state"], "WARMING");
        assert_eq!(v["instances"][0]["ready_at"], Value::Null);
        assert_eq!(v["instances"][0]["attempts"], 2);

        let status = api::PoolStatus {
            pool: Some(sample_pools().remove(0)),
            at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            events: vec![api::PoolEvent {
                kind: api::PoolEventKind::Degraded.into(),
                message: "pool degraded".into(),
                cause: "no_valid_host".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = to_json(PoolStatusView::from(&status));
        assert_eq!(v["pool"]["flavor"], "m1.large");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["deleted"], false);
        assert_eq!(v["events"][0]["kind"], "DEGRADED");
        assert_eq!(v["events"][0]["cause"], "no_valid_host");
    }

    #[test]
    fn sizing_json_and_cells() {
        let mut pool = sample_pools().remove(0);
        pool.spec.as_mut().unwrap().target_mode = api::TargetMode::Auto.into();
        pool.effective_target = 6;
        pool.sizing = Some(api::SizingStatus {
            auto: true,
            target: 6,
            demand_forecast_per_second: 0.05,
            lead_time_p50: d(80, 0),
            lead_time_p90: d(95, 0),
            lead_time_source: api::LeadTimeSource::Observed.into(),
            gate: Some(api::ThrottleGate {
                state: api::ThrottleState::Throttled.into(),
                pause_remaining: d(4, 500_000_000),
                window: Some(4.0),
                ..Default::default()
            }),
            ..Default::default()
        });
        let v = to_json(PoolView::from(&pool));
        assert_eq!(v["spec"]["target_mode"], "AUTO");
        assert_eq!(v["sizing"]["target"], 6);
        assert_eq!(v["sizing"]["lead_time_p90"], "1m 35s");
        assert_eq!(v["sizing"]["lead_time_source"], "OBSERVED");
        assert_eq!(v["sizing"]["gate"]["state"], "THROTTLED");
        assert_eq!(v["sizing"]["quota_ports_unknown"], "");
        assert_eq!(v["sizing"]["quota_read_at"], serde_json::Value::Null);
        pool.sizing.as_mut().unwrap().quota_read_at = Some(prost_types::Timestamp {
            seconds: 1_764_003_600,
            nanos: 0,
        });
        let read = to_json(PoolView::from(&pool));
        assert_eq!(read["sizing"]["quota_read_at"], "2025-11-24T17:00:00.000Z");
        assert_eq!(v["degraded"], false);
        assert_eq!(target_cell(&pool), "auto:6");
        assert_eq!(lead_cell(&pool), "1m35s");
        // No end sent (an older daemon): the time left as of the answer.
        let now = SystemTime::now();
        assert_eq!(throttle_cell(&pool, now), "throttled:4.5s");
        assert_eq!(hit_rate_cell(&pool), "92.3%");
        // Sent an end: the time left to it, none once it has passed.
        let gate = pool.sizing.as_mut().unwrap().gate.as_mut().unwrap();
        gate.paused_until = Some((now + Duration::from_secs(90)).into());
        assert_eq!(throttle_cell(&pool, now), "throttled:1m30s");
        assert_eq!(
            throttle_cell(&pool, now + Duration::from_secs(91)),
            "throttled:0ms"
        );
        // A pool from a server without sizing still renders.
        let bare = api::Pool::default();
        assert_eq!(target_cell(&bare), "0");
        assert_eq!(
            (lead_cell(&bare), throttle_cell(&bare, now)),
            ("-".into(), "-".into())
        );
        assert_eq!(hit_rate_cell(&bare), "-");
    }

    /// HIT RATE is the pool's depth as sizing means it: of the purchases
    /// that needed an instance, the share that found one Ready. A purchase
    /// refused for want of one (exhausted) is a miss; one that failed for
    /// another reason (the tenant's volume, a rollback after its claim)
    /// says nothing of the pool's depth, as the dashboard's hit rate
    /// counts it.
    #[test]
    fn the_hit_rate_counts_exhausted_purchases_and_no_other_failure() {
        let pool = |warm, cold, failed, exhausted| api::Pool {
            allocations_warm: warm,
            allocations_cold: cold,
            allocations_failed: failed,
            allocations_exhausted: Some(exhausted),
            ..Default::default()
        };
        assert_eq!(hit_rate_cell(&pool(1, 0, 1, 0)), "100.0%");
        assert_eq!(hit_rate_cell(&pool(1, 1, 3, 0)), "50.0%");
        assert_eq!(hit_rate_cell(&pool(0, 0, 2, 0)), "-");
        // A fail-fast purchase of an empty pool: failed once under way,
        // and a miss.
        assert_eq!(hit_rate_cell(&pool(1, 0, 1, 1)), "50.0%");
        assert_eq!(hit_rate_cell(&pool(1, 1, 5, 2)), "25.0%");
        assert_eq!(hit_rate_cell(&pool(0, 0, 1, 1)), "0.0%");
    }

    /// A WAIT purchase that found no instance Ready and was served once
    /// one became Ready is a miss, however soon: a pool too shallow for
    /// its purchases that refills within their timeout read 100.0%. From
    /// a server older than the count (None) they are among the warm.
    #[test]
    fn the_hit_rate_counts_purchases_that_waited_as_misses() {
        let pool = |warm, waited| api::Pool {
            allocations_warm: warm,
            allocations_waited: waited,
            allocations_exhausted: Some(0),
            ..Default::default()
        };
        assert_eq!(hit_rate_cell(&pool(1, Some(1))), "50.0%");
        assert_eq!(hit_rate_cell(&pool(3, Some(1))), "75.0%");
        assert_eq!(hit_rate_cell(&pool(0, Some(2))), "0.0%");
        assert_eq!(hit_rate_cell(&pool(2, Some(0))), "100.0%");
        assert_eq!(hit_rate_cell(&pool(2, None)), "100.0%");
        let both = api::Pool {
            allocations_cold: 1,
            allocations_exhausted: Some(1),
            ..pool(1, Some(1))
        };
        assert_eq!(hit_rate_cell(&both), "25.0%");
        let v = to_json(PoolView::from(&pool(1, Some(1))));
        assert_eq!(v["allocations_waited"], 1);
        let v = to_json(PoolView::from(&pool(1, None)));
        assert_eq!(v["allocations_waited"], Value::Null);
    }

    /// A server older than allocations_exhausted does not send it, and
    /// counts those refusals only among the failed: read as 0 the rate
    /// would be warm / (warm + cold), no miss for an empty pool's
    /// refusals. The rate then is what warmpoolctl showed before the
    /// field, warm / (warm + cold + failed); the JSON view says null.
    #[test]
    fn without_exhausted_from_an_older_server_the_hit_rate_counts_the_failed() {
        let old = api::Pool {
            allocations_warm: 3,
            allocations_cold: 1,
            allocations_failed: 4,
            allocations_exhausted: None,
            ..Default::default()
        };
        assert_eq!(hit_rate_cell(&old), "37.5%");
        let no_failures = api::Pool {
            allocations_failed: 0,
            ..old.clone()
        };
        assert_eq!(hit_rate_cell(&no_failures), "75.0%");
        let only_failed = api::Pool {
            allocations_failed: 2,
            ..Default::default()
        };
        assert_eq!(hit_rate_cell(&only_failed), "0.0%");
        let v = to_json(PoolView::from(&old));
        assert_eq!(v["allocations_exhausted"], Value::Null);
        assert_eq!(v["allocations_failed"], 4);
        let v = to_json(PoolView::from(&api::Pool {
            allocations_exhausted: Some(0),
            ..old
        }));
        assert_eq!(v["allocations_exhausted"], 0);
    }

    #[test]
    fn compact_durations_have_no_spaces() {
        let p = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(duration_compact(&p(0, 450_000_000)), "450ms");
        assert_eq!(duration_compact(&p(2, 0)), "2s");
        assert_eq!(duration_compact(&p(0, 600_000_000)), "600ms");
        assert_eq!(duration_compact(&p(90, 0)), "1m30s");
        assert_eq!(duration_compact(&p(7500, 0)), "2h5m");
        assert_eq!(duration_compact(&p(-1, 0)), "-");
    }

    /// The unit is chosen after rounding to a tenth of a second: from
    /// 59.95 s a duration reads a minute, not "60s".
    #[test]
    fn a_duration_rounded_up_to_a_minute_reads_in_minutes() {
        let p = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(duration_compact(&p(59, 940_000_000)), "59.9s");
        assert_eq!(duration_compact(&p(59, 950_000_000)), "1m0s");
        assert_eq!(duration_compact(&p(59, 999_999_999)), "1m0s");
        assert_eq!(duration_compact(&p(60, 0)), "1m0s");
        assert_eq!(duration_compact(&p(0, 999_999_999)), "999ms");
    }
}
