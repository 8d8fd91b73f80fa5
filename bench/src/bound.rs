//! How well could any sizing do on a trace? A model, not a replay.
//!
//! A pool that keeps `S` instances (ready + booting) and boots one
//! replacement per purchase it serves is Erlang's loss system: each of the
//! `S` instances is either Ready or being replaced, a replacement takes a
//! lead time L, and a purchase that finds none Ready is served by a cold boot
//! that does not touch the pool. With purchases at rate λ, a purchase misses
//! with probability B(S, λ·L), Erlang's loss formula (which depends on L only
//! through its mean), and S - λ·L·(1 - B) instances wait Ready on average.
//! This module evaluates that model bin by bin of a trace's [`Intensity`],
//! quasi-statically: a sizer may change `S` at the start of a bin, at once
//! and for free in both directions (a 5-minute bin is several lead times
//! long). That is kinder to a sizer than the replay, where a
//! higher `S` takes a lead time to boot and a surplus waits to be taken.
//!
//! It answers, for each kind of knowledge of the rate, the least idle
//! VM-hours that reach a hit-rate goal over the whole trace: per bin and
//! pool, the `S` minimising `idle VM-hours + μ · expected misses` with `μ`
//! the smallest that meets the goal (a Lagrangian relaxation; with the true
//! rate of every bin known that is the optimum of the model, up to the
//! integer steps of `S`; with a believed rate it prices believed misses, so
//! another rule can land a hair lower). The trace's
//! own bins are the finest rate it resolves, and partly the coin flips
//! themselves (a bin without a batch of a pool gets no purchase of it), so
//! that row is a bound no forecast reaches; the hour rows are what perfect
//! forecasting of a smooth rate, or perfect reaction to it, would give.
//!
//! [`formula_sizing`] asks the same of warmpool's own target formula fed a
//! rate without noise: whether the formula, or the estimate fed to it, is
//! what stands between auto and the bound, and what the configured service
//! level delivers when the estimate is exact.
//!
//! Static pools are evaluated the same way, so the ratios compare like with
//! like and the model can be checked against the replay's static rows.

use crate::demand::Intensity;
use pool_manager::sizing::auto_target;
use std::time::Duration;

/// What a modelled sizer knows of each pool's purchase rate in a bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knowledge {
    /// The bin's own rate.
    Bin,
    /// The mean rate of the hour centred on the bin (a perfect forecast).
    HourAround,
    /// The mean rate of the hour before the bin (a perfect, noise-free
    /// reaction).
    HourBefore,
}

impl Knowledge {
    pub const ALL: [Knowledge; 3] = [Self::Bin, Self::HourAround, Self::HourBefore];

    pub fn describe(self, bin: Duration) -> String {
        match self {
            Self::Bin => format!(
                "knows each pool's rate in every {} bin",
                humantime::format_duration(bin)
            ),
            Self::HourAround => "knows each pool's mean rate over the hour around now".into(),
            Self::HourBefore => "knows each pool's exact mean rate over the past hour".into(),
        }
    }

    /// The rate this sizer works with in each bin, from the true ones.
    fn believed(self, rates: &[f64], bin: Duration) -> Vec<f64> {
        let hour = ((3600.0 / bin.as_secs_f64().max(1.0)).round() as usize).max(1);
        let mean = |from: usize, to: usize| -> f64 {
            let (from, to) = (from.min(rates.len()), to.min(rates.len()));
            if to <= from {
                return 0.0;
            }
            rates[from..to].iter().sum::<f64>() / (to - from) as f64
        };
        (0..rates.len())
            .map(|i| match self {
                Self::Bin => rates[i],
                Self::HourAround => {
                    let from = i.saturating_sub(hour / 2);
                    mean(from, from + hour)
                }
                // The first bin has no past: it gets its own rate.
                Self::HourBefore if i == 0 => rates[0],
                Self::HourBefore => mean(i.saturating_sub(hour), i),
            })
            .collect()
    }
}

/// A modelled sizing over a whole trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Modelled {
    /// Expected warm hits / expected purchases.
    pub hit_rate: f64,
    /// Expected Ready instances waiting, integrated over the trace.
    pub idle_vm_hours: f64,
}

/// A pool of `s` instances at offered load `m` (purchase rate x mean lead
/// time): `hit[s]` = 1 - B(s, m), `idle[s]` = s - m·(1 - B(s, m)), with
/// B Erlang's loss formula, for s = 0, 1, ... until misses vanish.
#[derive(Clone, Debug)]
struct Stock {
    m: f64,
    hit: Vec<f64>,
    idle: Vec<f64>,
}

impl Stock {
    fn new(m: f64) -> Self {
        let m = if m.is_finite() && m > 0.0 { m } else { 0.0 };
        let (mut hit, mut idle) = (vec![0.0], vec![0.0]);
        // The stable recurrence B(s) = m·B(s-1) / (s + m·B(s-1)), B(0) = 1.
        let mut blocked = 1.0;
        let mut s = 0.0;
        while blocked > 1e-12 {
            s += 1.0;
            blocked = m * blocked / (s + m * blocked);
            hit.push(1.0 - blocked);
            idle.push(s - m * (1.0 - blocked));
        }
        Self { m, hit, idle }
    }

    fn at(&self, s: usize) -> (f64, f64) {
        match (self.hit.get(s), self.idle.get(s)) {
            (Some(hit), Some(idle)) => (*hit, *idle),
            // Past the tail every purchase hits and all but m instances wait.
            _ => (1.0, s as f64 - self.m),
        }
    }
}

/// One bin of one pool.
struct Cell {
    /// Expected purchases in the bin, and its length in hours.
    purchases: f64,
    hours: f64,
    truth: Stock,
    believed_purchases: f64,
    believed: Stock,
}

/// Every bin of every pool of `intensity`, each of which the model sizes
/// (at least to the floor): an intensity read against a replay must hold
/// the replay's pools alone (`Intensity::only`, as `trace_scenario` does).
fn cells(intensity: &Intensity, lead: Duration, knowledge: Knowledge) -> Vec<Cell> {
    let bin = intensity.bin.as_secs_f64();
    let lead = lead.as_secs_f64();
    let mut out = Vec::new();
    for pool in intensity.pools() {
        let rates: Vec<f64> = (0..intensity.batches.len())
            .map(|i| intensity.rate(i, &pool))
            .collect();
        let believed = knowledge.believed(&rates, intensity.bin);
        for (rate, belief) in rates.iter().zip(believed) {
            out.push(Cell {
                purchases: rate * bin,
                hours: bin / 3600.0,
                truth: Stock::new(rate * lead),
                believed_purchases: belief * bin,
                believed: Stock::new(belief * lead),
            });
        }
    }
    out
}

fn total(cells: &[Cell], stock: impl Fn(&Cell) -> usize) -> Modelled {
    let (mut hits, mut purchases, mut idle) = (0.0, 0.0, 0.0);
    for cell in cells {
        let (hit, waiting) = cell.truth.at(stock(cell));
        hits += hit * cell.purchases;
        purchases += cell.purchases;
        idle += waiting * cell.hours;
    }
    Modelled {
        hit_rate: if purchases > 0.0 {
            hits / purchases
        } else {
            1.0
        },
        idle_vm_hours: idle,
    }
}

/// Every pool keeps `size` instances.
pub fn static_pools(intensity: &Intensity, lead: Duration, size: u32) -> Modelled {
    let cells = cells(intensity, lead, Knowledge::Bin);
    total(&cells, |_| size as usize)
}

/// The least idle VM-hours with which a sizer knowing `knowledge` reaches
/// `goal` warm hits over the trace (see the module doc), keeping at least
/// `floor` instances in every pool (a pool's `min_ready`).
pub fn best_sizing(
    intensity: &Intensity,
    lead: Duration,
    knowledge: Knowledge,
    goal: f64,
    floor: u32,
) -> Modelled {
    let floor = floor as usize;
    let cells = cells(intensity, lead, knowledge);
    // The cheapest stock for the cell at a price `mu` (VM-hours) per miss,
    // judged on the rate the sizer believes.
    let choose = |mu: f64| {
        move |cell: &Cell| -> usize {
            let cost = |s: usize| {
                let (hit, waiting) = cell.believed.at(s);
                waiting * cell.hours + mu * cell.believed_purchases * (1.0 - hit)
            };
            (floor..cell.believed.hit.len().max(floor + 1))
                .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
                .unwrap_or(floor)
        }
    };
    // The cheapest stock of every cell grows with the price of a miss, so
    // the hit rate does too: bisect the price on a log scale.
    let price = least_reaching(
        (1e-6, 1e9),
        80,
        |low, high| (low * high).sqrt(),
        |mu| total(&cells, choose(mu)).hit_rate >= goal,
    );
    total(&cells, choose(price))
}

/// Auto's own target formula in every bin, fed the rate `knowledge` gives:
/// [`auto_target`] of D = believed rate x `lead_p90` at `z`, at least
/// `floor` (and at most what the model tabulates, where misses vanish).
/// What warmpool's sizing would deliver if its demand estimate had no noise.
pub fn formula_sizing(
    intensity: &Intensity,
    lead: Duration,
    lead_p90: Duration,
    knowledge: Knowledge,
    z: f64,
    floor: u32,
) -> Modelled {
    let cells = cells(intensity, lead, knowledge);
    formula_total(&cells, intensity.bin, lead_p90, z, floor)
}

/// The least `z` (to within 0.001) with which [`formula_sizing`] reaches
/// `goal`; `None` if even z = 20 does not.
pub fn formula_z_for(
    intensity: &Intensity,
    lead: Duration,
    lead_p90: Duration,
    knowledge: Knowledge,
    goal: f64,
    floor: u32,
) -> Option<f64> {
    let cells = cells(intensity, lead, knowledge);
    let reaches =
        |z: f64| formula_total(&cells, intensity.bin, lead_p90, z, floor).hit_rate >= goal;
    const HIGHEST: f64 = 20.0;
    if !reaches(HIGHEST) {
        return None;
    }
    // The target grows with z, so the hit rate does too; 15 halvings of
    // 0..20 leave less than 0.001.
    Some(least_reaching(
        (0.0, HIGHEST),
        15,
        |low, high| (low + high) / 2.0,
        reaches,
    ))
}

/// Bisection of a monotone `reaches` over `(low, high)` for `iterations`
/// steps, splitting at `midpoint`: the upper end, the least value found
/// that reaches (or `high` if none tried does).
fn least_reaching(
    (mut low, mut high): (f64, f64),
    iterations: u32,
    midpoint: impl Fn(f64, f64) -> f64,
    reaches: impl Fn(f64) -> bool,
) -> f64 {
    for _ in 0..iterations {
        let mid = midpoint(low, high);
        if reaches(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    high
}

fn formula_total(
    cells: &[Cell],
    bin: Duration,
    lead_p90: Duration,
    z: f64,
    floor: u32,
) -> Modelled {
    let per_purchase_to_demand = lead_p90.as_secs_f64() / bin.as_secs_f64().max(1e-9);
    total(cells, |cell| {
        let demand_in_lead = cell.believed_purchases * per_purchase_to_demand;
        // The model searches z alone, so it leaves out the formula's edge
        // (0 once a purchase within the lead time is unlikely at the
        // service level; a level of 1 has none): below the replay's floor
        // of 1 either way.
        auto_target(demand_in_lead, z, 1.0).max(floor) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_manager::model::PoolKey;
    use std::collections::BTreeMap;

    const BIN: Duration = Duration::from_secs(300);
    const LEAD: Duration = Duration::from_secs(60);

    fn pool(name: &str) -> PoolKey {
        PoolKey::new(name, "az1")
    }

    /// `batches[i]` batches of one pool in bin i, thinned 1 in `thin`.
    fn intensity(batches: &[u32], thin: u32) -> Intensity {
        Intensity {
            bin: BIN,
            thin,
            batches: batches
                .iter()
                .map(|b| BTreeMap::from([(pool("db.small"), *b)]))
                .collect(),
        }
    }

    #[test]
    fn stock_is_erlangs_loss_system() {
        // m = 1, s = 2: P(k busy) is proportional to 1, 1, 1/2, so a purchase
        // finds both replacing with probability 0.2, and 0.8 are busy on average.
        let stock = Stock::new(1.0);
        let (hit, idle) = stock.at(2);
        assert!((hit - 0.8).abs() < 1e-12, "{hit}");
        assert!((idle - 1.2).abs() < 1e-12, "{idle}");
        assert_eq!(stock.at(0), (0.0, 0.0));
        // Far in the tail: everything hits, all but m instances wait.
        let (hit, idle) = stock.at(100);
        assert!((hit - 1.0).abs() < 1e-12);
        assert!((idle - 99.0).abs() < 1e-9);
        // No demand: nothing is replaced.
        assert_eq!(Stock::new(0.0).at(3), (1.0, 3.0));
        assert_eq!(Stock::new(f64::NAN).at(1), (1.0, 1.0));
        // A huge load: a small pool misses almost everything.
        assert!(Stock::new(1e5).at(10).0 < 1e-3);
    }

    #[test]
    fn static_pools_at_a_constant_rate() {
        // 5 batches per 5 min, 1 in 5 kept: 1 purchase per 5 min, m = 0.2.
        let flat = intensity(&[5; 12], 5);
        let modelled = static_pools(&flat, LEAD, 1);
        // One instance: free with probability 1 / (1 + m), for an hour.
        assert!((modelled.hit_rate - 1.0 / 1.2).abs() < 1e-12);
        assert!((modelled.idle_vm_hours - 1.0 / 1.2).abs() < 1e-9);
    }

    #[test]
    fn the_best_sizing_with_every_bin_known_beats_static_and_less_knowledge() {
        // A quiet hour, a busy hour, a quiet hour; two pools of different rates.
        let mut batches: Vec<BTreeMap<PoolKey, u32>> = Vec::new();
        for i in 0..36 {
            let busy = (12..24).contains(&i);
            batches.push(BTreeMap::from([
                (pool("db.small"), if busy { 40 } else { 4 }),
                (pool("db.large"), if i % 3 == 0 { 3 } else { 0 }),
            ]));
        }
        let trace = Intensity {
            bin: BIN,
            thin: 2,
            batches,
        };
        let goal = 0.995;
        let smallest_static = (1..50)
            .map(|s| static_pools(&trace, LEAD, s))
            .find(|m| m.hit_rate >= goal)
            .expect("a static size reaches the goal");
        let bound = best_sizing(&trace, LEAD, Knowledge::Bin, goal, 0);
        assert!(bound.hit_rate >= goal, "{bound:?}");
        assert!(
            bound.idle_vm_hours < smallest_static.idle_vm_hours,
            "{bound:?} vs {smallest_static:?}"
        );
        for knowledge in [Knowledge::HourAround, Knowledge::HourBefore] {
            let less = best_sizing(&trace, LEAD, knowledge, goal, 0);
            assert!(less.hit_rate >= goal, "{knowledge:?}: {less:?}");
            assert!(
                less.idle_vm_hours >= bound.idle_vm_hours,
                "{knowledge:?} cannot beat the bound: {less:?} vs {bound:?}"
            );
        }
        // A floor of one instance costs idle hours where a pool is quiet.
        let floored = best_sizing(&trace, LEAD, Knowledge::Bin, goal, 1);
        assert!(floored.hit_rate >= goal);
        assert!(floored.idle_vm_hours > bound.idle_vm_hours);
    }

    #[test]
    fn the_formula_fed_an_exact_rate_matches_the_sizing_doc() {
        // 5 batches per 5 min, none thinned: 1 purchase a minute, and with a
        // one-minute lead time D = 1; ceil(1 + 2.576) = 4 instances, which a
        // purchase finds Ready 1 - B(4, 1) = 98.5 % of the time.
        let flat = intensity(&[5; 12], 1);
        let default_z = pool_manager::sizing::z_for(0.995);
        let at_default = formula_sizing(&flat, LEAD, LEAD, Knowledge::Bin, default_z, 1);
        let four = Stock::new(1.0).at(4);
        assert!(
            (at_default.hit_rate - four.0).abs() < 1e-12,
            "{at_default:?}"
        );
        assert!((at_default.hit_rate - 0.9846).abs() < 1e-4);
        assert!((at_default.idle_vm_hours - four.1).abs() < 1e-9);
        // 99.5 % takes 5 instances (B(5, 1) = 0.3 %): ceil(1 + z) = 5 for any z > 3.
        let z = formula_z_for(&flat, LEAD, LEAD, Knowledge::Bin, 0.995, 1).expect("reachable");
        assert!(z > 3.0 && z <= 3.001, "{z}");
        // D = 0.36 (9 batches per bin, 1 in 5 kept): 2 instances, 95.5 %.
        let low = intensity(&[9; 12], 5);
        let two = formula_sizing(&low, LEAD, LEAD, Knowledge::Bin, default_z, 1);
        assert!((two.hit_rate - Stock::new(0.36).at(2).0).abs() < 1e-12);
        assert!((two.hit_rate - 0.955).abs() < 1e-3, "{two:?}");
        // A floor above the formula's answer wins; no z reaches more than certainty.
        let floored = formula_sizing(&low, LEAD, LEAD, Knowledge::Bin, default_z, 3);
        assert!((floored.hit_rate - Stock::new(0.36).at(3).0).abs() < 1e-12);
        assert_eq!(
            formula_z_for(&low, LEAD, LEAD, Knowledge::Bin, 1.01, 1),
            None
        );
    }

    #[test]
    fn believed_rates_are_the_hour_means() {
        let rates: Vec<f64> = (0..24).map(f64::from).collect();
        let around = Knowledge::HourAround.believed(&rates, BIN);
        // Bin 12: bins 6..18, mean 11.5.
        assert!((around[12] - 11.5).abs() < 1e-12);
        // At the start the window is cut short: bins 0..12 around bin 0.
        assert!((around[0] - 5.5).abs() < 1e-12);
        let before = Knowledge::HourBefore.believed(&rates, BIN);
        assert_eq!(before[0], 0.0);
        assert!((before[1] - 0.0).abs() < 1e-12);
        assert!((before[12] - 5.5).abs() < 1e-12, "bins 0..12");
        assert!((before[20] - 13.5).abs() < 1e-12, "bins 8..20");
        assert_eq!(Knowledge::Bin.believed(&rates, BIN), rates);
    }
}
