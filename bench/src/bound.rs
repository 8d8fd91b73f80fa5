//! How well could any sizing do on a trace? A model, not a replay.
//!
//! A pool that keeps `S` instances (ready + booting) and boots one
//! replacement per purchase has, when a purchase arrives, X boots
//! outstanding, X ~ Poisson(λ·L) for purchases at rate λ and a mean lead time
//! L (an M/G/∞ queue: by Palm's theorem only the mean of L matters). The
//! purchase finds a Ready instance iff X < S, and E[(S - X)+] instances wait
//! Ready. This module evaluates that model bin by bin of a trace's
//! [`Intensity`], quasi-statically: a sizer may change `S` at the start of a
//! bin, at once and for free in both directions (a 5-minute bin is several
//! lead times long). That is kinder to a sizer than the replay, where a
//! higher `S` takes a lead time to boot and a surplus waits to be taken.
//!
//! It answers, for each kind of knowledge of the rate, the least idle
//! VM-hours that reach a hit-rate goal over the whole trace: per bin and
//! pool, the `S` minimising `idle VM-hours + μ · expected misses` with `μ`
//! the smallest that meets the goal (a Lagrangian relaxation; with the true
//! rate of every bin known that is the optimum of the model). The trace's
//! own bins are the finest rate it resolves, and partly the coin flips
//! themselves (a bin without a batch of a pool gets no purchase of it), so
//! that row is a bound no forecast reaches; the hour rows are what perfect
//! forecasting of a smooth rate, or perfect reaction to it, would give.
//!
//! Static pools are evaluated the same way, so the ratios compare like with
//! like and the model can be checked against the replay's static rows.

use crate::demand::Intensity;
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

/// For X ~ Poisson(m): `hit[s]` = P(X < s) and `idle[s]` = E[(s - X)+], for
/// s = 0, 1, ... up to where more stock no longer changes anything.
#[derive(Clone, Debug)]
struct Stock {
    hit: Vec<f64>,
    idle: Vec<f64>,
}

impl Stock {
    fn new(m: f64) -> Self {
        let m = if m.is_finite() && m > 0.0 { m } else { 0.0 };
        // Far enough into the tail that P(X >= s) is below 1e-12.
        let last = (m + 12.0 * m.sqrt() + 12.0).ceil() as usize;
        let mut hit = vec![0.0];
        let mut idle = vec![0.0];
        let (mut cdf, mut ln_p) = (0.0, -m);
        for k in 0..last {
            // Log space: exp(-m) alone underflows for a large m.
            if k > 0 {
                ln_p += m.ln() - (k as f64).ln();
            }
            cdf = (cdf + ln_p.exp()).min(1.0);
            // E[(s+1 - X)+] = E[(s - X)+] + P(X <= s).
            idle.push(idle[k] + cdf);
            hit.push(cdf);
            if 1.0 - cdf < 1e-12 {
                break;
            }
        }
        Self { hit, idle }
    }

    fn at(&self, s: usize) -> (f64, f64) {
        let last = self.hit.len() - 1;
        if s <= last {
            (self.hit[s], self.idle[s])
        } else {
            // Beyond the tail every purchase hits, and each extra instance waits.
            (self.hit[last], self.idle[last] + (s - last) as f64)
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
/// `goal` warm hits over the trace (see the module doc).
pub fn best_sizing(
    intensity: &Intensity,
    lead: Duration,
    knowledge: Knowledge,
    goal: f64,
) -> Modelled {
    let cells = cells(intensity, lead, knowledge);
    // The cheapest stock for the cell at a price `mu` (VM-hours) per miss,
    // judged on the rate the sizer believes.
    let choose = |mu: f64| {
        move |cell: &Cell| -> usize {
            let cost = |s: usize| {
                let (hit, waiting) = cell.believed.at(s);
                waiting * cell.hours + mu * cell.believed_purchases * (1.0 - hit)
            };
            (0..cell.believed.hit.len())
                .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
                .unwrap_or(0)
        }
    };
    // The cheapest stock of every cell grows with the price of a miss, so
    // the hit rate does too: bisect the price on a log scale.
    let (mut low, mut high) = (1e-6_f64, 1e9_f64);
    for _ in 0..80 {
        let mid = (low * high).sqrt();
        if total(&cells, choose(mid)).hit_rate >= goal {
            high = mid;
        } else {
            low = mid;
        }
    }
    total(&cells, choose(high))
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
    fn poisson_stock_matches_the_closed_form() {
        let e = std::f64::consts::E;
        let stock = Stock::new(1.0);
        let (hit, idle) = stock.at(2);
        assert!((hit - 2.0 / e).abs() < 1e-12, "{hit}");
        assert!((idle - 3.0 / e).abs() < 1e-12, "{idle}");
        assert_eq!(stock.at(0), (0.0, 0.0));
        // Far in the tail: everything hits, every extra instance waits.
        let (hit, idle) = stock.at(100);
        assert!((hit - 1.0).abs() < 1e-12);
        assert!((idle - (100.0 - 1.0)).abs() < 1e-9, "E[(s - X)+] = s - m");
        // No demand: nothing outstanding.
        assert_eq!(Stock::new(0.0).at(3), (1.0, 3.0));
        // Huge or nonsense means do not break it.
        let huge = Stock::new(1e6);
        assert!(huge.at(10).0 < 1e-12);
        assert_eq!(Stock::new(f64::NAN).at(1), (1.0, 1.0));
    }

    #[test]
    fn static_pools_at_a_constant_rate() {
        // 5 batches per 5 min, 1 in 5 kept: 1 purchase per 5 min, m = 0.2.
        let flat = intensity(&[5; 12], 5);
        let m: f64 = 0.2;
        let modelled = static_pools(&flat, LEAD, 1);
        assert!((modelled.hit_rate - (-m).exp()).abs() < 1e-12);
        // One instance waits whenever nothing is outstanding: P(X = 0), for an hour.
        assert!((modelled.idle_vm_hours - (-m).exp()).abs() < 1e-9);
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
        let bound = best_sizing(&trace, LEAD, Knowledge::Bin, goal);
        assert!(bound.hit_rate >= goal, "{bound:?}");
        assert!(
            bound.idle_vm_hours < smallest_static.idle_vm_hours,
            "{bound:?} vs {smallest_static:?}"
        );
        for knowledge in [Knowledge::HourAround, Knowledge::HourBefore] {
            let less = best_sizing(&trace, LEAD, knowledge, goal);
            assert!(less.hit_rate >= goal, "{knowledge:?}: {less:?}");
            assert!(
                less.idle_vm_hours >= bound.idle_vm_hours,
                "{knowledge:?} cannot beat the bound: {less:?} vs {bound:?}"
            );
        }
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
