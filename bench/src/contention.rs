//! Host contention: how fast can a pool be refilled when boots on one compute
//! host slow each other down (calibration.md: `T_alone + k*n`, a host's serialized section passes one boot per k)?
//!
//! One pool is filled from empty to `n` instances, once per fixed boot
//! concurrency (no gate), once per fixed window of builds (the gate's
//! window held at one size) and with the adaptive AIMD window: as shipped,
//! and with the pool's cap on boots in flight raised to `n`. Throughput
//! is instances per minute until the last is Ready; boot p99 is compared with
//! a lone boot's lead time. The cloud is `base_cloud` without the API rate
//! limit, so only host contention (and the pool's cap) limits the boots.
//!
//! The pool's cap (`max_concurrent_boots`, boots from request to Ready)
//! counts mysqld's start, which the window's builds do not: a window
//! below the cap can still be held back by it, so each fill records its cap.

use crate::counting::CountingCloud;
use crate::demand::{base_cloud, small};
use crate::memstore::MemStore;
use crate::replay::quantile;
use cloudsim::SimCloud;
use pool_manager::events::{BootOutcome, EventKind};
use pool_manager::gate::GateSettings;
use pool_manager::model::InstanceState;
use pool_manager::{ManagerSettings, PoolManager};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentionError {
    /// The cloud's quota would stop the fill short of its target, and the
    /// fill would wait for the rest forever.
    #[error(
        "a fill of {instances} instances is more than the simulated cloud's quota of {quota} \
         instances, so it could never finish: fill at most {quota}"
    )]
    OverQuota { instances: u32, quota: u32 },
}

/// The most instances a fill can reach: [`base_cloud`]'s quota on
/// servers, and on ports (Nova makes one for each server it boots).
pub fn max_fill() -> u32 {
    let quotas = base_cloud(0).quotas;
    u32::try_from(quotas.max_instances.min(quotas.max_ports)).unwrap_or(u32::MAX)
}

/// What limits a fill's boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// At most this many boots in flight (request to Ready), no gate: a
    /// static pool's refill, Nodepool's or an AWS warm pool's.
    Boots(u32),
    /// At most this many builds in flight (request to ACTIVE), the gate's
    /// window held fixed: what the adaptive window counts, at one size.
    Builds(u32),
    /// The gate's adaptive (AIMD) window, as shipped: the pool's cap on
    /// boots in flight at its default ([`shipped_cap`]).
    Adaptive,
    /// The adaptive window with the pool's cap raised to the fill size: not
    /// a shipped setting; it shows how much of the refill the cap holds back.
    AdaptiveRaisedCap,
}

/// The product's cap on a pool's boots in flight (request to Ready):
/// `ManagerSettings::default().max_concurrent_boots`.
pub fn shipped_cap() -> u32 {
    ManagerSettings::default().max_concurrent_boots
}

impl Limit {
    /// The pool's `max_concurrent_boots` in a fill of `instances`.
    pub fn pool_cap(self, instances: u32) -> u32 {
        match self {
            // A static pool's refill concurrency is this cap, without a gate.
            Self::Boots(n) => n,
            Self::Adaptive => shipped_cap(),
            // Raised so that the window alone limits the builds; never
            // below the shipped cap.
            Self::Builds(_) | Self::AdaptiveRaisedCap => instances.max(shipped_cap()),
        }
    }

    /// A limit chosen before the fill (the candidates for "the best fixed
    /// limit in hindsight"), not the adaptive window.
    pub fn is_fixed(self) -> bool {
        matches!(self, Self::Boots(_) | Self::Builds(_))
    }
}

#[derive(Clone, Debug)]
pub struct Fill {
    pub limit: Limit,
    pub instances: u32,
    /// The pool's `max_concurrent_boots` in this fill.
    pub pool_cap: u32,
    pub fill_time: Duration,
    /// Boot request to mysqld answering, per instance.
    pub leads: Vec<Duration>,
    /// Boot request to ACTIVE, per instance: the part the hosts serialize,
    /// which contention stretches (mysqld's start is not contended here).
    pub builds: Vec<Duration>,
    pub throttled: u64,
    /// The most boots the cloud had in flight at once (created, mysqld not
    /// yet answering): what the limit and the pool's cap let through.
    pub peak_in_flight: u32,
}

impl Fill {
    pub fn label(&self) -> String {
        match self.limit {
            Limit::Boots(1) => "fixed 1 boot".into(),
            Limit::Boots(n) => format!("fixed {n} boots"),
            Limit::Builds(n) => format!("fixed window of {n} builds"),
            Limit::Adaptive => "adaptive (AIMD) window of builds, as shipped".into(),
            Limit::AdaptiveRaisedCap => "adaptive (AIMD) window of builds, cap raised".into(),
        }
    }

    /// The pool's cap on boots in flight, against the shipped one.
    pub fn cap_note(&self) -> String {
        let shipped = shipped_cap();
        match self.pool_cap.cmp(&shipped) {
            std::cmp::Ordering::Greater => {
                format!("cap {}, above the shipped {shipped}", self.pool_cap)
            }
            // The shipped value, not the shipped setting: a fixed limit
            // runs without the gate.
            std::cmp::Ordering::Equal => format!("cap {}, the shipped value", self.pool_cap),
            std::cmp::Ordering::Less => format!("cap {}", self.pool_cap),
        }
    }

    pub fn per_minute(&self) -> f64 {
        f64::from(self.instances) / self.fill_time.as_secs_f64().max(1e-9) * 60.0
    }

    /// `None` if no boot became Ready.
    pub fn lead_p(&self, q: f64) -> Option<Duration> {
        quantile(&self.leads, q)
    }

    /// `None` if no build became ACTIVE.
    pub fn build_p(&self, q: f64) -> Option<Duration> {
        quantile(&self.builds, q)
    }
}

/// The manager of a fill of `instances` limited by `limit`.
pub fn settings(instances: u32, limit: Limit, seed: u64) -> ManagerSettings {
    ManagerSettings {
        poll_interval: Duration::from_secs(2),
        replenish_interval: Duration::from_secs(30),
        reconcile_interval: Duration::from_secs(3600),
        max_concurrent_boots: limit.pool_cap(instances),
        retry_backoff: Duration::from_millis(500),
        gate: match limit {
            Limit::Boots(_) => GateSettings::disabled(),
            Limit::Builds(n) => GateSettings {
                seed,
                initial_window: n,
                min_window: n,
                max_window: n,
                ..GateSettings::default()
            },
            Limit::Adaptive | Limit::AdaptiveRaisedCap => GateSettings {
                seed,
                ..GateSettings::default()
            },
        },
        instance_id_seed: Some(seed),
        ..ManagerSettings::default()
    }
}

/// Fills a pool of `instances`, its boots limited by `limit`; refused
/// above [`max_fill`].
pub fn fill(instances: u32, limit: Limit, seed: u64) -> Result<Fill, ContentionError> {
    let quota = max_fill();
    if instances > quota {
        return Err(ContentionError::OverQuota { instances, quota });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let mut config = base_cloud(seed);
        config.rate_limit = None;
        let sim = SimCloud::new(config);
        let cloud = Arc::new(CountingCloud::new(sim.clone()));
        let settings = settings(instances, limit, seed);
        let manager = PoolManager::new(
            Arc::new(MemStore::default()),
            cloud.clone(),
            Arc::new(sim.probe()),
            settings,
        );
        manager.start().await.expect("manager starts");
        let leads = Arc::new(Mutex::new(Vec::new()));
        {
            let mut events = manager.events();
            let leads = leads.clone();
            tokio::spawn(async move {
                while let Ok(e) = events.recv().await {
                    if let EventKind::Boot {
                        outcome: BootOutcome::Ready,
                        lead_time: Some(lead_time),
                    } = e.kind
                    {
                        leads.lock().expect("leads").push(lead_time);
                    }
                }
            });
        }
        let started = Instant::now();
        manager
            .create_pool(
                small(),
                crate::fixed_pool(instances, Duration::from_secs(3600)),
            )
            .await
            .expect("pool created");
        loop {
            let status = manager.get_pool(&small()).await.expect("pool");
            if status.count(InstanceState::Ready) >= instances {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fill_time = started.elapsed();
        let builds = sim
            .servers()
            .iter()
            .filter_map(|s| s.active_at.map(|at| at.duration_since(s.created_at)))
            .collect();
        let peak_in_flight = peak_in_flight(&sim.servers());
        let _ = manager.shutdown().await;
        let leads = leads.lock().expect("leads").clone();
        Ok(Fill {
            limit,
            instances,
            pool_cap: limit.pool_cap(instances),
            fill_time,
            leads,
            builds,
            throttled: cloud.throttled(),
            peak_in_flight,
        })
    })
}

/// The most servers between their creation and mysqld answering at once.
fn peak_in_flight(servers: &[cloudsim::SimServer]) -> u32 {
    let mut steps: Vec<(Instant, i32)> = Vec::new();
    for s in servers {
        steps.push((s.created_at, 1));
        if let Some(ready) = s.mysqld_ready_at {
            steps.push((ready, -1));
        }
    }
    // At one instant an ending boot frees its place before a new one takes it.
    steps.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in steps {
        now += step;
        peak = peak.max(now);
    }
    u32::try_from(peak).unwrap_or(0)
}

/// Boots made one at a time for [`lone`]: enough for a median that one
/// jittered boot cannot move much.
pub const LONE_BOOTS: u32 = 21;

/// A lone boot on an idle cloud: the medians, over [`LONE_BOOTS`] boots made
/// one at a time, of the lead time (boot request to Ready, timed as the
/// fills' boots are) and of the build (request to ACTIVE). One boot's
/// draw would carry its own jitter (10 % on each phase) into every ratio.
pub fn lone(seed: u64) -> (Option<Duration>, Option<Duration>) {
    match fill(LONE_BOOTS, Limit::Boots(1), seed) {
        Ok(alone) => (alone.lead_p(0.5), alone.build_p(0.5)),
        // A quota below LONE_BOOTS: nothing measured.
        Err(ContentionError::OverQuota { .. }) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> u32 {
        ManagerSettings::default().max_concurrent_boots
    }

    #[test]
    fn a_fill_above_the_quota_is_refused_rather_than_waited_for() {
        assert_eq!(max_fill(), 5000);
        assert_eq!(
            fill(5001, Limit::Adaptive, 1).err(),
            Some(ContentionError::OverQuota {
                instances: 5001,
                quota: 5000
            })
        );
    }

    #[test]
    fn the_adaptive_fill_runs_with_the_shipped_cap() {
        assert_eq!(
            settings(200, Limit::Adaptive, 1).max_concurrent_boots,
            shipped()
        );
    }

    #[test]
    fn only_the_rows_marked_so_run_above_the_shipped_cap() {
        for (limit, cap) in [
            (Limit::Boots(16), 16),
            (Limit::Boots(128), 128),
            (Limit::Builds(8), 200),
            (Limit::AdaptiveRaisedCap, 200),
            (Limit::Adaptive, shipped()),
        ] {
            assert_eq!(
                settings(200, limit, 1).max_concurrent_boots,
                cap,
                "{limit:?}"
            );
            assert_eq!(limit.pool_cap(200), cap, "{limit:?}");
        }
        // A fill smaller than the shipped cap never lowers it.
        assert_eq!(Limit::AdaptiveRaisedCap.pool_cap(10), shipped());
    }

    #[test]
    fn an_adaptive_fill_never_has_more_boots_in_flight_than_the_shipped_cap() {
        let f = fill(150, Limit::Adaptive, 1).expect("150 fit the quota");
        assert_eq!(f.leads.len(), 150, "every instance became Ready");
        assert!(
            f.peak_in_flight <= shipped(),
            "{} boots in flight at once, the shipped cap is {}",
            f.peak_in_flight,
            shipped()
        );
    }
}
