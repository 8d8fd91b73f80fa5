//! Markdown tables and SVG plots of replay results. The SVG is written by
//! hand (polylines on two axes), so the benchmark needs no plotting crate.

use crate::demand::Scenario;
use crate::replay::{RunResult, Sample};
use std::fmt::Write;
use std::time::Duration;

pub fn duration(d: Duration) -> String {
    let (seconds, unit) = unit_of(d);
    format!("{:.1} {unit}", d.as_secs_f64() / seconds)
}

/// The unit [`duration`] shows `d` in, and its seconds: seconds below
/// 2 min, minutes below 2 h, hours above.
fn unit_of(d: Duration) -> (f64, &'static str) {
    let s = d.as_secs_f64();
    if s < 120.0 {
        (1.0, "s")
    } else if s < 7200.0 {
        (60.0, "min")
    } else {
        (3600.0, "h")
    }
}

/// The decimals, at least `min`, that show `value` apart from `goal`: the
/// fewest at which both print differently and their difference prints as
/// more than zero. A value within the usual rounding of its goal would
/// otherwise print as the goal, and a goal it missed as missed "by 0.00".
/// Equal values take `min`; values within 1e-9 print alike at 9.
pub fn decimals_apart(value: f64, goal: f64, min: usize) -> usize {
    const MOST: usize = 9;
    if value == goal || !(value - goal).is_finite() {
        return min;
    }
    let zero = |d: usize| format!("{:.d$}", 0.0);
    (min..=MOST)
        .find(|&d| {
            format!("{value:.d$}") != format!("{goal:.d$}")
                && format!("{:.d$}", (value - goal).abs()) != zero(d)
        })
        .unwrap_or(MOST.max(min))
}

/// `value` with at least two decimals, as many as show it apart from `goal`.
pub fn fixed_apart(value: f64, goal: f64) -> String {
    let d = decimals_apart(value, goal, 2);
    format!("{value:.d$}")
}

/// `how_far` (a gap to a goal) with the decimals that show `value` apart
/// from `goal`, so a miss never reads "by 0.00".
pub fn gap(how_far: f64, value: f64, goal: f64) -> String {
    let d = decimals_apart(value, goal, 2);
    format!("{how_far:.d$}")
}

/// A fraction as a percentage, as [`percent`] but with as many decimals as
/// show it apart from `goal` (a fraction too).
pub fn percent_apart(x: f64, goal: f64) -> String {
    let d = decimals_apart(x * 100.0, goal * 100.0, 2);
    format!("{:.d$} %", x * 100.0)
}

/// `d` as [`duration`] shows it, with as many decimals as show it apart
/// from `from` (in `d`'s unit): a gap to a goal against `Duration::ZERO`
/// never prints as "0.0 s".
pub fn duration_apart(d: Duration, from: Duration) -> String {
    let (seconds, unit) = unit_of(d);
    let (value, other) = (d.as_secs_f64() / seconds, from.as_secs_f64() / seconds);
    let places = decimals_apart(value, other, 1);
    format!("{value:.places$} {unit}")
}

pub fn percent(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// What a table shows where there was nothing to measure.
pub const NA: &str = "n/a";

/// [`duration`], or [`NA`].
pub fn duration_or_na(d: Option<Duration>) -> String {
    d.map_or_else(|| NA.into(), duration)
}

/// [`percent`], or [`NA`].
pub fn percent_or_na(x: Option<f64>) -> String {
    x.map_or_else(|| NA.into(), percent)
}

/// `x` with two decimals and `unit` after it, or [`NA`].
pub fn fixed2(x: Option<f64>, unit: &str) -> String {
    x.map_or_else(|| NA.into(), |x| format!("{x:.2}{unit}"))
}

/// `a / b`; `None` unless `b` is positive (nothing to compare with) and both
/// are finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// `a / b` of two measured durations; `None` if either is missing or `b` is zero.
pub fn duration_ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    ratio(a?.as_secs_f64(), b?.as_secs_f64())
}

/// One row per run.
pub fn results_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | policy | purchases | warm hits | time to ready p50 | p99 | idle VM-h (ready) | pool VM-h (ready+booting) | boots | API calls | 429s |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in results {
        // Exhausted ones are the pool's misses, in the hit rate; the
        // others are outside it, as in warmpoold's.
        let failed = match (r.failed, r.exhausted) {
            (0, _) => String::new(),
            (n, 0) => format!(" ({n} failed)"),
            (n, e) => format!(" ({n} failed, {e} of them exhausted)"),
        };
        writeln!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            r.scenario,
            r.policy.name(),
            r.purchases,
            failed,
            percent_or_na(r.hit_rate()),
            duration_or_na(r.ttr_quantile(0.5)),
            duration_or_na(r.ttr_quantile(0.99)),
            r.idle_vm_hours,
            r.pool_vm_hours,
            r.boots,
            r.api_calls,
            r.throttled,
        )
        .expect("write to string");
    }
    out
}

/// One row per pool and run: where a multi-pool scenario's misses and idle
/// VM-hours are.
pub fn per_pool_table(runs: &[&RunResult]) -> String {
    let mut out = String::from(
        "| scenario | policy | pool | purchases | warm hits | misses | idle VM-h (ready) |\n\
         |---|---|---|--:|--:|--:|--:|\n",
    );
    for r in runs {
        for (pool, o) in &r.per_pool {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} |",
                r.scenario,
                r.policy.name(),
                pool,
                o.purchases,
                percent_or_na(o.hit_rate()),
                o.rated() - o.warm,
                o.idle_vm_hours,
            )
            .expect("write to string");
        }
    }
    out
}

/// Purchases per hour over time, in bins of `bin`.
fn demand_series(scenario: &Scenario, bin: Duration, span: Duration) -> Vec<(f64, f64)> {
    let bins = (span.as_secs_f64() / bin.as_secs_f64()).ceil().max(1.0) as usize;
    let mut counts = vec![0u32; bins];
    for a in &scenario.arrivals {
        let i = (a.at.as_secs_f64() / bin.as_secs_f64()) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    let per_hour = 3600.0 / bin.as_secs_f64();
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                (i as f64 + 0.5) * bin.as_secs_f64() / 3600.0,
                f64::from(*c) * per_hour,
            )
        })
        .collect()
}

/// Averages samples into at most `points` points.
fn downsample(samples: &[Sample], points: usize, f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    if samples.is_empty() {
        return Vec::new();
    }
    let chunk = samples.len().div_ceil(points.max(1));
    samples
        .chunks(chunk)
        .map(|c| {
            let x = c.iter().map(|s| s.hours).sum::<f64>() / c.len() as f64;
            let y = c.iter().map(&f).sum::<f64>() / c.len() as f64;
            (x, y)
        })
        .collect()
}

/// (legend, colour, dashed, points)
type Series<'a> = (String, &'a str, bool, Vec<(f64, f64)>);

/// Demand, pool depth and target over time for the given runs (usually
/// warmpool auto and one static pool).
pub fn svg(scenario: &Scenario, runs: &[&RunResult]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 360.0;
    const L: f64 = 60.0;
    const R: f64 = 70.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let span = runs
        .iter()
        .map(|r| r.simulated)
        .max()
        .unwrap_or(scenario.duration)
        .max(scenario.duration);
    let hours = span.as_secs_f64() / 3600.0;
    let bin = if hours > 48.0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(900)
    };
    let demand = demand_series(scenario, bin, span);
    let demand_max = demand.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let colors = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"];
    let mut series: Vec<Series> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        let name = run.policy.name();
        series.push((
            format!("{name}: ready"),
            color,
            false,
            downsample(&run.timeline, 1200, |s| f64::from(s.ready)),
        ));
        series.push((
            format!("{name}: target"),
            color,
            true,
            downsample(&run.timeline, 1200, |s| f64::from(s.target)),
        ));
    }
    let depth_max = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |h: f64| L + h / hours.max(1e-9) * (W - L - R);
    let y_depth = |v: f64| H - B - v / depth_max * (H - T - B);
    let y_demand = |v: f64| H - B - v / demand_max * (H - T - B);
    let points = |pts: &[(f64, f64)], y: &dyn Fn(f64) -> f64| {
        pts.iter()
            .map(|(h, v)| format!("{:.1},{:.1}", x(*h), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(w, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        w,
        r#"<text x="{L}" y="18" font-size="14">{}: demand, pool depth and target</text>"#,
        escape(&scenario.name)
    );
    // Axes and ticks.
    let _ = writeln!(
        w,
        r##"<path d="M{L},{T} V{} H{}" stroke="black" fill="none"/><path d="M{},{T} V{}" stroke="#999" fill="none"/>"##,
        H - B,
        W - R,
        W - R,
        H - B
    );
    let step = nice_step(hours, 12.0);
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        let _ = writeln!(
            w,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(h),
            T,
            H - B,
            H - B + 14.0,
            h
        );
        h += step;
    }
    let _ = writeln!(
        w,
        r#"<text x="{}" y="{}" text-anchor="middle">hours</text>"#,
        (L + W - R) / 2.0,
        H - B + 30.0
    );
    let dstep = nice_step(depth_max, 6.0);
    let mut v = 0.0;
    while v <= depth_max {
        let _ = writeln!(
            w,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            L - 4.0,
            y_depth(v) + 4.0
        );
        v += dstep;
    }
    let qstep = nice_step(demand_max, 6.0);
    let mut v = 0.0;
    while v <= demand_max {
        let _ = writeln!(
            w,
            r##"<text x="{}" y="{:.1}" fill="#e67e22">{v}</text>"##,
            W - R + 4.0,
            y_demand(v) + 4.0
        );
        v += qstep;
    }
    let _ = writeln!(
        w,
        r#"<text transform="translate(14,{}) rotate(-90)" text-anchor="middle">instances</text>"#,
        (T + H - B) / 2.0
    );
    let _ = writeln!(
        w,
        r##"<text transform="translate({},{}) rotate(90)" text-anchor="middle" fill="#e67e22">purchases per hour</text>"##,
        W - 12.0,
        (T + H - B) / 2.0
    );
    // Demand first (background), then the pools.
    let _ = writeln!(
        w,
        r##"<polyline fill="none" stroke="#e67e22" stroke-opacity="0.6" stroke-width="1" points="{}"/>"##,
        points(&demand, &y_demand)
    );
    for (_, color, dashed, pts) in &series {
        let dash = if *dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            w,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.2"{dash} points="{}"/>"#,
            points(pts, &y_depth)
        );
    }
    // Legend.
    let mut lx = L + 10.0;
    let ly = T + 12.0;
    let mut legend = vec![("purchases/h".to_string(), "#e67e22", false)];
    legend.extend(series.iter().map(|s| (s.0.clone(), s.1, s.2)));
    for (name, color, dashed) in legend {
        let dash = if dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            w,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            escape(&name)
        );
        lx += 30.0 + 6.2 * name.len() as f64;
    }
    let _ = writeln!(w, "</svg>");
    out
}

/// A round tick step giving about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    if step < 1.0 && max >= 1.0 {
        1.0
    } else {
        step
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_within_the_rounding_of_their_goal_print_apart_from_it() {
        assert_eq!(decimals_apart(0.6049, 0.6, 2), 3);
        assert_eq!(fixed_apart(0.6049, 0.6), "0.605");
        assert_eq!(gap(0.6049 - 0.6, 0.6049, 0.6), "0.005");
        assert_eq!(fixed_apart(0.63, 0.6), "0.63");
        assert_eq!(fixed_apart(0.6, 0.6), "0.60");
        assert_eq!(fixed_apart(1.5004, 1.5), "1.5004");
        // 0.5995 prints 0.60 at two decimals, as 0.6 does, and their gap
        // 0.0005 prints 0.001 at three (0.000 before).
        assert_eq!(fixed_apart(0.5995, 0.6), "0.5995");
        assert_eq!(percent_apart(19899.0 / 20000.0, 0.995), "99.495 %");
        assert_eq!(percent_apart(0.9959, 0.995), "99.59 %");
        assert_eq!(
            duration_apart(Duration::from_millis(36), Duration::ZERO),
            "0.04 s"
        );
        assert_eq!(
            duration_apart(Duration::from_millis(5964), Duration::from_secs(6)),
            "5.96 s"
        );
        assert_eq!(
            duration_apart(Duration::from_secs(9), Duration::from_secs(12)),
            "9.0 s"
        );
        assert_eq!(
            duration_apart(Duration::from_secs(600), Duration::ZERO),
            "10.0 min"
        );
    }
}
