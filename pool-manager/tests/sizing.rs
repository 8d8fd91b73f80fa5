//! Sizing and the throttle gate: golden tests of the pure decider, the
//! estimators, Retry-After handling and quota pausing; then the same
//! behaviour through a manager on the paused clock.

mod common;

use common::*;
use pool_manager::cloud::{BootHeadroom, CloudError, QuotaLeft, MAX_RETRY_AFTER};
use pool_manager::events::CloudService;
use pool_manager::gate::{
    ports_kept_for_sale, Admission, BootSignal, Gate, GateSettings, HeadroomStatus, Hold,
    ThrottledCall, TicketInfo, DEFAULT_HEADROOM_INTERVAL,
};
use pool_manager::model::{EmptyPoolPolicy, InstanceState, PoolKey, Target};
use pool_manager::sizing::{
    auto_target, decide, surplus_kept, wanted, z_for, Backoff, Demand, DemandEstimate, Inputs,
    LeadEstimate, LeadSource, LeadTimes, LearnedLead, LearnedSizing, SizingBook, SizingSettings,
};
use pool_manager::{ManagerSettings, PoolManager, PoolStatus};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const MIN: Duration = Duration::from_secs(60);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn lead(p50: u64, p90: u64) -> LeadEstimate {
    LeadEstimate {
        p50: secs(p50),
        p90: secs(p90),
        samples: 20,
        source: LeadSource::Observed,
    }
}

fn per_minute(n: f64) -> f64 {
    n / 60.0
}

/// A pool at rest: auto, 1..=100, nothing in flight, 1 purchase a minute,
/// 60 s boots, 99.5 % service level, an open gate.
fn base() -> Inputs {
    Inputs {
        min_ready: 1,
        max_ready: 100,
        target: Target::Auto,
        supply: 0,
        in_flight: 0,
        demand: DemandEstimate::steady(per_minute(1.0)),
        lead: lead(60, 60),
        service_level: 0.995,
        pool_boot_cap: 64,
        backoff: None,
        awaits_ready_boot: false,
        gate: Admission::OPEN,
    }
}

#[test]
fn decider_golden() {
    let now = Instant::now();
    let cases: Vec<(&str, Inputs)> = vec![
        ("empty auto pool, 1/min x 60 s", base()),
        (
            "half full",
            Inputs {
                supply: 2,
                in_flight: 1,
                ..base()
            },
        ),
        (
            "at target",
            Inputs {
                supply: 4,
                ..base()
            },
        ),
        (
            "above target (demand fell)",
            Inputs {
                supply: 9,
                ..base()
            },
        ),
        (
            "throttled cloud: lead x5",
            Inputs {
                lead: lead(300, 300),
                ..base()
            },
        ),
        (
            "burst: forecast 10/min",
            Inputs {
                demand: DemandEstimate {
                    short: per_minute(10.0),
                    long: per_minute(1.0),
                    forecast: per_minute(10.0),
                },
                ..base()
            },
        ),
        (
            "no demand: min_ready",
            Inputs {
                demand: DemandEstimate::ZERO,
                ..base()
            },
        ),
        (
            "no demand, min 0",
            Inputs {
                demand: DemandEstimate::ZERO,
                min_ready: 0,
                ..base()
            },
        ),
        (
            "clamped to max_ready",
            Inputs {
                max_ready: 3,
                ..base()
            },
        ),
        (
            "fixed 7",
            Inputs {
                target: Target::Fixed(7),
                ..base()
            },
        ),
        (
            "fixed 0 = min_ready",
            Inputs {
                target: Target::Fixed(0),
                min_ready: 2,
                ..base()
            },
        ),
        (
            "pool boot cap",
            Inputs {
                pool_boot_cap: 2,
                in_flight: 1,
                supply: 1,
                ..base()
            },
        ),
        (
            "window full, no sustained demand",
            Inputs {
                demand: DemandEstimate {
                    long: 0.0,
                    ..DemandEstimate::steady(per_minute(1.0))
                },
                gate: Admission {
                    room: 1,
                    hold: None,
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "window below what demand needs",
            Inputs {
                lead: lead(300, 300),
                gate: Admission {
                    room: 1,
                    hold: None,
                    headroom: None,
                },
                in_flight: 1,
                supply: 1,
                ..base()
            },
        ),
        (
            "below min_ready, window full",
            Inputs {
                min_ready: 3,
                demand: DemandEstimate::ZERO,
                gate: Admission {
                    room: 0,
                    hold: None,
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "below min_ready, own boot in flight",
            Inputs {
                min_ready: 3,
                demand: DemandEstimate::ZERO,
                supply: 1,
                in_flight: 1,
                gate: Admission {
                    room: 0,
                    hold: None,
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "429: paused",
            Inputs {
                gate: Admission {
                    room: 8,
                    hold: Some(Hold::Throttled {
                        until: now + secs(30),
                        service: CloudService::Compute,
                    }),
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "quota: paused",
            Inputs {
                gate: Admission {
                    room: 8,
                    hold: Some(Hold::Quota {
                        until: now + secs(30),
                    }),
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "quota headroom 2 of a deficit of 4",
            Inputs {
                gate: Admission {
                    headroom: Some(2),
                    ..Admission::OPEN
                },
                ..base()
            },
        ),
        (
            "headroom above the deficit",
            Inputs {
                gate: Admission {
                    headroom: Some(10),
                    ..Admission::OPEN
                },
                ..base()
            },
        ),
        (
            "headroom 0 (gate not yet holding)",
            Inputs {
                gate: Admission {
                    headroom: Some(0),
                    ..Admission::OPEN
                },
                ..base()
            },
        ),
        (
            "headroom 0 at target",
            Inputs {
                supply: 4,
                gate: Admission {
                    headroom: Some(0),
                    ..Admission::OPEN
                },
                ..base()
            },
        ),
        (
            "headroom caps sustained demand too",
            Inputs {
                lead: lead(300, 300),
                gate: Admission {
                    room: 1,
                    hold: None,
                    headroom: Some(2),
                },
                in_flight: 1,
                supply: 1,
                ..base()
            },
        ),
        (
            "headroom below the pool cap",
            Inputs {
                pool_boot_cap: 3,
                gate: Admission {
                    headroom: Some(2),
                    ..Admission::OPEN
                },
                ..base()
            },
        ),
        (
            "failed boots: paused",
            Inputs {
                backoff: Some(Backoff::Paused {
                    until: now + secs(40),
                }),
                ..base()
            },
        ),
        (
            "failed boots: one at a time",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                ..base()
            },
        ),
        (
            "failed boots: one at a time, in flight",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                supply: 1,
                in_flight: 1,
                ..base()
            },
        ),
        (
            "failed boots, deficit 1",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                supply: 3,
                ..base()
            },
        ),
        (
            "failed boots at a pool cap of 1",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                pool_boot_cap: 1,
                ..base()
            },
        ),
        (
            "failed boots, fixed 4, window full",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                target: Target::Fixed(4),
                min_ready: 0,
                demand: DemandEstimate::steady(0.0),
                gate: Admission {
                    room: 0,
                    hold: None,
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "failed boots, window tighter",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                min_ready: 0,
                demand: DemandEstimate {
                    long: 0.0,
                    ..DemandEstimate::steady(per_minute(1.0))
                },
                gate: Admission {
                    room: 0,
                    hold: None,
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "failed boots, 429 too",
            Inputs {
                backoff: Some(Backoff::Paused {
                    until: now + secs(40),
                }),
                gate: Admission {
                    room: 8,
                    hold: Some(Hold::Throttled {
                        until: now + secs(30),
                        service: CloudService::Compute,
                    }),
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "degraded at target: paused",
            Inputs {
                backoff: Some(Backoff::Paused {
                    until: now + secs(40),
                }),
                awaits_ready_boot: true,
                supply: 4,
                ..base()
            },
        ),
        (
            "degraded at target: boots one",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                awaits_ready_boot: true,
                supply: 4,
                ..base()
            },
        ),
        (
            "degraded above target, one in flight",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                awaits_ready_boot: true,
                supply: 5,
                in_flight: 1,
                ..base()
            },
        ),
        (
            "degraded at target, quota held",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                awaits_ready_boot: true,
                supply: 4,
                gate: Admission {
                    room: 8,
                    hold: Some(Hold::Quota {
                        until: now + secs(30),
                    }),
                    headroom: None,
                },
                ..base()
            },
        ),
        (
            "degraded at target, no headroom",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                awaits_ready_boot: true,
                supply: 4,
                gate: Admission {
                    room: 8,
                    hold: None,
                    headroom: Some(0),
                },
                ..base()
            },
        ),
        (
            "degraded at target, check to pass",
            Inputs {
                backoff: Some(Backoff::Paused {
                    until: now + secs(40),
                }),
                supply: 4,
                ..base()
            },
        ),
        (
            "degraded by refusals the gate paces",
            Inputs {
                awaits_ready_boot: true,
                supply: 4,
                ..base()
            },
        ),
        (
            "degraded, no demand, min 0",
            Inputs {
                backoff: Some(Backoff::OneAtATime),
                awaits_ready_boot: true,
                min_ready: 0,
                demand: DemandEstimate::steady(0.0),
                ..base()
            },
        ),
        (
            "window open: min 10",
            Inputs {
                min_ready: 10,
                ..base()
            },
        ),
    ];
    let mut out = String::new();
    for (name, inputs) in &cases {
        let plan = decide(inputs);
        writeln!(
            out,
            "{name:<38} D={:>5.2} target={:>2} boots={:>2} {}",
            plan.demand_in_lead,
            plan.target,
            plan.boots_now,
            plan.reason.as_str()
        )
        .unwrap();
    }
    let golden = "\
empty auto pool, 1/min x 60 s          D= 1.00 target= 4 boots= 4 deficit
half full                              D= 1.00 target= 4 boots= 2 deficit
at target                              D= 1.00 target= 4 boots= 0 at_target
above target (demand fell)             D= 1.00 target= 4 boots= 0 at_target
throttled cloud: lead x5               D= 5.00 target=11 boots=11 deficit
burst: forecast 10/min                 D=10.00 target=19 boots=19 deficit
no demand: min_ready                   D= 0.00 target= 1 boots= 1 deficit
no demand, min 0                       D= 0.00 target= 0 boots= 0 at_target
clamped to max_ready                   D= 1.00 target= 3 boots= 3 deficit
fixed 7                                D= 1.00 target= 7 boots= 7 deficit
fixed 0 = min_ready                    D= 1.00 target= 2 boots= 2 deficit
pool boot cap                          D= 1.00 target= 4 boots= 1 pool_cap
window full, no sustained demand       D= 1.00 target= 4 boots= 1 window
window below what demand needs         D= 5.00 target=11 boots= 4 window
below min_ready, window full           D= 0.00 target= 3 boots= 1 window
below min_ready, own boot in flight    D= 0.00 target= 3 boots= 0 window
429: paused                            D= 1.00 target= 4 boots= 0 throttled
quota: paused                          D= 1.00 target= 4 boots= 0 quota
quota headroom 2 of a deficit of 4     D= 1.00 target= 4 boots= 2 headroom
headroom above the deficit             D= 1.00 target= 4 boots= 4 deficit
headroom 0 (gate not yet holding)      D= 1.00 target= 4 boots= 0 quota
headroom 0 at target                   D= 1.00 target= 4 boots= 0 at_target
headroom caps sustained demand too     D= 5.00 target=11 boots= 2 headroom
headroom below the pool cap            D= 1.00 target= 4 boots= 2 headroom
failed boots: paused                   D= 1.00 target= 4 boots= 0 backoff
failed boots: one at a time            D= 1.00 target= 4 boots= 1 backoff
failed boots: one at a time, in flight D= 1.00 target= 4 boots= 0 backoff
failed boots, deficit 1                D= 1.00 target= 4 boots= 1 deficit
failed boots at a pool cap of 1        D= 1.00 target= 4 boots= 1 pool_cap
failed boots, fixed 4, window full     D= 0.00 target= 4 boots= 1 backoff
failed boots, window tighter           D= 1.00 target= 4 boots= 0 window
failed boots, 429 too                  D= 1.00 target= 4 boots= 0 throttled
degraded at target: paused             D= 1.00 target= 4 boots= 0 backoff
degraded at target: boots one          D= 1.00 target= 4 boots= 1 backoff
degraded above target, one in flight   D= 1.00 target= 4 boots= 0 at_target
degraded at target, quota held         D= 1.00 target= 4 boots= 0 quota
degraded at target, no headroom        D= 1.00 target= 4 boots= 0 quota
degraded at target, check to pass      D= 1.00 target= 4 boots= 0 at_target
degraded by refusals the gate paces    D= 1.00 target= 4 boots= 1 backoff
degraded, no demand, min 0             D= 0.00 target= 0 boots= 0 at_target
window open: min 10                    D= 1.00 target=10 boots=10 deficit
";
    assert_eq!(out, golden, "\n{out}");
}

/// What a pool wants before caps and holds, which the replenisher polls
/// the quota headroom for: a degraded pool's one boot at its target counts
/// (it polled only below its target, so one at its target booted blind
/// after a restart, or never saw room freed), and nothing at rest does.
#[test]
fn a_degraded_pool_at_its_target_wants_its_one_boot() {
    let at_target = Inputs {
        supply: 4,
        ..base()
    };
    let target = decide(&at_target).target;
    assert_eq!(target, 4);
    assert_eq!(wanted(&at_target, target), 0, "at rest");
    let degraded = Inputs {
        awaits_ready_boot: true,
        ..at_target.clone()
    };
    assert_eq!(wanted(&degraded, target), 1);
    let in_flight = Inputs {
        in_flight: 1,
        supply: 5,
        ..degraded.clone()
    };
    assert_eq!(wanted(&in_flight, target), 0, "one in flight already");
    let below = Inputs {
        supply: 1,
        ..degraded
    };
    assert_eq!(wanted(&below, target), 3, "its deficit");
}

/// A fixed target is the operator's depth as a floor is: past the AIMD
/// window a pool below it may still have one boot in flight. A Fixed(5)
/// pool at its floor (1) and with no purchases of late got no room for as
/// long as another pool of its zone kept the window full.
#[test]
fn a_fixed_pool_below_its_target_boots_while_the_window_is_full() {
    let full = Admission {
        room: 0,
        hold: None,
        headroom: None,
    };
    let inputs = Inputs {
        target: Target::Fixed(5),
        min_ready: 1,
        supply: 1,
        demand: DemandEstimate::ZERO,
        gate: full,
        ..base()
    };
    let plan = decide(&inputs);
    assert_eq!((plan.target, plan.boots_now), (5, 1), "{plan:?}");
    // One in flight at a time, as below a floor.
    let plan = decide(&Inputs {
        supply: 2,
        in_flight: 1,
        ..inputs
    });
    assert_eq!(plan.boots_now, 0, "{plan:?}");
}

/// At the shipped defaults a pool whose boots slowed down (IOPS
/// throttling: a 450 s lead time) keeps the boots in flight its demand needs
/// (Little's law: 1 a minute x 450 s = 8), as the benchmarks' throttle-onset
/// replay does: a per-pool cap below that would refill at most cap / lead
/// time, whatever the target, exactly when boots are slow.
#[test]
fn the_default_boot_cap_lets_a_throttled_pool_sustain_its_demand() {
    let inputs = Inputs {
        supply: 2,
        in_flight: 4,
        demand: DemandEstimate::steady(per_minute(1.0)),
        lead: lead(450, 450),
        pool_boot_cap: ManagerSettings::default().max_concurrent_boots,
        gate: Admission {
            room: 0,
            ..Admission::OPEN
        },
        ..base()
    };
    let plan = decide(&inputs);
    let needed_in_flight = (per_minute(1.0) * 450.0_f64).ceil() as u32;
    assert!(
        plan.target > inputs.supply + inputs.in_flight + 4,
        "{plan:?}"
    );
    assert!(
        plan.boots_now >= needed_in_flight - inputs.in_flight,
        "{plan:?}"
    );
}

#[test]
fn target_formula() {
    assert!((z_for(0.995) - 2.5758).abs() < 1e-3);
    assert!((z_for(0.99) - 2.3263).abs() < 1e-3);
    assert!((z_for(0.9) - 1.2816).abs() < 1e-3);
    assert!(z_for(0.5).abs() < 1e-9);
    assert_eq!(z_for(0.1), 0.0, "below 50 % is clamped");
    assert!(z_for(1.0).is_finite());
    // ceil(D + z sqrt(D))
    assert_eq!(auto_target(0.0, 2.576, 0.995), 0);
    assert_eq!(auto_target(1.0, 2.576, 0.995), 4);
    assert_eq!(auto_target(4.0, 2.0, 0.995), 8);
    assert_eq!(auto_target(100.0, 2.576, 0.995), 126);
    assert_eq!(auto_target(f64::NAN, 2.0, 0.995), 0);
}

/// A surplus that lasted goes down to the target plus what purchases are
/// expected to take within the cooldown.
#[test]
fn surplus_kept_is_the_target_and_a_cooldowns_purchases() {
    let cooldown = Duration::from_secs(15 * 60);
    assert_eq!(
        surplus_kept(3, 0.0, cooldown, 0.995),
        3,
        "no demand: the target"
    );
    assert_eq!(surplus_kept(3, per_minute(1.0), cooldown, 0.995), 18);
    assert_eq!(
        surplus_kept(1, per_minute(0.07), cooldown, 0.995),
        3,
        "1.05 rounds up"
    );
    assert_eq!(surplus_kept(2, per_minute(1.0), Duration::ZERO, 0.995), 2);
    assert_eq!(surplus_kept(2, f64::NAN, cooldown, 0.995), 2);
    assert_eq!(surplus_kept(2, -1.0, cooldown, 0.995), 2);
    assert_eq!(surplus_kept(u32::MAX, 1.0, cooldown, 0.995), u32::MAX);
    assert_eq!(surplus_kept(0, f64::INFINITY, cooldown, 0.995), u32::MAX);
}

/// A demand EWMA reaches 0 only at float underflow (a month after one
/// purchase at demand_long 1 h), and ceil(D + z√D) is 1 for any D > 0. A
/// demand so small that a purchase within the lead time is unlikely
/// (Poisson: none with probability e^-D, at least the level when D <=
/// -ln(level)) is given nothing, deliberately: the rare purchase that
/// comes finds only what min_ready keeps. Above it, the formula stands.
#[test]
fn a_demand_unlikely_to_purchase_within_a_lead_time_is_given_nothing() {
    let z = z_for(0.995);
    let edge = -(0.995f64.ln()); // 0.0050125
    assert_eq!(auto_target(1e-75, z, 0.995), 0, "a purchase a month ago");
    assert_eq!(auto_target(0.0050, z, 0.995), 0);
    assert_eq!(auto_target(edge, z, 0.995), 0);
    assert_eq!(auto_target(0.00502, z, 0.995), 1, "e^-D = 0.994992");
    // A lower level lets a larger demand go empty: e^-0.05 = 0.951 >= 0.95.
    assert_eq!(auto_target(0.05, z_for(0.95), 0.95), 0);
    assert_eq!(auto_target(0.06, z_for(0.95), 0.95), 1);
    // Above the edge, ceil(D + z√D) as before.
    assert_eq!(auto_target(0.36, z, 0.995), 2);
    assert_eq!(auto_target(1.0, z, 0.995), 4);
    assert_eq!(auto_target(100.0, z, 0.995), 126);

    // Purchases expected within the cooldown likewise: m = forecast x
    // cooldown counts only above -ln(level), as ceil(m).
    let cooldown = Duration::from_secs(15 * 60);
    let per_cooldown = |m: f64| m / cooldown.as_secs_f64();
    assert_eq!(surplus_kept(0, 1e-25, cooldown, 0.995), 0, "two quiet days");
    assert_eq!(surplus_kept(2, per_cooldown(0.0050), cooldown, 0.995), 2);
    assert_eq!(surplus_kept(2, per_cooldown(0.0051), cooldown, 0.995), 3);
    assert_eq!(surplus_kept(2, per_cooldown(1.05), cooldown, 0.995), 4);
}

#[test]
fn lead_time_prior_percentiles_expiry_and_in_flight() {
    let settings = SizingSettings {
        prior_lead_time: secs(90),
        lead_samples: 10,
        lead_max_age: secs(3600),
        ..SizingSettings::default()
    };
    let t0 = Instant::now();
    let mut lead = LeadTimes::default();
    let e = lead.estimate(t0, &[], &settings);
    assert_eq!(
        (e.p50, e.p90, e.source),
        (secs(90), secs(90), LeadSource::Prior)
    );

    // One fast boot: the prior still bounds p90 until a few are seen, and
    // is then what p90 says (not "observed": no boot took 90 s).
    lead.record(t0, secs(60), &settings);
    let e = lead.estimate(t0, &[], &settings);
    assert_eq!(
        (e.p50, e.p90, e.samples, e.source),
        (secs(60), secs(90), 1, LeadSource::Prior)
    );
    // One slow boot: it is above the prior, and p90 is observed.
    let mut slow = LeadTimes::default();
    slow.record(t0, secs(120), &settings);
    let e = slow.estimate(t0, &[], &settings);
    assert_eq!((e.p90, e.source), (secs(120), LeadSource::Observed));

    // 60, 61, ..., 69: nearest-rank p50 = 64, p90 = 68.
    for i in 1..10 {
        lead.record(t0, secs(60 + i), &settings);
    }
    let e = lead.estimate(t0, &[], &settings);
    assert_eq!(
        (e.p50, e.p90, e.source),
        (secs(64), secs(68), LeadSource::Observed)
    );

    // Only the last `lead_samples` count.
    for _ in 0..10 {
        lead.record(t0, secs(100), &settings);
    }
    assert_eq!(lead.estimate(t0, &[], &settings).p50, secs(100));

    // Boots in flight longer than that raise the estimate before they finish.
    let ages = [secs(400), secs(400), secs(400)];
    let e = lead.estimate(t0, &ages, &settings);
    assert_eq!((e.p90, e.source), (secs(400), LeadSource::InFlight));
    // Young boots in flight do not lower it.
    assert_eq!(lead.estimate(t0, &[secs(1); 30], &settings).p90, secs(100));

    // Samples older than lead_max_age no longer count: back to the prior,
    // however many boots were measured (GetPool's PRIOR, samples 0).
    let e = lead.estimate(t0 + secs(3601), &[], &settings);
    assert_eq!(
        (e.p90, e.samples, e.source),
        (secs(90), 0, LeadSource::Prior)
    );
    // They are kept, not forgotten: a longer lead_max_age counts them.
    let longer = SizingSettings {
        lead_max_age: secs(7200),
        ..settings.clone()
    };
    let e = lead.estimate(t0 + secs(3601), &[], &longer);
    assert_eq!((e.p90, e.source), (secs(100), LeadSource::Observed));
}

#[test]
fn demand_steady_burst_and_cooldown() {
    let settings = SizingSettings {
        demand_short: secs(300),
        demand_long: secs(3600),
        cooldown: secs(900),
        ..SizingSettings::default()
    };
    let t0 = Instant::now();
    let mut demand = Demand::new(&settings);
    assert_eq!(demand.estimate(t0), DemandEstimate::ZERO);

    // One purchase a minute for 5 hours: both EWMAs read about 1/min.
    let mut t = t0;
    for _ in 0..300 {
        t += MIN;
        demand.record(t, t);
    }
    let e = demand.estimate(t);
    assert!((e.long * 60.0 - 1.0).abs() < 0.1, "{e:?}");
    assert!((e.short * 60.0 - 1.0).abs() < 0.2, "{e:?}");

    // 30 purchases in one minute: the forecast jumps at once.
    for i in 0..30 {
        let at = t + secs(2 * i);
        demand.record(at, at);
    }
    // The forecast is the short EWMA's peak, at the last purchase (2 s
    // before it is read), not what it decayed to by the read.
    let peak = demand.peek(t + secs(58)).short;
    t += MIN;
    let burst = demand.estimate(t);
    assert!(burst.forecast * 60.0 > 5.0, "{burst:?}");
    assert_eq!(burst.forecast, peak);
    assert!(burst.short < peak, "{burst:?}");

    // Quiet: the short EWMA falls, the forecast holds through the cooldown...
    let quiet = demand.estimate(t + secs(600));
    assert!(quiet.short < burst.short / 3.0);
    assert_eq!(quiet.forecast, burst.forecast);
    // Looking (a status reader) changes nothing: a peek past the cooldown
    // shows the lower value but leaves the held forecast in place.
    let peeked = demand.peek(t + secs(901));
    assert!(peeked.forecast < burst.forecast / 2.0, "{peeked:?}");
    assert_eq!(demand.peek(t + secs(700)).forecast, burst.forecast);
    // ...and then follows the estimate down.
    let after = demand.estimate(t + secs(901));
    assert_eq!(after, peeked);
    assert!(after.forecast < burst.forecast / 2.0, "{after:?}");
    assert_eq!(after.forecast, after.short.max(after.long));
    // It goes on following the estimate: a minute later it is lower still,
    // not held at the value it reached for another cooldown (it fell in
    // steps of one cooldown each).
    let later = demand.estimate(t + secs(961));
    assert!(later.forecast < after.forecast, "{later:?} {after:?}");
    assert_eq!(later.forecast, later.short.max(later.long));
    // A new high is held again for a whole cooldown.
    for i in 0..30 {
        let at = t + secs(1000 + 2 * i);
        demand.record(at, at);
    }
    let peak = demand.peek(t + secs(1058)).short;
    let high = demand.estimate(t + secs(1060));
    assert!(high.forecast > later.forecast * 2.0, "{high:?}");
    assert_eq!(high.forecast, peak);
    let held = demand.estimate(t + secs(1060 + 600));
    assert!(held.short < high.short / 3.0, "{held:?}");
    assert_eq!(held.forecast, high.forecast);
    let cooled = demand.estimate(t + secs(1060 + 901));
    assert_eq!(cooled.forecast, cooled.short.max(cooled.long));

    // A purchase reported late (a cold boot finishes minutes after it began)
    // counts with the weight of when it started.
    let mut late = Demand::new(&settings);
    let mut prompt = Demand::new(&settings);
    late.record(t0, t0 + secs(300));
    prompt.record(t0, t0);
    let (a, b) = (
        late.estimate(t0 + secs(300)),
        prompt.estimate(t0 + secs(300)),
    );
    assert!((a.short - b.short).abs() < 1e-12 && (a.long - b.long).abs() < 1e-12);
}

/// The held forecast is the burst's peak however late the replenisher
/// reads it. A step stalled on the cloud (a delete retried through 429s,
/// the headroom poll) read a burst only once it had decayed, held that
/// lower value for the cooldown, and sized the pool for it, while GetPool
/// (`peek`) showed the peak.
#[test]
fn a_burst_read_late_is_held_at_its_peak() {
    let settings = SizingSettings {
        demand_short: secs(300),
        demand_long: secs(3600),
        cooldown: secs(900),
        ..SizingSettings::default()
    };
    let t0 = Instant::now();
    let mut demand = Demand::new(&settings);
    // 20 purchases in 10 s, no step in between.
    let mut last = t0;
    for i in 0..20 {
        last = t0 + Duration::from_millis(500 * i);
        demand.record(last, last);
    }
    let shown = demand.peek(last);
    assert!(shown.forecast * 60.0 > 3.5, "{shown:?}");

    // The step that reads it comes two minutes later.
    let read = demand.estimate(last + secs(120));
    assert!(read.short < shown.short * 0.7, "the rate decayed: {read:?}");
    assert_eq!(
        read.forecast, shown.forecast,
        "the decider holds the peak GetPool showed"
    );
    assert_eq!(demand.peek(last + secs(120)), read);
}

fn gate(settings: GateSettings) -> Gate {
    Gate::new(GateSettings {
        seed: 7,
        ..settings
    })
}

#[test]
fn retry_after_pauses_new_boots_in_that_az_with_jitter() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        initial_window: 8,
        retry_after_jitter: 0.2,
        ..GateSettings::default()
    });
    assert_eq!(
        g.admission("az1", "db.small", t0),
        Admission {
            room: 8,
            hold: None,
            headroom: None,
        }
    );

    g.throttled("az1", ThrottledCall::BOOT, Some(secs(10)), t0);
    let a = g.admission("az1", "db.small", t0 + secs(1));
    let Some(Hold::Throttled { until, .. }) = a.hold else {
        panic!("not paused: {a:?}")
    };
    assert!(
        until >= t0 + secs(10) && until <= t0 + secs(12),
        "jitter within 20 %"
    );
    assert_eq!(a.room, 4, "the window halves");
    // Nova is one API for every zone: the other zones' refills wait too,
    // but their windows (their hosts) stay.
    let az2 = g.admission("az2", "db.small", t0 + secs(1));
    assert!(matches!(az2.hold, Some(Hold::Throttled { .. })), "{az2:?}");
    assert_eq!(az2.room, 8, "{az2:?}");

    // More 429s in the same episode extend the pause but halve only once.
    g.throttled("az1", ThrottledCall::BOOT, Some(secs(20)), t0 + secs(2));
    let a = g.admission("az1", "db.small", t0 + secs(3));
    assert!(a.hold.unwrap().until() >= t0 + secs(22));
    assert_eq!(a.room, 4);

    // After the pause new boots may start again.
    assert_eq!(g.admission("az1", "db.small", t0 + secs(30)).hold, None);
    // No Retry-After header: the default pause.
    g.throttled("az1", ThrottledCall::BOOT, None, t0 + secs(30));
    let until = g
        .admission("az1", "db.small", t0 + secs(30))
        .hold
        .unwrap()
        .until();
    assert!(until >= t0 + secs(35) && until <= t0 + secs(36));
    assert_eq!(g.status("az1", "db.small", t0).throttled, 3);

    // The jitter is seeded: the same seed gives the same pause.
    let pause = |seed| {
        let mut g = Gate::new(GateSettings {
            seed,
            ..GateSettings::default()
        });
        g.throttled("az1", ThrottledCall::BOOT, Some(secs(10)), t0);
        g.admission("az1", "db.small", t0).hold.unwrap().until()
    };
    assert_eq!(pause(1), pause(1));

    // A disabled gate holds nothing back, and shows no window: nothing
    // limits boots to one.
    let mut off = gate(GateSettings::disabled());
    off.throttled("az1", ThrottledCall::BOOT, Some(secs(10)), t0);
    assert_eq!(off.admission("az1", "db.small", t0), Admission::OPEN);
    let status = off.status("az1", "db.small", t0);
    assert_eq!((status.enabled, status.window), (false, None), "{status:?}");
}

/// The pools of a throttled AZ come back each at its own time: the AZ's
/// pause stretched by a factor drawn per pool once per pause. They all
/// woke at the one jittered end of the AZ's pause, in lockstep.
#[test]
fn pools_of_a_throttled_az_come_back_at_different_times() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        retry_after_jitter: 0.2,
        ..GateSettings::default()
    });
    g.throttled("az1", ThrottledCall::BOOT, Some(secs(10)), t0);
    let end = |g: &mut Gate, flavor: &str, at: Instant| {
        let hold = g.admission("az1", flavor, at).hold;
        let Some(Hold::Throttled { until, .. }) = hold else {
            panic!("{flavor} not paused: {hold:?}")
        };
        until
    };
    let small = end(&mut g, "db.small", t0 + secs(1));
    let medium = end(&mut g, "db.medium", t0 + secs(1));
    assert_ne!(small, medium, "one end for every pool of the AZ");
    for until in [small, medium] {
        assert!(
            until >= t0 + secs(10) && until <= t0 + secs(12),
            "jitter within 20 %"
        );
    }
    // Drawn once per pause: asked again, and in the status, a pool's end
    // stays.
    assert_eq!(end(&mut g, "db.small", t0 + secs(2)), small);
    assert_eq!(
        g.status("az1", "db.medium", t0 + secs(2)).hold,
        Some(Hold::Throttled {
            until: medium,
            service: CloudService::Compute
        })
    );
    // Each pool's pause ends at its own end, not before.
    let (first, last) = (small.min(medium), small.max(medium));
    let flavor_last = if small > medium {
        "db.small"
    } else {
        "db.medium"
    };
    let flavor_first = if small > medium {
        "db.medium"
    } else {
        "db.small"
    };
    assert_eq!(g.admission("az1", flavor_first, first).hold, None);
    assert_eq!(end(&mut g, flavor_last, first), last);
    assert_eq!(g.admission("az1", flavor_last, last).hold, None);
}

/// A Retry-After pause is its API service's, in every zone (one regional
/// API): Nova's holds every zone's refills, Cinder's none (refills call
/// Nova alone). Only a compute 429 to a boot halves a window, and only
/// its own zone's: the window stands for the zone's compute hosts. The
/// pause was the zone's, whatever service answered, and halved its window.
#[test]
fn a_throttle_pauses_its_service_in_every_zone_and_halves_only_the_booting_zones_window() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let cinder = ThrottledCall {
        service: CloudService::Volume,
        boot: false,
    };
    g.throttled("az1", cinder, Some(secs(60)), t0);
    let a = g.admission("az1", "db.small", t0 + secs(1));
    assert_eq!((a.hold, a.room), (None, 8), "{a:?}");
    let s = g.status("az1", "db.small", t0 + secs(1));
    assert_eq!((s.throttled, s.decreases), (1, 0), "{s:?}");

    // Nova answers a purchase's attach 429 in az1: every zone's refills
    // wait, no window halves.
    let attach = ThrottledCall::new(Some(CloudService::Compute), false);
    g.throttled("az1", attach, Some(secs(60)), t0 + secs(2));
    for az in ["az1", "az2"] {
        let a = g.admission(az, "db.small", t0 + secs(3));
        assert!(
            matches!(
                a.hold,
                Some(Hold::Throttled {
                    service: CloudService::Compute,
                    ..
                })
            ),
            "{az}: {a:?}"
        );
        assert_eq!(a.room, 8, "{az}: {a:?}");
    }

    // A boot's Nova 429 in az2 halves az2's window alone.
    g.throttled("az2", ThrottledCall::BOOT, Some(secs(60)), t0 + secs(3));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(4)).room, 8);
    assert_eq!(g.admission("az2", "db.small", t0 + secs(4)).room, 4);
    // An unknown service is taken for Nova's.
    assert_eq!(
        ThrottledCall::new(None, true),
        ThrottledCall::BOOT,
        "unknown: compute's"
    );
}

#[test]
fn an_absurd_retry_after_pauses_for_at_most_the_cap() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        retry_after_jitter: f64::NAN,
        default_retry_after: Duration::MAX,
        ..GateSettings::default()
    });
    // u64::MAX seconds overflows Duration arithmetic and Instant addition;
    // 4e9 s (136 years) would stop the zone's boots until a restart.
    for sent in [Some(Duration::MAX), Some(secs(4_000_000_000)), None] {
        assert!(g.retry_pause(sent) <= MAX_RETRY_AFTER, "{sent:?}");
        g.throttled("az1", ThrottledCall::BOOT, sent, t0);
        let until = g.admission("az1", "db.small", t0).hold.unwrap().until();
        assert!(until <= t0 + MAX_RETRY_AFTER, "{sent:?}");
    }
    assert_eq!(
        g.admission("az1", "db.small", t0 + MAX_RETRY_AFTER).hold,
        None
    );
}

/// A boot the cloud refused for quota, started at `at`: before the pause
/// its refusal begins (boots refused together started before it).
fn refused_boot(g: &mut Gate, at: Instant) -> TicketInfo {
    let boot = g.start("az1", "db.small", true, at);
    g.finish(&boot, BootSignal::Refused, at);
    boot
}

/// Boots started together and refused together are one refusal: the pause
/// doubles once per episode, as throttling's window halves once per
/// episode, not once per boot (4 refusals at once paused for 4 backoffs).
#[test]
fn refusals_during_a_quota_pause_do_not_lengthen_it() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(30),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    for _ in 0..4 {
        g.quota_exceeded(&boot, t0);
    }
    g.quota_exceeded(&boot, t0 + secs(10));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(11)).hold,
        Some(Hold::Quota {
            until: t0 + secs(30)
        })
    );
    // The next episode pauses twice as long, once.
    g.quota_exceeded(&boot, t0 + secs(30));
    g.quota_exceeded(&boot, t0 + secs(31));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(32)).hold,
        Some(Hold::Quota {
            until: t0 + secs(90)
        })
    );
    assert_eq!(
        g.status("az1", "db.small", t0).quota_refusals,
        7,
        "every refusal counts"
    );
}

/// A quota backoff too long for the clock (a setting the core takes as
/// given) pauses without end, and refusals after it panic nothing: the
/// sum and the doubling overflowed, killing the boot task mid-boot.
#[test]
fn a_huge_quota_backoff_pauses_without_overflowing() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: Duration::MAX,
        quota_backoff_max: Duration::MAX,
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    g.quota_exceeded(&boot, t0);
    let hold = g.admission("az1", "db.small", t0 + secs(3600)).hold;
    assert!(matches!(hold, Some(Hold::Quota { .. })), "{hold:?}");
    g.quota_exceeded(&boot, t0 + secs(3600));
    assert!(g
        .admission("az1", "db.small", t0 + secs(7200))
        .hold
        .is_some());
}

/// "Retry-After: 0" answered to several boots' calls at once is one
/// throttling episode: the window halves once, not once per 429.
#[test]
fn simultaneous_429s_with_retry_after_zero_halve_the_window_once() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let before = g.status("az1", "db.small", t0).window.unwrap();
    for _ in 0..8 {
        g.throttled("az1", ThrottledCall::BOOT, Some(Duration::ZERO), t0);
    }
    let s = g.status("az1", "db.small", t0);
    assert_eq!((s.window.unwrap(), s.decreases), (before / 2.0, 1), "{s:?}");
    assert!(s.hold.is_some(), "a pause, however short, holds new boots");
}

#[test]
fn quota_refusal_pauses_speculative_boots_with_backoff() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(30),
        quota_backoff_max: secs(100),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    g.quota_exceeded(&boot, t0);
    for az in ["az1", "az2"] {
        assert_eq!(
            g.admission(az, "db.small", t0).hold,
            Some(Hold::Quota {
                until: t0 + secs(30)
            }),
            "quota is per project: every AZ pauses"
        );
    }
    assert_eq!(g.admission("az1", "db.small", t0 + secs(30)).hold, None);
    // Refused again: the pause doubles, up to the maximum.
    g.quota_exceeded(&boot, t0 + secs(30));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(31))
            .hold
            .unwrap()
            .until(),
        t0 + secs(90)
    );
    g.quota_exceeded(&boot, t0 + secs(90));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(91))
            .hold
            .unwrap()
            .until(),
        t0 + secs(190)
    );
    g.quota_exceeded(&boot, t0 + secs(190));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(191))
            .hold
            .unwrap()
            .until(),
        t0 + secs(290)
    );
    // A purchase's boot is not held (it only counts), and once a boot gets
    // through the backoff starts over.
    let ticket = g.start("az1", "db.small", false, t0 + secs(300));
    g.finish(
        &ticket,
        BootSignal::Built { build: secs(60) },
        t0 + secs(360),
    );
    g.quota_exceeded(&boot, t0 + secs(400));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(401))
            .hold
            .unwrap()
            .until(),
        t0 + secs(430)
    );
    assert_eq!(g.status("az1", "db.small", t0).quota_refusals, 5);
}

/// The refusal pause is for a quota whose headroom cannot be read: once a
/// poll sent after the last refusal reads the flavor's room, that cap
/// holds its refills, not the pause. Refusals built the backoff to 15
/// min; a minute into the last pause a server was freed and a poll shows
/// room for 10: refills used to wait 14 more minutes with the room shown.
/// Quota is the project's, but the poll is per flavor: a 16-vCPU
/// flavor's refusal no longer stops a 1-vCPU flavor whose own poll shows
/// room, while a flavor not read since the refusal stays paused.
#[test]
fn a_poll_after_a_quota_refusal_lifts_the_pause_for_its_flavor() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(30),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    let mut t = t0;
    for _ in 0..6 {
        g.quota_exceeded(&boot, t);
        t = g.admission("az1", "db.small", t).hold.unwrap().until();
    }
    // The 7th episode: paused 15 min.
    g.quota_exceeded(&boot, t);
    let paused = Some(Hold::Quota {
        until: t + secs(900),
    });
    assert_eq!(g.admission("az1", "db.small", t).hold, paused);
    // A poll sent before the refusal and answered after it does not
    // show what the refusal saw: the pause holds.
    let before = g.boots_started();
    g.quota_exceeded(&boot, t + secs(1));
    g.headroom_polled("db.small", before, room(10), 0, t + secs(2));
    assert_eq!(g.admission("az1", "db.small", t + secs(2)).hold, paused);
    // Quota frees up a minute later: a poll shows room.
    g.server_freed();
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t + secs(60));
    let a = g.admission("az1", "db.small", t + secs(61));
    assert_eq!(a.headroom, Some(10));
    assert_eq!(
        a.hold,
        None,
        "a fresh poll shows room for 10, yet refills wait {:?} more",
        a.hold.map(|h| h.until() - (t + secs(61)))
    );
    assert_eq!(g.status("az1", "db.small", t + secs(61)).hold, None);
    // Another flavor, not read since the refusal, is still paused; its
    // poll showing no room holds it until the next poll, not the pause.
    assert_eq!(g.admission("az1", "db.large", t + secs(61)).hold, paused);
    g.headroom_polled("db.large", g.boots_started(), room(0), 0, t + secs(61));
    assert_eq!(
        g.admission("az1", "db.large", t + secs(62)).hold,
        Some(Hold::Quota {
            until: t + secs(61) + DEFAULT_HEADROOM_INTERVAL
        })
    );
    // A poll that fails reads nothing: the pause holds again.
    g.headroom_failed("db.small", "limits: 503".into(), t + secs(90));
    assert_eq!(g.admission("az1", "db.small", t + secs(91)).hold, paused);
}

/// The backoff doubles while the cloud keeps refusing, not for good:
/// refusals a day apart (pools at their target, no boot measured in
/// between) each pause for the first backoff, as does a refusal after a
/// boot that reached ACTIVE unmeasured. Each used to double the last, to
/// 15 min.
#[test]
fn quota_backoff_starts_over_after_a_quiet_spell_or_a_boot_that_reached_active() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(30),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    let pause = |g: &mut Gate, t: Instant| {
        g.quota_exceeded(&boot, t);
        g.admission("az1", "db.small", t).hold.unwrap().until() - t
    };
    let pauses: Vec<Duration> = (0..6u64)
        .map(|day| pause(&mut g, t0 + secs(day * 86_400)))
        .collect();
    assert_eq!(pauses, vec![secs(30); 6]);
    // Refusals in a row double it...
    let t = t0 + secs(10 * 86_400);
    assert_eq!(pause(&mut g, t), secs(30));
    assert_eq!(pause(&mut g, t + secs(30)), secs(60));
    // ... and so does one within quota_backoff_max of the last pause's end.
    assert_eq!(pause(&mut g, t + secs(90 + 900)), secs(120));
    // A failed boot says nothing of quota; one that reached ACTIVE,
    // unmeasured (after a retry's pause, say), does: it starts over.
    let failed = g.start("az1", "db.small", true, t + secs(1150));
    g.finish(&failed, BootSignal::NoSignal, t + secs(1160));
    assert_eq!(pause(&mut g, t + secs(1200)), secs(240));
    let active = g.start("az1", "db.small", true, t + secs(1500));
    g.finish(&active, BootSignal::Unmeasured, t + secs(1560));
    assert_eq!(pause(&mut g, t + secs(1600)), secs(30));
}

/// A poll that lifted the refusal pause let boots through that the cloud
/// refused as well: the polls do not see the quota that refuses (the port
/// quota when Neutron will not tell it, say), and lifting the pause at
/// each refusal's poll would boot into refusals every few seconds. The
/// pause then holds whatever the polls show, until a boot gets through.
#[test]
fn a_boot_let_through_by_a_poll_and_refused_keeps_the_quota_pause() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(60),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    let late = g.start("az1", "db.small", true, t0);
    g.quota_exceeded(&boot, t0);
    let paused = Some(Hold::Quota {
        until: t0 + secs(60),
    });
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(1));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(1)).hold, None);
    // A boot started before the pause, refused late, is of the same
    // episode: the next poll lifts the pause again.
    g.finish(&late, BootSignal::Refused, t0 + secs(2));
    g.quota_exceeded(&late, t0 + secs(2));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(2)).hold, paused);
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(3));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(3)).hold, None);
    // A refill the lifted pause let through is refused: no poll lifts it.
    let refill = g.start("az1", "db.small", true, t0 + secs(4));
    g.finish(&refill, BootSignal::Refused, t0 + secs(5));
    g.quota_exceeded(&refill, t0 + secs(5));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(6));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(6)).hold, paused);
    // Nor in the next episode...
    assert_eq!(g.admission("az1", "db.small", t0 + secs(60)).hold, None);
    let next = g.start("az1", "db.small", true, t0 + secs(60));
    g.finish(&next, BootSignal::Refused, t0 + secs(61));
    g.quota_exceeded(&next, t0 + secs(61));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(62));
    let paused = Some(Hold::Quota {
        until: t0 + secs(61 + 120),
    });
    assert_eq!(g.admission("az1", "db.small", t0 + secs(62)).hold, paused);
    // ... until a boot gets through (a purchase's, say).
    let purchase = g.start("az1", "db.small", false, t0 + secs(63));
    g.finish(
        &purchase,
        BootSignal::Built { build: secs(40) },
        t0 + secs(103),
    );
    assert_eq!(g.admission("az1", "db.small", t0 + secs(103)).hold, None);
}

/// Quota is charged at a server's create: a boot sent before the last
/// refusal that reaches ACTIVE says nothing of the quota now. IOPS-bound
/// builds take 5-12 min, so boots made before quota ran out keep reaching
/// ACTIVE well into the refusals; each one used to clear the polls'
/// blindness and reset the backoff, so the next poll lifted the pause
/// and refills went out to be refused again, the backoff back at its
/// first step. Only a boot sent after the last refusal does.
#[test]
fn a_boot_sent_before_the_last_quota_refusal_reaching_active_keeps_the_pause_and_its_backoff() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(60),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    // In flight since before quota ran out (its server made then).
    let old = g.start("az1", "db.small", true, t0);
    g.create_answered(&old);
    let boot = refused_boot(&mut g, t0 + secs(1));
    g.quota_exceeded(&boot, t0 + secs(1));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(2));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(2)).hold, None);
    // A refill the poll let through is refused: polls blind.
    let refill = g.start("az1", "db.small", true, t0 + secs(3));
    g.finish(&refill, BootSignal::Refused, t0 + secs(4));
    g.quota_exceeded(&refill, t0 + secs(4));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(5));
    let paused = Some(Hold::Quota {
        until: t0 + secs(61),
    });
    assert_eq!(g.admission("az1", "db.small", t0 + secs(5)).hold, paused);
    // The old boot reaches ACTIVE (unmeasured, after a retry's pause).
    g.finish(&old, BootSignal::Unmeasured, t0 + secs(10));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(11));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(11)).hold,
        paused,
        "a boot made before the refusals reached ACTIVE and the blind polls lift the pause again"
    );
    // Nor did it start the backoff over: the next refusal doubles it.
    let next = refused_boot(&mut g, t0 + secs(70));
    g.quota_exceeded(&next, t0 + secs(70));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(70)).hold,
        Some(Hold::Quota {
            until: t0 + secs(70 + 120)
        })
    );
    // A boot sent after the last refusal that reaches ACTIVE does both.
    let fresh = g.start("az1", "db.small", false, t0 + secs(75));
    g.create_answered(&fresh);
    g.finish(&fresh, BootSignal::Unmeasured, t0 + secs(100));
    g.headroom_polled("db.small", g.boots_started(), room(10), 0, t0 + secs(101));
    assert_eq!(g.admission("az1", "db.small", t0 + secs(101)).hold, None);
    let after = refused_boot(&mut g, t0 + secs(200));
    g.quota_exceeded(&after, t0 + secs(200));
    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(201));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(201)).hold,
        Some(Hold::Quota {
            until: t0 + secs(200 + 60)
        })
    );
}

/// The polls turn blind only when a boot one of them let through is
/// refused: they then do not see what refuses. A purchase that booted
/// because the limits could not be read (Nova's 503; a purchase is not
/// held by an unknown headroom) and was refused says nothing of them, yet
/// it used to keep the pause (15 min) over a later poll that read room
/// for 3. A purchase a poll's room let through that is refused does.
#[test]
fn a_purchase_refused_while_the_limits_cannot_be_read_leaves_polls_lifting_the_quota_pause() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        quota_backoff: secs(900),
        quota_backoff_max: secs(900),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    g.quota_exceeded(&boot, t0);
    // The limits call fails (Nova 503): a purchase is not held by an
    // unknown headroom, boots, and is refused.
    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(1));
    let purchase = g.start("az1", "db.small", false, t0 + secs(5));
    g.finish(&purchase, BootSignal::Refused, t0 + secs(6));
    g.quota_exceeded(&purchase, t0 + secs(6));
    // A server is freed; a poll reads room for 3.
    g.server_freed();
    g.headroom_polled("db.small", g.boots_started(), room(3), 0, t0 + secs(60));
    let a = g.admission("az1", "db.small", t0 + secs(61));
    assert_eq!(a.headroom, Some(3));
    assert_eq!(
        a.hold,
        None,
        "a poll reads room for 3 after the refusal, yet refills wait {:?}",
        a.hold.map(|h| h.until() - (t0 + secs(61)))
    );
    // A purchase that room let through is refused: the polls are blind.
    let seen = g.start("az1", "db.small", false, t0 + secs(62));
    g.finish(&seen, BootSignal::Refused, t0 + secs(63));
    g.quota_exceeded(&seen, t0 + secs(63));
    g.headroom_polled("db.small", g.boots_started(), room(3), 0, t0 + secs(64));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(64)).hold,
        Some(Hold::Quota {
            until: t0 + secs(900)
        })
    );
}

/// Room for `servers` more, the instances quota binding.
fn room(servers: u64) -> BootHeadroom {
    BootHeadroom::room(servers, "instances".into())
}

/// A headroom of 0 holds speculative boots until the next poll can show
/// freed quota; only a pool that wants boots polls again, so one at its
/// target kept the hold of a poll long past: QUOTA_PAUSED ending in the
/// past (`quota:0ms`) and a quota hold metric of 1 for good, also once
/// the quota freed. A poll that is due holds nothing: a pool that wants
/// boots polls again before it boots.
#[test]
fn a_headroom_poll_that_is_due_holds_nothing() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), room(0), 0, t0);
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(1)).hold,
        Some(Hold::Quota {
            until: t0 + DEFAULT_HEADROOM_INTERVAL
        }),
        "held until the next poll"
    );
    let late = t0 + secs(3600);
    let hold = g.status("az1", "db.small", late).hold;
    assert!(hold.is_none_or(|h| h.until() > late), "{hold:?}");
    assert_eq!(g.admission("az1", "db.small", late).hold, None);
    assert!(g.headroom_due("db.small", late));
    // The cap itself stays until a poll says otherwise.
    assert_eq!(g.admission("az1", "db.small", late).headroom, Some(0));
}

/// Boots started while a headroom poll was on its way may be missing from
/// the cloud's answer: they are taken from the headroom it gives.
#[test]
fn boots_started_during_a_headroom_poll_use_up_its_answer() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let sent = g.boots_started();
    g.start("az1", "db.small", false, t0);
    g.start("az2", "db.small", true, t0);
    g.headroom_polled("db.small", sent, room(5), 0, t0 + secs(1));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(1)).headroom,
        Some(3)
    );
}

/// A boot whose create the cloud refused (a deleted image, a 400) holds no
/// quota: it gives back the headroom it took. One whose create the cloud
/// answered before the poll was sent is in the answer, never taken from it,
/// so it gives nothing back.
#[test]
fn a_boot_the_cloud_refused_to_create_gives_its_headroom_back() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let before_poll = g.start("az1", "db.small", true, t0);
    g.create_answered(&before_poll);
    g.headroom_polled("db.small", g.boots_started(), room(5), 0, t0);
    let refused: Vec<_> = (0..3)
        .map(|_| g.start("az1", "db.small", true, t0))
        .collect();
    let built = g.start("az2", "db.small", false, t0);
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(1));
    for ticket in &refused {
        g.finish(ticket, BootSignal::Refused, t0 + secs(1));
    }
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(1)).headroom,
        Some(4)
    );
    // A boot that got a server holds it until the next poll counts it.
    g.finish(&built, BootSignal::Built { build: secs(60) }, t0 + secs(60));
    g.finish(&before_poll, BootSignal::Refused, t0 + secs(60));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(60)).headroom,
        Some(4)
    );
    // Finishing twice gives back once.
    g.finish(&refused[0], BootSignal::Refused, t0 + secs(61));
    assert_eq!(
        g.admission("az1", "db.small", t0 + secs(61)).headroom,
        Some(4)
    );
}

/// A boot whose create the cloud had not answered when a poll was sent
/// (on its way, or waiting out a 429) is not in the answer, though it
/// started before: it holds its share of the headroom as a boot started
/// since does, and gives it back if the cloud refuses the create. Of the
/// ports, a recorded one's are among the ports the poll's count keeps for
/// sale: refills count none more for it, a purchase its management port.
#[test]
fn creates_unanswered_when_a_poll_is_sent_hold_their_quota() {
    let t0 = Instant::now();
    let polled = |instances: u64, ports: u64| {
        BootHeadroom::room(instances.min(ports / 2), "instances".into()).with_quotas(vec![
            QuotaLeft::new("instances", instances, 1),
            QuotaLeft::new("ports", ports, 2),
        ])
    };
    let mut g = gate(GateSettings::default());
    let answered = g.start("az1", "db.small", false, t0);
    g.create_answered(&answered);
    let purchase = g.start("az1", "db.small", false, t0);
    let refill = g.start("az2", "db.small", true, t0);
    g.headroom_polled("db.small", g.boots_started(), polled(3, 100), 0, t0);
    assert_eq!(g.headroom_left("db.small"), Some(1), "two unanswered");
    // Answered once the poll was on its way: maybe in its answer, maybe
    // not; held until the next poll.
    g.create_answered(&purchase);
    assert_eq!(g.headroom_left("db.small"), Some(1));
    g.finish(&refill, BootSignal::Refused, t0 + secs(1));
    assert_eq!(g.headroom_left("db.small"), Some(2));
    g.finish(
        &answered,
        BootSignal::Built { build: secs(60) },
        t0 + secs(60),
    );
    g.headroom_polled(
        "db.small",
        g.boots_started(),
        polled(1, 100),
        0,
        t0 + secs(60),
    );
    assert_eq!(g.headroom_left("db.small"), Some(1), "none unanswered");

    // A purchase's instance is recorded before its boot starts, a
    // refill's after: two booting instances' 4 ports are kept for sale.
    // Refills leave those and the unrecorded boot's 2: (10 - 6) / 2 = 2.
    // A purchase does not leave the ports kept for sale, but the recorded
    // boots' management ports are not made yet, one each, and the
    // unrecorded one's 2: (10 - 4) / 2 = 3.
    let mut g = gate(GateSettings::default());
    g.start("az1", "db.small", false, t0);
    let refills = start_n(&mut g, 2, t0);
    g.recorded(&refills[0]);
    g.headroom_polled("db.small", g.boots_started(), polled(100, 10), 4, t0);
    assert_eq!(g.headroom_left("db.small"), Some(3), "4 of 10 ports held");
    assert_eq!(g.headroom_status("db.small").left, Some(2));
    // Recorded after the poll's count: still held.
    g.recorded(&refills[1]);
    assert_eq!(g.headroom_left("db.small"), Some(3));
}

/// A recorded boot whose create Nova has not answered has no management
/// port yet: Neutron's count misses it. Refills keep it among the ports
/// kept for sale (a booting instance's two); a purchase, which does not
/// keep those, still leaves it that one port. 10 ports free, three such
/// boots: room for (10 - 3) / 2 = 3 servers for a purchase, and
/// (10 - 6 kept) / 2 = 2 for refills.
#[test]
fn a_recorded_boot_unanswered_at_a_poll_holds_its_port_from_purchases() {
    let t0 = Instant::now();
    let polled = BootHeadroom::room(5, "ports: 10 of 20 used".into()).with_quotas(vec![
        QuotaLeft::new("instances", 100, 1),
        QuotaLeft::new("ports", 10, 2),
    ]);
    let mut g = gate(GateSettings::default());
    for boot in start_n(&mut g, 3, t0) {
        g.recorded(&boot);
    }
    let sales = 3 * ports_kept_for_sale(InstanceState::Booting);
    g.headroom_polled("db.small", g.boots_started(), polled, sales, t0);
    assert_eq!(g.headroom_left("db.small"), Some(3));
    assert_eq!(g.headroom_status("db.small").left, Some(2));
}

/// Quota is the project's and counts cores and RAM, not servers: a boot
/// takes what one server of its own flavor takes from every flavor's
/// headroom. With 20 cores and 10 instances free, a 4-vCPU boot leaves room
/// for 4 fewer 1-vCPU servers (it counted as one), and a 1-vCPU boot a
/// quarter of a 4-vCPU one.
#[test]
fn a_boot_takes_its_own_flavors_share_of_every_flavors_headroom() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let poll = |g: &mut Gate| {
        for (flavor, vcpus, servers) in [("db.small", 1, 10), ("db.large", 4, 5)] {
            let free = vec![
                QuotaLeft::new("instances", 10, 1),
                QuotaLeft::new("cores", 20, vcpus),
            ];
            let headroom = BootHeadroom::room(servers, "cores: 0 of 20 used".into());
            g.headroom_polled(flavor, g.boots_started(), headroom.with_quotas(free), 0, t0);
        }
    };
    poll(&mut g);
    let left = |g: &mut Gate, flavor| g.admission("az1", flavor, t0).headroom;

    let large_boots: Vec<_> = (0..2)
        .map(|_| g.start("az1", "db.large", true, t0))
        .collect();
    // 8 cores and 2 instances held: 12 cores, 8 instances left.
    assert_eq!(left(&mut g, "db.small"), Some(8));
    assert_eq!(left(&mut g, "db.large"), Some(3));
    let mut boots = vec![large_boots[1].clone()];
    for _ in 0..3 {
        boots.push(g.start("az2", "db.large", false, t0));
    }
    assert_eq!(left(&mut g, "db.small"), Some(0), "every core is held");
    assert_eq!(left(&mut g, "db.large"), Some(0));

    // A refused create gives back its own flavor's share.
    g.finish(&large_boots[0], BootSignal::Refused, t0 + secs(1));
    assert_eq!(left(&mut g, "db.small"), Some(4));
    assert_eq!(left(&mut g, "db.large"), Some(1));
    for _ in 0..3 {
        boots.push(g.start("az1", "db.small", true, t0));
    }
    assert_eq!(left(&mut g, "db.small"), Some(1));
    assert_eq!(left(&mut g, "db.large"), Some(0), "1 core left");

    // A flavor never polled: its boot counts as one server of the flavor
    // asked about (what it takes is not known). The boots before, their
    // creates answered, are in the new poll's answer.
    for boot in &boots {
        g.create_answered(boot);
    }
    poll(&mut g);
    g.start("az1", "db.unpolled", false, t0);
    assert_eq!(left(&mut g, "db.small"), Some(9));
    assert_eq!(left(&mut g, "db.large"), Some(4));
}

/// The ports quota as polled counts the ports that exist: an unsold
/// server's own once Nova made it (a booting one's maybe not yet), not the
/// tenant's it takes when sold. Speculative refills leave what those will
/// take, a booting server two, a warming or Ready one one; a purchase,
/// first in line, judges the quota as Neutron counts it.
#[test]
fn unsold_servers_keep_the_ports_their_sales_take() {
    let kept =
        |states: &[InstanceState]| -> u64 { states.iter().map(|s| ports_kept_for_sale(*s)).sum() };
    assert_eq!(kept(&[InstanceState::Booting]), 2);
    assert_eq!(kept(&[InstanceState::Warming]), 1);
    assert_eq!(kept(&[InstanceState::Ready]), 1);
    assert_eq!(kept(&InstanceState::ALL[3..]), 0);

    let t0 = Instant::now();
    let polled = |left: u64| {
        BootHeadroom::room(left / 2, format!("ports: {} of 20 used", 20 - left)).with_quotas(vec![
            QuotaLeft::new("instances", 100, 1),
            QuotaLeft::new("ports", left, 2),
        ])
    };
    // 12 ports left; 2 booting and 2 Ready servers keep 6 of them for
    // their sales (and the booting ones' own ports), which leaves refills
    // room for 3 servers, and a purchase room for 6.
    let sales = kept(&[
        InstanceState::Booting,
        InstanceState::Booting,
        InstanceState::Ready,
        InstanceState::Ready,
    ]);
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), polled(12), sales, t0);
    assert_eq!(g.headroom_left("db.small"), Some(6));
    let status = g.headroom_status("db.small");
    assert_eq!((status.polled, status.left), (Some(6), Some(3)));
    assert_eq!(
        status.limited_by.as_deref(),
        Some("ports: 12 left, 6 kept for the sales of unsold servers")
    );
    start_n(&mut g, 3, t0);
    assert_eq!(g.headroom_left("db.small"), Some(3));
    assert_eq!(g.headroom_status("db.small").left, Some(0));

    // Nothing unsold: as the cloud said.
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), polled(12), 0, t0);
    assert_eq!(g.headroom_left("db.small"), Some(6));
    let status = g.headroom_status("db.small");
    assert_eq!(status.left, Some(6));
    assert_eq!(status.limited_by.as_deref(), Some("ports: 8 of 20 used"));

    // More kept than ports left (the quota was lowered): no room for
    // refills, a purchase still gets the port Neutron has.
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), polled(2), 8, t0);
    assert_eq!(g.headroom_status("db.small").left, Some(0));
    assert_eq!(g.headroom_left("db.small"), Some(1));

    // Compute binds first however many are unsold: it keeps its name.
    let mut g = gate(GateSettings::default());
    let headroom = BootHeadroom::room(2, "instances: 98 of 100 used".into()).with_quotas(vec![
        QuotaLeft::new("instances", 2, 1),
        QuotaLeft::new("ports", 12, 2),
    ]);
    g.headroom_polled("db.small", g.boots_started(), headroom, 4, t0);
    assert_eq!(g.headroom_left("db.small"), Some(2));
    let status = g.headroom_status("db.small");
    assert_eq!(status.left, Some(2));
    assert_eq!(
        status.limited_by.as_deref(),
        Some("instances: 98 of 100 used")
    );
}

/// A failed poll of the limits leaves the headroom unknown, and GetPool
/// shows that and why, not the binding quota, its numbers or the ports
/// kept for sales of the poll before beside it; the next poll that
/// succeeds shows its own again.
#[test]
fn a_failed_headroom_poll_shows_the_failure_not_the_last_polls_quota() {
    let t0 = Instant::now();
    let polled = BootHeadroom::room(6, "ports: 8 of 20 used".into()).with_quotas(vec![
        QuotaLeft::new("instances", 100, 1),
        QuotaLeft::new("ports", 12, 2),
    ]);
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), polled.clone(), 6, t0);
    assert_eq!(
        g.headroom_status("db.small").limited_by.as_deref(),
        Some("ports: 12 left, 6 kept for the sales of unsold servers")
    );

    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(30));
    let status = g.headroom_status("db.small");
    assert_eq!(
        status,
        HeadroomStatus {
            polled: None,
            left: None,
            limited_by: None,
            beyond_quota: false,
            polled_at: Some(t0 + secs(30)),
            // When the limits were last read: the failure does not say
            // they were read then.
            read_at: Some(t0),
            failing: Some("limits: 503".into()),
            ports_unknown: None,
        }
    );
    assert_eq!(g.headroom_left("db.small"), None, "nothing capped");

    g.headroom_polled("db.small", g.boots_started(), polled, 0, t0 + secs(60));
    let status = g.headroom_status("db.small");
    assert_eq!(status.limited_by.as_deref(), Some("ports: 8 of 20 used"));
    assert_eq!((status.left, status.failing), (Some(6), None));
}

/// A poll that finds every limit unlimited leaves the headroom unset, as
/// no poll does: the status tells them apart by when the limits were last
/// read, which a failed poll since keeps (its failure says why the
/// headroom is unknown).
#[test]
fn the_status_tells_unlimited_limits_from_limits_not_read() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    let status = g.headroom_status("db.small");
    assert_eq!(
        (status.left, status.polled_at, status.read_at),
        (None, None, None),
        "never polled"
    );

    g.headroom_polled(
        "db.small",
        g.boots_started(),
        BootHeadroom::UNLIMITED,
        0,
        t0 + secs(5),
    );
    let status = g.headroom_status("db.small");
    assert_eq!(
        (status.polled, status.left, status.failing.as_deref()),
        (None, None, None),
        "unlimited"
    );
    assert_eq!(status.read_at, Some(t0 + secs(5)));

    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(35));
    let status = g.headroom_status("db.small");
    assert_eq!(status.failing.as_deref(), Some("limits: 503"));
    assert_eq!(
        (status.polled_at, status.read_at),
        (Some(t0 + secs(35)), Some(t0 + secs(5)))
    );
    // Another flavor's poll reads nothing of this one's.
    assert_eq!(g.headroom_status("db.large").read_at, None);

    // The gate off polls nothing: nothing is ever read.
    let off = gate(GateSettings {
        enabled: false,
        ..GateSettings::default()
    });
    assert!(!off.headroom_due("db.small", t0));
    assert_eq!(off.headroom_status("db.small").read_at, None);
}

/// A poll whose port quota the cloud did not tell (Neutron refused or
/// failed to) shows why in the status, beside the room Nova's quotas leave,
/// which it admits as it is; until a poll counts the ports again. A failed
/// poll shows its failure alone.
#[test]
fn the_status_says_when_a_poll_did_not_count_the_port_quota() {
    let t0 = Instant::now();
    let why = "reading Neutron's quota details failed: transient cloud error: HTTP 503";
    let nova_only = BootHeadroom::room(8, "instances: 2 of 10 used".into())
        .with_quotas(vec![QuotaLeft::new("instances", 8, 1)]);
    let mut g = gate(GateSettings::default());
    g.headroom_polled(
        "db.small",
        g.boots_started(),
        nova_only.clone().with_ports_unknown(why.into()),
        4,
        t0,
    );
    let status = g.headroom_status("db.small");
    assert_eq!(status.ports_unknown.as_deref(), Some(why));
    assert_eq!(
        (status.polled, status.left, status.limited_by.as_deref()),
        (Some(8), Some(8), Some("instances: 2 of 10 used")),
        "what the headroom admits is the poll's"
    );
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(8));

    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(30));
    let status = g.headroom_status("db.small");
    assert_eq!(
        (status.failing.as_deref(), status.ports_unknown),
        (Some("limits: 503"), None)
    );

    g.headroom_polled(
        "db.small",
        g.boots_started(),
        nova_only.with_ports_unknown(why.into()),
        4,
        t0 + secs(60),
    );
    assert_eq!(
        g.headroom_status("db.small").ports_unknown.as_deref(),
        Some(why)
    );
    let counted = BootHeadroom::room(3, "ports: 14 of 20 used".into()).with_quotas(vec![
        QuotaLeft::new("instances", 8, 1),
        QuotaLeft::new("ports", 6, 2),
    ]);
    g.headroom_polled("db.small", g.boots_started(), counted, 0, t0 + secs(90));
    assert_eq!(g.headroom_status("db.small").ports_unknown, None);
}

/// A purchase makes the tenant's port before it asks for room: its server
/// then needs one port more, not two, judged on a poll whose count holds
/// that port (sent after it was made). A poll sent before misses the port,
/// and the two a server takes make up for it.
#[test]
fn a_purchase_with_its_port_made_needs_one_port_more() {
    let t0 = Instant::now();
    let polled = |left: u64| {
        BootHeadroom::room(left / 2, format!("ports: {} of 10 used", 10 - left)).with_quotas(vec![
            QuotaLeft::new("instances", 100, 1),
            QuotaLeft::new("ports", left, 2),
        ])
    };
    let mut g = gate(GateSettings::default());
    // A poll sent before the port was made: 2 free by its count, which
    // misses the port.
    let sent = g.boots_started();
    let port = g.tenant_port_made();
    g.headroom_polled("db.small", sent, polled(2), 0, t0);
    assert_eq!(g.purchase_headroom("db.small", Some(port)), Some(1));
    let sent = g.boots_started();
    g.headroom_polled("db.small", sent, polled(1), 0, t0 + secs(1));
    assert_eq!(g.purchase_headroom("db.small", Some(port)), Some(1));
    // Without a port made, and for refills: two ports a server.
    assert_eq!(g.headroom_left("db.small"), Some(0));
    assert_eq!(g.headroom_status("db.small").left, Some(0));
    // 3 free: its server and one more.
    let sent = g.boots_started();
    g.headroom_polled("db.small", sent, polled(3), 0, t0 + secs(2));
    assert_eq!(g.purchase_headroom("db.small", Some(port)), Some(2));
    assert_eq!(g.headroom_left("db.small"), Some(1));
    // Another purchase's port made after the poll: not in its count.
    let later = g.tenant_port_made();
    assert_eq!(g.purchase_headroom("db.small", Some(later)), Some(1));
}

/// A purchase waiting for quota is first in line for what one server of
/// its own flavor takes: speculative refills of every flavor leave it that.
#[test]
fn a_waiting_purchase_reserves_its_own_flavors_share() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    for (flavor, vcpus) in [("db.small", 1), ("db.large", 4)] {
        let free = vec![
            QuotaLeft::new("instances", 100, 1),
            QuotaLeft::new("cores", 20, vcpus),
        ];
        let headroom = BootHeadroom::room(20 / vcpus, "cores: 0 of 20 used".into());
        g.headroom_polled(flavor, g.boots_started(), headroom.with_quotas(free), 0, t0);
    }
    let left = |g: &mut Gate, flavor| g.admission("az1", flavor, t0).headroom;
    g.purchase_waiting("db.large", true);
    assert_eq!(left(&mut g, "db.small"), Some(16), "4 cores kept for it");
    assert_eq!(left(&mut g, "db.large"), Some(4));
    for _ in 0..3 {
        g.start("az1", "db.small", true, t0);
    }
    assert_eq!(left(&mut g, "db.small"), Some(13));
    assert_eq!(left(&mut g, "db.large"), Some(3));
    // It stops waiting (its cold boot starts, or it gives up).
    g.purchase_waiting("db.large", false);
    assert_eq!(left(&mut g, "db.small"), Some(17));
    assert_eq!(left(&mut g, "db.large"), Some(4));
    // Leaving a line it is not in changes nothing.
    g.purchase_waiting("db.large", false);
    assert_eq!(left(&mut g, "db.small"), Some(17));
}

#[test]
fn quota_headroom_caps_speculative_boots_and_purchases_go_first() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        headroom_interval: secs(30),
        ..GateSettings::default()
    });
    let boot = refused_boot(&mut g, t0);
    // Never polled: due now, nothing capped.
    assert!(g.headroom_due("db.small", t0));
    assert_eq!(g.admission("az1", "db.small", t0).headroom, None);

    g.headroom_polled(
        "db.small",
        g.boots_started(),
        BootHeadroom::room(3, "instances: 7 of 10 used".into()),
        0,
        t0,
    );
    assert!(!g.headroom_due("db.small", t0 + secs(29)));
    assert!(g.headroom_due("db.small", t0 + secs(30)));
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(3));
    // Boots started since the poll use it up, purchases and other AZs included
    // (quota is per project).
    g.start("az2", "db.small", false, t0);
    g.start("az1", "db.small", true, t0);
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(1));
    // A purchase waiting for quota is first in line.
    g.purchase_waiting("db.small", true);
    let a = g.admission("az1", "db.small", t0 + secs(1));
    assert_eq!(a.headroom, Some(0));
    assert_eq!(
        a.hold,
        Some(Hold::Quota {
            until: t0 + secs(30)
        }),
        "no headroom: held until the next poll"
    );
    g.purchase_waiting("db.small", false);
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(1));

    // Unlimited quota: no cap.
    g.headroom_polled(
        "db.large",
        g.boots_started(),
        BootHeadroom::UNLIMITED,
        0,
        t0,
    );
    assert_eq!(g.admission("az1", "db.large", t0).headroom, None);

    // A refusal makes the cached answer stale: poll again at once.
    g.quota_exceeded(&boot, t0 + secs(2));
    assert!(g.headroom_due("db.small", t0 + secs(2)));
    // A failing poll caps nothing (the refusal pause still holds) and is
    // retried after the interval.
    g.headroom_failed("db.small", "limits: 503".into(), t0 + secs(2));
    let a = g.admission("az1", "db.small", t0 + secs(3));
    assert_eq!(a.headroom, None);
    assert!(matches!(a.hold, Some(Hold::Quota { .. })), "{a:?}");
    assert!(!g.headroom_due("db.small", t0 + secs(31)));
    assert!(g.headroom_due("db.small", t0 + secs(32)));
    assert_eq!(
        g.headroom_status("db.small").failing.as_deref(),
        Some("limits: 503")
    );

    // A disabled gate neither polls nor caps.
    let mut off = gate(GateSettings::disabled());
    assert!(!off.headroom_due("db.small", t0));
    off.headroom_polled("db.small", off.boots_started(), room(0), 0, t0);
    assert_eq!(off.admission("az1", "db.small", t0), Admission::OPEN);
}

/// GetPool shows what the decider is given: a quota whose headroom a
/// waiting purchase takes holds the pool's refills, and nothing is left
/// for them.
#[test]
fn the_status_shows_the_hold_of_a_headroom_a_waiting_purchase_takes() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), room(1), 0, t0);
    g.purchase_waiting("db.small", true);
    let admitted = g.admission("az1", "db.small", t0);
    assert_eq!(
        admitted.hold,
        Some(Hold::Quota {
            until: t0 + DEFAULT_HEADROOM_INTERVAL
        })
    );
    assert_eq!(g.status("az1", "db.small", t0).hold, admitted.hold);
    let quota = g.headroom_status("db.small");
    assert_eq!((quota.polled, quota.left), (Some(1), Some(0)));

    // Its cold boot starts: the boot holds the room instead.
    g.purchase_waiting("db.small", false);
    g.start("az1", "db.small", false, t0);
    assert_eq!(g.status("az1", "db.small", t0).hold, admitted.hold);
    assert_eq!(g.headroom_status("db.small").left, Some(0));
    // A pool of another flavor is not held by this one's headroom.
    assert_eq!(g.status("az1", "db.large", t0).hold, None);
}

#[test]
fn iops_limits_set_the_lead_time_prior() {
    use pool_manager::sizing::{lead_time_prior, CALIBRATED_THROTTLED_IOPS};
    let base = secs(90);
    // No limit: the configured prior.
    assert_eq!(lead_time_prior(base, None, None), base);
    // Limits at or above the unthrottled cloud's IOPS change nothing.
    assert_eq!(lead_time_prior(base, Some(100_000), Some(60_000)), base);
    // Both limited at the calibrated production level: Nova x2.5 (25 s ->
    // 62.5 s) and mysqld x4 (65 s -> 260 s), about the 3-5x of calibration.md.
    let iops = CALIBRATED_THROTTLED_IOPS as u32;
    let both = lead_time_prior(base, Some(iops), Some(iops));
    assert!(
        (both.as_secs_f64() - 322.5).abs() < 0.5,
        "{both:?} should be 62.5 s + 260 s"
    );
    // The volume type alone stretches only mysqld's start; the flavor alone
    // stretches both phases (mysqld reads through the flavor's limit too).
    let volume_only = lead_time_prior(base, None, Some(iops));
    assert!(
        (volume_only.as_secs_f64() - 285.0).abs() < 0.5,
        "{volume_only:?}"
    );
    assert_eq!(lead_time_prior(base, Some(iops), None), both);
    // The lower of the two limits binds mysqld.
    assert_eq!(
        lead_time_prior(base, Some(iops), Some(50_000)),
        lead_time_prior(base, Some(iops), Some(iops))
    );
    // Tighter limits, longer prior; never absurd.
    let tight = lead_time_prior(base, Some(1_000), Some(1_000));
    assert!(tight > both * 4, "{tight:?}");
    assert!(lead_time_prior(base, Some(1), Some(1)) <= secs(24 * 3600));
    // However long the prior (settings are bounded, the function is not),
    // stretching it saturates instead of overflowing a Duration.
    let huge = Duration::from_secs(u64::MAX / 4);
    assert_eq!(lead_time_prior(huge, Some(1), Some(1)), huge);

    // Before any boot the estimate is that prior; boots observed replace it.
    let settings = SizingSettings::default();
    let t0 = Instant::now();
    let mut lead = LeadTimes::default();
    let e = lead.estimate_with_prior(t0, &[], both, &settings);
    assert_eq!((e.p90, e.source), (both, LeadSource::Prior));
    for _ in 0..5 {
        lead.record(t0, secs(70), &settings);
    }
    let e = lead.estimate_with_prior(t0, &[], both, &settings);
    assert_eq!((e.p90, e.source), (secs(70), LeadSource::Observed));

    // A pool spec with limits gets that prior.
    let mut spec = spec(1);
    spec.iops_limit = Some(iops);
    spec.volume_iops_limit = Some(iops);
    let settings = SizingSettings {
        prior_lead_time: base,
        ..SizingSettings::default()
    };
    assert_eq!(
        pool_manager::sizing::prior_for(&spec, &settings, None),
        both
    );
    // The pool's own flavor limit overrides the one the cloud tells; the
    // cloud's stands in for one the pool does not set.
    assert_eq!(
        pool_manager::sizing::prior_for(&spec, &settings, Some(100)),
        both
    );
    spec.iops_limit = None;
    assert_eq!(
        pool_manager::sizing::prior_for(&spec, &settings, Some(iops)),
        both
    );
    assert_eq!(
        pool_manager::sizing::prior_for(&spec, &settings, None),
        volume_only
    );
}

/// Starts `n` gated boots at `at`.
fn start_n(g: &mut Gate, n: u32, at: Instant) -> Vec<TicketInfo> {
    (0..n)
        .map(|_| g.start("az1", "db.small", true, at))
        .collect()
}

#[test]
fn aimd_window_grows_near_baseline_and_halves_on_inflation() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        initial_window: 4,
        max_window: 64,
        ..GateSettings::default()
    });
    // A lone boot sets the baseline.
    let lone = g.start("az1", "db.small", true, t0);
    g.finish(&lone, BootSignal::Built { build: secs(60) }, t0 + secs(60));
    assert_eq!(g.status("az1", "db.small", t0).baseline, Some(secs(60)));

    // Slow start: a full window of good boots doubles it, round after round.
    let mut t = t0 + secs(60);
    for expected in [8.0, 16.0, 32.0] {
        let room = g.admission("az1", "db.small", t).room;
        let tickets = start_n(&mut g, room, t);
        t += secs(62);
        for ticket in &tickets {
            g.finish(ticket, BootSignal::Built { build: secs(62) }, t);
        }
        assert_eq!(g.status("az1", "db.small", t).window.unwrap(), expected);
    }

    // Inflated boots (contention): halve once per round trip, not per boot.
    let tickets = start_n(&mut g, 32, t);
    t += secs(120);
    for ticket in &tickets {
        g.finish(ticket, BootSignal::Built { build: secs(120) }, t);
    }
    let s = g.status("az1", "db.small", t);
    assert_eq!((s.window.unwrap(), s.decreases), (16.0, 1));
    // Boots started after the decrease may halve it again.
    let tickets = start_n(&mut g, 16, t);
    t += secs(100);
    g.finish(&tickets[0], BootSignal::Built { build: secs(100) }, t);
    assert_eq!(g.status("az1", "db.small", t).window.unwrap(), 8.0);
    // Near baseline again: once the smoothed ratio has come down, additive
    // increase (+1/window per good boot, about +1 per window of boots).
    for ticket in &tickets[1..] {
        g.finish(ticket, BootSignal::Built { build: secs(61) }, t);
    }
    let s = g.status("az1", "db.small", t);
    assert!(s.window.unwrap() > 8.0 && s.window.unwrap() < 9.5, "{s:?}");
    assert!(s.latency_ratio.unwrap() < 1.2, "{s:?}");
    assert_eq!(s.gated_in_flight, 0);
    let before = s.window.unwrap();
    let tickets = start_n(&mut g, 8, t);
    for ticket in &tickets {
        g.finish(ticket, BootSignal::Built { build: secs(61) }, t + secs(61));
    }
    let w = g.status("az1", "db.small", t).window.unwrap();
    assert!(w - before > 0.8 && w - before < 1.0, "{before} -> {w}");

    // One slow boot among good ones does not halve the window.
    let tickets = start_n(&mut g, 8, t);
    g.finish(
        &tickets[0],
        BootSignal::Built { build: secs(100) },
        t + secs(100),
    );
    assert_eq!(g.status("az1", "db.small", t).decreases, 2);
    for ticket in &tickets[1..] {
        g.finish(ticket, BootSignal::Built { build: secs(61) }, t + secs(100));
    }
}

#[test]
fn aimd_does_not_grow_an_unused_window_and_follows_a_slower_cloud() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        initial_window: 8,
        ..GateSettings::default()
    });
    // One boot at a time: fast, but no evidence that 9 at once would be.
    let mut t = t0;
    for _ in 0..20 {
        let ticket = g.start("az1", "db.small", true, t);
        t += secs(60);
        g.finish(&ticket, BootSignal::Built { build: secs(60) }, t);
    }
    assert_eq!(g.status("az1", "db.small", t).window.unwrap(), 8.0);

    // The whole cloud slows down 5x (IOPS throttling). Lone boots show it,
    // the baseline follows, and the window stops shrinking.
    for _ in 0..6 {
        let ticket = g.start("az1", "db.small", true, t);
        t += secs(300);
        g.finish(&ticket, BootSignal::Built { build: secs(300) }, t);
    }
    let s = g.status("az1", "db.small", t);
    assert!(s.baseline.unwrap() > secs(280), "{s:?}");
    assert!(s.window.unwrap() >= 4.0, "at most one halving: {s:?}");
    // Four at once at the new speed are fine again.
    let tickets = start_n(&mut g, 4, t);
    t += secs(305);
    for ticket in &tickets {
        g.finish(ticket, BootSignal::Built { build: secs(305) }, t);
    }
    assert!(g.status("az1", "db.small", t).window.unwrap() >= s.window.unwrap());
}

/// An AZ never quiet enough for an uncontended build follows a cloud that
/// slowed down for good once its baseline is stale, as a quiet AZ does.
#[test]
fn a_busy_az_follows_a_slower_cloud_once_its_baseline_is_stale() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    // Three builds in flight at all times: none measures the baseline alone.
    let mut t = t0;
    let round = |g: &mut Gate, t: &mut Instant, build: u64| {
        let tickets = start_n(g, 3, *t);
        *t += secs(build);
        for ticket in &tickets {
            g.finish(ticket, built(build), *t);
        }
    };
    for _ in 0..3 {
        round(&mut g, &mut t, 60);
    }
    assert_eq!(g.status("az1", "db.small", t).baseline, Some(secs(60)));

    // The cloud becomes 3x slower for good.
    let slow_since = t;
    while t < slow_since + secs(40 * 60) {
        round(&mut g, &mut t, 180);
    }
    let s = g.status("az1", "db.small", t);
    assert!(s.baseline.unwrap() > secs(150), "{s:?}");
    assert!(s.latency_ratio.unwrap() < 1.2, "{s:?}");
    assert!(s.window.unwrap() > 4.0, "the window grows again: {s:?}");
}

fn built(s: u64) -> BootSignal {
    BootSignal::Built { build: secs(s) }
}

/// A gate whose window starts at `initial` (at most `max`), after one lone
/// 25 s build set its baseline; returns it and the time after that build.
fn gate_after_a_lone_build(initial: u32, max: u32) -> (Gate, Instant) {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        initial_window: initial,
        max_window: max,
        ..GateSettings::default()
    });
    let lone = g.start("az1", "db.small", true, t0);
    g.finish(&lone, built(25), t0 + secs(25));
    (g, t0 + secs(25))
}

#[test]
fn slow_start_turns_conservative_on_slower_builds_and_resumes_when_they_were_noise() {
    let (mut g, mut t) = gate_after_a_lone_build(8, 64);

    // Slow start: +1 per good build, until one build is slower than
    // grow_below x the baseline (32 s / 25 s = 1.28): from then on a
    // quarter of that, before the smoothed ratio has moved (RFC 9406's
    // conservative slow start).
    let tickets = start_n(&mut g, 8, t);
    t += secs(25);
    for ticket in &tickets[..7] {
        g.finish(ticket, built(25), t);
    }
    g.finish(&tickets[7], built(32), t);
    let s = g.status("az1", "db.small", t);
    assert_eq!(s.window.unwrap(), 15.0, "{s:?}");
    assert!(s.latency_ratio.unwrap() < 1.2, "{s:?}");
    let tickets = start_n(&mut g, 15, t);
    t += secs(25);
    for ticket in &tickets[..4] {
        g.finish(ticket, built(25), t);
    }
    assert_eq!(g.status("az1", "db.small", t).window.unwrap(), 16.0);

    // A round (a window of builds) faster than the builds before the slow
    // one: the exit was noise, slow start resumes (+1 per good build).
    for ticket in &tickets[4..] {
        g.finish(ticket, built(24), t);
    }
    let w = g.status("az1", "db.small", t).window.unwrap();
    assert_eq!(w, 16.0 + 10.0 * 0.25 + 1.0);
    let ticket = g.start("az1", "db.small", true, t);
    let _others = start_n(&mut g, 20, t);
    g.finish(&ticket, built(25), t + secs(25));
    assert_eq!(g.status("az1", "db.small", t).window.unwrap(), w + 1.0);
}

#[test]
fn slow_start_ends_after_conservative_rounds_that_stay_slower() {
    let (mut g, mut t) = gate_after_a_lone_build(4, 64);
    let tickets = start_n(&mut g, 4, t);
    t += secs(32);
    for ticket in &tickets {
        g.finish(ticket, built(32), t);
    }
    // Conservative from the first slow build on; the builds stay within
    // grow_below (27 s) and never faster than before: five rounds of +1/4
    // per build, then congestion avoidance (+1/window per build).
    let mut rounds = 0;
    loop {
        let before = g.status("az1", "db.small", t).window.unwrap();
        let ticket = g.start("az1", "db.small", true, t);
        let _load = start_n(&mut g, before as u32, t);
        t += secs(27);
        g.finish(&ticket, built(27), t);
        let after = g.status("az1", "db.small", t).window.unwrap();
        if (after - before - 0.25).abs() > 1e-9 {
            assert!(
                (after - before - 1.0 / before).abs() < 1e-9,
                "{before} -> {after}"
            );
            break;
        }
        rounds += 1;
        assert!(rounds < 200, "never left conservative slow start");
    }
    assert!(
        rounds >= 5 * 4,
        "at least five rounds of a window each: {rounds}"
    );
}

#[test]
fn inflation_never_shrinks_the_window_below_what_the_cloud_just_delivered() {
    let (mut g, t) = gate_after_a_lone_build(40, 40);
    let tickets = start_n(&mut g, 40, t);
    // 26 good builds, then the hosts' queue shows (40 s = 1.6x): the
    // window halves, but 30 builds finished within the last baseline
    // (25 s), and a window below that would carry fewer than the hosts
    // just delivered.
    for ticket in &tickets[..26] {
        g.finish(ticket, built(26), t + secs(26));
    }
    for ticket in &tickets[26..30] {
        g.finish(ticket, built(40), t + secs(40));
    }
    let s = g.status("az1", "db.small", t + secs(40));
    assert_eq!((s.window.unwrap(), s.decreases), (30.0, 1), "{s:?}");

    // Later, with nothing delivered lately, inflation halves it.
    let t = t + secs(200);
    let tickets = start_n(&mut g, 30, t);
    for ticket in &tickets[..6] {
        g.finish(ticket, built(60), t + secs(60));
    }
    let s = g.status("az1", "db.small", t + secs(60));
    assert_eq!((s.window.unwrap(), s.decreases), (15.0, 2), "{s:?}");
}

/// Inflation while the hosts deliver a whole window per baseline leaves the
/// window as it is, and that is no decrease.
#[test]
fn a_decrease_the_delivered_floor_cancels_is_not_counted() {
    let (mut g, t) = gate_after_a_lone_build(1, 64);
    assert_eq!(g.status("az1", "db.small", t).window.unwrap(), 2.0);
    // Purchases (not gated) slow the builds down: 4 finish within the
    // baseline, more than the window of 2.
    let purchases: Vec<_> = (0..4)
        .map(|_| g.start("az1", "db.small", false, t))
        .collect();
    for ticket in &purchases {
        g.finish(ticket, built(50), t + secs(50));
    }
    let s = g.status("az1", "db.small", t + secs(50));
    assert!(s.latency_ratio.unwrap() > 1.4, "{s:?}");
    assert_eq!((s.window.unwrap(), s.decreases), (2.0, 0), "{s:?}");

    // Later, with nothing delivered lately, inflation halves it (a
    // purchase alongside: three in flight do not measure the baseline).
    let t = t + secs(200);
    let tickets = start_n(&mut g, 2, t);
    let _purchase = g.start("az1", "db.small", false, t);
    g.finish(&tickets[0], built(60), t + secs(60));
    let s = g.status("az1", "db.small", t + secs(60));
    assert_eq!((s.window.unwrap(), s.decreases), (1.0, 1), "{s:?}");
}

// ---- through a manager on the paused clock ---------------------------------

fn sim_with(f: impl FnOnce(&mut cloudsim::SimConfig)) -> std::sync::Arc<cloudsim::SimCloud> {
    let mut config = cloudsim::SimConfig::deterministic();
    f(&mut config);
    cloudsim::SimCloud::new(config)
}

#[tokio::test(start_paused = true)]
async fn quota_stops_refills_but_warm_purchases_proceed() {
    let sim = sim_with(|c| c.quotas.max_instances = 3);
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;

    // The cloud's limits said 3: three boots, none refused, and no more
    // boots while the quota stays full; the limits are polled every
    // headroom_interval (30 s), not per step or per boot.
    sim.reset_call_counts();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), None, "{calls:?}");
    let polls = calls.get("boot_headroom").copied().unwrap_or(0);
    assert!((10..=21).contains(&polls), "{polls} polls in 10 minutes");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 3);
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    assert_eq!(status.sizing.quota.left, Some(0), "{:?}", status.sizing);
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(pool_manager::sizing::PlanReason::Quota)
    );

    // A purchase still gets a warm instance.
    let allocation = manager
        .allocate(request("q1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(allocation.warm_hit);
}

/// Without the gate nothing else paces a pool's quota refusals, so they
/// take the pool's failed-boot pause, as a retired flavor's failures do.
/// A pool at its quota sent a create about every second forever (each
/// refusal's records woke the replenisher, which booted again): 1200 in
/// ten minutes.
#[tokio::test(start_paused = true)]
async fn without_the_gate_quota_refusals_take_the_pools_boot_pause() {
    let sim = sim_with(|c| c.quotas.max_instances = 3);
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            gate: GateSettings::disabled(),
            max_concurrent_boots: 4,
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;

    // The pause starts at replenish_interval (2 s) and doubles with each
    // refusal of a boot started after the one before, up to
    // BOOT_BACKOFF_MAX (300 s): pauses of 2, 4, .., 256 s add up to 510 s,
    // and the next is 300 s, so ten minutes hold at most 9 pauses, one
    // create after each, and the pool boots one at a time in between. At
    // most the 2 boots the pool lacks may be refused together before the
    // first pause (wait_ready returns after them or before): 11 creates.
    sim.reset_call_counts();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = sim.call_counts();
    let creates = calls.get("create_server").copied().unwrap_or(0);
    assert!(creates <= 11, "{creates} creates in 10 minutes: {calls:?}");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 3);
    assert!(
        matches!(
            status.sizing.last_plan.map(|p| p.reason),
            Some(pool_manager::sizing::PlanReason::Backoff(_))
        ),
        "{:?}",
        status.sizing.last_plan
    );

    // A purchase still gets a warm instance.
    let allocation = manager
        .allocate(request("q1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(allocation.warm_hit);
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_new_boots() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    // The first compute call (the quota poll or a create) is answered 429
    // with Retry-After: 120 s.
    sim.faults().api_errors_next(
        1,
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(120)),
            message: "slow down".into(),
            unavailable: false,
        },
    );
    let started = Instant::now();
    manager.create_pool(pool(), spec(4)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        matches!(status.sizing.gate.hold, Some(Hold::Throttled { .. })),
        "{:?}",
        status.sizing.gate
    );
    // Boots started before the 429 continue; nothing new starts while paused.
    let booting = status.count(InstanceState::Booting) + status.count(InstanceState::Warming);
    assert!(booting <= 4);
    let calls_paused = sim.call_counts().get("create_server").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        sim.call_counts().get("create_server").copied().unwrap_or(0),
        calls_paused,
        "no new create while the AZ is paused"
    );
    wait_ready(&manager, 4).await;
    assert!(started.elapsed() >= Duration::from_secs(120));
}

/// Nova is one API for every zone: its 429 to a boot in az1 holds the
/// refills of az2 too (each would only collect its own 429), while the
/// window, which stands for the zone's hosts, halves in az1 alone. The
/// pause was az1's: az2 kept booting against the Nova that had just
/// answered 429.
#[tokio::test(start_paused = true)]
async fn a_nova_429_in_one_zone_holds_boots_in_the_other_zones_too() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = sim();
    let armed = Arc::new(AtomicBool::new(true));
    let fault = armed.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "create_server" && fault.swap(false, Ordering::SeqCst)).then(|| {
            CloudError::Throttled {
                retry_after: Some(secs(120)),
                message: "Rate limit exceeded".into(),
                unavailable: false,
            }
        })
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    tokio::time::sleep(secs(5)).await;
    assert!(!armed.load(Ordering::SeqCst), "a boot in az1 met the 429");
    let az2 = PoolKey::new("db.small", "az2");
    manager.create_pool(az2.clone(), spec(2)).await.unwrap();
    tokio::time::sleep(secs(30)).await;
    let status = manager.get_pool(&az2).await.unwrap();
    let gate = &status.sizing.gate;
    assert!(
        matches!(
            gate.hold,
            Some(Hold::Throttled {
                service: CloudService::Compute,
                ..
            })
        ),
        "az2 keeps booting against the Nova that just answered 429: {gate:?}"
    );
    let booting = status.count(InstanceState::Booting) + status.count(InstanceState::Warming);
    assert_eq!(booting, 0, "az2 boots nothing while Nova's pause lasts");
    assert_eq!(
        gate.decreases, 0,
        "az2's hosts were not throttled: {gate:?}"
    );
    let az1 = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(az1.decreases, 1, "{az1:?}");
    // Once the pause is over, az2 fills.
    for _ in 0..600 {
        let ready = manager.get_pool(&az2).await.unwrap();
        if ready.count(InstanceState::Ready) >= 2 {
            return;
        }
        tokio::time::sleep(secs(1)).await;
    }
    panic!("az2 never filled after the pause");
}

#[tokio::test(start_paused = true)]
async fn the_gate_counts_builds_and_lets_go_of_a_boot_once_its_server_is_active() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(3)).await.unwrap();
    // Nova takes 25 s, mysqld 35 s more: at 40 s the servers are ACTIVE
    // and mysqld is starting in the guests, which the hosts do not serialize.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let building = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(building.count(InstanceState::Booting), 3);
    assert_eq!(
        building.sizing.gate.in_flight, 3,
        "{:?}",
        building.sizing.gate
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let warming = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(warming.count(InstanceState::Warming), 3);
    let gate = &warming.sizing.gate;
    assert_eq!((gate.in_flight, gate.gated_in_flight), (0, 0), "{gate:?}");
    // The baseline is a build, not a boot to Ready.
    let baseline = gate.baseline.expect("measured by the builds");
    assert!(baseline >= secs(25) && baseline < secs(35), "{baseline:?}");
    wait_ready(&manager, 3).await;
}

#[tokio::test(start_paused = true)]
async fn auto_target_follows_demand_and_lead_time() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), auto_spec()).await.unwrap();
    wait_ready(&manager, 1).await;
    let before = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(before.effective_target, 1, "no demand yet: min_ready");

    // A purchase every 30 s plus its own duration (released at once).
    let started = Instant::now();
    purchases_every(&manager, 120, Duration::from_secs(30)).await;
    let busy = manager.get_pool(&pool()).await.unwrap();
    let s = &busy.sizing;
    assert!(s.auto);
    // About one purchase a minute (30 s apart plus the purchase itself); the
    // long EWMA (1 h) has not fully caught up after 1.5 h, the short one has.
    let rate = 120.0 / started.elapsed().as_secs_f64();
    assert!((s.demand.short / rate - 1.0).abs() < 0.3, "{rate} {s:?}");
    assert!(s.demand.long < s.demand.short * 1.1, "{s:?}");
    assert!(s.demand.forecast >= s.demand.short, "{s:?}");
    assert!(
        s.lead.samples > 0 && s.lead.p90 >= Duration::from_secs(60),
        "{s:?}"
    );
    // D = ~1.3/min x 60 s; target = ceil(D + 2.576 sqrt(D)) >= 4.
    assert!(busy.effective_target >= 4, "{s:?}");
    assert!(s.demand_in_lead > 1.0, "{s:?}");
    assert_eq!(busy.effective_target, s.target);
}

/// The step that follows a purchase sizes the pool with it, even when the
/// purchase's event arrives while the replenisher coalesces store changes
/// (before, the event was recorded only after that step, and the pool
/// waited for the next change or timer to grow).
#[tokio::test(start_paused = true)]
async fn a_purchase_during_the_debounce_counts_in_the_step_after_it() {
    let sim = sim();
    // The third purchase is held at two cloud calls, so the instant it
    // ends is the test's to choose, not a sum of cloudsim latencies.
    let cloud = GatedCloud::new(&sim);
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            // Only store changes trigger steps within this test's horizon.
            replenish_interval: secs(600),
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), auto_spec()).await.unwrap();
    wait_ready(&manager, 1).await;
    let last_target = |s: &PoolStatus| s.sizing.last_plan.map(|p| p.target);
    let at_target = || async {
        loop {
            tokio::time::sleep(secs(1)).await;
            let status = manager.get_pool(&pool()).await.unwrap();
            if status.count(InstanceState::Ready) >= status.sizing.target
                && status.count(InstanceState::Booting) == 0
            {
                return status;
            }
        }
    };

    // A warm purchase: the held forecast is its rate, which a second
    // purchase within about 3 minutes (a boot's 90 s and then some)
    // exceeds.
    manager
        .allocate(request("o1", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    at_target().await;

    // A second purchase: its instance is claimed and replaced, then it
    // waits at its verification while nothing else happens.
    let attach = cloud.hold_next("attach_volume", At::Before);
    let purchase = tokio::spawn({
        let manager = manager.clone();
        async move {
            manager
                .allocate(request("o2", new_volume(), EmptyPoolPolicy::ColdBoot))
                .await
        }
    });
    attach.reached().await;
    let before = at_target().await;
    assert_eq!(last_target(&before), Some(before.sizing.target));
    let verify = cloud.hold_next("get_server", At::After);
    attach.release();
    verify.reached().await;

    // An operator's change starts the replenisher's debounce (1 s here);
    // the purchase ends half-way through it.
    manager
        .update_pool(&pool(), |s| s.max_ready = 40)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    verify.release();
    purchase.await.unwrap().unwrap();
    // The debounce ends 0.5 s after the purchase; the step follows it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = manager.get_pool(&pool()).await.unwrap();
    let last_demand = |s: &PoolStatus| s.sizing.last_plan.map(|p| p.demand_in_lead);
    assert!(
        after.sizing.demand_in_lead > before.sizing.demand_in_lead,
        "the purchase raises the demand the pool is sized for: {:?} -> {:?}",
        before.sizing,
        after.sizing
    );
    assert_eq!(
        (last_demand(&after), last_target(&after)),
        (Some(after.sizing.demand_in_lead), Some(after.sizing.target)),
        "the replenisher's last step: {:?}",
        after.sizing
    );
}

/// Stored estimators are outside input: nonsense (negative or infinite
/// rates, a snapshot from the future, leads older than the window) is read
/// as no demand and no lead time, never a panic or a NaN.
#[test]
fn restored_estimators_ignore_nonsense() {
    let now_wall = pool_manager::schedule::unix(1_800_000_000);
    let settings = SizingSettings {
        wall_clock_start: Some(now_wall),
        ..SizingSettings::default()
    };
    let now = Instant::now() + secs(7200);
    let key = pool();
    let mut book = SizingBook::default();
    let learned = LearnedSizing {
        saved_at: now_wall + secs(3600),
        demand_short: f64::INFINITY,
        demand_long: -3.0,
        demand_held: f64::NAN,
        held_for: Some(Duration::MAX),
        allocations: 7,
        leads: vec![
            LearnedLead {
                finished_before: Duration::MAX,
                lead: secs(60),
            },
            LearnedLead {
                finished_before: secs(4000),
                lead: secs(61),
            },
        ],
        orders: Vec::new(),
    };
    book.restore(&key, &learned, now, &settings);
    let (demand, lead, _) = book.peek(&key, now, secs(90), &settings);
    assert_eq!(demand, DemandEstimate::ZERO);
    assert_eq!(lead.source, LeadSource::Prior, "{lead:?}");
    let (demand, _) = book.estimates(&key, now + secs(1), secs(90), &settings);
    assert_eq!(demand, DemandEstimate::ZERO);
}

/// An order counted before a restart is not counted again when it is
/// asked for after it: a stop cuts the calls of purchases that waited or
/// cold-booted (counted when they found the pool empty), the start rolls
/// their orders back, and their callers retry them with the same ids. The
/// ids counted within `demand_long` are stored with the rates, dated by
/// the time since; one asked longer ago counts again, as in a book that
/// never stopped.
#[tokio::test(start_paused = true)]
async fn a_restart_remembers_the_orders_it_counted() {
    let settings = SizingSettings {
        wall_clock_start: Some(pool_manager::schedule::unix(1_800_000_000)),
        ..SizingSettings::default()
    };
    let key = pool();
    let mut book = SizingBook::default();
    let first = Instant::now();
    book.record_allocation(&key, "early", first, first, &settings);
    tokio::time::advance(secs(3000)).await;
    let asked = Instant::now();
    for i in 1..=20 {
        let order = format!("o{i}");
        book.record_allocation(&key, &order, asked, asked, &settings);
    }
    let learned = book.learned(&key, asked, &settings).unwrap();
    // As the store keeps it.
    let learned: LearnedSizing =
        serde_json::from_slice(&serde_json::to_vec(&learned).unwrap()).unwrap();

    // Down 10 minutes: "early" is then older than demand_long (1 h).
    let down = secs(600);
    tokio::time::advance(down).await;
    let now = Instant::now();
    // A new process's wall clock, read first now.
    let settings = SizingSettings {
        wall_clock_start: Some(learned.saved_at + down),
        ..settings
    };
    let mut restarted = SizingBook::default();
    restarted.restore(&key, &learned, now, &settings);
    let (before, _, _) = restarted.peek(&key, now, secs(90), &settings);
    for i in 1..=20 {
        let order = format!("o{i}");
        restarted.record_allocation(&key, &order, now, now, &settings);
    }
    let (after, _, _) = restarted.peek(&key, now, secs(90), &settings);
    assert_eq!(after.short, before.short, "{before:?} -> {after:?}");
    assert_eq!(after.long, before.long, "{before:?} -> {after:?}");

    restarted.record_allocation(&key, "early", now, now, &settings);
    let (again, _, _) = restarted.peek(&key, now, secs(90), &settings);
    assert!(again.short > after.short, "{after:?} -> {again:?}");
}

/// The stored order ids are bounded, the last asked for kept; a record
/// of a build that stored none reads as none, and none is written when
/// there is none, so that build still reads the record of a pool without
/// a recent order.
#[tokio::test(start_paused = true)]
async fn stored_orders_are_the_last_asked_for_and_optional() {
    use pool_manager::sizing::MAX_STORED_ORDERS;
    let settings = SizingSettings {
        wall_clock_start: Some(pool_manager::schedule::unix(1_800_000_000)),
        ..SizingSettings::default()
    };
    let key = pool();
    let mut book = SizingBook::default();
    for i in 0..MAX_STORED_ORDERS + 5 {
        let now = Instant::now();
        book.record_allocation(&key, &format!("o{i}"), now, now, &settings);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let learned = book.learned(&key, Instant::now(), &settings).unwrap();
    assert_eq!(learned.orders.len(), MAX_STORED_ORDERS);
    assert_eq!(learned.orders[0].request_id, "o5");
    assert_eq!(
        learned.orders.last().unwrap().request_id,
        format!("o{}", MAX_STORED_ORDERS + 4)
    );
    assert_eq!(
        learned.orders.last().unwrap().asked_before,
        Duration::from_millis(100)
    );

    let none = LearnedSizing {
        orders: Vec::new(),
        ..learned
    };
    let stored = serde_json::to_value(&none).unwrap();
    assert!(stored.get("orders").is_none(), "{stored}");
    let read: LearnedSizing = serde_json::from_value(stored).unwrap();
    assert_eq!(read, none);
}

// ---- operator windows -------------------------------------------------------

/// 2024-01-01 was a Monday; `at(day, h, m)` is that week's `day` (Monday 0) at h:m UTC.
fn at(day: u64, h: u64, m: u64) -> std::time::SystemTime {
    pool_manager::schedule::unix(1_704_067_200 + day * 86_400 + h * 3600 + m * 60)
}

/// When the replenisher must look again for a window: the next instant the
/// raised floor changes.
#[test]
fn the_next_window_change_is_the_next_open_or_close() {
    use pool_manager::schedule::{next_change, Window};
    let windows =
        |lines: &[&str]| -> Vec<Window> { lines.iter().map(|l| l.parse().unwrap()).collect() };
    let office = windows(&["Mon-Fri 09:00-18:00 min 10"]);
    assert_eq!(next_change(&office, at(0, 8, 0)), Some(at(0, 9, 0)));
    let just_before = at(0, 9, 0) - Duration::from_millis(500);
    assert_eq!(next_change(&office, just_before), Some(at(0, 9, 0)));
    assert_eq!(next_change(&office, at(0, 9, 0)), Some(at(0, 18, 0)));
    assert_eq!(next_change(&office, at(4, 18, 0)), Some(at(7, 9, 0)));
    assert_eq!(next_change(&office, at(5, 12, 0)), Some(at(7, 9, 0)));

    // Over midnight, at an offset: Friday 22:00-02:00 at UTC+02:00.
    let night = windows(&["Fri 22:00-02:00 min 4 UTC+02:00"]);
    assert_eq!(next_change(&night, at(4, 19, 0)), Some(at(4, 20, 0)));
    assert_eq!(next_change(&night, at(4, 20, 30)), Some(at(5, 0, 0)));
    assert_eq!(next_change(&night, at(5, 0, 0)), Some(at(11, 20, 0)));

    // Edges where the floor stays as it was are no change.
    assert_eq!(
        next_change(&windows(&["daily 00:00-24:00 min 3"]), at(0, 8, 0)),
        None
    );
    assert_eq!(next_change(&[], at(0, 8, 0)), None);
    let back_to_back = windows(&["Mon 00:00-24:00 min 2", "Tue 00:00-24:00 min 2"]);
    assert_eq!(next_change(&back_to_back, at(0, 12, 0)), Some(at(2, 0, 0)));
    let nested = windows(&["Mon-Fri 09:00-18:00 min 10", "Mon 10:00-11:00 min 5"]);
    assert_eq!(next_change(&nested, at(0, 9, 30)), Some(at(0, 18, 0)));
}

/// The floor a surplus retirement keeps: the highest min open at any
/// instant of a span, ends included, found from change to change.
#[test]
fn the_highest_min_within_a_span_counts_windows_opening_in_it() {
    use pool_manager::schedule::{highest_min_within, Window};
    let windows: Vec<Window> = [
        "Mon-Fri 09:00-12:00 min 10",
        "Mon-Fri 12:30-18:00 min 10",
        "Mon 12:40-12:50 min 14",
    ]
    .iter()
    .map(|l| l.parse().unwrap())
    .collect();
    let within = |from, until| highest_min_within(&windows, from, until);
    assert_eq!(within(at(0, 12, 0), at(0, 12, 15)), None);
    assert_eq!(
        within(at(0, 12, 15), at(0, 12, 30)),
        Some(10),
        "opens at the end"
    );
    assert_eq!(within(at(0, 12, 15), at(0, 12, 29)), None);
    assert_eq!(
        within(at(0, 12, 15), at(0, 13, 0)),
        Some(14),
        "past two edges"
    );
    assert_eq!(within(at(0, 11, 50), at(0, 12, 5)), Some(10), "open now");
    assert_eq!(within(at(0, 18, 0), at(1, 8, 0)), None);
    assert_eq!(
        within(at(0, 18, 0), at(1, 9, 0)),
        Some(10),
        "the next day's"
    );
    assert_eq!(highest_min_within(&[], at(0, 9, 0), at(0, 10, 0)), None);
}

#[test]
fn operator_windows_parse_and_open_on_their_days_and_hours() {
    use pool_manager::schedule::{scheduled_min, Days, ScheduleError, UtcOffset, Window};

    let office: Window = "Mon-Fri 09:00-18:00 min 10".parse().unwrap();
    assert_eq!(office.to_string(), "Mon-Fri 09:00-18:00 min 10");
    // The issue's order works too, and the table form gives the same window.
    assert_eq!(
        "09:00-18:00 Mon-Fri min 10".parse::<Window>().unwrap(),
        office
    );
    assert_eq!(
        Window::from_parts("Mon-Fri", "09:00", "18:00", 10, None).unwrap(),
        office
    );
    assert!(!office.is_open(at(0, 8, 59)));
    assert!(office.is_open(at(0, 9, 0)));
    assert!(office.is_open(at(4, 17, 59)));
    assert!(!office.is_open(at(4, 18, 0)), "the end is exclusive");
    assert!(!office.is_open(at(5, 12, 0)), "Saturday");

    // Over midnight: Friday 22:00 to Saturday 06:00.
    let night: Window = "Fri 22:00-06:00 min 3".parse().unwrap();
    assert!(night.is_open(at(4, 23, 0)));
    assert!(night.is_open(at(5, 5, 59)));
    assert!(
        !night.is_open(at(4, 5, 0)),
        "Friday morning belongs to Thursday"
    );
    assert!(!night.is_open(at(5, 22, 30)));

    // A fixed offset: 09:00 at UTC+02:00 is 07:00 UTC.
    let cet: Window = "Mon 09:00-10:00 min 4 UTC+02:00".parse().unwrap();
    assert_eq!(cet.utc_offset, "+02:00".parse::<UtcOffset>().unwrap());
    assert!(cet.is_open(at(0, 7, 30)));
    assert!(!cet.is_open(at(0, 9, 30)));
    assert_eq!(
        cet.to_string().parse::<Window>().unwrap(),
        cet,
        "round trip"
    );
    // Negative offsets move the day too: Monday 01:00 UTC is Sunday at -05:00.
    let sunday: Window = "Sun 20:00-24:00 min 1 -05:00".parse().unwrap();
    assert!(sunday.is_open(at(0, 1, 0)));

    // Day lists.
    assert_eq!("daily".parse::<Days>().unwrap(), Days::ALL);
    assert_eq!("Sat,Sun".parse::<Days>().unwrap().to_string(), "Sat-Sun");
    assert_eq!(
        "Fri-Mon".parse::<Days>().unwrap().to_string(),
        "Mon,Fri-Sun"
    );
    assert_eq!(
        "mon-wed,friday".parse::<Days>().unwrap().to_string(),
        "Mon-Wed,Fri"
    );

    // The highest min of the open windows.
    let windows = [office, night, "daily 12:00-13:00 min 12".parse().unwrap()];
    assert_eq!(scheduled_min(&windows, at(0, 8, 0)), None);
    assert_eq!(scheduled_min(&windows, at(0, 10, 0)), Some(10));
    assert_eq!(scheduled_min(&windows, at(2, 12, 30)), Some(12));
    assert_eq!(scheduled_min(&windows, at(5, 1, 0)), Some(3));

    // Errors say what was expected.
    for (bad, expect) in [
        ("Mon-Fry 09:00-18:00 min 1", "day"),
        ("Mon 9-18 min 1", "HH:MM"),
        ("Mon 09:00-25:00 min 1", "time of day"),
        ("Mon 09:00-18:00", "min"),
        ("Mon 09:00-09:00 min 1", "empty"),
        ("Mon 09:00-18:00 min 1 UTC+99", "offset"),
        // A part given twice would keep the last alone: a narrower window.
        ("Sat Sun 10:00-16:00 min 5", "the days given twice"),
        (
            "Mon-Fri 09:00-12:00 13:00-18:00 min 10",
            "the times given twice",
        ),
        ("Mon 09:00-18:00 min 5 min 10", "min given twice"),
        (
            "Mon 09:00-18:00 min 5 UTC+1 +02:00",
            "the UTC offset given twice",
        ),
    ] {
        let err: ScheduleError = bad.parse::<Window>().unwrap_err();
        assert!(err.to_string().contains(expect), "{bad}: {err}");
    }

    // Stored as the one-line form; a spec stored before windows existed loads.
    let json = serde_json::to_string(&office).unwrap();
    assert_eq!(json, "\"Mon-Fri 09:00-18:00 min 10\"");
    assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), office);
    let mut old = serde_json::to_value(spec(2)).unwrap();
    let fields = old.as_object_mut().unwrap();
    fields.remove("windows");
    fields.remove("iops_limit");
    fields.remove("volume_iops_limit");
    let loaded: pool_manager::model::PoolSpec = serde_json::from_value(old).unwrap();
    assert!(loaded.windows.is_empty() && loaded.iops_limit.is_none());

    // A window may not ask for more than max_ready.
    let mut too_many = spec(1);
    too_many.windows = vec!["daily 00:00-24:00 min 50".parse().unwrap()];
    assert_eq!(too_many.validate().unwrap_err().0, "windows");
}

/// The mistakes an operator is likely to make in a window say what to
/// write instead, rather than naming the wrong part: a time zone by name,
/// a day range with spaces, an offset with one-digit minutes.
#[test]
fn window_mistakes_are_named_for_what_they_are() {
    use pool_manager::schedule::{UtcOffset, Window};
    for (bad, expect) in [
        (
            "Mon-Fri 09:00-18:00 min 10 Europe/Berlin",
            "fixed UTC offset, like UTC+01:00",
        ),
        ("Mon-Fri 09:00-18:00 min 10 CET", "fixed UTC offset"),
        ("Mon-Fri 09:00-18:00 min 10 GMT+1", "fixed UTC offset"),
        ("Mon - Fri 09:00-18:00 min 10", "without spaces (Mon-Fri"),
        ("Mon -Fri 09:00-18:00 min 10", "without spaces (Mon-Fri"),
        ("Mon- Fri 09:00-18:00 min 10", "without spaces (Mon-Fri"),
        ("Mon 09:00-18:00 min 10 UTC+5:3", "UTC offset"),
        ("Mon 09:00-18:00 min 10 +05:3", "UTC offset"),
        ("Mon 09:00-18:00 min 10 +005:30", "UTC offset"),
    ] {
        let err = bad.parse::<Window>().unwrap_err().to_string();
        assert!(err.contains(expect), "{bad}: {err}");
    }
    let err = Window::from_parts("Mon-Fri", "09:00", "18:00", 10, Some("Europe/Berlin"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fixed UTC offset, like UTC+01:00"), "{err}");

    // Minutes take two digits, as in times of day; the offset parser
    // accepts a lowercase z, and so does the one-line form.
    assert!("UTC+5:3".parse::<UtcOffset>().is_err());
    assert_eq!("UTC+5:30".parse::<UtcOffset>().unwrap().minutes(), 330);
    assert_eq!("utc+05:03".parse::<UtcOffset>().unwrap().minutes(), 303);
    assert_eq!("Utc-1".parse::<UtcOffset>().unwrap().minutes(), -60);
    assert_eq!("+0530".parse::<UtcOffset>().unwrap().minutes(), 330);
    let zulu: Window = "Mon 09:00-18:00 min 10 z".parse().unwrap();
    assert_eq!(zulu, "Mon 09:00-18:00 min 10".parse().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_window_raises_min_ready_while_open() {
    let sim = sim();
    let mut settings = settings();
    // The manager's wall clock starts on Monday 08:50 UTC and moves with
    // the paused tokio clock.
    settings.sizing.wall_clock_start = Some(at(0, 8, 50));
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        sim.clone(),
        std::sync::Arc::new(sim.probe()),
        settings,
    );
    manager.start().await.unwrap();
    let mut office = spec(1);
    office.max_ready = 20;
    office.windows = vec!["Mon-Fri 09:00-10:00 min 6".parse().unwrap()];
    manager.create_pool(pool(), office).await.unwrap();
    wait_ready(&manager, 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(before.effective_target, 1);
    assert_eq!(before.sizing.window_min, None);
    assert_eq!(before.count(InstanceState::Ready), 1);

    // 09:00: the floor rises to 6 and the pool fills to it.
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    let open = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(open.sizing.window_min, Some(6));
    assert_eq!(open.effective_target, 6);
    wait_ready(&manager, 6).await;

    // 10:00: the window closes; the floor is min_ready again. What the
    // window booted is a surplus above the target: it stays for a cooldown
    // (15 min; purchases may take it meanwhile), then is retired down to
    // the target.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let closed = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(closed.sizing.window_min, None);
    assert_eq!(closed.effective_target, 1);
    assert_eq!(closed.count(InstanceState::Ready), 6);
    tokio::time::sleep(16 * MIN).await;
    let retired = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(retired.count(InstanceState::Ready), 1, "{retired:?}");
    manager.shutdown().await.unwrap();
}

/// GetPool's `window_min` is the floor an open window raises min_ready to;
/// a window open at or below min_ready raises nothing and is not shown.
#[tokio::test(start_paused = true)]
async fn a_window_below_min_ready_is_no_window_min() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let mut low = spec(5);
    low.max_ready = 20;
    low.paused = true;
    low.windows = vec!["daily 00:00-24:00 min 3".parse().unwrap()];
    manager.create_pool(pool(), low).await.unwrap();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.window_min, None, "{:?}", status.sizing);
    assert_eq!(status.effective_target, 5);
    manager.shutdown().await.unwrap();
}

/// The replenisher wakes when a window opens, not at its next interval
/// (up to an hour later): the floor's boots start at the window's start.
#[tokio::test(start_paused = true)]
async fn a_window_opening_wakes_the_replenisher() {
    let sim = sim();
    let mut settings = settings();
    settings.replenish_interval = Duration::from_secs(3600);
    // Friday 11:20 UTC: the interval's steps fall at 11:20, 12:20, ...
    settings.sizing.wall_clock_start = Some(at(4, 11, 20));
    let manager = PoolManager::new(temp_store(), sim.clone(), Arc::new(sim.probe()), settings);
    manager.start().await.unwrap();
    let mut idle = spec(0);
    idle.max_ready = 8;
    idle.windows = vec!["Fri 12:00-13:00 min 3".parse().unwrap()];
    manager.create_pool(pool(), idle).await.unwrap();
    let supply = |s: &PoolStatus| {
        use InstanceState::{Booting, Ready, Warming};
        [Booting, Warming, Ready]
            .map(|state| s.count(state))
            .iter()
            .sum::<u32>()
    };

    // 11:59:55: nothing to keep yet.
    tokio::time::sleep(secs(39 * 60 + 55)).await;
    let before = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(supply(&before), 0, "{before:?}");

    // 12:00:05: the window's boots are under way.
    tokio::time::sleep(secs(10)).await;
    let open = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(open.sizing.window_min, Some(3));
    assert_eq!(supply(&open), 3, "{open:?}");
    manager.shutdown().await.unwrap();
}

/// The ids of the pool's Ready instances.
async fn ready_ids(manager: &PoolManager) -> Vec<String> {
    let mut ids: Vec<String> = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state == InstanceState::Ready)
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// A manager whose wall clock reads `start` now; the returned closure
/// sleeps (paused clock) until its wall clock reads a given time.
fn manager_from(
    sim: &Arc<cloudsim::SimCloud>,
    start: std::time::SystemTime,
) -> (
    PoolManager,
    impl Fn(std::time::SystemTime) -> tokio::time::Sleep,
) {
    let mut settings = settings();
    settings.sizing.wall_clock_start = Some(start);
    let manager = PoolManager::new(temp_store(), sim.clone(), Arc::new(sim.probe()), settings);
    let t0 = Instant::now();
    let until = move |wall: std::time::SystemTime| {
        tokio::time::sleep_until(t0 + wall.duration_since(start).unwrap())
    };
    (manager, until)
}

/// A surplus is retired only if no window opening within the cooldown
/// needs it: between a morning and an afternoon window (a 30-minute gap,
/// cooldown 15 min) the pool kept its 10 until 12:15, then retired 9 and
/// booted them again at 12:30, short for a fill time as the window
/// opened. Once the afternoon window closes with no other ahead, the
/// surplus goes after a cooldown.
#[tokio::test(start_paused = true)]
async fn a_surplus_is_kept_for_a_window_opening_within_the_cooldown() {
    let sim = sim();
    let (manager, until) = manager_from(&sim, at(0, 8, 50));
    manager.start().await.unwrap();
    let mut office = spec(1);
    office.max_ready = 20;
    office.windows = vec![
        "Mon-Fri 09:00-12:00 min 10".parse().unwrap(),
        "Mon-Fri 12:30-18:00 min 10".parse().unwrap(),
    ];
    manager.create_pool(pool(), office).await.unwrap();
    until(at(0, 11, 59)).await;
    let morning = ready_ids(&manager).await;
    assert_eq!(morning.len(), 10);

    until(at(0, 12, 29)).await;
    assert_eq!(
        ready_ids(&manager).await,
        morning,
        "none retired in the gap: {:?}",
        manager.get_pool(&pool()).await.unwrap()
    );
    until(at(0, 12, 31)).await;
    assert_eq!(ready_ids(&manager).await, morning);

    // 18:00 the last window closes: the surplus goes a cooldown later.
    until(at(0, 18, 14)).await;
    assert_eq!(ready_ids(&manager).await.len(), 10);
    until(at(0, 18, 16)).await;
    assert_eq!(ready_ids(&manager).await.len(), 1);
    manager.shutdown().await.unwrap();
}

/// The same for a surplus from before: min_ready lowered from 10 to 1 at
/// 08:40, its cooldown ends at 08:55, and a window needing 10 opens at
/// 09:00. Its 9 used to go at 08:55 and boot again at 09:00.
#[tokio::test(start_paused = true)]
async fn a_surplus_whose_cooldown_ends_before_a_window_is_kept() {
    let sim = sim();
    let (manager, until) = manager_from(&sim, at(0, 8, 20));
    manager.start().await.unwrap();
    let mut office = spec(10);
    office.max_ready = 20;
    office.windows = vec!["Mon-Fri 09:00-10:00 min 10".parse().unwrap()];
    manager.create_pool(pool(), office).await.unwrap();
    until(at(0, 8, 39)).await;
    let before = ready_ids(&manager).await;
    assert_eq!(before.len(), 10);
    until(at(0, 8, 40)).await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();

    until(at(0, 8, 59)).await;
    assert_eq!(ready_ids(&manager).await, before);
    until(at(0, 9, 1)).await;
    assert_eq!(ready_ids(&manager).await, before);
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_iops_limited_pool_starts_from_the_iops_prior() {
    use pool_manager::sizing::{lead_time_prior, LeadSource};
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let mut throttled = spec(1);
    throttled.target = Target::Auto;
    throttled.paused = true; // no boot observed: the prior stands
    throttled.iops_limit = Some(6_400);
    throttled.volume_iops_limit = Some(3_000);
    manager.create_pool(pool(), throttled).await.unwrap();
    let status = manager.get_pool(&pool()).await.unwrap();
    let prior = lead_time_prior(
        pool_manager::sizing::DEFAULT_PRIOR_LEAD_TIME,
        Some(6_400),
        Some(3_000),
    );
    assert!(prior > pool_manager::sizing::DEFAULT_PRIOR_LEAD_TIME * 3);
    assert_eq!(
        (status.sizing.lead.p90, status.sizing.lead.source),
        (prior, LeadSource::Prior)
    );
}

/// A pool that sets no `iops_limit` starts from the prior stretched for
/// the disk IOPS limit its flavor's extra specs set, read from the cloud
/// by the pool's first step (before its first targets); the pool's own
/// `iops_limit` overrides it; a cloud whose policy hides extra specs
/// leaves the unthrottled prior and fails nothing.
#[tokio::test(start_paused = true)]
async fn a_pools_prior_is_stretched_for_its_flavors_iops_limit_read_from_the_cloud() {
    use pool_manager::model::{PoolKey, PoolSpec};
    use pool_manager::sizing::{lead_time_prior, IopsLimitSource, DEFAULT_PRIOR_LEAD_TIME};
    let sim = sim();
    sim.set_flavor_extra_specs(
        "db.small",
        [("quota:disk_total_iops_sec".to_owned(), "6400".to_owned())].into(),
    );
    sim.set_flavor_extra_specs(
        "db.medium",
        [("quota:disk_read_iops_sec".to_owned(), "6400".to_owned())].into(),
    );
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let quiet = PoolSpec {
        min_ready: 0,
        ..auto_spec()
    };
    manager.create_pool(pool(), quiet.clone()).await.unwrap();
    tokio::time::sleep(secs(1)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let stretched = lead_time_prior(DEFAULT_PRIOR_LEAD_TIME, Some(6_400), None);
    assert!(stretched > DEFAULT_PRIOR_LEAD_TIME * 3, "{stretched:?}");
    assert_eq!(
        (
            status.sizing.lead.p90,
            status.sizing.lead.source,
            status.sizing.prior,
            status.sizing.prior_iops_limit
        ),
        (
            stretched,
            LeadSource::Prior,
            stretched,
            Some((6_400, IopsLimitSource::CloudFlavor))
        )
    );

    // The pool's own limit overrides the flavor's.
    manager
        .update_pool(&pool(), |s| s.iops_limit = Some(50_000))
        .await
        .unwrap();
    let status = manager.get_pool(&pool()).await.unwrap();
    let own = lead_time_prior(DEFAULT_PRIOR_LEAD_TIME, Some(50_000), None);
    assert!(own < stretched, "{own:?}");
    assert_eq!(
        (status.sizing.lead.p90, status.sizing.prior_iops_limit),
        (own, Some((50_000, IopsLimitSource::Pool)))
    );

    // A policy hiding extra specs: the limit is unknown, the prior
    // unthrottled, and the pool neither failed nor degraded for it.
    sim.hide_flavor_extra_specs(true);
    let medium = PoolKey::new("db.medium", "az1");
    manager.create_pool(medium.clone(), quiet).await.unwrap();
    tokio::time::sleep(secs(1)).await;
    let status = manager.get_pool(&medium).await.unwrap();
    assert_eq!(
        (
            status.sizing.lead.p90,
            status.sizing.lead.source,
            status.sizing.prior_iops_limit
        ),
        (DEFAULT_PRIOR_LEAD_TIME, LeadSource::Prior, None)
    );
    assert!(!status.health.degraded, "{:?}", status.health);
    assert_eq!(status.record.last_error, None);
    manager.shutdown().await.unwrap();
}

/// The flavor's disk IOPS read is not awaited by the pool's step beyond a
/// short bound: a Nova that hangs on it (up to request_timeout, 30 s by
/// default) holds none of the pool's refills, which go on with the prior
/// known so far while the read finishes in the background; another pool
/// of the flavor sends no second read meanwhile, and the late answer then
/// stretches their prior.
#[tokio::test(start_paused = true)]
async fn a_hanging_flavor_iops_read_holds_no_refill() {
    use pool_manager::sizing::IopsLimitSource;
    use std::sync::atomic::{AtomicU32, Ordering};
    let sim = sim();
    sim.set_flavor_extra_specs(
        "db.small",
        [("quota:disk_total_iops_sec".to_owned(), "6400".to_owned())].into(),
    );
    let reads = Arc::new(AtomicU32::new(0));
    let counted = reads.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        if method == "flavor_disk_iops" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let read = cloud.hold_next("flavor_disk_iops", At::Before);
    manager.create_pool(pool(), spec(2)).await.unwrap();
    read.reached().await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let servers = sim.servers().len();
    let other = PoolKey::new("db.small", "az2");
    manager.create_pool(other.clone(), spec(2)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reads_held = reads.load(Ordering::SeqCst);
    read.release();
    assert!(
        servers > 0,
        "25 s after CreatePool no boot started: the step waits on the flavor's IOPS read"
    );
    // The held read is counted once past the hold.
    assert_eq!(
        reads_held, 0,
        "another read of the flavor while one is under way"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    for key in [pool(), other] {
        let status = manager.get_pool(&key).await.unwrap();
        assert_eq!(
            status.sizing.prior_iops_limit,
            Some((6_400, IopsLimitSource::CloudFlavor)),
            "{key}"
        );
    }
    manager.shutdown().await.unwrap();
}

/// A pool that sets its own `iops_limit` (which overrides the flavor's)
/// and a paused pool read no flavor limit they have no use for.
#[tokio::test(start_paused = true)]
async fn pools_that_use_no_flavor_iops_limit_do_not_read_it() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let sim = sim();
    let reads = Arc::new(AtomicU32::new(0));
    let counted = reads.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        if method == "flavor_disk_iops" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let own = pool_manager::model::PoolSpec {
        iops_limit: Some(500),
        ..spec(1)
    };
    manager.create_pool(pool(), own).await.unwrap();
    let paused = pool_manager::model::PoolSpec {
        paused: true,
        ..spec(1)
    };
    let other = PoolKey::new("db.medium", "az1");
    manager.create_pool(other, paused).await.unwrap();
    wait_ready(&manager, 1).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(reads.load(Ordering::SeqCst), 0);
    manager.shutdown().await.unwrap();
}

/// GetPool says why a pool's prior has no disk IOPS limit from its
/// flavor: not read yet (a paused pool reads none), extra specs that set
/// none (naming the keys), a cloud that will not tell, a failed read (with
/// its error), a flavor the cloud lacks; and nothing once a limit is known.
#[tokio::test(start_paused = true)]
async fn a_pools_status_says_why_its_flavors_iops_limit_is_unknown() {
    use pool_manager::model::PoolSpec;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = sim();
    let failing = Arc::new(AtomicBool::new(false));
    let fails = failing.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "flavor_disk_iops" && fails.load(Ordering::SeqCst))
            .then(|| CloudError::Transient("Nova answered 503".into()))
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let why = |status: &PoolStatus| status.sizing.prior_iops_unknown.clone();
    let quiet = PoolSpec {
        min_ready: 0,
        ..auto_spec()
    };

    let paused = PoolSpec {
        paused: true,
        ..quiet.clone()
    };
    manager.create_pool(pool(), paused).await.unwrap();
    tokio::time::sleep(secs(1)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let reason = why(&status).expect("a reason while not read");
    assert!(reason.contains("not read yet"), "{reason}");

    // Extra specs that set none.
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    tokio::time::sleep(secs(3)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.prior_iops_limit, None);
    let reason = why(&status).expect("a reason for extra specs without a limit");
    assert!(
        reason.contains("quota:disk_total_iops_sec") && reason.contains("db.small"),
        "{reason}"
    );

    // A pool's own limit needs no reason.
    manager
        .update_pool(&pool(), |s| s.iops_limit = Some(500))
        .await
        .unwrap();
    assert_eq!(why(&manager.get_pool(&pool()).await.unwrap()), None);

    // A failed first read, with its error.
    failing.store(true, Ordering::SeqCst);
    let medium = PoolKey::new("db.medium", "az1");
    manager
        .create_pool(medium.clone(), quiet.clone())
        .await
        .unwrap();
    tokio::time::sleep(secs(3)).await;
    let reason = why(&manager.get_pool(&medium).await.unwrap()).expect("a failed read's reason");
    assert!(
        reason.contains("failed") && reason.contains("Nova answered 503"),
        "{reason}"
    );

    // Read: a limit, and no reason.
    failing.store(false, Ordering::SeqCst);
    sim.set_flavor_extra_specs(
        "db.medium",
        [("quota:disk_total_iops_sec".to_owned(), "6400".to_owned())].into(),
    );
    tokio::time::sleep(secs(60)).await;
    let status = manager.get_pool(&medium).await.unwrap();
    assert_eq!(
        (
            status.sizing.prior_iops_limit.map(|(iops, _)| iops),
            why(&status)
        ),
        (Some(6_400), None)
    );

    // A cloud that will not tell says why.
    sim.hide_flavor_extra_specs(true);
    let large = PoolKey::new("db.large", "az1");
    manager
        .create_pool(large.clone(), quiet.clone())
        .await
        .unwrap();
    tokio::time::sleep(secs(3)).await;
    let reason = why(&manager.get_pool(&large).await.unwrap()).expect("a hidden limit's reason");
    assert!(reason.contains("policy hides"), "{reason}");
    sim.hide_flavor_extra_specs(false);

    // A flavor the cloud lacks, named so.
    sim.retire_flavor("db.large");
    tokio::time::sleep(secs(700)).await;
    let reason = why(&manager.get_pool(&large).await.unwrap()).expect("a retired flavor's reason");
    assert!(reason.contains("no flavor named 'db.large'"), "{reason}");
    manager.shutdown().await.unwrap();
}

/// A retired flavor's pool (its servers still running) does not read the
/// flavor's disk IOPS limit every 30 s for good (on OpenStack each read a
/// flavor-list miss: GET /flavors/detail, all pages): a flavor the cloud
/// lacks is read again as seldom as a known one's limit.
#[tokio::test(start_paused = true)]
async fn a_retired_flavors_iops_read_is_backed_off() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let sim = sim();
    let reads = Arc::new(AtomicU32::new(0));
    let counted = reads.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        if method == "flavor_disk_iops" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    sim.retire_flavor("db.small");
    tokio::time::sleep(Duration::from_secs(600)).await;
    let before = reads.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let in_an_hour = reads.load(Ordering::SeqCst) - before;
    assert!(
        in_an_hour <= 12,
        "{in_an_hour} reads of a retired flavor's IOPS limit in an hour"
    );
}

#[test]
fn sizing_settings_out_of_range_are_refused_by_name() {
    assert_eq!(SizingSettings::default().validate(), Ok(()));
    let highest = SizingSettings {
        service_level: 0.999_999,
        ..SizingSettings::default()
    };
    assert_eq!(highest.validate(), Ok(()));
    type Spoil = fn(&mut SizingSettings);
    let cases: [(Spoil, &str); 13] = [
        (|s| s.service_level = 1.0, "service_level"),
        // z_for stops at 0.999999: a higher level would be sized as that
        // one while GetPool shows the configured one.
        (
            |s| s.service_level = 0.999_999_9,
            "service_level must be at least 0.5 and at most 0.999999",
        ),
        (|s| s.service_level = 0.3, "service_level"),
        (|s| s.service_level = f64::NAN, "service_level"),
        (|s| s.lead_samples = 0, "lead_samples"),
        (|s| s.prior_lead_time = Duration::ZERO, "prior_lead_time"),
        (|s| s.demand_long = Duration::ZERO, "demand_long"),
        (
            |s| s.demand_short = Duration::from_secs(7200),
            "demand_short (2h)",
        ),
        // Upper bounds: far beyond any sensible setting, short of overflow.
        (
            |s| s.prior_lead_time = Duration::from_secs(u64::MAX / 4),
            "prior_lead_time must be at most 1day",
        ),
        (
            |s| s.lead_max_age = Duration::from_secs(8 * 86400),
            "lead_max_age must be at most 7days",
        ),
        (
            |s| {
                s.demand_short = Duration::from_secs(8 * 86400);
                s.demand_long = Duration::from_secs(8 * 86400);
            },
            "demand_short must be at most 7days",
        ),
        (
            |s| s.demand_long = Duration::from_secs(8 * 86400),
            "demand_long must be at most 7days",
        ),
        (
            |s| s.cooldown = Duration::from_secs(2 * 86400),
            "cooldown must be at most 1day",
        ),
    ];
    for (spoil, name) in cases {
        let mut settings = SizingSettings::default();
        spoil(&mut settings);
        let err = settings.validate().expect_err(name).to_string();
        assert!(err.starts_with(name), "{err}");
    }
}

/// Two pools of one AZ filling at once share its window: the replenisher
/// boots one pool reserves are gone for the other at once, so together
/// they never have more gated builds in flight than the window allows,
/// but for the one boot of its own a pool below its floor may always have
/// (`sizing::decide`): at most one per pool, two here.
#[tokio::test(start_paused = true)]
async fn pools_filling_at_once_share_their_zones_window() {
    let sim = sim();
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            gate: GateSettings {
                initial_window: 4,
                max_window: 64,
                ..ManagerSettings::default().gate
            },
            ..settings()
        },
    );
    manager.start().await.unwrap();
    let medium = pool_manager::model::PoolKey::new("db.medium", "az1");
    manager.create_pool(pool(), spec(12)).await.unwrap();
    manager.create_pool(medium.clone(), spec(12)).await.unwrap();
    let mut worst = 0i64;
    for _ in 0..1200 {
        let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
        assert_eq!(gate.decreases, 0, "the window only grew: {gate:?}");
        worst = worst.max(i64::from(gate.gated_in_flight) - gate.window.unwrap().floor() as i64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(worst <= 2, "{worst} gated builds beyond the window");
    wait_ready(&manager, 12).await;
}

/// A pool whose sustained demand keeps more builds in flight than its
/// zone's window holds the whole window: every other pool there saw no
/// room. A pool just made, below its min_ready and with no demand of its
/// own, booted nothing for as long as the busy pool's purchases lasted.
#[tokio::test(start_paused = true)]
async fn a_pool_below_its_floor_boots_while_another_keeps_the_window_full() {
    let sim = sim();
    let base = settings();
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            gate: GateSettings {
                initial_window: 2,
                max_window: 2,
                ..base.gate.clone()
            },
            // The busy pool's long-run rate is learned within minutes.
            sizing: SizingSettings {
                demand_short: secs(30),
                demand_long: secs(60),
                ..base.sizing.clone()
            },
            ..base
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), auto_spec()).await.unwrap();
    wait_ready(&manager, 1).await;
    // A purchase every 2 s, each released at once.
    let purchases = {
        let manager = manager.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let manager = manager.clone();
                tokio::spawn(async move {
                    let id = format!("busy-{i}");
                    let order = request(&id, new_volume(), EmptyPoolPolicy::ColdBoot);
                    if manager.allocate(order).await.is_ok() {
                        let _ = manager.release(&id, Some(true)).await;
                    }
                });
                tokio::time::sleep(secs(2)).await;
            }
        })
    };
    tokio::time::sleep(secs(180)).await;
    let busy = manager.get_pool(&pool()).await.unwrap().sizing;
    let sustain = busy.demand.long * busy.lead.p50.as_secs_f64();
    assert!(
        sustain > 4.0,
        "the busy pool's demand outgrows the window: {busy:?}"
    );

    let idle = pool_manager::model::PoolKey::new("db.medium", "az1");
    manager.create_pool(idle.clone(), spec(3)).await.unwrap();
    let mut ready = 0;
    for _ in 0..300 {
        tokio::time::sleep(secs(1)).await;
        ready = manager
            .get_pool(&idle)
            .await
            .unwrap()
            .count(InstanceState::Ready);
        if ready > 0 {
            break;
        }
    }
    let status = manager.get_pool(&idle).await.unwrap();
    assert!(
        ready > 0,
        "nothing Ready in 5 min: {:?} {:?}",
        status.sizing.last_plan,
        status.sizing.gate
    );
    purchases.abort();
}

/// The same for a fixed target above the floor: another pool's builds
/// fill the zone's window, and a new pool with min_ready 1 and target 3
/// reaches its floor by the floor's one boot, then booted nothing toward
/// its target for as long as the window stayed full. (The busy-pool setup
/// of the test above leaves the window gaps, between the busy pool's
/// refills, that a target of 3 also fills; here the other pool's two
/// builds hang at their create, so the window stays full.)
#[tokio::test(start_paused = true)]
async fn a_fixed_pool_below_its_target_boots_while_another_keeps_the_window_full() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let base = settings();
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            gate: GateSettings {
                initial_window: 2,
                max_window: 2,
                ..base.gate.clone()
            },
            ..base
        },
    );
    manager.start().await.unwrap();
    let held = [
        cloud.hold_next("create_server", At::Before),
        cloud.hold_next("create_server", At::Before),
    ];
    manager.create_pool(pool(), spec(2)).await.unwrap();
    for hold in &held {
        hold.reached().await;
    }
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.gated_in_flight, 2, "the window is full: {gate:?}");

    let fixed = pool_manager::model::PoolKey::new("db.medium", "az1");
    let mut spec = spec(1);
    spec.target = Target::Fixed(3);
    manager.create_pool(fixed.clone(), spec).await.unwrap();
    let mut ready = 0;
    for _ in 0..600 {
        tokio::time::sleep(secs(1)).await;
        ready = manager
            .get_pool(&fixed)
            .await
            .unwrap()
            .count(InstanceState::Ready);
        if ready >= 3 {
            break;
        }
    }
    let status = manager.get_pool(&fixed).await.unwrap();
    assert!(
        ready >= 3,
        "{ready} of 3 Ready in 10 min: {:?} {:?}",
        status.sizing.last_plan,
        status.sizing.gate
    );
    for hold in &held {
        hold.release();
    }
}

/// The plan GetPool shows says how many boots its step started. A step
/// takes its boots' tickets by its first plan, then decides again on the
/// pool as it is when it records them; a floor raised meanwhile asks for
/// more boots than it holds tickets for, and the plan said the larger
/// number (3) though one boot was started.
#[tokio::test(start_paused = true)]
async fn the_shown_plan_counts_the_boots_its_step_started() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    // The new pool's first step wants one boot, takes its ticket and looks
    // at the quota headroom: it waits there while the floor is raised.
    let headroom = cloud.hold_next("boot_headroom", At::Before);
    let create = cloud.hold_next("create_server", At::Before);
    manager.create_pool(pool(), spec(1)).await.unwrap();
    headroom.reached().await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 3)
        .await
        .unwrap();
    headroom.release();
    // The step's one boot reaches the cloud once the step is over, before
    // the next step (the floor's change wakes one) can start more.
    create.reached().await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let plan = status.sizing.last_plan.expect("the step's plan");
    assert_eq!(status.count(InstanceState::Booting), 1, "{status:?}");
    assert_eq!(plan.boots_now, 1, "{plan:?}");
    assert_eq!(plan.target, 3, "{plan:?}");
    create.release();
    // The next steps boot the rest.
    wait_ready(&manager, 3).await;
    manager.shutdown().await.unwrap();
}

/// A pool's purchases count toward its demand however busy the rest of the
/// manager is: while the pool's replenisher waits on a slow cloud call,
/// more than a broadcast buffer's worth of other pools' events go by, and
/// none of its own purchases is lost from the estimate.
#[tokio::test(start_paused = true)]
async fn purchases_count_while_the_replenisher_waits_on_the_cloud() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = PoolManager::new(
        store.clone(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    // The auto pool's first step wants a boot and asks for quota headroom
    // first: that call waits here.
    let headroom = cloud.hold_next("boot_headroom", At::Before);
    manager.create_pool(pool(), auto_spec()).await.unwrap();
    headroom.reached().await;

    let busy = pool_manager::model::PoolKey::new("db.large", "az1");
    let mut empty = spec(0);
    empty.paused = true;
    manager.create_pool(busy.clone(), empty).await.unwrap();
    let fail_fast = |id: String, pool: &pool_manager::model::PoolKey| {
        let mut r = request(&id, new_volume(), EmptyPoolPolicy::FailFast);
        r.params.pool = pool.clone();
        r
    };
    for i in 0..3 {
        let refused = manager
            .allocate(fail_fast(format!("mine-{i}"), &pool()))
            .await;
        assert!(refused.is_err(), "the auto pool is empty: {refused:?}");
    }
    for i in 0..1500 {
        let refused = manager
            .allocate(fail_fast(format!("other-{i}"), &busy))
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    headroom.release();
    tokio::time::sleep(Duration::from_secs(5)).await;
    manager.shutdown().await.unwrap();

    let learned = store.get_learned_sizing(&pool()).await.unwrap().unwrap();
    assert_eq!(learned.allocations, 3, "{learned:?}");
}

/// A boot whose create was answered 429 measures its build from the create
/// the cloud took: the Retry-After pause before it is no build time, and
/// counted in it would read to the gate as build inflation (on top of the
/// halving the 429 itself causes).
#[tokio::test(start_paused = true)]
async fn a_429_before_the_create_is_no_build_time_to_the_gate() {
    let sim = sim();
    let retry_after = Duration::from_secs(600);
    let throttled_once = std::sync::atomic::AtomicBool::new(false);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "create_server"
            && !throttled_once.swap(true, std::sync::atomic::Ordering::SeqCst))
        .then(|| CloudError::Throttled {
            retry_after: Some(retry_after),
            message: "Rate limit exceeded".into(),
            unavailable: false,
        })
    });
    let manager = started_over(&cloud, temp_store(), 1).await;
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.throttled, 1, "{gate:?}");
    let build = gate.baseline.expect("the build was observed");
    assert!(build < retry_after, "{build:?} counts the 429's pause");
}

/// A status poll answered 429 leaves the build's end somewhere in the
/// Retry-After pause: the server became ACTIVE after 25 s, but was seen so
/// only after 60 s, which would read to the gate as a build of 60 s.
#[tokio::test(start_paused = true)]
async fn a_429_on_a_status_poll_is_no_build_time_to_the_gate() {
    let sim = sim();
    let throttled_once = std::sync::atomic::AtomicBool::new(false);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "get_server" && !throttled_once.swap(true, std::sync::atomic::Ordering::SeqCst))
            .then(|| CloudError::Throttled {
                retry_after: Some(secs(60)),
                message: "Rate limit exceeded".into(),
                unavailable: false,
            })
    });
    // Two builds at once: both measure the baseline.
    let manager = started_over(&cloud, temp_store(), 2).await;
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.throttled, 1, "{gate:?}");
    let baseline = gate.baseline.expect("the other build was observed");
    assert!(baseline < secs(30), "{baseline:?} counts the 429's pause");
}

/// A settings change answers with no plan until the next step makes one
/// for the new settings: the old plan ("at target, 0 new boots" for a
/// target just raised) contradicted the answer's own target. A paused pool
/// takes no step, so its answers show that plainly.
#[tokio::test(start_paused = true)]
async fn a_settings_change_shows_no_plan_until_the_next_step_makes_one() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.last_plan.map(|p| p.target), Some(2));
    let paused = manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    assert_eq!(paused.sizing.last_plan, None);
    let changed = manager
        .update_pool(&pool(), |s| {
            s.min_ready = 4;
            s.max_ready = 8;
        })
        .await
        .unwrap();
    assert_eq!(changed.sizing.target, 4);
    assert_eq!(changed.sizing.last_plan, None);
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    tokio::time::sleep(secs(10)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.last_plan.map(|p| p.target), Some(4));
}

/// A billing system retrying one order after RESOURCE_EXHAUSTED is one
/// purchase to the demand estimate, not one per try: ten tries of an
/// order lifted the forecast tenfold.
#[tokio::test(start_paused = true)]
async fn a_retried_order_counts_once_in_the_demand() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    // Paused: nothing boots, so every try finds the pool empty.
    let mut spec = auto_spec();
    spec.paused = true;
    manager.create_pool(pool(), spec).await.unwrap();
    let try_order = |id: &'static str| {
        let manager = manager.clone();
        async move {
            let refused = manager
                .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
                .await
                .expect_err("the pool is empty");
            assert!(
                matches!(refused, pool_manager::ManagerError::ResourceExhausted(_)),
                "{refused:?}"
            );
        }
    };
    let orders_per_hour = |s: &PoolStatus| s.sizing.demand.long * 3600.0;

    for _ in 0..10 {
        try_order("order-1").await;
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        (orders_per_hour(&status) - 1.0).abs() < 0.01,
        "{:?}",
        status.sizing.demand
    );
    try_order("order-2").await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        (orders_per_hour(&status) - 2.0).abs() < 0.02,
        "another order counts: {:?}",
        status.sizing.demand
    );
}

/// A purchase that finds its pool empty counts in the demand then, not
/// when it ends: a COLD_BOOT purchase used to count only once its boot was
/// Ready (a lead time later), a WAIT one once served or timed out, so a
/// burst into an empty pool lifted the forecast one lead time late. Each
/// order still counts once: its final outcome does not count it again.
#[tokio::test(start_paused = true)]
async fn a_burst_into_an_empty_pool_counts_when_it_finds_it_empty() {
    let sim = sim();
    let store = temp_store();
    let base = settings();
    let manager = PoolManager::new(
        store.clone(),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            sizing: SizingSettings {
                prior_lead_time: secs(300),
                ..base.sizing.clone()
            },
            ..base
        },
    );
    manager.start().await.unwrap();
    let mut spec = auto_spec();
    spec.min_ready = 0;
    manager.create_pool(pool(), spec).await.unwrap();
    let purchases: Vec<_> = (0..10)
        .map(|i| {
            let order = request(
                &format!("cold-{i}"),
                new_volume(),
                EmptyPoolPolicy::ColdBoot,
            );
            spawn_allocate(&manager, order)
        })
        .collect();

    tokio::time::sleep(secs(5)).await;
    let s = manager.get_pool(&pool()).await.unwrap().sizing;
    assert!(s.lead.p90 >= secs(300), "{s:?}");
    assert!(s.demand.short > 0.0, "the burst is demand now: {s:?}");
    assert!(s.target > 0, "{s:?}");

    for purchase in purchases {
        let _ = purchase.await.unwrap();
    }
    manager.shutdown().await.unwrap();
    let learned = store.get_learned_sizing(&pool()).await.unwrap().unwrap();
    assert_eq!(learned.allocations, 10, "{learned:?}");
}

/// A server seen gone makes a purchase in line poll the limits again, not
/// the refills (which wait for their poll); a poll sent before it was
/// freed, answered after, does not count as showing it; and no re-read is
/// due while Nova waits out a throttle, in any zone.
#[test]
fn a_freed_server_is_polled_for_by_purchases_in_line_alone() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings {
        retry_after_jitter: 0.0,
        ..GateSettings::default()
    });
    g.headroom_polled("db.small", g.boots_started(), room(0), 0, t0);
    let next = t0 + DEFAULT_HEADROOM_INTERVAL;
    assert_eq!(g.purchase_poll_at("az1", "db.small", t0), next);

    // Sent before the server went, answered after.
    let sent = g.boots_started();
    g.server_freed();
    g.headroom_polled("db.small", sent, room(0), 0, t0 + secs(1));
    assert!(!g.refill_poll_due("az1", "db.small", t0 + secs(2)));
    assert_eq!(
        g.purchase_poll_at("az1", "db.small", t0 + secs(2)),
        t0 + secs(2)
    );
    // Sent after: it shows the room there is.
    g.headroom_polled("db.small", g.boots_started(), room(0), 0, t0 + secs(3));
    assert_eq!(
        g.purchase_poll_at("az1", "db.small", t0 + secs(3)),
        t0 + secs(3) + DEFAULT_HEADROOM_INTERVAL
    );

    // Throttled: neither polls before the pause is over.
    g.server_freed();
    g.throttled("az1", ThrottledCall::BOOT, Some(secs(120)), t0 + secs(4));
    assert_eq!(
        g.purchase_poll_at("az1", "db.small", t0 + secs(4)),
        t0 + secs(124)
    );
    assert!(!g.refill_poll_due("az1", "db.small", t0 + secs(100)));
    assert!(g.refill_poll_due("az1", "db.small", t0 + secs(124)));
    // Nova's pause is every zone's: the poll is Nova's too.
    assert!(!g.refill_poll_due("az2", "db.small", t0 + secs(100)));
    // Cinder's is none of the poll's.
    let cinder = ThrottledCall::new(Some(CloudService::Volume), false);
    g.throttled("az1", cinder, Some(secs(120)), t0 + secs(130));
    assert!(g.refill_poll_due("az1", "db.small", t0 + secs(131)));
}

/// A purchase that found room takes it under the gate's lock: the next
/// purchase, and the refills, find it taken until it gives it up (here its
/// boot starts, whose ticket holds it from then on).
#[test]
fn a_purchase_admitted_takes_the_room_from_purchases_and_refills() {
    let t0 = Instant::now();
    let mut g = gate(GateSettings::default());
    g.headroom_polled("db.small", g.boots_started(), room(1), 0, t0);
    assert_eq!(g.purchase_headroom("db.small", None), Some(1));
    g.purchase_admitted("db.small", true);
    assert_eq!(g.purchase_headroom("db.small", None), Some(0));
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(0));
    g.purchase_admitted("db.small", false);
    g.start("az1", "db.small", false, t0);
    assert_eq!(g.purchase_headroom("db.small", None), Some(0));
    assert_eq!(g.admission("az1", "db.small", t0).headroom, Some(0));
}

/// A Keystone 429 to the token renewal inside a refill's create
/// (the OpenStack driver notes it as a failed Identity side call and
/// returns the call's error as Throttled) is no compute 429: it does not
/// halve the zone's window, and the hold names Keystone's Retry-After.
#[tokio::test(start_paused = true)]
async fn a_keystone_429_to_a_boots_token_renewal_is_not_novas() {
    use pool_manager::cloud::{note_side_call, SideCall};
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = sim();
    let armed = Arc::new(AtomicBool::new(true));
    let fault = armed.clone();
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "create_server" && fault.swap(false, Ordering::SeqCst)).then(|| {
            let e = CloudError::Throttled {
                retry_after: None,
                message: "auth: Keystone answered 429".into(),
                unavailable: false,
            };
            note_side_call(SideCall {
                service: CloudService::Identity,
                took: secs(0),
                error: Some(e.clone()),
            });
            e
        })
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    tokio::time::sleep(secs(2)).await;
    assert!(!armed.load(Ordering::SeqCst), "a boot met the 429");
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.decreases, 0, "Nova never throttled: {gate:?}");
    // Keystone's pause: refills need tokens, so they wait it out.
    assert!(
        matches!(
            gate.hold,
            Some(Hold::Throttled {
                service: CloudService::Identity,
                ..
            })
        ),
        "shown as another service's Retry-After: {gate:?}"
    );
}
