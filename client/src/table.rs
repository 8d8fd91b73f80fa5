//! Plain-text rendering for `--output table`: aligned columns for lists,
//! `key: value` blocks for single objects.
//!
//! Hand-rolled rather than a table crate because the needs are tiny and the
//! output must stay greppable: no box drawing, one row per line, empty
//! values shown as "-". It is for people, not parsers: names from the
//! cloud (a Glance image "MySQL 8.0", a flavor), errors and some detail
//! values hold spaces, so splitting a row on whitespace shifts the columns
//! after them. Scripts read `--output json`.

use std::fmt::Write as _;
use std::time::SystemTime;

use warmpool_client::api;

use crate::output::{
    age_short, allocation_state, backoff_left, duration_compact, duration_short, health_cell,
    hit_rate_cell, instance_state, is_auto, lead_cell, lead_time_source, pool_name, pool_status,
    target_cell, throttle_cell, timestamp,
};

/// Columns separated by two spaces, each as wide as its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The rendered table, one line per row, each line ending in '\n'.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header = self
            .header
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                // `{:<width$}` pads by chars, which is what the widths count.
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Cells must stay on one line and never be empty (see the module docs).
fn cell(s: &str) -> String {
    let s = one_line(s);
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

/// `s` on one line, as a terminal shows it: runs of whitespace become one
/// space, and other control characters (an escape sequence in a cloud's
/// fault message) and Unicode's format characters (category Cf: a
/// right-to-left override, a zero-width space, a byte-order mark, which
/// print as nothing or turn the text around them) are shown escaped
/// instead of reaching the terminal.
pub fn one_line(s: &str) -> String {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let mut line = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        for c in word.chars() {
            if c.is_control() || c.general_category() == GeneralCategory::Format {
                line.extend(c.escape_default());
            } else {
                line.push(c);
            }
        }
    }
    line
}

fn counts(pool: &api::Pool) -> api::PoolCounts {
    pool.counts.unwrap_or_default()
}

/// WARM/WAITED/COLD/FAILED: how purchases were served, or that they
/// failed once under way. WAITED is "-" from a server older than the
/// count, which has them among the warm ones.
fn allocs(pool: &api::Pool) -> String {
    format!(
        "{}/{}/{}/{}",
        pool.allocations_warm,
        opt_number(pool.allocations_waited),
        pool.allocations_cold,
        pool.allocations_failed
    )
}

/// `pools list`; an error's age is counted at `now`.
pub fn pools_table(pools: &[api::Pool], now: SystemTime) -> String {
    let mut t = Table::new(&[
        "POOL",
        "READY",
        "WARMING",
        "BOOTING",
        "TARGET",
        "MIN",
        "MAX",
        "LEAD P90",
        "ALLOCATED",
        "WARM/WAITED/COLD/FAILED",
        "STATUS",
        "HEALTH",
        "IMAGE",
        "LAST ERROR",
    ]);
    for pool in pools {
        let c = counts(pool);
        let spec = pool.spec.clone().unwrap_or_default();
        t.row(vec![
            pool_name(&pool.flavor, &pool.availability_zone),
            c.ready.to_string(),
            c.warming.to_string(),
            c.booting.to_string(),
            target_cell(pool),
            min_cell(pool, &spec),
            spec.max_ready.to_string(),
            lead_cell(pool),
            c.allocated.to_string(),
            allocs(pool),
            pool_status(pool).to_owned(),
            health_cell(pool),
            cell(&spec.image),
            last_error_cell(pool, now),
        ]);
    }
    t.render()
}

/// One frame of `watch`: depth, what it is kept at and why, so it fits a
/// terminal. TARGET is marked "auto:" when computed, LEAD P90 with "~" while
/// it is the configured prior; THROTTLE is the AZ's gate (`open`,
/// `throttled:<left>`, `quota:<left>`, the time left at `now`).
pub fn watch_table<'a>(pools: impl IntoIterator<Item = &'a api::Pool>, now: SystemTime) -> String {
    let mut t = Table::new(&[
        "POOL",
        "READY",
        "WARMING",
        "BOOTING",
        "TARGET",
        "HIT RATE",
        "LEAD P90",
        "THROTTLE",
        "STATUS",
        "HEALTH",
        "ALLOCATED",
        "WARM/WAITED/COLD/FAILED",
        "LAST ERROR",
    ]);
    for pool in pools {
        let c = counts(pool);
        t.row(vec![
            pool_name(&pool.flavor, &pool.availability_zone),
            c.ready.to_string(),
            c.warming.to_string(),
            c.booting.to_string(),
            target_cell(pool),
            hit_rate_cell(pool),
            lead_cell(pool),
            throttle_cell(pool, now),
            pool_status(pool).to_owned(),
            health_cell(pool),
            c.allocated.to_string(),
            allocs(pool),
            last_error_cell(pool, now),
        ]);
    }
    t.render()
}

/// `instances`.
pub fn instances_table(instances: &[api::Instance]) -> String {
    let mut t = Table::new(&[
        "ID",
        "POOL",
        "STATE",
        "SERVER",
        "IMAGE",
        "ATTEMPTS",
        "CREATED",
        "READY AT",
        "REQUEST",
        "LAST ERROR",
    ]);
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or_else(|| "-".to_owned(), |t| timestamp(t, false))
    };
    for i in instances {
        t.row(vec![
            cell(&i.id),
            pool_name(&i.flavor, &i.availability_zone),
            instance_state(i.state),
            cell(&i.server_id),
            cell(&i.image),
            i.attempts.to_string(),
            ts(&i.created_at),
            ts(&i.ready_at),
            cell(&i.request_id),
            cell(&i.last_error),
        ]);
    }
    t.render()
}

/// `key: value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let key = format!("{key}:");
        let _ = writeln!(out, "{key:<width$} {value}");
    }
    out
}

fn opt_duration(d: &Option<prost_types::Duration>) -> String {
    d.as_ref().map_or_else(|| "-".to_owned(), duration_short)
}

/// `pools get|delete`; a throttle pause's and a backoff's time left are
/// counted at `now`.
pub fn pool_detail(pool: &api::Pool, now: SystemTime) -> String {
    detail(pool, now, None)
}

/// `pools create|update`, as [`pool_detail`]. warmpoold answers before the
/// pool's next replenish step plans for the new settings (an update drops
/// the plan made for the old ones; the step comes after a second's
/// debounce and whatever retirements it waits for, and a failed step makes
/// none) or reads a new flavor's quota: the plan and quota lines say so
/// and where to look, rather than a bare `-`.
pub fn changed_pool_detail(pool: &api::Pool, now: SystemTime) -> String {
    detail(pool, now, Some(&pools_get_command(pool)))
}

/// The `pools get` command of `pool`, to paste into a shell: the names
/// as they are when a shell and warmpoolctl's parser take them as they
/// are (the usual flavor and zone names), else described, as a name with
/// a space or a leading `-` would need quoting or a `--` to paste.
fn pools_get_command(pool: &api::Pool) -> String {
    let plain = |name: &str| {
        !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@:+,=/-".contains(c))
    };
    if plain(&pool.flavor) && plain(&pool.availability_zone) {
        format!(
            "`warmpoolctl pools get {} {}`",
            pool.flavor, pool.availability_zone
        )
    } else {
        "`warmpoolctl pools get` of this pool".to_owned()
    }
}

/// `look`: the command that shows what this answer could not yet.
fn detail(pool: &api::Pool, now: SystemTime, look: Option<&str>) -> String {
    let c = counts(pool);
    let spec = pool.spec.clone().unwrap_or_default();
    fields(&[
        ("pool", pool_name(&pool.flavor, &pool.availability_zone)),
        ("status", pool_status(pool).to_owned()),
        ("image", cell(&spec.image)),
        ("min_ready", min_ready_detail(pool, &spec)),
        ("max_ready", spec.max_ready.to_string()),
        ("windows", windows_detail(&spec.windows)),
        ("target", target_setting(pool, &spec)),
        ("effective_target", pool.effective_target.to_string()),
        ("lead_time", lead_time_detail(pool)),
        ("demand", demand_detail(pool)),
        ("service_level", service_level_detail(pool)),
        ("throttle", throttle_detail(pool, now)),
        ("plan", plan_detail(pool, now, look)),
        ("quota", quota_detail(pool)),
        ("health", health_cell(pool)),
        ("boot_timeout", opt_duration(&spec.boot_timeout)),
        ("max_age", max_age_detail(&spec.max_age)),
        ("iops_limit", iops_limit_detail(pool, &spec)),
        ("volume_iops_limit", opt_number(spec.volume_iops_limit)),
        (
            "instances",
            format!(
                "ready {}, warming {}, booting {}, claimed {}, allocated {}, \
                 releasing {}, failed {}, deleting {}",
                c.ready,
                c.warming,
                c.booting,
                c.claimed,
                c.allocated,
                c.releasing,
                c.failed,
                c.deleting
            ),
        ),
        (
            "allocations",
            format!(
                "warm {}, waited {}, cold {}, exhausted {}, failed {}",
                pool.allocations_warm,
                // "-" from a server older than the field.
                opt_number(pool.allocations_waited),
                pool.allocations_cold,
                opt_number(pool.allocations_exhausted),
                pool.allocations_failed
            ),
        ),
        ("last_error", last_error_detail(pool)),
    ])
}

/// min_ready as a table cell: the min an open window raises it to, marked
/// "win:", else the configured one.
fn min_cell(pool: &api::Pool, spec: &api::PoolSpec) -> String {
    match pool.sizing.as_ref().and_then(|s| s.window_min) {
        Some(min) if min > spec.min_ready => format!("win:{min}"),
        _ => spec.min_ready.to_string(),
    }
}

/// The configured min_ready, and the min an open window raises it to.
fn min_ready_detail(pool: &api::Pool, spec: &api::PoolSpec) -> String {
    match pool.sizing.as_ref().and_then(|s| s.window_min) {
        Some(min) if min > spec.min_ready => {
            format!("{} ({min} now: a window is open)", spec.min_ready)
        }
        _ => spec.min_ready.to_string(),
    }
}

fn list_or_dash(items: &[String]) -> String {
    match items.is_empty() {
        true => "-".to_owned(),
        false => items.join("; "),
    }
}

/// The windows, each with its zone: the server writes an offset after a
/// window kept at one ("... min 2 UTC+02:00") and nothing after one in
/// UTC, which a reader could take for local time.
fn windows_detail(windows: &[String]) -> String {
    let zoned: Vec<String> = windows
        .iter()
        .map(|w| {
            let names_zone = w.split_whitespace().any(|token| {
                let t = token.to_ascii_uppercase();
                t.starts_with("UTC")
                    || t == "Z"
                    || (t.starts_with(['+', '-'])
                        && t[1..].starts_with(|c: char| c.is_ascii_digit()))
            });
            if names_zone {
                one_line(w)
            } else {
                format!("{} UTC", one_line(w))
            }
        })
        .collect();
    list_or_dash(&zoned)
}

fn opt_number(n: Option<impl std::fmt::Display>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The pool's flavor IOPS limit: its own, or, unset, the one the daemon
/// read from the cloud's flavor (its extra specs), which the lead-time
/// prior is then stretched for, or why it has none (a daemon older than
/// that reason says nothing).
fn iops_limit_detail(pool: &api::Pool, spec: &api::PoolSpec) -> String {
    let from_cloud = pool.sizing.as_ref().and_then(|s| {
        s.prior_iops_limit
            .filter(|_| s.prior_iops_limit_source == "cloud_flavor")
    });
    let unknown = pool
        .sizing
        .as_ref()
        .map(|s| s.prior_iops_limit_unknown.as_str())
        .filter(|why| !why.is_empty());
    match (spec.iops_limit, from_cloud, unknown) {
        (Some(own), _, _) => own.to_string(),
        (None, Some(flavor), _) => format!("- (the flavor's, from the cloud: {flavor})"),
        (None, None, Some(why)) => {
            format!("- (none from the cloud's flavor: {})", one_line(why))
        }
        (None, None, None) => "-".to_owned(),
    }
}

/// The target setting in the words `--target` takes.
fn target_setting(pool: &api::Pool, spec: &api::PoolSpec) -> String {
    if is_auto(pool) {
        "auto (sized from demand and boot lead time)".to_owned()
    } else if spec.target == 0 {
        "min_ready".to_owned()
    } else {
        format!("fixed {}", spec.target)
    }
}

/// Unset or 0, Ready instances are never recycled for their age.
fn max_age_detail(max_age: &Option<prost_types::Duration>) -> String {
    match max_age {
        Some(d) if d.seconds != 0 || d.nanos != 0 => duration_short(d),
        _ => "never".to_owned(),
    }
}

fn lead_time_detail(pool: &api::Pool) -> String {
    let Some(s) = &pool.sizing else {
        return "-".to_owned();
    };
    format!(
        "p50 {}, p90 {} ({}, {})",
        opt_duration(&s.lead_time_p50),
        opt_duration(&s.lead_time_p90),
        lead_time_source(s.lead_time_source).to_lowercase(),
        boots(s.lead_time_samples)
    )
}

/// "1 boot", "2 boots".
fn boots(n: u32) -> String {
    format!("{n} boot{}", if n == 1 { "" } else { "s" })
}

fn demand_detail(pool: &api::Pool) -> String {
    let Some(s) = &pool.sizing else {
        return "-".to_owned();
    };
    format!(
        "forecast {} (short {}, long {}); {:.2} per lead time",
        demand_rate(s.demand_forecast_per_second),
        demand_rate(s.demand_short_per_second),
        demand_rate(s.demand_long_per_second),
        s.demand_in_lead_time
    )
}

/// The proto's noise floor for demand rates, per second: WatchPools sends
/// no change below it (about one purchase in twelve days). The server's
/// `DEMAND_RATE_FLOOR` is the same number; the client cannot depend on
/// the server crate for it.
const DEMAND_RATE_FLOOR: f64 = 1e-6;

/// A demand rate per hour, or per day below 0.1/h, with two significant
/// digits at least: auto sizing works from the rate itself, and a pool
/// selling a few times a day would read "0.0/h", no demand at all. Below
/// [`DEMAND_RATE_FLOOR`] it is "~0/d": a quiet pool's rate decays without
/// ever reaching 0, and its digits would follow hundreds of zeros.
fn demand_rate(per_second: f64) -> String {
    let per_hour = per_second * 3600.0;
    if per_second > 0.0 && per_second < DEMAND_RATE_FLOOR {
        "~0/d".to_owned()
    } else if per_hour.abs() >= 1e9 {
        // Only a broken server sends these; `{:.1}` would print every digit.
        format!("{per_hour:.1e}/h")
    } else if per_hour.is_nan() || per_hour <= 0.0 || per_hour >= 1.0 {
        format!("{per_hour:.1}/h")
    } else if per_hour >= 0.1 {
        format!("{per_hour:.2}/h")
    } else {
        let per_day = per_hour * 24.0;
        // As many decimals as put two significant digits after the zeros.
        let decimals = usize::try_from(1 - per_day.log10().floor() as i64).unwrap_or(0);
        format!("{per_day:.decimals$}/d")
    }
}

fn service_level_detail(pool: &api::Pool) -> String {
    pool.sizing.as_ref().map_or_else(
        || "-".to_owned(),
        |s| format!("{} (z {:.2})", s.service_level, s.z),
    )
}

fn throttle_detail(pool: &api::Pool, now: SystemTime) -> String {
    let Some(g) = pool.sizing.as_ref().and_then(|s| s.gate.as_ref()) else {
        return "-".to_owned();
    };
    // No window with the gate off: nothing limits boots to one. The AIMD
    // window grows by fractions, and the AZ admits its floor: rounded, 8.75
    // would read as room for 9.
    let window = g.window.map_or_else(String::new, |w| {
        let admits = w.floor();
        if w == admits {
            format!(", window {admits}")
        } else {
            let shown = (w * 100.0).floor() / 100.0;
            format!(", window {shown:.2} (admits {admits})")
        }
    });
    // What explains a shrunken window during a slow fill: builds slower
    // than the uncontended baseline, throttling answers, quota refusals.
    let ratio = g.latency_ratio;
    let shown_ratio = if ratio.is_finite() && ratio.abs() < 1e4 {
        format!("{ratio:.2}x")
    } else {
        // Only a broken server sends these; `{:.2}` would print every digit.
        format!("{ratio:.1e}x")
    };
    // A Retry-After pause is a service's, in every zone: named, so that a
    // zone held by another zone's 429 is not taken for its own.
    let paused_by = match g.throttled_service.as_str() {
        "" => String::new(),
        service => format!(" ({service}'s Retry-After, every AZ)"),
    };
    // The proto's 0 is "before any build".
    let build_time = match (&g.baseline, ratio != 0.0) {
        (Some(b), true) => format!(
            "build time {shown_ratio} its baseline {}",
            duration_compact(b)
        ),
        (None, true) => format!("build time {shown_ratio} its baseline"),
        (Some(b), false) => format!("build time - (baseline {})", duration_compact(b)),
        (None, false) => "no build timed yet".to_owned(),
    };
    // Builds (boot request until ACTIVE), as the proto counts them: the plan
    // line's "in flight" counts the pool's booting + warming, which may be
    // more than the AZ's builds. The counts say where they are counted:
    // the gate counts throttling per AZ but quota refusals per project (the
    // quota is the project's); one "(all AZs)" at the end read as covering
    // all three.
    format!(
        "{}{paused_by}{window}, {} builds in flight in the AZ ({} replenishing); {build_time}; \
         {} throttled responses and {} window decreases in the AZ, \
         {} quota refusals across all AZs",
        throttle_cell(pool, now),
        g.in_flight,
        g.gated_in_flight,
        g.throttled_responses,
        g.window_decreases,
        g.quota_refusals
    )
}

/// LAST ERROR: the pool's last error with its age at `now`, so one it
/// recovered from weeks ago reads as history ("30d ago: boot timed out"):
/// the server never clears it, only overwrites it.
fn last_error_cell(pool: &api::Pool, now: SystemTime) -> String {
    let error = one_line(&pool.last_error);
    if error.is_empty() {
        return "-".to_owned();
    }
    let when = match &pool.last_error_at {
        // A daemon older than last_error_at, or an error stored by one.
        None => "at unknown time".to_owned(),
        Some(at) => age_short(at, now).map_or_else(
            || format!("at {}", timestamp(at, false)),
            |age| format!("{age} ago"),
        ),
    };
    format!("{when}: {error}")
}

/// The pool's last error and when it happened, so an old one reads as
/// history.
fn last_error_detail(pool: &api::Pool) -> String {
    match &pool.last_error_at {
        Some(at) if !pool.last_error.is_empty() => {
            format!("{} (at {})", cell(&pool.last_error), timestamp(at, false))
        }
        _ => cell(&pool.last_error),
    }
}

/// "3 more servers (instances: 7 of 10 used at the last poll)": the poll
/// less the boots started since; "no server of the flavor ever fits ..."
/// when one needs more than the whole quota; "unknown: ..." when the last
/// poll failed; "unlimited (...)" when the last read found no limit; "not
/// read yet (...)" before the first read (the gate, off, reads none).
/// "; ports: not counted (why)" follows when the poll could not count the
/// port quota.
fn quota_detail(pool: &api::Pool) -> String {
    let Some(s) = &pool.sizing else {
        return "-".to_owned();
    };
    let room = quota_room(s);
    match s.quota_ports_unknown.as_str() {
        "" => room,
        why if s.quota_headroom.is_none() && !s.beyond_quota && s.quota_error.is_empty() => {
            format!(
                "no limit in Nova's quotas{}; ports: not counted ({})",
                read_at(s),
                cell(why)
            )
        }
        why => format!("{room}; ports: not counted ({})", cell(why)),
    }
}

fn quota_room(s: &api::SizingStatus) -> String {
    let binding = one_line(&s.quota_limited_by);
    match s.quota_headroom {
        _ if s.beyond_quota => {
            format!("no server of the flavor ever fits ({binding}): raise the quota")
        }
        Some(n) => {
            let servers = if n == 1 { "server" } else { "servers" };
            format!("{n} more {servers} ({binding} at the last poll)")
        }
        None if !s.quota_error.is_empty() => format!(
            "unknown: the last poll of the limits failed ({}); only quota refusals pace refills",
            cell(&s.quota_error)
        ),
        None if gate_disabled(s) => "not read: the gate is off (`gate = false`)".to_owned(),
        // The last read found no limit: Nova's quotas and Neutron's port
        // quota all unlimited (-1).
        None if s.quota_read_at.is_some() => {
            format!(
                "unlimited (no limit in Nova's quotas nor Neutron's port quota{})",
                read_at(s)
            )
        }
        // A flavor's quota is polled only while one of its pools wants
        // boots: a new flavor's, and one of pools at rest, is not read.
        // A warmpoold older than quota_read_at never sets it: against one,
        // unlimited limits look the same, hence the hedge.
        None => "not read yet (read when one of the flavor's pools or purchases boots; or \
                 unlimited, if warmpoold is older than this warmpoolctl)"
            .to_owned(),
    }
}

/// " at the read at 2025-11-24T17:00:00Z": when the limits were last read,
/// if warmpoold says.
fn read_at(s: &api::SizingStatus) -> String {
    s.quota_read_at
        .as_ref()
        .map(|at| format!(" at the read at {}", timestamp(at, false)))
        .unwrap_or_default()
}

fn gate_disabled(s: &api::SizingStatus) -> bool {
    s.gate
        .as_ref()
        .is_some_and(|g| g.state == i32::from(api::ThrottleState::Disabled))
}

/// "backoff: 0 new boots, 0 in flight (boots failed: next in 40s)": a
/// backoff's time left is counted at `now`, as a throttle pause's. A pool
/// degraded with no failed boot was marked by the start-up cloud check,
/// and says so: paused until the check is made again, or (a management
/// network's mark, the check passed) one boot at a time.
fn plan_detail(pool: &api::Pool, now: SystemTime, look: Option<&str>) -> String {
    let Some(s) = &pool.sizing else {
        return "-".to_owned();
    };
    if s.plan_reason.is_empty() {
        let paused = pool.spec.as_ref().is_some_and(|spec| spec.paused);
        return match (pool.draining, paused, look) {
            (true, _, _) => "none: the pool is being deleted".to_owned(),
            (false, true, _) => "none: the pool is paused".to_owned(),
            (false, false, None) => "not made yet: the pool's next replenish step makes it (a \
                                     failed step makes none and is logged)"
                .to_owned(),
            (false, false, Some(look)) => format!(
                "not made yet: the pool's next replenish step makes it ({look} shows it; a failed \
                 step makes none and is logged)"
            ),
        };
    }
    let plan = format!(
        "{}: {} new {}, {} in flight",
        one_line(&s.plan_reason),
        s.plan_boots,
        if s.plan_boots == 1 { "boot" } else { "boots" },
        s.boots_in_flight
    );
    if s.plan_reason != "backoff" {
        return plan;
    }
    let marked = pool.degraded && pool.consecutive_boot_failures == 0;
    match (backoff_left(s, now), marked) {
        (Some(left), false) => format!("{plan} (boots failed: next in {left})"),
        (None, false) => format!("{plan} (boots failed: one at a time until one is ready)"),
        // While the check fails the pool boots nothing: the pause ends
        // with the check made again, not with a boot.
        (Some(left), true) => {
            format!("{plan} (the start-up cloud check fails: checked again in {left})")
        }
        (None, true) => format!(
            "{plan} (the start-up cloud check failed: one boot at a time until the pool recovers)"
        ),
    }
}

/// Whether the purchase found an instance Ready; not known before an
/// instance is claimed (the server leaves the flag false until then). A
/// miss was served by a boot of its own (COLD_BOOT) or by an instance that
/// became Ready while it waited (WAIT, or COLD_BOOT in line for quota):
/// the allocation does not say which.
fn warm_hit(a: &api::Allocation) -> &'static str {
    match (a.warm_hit, !a.instance_id.is_empty()) {
        (true, _) => "yes",
        (false, true) => "no (cold boot, or waited for one)",
        (false, false) => "-",
    }
}

/// The tenant's volume and what a release does (or did) to it, so that an
/// operator sees before releasing whether the data goes with it.
fn volume_cell(a: &api::Allocation) -> String {
    if a.volume_id.is_empty() {
        return "-".to_owned();
    }
    let released = a.state == api::AllocationState::Released as i32;
    let fate = match (a.delete_volume_on_release, released) {
        (Some(true), false) => "deleted on release",
        (Some(false), false) => "kept on release",
        (Some(true), true) => "deleted",
        (Some(false), true) => "kept",
        // A server older than the field: it may delete the volume or not.
        (None, false) => "on release: unknown, the server predates delete_volume_on_release",
        (None, true) => "deleted or kept: unknown, the server predates delete_volume_on_release",
    };
    format!("{} ({fate})", cell(&a.volume_id))
}

/// `allocate`, `get`, `release`.
pub fn allocation_detail(a: &api::Allocation) -> String {
    let mut labels: Vec<_> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let mut rows = vec![
        ("request_id", cell(&a.request_id)),
        ("tenant", cell(&a.tenant_project_id)),
        ("pool", pool_name(&a.flavor, &a.availability_zone)),
        ("state", allocation_state(a.state)),
        ("warm_hit", warm_hit(a).to_owned()),
        ("instance", cell(&a.instance_id)),
        ("server", cell(&a.server_id)),
        ("volume", volume_cell(a)),
        ("port", cell(&a.port_id)),
        ("ip_address", cell(&a.ip_address)),
        (
            "created_at",
            a.created_at
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| timestamp(t, false)),
        ),
        ("labels", cell(&labels.join(", "))),
    ];
    if let Some(t) = &a.released_at {
        rows.insert(rows.len() - 1, ("released_at", timestamp(t, false)));
    }
    // Why a release stuck RELEASING does not finish (a volume Cinder
    // refuses to delete): beside the state it explains.
    if !a.last_error.is_empty() {
        rows.insert(4, ("last_error", cell(&a.last_error)));
    }
    if let Some(t) = &a.timings {
        // Step order, i.e. the order the server spends the time in.
        rows.push((
            "timings",
            format!(
                "claim {}, volume {}, port {}, verify {}, wait {}, total {}",
                opt_duration(&t.claim),
                opt_duration(&t.volume),
                opt_duration(&t.port),
                opt_duration(&t.verify),
                opt_duration(&t.wait),
                opt_duration(&t.total),
            ),
        ));
    }
    fields(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{sample_allocation, sample_pools};
    use std::time::Duration;

    #[test]
    fn cells_keep_control_characters_away_from_the_terminal() {
        assert_eq!(
            cell("boot timed out\n\tafter 10m "),
            "boot timed out after 10m"
        );
        assert_eq!(cell("\u{1b}[2Jgone\u{7}"), "\\u{1b}[2Jgone\\u{7}");
        assert_eq!(cell(" \n "), "-");
    }

    /// Unicode's format characters (category Cf) print as nothing or turn
    /// the text around them: a right-to-left override in a cloud's fault
    /// text or a label would make the line read as something else, and a
    /// zero-width space would make one pool name look like another.
    #[test]
    fn cells_show_format_characters_escaped() {
        assert_eq!(cell("a\u{202e}b"), "a\\u{202e}b");
        for c in ['\u{200b}', '\u{feff}', '\u{2066}', '\u{2069}', '\u{e0041}'] {
            let shown = cell(&format!("x{c}y"));
            assert_eq!(shown, format!("x{}y", c.escape_default()));
            assert!(!shown.contains(c), "{shown:?}");
        }
        assert_eq!(pool_name("m1\u{200b}", "az1"), "m1\\u{200b}@az1");
        // Letters of other scripts are no format characters.
        assert_eq!(cell("café Ωμέγα 日本"), "café Ωμέγα 日本");
    }

    /// plan_reason and quota_limited_by come from the server as the other
    /// strings do, and go through the same escaping.
    #[test]
    fn the_plan_and_quota_details_show_server_text_escaped() {
        let mut pool = sample_pools()[0].clone();
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.plan_reason = "refill\u{1b}[2J\u{202e}".into();
        sizing.quota_headroom = Some(2);
        sizing.quota_limited_by = "cores\u{7}: 8 of 10\u{200b} used".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "plan:              refill\\u{1b}[2J\\u{202e}: 0 new boots, 0 in flight\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "quota:             2 more servers (cores\\u{7}: 8 of 10\\u{200b} used at the last poll)\n"
            ),
            "{text}"
        );
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.beyond_quota = true;
        sizing.quota_limited_by = "cores:\u{2066} one server needs 64".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "no server of the flavor ever fits (cores:\\u{2066} one server needs 64)"
            ),
            "{text}"
        );
    }

    /// A disabled gate limits boots to no window, so none is shown (the
    /// daemon sends none); an enabled one's is. The AZ's count is of
    /// builds (boot request until ACTIVE, as the proto and the
    /// warmpool_pool_gate_in_flight metric say), not of the plan line's
    /// boots in flight (booting + warming): named "boots", a pool with
    /// more of its own in flight than the whole AZ read as a contradiction.
    #[test]
    fn the_throttle_detail_shows_a_window_only_with_the_gate_on() {
        let now = std::time::SystemTime::now();
        let quiet = "; no build timed yet; 0 throttled responses and 0 window decreases \
                     in the AZ, 0 quota refusals across all AZs";
        let mut pool = sample_pools().remove(0);
        let with_gate = |state: api::ThrottleState, window| api::SizingStatus {
            gate: Some(api::ThrottleGate {
                state: state.into(),
                window,
                in_flight: 3,
                gated_in_flight: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        pool.sizing = Some(with_gate(api::ThrottleState::Disabled, None));
        assert_eq!(
            throttle_detail(&pool, now),
            format!("off, 3 builds in flight in the AZ (2 replenishing){quiet}")
        );
        pool.sizing = Some(with_gate(api::ThrottleState::Open, Some(8.0)));
        assert_eq!(
            throttle_detail(&pool, now),
            format!("open, window 8, 3 builds in flight in the AZ (2 replenishing){quiet}")
        );
        // The AIMD window grows by fractions; the AZ admits its floor.
        // "window 8.8" read as room for 9.
        pool.sizing = Some(with_gate(api::ThrottleState::Open, Some(8.75)));
        assert_eq!(
            throttle_detail(&pool, now),
            format!("open, window 8.75 (admits 8), 3 builds in flight in the AZ (2 replenishing){quiet}")
        );
        pool.sizing = Some(with_gate(api::ThrottleState::Open, Some(8.999)));
        assert_eq!(
            throttle_detail(&pool, now),
            format!("open, window 8.99 (admits 8), 3 builds in flight in the AZ (2 replenishing){quiet}")
        );
    }

    #[test]
    fn table_aligns_columns_and_trims() {
        let mut t = Table::new(&["A", "LONG HEADER", "C"]);
        t.row(vec!["wide cell".into(), "1".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "A          LONG HEADER  C\nwide cell  1            x\n"
        );
    }

    #[test]
    fn pool_list_table() {
        let text = pools_table(&sample_pools(), SystemTime::now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "POOL",
                "READY",
                "WARMING",
                "BOOTING",
                "TARGET",
                "MIN",
                "MAX",
                "LEAD",
                "P90",
                "ALLOCATED",
                "WARM/WAITED/COLD/FAILED",
                "STATUS",
                "HEALTH",
                "IMAGE",
                "LAST",
                "ERROR"
            ]
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "m1.large@az1",
                "2",
                "0",
                "1",
                "2",
                "2",
                "5",
                "-",
                "7",
                "12/0/1/0",
                "active",
                "ok",
                "mysql-8.0",
                "-"
            ]
        );
        // The multi-line error is folded onto its row.
        assert!(lines[2].starts_with("m1.xlarge@az2"), "{text}");

        // An open window raising min_ready shows as what the pool is kept at.
        let mut pools = sample_pools();
        pools[0]
            .sizing
            .get_or_insert_with(Default::default)
            .window_min = Some(9);
        let text = pools_table(&pools, SystemTime::now());
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[5], "win:9", "{text}");
        pools[0].sizing.as_mut().unwrap().window_min = Some(1);
        let text = pools_table(&pools, SystemTime::now());
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row[5], "2",
            "a window below min_ready changes nothing: {text}"
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row[9..],
            [
                "0/0/0/4",
                "paused",
                "ok",
                "mysql-8.4",
                // The sample's error has no last_error_at.
                "at",
                "unknown",
                "time:",
                "boot",
                "timed",
                "out",
                "after",
                "10m"
            ]
        );
        // A pool that keeps failing its boots says so beside its status.
        let mut pools = sample_pools();
        pools[1].degraded = true;
        let text = pools_table(&pools, SystemTime::now());
        let row: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(row[10..12], ["paused", "degraded"], "{text}");
        // Columns line up: each row's READY value starts where the header does.
        let col = lines[0].find("READY").unwrap();
        assert!(lines[1][col..].starts_with("2 "), "{text}");
        assert!(lines[2][col..].starts_with("0 "), "{text}");
    }

    #[test]
    fn watch_table_columns() {
        let pools = sample_pools();
        let text = watch_table(&pools, SystemTime::now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("POOL"));
        assert!(lines[0].contains("WARM/WAITED/COLD/FAILED"));
        assert!(lines[0].contains("HIT RATE  LEAD P90  THROTTLE  STATUS  HEALTH"));
        assert!(lines[0].ends_with("LAST ERROR"));
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            &row[..12],
            [
                "m1.large@az1",
                "2",
                "0",
                "1",
                "2",
                "92.3%",
                "-",
                "-",
                "active",
                "ok",
                "7",
                "12/0/1/0"
            ]
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            &row[..12],
            [
                "m1.xlarge@az2",
                "0",
                "3",
                "0",
                "3",
                "0.0%",
                "-",
                "-",
                "paused",
                "ok",
                "0",
                "0/0/0/4"
            ]
        );
    }

    /// One miss in 200 (the default service level, 0.995) must not read as
    /// 100%: the rate is rounded down to a tenth of a percent, so only a
    /// pool without misses shows 100.0%.
    #[test]
    fn a_hit_rate_never_rounds_up_to_flawless() {
        let rate = |warm: u64, cold: u64, exhausted: u64| {
            let mut pool = sample_pools().remove(0);
            (
                pool.allocations_warm,
                pool.allocations_cold,
                pool.allocations_exhausted,
            ) = (warm, cold, Some(exhausted));
            let text = watch_table([&pool], SystemTime::now());
            let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
            row[5].to_owned()
        };
        assert_eq!(rate(199, 1, 0), "99.5%");
        assert_eq!(rate(250, 0, 1), "99.6%");
        assert_eq!(rate(19_999, 1, 0), "99.9%");
        assert_eq!(rate(200, 0, 0), "100.0%");
        assert_eq!(rate(12, 1, 0), "92.3%");
        assert_eq!(rate(0, 0, 4), "0.0%");
        assert_eq!(rate(1, 2, 0), "33.3%");
        assert_eq!(rate(2, 1, 0), "66.6%");
        assert_eq!(rate(0, 0, 0), "-");
        assert_eq!(rate(u64::MAX, u64::MAX, 0), "50.0%");
        assert_eq!(rate(u64::MAX, 0, 0), "100.0%");
        assert_eq!(rate(u64::MAX - 1, 1, 0), "99.9%");
    }

    /// A release stuck RELEASING says why beside its state; no other
    /// allocation has the row.
    #[test]
    fn allocation_detail_shows_why_a_release_is_stuck() {
        assert!(!allocation_detail(&sample_allocation()).contains("last_error"));
        let mut stuck = sample_allocation();
        stuck.state = api::AllocationState::Releasing as i32;
        stuck.last_error = "volume vol-1 is detached, and Cinder still refuses its delete".into();
        let text = allocation_detail(&stuck);
        assert!(
            text.contains(
                "state:      RELEASING\nlast_error: volume vol-1 is detached, and Cinder still refuses its delete\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn allocation_detail_shows_timings() {
        let text = allocation_detail(&sample_allocation());
        assert!(text.contains("state:      ALLOCATED\n"), "{text}");
        assert!(
            text.contains("labels:     app=billing, tier=gold\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "timings:    claim 3ms, volume 1s 250ms, port 400ms, verify 80ms, wait -, total 1s 733ms\n"
            ),
            "{text}"
        );
        assert!(!text.contains("released_at"), "{text}");
        assert!(
            text.contains("volume:     vol-1 (deleted on release)\n"),
            "{text}"
        );
        let mut released = sample_allocation();
        released.released_at = Some(prost_types::Timestamp {
            seconds: 1_764_003_600,
            nanos: 0,
        });
        released.state = api::AllocationState::Released as i32;
        released.delete_volume_on_release = Some(false);
        let text = allocation_detail(&released);
        assert!(
            text.contains("released_at: 2025-11-24T17:00:00Z\nlabels:"),
            "{text}"
        );
        assert!(text.contains(" vol-1 (kept)\n"), "{text}");

        // A server older than the field does not send it: neither "kept"
        // nor "deleted" can be said for it.
        let mut from_old_server = sample_allocation();
        from_old_server.delete_volume_on_release = None;
        let text = allocation_detail(&from_old_server);
        assert!(
            text.contains(
                "vol-1 (on release: unknown, the server predates delete_volume_on_release)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn pool_detail_shows_spec_and_counts() {
        let text = pool_detail(&sample_pools()[0], SystemTime::now());
        assert!(text.contains("boot_timeout:      10m\n"), "{text}");
        assert!(text.contains("max_age:           1day\n"), "{text}");
        assert!(text.contains("ready 2, warming 0, booting 1"), "{text}");
        assert!(text.contains("target:            min_ready\n"), "{text}");
        assert!(text.contains("windows:           -\n"), "{text}");
        assert!(text.contains("iops_limit:        -\n"), "{text}");
        assert!(
            text.contains("allocations:       warm 12, waited 0, cold 1, exhausted 0, failed 0\n"),
            "{text}"
        );
        // From a server older than allocations_exhausted and
        // allocations_waited: not known.
        let mut old = sample_pools()[0].clone();
        old.allocations_exhausted = None;
        old.allocations_waited = None;
        let text = pool_detail(&old, SystemTime::now());
        assert!(
            text.contains("allocations:       warm 12, waited -, cold 1, exhausted -, failed 0\n"),
            "{text}"
        );
        let text = pools_table(&[old], SystemTime::now());
        assert!(text.contains(" 12/-/1/0 "), "{text}");
    }

    /// Windows are read in UTC unless one names its own offset: the zone
    /// shows on every one.
    #[test]
    fn pool_detail_names_the_zone_of_every_window() {
        let mut pool = sample_pools()[0].clone();
        pool.spec.as_mut().unwrap().windows = vec![
            "Mon-Fri 09:00-18:00 min 10".into(),
            "Sat 10:00-12:00 min 2 UTC+02:00".into(),
        ];
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "windows:           Mon-Fri 09:00-18:00 min 10 UTC; Sat 10:00-12:00 min 2 UTC+02:00\n"
            ),
            "{text}"
        );
    }

    /// A pool selling a few times a day keeps a rate auto sizing works
    /// from: it must not read as no demand at all.
    #[test]
    fn small_demand_rates_keep_two_significant_digits() {
        let per_hour = |h: f64| h / 3600.0;
        assert_eq!(demand_rate(per_hour(0.03)), "0.72/d");
        assert_eq!(demand_rate(per_hour(0.0037)), "0.089/d");
        assert_eq!(demand_rate(per_hour(0.09)), "2.2/d");
        assert_eq!(demand_rate(per_hour(0.5)), "0.50/h");
        assert_eq!(demand_rate(per_hour(2.345)), "2.3/h");
        assert_eq!(demand_rate(per_hour(36.0)), "36.0/h");
        assert_eq!(demand_rate(0.0), "0.0/h");

        let mut pool = sample_pools()[0].clone();
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.demand_forecast_per_second = per_hour(0.03);
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("demand:            forecast 0.72/d ("),
            "{text}"
        );
    }

    /// A quiet pool's demand decays as rate*exp(-t/tau) and never reaches
    /// 0: a day without a sale leaves the 5-minute EWMA near 1e-128/s.
    /// Below the proto's noise floor (1e-6/s, under which WatchPools sends
    /// no change) a rate reads as none, in a few characters, not as two
    /// significant digits after a hundred zeros.
    #[test]
    fn a_rate_below_the_noise_floor_reads_short() {
        let a_quiet_day = (1.0 / 300.0) * (-86_400.0f64 / 300.0).exp();
        for tiny in [
            a_quiet_day,
            1e-300,
            f64::MIN_POSITIVE,
            DEMAND_RATE_FLOOR * 0.99,
        ] {
            assert_eq!(demand_rate(tiny), "~0/d", "{tiny:e}");
        }
        // At the floor itself, still two significant digits.
        assert_eq!(demand_rate(DEMAND_RATE_FLOOR), "0.086/d");
        // Nor hundreds of digits from a server sending absurd rates.
        for absurd in [1e300, -1e300, f64::MAX, f64::INFINITY, f64::NAN] {
            let shown = demand_rate(absurd);
            assert!(shown.len() <= 12, "{absurd:e}: {shown}");
        }

        let mut pool = sample_pools()[0].clone();
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.demand_short_per_second = a_quiet_day;
        let text = pool_detail(&pool, SystemTime::now());
        let demand = text.lines().find(|l| l.starts_with("demand:")).unwrap();
        assert!(demand.contains("(short ~0/d, "), "{demand}");
        assert!(demand.len() < 100, "{demand}");
    }

    /// A pool's last_error is only ever overwritten: one that recovered
    /// weeks ago still has it. The list and the watch say how old it is,
    /// so an old one reads as history.
    #[test]
    fn last_error_cells_say_how_old_the_error_is() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_003_600);
        let day = Duration::from_secs(86_400);
        let last_error_cell = |at: Option<SystemTime>, list: bool| {
            let mut pools = sample_pools();
            pools[1].last_error = "boot timed out".into();
            pools[1].last_error_at = at.map(Into::into);
            pools[1].degraded = false;
            let text = if list {
                pools_table(&pools, now)
            } else {
                watch_table(&pools, now)
            };
            let lines: Vec<&str> = text.lines().collect();
            let col = lines[0].find("LAST ERROR").unwrap();
            lines[2][col..].to_owned()
        };
        for list in [true, false] {
            let cell = |at| last_error_cell(at, list);
            assert_eq!(cell(Some(now - day * 30)), "30d ago: boot timed out");
            assert_eq!(
                cell(Some(now - Duration::from_secs(5 * 3600 + 59))),
                "5h ago: boot timed out"
            );
            assert_eq!(
                cell(Some(now - Duration::from_secs(12 * 60))),
                "12m ago: boot timed out"
            );
            assert_eq!(
                cell(Some(now - Duration::from_secs(45))),
                "45s ago: boot timed out"
            );
            // A daemon's clock ahead of this one's: not "in the future".
            assert_eq!(
                cell(Some(now + Duration::from_secs(3))),
                "0s ago: boot timed out"
            );
            // From a daemon that did not record the time.
            assert_eq!(cell(None), "at unknown time: boot timed out");
        }
        // No error, no age.
        let text = pools_table(&sample_pools()[..1], now);
        assert!(text.lines().nth(1).unwrap().ends_with(" -"), "{text}");
    }

    /// The gate's diagnostics explain a shrunken window during a slow fill:
    /// builds slower than their baseline, throttling answers, quota
    /// refusals.
    #[test]
    fn the_throttle_detail_shows_the_gates_diagnostics() {
        let now = SystemTime::now();
        let mut pool = sample_pools().remove(0);
        pool.sizing = Some(api::SizingStatus {
            gate: Some(api::ThrottleGate {
                state: api::ThrottleState::Open.into(),
                window: Some(4.0),
                in_flight: 3,
                gated_in_flight: 2,
                baseline: crate::output::tests::d(90, 0),
                latency_ratio: 3.2,
                throttled_responses: 12,
                window_decreases: 5,
                quota_refusals: 2,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            throttle_detail(&pool, now),
            "open, window 4, 3 builds in flight in the AZ (2 replenishing); \
             build time 3.20x its baseline 1m30s; 12 throttled responses and \
             5 window decreases in the AZ, 2 quota refusals across all AZs"
        );
        // Before any build is measured.
        let gate = pool.sizing.as_mut().unwrap().gate.as_mut().unwrap();
        (gate.baseline, gate.latency_ratio) = (None, 0.0);
        (
            gate.throttled_responses,
            gate.window_decreases,
            gate.quota_refusals,
        ) = (0, 0, 0);
        assert_eq!(
            throttle_detail(&pool, now),
            "open, window 4, 3 builds in flight in the AZ (2 replenishing); \
             no build timed yet; 0 throttled responses and 0 window decreases \
             in the AZ, 0 quota refusals across all AZs"
        );
        // An absurd ratio stays short.
        let gate = pool.sizing.as_mut().unwrap().gate.as_mut().unwrap();
        gate.latency_ratio = 1e300;
        assert!(throttle_detail(&pool, now).len() < 200);
        // A Retry-After pause names its service: another zone's 429 may
        // hold this zone's boots.
        let gate = pool.sizing.as_mut().unwrap().gate.as_mut().unwrap();
        gate.state = api::ThrottleState::Throttled.into();
        gate.pause_remaining = crate::output::tests::d(30, 0);
        gate.throttled_service = "compute".into();
        assert!(
            throttle_detail(&pool, now)
                .starts_with("throttled:30s (compute's Retry-After, every AZ), window 4, "),
            "{}",
            throttle_detail(&pool, now)
        );
    }

    /// max_age unset (or 0) means Ready instances are never recycled.
    #[test]
    fn an_unset_max_age_reads_never() {
        let mut pool = sample_pools()[0].clone();
        for never in [None, Some(prost_types::Duration::default())] {
            pool.spec.as_mut().unwrap().max_age = never;
            let text = pool_detail(&pool, SystemTime::now());
            assert!(text.contains("max_age:           never\n"), "{text}");
        }
    }

    #[test]
    fn pool_detail_says_when_the_last_error_happened() {
        let mut pool = sample_pools()[0].clone();
        pool.last_error = "boot failed: NoValidHost".into();
        assert!(pool_detail(&pool, SystemTime::now())
            .contains("last_error:        boot failed: NoValidHost\n"));
        pool.last_error_at = Some(prost_types::Timestamp {
            seconds: 1_764_003_600,
            nanos: 0,
        });
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "last_error:        boot failed: NoValidHost (at 2025-11-24T17:00:00Z)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn pool_detail_shows_the_quota_room_and_a_flavor_beyond_it() {
        let mut pool = sample_pools()[0].clone();
        assert!(pool_detail(&pool, SystemTime::now()).contains("quota:             -\n"));
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.quota_headroom = Some(3);
        sizing.quota_limited_by = "instances: 7 of 10 used".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "quota:             3 more servers (instances: 7 of 10 used at the last poll)\n"
            ),
            "{text}"
        );
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.quota_headroom = Some(0);
        sizing.quota_limited_by = "cores: one db.huge server needs 64, the quota is 20".into();
        sizing.beyond_quota = true;
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             no server of the flavor ever fits (cores: one db.huge server needs 64, the quota is 20): raise the quota\n"),
            "{text}"
        );
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.quota_headroom = None;
        sizing.quota_limited_by = String::new();
        sizing.beyond_quota = false;
        sizing.quota_error = "transient cloud error: 503 Service Unavailable".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             unknown: the last poll of the limits failed (transient cloud error: 503 Service Unavailable); only quota refusals pace refills\n"),
            "{text}"
        );
    }

    /// No headroom is told apart by the time of the last read: a read
    /// that found every limit unlimited, or none yet (the gate, off,
    /// reads none).
    #[test]
    fn pool_detail_tells_unlimited_limits_from_limits_not_read() {
        let mut pool = sample_pools()[0].clone();
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.quota_headroom = None;
        sizing.quota_read_at = None;
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             not read yet (read when one of the flavor's pools or purchases boots; or unlimited, if warmpoold is older than this warmpoolctl)\n"),
            "{text}"
        );
        let read = prost_types::Timestamp {
            seconds: 1_764_003_600,
            nanos: 0,
        };
        pool.sizing.as_mut().unwrap().quota_read_at = Some(read);
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             unlimited (no limit in Nova's quotas nor Neutron's port quota at the read at 2025-11-24T17:00:00Z)\n"),
            "{text}"
        );
        // A failed poll since: its failure, not the last read's finding.
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.quota_error = "transient cloud error: 503 Service Unavailable".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             unknown: the last poll of the limits failed"),
            "{text}"
        );
        // The gate off reads none, whatever an older read left.
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.quota_error = String::new();
        sizing.gate = Some(api::ThrottleGate {
            state: api::ThrottleState::Disabled.into(),
            ..Default::default()
        });
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             not read: the gate is off (`gate = false`)\n"),
            "{text}"
        );
    }

    /// A poll that could not count the port quota says so beside the
    /// room it found, which is then Nova's quotas' alone.
    #[test]
    fn pool_detail_says_when_the_port_quota_is_not_counted() {
        let mut pool = sample_pools()[0].clone();
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.quota_headroom = Some(8);
        sizing.quota_limited_by = "instances: 2 of 10 used".into();
        sizing.quota_ports_unknown =
            "Neutron refused the quota details: cloud error: GET /quotas/p1/details: rule:get_quota is disallowed by policy (HTTP 403)".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             8 more servers (instances: 2 of 10 used at the last poll); ports: not counted (Neutron refused the quota details: cloud error: GET /quotas/p1/details: rule:get_quota is disallowed by policy (HTTP 403))\n"),
            "{text}"
        );
        // Nova's quotas unlimited: the ports alone would have capped it.
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.quota_headroom = None;
        sizing.quota_limited_by = String::new();
        sizing.quota_ports_unknown = "reading Neutron's quota details failed: HTTP 503".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             no limit in Nova's quotas; ports: not counted (reading Neutron's quota details failed: HTTP 503)\n"),
            "{text}"
        );
        // With the read's time, from a warmpoold that tells it.
        pool.sizing.as_mut().unwrap().quota_read_at = Some(prost_types::Timestamp {
            seconds: 1_764_003_600,
            nanos: 0,
        });
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             no limit in Nova's quotas at the read at 2025-11-24T17:00:00Z; ports: not counted (reading Neutron's quota details failed: HTTP 503)\n"),
            "{text}"
        );
    }

    /// One boot is "1 boot", not "1 boots", in the lead time's source and
    /// in the plan.
    #[test]
    fn pool_detail_counts_one_boot_in_the_singular() {
        let mut pool = sample_pools()[0].clone();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_003_600);
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.lead_time_samples = 1;
        sizing.plan_reason = "refill".into();
        sizing.plan_boots = 1;
        let text = pool_detail(&pool, now);
        assert!(text.contains(", 1 boot)\n"), "{text}");
        assert!(text.contains(": 1 new boot, "), "{text}");
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.lead_time_samples = 2;
        sizing.plan_boots = 2;
        let text = pool_detail(&pool, now);
        assert!(text.contains(", 2 boots)\n"), "{text}");
        assert!(text.contains(": 2 new boots, "), "{text}");
    }

    /// No plan and no quota read, as `pools get` may show them (before a
    /// pool's first step, paused, draining, a flavor whose pools are at
    /// rest, the gate off): each says why, not a bare `-`.
    #[test]
    fn pool_detail_says_why_a_plan_or_quota_is_missing() {
        let mut pool = sample_pools()[0].clone();
        pool.sizing = Some(api::SizingStatus {
            gate: Some(api::ThrottleGate {
                state: api::ThrottleState::Open.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("plan:              not made yet: the pool's next replenish step makes it (a failed step makes none and is logged)\n")
                && text.contains("quota:             not read yet (read when one of the flavor's pools or purchases boots; or unlimited, if warmpoold is older than this warmpoolctl)\n"),
            "{text}"
        );
        pool.spec.as_mut().unwrap().paused = true;
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("plan:              none: the pool is paused\n"),
            "{text}"
        );
        pool.draining = true;
        let text = changed_pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("plan:              none: the pool is being deleted\n"),
            "{text}"
        );
        let gate = pool.sizing.as_mut().unwrap().gate.as_mut().unwrap();
        gate.state = api::ThrottleState::Disabled.into();
        let text = changed_pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("quota:             not read: the gate is off (`gate = false`)\n"),
            "{text}"
        );
    }

    /// The `pools get` command a create or update answer points at is one
    /// to paste: a name a shell would split (a space) or warmpoolctl would
    /// read as an option (a leading `-`) is not pasted into it.
    #[test]
    fn changed_pool_detail_names_a_pasteable_pools_get() {
        let mut pool = sample_pools()[0].clone();
        pool.sizing = Some(api::SizingStatus::default());
        pool.flavor = "db.small".into();
        pool.availability_zone = "az1".into();
        let text = changed_pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("(`warmpoolctl pools get db.small az1` shows it;"),
            "{text}"
        );
        for (flavor, az) in [("m1 large", "az1"), ("db.small", "-az")] {
            pool.flavor = flavor.into();
            pool.availability_zone = az.into();
            let text = changed_pool_detail(&pool, SystemTime::now());
            assert!(
                text.contains("(`warmpoolctl pools get` of this pool shows it;"),
                "{flavor:?} {az:?}: {text}"
            );
        }
    }

    #[test]
    fn pool_detail_shows_a_backoff_after_failed_boots_and_its_end() {
        let mut pool = sample_pools()[0].clone();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_003_600);
        let sizing = pool.sizing.get_or_insert_with(Default::default);
        sizing.plan_reason = "backoff".into();
        sizing.plan_boots = 0;
        sizing.boots_in_flight = 0;
        sizing.backoff_until = Some((now + Duration::from_secs(40)).into());
        let text = pool_detail(&pool, now);
        assert!(
            text.contains("plan:              backoff: 0 new boots, 0 in flight (boots failed: next in 40s)\n"),
            "{text}"
        );
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.backoff_until = None;
        sizing.plan_boots = 1;
        let text = pool_detail(&pool, now);
        assert!(
            text.contains("plan:              backoff: 1 new boot, 0 in flight (boots failed: one at a time until one is ready)\n"),
            "{text}"
        );
        // Degraded with no failed boot: the start-up check's mark.
        pool.degraded = true;
        pool.consecutive_boot_failures = 0;
        let text = pool_detail(&pool, now);
        assert!(
            text.contains("plan:              backoff: 1 new boot, 0 in flight (the start-up cloud check failed: one boot at a time until the pool recovers)\n"),
            "{text}"
        );
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.backoff_until = Some((now + Duration::from_secs(40)).into());
        sizing.plan_boots = 0;
        let text = pool_detail(&pool, now);
        assert!(
            text.contains("plan:              backoff: 0 new boots, 0 in flight (the start-up cloud check fails: checked again in 40s)\n"),
            "{text}"
        );
    }

    #[test]
    fn pool_detail_shows_windows_iops_limits_and_an_open_window() {
        let mut pool = sample_pools()[0].clone();
        let spec = pool.spec.as_mut().unwrap();
        spec.windows = vec![
            "Mon-Fri 09:00-18:00 min 10".into(),
            "Sat 10:00-12:00 min 4".into(),
        ];
        spec.iops_limit = Some(500);
        spec.volume_iops_limit = Some(3000);
        let min_ready = spec.min_ready;
        pool.sizing.get_or_insert_with(Default::default).window_min = Some(10);
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains(
                "windows:           Mon-Fri 09:00-18:00 min 10 UTC; Sat 10:00-12:00 min 4 UTC\n"
            ),
            "{text}"
        );
        assert!(text.contains("iops_limit:        500\n"), "{text}");
        assert!(text.contains("volume_iops_limit: 3000\n"), "{text}");
        assert!(
            text.contains(&format!(
                "min_ready:         {min_ready} (10 now: a window is open)\n"
            )),
            "{text}"
        );
        // Unset, the limit the daemon read from the cloud's flavor.
        pool.spec.as_mut().unwrap().iops_limit = None;
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.prior_iops_limit = Some(6400);
        sizing.prior_iops_limit_source = "cloud_flavor".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("iops_limit:        - (the flavor's, from the cloud: 6400)\n"),
            "{text}"
        );
        // None read: why, as the daemon tells it; an older daemon tells
        // nothing, and the line is a bare "-".
        let sizing = pool.sizing.as_mut().unwrap();
        sizing.prior_iops_limit = None;
        sizing.prior_iops_limit_source = String::new();
        sizing.prior_iops_limit_unknown = "not read yet".into();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(
            text.contains("iops_limit:        - (none from the cloud's flavor: not read yet)\n"),
            "{text}"
        );
        pool.sizing.as_mut().unwrap().prior_iops_limit_unknown = String::new();
        let text = pool_detail(&pool, SystemTime::now());
        assert!(text.contains("iops_limit:        -\n"), "{text}");
    }

    #[test]
    fn an_allocation_not_yet_served_is_neither_warm_nor_cold() {
        let mut a = sample_allocation();
        a.warm_hit = false;
        a.instance_id = String::new();
        a.state = api::AllocationState::Allocating as i32;
        let text = allocation_detail(&a);
        assert!(text.contains("warm_hit:   -\n"), "{text}");
        a.instance_id = "i-1".into();
        assert!(allocation_detail(&a).contains("warm_hit:   no (cold boot, or waited for one)\n"));
    }
}
