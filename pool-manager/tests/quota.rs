//! Quota headroom on the paused clock, against cloudsim's instance quota:
//! refills stop at quota without piling up refused boots, a cold-boot
//! purchase waits first in line and gets the room a release frees, or an
//! instance that becomes Ready meanwhile (and stops waiting when its pool
//! is deleted or the manager stops, or at its deadline, not before), and a
//! cloud whose limits cannot be read still gets paced by quota refusals.

mod common;

use cloudsim::SimCloud;
use common::*;
use pool_manager::cloud::CloudError;
use pool_manager::events::{BootOutcome, DegradedCause, Event, EventKind};
use pool_manager::gate::{Hold, DEFAULT_HEADROOM_INTERVAL};
use pool_manager::model::{
    Allocation, AllocationState, EmptyPoolPolicy, InstanceState, PoolKey, PoolSpec, Target,
};
use pool_manager::sizing::PlanReason;
use pool_manager::{ManagerError, ManagerResult, PoolManager};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The test pool's spec at a fixed target of `target`.
fn fixed(target: u32) -> PoolSpec {
    PoolSpec {
        target: Target::Fixed(target),
        ..spec(target)
    }
}

fn sim_with_quota(max_instances: usize) -> Arc<SimCloud> {
    let mut config = cloudsim::SimConfig::deterministic();
    config.quotas.max_instances = max_instances;
    SimCloud::new(config)
}

/// Boots broadcast as ended with `outcome` since the last look.
fn boots_ended(events: &mut broadcast::Receiver<Event>, outcome: BootOutcome) -> usize {
    let mut ended = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind, EventKind::Boot { outcome: o, .. } if o == outcome) {
            ended += 1;
        }
    }
    ended
}

/// Boots the cloud refused for quota since the last look.
fn quota_refusals(events: &mut broadcast::Receiver<Event>) -> usize {
    boots_ended(events, BootOutcome::Quota)
}

/// What `at_quota_with_a_cold_order_waiting` leaves: the cloud, the
/// manager, its events since start, and the waiting purchase.
struct ColdOrderWaiting {
    sim: Arc<SimCloud>,
    manager: PoolManager,
    events: broadcast::Receiver<Event>,
    cold: JoinHandle<ManagerResult<Allocation>>,
}

/// Three tenants' servers ("a", "b", "c") fill the quota of three and the
/// pool is empty; a purchase with cold-boot fallback ("cold", 30 min
/// timeout) waits in line for room instead of failing.
async fn at_quota_with_a_cold_order_waiting() -> ColdOrderWaiting {
    let sim = sim_with_quota(3);
    let manager = manager_on(&sim, temp_store());
    let events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;

    for id in ["a", "b", "c"] {
        let done = manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert!(done.warm_hit);
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Booting), 0, "{status:?}");
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(PlanReason::Quota)
    );

    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30 * 60));
    let cold = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(!cold.is_finished(), "no room yet: the purchase waits");
    ColdOrderWaiting {
        sim,
        manager,
        events,
        cold,
    }
}

#[tokio::test(start_paused = true)]
async fn refills_stop_at_quota_and_a_cold_boot_purchase_gets_the_released_room() {
    let ColdOrderWaiting {
        sim,
        manager,
        mut events,
        cold,
    } = at_quota_with_a_cold_order_waiting().await;

    // One tenant leaves: the freed room goes to the waiting purchase, not to
    // a speculative refill.
    manager.release("a", Some(true)).await.unwrap();
    let allocation = tokio::time::timeout(Duration::from_secs(600), cold)
        .await
        .expect("the cold boot got through")
        .unwrap()
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit);

    // Quota is full again; the pool stays empty, nothing was refused.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 0, "{status:?}");
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    assert_eq!(quota_refusals(&mut events), 0);
    assert_eq!(sim.servers().len(), 3);
    assert_consistent(&sim, &manager).await;

    // Releasing two more lets the pool refill to the quota.
    manager.release("b", Some(true)).await.unwrap();
    manager.release("c", Some(true)).await.unwrap();
    wait_ready(&manager, 2).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_eq!(quota_refusals(&mut events), 0);
    manager.shutdown().await.unwrap();
}

/// A purchase waiting in line for quota is told at once that its pool is
/// being deleted, as a purchase waiting for a Ready instance is: the room
/// the release frees is not taken for a server in the deleted pool.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_purchase_waiting_for_quota_is_told_the_pool_is_deleted() {
    let ColdOrderWaiting {
        sim, manager, cold, ..
    } = at_quota_with_a_cold_order_waiting().await;
    sim.reset_call_counts();
    manager.delete_pool(&pool()).await.unwrap();
    manager.release("a", Some(true)).await.unwrap();
    let err = cold.await.unwrap().unwrap_err();
    // Which it reads depends on whether the empty pool's drain is done
    // when the purchase wakes: both say the pool is deleted.
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.starts_with("pool db.small@az1 is being deleted; ") || m.starts_with("pool db.small@az1 was deleted; ")),
        "{err:?}"
    );
    assert_eq!(sim.call_counts().get("create_server"), None);
    assert!(manager.get_allocation("cold").await.is_err(), "rolled back");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// `stop_waiting` (a graceful stop begins) ends a purchase's wait for
/// quota as it ends a wait for a Ready instance: it holds nothing, and
/// would hold the stop until its timeout.
#[tokio::test(start_paused = true)]
async fn a_stop_ends_a_cold_boot_purchases_wait_for_quota() {
    let ColdOrderWaiting {
        sim, manager, cold, ..
    } = at_quota_with_a_cold_order_waiting().await;
    sim.reset_call_counts();
    manager.stop_waiting();
    let err = cold.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");
    assert_eq!(sim.call_counts().get("create_server"), None);
    assert!(manager.get_allocation("cold").await.is_err(), "rolled back");
    manager.shutdown().await.unwrap();
}

/// A cold-boot purchase that finds its pool empty once a graceful stop has
/// begun (`stop_waiting`) boots nothing: a boot takes minutes, longer than
/// any grace period, so it would only hold the stop for its whole grace,
/// and the next start would delete the server, its port and its volume.
/// It answers ShuttingDown at once, as a purchase waiting on an empty pool
/// does, and is rolled back.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_purchase_after_a_stop_began_boots_nothing() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    manager.stop_waiting();
    sim.reset_call_counts();
    let answer = manager
        .allocate(request(
            "late-cold",
            new_volume(),
            EmptyPoolPolicy::ColdBoot,
        ))
        .await;
    let calls = sim.call_counts();
    assert!(
        matches!(answer, Err(ManagerError::ShuttingDown { .. })),
        "{answer:?}; cloud calls: {calls:?}"
    );
    assert_eq!(calls.get("create_server"), None, "{calls:?}");
    assert!(
        manager.get_allocation("late-cold").await.is_err(),
        "rolled back"
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Waits (in simulated time) until the cloud has been asked for a server.
async fn until_a_server_is_asked_for(sim: &SimCloud) {
    for _ in 0..60 {
        if sim.call_counts().contains_key("create_server") {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no server was asked for: {:?}", sim.call_counts());
}

/// A cold boot under way when a graceful stop begins goes on: it may
/// finish within the grace period and serve its purchase. One cut off with
/// its purchase at the end of the grace is handed to the pool, as at the
/// purchase's deadline: the next start rolls the order back but goes on
/// with the boot, and the pool gets it Ready, instead of deleting its
/// server (minutes of boot lost; the order called again would boot anew).
#[tokio::test(start_paused = true)]
async fn a_cold_boot_cut_off_by_a_stop_is_handed_to_the_pool() {
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 0).await;
    sim.reset_call_counts();
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(10 * 60));
    let cold = spawn_allocate(&manager, order);
    until_a_server_is_asked_for(&sim).await;
    let booting = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(booting.len(), 1, "{booting:?}");
    assert_eq!(booting[0].state, InstanceState::Booting, "{booting:?}");

    manager.stop_waiting();
    assert_eq!(
        manager.finish_calls(Duration::from_secs(5)).await,
        1,
        "the purchase goes on past the grace"
    );
    manager.shutdown().await.unwrap();
    assert!(cold.await.unwrap().is_err());
    drop(manager);
    let handed = store.get_instance(&booting[0].id).await.unwrap();
    assert_eq!(
        handed.as_ref().map(|i| (i.state, i.request_id.clone())),
        Some((InstanceState::Booting, None)),
        "the pool's now: {handed:?}"
    );

    let again = manager_on(&sim, store.clone());
    again.start().await.unwrap();
    assert!(again.get_allocation("cold").await.is_err(), "rolled back");
    wait_ready(&again, 1).await;
    let ready = again.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0].id, booting[0].id, "the same boot, kept");
    assert_eq!(ready[0].state, InstanceState::Ready, "{ready:?}");
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&1),
        "no second boot"
    );
    assert_consistent(&sim, &again).await;
    again.shutdown().await.unwrap();
}

/// A cold boot under way when a graceful stop begins goes on, and one that
/// finishes within the grace period serves its purchase.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_under_way_at_a_stop_goes_on() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(10 * 60));
    let cold = spawn_allocate(&manager, order);
    until_a_server_is_asked_for(&sim).await;
    manager.stop_waiting();
    let allocation = cold.await.unwrap().unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A cold-boot purchase waiting in line for quota takes an instance of its
/// pool that becomes Ready meanwhile, as a WAIT purchase would: quota of 2
/// servers, pool of target 1. "a" buys the Ready one and the refill boots
/// (2 of 2 used); "cold" finds none Ready and waits for quota, and the
/// refill, Ready a minute and a half later, is its. It leaves the line
/// then: once "a" is released, the room freed goes to the pool's refill.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_waiting_for_quota_takes_an_instance_that_becomes_ready() {
    let sim = sim_with_quota(2);
    let manager = started(&sim, temp_store(), 1).await;
    manager
        .allocate(request("a", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Booting), 1, "{status:?}");
    sim.reset_call_counts();
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(10 * 60));
    let allocation = manager
        .allocate(order)
        .await
        .unwrap_or_else(|e| panic!("the refill was Ready before the deadline: {e}"));
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit, "it waited for the instance");
    assert_eq!(
        sim.call_counts().get("create_server"),
        None,
        "no boot of its own"
    );

    // Out of the line: the server "a" frees is the refill's.
    manager.release("a", Some(true)).await.unwrap();
    wait_ready(&manager, 1).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A waiting cold boot reads the cloud's limits as often as the pools'
/// refills do (`headroom_interval`, 30 s), not at every look: at quota, 300
/// s of waiting read them about ten times (the replenisher's polls and the
/// purchase's share one cached reading). A release whose server is gone
/// marks that reading stale: the purchase reads again and boots at once,
/// rather than at the next poll.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_waiting_for_quota_reads_the_limits_once_a_poll_interval() {
    let ColdOrderWaiting {
        sim, manager, cold, ..
    } = at_quota_with_a_cold_order_waiting().await;
    sim.reset_call_counts();
    let span = Duration::from_secs(300);
    tokio::time::sleep(span).await;
    let polls = sim.call_counts().get("boot_headroom").copied().unwrap_or(0);
    let most = span.as_secs() / DEFAULT_HEADROOM_INTERVAL.as_secs() + 1;
    assert!(
        (1..=most).contains(&polls),
        "{polls} boot_headroom calls in {span:?} at quota (at most {most})"
    );
    assert!(!cold.is_finished(), "no room yet: the purchase waits");

    sim.reset_call_counts();
    manager.release("a", Some(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&1),
        "the purchase boots on the freed room at once"
    );
    let allocation = tokio::time::timeout(Duration::from_secs(600), cold)
        .await
        .expect("the cold boot got through")
        .unwrap()
        .unwrap();
    assert!(!allocation.warm_hit);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cold_boot_at_quota_fails_at_its_deadline_without_booting() {
    let sim = sim_with_quota(1);
    let manager = started(&sim, temp_store(), 1).await;
    manager
        .allocate(request("a", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    sim.reset_call_counts();
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(60));
    let asked = tokio::time::Instant::now();
    let err = manager.allocate(order).await.unwrap_err();
    // It names the quota that binds, as the last poll read it.
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("instances: 1 of 1 used")),
        "{err:?}"
    );
    // Its last pause before a look is cut to the time left, not skipped.
    assert!(
        asked.elapsed() >= Duration::from_secs(60),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(sim.call_counts().get("create_server"), None);
    assert!(manager.get_allocation("late").await.is_err(), "rolled back");
    assert_consistent(&sim, &manager).await;
}

/// cloudsim, except that its limits cannot be read.
fn no_limits(sim: &Arc<SimCloud>) -> Arc<GatedCloud> {
    GatedCloud::with_fault(sim, |method| {
        (method == "boot_headroom").then(|| CloudError::Transient("GET /limits: 503".into()))
    })
}

#[tokio::test(start_paused = true)]
async fn unreadable_limits_fall_back_to_the_refusal_pause() {
    let sim = sim_with_quota(3);
    let manager = PoolManager::new(
        temp_store(),
        no_limits(&sim),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    // Replenishment goes on without the limits.
    wait_ready(&manager, 3).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.sizing.quota.failing.is_some(), "{:?}", status.sizing);

    // At quota the refusals pause refills with a growing backoff (30 s,
    // 60 s, 120 s, ...) instead of a create every replenish interval.
    sim.reset_call_counts();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let creates = sim.call_counts().get("create_server").copied().unwrap_or(0);
    assert!(
        (1..=6).contains(&creates),
        "{creates} create_server calls in 10 minutes at quota"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status.sizing.gate.quota_refusals >= 1,
        "{:?}",
        status.sizing
    );

    // A purchase still gets a warm instance.
    let allocation = manager
        .allocate(request("q1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(allocation.warm_hit);
}

/// A pool below its target polls its flavor's limits every
/// `headroom_interval` (30 s); one whose limits could not be read warned
/// at every poll, 2,880 lines a day per flavor. It warns once per outage,
/// and says when they can be read again.
#[tokio::test(start_paused = true)]
async fn unreadable_limits_are_warned_of_once_per_outage() {
    use std::sync::atomic::Ordering;
    let logs = Logs::capture();
    let sim = sim_with_quota(3);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let (failing, failed) = (failing.clone(), failed.clone());
        move |method| {
            (method == "boot_headroom" && failing.load(Ordering::SeqCst)).then(|| {
                failed.fetch_add(1, Ordering::SeqCst);
                CloudError::Transient("GET /limits: 503".into())
            })
        }
    });
    let manager = PoolManager::new(temp_store(), cloud, Arc::new(sim.probe()), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    let lines = |what: &str| {
        logs.text()
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let unreadable = || {
        lines("cannot read quota headroom")
            .iter()
            .filter(|l| l.contains(" WARN "))
            .count()
    };
    let readable = || lines("quota headroom can be read again").len();

    tokio::time::sleep(Duration::from_secs(600)).await;
    let polls = failed.load(Ordering::SeqCst);
    assert!(polls >= 10, "the pool, below its target, polls: {polls}");
    assert_eq!(unreadable(), 1, "{}", logs.text());
    assert_eq!(readable(), 0);

    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(DEFAULT_HEADROOM_INTERVAL * 2).await;
    assert_eq!(readable(), 1, "{}", logs.text());
    assert!(
        lines("quota headroom can be read again")[0].contains(" INFO "),
        "{:?}",
        lines("quota headroom can be read again")
    );
    // A new outage is warned of anew.
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(DEFAULT_HEADROOM_INTERVAL * 4).await;
    assert_eq!(unreadable(), 2, "{}", logs.text());
    assert!(manager
        .get_pool(&pool())
        .await
        .unwrap()
        .sizing
        .quota
        .failing
        .is_some());
}

/// Limits unreadable, a cold boot the cloud refuses for quota backs off
/// (2 s, 4 s, ... 32 s at the test's 1 s poll interval) between tries, and
/// a pause that would run past the deadline is cut to the time left: the
/// purchase looks one last time at its deadline rather than giving up as
/// much as a pause early.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_refused_for_quota_waits_out_its_whole_timeout() {
    let sim = sim_with_quota(1);
    let manager = PoolManager::new(
        temp_store(),
        no_limits(&sim),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager
        .allocate(request("a", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let timeout = Duration::from_secs(150);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(timeout);
    let asked = tokio::time::Instant::now();
    let err = manager.allocate(order).await.unwrap_err();
    let answered = asked.elapsed();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("quota")),
        "{err:?}"
    );
    assert!(
        answered >= timeout,
        "answered {answered:?} into its {timeout:?} timeout: {err}"
    );
    assert!(manager.get_allocation("late").await.is_err(), "rolled back");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A 429 on a waiting cold boot's read of the limits is the gate's, as a
/// refill's read's is: it pauses the zone's new boots. Pool B (db.large,
/// target 0) has no refills, so only the purchase reads its limits.
#[tokio::test(start_paused = true)]
async fn a_429_on_a_cold_boots_read_of_the_limits_pauses_the_zone() {
    let sim = sim_with_quota(1);
    let (cloud, throttling) = GatedCloud::refusing(
        &sim,
        "boot_headroom",
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(60)),
            message: "GET /limits: 429".into(),
            unavailable: false,
        },
        false,
    );
    let manager = PoolManager::new(temp_store(), cloud, Arc::new(sim.probe()), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    let b = PoolKey::new("db.large", "az1");
    manager.create_pool(b.clone(), fixed(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = manager.get_pool(&b).await.unwrap().sizing.gate.throttled;

    throttling.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut order = request("b1", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.params.pool = b.clone();
    order.timeout = Some(Duration::from_secs(60));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("quota")),
        "{err:?}"
    );
    let status = manager.get_pool(&b).await.unwrap();
    assert!(
        status.sizing.gate.throttled > before,
        "{before} throttled before, {:?}",
        status.sizing.gate
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Nova accepted the creates, then its conductor's quota recheck
/// (`recheck_quota`, on by default) found the project over quota: the
/// servers go ERROR with TooManyInstances' fault. That is a quota refusal
/// as a refused create is: the gate holds refills for quota (not the pool's
/// failed-boot backoff), the servers are deleted, and the pool fills once
/// the pause is over. The limits cannot be read here: the refusal pause
/// is what paces refills then (cloudsim's limits would show room, and a
/// poll after the refusals lifts the pause: see the next test).
#[tokio::test(start_paused = true)]
async fn servers_nova_errors_for_quota_on_recheck_pause_refills_as_a_refused_create() {
    let sim = sim();
    let manager = PoolManager::new(
        temp_store(),
        no_limits(&sim),
        Arc::new(sim.probe()),
        settings(),
    );
    let mut events = manager.events();
    manager.start().await.unwrap();
    three_boots_error_for_quota(&sim, &manager, &mut events).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let Some(Hold::Quota { until }) = status.sizing.gate.hold else {
        panic!("the gate holds refills for quota: {:?}", status.sizing.gate);
    };

    // Nothing is sent before the gate's pause is over (the failed-boot
    // backoff would have booted again after replenish_interval).
    sim.reset_call_counts();
    tokio::time::sleep_until(until - Duration::from_secs(1)).await;
    assert_eq!(sim.call_counts().get("create_server"), None);
    wait_ready(&manager, 3).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// As above, with limits that can be read: a poll sent after the refusals
/// shows room, and its cap, not the refusal pause, holds the refills, so
/// the refills boot before the pause would have ended. They used to wait
/// out the whole pause (up to `quota_backoff_max`, 15 min) with the room
/// shown.
#[tokio::test(start_paused = true)]
async fn a_poll_showing_room_after_quota_refusals_lets_refills_boot_before_the_pause_ends() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    three_boots_error_for_quota(&sim, &manager, &mut events).await;
    sim.reset_call_counts();
    let pause = settings().gate.quota_backoff;
    tokio::time::sleep(pause - Duration::from_secs(5)).await;
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&3),
        "refills boot before the refusal pause ends"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.gate.hold, None, "{:?}", status.sizing.gate);
    wait_ready(&manager, 3).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Creates a pool of 3 whose first three boots go ERROR on Nova's quota
/// recheck, and waits for them to end, refused for quota.
async fn three_boots_error_for_quota(
    sim: &Arc<SimCloud>,
    manager: &PoolManager,
    events: &mut broadcast::Receiver<Event>,
) {
    sim.faults().error_next_boots(
        3,
        "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
    );
    manager.create_pool(pool(), spec(3)).await.unwrap();

    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(3600), events.recv())
            .await
            .expect("three boots end within an hour")
            .unwrap();
        if let EventKind::Boot { outcome, .. } = event.kind {
            outcomes.push(outcome);
        }
    }
    assert_eq!(outcomes, [BootOutcome::Quota; 3]);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status.sizing.gate.quota_refusals >= 1,
        "{:?}",
        status.sizing
    );
    assert_eq!(status.health.last_failure, Some(BootOutcome::Quota));
    // Refusals in a row degrade a pool as refused creates do (every boot
    // short of Ready counts): the verdict names quota, not a failed boot.
    while let Ok(event) = events.try_recv() {
        if let EventKind::Degraded { cause, .. } = event.kind {
            assert_eq!(cause, DegradedCause::Boots(BootOutcome::Quota));
        }
    }
}

/// Boots the cloud refuses to create (here every create, as for an image
/// deleted from Glance) make no servers and hold no quota: they do not use
/// up the headroom, so the pool is not held back as if the quota were full.
#[tokio::test(start_paused = true)]
async fn boots_the_cloud_refused_to_create_leave_the_headroom_alone() {
    let sim = sim_with_quota(4);
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "create_server",
        CloudError::Fatal("Image mysql-8.0 could not be found".into()),
        true,
    );
    let manager = PoolManager::new(temp_store(), cloud, Arc::new(sim.probe()), settings());
    let mut events = manager.events();
    manager.start().await.unwrap();
    // As many boots at once as the quota has room for, then one more
    // after the pause the failures earn, well within one headroom poll
    // interval: more refused boots than the room.
    manager.create_pool(pool(), spec(4)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let refused = boots_ended(&mut events, BootOutcome::Failed);
    assert!(
        refused > 4,
        "only {refused} refused boots: not enough to use up the quota"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.quota.polled, Some(4), "{:?}", status.sizing);
    assert_eq!(status.sizing.quota.left, Some(4), "{:?}", status.sizing);
    assert_ne!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(PlanReason::Quota),
        "{:?}",
        status.sizing
    );
    assert!(sim.servers().is_empty());

    // The image is back: the pool fills.
    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_ready(&manager, 4).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A boot whose create was answered 503 every time (unavailable: it may
/// have made the server) and failed for good, when the cloud then lists no
/// server naming its instance, made none: it holds no quota, and its
/// headroom is handed back at once, not kept until the next poll.
#[tokio::test(start_paused = true)]
async fn a_boot_whose_creates_were_answered_503_and_made_nothing_hands_its_headroom_back() {
    let sim = sim_with_quota(1);
    let (cloud, _unavailable) = GatedCloud::refusing(
        &sim,
        "create_server",
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
            message: "503 Service Unavailable".into(),
            unavailable: true,
        },
        true,
    );
    let mut settings = settings();
    settings.gate.headroom_interval = Duration::from_secs(3600);
    let manager = PoolManager::new(temp_store(), cloud, Arc::new(sim.probe()), settings);
    manager.start().await.unwrap();
    let spec = PoolSpec {
        boot_timeout: Duration::from_secs(60),
        ..spec(1)
    };
    manager.create_pool(pool(), spec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let booting = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(booting.sizing.quota.left, Some(0), "{:?}", booting.sizing);
    // No other boot takes the room the failed one hands back.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Booting),
        0,
        "{:?}",
        status.counts
    );
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert_eq!(status.sizing.quota.polled, Some(1), "{:?}", status.sizing);
    assert_eq!(status.sizing.quota.left, Some(1), "{:?}", status.sizing);
    manager.shutdown().await.unwrap();
}

/// A flavor one server of which needs more than the project's whole quota
/// (64 vCPUs against 20 cores): the pool says so and boots nothing, and a
/// cold boot is refused at once as a precondition (waiting for a release
/// would only use up its timeout).
#[tokio::test(start_paused = true)]
async fn a_flavor_beyond_the_quota_is_reported_and_its_cold_boots_refused_at_once() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.flavors.push("db.huge".into());
    config
        .flavor_sizes
        .push(cloudsim::FlavorSize::new("db.huge", 64, 1024, 10));
    config.max_cores = Some(20);
    let sim = SimCloud::new(config);
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let huge = pool_manager::model::PoolKey::new("db.huge", "az1");
    manager.create_pool(huge.clone(), spec(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;

    let status = manager.get_pool(&huge).await.unwrap();
    assert!(status.sizing.quota.beyond_quota, "{:?}", status.sizing);
    assert_eq!(
        status.sizing.quota.limited_by.as_deref(),
        Some("cores: one db.huge server needs 64, the quota is 20")
    );
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(PlanReason::Quota)
    );
    assert_eq!(sim.call_counts().get("create_server"), None);

    let mut order = request("huge", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.params.pool = huge.clone();
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, pool_manager::ManagerError::FailedPrecondition(m)
            if m.contains("cores: one db.huge server needs 64, the quota is 20")),
        "{err:?}"
    );
    assert_eq!(sim.call_counts().get("create_server"), None);
    assert!(manager.get_allocation("huge").await.is_err(), "rolled back");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Quota is the project's and binds on cores here (12): boots of a 4-vCPU
/// flavor started since a 1-vCPU pool's last headroom poll take four of
/// its servers' worth each. Counted as one server each, the small pool
/// would boot into a full quota and be refused.
#[tokio::test(start_paused = true)]
async fn boots_of_a_larger_flavor_take_their_cores_from_a_smaller_flavors_headroom() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.max_cores = Some(12);
    let sim = SimCloud::new(config);
    let mut settings = settings();
    // Each pool's first poll is its only one: what the gate counts since
    // then decides.
    settings.gate.headroom_interval = Duration::from_secs(3600);
    let manager = PoolManager::new(temp_store(), sim.clone(), Arc::new(sim.probe()), settings);
    let mut events = manager.events();
    manager.start().await.unwrap();
    let small = pool_manager::model::PoolKey::new("db.small", "az2");
    let large = pool_manager::model::PoolKey::new("db.large", "az1");
    let ready = |key: pool_manager::model::PoolKey, n: u32| {
        let manager = manager.clone();
        async move {
            for _ in 0..600 {
                let status = manager.get_pool(&key).await.unwrap();
                if status.count(InstanceState::Ready) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            panic!("{key} never had {n} Ready");
        }
    };
    manager.create_pool(small.clone(), spec(4)).await.unwrap();
    ready(small.clone(), 4).await;
    manager.create_pool(large.clone(), spec(2)).await.unwrap();
    ready(large.clone(), 2).await;
    // 4 + 2 x 4 cores: the quota is full.
    manager
        .update_pool(&small, |s| {
            s.min_ready = 8;
            s.max_ready = 8;
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;

    let status = manager.get_pool(&small).await.unwrap();
    assert_eq!(status.sizing.quota.left, Some(0), "{:?}", status.sizing);
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(PlanReason::Quota)
    );
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    assert_eq!(quota_refusals(&mut events), 0);
    assert_eq!(sim.servers().len(), 6);
    manager.shutdown().await.unwrap();
}

/// A boot whose create Nova has not answered when another pool of its
/// flavor polls the limits (its create on its way, or waiting out a 429:
/// held here) is not in Nova's count, though it started before the poll
/// was sent: the gate counts it all the same. Instance quota 3: pool A's
/// one boot is held at its create; past the headroom interval pool B (the
/// same flavor in az2) polls "0 of 3 used" and boots two, not three, so
/// A's create is not refused once it goes through.
#[tokio::test(start_paused = true)]
async fn a_create_on_its_way_at_a_poll_holds_its_quota() {
    let sim = sim_with_quota(3);
    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    let held = cloud.hold_next("create_server", At::Before);
    manager.create_pool(pool(), fixed(1)).await.unwrap();
    held.reached().await;
    // B's first step polls: the flavor's last poll (A's) is due again.
    tokio::time::sleep(DEFAULT_HEADROOM_INTERVAL + Duration::from_secs(1)).await;
    let b = PoolKey::new("db.small", "az2");
    manager.create_pool(b.clone(), fixed(3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = manager.get_pool(&b).await.unwrap();
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&2),
        "{:?}",
        status.sizing
    );

    held.release();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(quota_refusals(&mut events), 0);
    let status = manager.get_pool(&b).await.unwrap();
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1, "{status:?}");
    assert_eq!(sim.servers().len(), 3);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A pool paused while a step is under way (here at its quota look) shows
/// no plan: the pause drops the old one, and the step went on to store the
/// plan it made, "quota", which nothing took down until the pool was
/// resumed: GetPool and the gate-hold gauge read the paused pool as held
/// back by the quota.
#[tokio::test(start_paused = true)]
async fn a_pool_paused_mid_step_shows_no_plan() {
    let sim = sim_with_quota(3);
    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), fixed(5)).await.unwrap();
    wait_ready(&manager, 3).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason),
        Some(PlanReason::Quota),
        "{:?}",
        status.sizing
    );

    // The next step's quota look waits while the pool is paused.
    let looking = cloud.hold_next("boot_headroom", At::Before);
    looking.reached().await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    looking.release();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.sizing.last_plan, None, "{:?}", status.sizing);
    assert_eq!(status.count(InstanceState::Ready), 3, "{status:?}");
    manager.shutdown().await.unwrap();
}

/// A purchase that waited for quota leaves the line when its cold boot
/// starts: from then on the boot itself holds its room. Counted both as a
/// boot and as waiting, it kept a second server's room from the refills
/// for its whole cold boot: with two servers freed, the refills got none.
#[tokio::test(start_paused = true)]
async fn a_waiting_purchase_leaves_the_line_when_its_cold_boot_starts() {
    let sim = sim_with_quota(3);
    let cloud = GatedCloud::new(&sim);
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;
    for id in ["a", "b", "c"] {
        manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let cold = {
        let manager = manager.clone();
        let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
        order.timeout = Some(Duration::from_secs(30 * 60));
        tokio::spawn(async move { manager.allocate(order).await })
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!cold.is_finished(), "no room yet: the purchase waits");

    // Two servers are freed before the purchase's next look at the quota,
    // which finds room for both. Nothing boots at quota: the next server
    // looked at is the purchase's.
    let looking = cloud.hold_next("boot_headroom", At::Before);
    looking.reached().await;
    sim.reset_call_counts();
    manager.release("b", Some(true)).await.unwrap();
    manager.release("c", Some(true)).await.unwrap();
    // Held once the releases have seen their servers gone.
    let booting = cloud.hold_next("get_server", At::Before);
    looking.release();
    booting.reached().await;
    // The purchase takes one freed server, a refill the other.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&2),
        "{:?}",
        status.sizing
    );
    assert_eq!(status.sizing.quota.left, Some(0), "{:?}", status.sizing);

    booting.release();
    let allocation = tokio::time::timeout(Duration::from_secs(600), cold)
        .await
        .expect("the cold boot got through")
        .unwrap()
        .unwrap();
    assert!(!allocation.warm_hit);
    wait_ready(&manager, 1).await;
    assert_eq!(quota_refusals(&mut events), 0);
    assert_eq!(sim.servers().len(), 3);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A started manager on a cloud whose port quota is `max_ports` (compute
/// unlimited), with the test pool created at a fixed target of `target`,
/// and its events from the start.
async fn fixed_pool_under_port_quota(
    max_ports: usize,
    target: u32,
) -> (Arc<SimCloud>, PoolManager, broadcast::Receiver<Event>) {
    let mut config = cloudsim::SimConfig::deterministic();
    config.quotas.max_ports = max_ports;
    let sim = SimCloud::new(config);
    let manager = manager_on(&sim, temp_store());
    let events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), fixed(target)).await.unwrap();
    (sim, manager, events)
}

/// The port quota binds (10), compute does not: every pool server holds its
/// own port from its boot, and takes the tenant's port when it is sold.
/// Filled to its target of 8, the pool would hold 8 ports, and 2 sales
/// (or a sale and its refill) later the quota would refuse a purchase's
/// port with warm servers idle. The pool keeps each unsold server's sale
/// port free: it holds at most 5 servers, and 5 purchases in a row get one.
#[tokio::test(start_paused = true)]
async fn the_pool_leaves_each_unsold_server_the_port_its_sale_takes() {
    let (sim, manager, mut events) = fixed_pool_under_port_quota(10, 8).await;
    let mut most_servers = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        most_servers = most_servers.max(sim.servers().len());
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 5, "{status:?}");
    assert_eq!(
        status.sizing.quota.limited_by.as_deref(),
        Some("ports: 5 left, 5 kept for the sales of unsold servers"),
        "{:?}",
        status.sizing
    );
    for i in 0..5 {
        let id = format!("p{i}");
        let allocation = manager
            .allocate(request(&id, new_volume(), EmptyPoolPolicy::ColdBoot))
            .await
            .unwrap_or_else(|e| panic!("purchase {id} failed: {e}"));
        assert_eq!(allocation.state, AllocationState::Allocated);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            most_servers = most_servers.max(sim.servers().len());
        }
    }
    // Two ports a server, sold or not.
    assert_eq!(most_servers, 5);
    assert_eq!(sim.server_ports().len() + sim.ports().len(), 10);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 0, "{status:?}");
    assert_eq!(
        status.sizing.quota.limited_by.as_deref(),
        Some("ports: 10 of 10 used"),
        "{:?}",
        status.sizing
    );
    assert_eq!(quota_refusals(&mut events), 0);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Pool A (the test pool) filled to its fixed `target` under a port quota
/// of `max_ports`, with no port left for its refills, then a cold-boot
/// purchase ("b1", 10 min timeout) in pool B (db.large in az1, empty): the
/// cloud, the manager, its events from the start and the purchase's answer.
async fn a_cold_boot_beside_a_full_pool(
    max_ports: usize,
    target: u32,
) -> (
    Arc<SimCloud>,
    PoolManager,
    broadcast::Receiver<Event>,
    ManagerResult<Allocation>,
) {
    let (sim, manager, events) = fixed_pool_under_port_quota(max_ports, target).await;
    let b = PoolKey::new("db.large", "az1");
    manager.create_pool(b.clone(), fixed(0)).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), target, "{status:?}");
    assert_eq!(status.sizing.quota.left, Some(0), "{:?}", status.sizing);

    let mut order = request("b1", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.params.pool = b;
    order.timeout = Some(Duration::from_secs(10 * 60));
    let allocated = manager.allocate(order).await;
    (sim, manager, events, allocated)
}

/// What pool A's unsold servers keep for their sales is a refill policy:
/// a purchase is first in line, and judges the port quota as Neutron
/// counts it. Port quota 20, pool A filled to its 10 (10 ports, the other
/// 10 kept for A's sales), pool B empty: B's cold boot gets a port of the
/// 10 Neutron has free, as a sale of A would.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_purchase_takes_ports_kept_for_other_pools_sales() {
    let (sim, manager, mut events, allocated) = a_cold_boot_beside_a_full_pool(20, 10).await;
    let allocation = allocated.unwrap_or_else(|e| panic!("pool B's cold boot failed: {e}"));
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit);
    assert_eq!(sim.server_ports().len() + sim.ports().len(), 12);
    assert_eq!(quota_refusals(&mut events), 0);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A purchase makes the tenant's port before it asks for room, so its
/// server needs one port more, not two. Port quota 4: pool A's two Ready
/// servers hold 2 and keep 2 for their sales; pool B's cold boot makes its
/// tenant port (the 3rd) and boots on the last one, rather than waiting
/// out its timeout for a second.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_needing_the_last_port_gets_it() {
    let (sim, manager, mut events, allocated) = a_cold_boot_beside_a_full_pool(4, 2).await;
    let allocation = allocated.unwrap_or_else(|e| panic!("pool B's cold boot failed: {e}"));
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit);
    assert_eq!(sim.server_ports().len() + sim.ports().len(), 4);
    assert_eq!(quota_refusals(&mut events), 0);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// The test's settings with the cloud's limits read every `every`.
fn polling_every(every: Duration) -> pool_manager::ManagerSettings {
    let mut settings = settings();
    settings.gate.headroom_interval = every;
    settings
}

/// Cold-boot purchases ("cold0", ...) in the test pool, each 30 min
/// timeout, on tasks of their own.
fn cold_orders(manager: &PoolManager, n: usize) -> Vec<JoinHandle<ManagerResult<Allocation>>> {
    (0..n)
        .map(|i| {
            let mut order = request(&format!("cold{i}"), new_volume(), EmptyPoolPolicy::ColdBoot);
            order.timeout = Some(Duration::from_secs(30 * 60));
            spawn_allocate(manager, order)
        })
        .collect()
}

/// Cold boots in line for quota take the room a release frees one each:
/// three wait, one server is freed, and one boots. Woken together, each
/// read the limits, each saw the one freed server, and each booted: two
/// creates the cloud refused for quota, pausing the refills.
#[tokio::test(start_paused = true)]
async fn cold_boots_in_line_boot_no_more_than_the_servers_freed() {
    let sim = sim_with_quota(3);
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;
    for id in ["a", "b", "c"] {
        manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let waiting = cold_orders(&manager, 3);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "no room yet");

    sim.reset_call_counts();
    manager.release("a", Some(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&1),
        "one server freed, one boot: {:?}",
        status.sizing
    );
    assert_eq!(quota_refusals(&mut events), 0);
    assert_eq!(status.sizing.gate.quota_refusals, 0, "{:?}", status.sizing);
    // Its boot done, one is served; the other two wait on.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(waiting.iter().filter(|w| w.is_finished()).count(), 1);
    assert_eq!(sim.call_counts().get("create_server"), Some(&1));
    assert_eq!(quota_refusals(&mut events), 0);
    manager.shutdown().await.unwrap();
}

/// Releases make no refill read the cloud's limits before its poll is due:
/// the pool is at quota and short of its target, no purchase waits, and
/// three releases within one (long) quota poll interval read them no more.
/// Each marked every reading stale, and each pool short of its target
/// read the limits at its next step.
#[tokio::test(start_paused = true)]
async fn releases_do_not_make_refills_read_the_limits_before_they_are_due() {
    let sim = sim_with_quota(3);
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        polling_every(Duration::from_secs(600)),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;
    for id in ["a", "b", "c"] {
        manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    sim.reset_call_counts();
    for id in ["a", "b", "c"] {
        manager.release(id, Some(true)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert_eq!(
        sim.call_counts().get("boot_headroom"),
        None,
        "no poll was due"
    );
    manager.shutdown().await.unwrap();
}

/// While the zone waits out a 429's Retry-After, no refill reads the
/// limits, though a poll falls due meanwhile: a 429 storm is not fed one
/// more call a poll interval.
#[tokio::test(start_paused = true)]
async fn refills_do_not_read_the_limits_while_the_zone_is_throttled() {
    let sim = sim_with_quota(3);
    let (cloud, throttle) = GatedCloud::failing_next(
        &sim,
        "boot_headroom",
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(120)),
            message: "GET /limits: 429".into(),
            unavailable: false,
        },
    );
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(5)).await.unwrap();
    wait_ready(&manager, 3).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = manager
        .get_pool(&pool())
        .await
        .unwrap()
        .sizing
        .gate
        .throttled;
    throttle.store(1, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..60 {
        if manager
            .get_pool(&pool())
            .await
            .unwrap()
            .sizing
            .gate
            .throttled
            > before
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.sizing.gate.throttled > before, "{:?}", status.sizing);

    // Polls fall due every 30 s; the pause lasts at least 120 s.
    sim.reset_call_counts();
    tokio::time::sleep(Duration::from_secs(110)).await;
    assert_eq!(sim.call_counts().get("boot_headroom"), None);
    // Once it is over, the limits are read again.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(sim.call_counts().contains_key("boot_headroom"));
    manager.shutdown().await.unwrap();
}

/// Quota of 3 used by pool A's three sold servers ("a", "b", "c"; pool A
/// paused: no refills), the limits read every 10 min; pool B (db.large in
/// az1, target 0) empty. The cloud, the manager and B's key.
async fn three_sold_and_an_empty_pool(
    cloud: &Arc<GatedCloud>,
    sim: &Arc<SimCloud>,
) -> (PoolManager, PoolKey) {
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        polling_every(Duration::from_secs(600)),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), fixed(3)).await.unwrap();
    wait_ready(&manager, 3).await;
    for id in ["a", "b", "c"] {
        manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let b = PoolKey::new("db.large", "az1");
    manager.create_pool(b.clone(), fixed(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    (manager, b)
}

/// A cold boot in `pool` ("w", 5 min timeout: past it, the next poll is
/// due) on a task of its own.
fn cold_order_in(manager: &PoolManager, pool: &PoolKey) -> JoinHandle<ManagerResult<Allocation>> {
    let mut order = request("w", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.params.pool = pool.clone();
    order.timeout = Some(Duration::from_secs(5 * 60));
    spawn_allocate(manager, order)
}

/// A reading of the limits sent before a server was freed, and answered
/// after, does not show the room: it does not stand for one that does.
/// The waiting cold boot's own first read is held on its way back while
/// "a" is released; it shows the quota full, and the purchase reads again
/// rather than waiting for the next poll (10 min, past its deadline).
#[tokio::test(start_paused = true)]
async fn a_reading_sent_before_a_server_was_freed_is_read_again() {
    let sim = sim_with_quota(3);
    let cloud = GatedCloud::new(&sim);
    let (manager, b) = three_sold_and_an_empty_pool(&cloud, &sim).await;
    let polled = cloud.hold_next("boot_headroom", At::After);
    let waiting = cold_order_in(&manager, &b);
    polled.reached().await;
    manager.release("a", Some(true)).await.unwrap();
    sim.reset_call_counts();
    polled.release();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&1),
        "the purchase boots on the freed room"
    );
    let allocation = waiting.await.unwrap().unwrap();
    assert!(!allocation.warm_hit);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A server warmpool deletes of its own (here a deleted pool's drain) frees
/// room as a release's does: a cold boot waiting for quota boots once it
/// is gone, not at the next poll of the limits (10 min, past its deadline).
#[tokio::test(start_paused = true)]
async fn a_drain_frees_room_for_a_cold_boot_waiting_for_quota() {
    let sim = sim_with_quota(3);
    let cloud = GatedCloud::new(&sim);
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        polling_every(Duration::from_secs(600)),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), fixed(3)).await.unwrap();
    wait_ready(&manager, 3).await;
    let b = PoolKey::new("db.large", "az1");
    manager.create_pool(b.clone(), fixed(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waiting = cold_order_in(&manager, &b);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiting.is_finished(), "no room yet: the purchase waits");

    sim.reset_call_counts();
    manager.delete_pool(&pool()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        sim.call_counts().get("create_server"),
        Some(&1),
        "the purchase boots once the drained servers are gone"
    );
    let allocation = waiting.await.unwrap().unwrap();
    assert!(!allocation.warm_hit);
    manager.shutdown().await.unwrap();
}

/// A cold boot the cloud refuses for quota though the last reading of the
/// limits showed room (the quota lowered since, or taken by another user
/// of the project) reads the limits again before it boots again: the
/// refusal made that reading stale. Trusted, the reading sent a create at
/// each of the purchase's pauses (2 s, 4 s, ... at the test's 1 s poll
/// interval), every one refused, the pool degraded at the third, and no
/// read of the limits until its poll was due (10 min here). Once the
/// quota is raised, the next poll shows the room and the purchase boots.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_refused_for_quota_reads_the_limits_before_it_boots_again() {
    let sim = sim_with_quota(2);
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        polling_every(Duration::from_secs(600)),
    );
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), fixed(0)).await.unwrap();
    // Its read of the limits shows room for two servers; it takes one.
    let first = manager
        .allocate(request("first", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    assert!(!first.warm_hit);
    assert_eq!(sim.call_counts().get("boot_headroom"), Some(&1));

    // The quota is lowered to the one server the project has.
    sim.set_max_instances(1);
    sim.reset_call_counts();
    quota_refusals(&mut events);
    let mut order = request("w", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30 * 60));
    let waiting = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(120)).await;
    let counts = sim.call_counts();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        (counts.get("create_server"), counts.get("boot_headroom")),
        (Some(&1), Some(&1)),
        "one create, refused, then one read of the limits, which show no room: {counts:?}"
    );
    assert_eq!(quota_refusals(&mut events), 1);
    assert!(!status.health.degraded, "{:?}", status.health);
    assert!(!waiting.is_finished(), "no room yet: the purchase waits");

    sim.set_max_instances(2);
    let allocation = tokio::time::timeout(Duration::from_secs(30 * 60), waiting)
        .await
        .expect("the cold boot got through at the next poll")
        .unwrap()
        .unwrap();
    assert!(!allocation.warm_hit);
    assert_eq!(sim.call_counts().get("create_server"), Some(&2));
    assert_eq!(quota_refusals(&mut events), 0);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A cloud whose limits are all unlimited answers no headroom, as the
/// status shows before any poll: the time of the last successful read
/// (none before the first, the first's once it is answered) tells the
/// operator which it is.
#[tokio::test(start_paused = true)]
async fn a_read_of_unlimited_limits_is_told_from_none_yet() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    cloud.show_headroom(pool_manager::cloud::BootHeadroom::UNLIMITED);
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let looking = cloud.hold_next("boot_headroom", At::Before);
    manager.create_pool(pool(), spec(2)).await.unwrap();
    looking.reached().await;
    let quota = manager.get_pool(&pool()).await.unwrap().sizing.quota;
    assert_eq!((quota.left, quota.read_at), (None, None), "{quota:?}");

    let released = tokio::time::Instant::now();
    looking.release();
    wait_ready(&manager, 2).await;
    let quota = manager.get_pool(&pool()).await.unwrap().sizing.quota;
    assert_eq!(
        (quota.polled, quota.left, quota.failing.as_deref()),
        (None, None, None),
        "unlimited: {quota:?}"
    );
    let read_at = quota.read_at.expect("the read is told");
    assert!(read_at >= released, "{quota:?}");
    assert!(read_at <= tokio::time::Instant::now(), "{quota:?}");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// The cloud refuses every create for a quota its limits do not show (the
/// port quota when Neutron will not tell it, say): a poll after each
/// refusal shows room. Once boots that such a poll let through are
/// refused too, no poll lifts the refusal pause: refills come back once
/// per pause, as they did before polls could lift it, not at every poll.
#[tokio::test(start_paused = true)]
async fn refusals_a_poll_cannot_see_keep_refills_to_one_try_per_quota_pause() {
    let sim = sim();
    let (cloud, _refusing) = GatedCloud::refusing(
        &sim,
        "create_server",
        CloudError::QuotaExceeded("Maximum number of ports exceeded".into()),
        true,
    );
    let manager = PoolManager::new(temp_store(), cloud, Arc::new(sim.probe()), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(3)).await.unwrap();
    // Pauses of 30 s, 60 s, 120 s, 240 s: tries at 0 s (and at once on
    // the first poll, which lifted the pause), 30 s, 90 s and 210 s.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let refused = status.sizing.gate.quota_refusals;
    assert!(
        (3..=5 * 3).contains(&refused),
        "{refused} boots of a pool of 3 refused for quota in 5 minutes"
    );
    manager.shutdown().await.unwrap();
}
