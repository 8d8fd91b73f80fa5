//! Host contention: how fast can a pool be refilled when boots on one compute
//! host slow each other down (calibration.md: `T_alone + k*n`, a host's serialized section passes one boot per k)?
//!
//! One pool is filled from empty to `n` instances, once per fixed boot
//! concurrency (no gate), once per fixed window of builds (the gate's
//! window held at one size) and once with the adaptive AIMD window. Throughput
//! is instances per minute until the last is Ready; boot p99 is compared with
//! a lone boot's lead time. The cloud is `base_cloud` without the API rate
//! limit, so only host contention limits the boots.

use crate::counting::CountingCloud;
use crate::demand::{base_cloud, small};
use crate::memstore::MemStore;
use crate::replay::quantile;
use cloudsim::SimCloud;
use pool_manager::events::{BootOutcome, EventKind};
use pool_manager::gate::GateSettings;
use pool_manager::model::{InstanceState, PoolSpec, Target};
use pool_manager::{ManagerSettings, PoolManager};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What limits a fill's boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// At most this many boots in flight (request to Ready), no gate: a
    /// static pool's refill, Nodepool's or an AWS warm pool's.
    Boots(u32),
    /// At most this many builds in flight (request to ACTIVE), the gate's
    /// window held fixed: what the adaptive window counts, at one size.
    Builds(u32),
    /// The gate's adaptive (AIMD) window.
    Adaptive,
}

#[derive(Clone, Debug)]
pub struct Fill {
    pub limit: Limit,
    pub instances: u32,
    pub fill_time: Duration,
    /// Boot request to mysqld answering, per instance.
    pub leads: Vec<Duration>,
    /// Boot request to ACTIVE, per instance: the part the hosts serialize,
    /// which contention stretches (mysqld's start is not contended here).
    pub builds: Vec<Duration>,
    pub throttled: u64,
}

impl Fill {
    pub fn label(&self) -> String {
        match self.limit {
            Limit::Boots(1) => "fixed 1 boot".into(),
            Limit::Boots(n) => format!("fixed {n} boots"),
            Limit::Builds(n) => format!("fixed window of {n} builds"),
            Limit::Adaptive => "adaptive (AIMD) window of builds".into(),
        }
    }

    pub fn per_minute(&self) -> f64 {
        f64::from(self.instances) / self.fill_time.as_secs_f64().max(1e-9) * 60.0
    }

    pub fn lead_p(&self, q: f64) -> Duration {
        quantile(&self.leads, q)
    }

    pub fn build_p(&self, q: f64) -> Duration {
        quantile(&self.builds, q)
    }
}

/// Fills a pool of `instances`, its boots limited by `limit`.
pub fn fill(instances: u32, limit: Limit, seed: u64) -> Fill {
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
        let settings = ManagerSettings {
            poll_interval: Duration::from_secs(2),
            replenish_interval: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(3600),
            max_concurrent_boots: match limit {
                Limit::Boots(n) => n,
                Limit::Builds(_) | Limit::Adaptive => instances,
            },
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
                Limit::Adaptive => GateSettings {
                    seed,
                    ..GateSettings::default()
                },
            },
            instance_id_seed: Some(seed),
            ..ManagerSettings::default()
        };
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
                PoolSpec {
                    min_ready: instances,
                    max_ready: instances,
                    target: Target::Fixed(instances),
                    image: "mysql-8.0".into(),
                    boot_timeout: Duration::from_secs(3600),
                    max_age: None,
                    paused: false,
                    windows: Vec::new(),
                    iops_limit: None,
                    volume_iops_limit: None,
                },
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
        let _ = manager.shutdown().await;
        let leads = leads.lock().expect("leads").clone();
        Fill {
            limit,
            instances,
            fill_time,
            leads,
            builds,
            throttled: cloud.throttled(),
        }
    })
}

/// Boots made one at a time for [`lone`]: enough for a median that one
/// jittered boot cannot move much.
pub const LONE_BOOTS: u32 = 21;

/// A lone boot on an idle cloud: the medians, over [`LONE_BOOTS`] boots made
/// one at a time, of the lead time (boot request to Ready, timed as the
/// fills' boots are) and of the build (request to ACTIVE). One boot's
/// draw would carry its own jitter (10 % on each phase) into every ratio.
pub fn lone(seed: u64) -> (Duration, Duration) {
    let alone = fill(LONE_BOOTS, Limit::Boots(1), seed);
    (alone.lead_p(0.5), alone.build_p(0.5))
}
