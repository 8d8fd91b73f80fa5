//! What the sizing estimators learned survives a restart: an auto pool keeps
//! its demand forecast and lead times instead of falling back to `min_ready`
//! and the prior, and what is restored ages by the time the manager was down.

mod common;

use common::*;
use pool_manager::cloud::CloudIdentity;
use pool_manager::model::{EmptyPoolPolicy, InstanceState, PoolSpec};
use pool_manager::schedule::unix;
use pool_manager::sizing::{LeadSource, SizingStatus};
use pool_manager::store::Store;
use pool_manager::PoolManager;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const START: u64 = 1_800_000_000;

/// A manager whose wall clock reads `wall` now.
fn manager_at(
    sim: &Arc<cloudsim::SimCloud>,
    store: Arc<dyn Store>,
    wall: SystemTime,
) -> PoolManager {
    let mut settings = settings();
    settings.sizing.wall_clock_start = Some(wall);
    PoolManager::new(store, sim.clone(), Arc::new(sim.probe()), settings)
}

async fn sizing(manager: &PoolManager) -> (u32, SizingStatus) {
    let status = manager.get_pool(&pool()).await.unwrap();
    (status.effective_target, status.sizing)
}

/// An auto pool that has seen a purchase every 30 s for `purchases` x 30 s.
/// Returns the manager, and its wall clock's reading at `Instant` zero.
async fn busy_auto_pool(
    sim: &Arc<cloudsim::SimCloud>,
    store: Arc<dyn Store>,
    purchases: usize,
) -> (PoolManager, Instant) {
    busy_pool(sim, store, auto_spec(), purchases).await
}

/// As [`busy_auto_pool`], with the pool's spec given.
async fn busy_pool(
    sim: &Arc<cloudsim::SimCloud>,
    store: Arc<dyn Store>,
    spec: PoolSpec,
    purchases: usize,
) -> (PoolManager, Instant) {
    let anchored = Instant::now();
    let manager = manager_at(sim, store, unix(START));
    manager.start().await.unwrap();
    let min_ready = spec.min_ready;
    manager.create_pool(pool(), spec).await.unwrap();
    wait_ready(&manager, min_ready).await;
    purchases_every(&manager, purchases, Duration::from_secs(30)).await;
    (manager, anchored)
}

/// Restarts on the same store after `down` of wall-clock time, and lets the
/// replenisher take its first step.
async fn restart_after(
    manager: PoolManager,
    anchored: Instant,
    sim: &Arc<cloudsim::SimCloud>,
    dir: &std::path::Path,
    down: Duration,
) -> PoolManager {
    manager.shutdown().await.unwrap();
    drop(manager);
    let wall = unix(START) + anchored.elapsed() + down;
    let manager = manager_at(sim, open_store(dir), wall);
    manager.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    manager
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_demand_forecast_and_lead_times() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let (target, before) = sizing(&manager).await;
    // Enough boots for p90 to be observed, not held at the prior.
    assert!(before.lead.samples >= 3, "{before:?}");
    assert!(
        target >= 3,
        "a purchase every 30 s lifts the target: {before:?}"
    );

    let down = Duration::from_secs(120);
    let manager = restart_after(manager, anchored, &sim, dir.path(), down).await;
    let (target_after, after) = sizing(&manager).await;

    assert_eq!(after.lead.source, LeadSource::Observed, "{after:?}");
    assert_eq!(after.lead.samples, before.lead.samples, "{after:?}");
    assert_eq!(after.lead.p90, before.lead.p90, "{after:?}");
    // The long EWMA (1 h) decays by exp(-2 min / 1 h) over the outage, the
    // short one (5 min) by exp(-2/5).
    let long = before.demand.long * (-down.as_secs_f64() / 3600.0).exp();
    assert!(
        (after.demand.long / long - 1.0).abs() < 0.05,
        "{before:?} {after:?}"
    );
    let short = before.demand.short * (-down.as_secs_f64() / 300.0).exp();
    assert!(
        (after.demand.short / short - 1.0).abs() < 0.05,
        "{before:?} {after:?}"
    );
    // Within its cooldown the held forecast still holds (to the last digit
    // JSON keeps: serde_json may parse a float one ulp off).
    assert!(
        (after.demand.forecast / before.demand.forecast - 1.0).abs() < 1e-12,
        "{before:?} {after:?}"
    );
    assert_eq!(target_after, target, "{after:?}");
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_a_long_outage_the_pool_starts_over() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let down = Duration::from_secs(2 * 24 * 3600);
    let manager = restart_after(manager, anchored, &sim, dir.path(), down).await;
    let (target, after) = sizing(&manager).await;

    // Lead times are older than the window (1 h), demand has decayed away.
    assert_eq!(after.lead.source, LeadSource::Prior, "{after:?}");
    assert!(after.demand.forecast < 1e-9, "{after:?}");
    assert_eq!(target, 1, "back to min_ready: {after:?}");
    manager.shutdown().await.unwrap();
}

/// Demand decays as exp(-t/tau) and reaches 0 only at float underflow (a
/// month for demand_long 1 h), but a demand so small that a purchase within
/// a lead time is unlikely keeps nothing: a min_ready 0 pool goes back to
/// 0, and what the purchase's demand booted goes after a cooldown. This is
/// deliberate, and meets no service level: the next purchase finds the
/// pool empty (min_ready 1 would keep one warm for it).
#[tokio::test(start_paused = true)]
async fn a_min_ready_0_pool_keeps_nothing_once_its_demand_died_away() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let spec = PoolSpec {
        min_ready: 0,
        ..auto_spec()
    };
    let (manager, anchored) = busy_pool(&sim, open_store(dir.path()), spec, 1).await;
    let (target, busy) = sizing(&manager).await;
    assert!(target >= 1, "one purchase lifts the target: {busy:?}");
    wait_ready(&manager, target).await;

    let down = Duration::from_secs(2 * 24 * 3600);
    let manager = restart_after(manager, anchored, &sim, dir.path(), down).await;
    let (target, quiet) = sizing(&manager).await;
    assert!(quiet.demand.forecast > 0.0, "decayed, not gone: {quiet:?}");
    assert_eq!(target, 0, "back to min_ready: {quiet:?}");

    // A surplus goes after a cooldown (15 min), and no purchase is expected
    // within it.
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 0, "{status:?}");
    let missed = manager
        .allocate(request("rare", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(
            missed,
            Err(pool_manager::ManagerError::ResourceExhausted(_))
        ),
        "the next purchase finds the pool empty: {missed:?}"
    );
    manager.shutdown().await.unwrap();
}

/// A purchase refused RESOURCE_EXHAUSTED is rolled back, and its caller
/// asks again with its order id; so do the callers of purchases a stop
/// cut. Auto sizing counts each order once, a restart in between too: the
/// orders counted before it are stored with the estimators.
#[tokio::test(start_paused = true)]
async fn an_order_asked_again_after_a_restart_is_not_counted_again() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let anchored = Instant::now();
    let manager = manager_at(&sim, open_store(dir.path()), unix(START));
    manager.start().await.unwrap();
    let mut empty = spec(0);
    empty.target = pool_manager::model::Target::Fixed(0);
    manager.create_pool(pool(), empty).await.unwrap();
    let ask_all = |manager: PoolManager| async move {
        for i in 1..=20 {
            let order = format!("o{i}");
            let refused = manager
                .allocate(request(&order, new_volume(), EmptyPoolPolicy::FailFast))
                .await;
            assert!(refused.is_err(), "an empty pool: {refused:?}");
        }
        manager
    };
    let manager = ask_all(manager).await;
    let (_, before) = sizing(&manager).await;
    assert!(before.demand.short > 0.0, "{before:?}");

    let manager = restart_after(manager, anchored, &sim, dir.path(), Duration::ZERO).await;
    let manager = ask_all(manager).await;
    let (_, after) = sizing(&manager).await;
    // The seconds the restart took decay it a little; counted again, it
    // would double.
    assert!(
        after.demand.short <= before.demand.short,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.demand.short > 0.9 * before.demand.short,
        "{before:?} -> {after:?}"
    );
    manager.shutdown().await.unwrap();
}

/// Restarts the manager of [`busy_auto_pool`] on its store, which served
/// `recorded` (written over the store's record) and now serves `cloud`,
/// adopted as `--adopt-cloud` asks; lets the replenisher take its first
/// step. Returns the manager and its store.
async fn adopted_on(
    manager: PoolManager,
    anchored: Instant,
    dir: &std::path::Path,
    recorded: CloudIdentity,
    cloud: Arc<dyn pool_manager::cloud::Cloud>,
    sim: &Arc<cloudsim::SimCloud>,
) -> (PoolManager, Arc<dyn Store>) {
    manager.shutdown().await.unwrap();
    drop(manager);
    let store = open_store(dir);
    store.record_cloud_identity(&recorded).await.unwrap();
    store.flush().await.unwrap();
    let mut settings = settings();
    settings.sizing.wall_clock_start = Some(unix(START) + anchored.elapsed());
    settings.adopt_cloud = true;
    let manager = PoolManager::new(store.clone(), cloud, Arc::new(sim.probe()), settings);
    manager.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    (manager, store)
}

/// A store adopted from another cloud (`--adopt-cloud`) keeps its pools'
/// demand, which is the tenants', but not their boot lead times, which
/// were the old cloud's: this one's may be many times longer (a demo
/// store's seconds-long boots adopted onto OpenStack), and observed lead
/// times would outweigh this cloud's prior until as many boots had aged
/// out. The pools start from the prior, as their health starts healthy.
#[tokio::test(start_paused = true)]
async fn a_store_adopted_from_another_cloud_keeps_demand_not_lead_times() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let (_, before) = sizing(&manager).await;
    assert_eq!(before.lead.source, LeadSource::Observed, "{before:?}");

    // The demo's store, moved to a real cloud (the embedded one adopts
    // none).
    let other = CloudIdentity::Embedded;
    let cloud = on_a_project(&sim);
    let (manager, _) = adopted_on(manager, anchored, dir.path(), other, cloud, &sim).await;
    let (_, after) = sizing(&manager).await;
    assert_eq!(after.lead.source, LeadSource::Prior, "{after:?}");
    assert_eq!(after.lead.samples, 0, "{after:?}");
    assert!(
        (after.demand.long / before.demand.long - 1.0).abs() < 0.05,
        "{before:?} {after:?}"
    );
    assert_eq!(after.demand.forecast, before.demand.forecast, "{after:?}");
    manager.shutdown().await.unwrap();
}

/// The adopting start records the new cloud at once, so the next start is
/// no adoption: lead times still stored then would be resumed as this
/// cloud's. They are dropped from the store as soon as from memory, not
/// at the first periodic save (a minute later), which a crash may never
/// reach.
#[tokio::test(start_paused = true)]
async fn lead_times_an_adoption_drops_are_dropped_from_the_store_at_once() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let (_, before) = sizing(&manager).await;
    assert!(before.lead.samples >= 3, "{before:?}");

    let other = CloudIdentity::Embedded;
    let cloud = on_a_project(&sim);
    let (manager, store) = adopted_on(manager, anchored, dir.path(), other, cloud, &sim).await;
    let stored = store
        .get_learned_sizing(&pool())
        .await
        .unwrap()
        .expect("the pool's learned sizing");
    assert!(
        stored.leads.is_empty(),
        "the old cloud's {} lead times are still stored",
        stored.leads.len()
    );
    assert!(stored.demand_long > 0.0, "demand is kept: {stored:?}");
    manager.shutdown().await.unwrap();
}

/// A renamed `server_tag` adopted in the same project and region is the
/// same cloud: its boots take as long, and the lead times stay.
#[tokio::test(start_paused = true)]
async fn a_store_adopted_under_a_new_server_tag_keeps_lead_times() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let (_, before) = sizing(&manager).await;
    assert_eq!(before.lead.source, LeadSource::Observed, "{before:?}");

    let cloud = GatedCloud::new(&sim);
    cloud.tag_servers("warmpool-b");
    let old_tag = CloudIdentity::OpenStack {
        project_id: "cloudsim".into(),
        region: Some("RegionOne".into()),
        server_tag: "warmpool-a".into(),
    };
    let (manager, _) = adopted_on(manager, anchored, dir.path(), old_tag, cloud, &sim).await;
    let (_, after) = sizing(&manager).await;
    assert_eq!(after.lead.source, LeadSource::Observed, "{after:?}");
    assert_eq!(after.lead.samples, before.lead.samples, "{after:?}");
    assert_eq!(after.lead.p90, before.lead.p90, "{after:?}");
    manager.shutdown().await.unwrap();
}

/// A store of no region adopted (`--adopt-cloud`) once a region is named,
/// the operator having checked the region lists the store's servers, is
/// the same cloud as a renamed tag is: the lead times stay.
#[tokio::test(start_paused = true)]
async fn a_store_of_no_region_adopted_in_the_region_named_keeps_lead_times() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (manager, anchored) = busy_auto_pool(&sim, open_store(dir.path()), 40).await;
    let (_, before) = sizing(&manager).await;
    assert_eq!(before.lead.source, LeadSource::Observed, "{before:?}");

    let cloud = GatedCloud::new(&sim);
    cloud.tag_servers("warmpool");
    let no_region = CloudIdentity::OpenStack {
        project_id: "cloudsim".into(),
        region: None,
        server_tag: "warmpool".into(),
    };
    let (manager, _) = adopted_on(manager, anchored, dir.path(), no_region, cloud, &sim).await;
    let (_, after) = sizing(&manager).await;
    assert_eq!(after.lead.source, LeadSource::Observed, "{after:?}");
    assert_eq!(after.lead.samples, before.lead.samples, "{after:?}");
    assert_eq!(after.lead.p90, before.lead.p90, "{after:?}");
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_running_manager_saves_what_it_learned_without_a_shutdown() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let (manager, _) = busy_auto_pool(&sim, store.clone(), 10).await;
    // What a pool learns is saved within a minute (and only then: the
    // last purchase may be 30 s old).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (_, status) = sizing(&manager).await;
    let learned = store
        .get_learned_sizing(&pool())
        .await
        .unwrap()
        .expect("learned sizing saved while running");
    assert_eq!(learned.allocations, 10);
    assert!(!learned.leads.is_empty());
    assert!(learned.leads.len() <= status.lead.samples.max(1) + 1);
    assert!(learned.demand_long > 0.0);

    // Deleting the pool deletes what was learned about it.
    manager.delete_pool(&pool()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(600), async {
        while manager.get_pool(&pool()).await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .expect("the pool drains");
    assert_eq!(store.get_learned_sizing(&pool()).await.unwrap(), None);
    manager.shutdown().await.unwrap();
}

/// A boot the previous manager began and the next one resumes says nothing
/// about lead time: it was timed from its resumption (a server ACTIVE
/// meanwhile is "Ready in seconds"), so it does not feed the estimator.
#[tokio::test(start_paused = true)]
async fn a_resumed_boot_is_no_lead_time_sample() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let anchored = Instant::now();
    let manager = manager_at(&sim, open_store(dir.path()), unix(START));
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    for _ in 0..100 {
        if !sim.servers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.servers().len(), 1, "the boot is under way");

    // Down while the server boots; it is ACTIVE with mysqld up by the restart.
    manager.shutdown().await.unwrap();
    drop(manager);
    tokio::time::sleep(Duration::from_secs(300)).await;
    let wall = unix(START) + anchored.elapsed();
    let manager = manager_at(&sim, open_store(dir.path()), wall);
    let mut events = manager.events();
    manager.start().await.unwrap();
    wait_ready(&manager, 1).await;

    let (_, sizing) = sizing(&manager).await;
    assert_eq!(sizing.lead.samples, 0, "{:?}", sizing.lead);
    assert_eq!(sizing.lead.source, LeadSource::Prior);
    // Nor does it report one (the lead-time histogram).
    let mut boots = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let pool_manager::events::EventKind::Boot { outcome, lead_time } = event.kind {
            boots.push((outcome, lead_time));
        }
    }
    assert_eq!(
        boots,
        [(pool_manager::events::BootOutcome::Ready, None)],
        "{boots:?}"
    );
}

/// Counts the learned-sizing records written, per pool.
#[derive(Default)]
struct SizingWrites {
    per_pool: std::sync::Mutex<std::collections::BTreeMap<pool_manager::model::PoolKey, usize>>,
}

impl SizingWrites {
    fn of(&self, key: &pool_manager::model::PoolKey) -> usize {
        self.per_pool.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    fn forget(&self) {
        self.per_pool.lock().unwrap().clear();
    }
}

#[async_trait::async_trait]
impl StoreHooks for SizingWrites {
    fn written(&self, write: Write) {
        if let Write::LearnedSizing(key, _) = write {
            *self.per_pool.lock().unwrap().entry(key).or_default() += 1;
        }
    }
}

/// Rewriting every pool's learned sizing every minute, changed or not,
/// left most of the store's disk to sled's garbage (about 16 MB a day at
/// 20 pools). A pool that saw nothing new writes nothing: what a restart
/// reads from its last record, decayed over the time since, is what it
/// knows. A busy pool still saves about once a minute, and nothing it
/// learned is lost at a clean stop.
#[tokio::test(start_paused = true)]
async fn an_idle_pool_writes_no_learned_sizing_while_a_busy_one_does() {
    let sim = sim();
    let writes = HookedStore::new(SizingWrites::default());
    let manager = manager_at(&sim, writes.clone(), unix(START));
    manager.start().await.unwrap();
    let idle = pool_manager::model::PoolKey::new("db.large", "az1");
    manager
        .create_pool(idle.clone(), auto_spec())
        .await
        .unwrap();
    manager.create_pool(pool(), auto_spec()).await.unwrap();
    wait_ready(&manager, 1).await;
    // Both pools' first boots are measured and saved.
    tokio::time::sleep(Duration::from_secs(180)).await;
    assert!(writes.hooks.of(&idle) >= 1, "the idle pool's boot is saved");
    writes.hooks.forget();

    // Ten minutes and more: a purchase every 30 s from one pool, none from
    // the other.
    let began = Instant::now();
    purchases_every(&manager, 20, Duration::from_secs(30)).await;
    let minutes = began.elapsed().as_secs() / 60;
    assert!(minutes >= 10, "{minutes} min");
    assert_eq!(writes.hooks.of(&idle), 0, "the idle pool saw nothing new");
    let busy = writes.hooks.of(&pool()) as u64;
    assert!(
        busy + 1 >= minutes && busy <= minutes + 1,
        "the busy pool saves about once a minute: {busy} in {minutes} min"
    );

    // A clean stop saves what was learned since the last save.
    manager
        .allocate(request("last", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    let learned = writes.get_learned_sizing(&pool()).await.unwrap().unwrap();
    assert_eq!(learned.allocations, 21, "{learned:?}");
}
