//! Replays one scenario against one policy: a pool manager over the
//! in-process cloudsim (listeners off, `SimProbe`), an in-memory store, on a
//! current-thread tokio runtime whose clock is paused, so simulated time
//! jumps ahead whenever every task waits.

use crate::counting::CountingCloud;
use crate::demand::{CloudEvent, Scenario};
use crate::memstore::MemStore;
use cloudsim::SimCloud;
use pool_manager::events::{AllocationOutcome, BootOutcome, Event, EventKind};
use pool_manager::gate::GateSettings;
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, InstanceState, NetworkRequest, PoolKey, PoolSpec, Target,
    VolumeRequest, VolumeSource,
};
use pool_manager::sizing::SizingSettings;
use pool_manager::{failure_outcome, AllocateRequest, ManagerError, ManagerSettings, PoolManager};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How pools are sized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Nodepool's min-ready / an AWS warm pool's MinSize: every pool keeps
    /// `n` (ready + booting), refilled as instances are taken.
    Static(u32),
    /// Static, with a size per pool (a static sizing chosen in hindsight).
    StaticPerPool(BTreeMap<PoolKey, u32>),
    /// Starts with `n` per pool and boots exactly one instance for every
    /// purchase, warm or cold (a purchase that finds the pool empty grows it
    /// by one, at that moment).
    ReplaceOnConsume(u32),
    /// warmpool: `target = auto` and the throttle gate.
    Auto,
}

impl Policy {
    pub fn name(&self) -> String {
        match self {
            Self::Static(n) => format!("static {n}"),
            Self::StaticPerPool(sizes) => format!(
                "static hindsight ({})",
                sizes
                    .iter()
                    .map(|(k, n)| format!("{}={n}", k.flavor.trim_start_matches("db.")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Self::ReplaceOnConsume(n) => format!("replace-on-consume {n}"),
            Self::Auto => "warmpool auto".into(),
        }
    }

    fn spec(&self, pool: &PoolKey) -> PoolSpec {
        let fixed = |n: u32| crate::fixed_pool(n, Duration::from_secs(30 * 60));
        match self {
            Self::Static(n) | Self::ReplaceOnConsume(n) => fixed(*n),
            Self::StaticPerPool(sizes) => fixed(sizes.get(pool).copied().unwrap_or(0)),
            Self::Auto => PoolSpec {
                min_ready: AUTO_MIN_READY,
                max_ready: 500,
                target: Target::Auto,
                ..fixed(1)
            },
        }
    }
}

/// The floor of every auto pool in the benchmark.
pub const AUTO_MIN_READY: u32 = 1;

/// The manager's pacing in the benchmark: as a real deployment (servers
/// polled every 2 s, each pool looked at every 5 s), except the reconciler
/// runs hourly (it has nothing to repair here, and every minute it would
/// double the time of the busiest replays). Static policies run without
/// the throttle gate.
pub fn settings(policy: &Policy, options: &Options) -> ManagerSettings {
    let seed = options.seed;
    ManagerSettings {
        sizing: options.sizing.clone(),
        poll_interval: ManagerSettings::default().poll_interval,
        replenish_interval: ManagerSettings::default().replenish_interval,
        reconcile_interval: Duration::from_secs(3600),
        max_concurrent_boots: ManagerSettings::default().max_concurrent_boots,
        retry_backoff: Duration::from_millis(500),
        gate: if *policy == Policy::Auto {
            GateSettings {
                seed,
                ..GateSettings::default()
            }
        } else {
            GateSettings::disabled()
        },
        // Replays never forget a released allocation (the default).
        keep_released: None,
        instance_id_seed: Some(seed),
        // A replay's cloud and store start empty together.
        delete_unknown_servers: false,
        // A replay's store serves its one cloud.
        adopt_cloud: false,
    }
}

/// What every replay of one benchmark run shares.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of every random choice (arrivals, holding times, jitter).
    pub seed: u64,
    /// Sizing of `target = auto` pools (the library defaults unless a
    /// sensitivity sweep overrides them).
    pub sizing: SizingSettings,
    /// The start of each replay that is not measured: purchases arriving
    /// before it, and pool VM-hours, boots and API calls until it, count for
    /// no policy. Demand still flows, so auto pools start the measured part
    /// with the history a running service would have.
    pub burn_in: Duration,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            sizing: SizingSettings::default(),
            burn_in: Duration::ZERO,
        }
    }
}

/// One point of the timeline (summed over the scenario's pools).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub hours: f64,
    pub ready: u32,
    /// Ready + warming + booting (unclaimed).
    pub supply: u32,
    pub target: u32,
}

#[derive(Clone, Debug, Default)]
pub struct PoolOutcome {
    pub purchases: u64,
    pub warm: u64,
    /// Purchases that failed, `exhausted` among them.
    pub failed: u64,
    pub exhausted: u64,
    /// Hours x Ready instances waiting in this pool.
    pub idle_vm_hours: f64,
}

impl PoolOutcome {
    /// The purchases warmpoold's hit rate counts: see [`RunResult::rated`].
    pub fn rated(&self) -> u64 {
        self.purchases - self.failed + self.exhausted
    }

    /// Warm hits / [`Self::rated`]; `None` without a purchase rated,
    /// which says nothing of the sizing either way.
    pub fn hit_rate(&self) -> Option<f64> {
        hit_rate(self.warm, self.rated())
    }
}

fn hit_rate(warm: u64, rated: u64) -> Option<f64> {
    (rated > 0).then(|| warm as f64 / rated as f64)
}

/// What one replay measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub scenario: String,
    pub policy: Policy,
    /// Measured Allocate calls, failed ones included.
    pub purchases: u64,
    pub warm: u64,
    /// Purchases that failed, `exhausted` among them.
    pub failed: u64,
    /// Failed for want of an instance (`AllocationOutcome::Exhausted`):
    /// the pool's misses, in its hit rate.
    pub exhausted: u64,
    /// Time to ready of every purchase that got an instance: a failed one
    /// never became ready (a quick refusal is no fast service).
    pub ttr: Vec<Duration>,
    /// Hours x Ready instances waiting in pools.
    pub idle_vm_hours: f64,
    /// Hours x unclaimed instances (ready + warming + booting).
    pub pool_vm_hours: f64,
    pub boots: u64,
    pub api_calls: u64,
    pub throttled: u64,
    pub per_pool: BTreeMap<PoolKey, PoolOutcome>,
    /// Every measured purchase, in the order they were answered: what a
    /// hit rate over part of the replay (a throttled window) is made of.
    pub bought: Vec<Bought>,
    /// Lead times of boots that reached Ready.
    pub leads: Vec<Duration>,
    pub timeline: Vec<Sample>,
    pub simulated: Duration,
    pub wall: std::time::Duration,
}

/// One measured purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bought {
    /// Its arrival, from the start of the replay (the scenario's clock).
    pub at: Duration,
    pub warm: bool,
    /// Counted in the hit rate: served (warm or not), or exhausted.
    pub rated: bool,
}

impl RunResult {
    /// The purchases warmpoold's hit rate counts (warm, cold, waited and
    /// exhausted ones): a purchase that failed for another reason (a
    /// volume in use, the cloud unavailable) is no miss of the pool's depth.
    pub fn rated(&self) -> u64 {
        self.purchases - self.failed + self.exhausted
    }

    /// Warm hits / [`Self::rated`], warmpoold's own hit rate; `None`
    /// without a purchase rated.
    pub fn hit_rate(&self) -> Option<f64> {
        hit_rate(self.warm, self.rated())
    }

    /// (warm hits, purchases rated) of the purchases arriving in `[from, to)`.
    pub fn hits_between(&self, from: Duration, to: Duration) -> (u64, u64) {
        self.bought
            .iter()
            .filter(|b| b.rated && b.at >= from && b.at < to)
            .fold((0, 0), |(warm, all), b| (warm + u64::from(b.warm), all + 1))
    }

    pub fn ttr_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.ttr, q)
    }

    /// A replay of `scenario` under `policy` that has measured nothing yet.
    fn empty(scenario: &Scenario, policy: &Policy) -> Self {
        RunResult {
            scenario: scenario.name.clone(),
            policy: policy.clone(),
            purchases: 0,
            warm: 0,
            failed: 0,
            exhausted: 0,
            ttr: Vec::new(),
            idle_vm_hours: 0.0,
            pool_vm_hours: 0.0,
            boots: 0,
            api_calls: 0,
            throttled: 0,
            per_pool: scenario
                .pools
                .iter()
                .map(|p| (p.clone(), PoolOutcome::default()))
                .collect(),
            bought: Vec::new(),
            leads: Vec::new(),
            timeline: Vec::new(),
            simulated: Duration::ZERO,
            wall: std::time::Duration::ZERO,
        }
    }

    /// Counts one answered purchase, if it was measured; hands back why
    /// it failed, if it did.
    fn tally(&mut self, p: Purchase) -> Result<(), ManagerError> {
        if !p.measured {
            return Ok(());
        }
        self.purchases += 1;
        let pool = self.per_pool.entry(p.pool).or_default();
        pool.purchases += 1;
        let exhausted = p
            .outcome
            .as_ref()
            .is_err_and(|e| failure_outcome(e) == AllocationOutcome::Exhausted);
        self.bought.push(Bought {
            at: p.at,
            warm: matches!(p.outcome, Ok((true, _))),
            rated: p.outcome.is_ok() || exhausted,
        });
        match p.outcome {
            Ok((warm, ttr)) => {
                self.ttr.push(ttr);
                if warm {
                    self.warm += 1;
                    pool.warm += 1;
                }
                Ok(())
            }
            Err(e) => {
                self.failed += 1;
                pool.failed += 1;
                if exhausted {
                    self.exhausted += 1;
                    pool.exhausted += 1;
                }
                Err(e)
            }
        }
    }
}

/// Nearest-rank quantile; `None` for an empty set (no time measured is
/// not a time of zero).
pub fn quantile<T: Ord + Copy>(values: &[T], q: f64) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// Longest a pool may take to fill before the replay starts.
const WARM_UP: Duration = Duration::from_secs(30 * 60);

/// Replays `scenario` under `policy`. Builds its own paused-clock runtime.
pub fn run(scenario: &Scenario, policy: &Policy, options: &Options) -> RunResult {
    let wall = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let mut result = runtime.block_on(replay(scenario, policy, options));
    result.wall = wall.elapsed();
    result
}

struct Purchase {
    pool: PoolKey,
    /// Its arrival, from the start of the replay.
    at: Duration,
    /// Arrived after the burn-in.
    measured: bool,
    /// Warm or not, and the time to its answer; or why it failed.
    outcome: Result<(bool, Duration), ManagerError>,
}

pub(crate) fn request(id: String, pool: PoolKey) -> AllocateRequest {
    AllocateRequest {
        params: AllocationParams {
            request_id: id.clone(),
            tenant_project_id: "tenant".into(),
            pool,
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 20,
                    volume_type: None,
                },
                delete_on_release: true,
            },
            network: NetworkRequest {
                network_id: "tenant-net".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: BTreeMap::new(),
        },
        empty_pool: EmptyPoolPolicy::ColdBoot,
        timeout: Some(Duration::from_secs(60 * 60)),
    }
}

/// How long a purchase holds its instance before releasing it (to stay in
/// quota): exponential, mean 30 min, at least 5 min; seeded per purchase.
/// Held instances are not pool supply, so this does not change the sizing.
fn holding_time(seed: u64, index: usize) -> Duration {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    Duration::from_secs_f64((-u.ln() * 1800.0).max(300.0))
}

async fn replay(scenario: &Scenario, policy: &Policy, options: &Options) -> RunResult {
    let seed = options.seed;
    let mut sim_config = scenario.sim.clone();
    sim_config.seed = seed;
    let sim = SimCloud::new(sim_config);
    let cloud = Arc::new(CountingCloud::new(sim.clone()));
    let manager = PoolManager::new(
        Arc::new(MemStore::default()),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(policy, options),
    );
    manager.start().await.expect("manager starts");
    for pool in &scenario.pools {
        manager
            .create_pool(pool.clone(), policy.spec(pool))
            .await
            .expect("pool created");
    }

    // Warm-up: every pool reaches its initial target (or 30 min pass).
    let warm_up_end = Instant::now() + WARM_UP;
    while Instant::now() < warm_up_end {
        let pools = manager.list_pools().await.expect("pools");
        if pools
            .iter()
            .all(|p| p.count(InstanceState::Ready) >= p.effective_target)
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }

    let t0 = Instant::now();
    let measured_from = t0 + options.burn_in;
    sim.reset_call_counts();
    // Cloud counters when the measured part starts: (API calls, 429s, boots).
    let at_burn_in = Arc::new(Mutex::new((
        0u64,
        cloud.throttled(),
        cloud.servers_created(),
    )));
    if !options.burn_in.is_zero() {
        let (sim, cloud, at_burn_in) = (sim.clone(), cloud.clone(), at_burn_in.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(measured_from).await;
            let calls = sim.call_counts().values().sum();
            *at_burn_in.lock().expect("counters") =
                (calls, cloud.throttled(), cloud.servers_created());
        });
    }

    // Lead times of boots, from the events broadcast.
    let leads = Arc::new(Mutex::new(Vec::new()));
    {
        let mut events = manager.events();
        let leads = leads.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let EventKind::Boot {
                            outcome: BootOutcome::Ready,
                            lead_time: Some(lead_time),
                        } = e.kind
                        {
                            if Instant::now() >= measured_from {
                                leads.lock().expect("leads").push(lead_time);
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }

    // The timeline, and VM-hours integrated per sample (per pool too).
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let idle_by_pool = Arc::new(Mutex::new(BTreeMap::<PoolKey, f64>::new()));
    let sampler = {
        let manager = manager.clone();
        let samples = samples.clone();
        let idle_by_pool = idle_by_pool.clone();
        let dt = SAMPLE_EVERY.as_secs_f64() / 3600.0;
        tokio::spawn(async move {
            loop {
                let instances = manager.list_instances(None).await.expect("instances");
                let pools = manager.list_pools().await.expect("pools");
                let mut s = Sample {
                    hours: t0.elapsed().as_secs_f64() / 3600.0,
                    ..Sample::default()
                };
                let measured = Instant::now() >= measured_from;
                for i in instances.iter().filter(|i| i.counts_as_supply()) {
                    s.supply += 1;
                    if i.state == InstanceState::Ready {
                        s.ready += 1;
                        if measured {
                            *idle_by_pool
                                .lock()
                                .expect("idle by pool")
                                .entry(i.pool.clone())
                                .or_default() += dt;
                        }
                    }
                }
                s.target = pools.iter().map(|p| p.effective_target).sum();
                samples.lock().expect("samples").push(s);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };

    // What happens to the cloud.
    for (at, event) in scenario.events.clone() {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(t0 + at).await;
            match event {
                CloudEvent::IopsThrottled(on) => sim.faults().set_iops_throttled(on),
            }
        });
    }

    // Replace-on-consume grows a pool by one at each miss, when the
    // purchase finds it empty (its `Exhausted` event), as an operator's
    // rule reacting to a miss would; not when the purchase's cold boot has
    // answered, a lead time later.
    if matches!(policy, Policy::ReplaceOnConsume(_)) {
        let mut events = manager.events();
        let manager = manager.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event {
                        pool: Some(pool),
                        kind: EventKind::Exhausted,
                        ..
                    }) => {
                        let _ = manager
                            .update_pool(&pool, |s| {
                                if let Target::Fixed(n) = s.target {
                                    s.target = Target::Fixed(n + 1);
                                    s.min_ready = n + 1;
                                    s.max_ready = s.max_ready.max(n + 1);
                                }
                            })
                            .await;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        eprintln!("replace-on-consume fell behind the events: {missed} missed, some misses did not grow a pool");
                    }
                    Err(_) => return,
                }
            }
        });
    }

    // The purchases.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Purchase>();
    for (index, arrival) in scenario.arrivals.iter().enumerate() {
        tokio::time::sleep_until(t0 + arrival.at).await;
        let manager = manager.clone();
        let done = done_tx.clone();
        let pool = arrival.pool.clone();
        let at = arrival.at;
        let measured = at >= options.burn_in;
        tokio::spawn(async move {
            let id = format!("p{index}");
            let started = Instant::now();
            let outcome = manager.allocate(request(id.clone(), pool.clone())).await;
            let ttr = started.elapsed();
            let sold = outcome.is_ok();
            let _ = done.send(Purchase {
                pool,
                at,
                measured,
                outcome: outcome.map(|a| (a.warm_hit, ttr)),
            });
            if sold {
                tokio::time::sleep(holding_time(seed, index)).await;
                let _ = manager.release(&id, None).await;
            }
        });
    }
    drop(done_tx);

    let mut result = RunResult::empty(scenario, policy);
    let mut seen = 0;
    while seen < scenario.arrivals.len() {
        let Some(p) = done_rx.recv().await else { break };
        seen += 1;
        if let Err(e) = result.tally(p) {
            if result.failed <= 3 {
                eprintln!(
                    "{} / {}: purchase failed: {e}",
                    scenario.name,
                    policy.name()
                );
            }
        }
    }
    tokio::time::sleep_until(t0 + scenario.duration).await;
    sampler.abort();

    result.simulated = t0.elapsed();
    let (calls_before, throttled_before, servers_before) = *at_burn_in.lock().expect("counters");
    result.boots = cloud.servers_created() - servers_before;
    result.api_calls = sim.call_counts().values().sum::<u64>() - calls_before;
    result.throttled = cloud.throttled() - throttled_before;
    result.leads = leads.lock().expect("leads").clone();
    let timeline = samples.lock().expect("samples").clone();
    let dt = SAMPLE_EVERY.as_secs_f64() / 3600.0;
    let burn_in_hours = options.burn_in.as_secs_f64() / 3600.0;
    let measured = || timeline.iter().filter(|s| s.hours >= burn_in_hours);
    result.idle_vm_hours = measured().map(|s| f64::from(s.ready) * dt).sum();
    result.pool_vm_hours = measured().map(|s| f64::from(s.supply) * dt).sum();
    for (pool, idle) in idle_by_pool.lock().expect("idle by pool").iter() {
        result
            .per_pool
            .entry(pool.clone())
            .or_default()
            .idle_vm_hours = *idle;
    }
    result.timeline = timeline;
    let _ = manager.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{base_cloud, poisson, small, sorted, Arrival};
    use pool_manager::cloud::CloudError;

    fn hourly_scenario() -> Scenario {
        Scenario {
            name: "test".into(),
            description: "6 purchases, 10 minutes apart".into(),
            arrivals: (0..6)
                .map(|i| Arrival {
                    at: Duration::from_secs(600 * i),
                    pool: small(),
                })
                .collect(),
            duration: Duration::from_secs(3600),
            pools: vec![small()],
            sim: base_cloud(1),
            events: Vec::new(),
            intensity: None,
        }
    }

    /// Three pools, each with Poisson purchases averaging one every 3 min,
    /// for 2 hours: pools often step at the same instant.
    fn three_pool_scenario() -> Scenario {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pools: Vec<PoolKey> = ["db.small", "db.medium", "db.large"]
            .into_iter()
            .map(|flavor| PoolKey::new(flavor, crate::demand::AZ))
            .collect();
        let span = 2.0 * 3600.0;
        let rate = 1.0 / 180.0;
        let arrivals = pools
            .iter()
            .flat_map(|pool| poisson(&mut rng, span, rate, |_| rate, pool))
            .collect();
        Scenario {
            name: "test".into(),
            description: "3 pools, 20/h each, 2 h".into(),
            arrivals: sorted(arrivals),
            duration: Duration::from_secs_f64(span),
            pools,
            sim: base_cloud(1),
            events: Vec::new(),
            intensity: None,
        }
    }

    /// Everything a replay measures, wall time aside.
    fn measured(run: &RunResult) -> String {
        format!(
            "{} {} {:?} {} {} {} {} {} {:?} {:?} {:?} {:?}",
            run.purchases,
            run.warm,
            run.ttr,
            run.idle_vm_hours,
            run.pool_vm_hours,
            run.boots,
            run.api_calls,
            run.throttled,
            run.per_pool,
            run.bought,
            run.leads,
            run.timeline
        )
    }

    #[test]
    fn the_hit_rate_is_warmpoolds_and_other_failures_stay_outside_it() {
        let scenario = hourly_scenario();
        let mut r = RunResult::empty(&scenario, &Policy::Auto);
        let purchase = |minute: u64, outcome| Purchase {
            pool: small(),
            at: Duration::from_secs(60 * minute),
            measured: true,
            outcome,
        };
        let secs = Duration::from_secs;
        for p in [
            purchase(0, Ok((true, secs(6)))),
            purchase(1, Ok((false, secs(95)))),
            // No instance by the deadline: the pool's miss.
            purchase(2, Err(ManagerError::ResourceExhausted("none left".into()))),
            // Neither a want of an instance nor a purchase served: warmpoold
            // counts these outside the hit rate.
            purchase(
                3,
                Err(ManagerError::FailedPrecondition("volume in use".into())),
            ),
            purchase(
                4,
                Err(ManagerError::Cloud(CloudError::Transient("503".into()))),
            ),
        ] {
            let _ = r.tally(p);
        }
        assert_eq!((r.purchases, r.warm, r.failed), (5, 1, 3));
        // warm / (warm + cold + waited + exhausted)
        assert_eq!(r.hit_rate(), Some(1.0 / 3.0));
        assert_eq!(r.per_pool[&small()].hit_rate(), Some(1.0 / 3.0));
        assert_eq!(r.hits_between(Duration::ZERO, secs(3600)), (1, 3));
        // Time to ready is of the purchases that got an instance.
        assert_eq!(r.ttr, [secs(6), secs(95)]);
        let table = crate::report::results_table(&[r]);
        assert!(
            table.contains("| 5 (3 failed, 1 of them exhausted) | 33.33 % | 6.0 s | 95.0 s |"),
            "{table}"
        );
    }

    #[test]
    fn a_replay_of_several_auto_pools_repeats_itself_exactly() {
        let scenario = three_pool_scenario();
        let first = run(&scenario, &Policy::Auto, &Options::new(1));
        assert!(first.purchases > 100, "{} purchases", first.purchases);
        assert!(first.boots > first.purchases / 2, "{} boots", first.boots);
        let again = run(&scenario, &Policy::Auto, &Options::new(1));
        assert_eq!(measured(&first), measured(&again));
    }

    #[test]
    fn burn_in_leaves_the_start_unmeasured_for_purchases_vm_hours_and_boots() {
        let scenario = hourly_scenario();
        let policy = Policy::Static(2);
        let all = run(&scenario, &policy, &Options::new(1));
        assert_eq!(all.purchases, 6);
        assert_eq!(all.warm, 6);
        assert_eq!(all.boots, 6, "one refill per purchase");

        let mut options = Options::new(1);
        options.burn_in = Duration::from_secs(30 * 60);
        let later = run(&scenario, &policy, &options);
        assert_eq!(
            all.hits_between(Duration::ZERO, Duration::from_secs(1200)),
            (2, 2),
            "arrivals at 0 and 10 min"
        );
        assert_eq!(later.purchases, 3, "arrivals at 30, 40 and 50 min");
        let arrived: Vec<Duration> = later.bought.iter().map(|b| b.at).collect();
        assert_eq!(arrived, [1800, 2400, 3000].map(Duration::from_secs));
        assert_eq!(later.boots, 3);
        assert!(
            later.idle_vm_hours < all.idle_vm_hours * 0.6,
            "{} vs {}",
            later.idle_vm_hours,
            all.idle_vm_hours
        );
        assert!(later.api_calls < all.api_calls);
        // The pool's own idle VM-hours are the run's (one pool), burn-in or not.
        for run in [&all, &later] {
            let pool = &run.per_pool[&small()];
            assert!(
                (pool.idle_vm_hours - run.idle_vm_hours).abs() < 1e-9 && pool.idle_vm_hours > 0.0,
                "{} vs {}",
                pool.idle_vm_hours,
                run.idle_vm_hours
            );
        }
    }
}
