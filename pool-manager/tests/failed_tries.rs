//! A purchase's failed tries: how many instances one purchase may discard,
//! what it answers once it stops, how long its cleanups may take, and what
//! a purchase whose task died answers.

mod common;

use common::*;
use pool_manager::cloud::CloudError;
use pool_manager::model::{AllocationState, EmptyPoolPolicy, InstanceState};
use pool_manager::{ManagerError, ManagerSettings, PoolManager};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ATTACH_FAILURE: &str = "injected: port attach failed (HTTP 500)";

/// A failure every instance meets alike (Nova's interface attach failing
/// 500 when the tenant network cannot be bound) is the request's or the
/// cloud's, not the instances': a purchase used to discard every Ready
/// instance in turn, so one bad request emptied the pool. It stops after
/// two, answering the failure.
#[tokio::test(start_paused = true)]
async fn a_failure_every_instance_meets_discards_at_most_two() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 8).await;
    sim.faults().fail_next_port_attach(1000);

    let err = manager
        .allocate(request(
            "order-bad",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Transient(m)) if m.contains(ATTACH_FAILURE)),
        "{err}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status.count(InstanceState::Ready) >= 6,
        "at most two instances discarded: {status:?}"
    );
    sim.faults().fail_next_port_attach(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// Instances whose mysqld is found dead at the claim are discarded
/// without counting toward the limit: nothing of the request was tried on
/// them, so a purchase behind two of them still reaches a live one.
#[tokio::test(start_paused = true)]
async fn dead_mysqlds_at_the_claim_do_not_count_toward_the_limit() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 3).await;
    let mut ready = manager.list_instances(Some(&pool())).await.unwrap();
    ready.retain(|i| i.state == InstanceState::Ready);
    // The order purchases claim them in: oldest Ready first.
    ready.sort_by_key(|i| i.ready_at);
    let servers: Vec<String> = ready.iter().filter_map(|i| i.server_id.clone()).collect();
    assert_eq!(servers.len(), 3, "{ready:?}");
    for silent in &servers[..2] {
        assert!(sim.stop_mysqld(silent));
    }

    let allocation = manager
        .allocate(request(
            "order-live",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .expect("the third, live instance");
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_eq!(allocation.server_id.as_deref(), Some(servers[2].as_str()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// A dead mysqld found at the claim is the instance's alone: nothing of
/// the request was tried on it. With no other instance to be had, the
/// purchase answers that it got none, RESOURCE_EXHAUSTED (counted
/// exhausted), naming the silent instance; it used to answer the probe's
/// FAILED_PRECONDITION, which billing reads as "mend the order" and drops
/// though a retry would be served.
#[tokio::test(start_paused = true)]
async fn a_dead_mysqld_at_the_claim_and_no_other_instance_is_exhausted() {
    for policy in [EmptyPoolPolicy::FailFast, EmptyPoolPolicy::Wait] {
        let sim = sim();
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        let silent = sim.servers().pop().unwrap().server.id;
        assert!(sim.stop_mysqld(&silent));

        let err = manager
            .allocate(request("order-1", new_volume(), policy))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("does not answer")),
            "{policy:?}: {err}"
        );
        let record = manager.get_pool(&pool()).await.unwrap().record;
        assert_eq!(record.allocations_exhausted, 1, "{policy:?}: {record:?}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_consistent(&sim, &manager).await;
    }
}

/// A WAIT purchase whose first try failed waits for another instance with
/// none claimed: its record, ALLOCATING, names no instance, and says no
/// warm hit either. The failed try's warm_hit used to stay on it, though
/// the API says warm_hit is false while no instance is claimed.
#[tokio::test(start_paused = true)]
async fn after_a_failed_try_a_waiting_purchase_is_no_warm_hit() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let first = pool_instances(&manager).await.pop().unwrap();
    sim.faults().fail_next_port_attach(1);
    let mut order = request("order-w", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let purchase = spawn_allocate(&manager, order);
    // Until the failed try's instance is discarded and the purchase waits.
    loop {
        let discarded = manager
            .list_instances(None)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.id == first.id)
            .is_none_or(|i| i.state == InstanceState::Deleting);
        let waiting = manager
            .get_allocation("order-w")
            .await
            .is_ok_and(|a| a.instance_id.is_none());
        if discarded && waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = manager.get_allocation("order-w").await.unwrap();
    assert_eq!(waiting.state, AllocationState::Allocating);
    assert_eq!(waiting.server_id, None);
    assert!(!waiting.warm_hit, "{waiting:?}");

    // Served once the pool has an instance again: waited, not warm.
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    let allocation = purchase.await.unwrap().expect("the next instance");
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(!allocation.warm_hit, "{allocation:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// A cold-boot purchase meeting such a failure used to cold-boot and
/// discard one server after another until its deadline (17 boots in ten
/// minutes); it stops after the second.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_purchase_meeting_the_same_failure_twice_stops() {
    let sim = sim();
    let attaches = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let attaches = attaches.clone();
        move |method| {
            if method == "attach_port" {
                attaches.fetch_add(1, Ordering::SeqCst);
            }
            None
        }
    });
    let manager = started_over(&cloud, temp_store(), 0).await;
    sim.faults().fail_next_port_attach(1000);
    let mut order = request("order-cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(10 * 60));

    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Transient(m)) if m.contains(ATTACH_FAILURE)),
        "{err}"
    );
    assert_eq!(attaches.load(Ordering::SeqCst), 2, "{err}");
    sim.faults().fail_next_port_attach(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// After a failed try, a purchase that finds no other instance (the pool
/// empty, fail-fast; or none before its deadline, waiting) answers the
/// try's failure with its status: the caller used to be told only that the
/// pool had no ready instance, RESOURCE_EXHAUSTED, counted as a miss
/// though the pool had one when the purchase came.
#[tokio::test(start_paused = true)]
async fn after_a_failed_try_no_other_instance_answers_the_trys_failure() {
    for policy in [EmptyPoolPolicy::FailFast, EmptyPoolPolicy::Wait] {
        let sim = sim();
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        sim.faults().fail_next_port_attach(1);

        let err = manager
            .allocate(request("order-1", new_volume(), policy))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagerError::Cloud(CloudError::Transient(m)) if m.contains(ATTACH_FAILURE)),
            "{policy:?}: {err}"
        );
        let record = manager.get_pool(&pool()).await.unwrap().record;
        assert_eq!(record.allocations_exhausted, 0, "{policy:?}: {record:?}");
        assert_eq!(record.allocations_failed, 1, "{policy:?}: {record:?}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_consistent(&sim, &manager).await;
    }
}

/// A cleanup of a failed try that fails (Nova failing the volume's detach)
/// used to replace the try's own failure in the answer. The try's failure
/// is answered; what the cleanup left is the rollback's, then the
/// reconciler's, which ends it.
#[tokio::test(start_paused = true)]
async fn a_failed_trys_cleanup_failing_answers_the_trys_failure() {
    let sim = sim();
    let (cloud, detach_fails) = GatedCloud::refusing(
        &sim,
        "detach_volume",
        CloudError::Transient("detach failed in Nova (HTTP 500)".into()),
        false,
    );
    let manager = started_paused(&cloud, temp_store(), 2).await;
    detach_fails.store(true, Ordering::SeqCst);
    sim.faults().fail_next_port_attach(1);

    let err = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Transient(m)) if m.contains(ATTACH_FAILURE)),
        "{err}"
    );

    detach_fails.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(manager.get_allocation("order-1").await.is_err());
    assert_consistent(&sim, &manager).await;
}

/// Likewise a failed try's port that cannot be deleted in time (Nova
/// refused its detach, and Neutron keeps it bound long after the server
/// went): the purchase stops with the try's failure, the port still on its
/// record, and the rollback or the reconciler deletes it.
#[tokio::test(start_paused = true)]
async fn a_failed_trys_port_left_bound_answers_the_trys_failure() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        member_port_policy: true,
        ..sim().config()
    });
    let cloud = GatedCloud::with_fault(&sim, |method| {
        (method == "detach_port").then(|| {
            CloudError::Conflict(
                "Cannot 'detach_interface' instance while it is in vm_state error".into(),
            )
        })
    });
    let manager = started_paused(&cloud, temp_store(), 2).await;
    sim.faults()
        .slow_port_unbind(pool_manager::cleanup_budget(settings().poll_interval) * 2);
    sim.faults().fail_next_volume_attach(1);

    let err = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Transient(m)) if m.contains("injected: volume attach failed")),
        "{err}"
    );

    tokio::time::sleep(pool_manager::cleanup_budget(settings().poll_interval) * 2).await;
    manager.reconcile().await.unwrap();
    assert!(manager.get_allocation("order-1").await.is_err());
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert_consistent(&sim, &manager).await;
}

/// Cleanups (a release's delete until gone, a rollback) had 30 polls, 15 s
/// at `poll_interval = "500ms"`: a release whose server took 20 s to go
/// failed UNAVAILABLE. They have two minutes at least.
#[tokio::test(start_paused = true)]
async fn a_release_outlasts_thirty_short_polls() {
    let base = sim().config();
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        latencies: cloudsim::Latencies {
            delete: Duration::from_secs(20),
            ..base.latencies.clone()
        },
        ..base
    });
    let manager = PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            poll_interval: Duration::from_millis(500),
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();

    let released = manager.release("order-1", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
}

/// A purchase whose task died (a panic: a bug) was answered "shutting
/// down; call again once it is back", while nothing was shutting down.
#[tokio::test(start_paused = true)]
async fn a_purchase_whose_task_panicked_is_an_internal_error() {
    let sim = sim();
    let panic_now = Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(&sim, {
        let panic_now = panic_now.clone();
        move |method| {
            if method == "create_port" && panic_now.swap(false, Ordering::SeqCst) {
                panic!("a bug in the purchase");
            }
            None
        }
    });
    let manager = started_paused(&cloud, temp_store(), 1).await;
    panic_now.store(true, Ordering::SeqCst);

    let err = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Internal(m) if m.contains("unexpectedly") && m.contains("log")),
        "{err}"
    );
}

/// A 429 with a Retry-After longer than the attach may take: the cloud
/// refused the call before acting on it.
fn throttled_for_ten_minutes(method: &str) -> CloudError {
    CloudError::Throttled {
        retry_after: Some(Duration::from_secs(600)),
        message: format!("{method}: This request was rate-limited. (HTTP 429)"),
        unavailable: false,
    }
}

/// The pool's instances, by id.
async fn pool_instances(manager: &PoolManager) -> Vec<pool_manager::model::Instance> {
    let mut instances = manager.list_instances(Some(&pool())).await.unwrap();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances
}

/// A paused pool of 3 Ready instances on `sim`, whose attach calls
/// `failing` picks answer `answer` once the switch returned is on (off
/// at first, so the pool fills).
async fn attaches_failing_when_on(
    sim: &Arc<cloudsim::SimCloud>,
    failing: impl Fn(&str) -> bool + Send + Sync + 'static,
    answer: impl Fn(&str) -> CloudError + Send + Sync + 'static,
) -> (PoolManager, Arc<AtomicBool>) {
    let on = Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(sim, {
        let on = on.clone();
        move |method| (failing(method) && on.load(Ordering::SeqCst)).then(|| answer(method))
    });
    (started_paused(&cloud, temp_store(), 3).await, on)
}

/// A fail-fast purchase of `order` that must be answered throttled.
async fn throttled_purchase(manager: &PoolManager, order: &str) {
    let err = manager
        .allocate(request(order, new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Throttled { .. })),
        "{err}"
    );
}

fn an_attach(method: &str) -> bool {
    matches!(method, "attach_volume" | "attach_port")
}

/// Both attaches of a try refused 429 with a Retry-After past the attach's
/// deadline (a Nova rate limiter): nothing reached the instance, yet it was
/// discarded, so each call billing made again cost a warm instance. It
/// goes back to the pool, unclaimed, and serves the order once the cloud
/// takes attaches again.
#[tokio::test(start_paused = true)]
async fn attaches_all_refused_429_put_the_instance_back() {
    let sim = sim();
    let (manager, throttling) =
        attaches_failing_when_on(&sim, an_attach, throttled_for_ten_minutes).await;
    let before = pool_instances(&manager).await;
    throttling.store(true, Ordering::SeqCst);

    throttled_purchase(&manager, "order-1").await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 3, "{status:?}");
    assert_eq!(status.count(InstanceState::Deleting), 0, "{status:?}");
    // Unclaimed, as it was before the purchase.
    assert_eq!(pool_instances(&manager).await, before);
    assert!(manager.get_allocation("order-1").await.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;

    throttling.store(false, Ordering::SeqCst);
    let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    let allocation = manager.allocate(order).await.unwrap();
    assert!(allocation.warm_hit);
    assert_eq!(sim.servers().len(), 3, "no server was deleted or booted");
    assert_consistent(&sim, &manager).await;
}

/// One attach accepted, the other refused 429: the instance was touched
/// (a tenant's port or volume went on it), and it is discarded as before.
#[tokio::test(start_paused = true)]
async fn one_attach_accepted_and_the_other_refused_429_still_discards() {
    for (refused, accepted) in [
        ("attach_volume", "attach_port"),
        ("attach_port", "attach_volume"),
    ] {
        let sim = sim();
        let (manager, throttling) = attaches_failing_when_on(
            &sim,
            move |method| method == refused,
            throttled_for_ten_minutes,
        )
        .await;
        throttling.store(true, Ordering::SeqCst);

        throttled_purchase(&manager, "order-1").await;
        assert_eq!(sim.call_counts().get(accepted), Some(&1), "{accepted}");
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            status.count(InstanceState::Ready),
            2,
            "{refused}: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        let instances = pool_instances(&manager).await;
        assert_eq!(
            instances.len(),
            2,
            "{refused}: discarded and deleted: {instances:?}"
        );
        assert_consistent(&sim, &manager).await;
    }
}

/// A 503 naming a Retry-After (maintenance) is waited out as a 429 is, but
/// it may come from behind what already began the attach: both attaches
/// answered so leave the instance touched, and it is discarded.
#[tokio::test(start_paused = true)]
async fn attaches_answered_503_with_retry_after_still_discard() {
    let sim = sim();
    let (manager, unavailable) =
        attaches_failing_when_on(&sim, an_attach, |method| CloudError::Throttled {
            retry_after: Some(Duration::from_secs(600)),
            message: format!("{method}: Service Unavailable (HTTP 503)"),
            unavailable: true,
        })
        .await;
    unavailable.store(true, Ordering::SeqCst);

    throttled_purchase(&manager, "order-1").await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool_instances(&manager).await.len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// A purchase holds a Claimed instance while its pool is deleted: the
/// drain, which counts only unclaimed instances, deletes the pool record.
/// The purchase's attaches then all answer 429, so nothing reached the
/// instance; it used to go back `Ready` into a pool that no longer existed,
/// with no replenisher left to drain it, and every reconcile pass probed
/// it and kept it: a server up for good. It is discarded as a drain would.
#[tokio::test(start_paused = true)]
async fn an_instance_put_back_after_its_pool_was_drained_is_deleted() {
    let sim = sim();
    let throttling = Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(&sim, {
        let throttling = throttling.clone();
        move |method| {
            (an_attach(method) && throttling.load(Ordering::SeqCst))
                .then(|| throttled_for_ten_minutes(method))
        }
    });
    let manager = started_paused(&cloud, temp_store(), 1).await;
    throttling.store(true, Ordering::SeqCst);

    let attaching = cloud.hold_next("attach_volume", At::Before);
    let buying = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attaching.reached().await;
    let claimed = pool_instances(&manager).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].state, InstanceState::Claimed);

    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    attaching.release();
    let err = buying.await.unwrap().unwrap_err();
    assert!(
        !err.to_string().contains("back in the pool"),
        "the purchase says its instance is back in a pool that is gone: {err}"
    );

    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    manager.reconcile().await.unwrap();
    let left = manager.list_instances(None).await.unwrap();
    assert!(
        left.is_empty(),
        "the drained pool's instance is kept: {left:?}"
    );
    assert!(
        sim.servers().is_empty(),
        "the drained pool's server is left up: {:?}",
        sim.servers()
    );
    assert_consistent(&sim, &manager).await;
}

/// The same instance, put back `Ready` before its pool's record went (a
/// crash between the two, or a version that did not look): the reconciler
/// discards a Ready instance whose pool is gone rather than probe and keep
/// it for good. Not one whose pool was created again under its key: that
/// pool takes it.
#[tokio::test(start_paused = true)]
async fn reconcile_discards_a_ready_instance_whose_pool_is_gone() {
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 2).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    store.delete_pool(&pool()).await.unwrap();
    store.flush().await.unwrap();

    let manager = manager_on(&sim, store.clone());
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let left = manager.list_instances(None).await.unwrap();
    assert!(
        left.is_empty(),
        "the gone pool's instances are kept: {left:?}"
    );
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event.kind,
                pool_manager::events::EventKind::LeakDeleted { .. }
            ),
            "an instance's server was taken for a leak: {event:?}"
        );
    }
    assert_consistent(&sim, &manager).await;
}

/// A pool created again before the pass: the pass keeps its Ready
/// instances. (One created while the pass runs: the next test.)
#[tokio::test(start_paused = true)]
async fn reconcile_leaves_a_pool_created_again_its_ready_instances() {
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let before = pool_instances(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    store.delete_pool(&pool()).await.unwrap();
    let mut spec = spec(2);
    spec.paused = true;
    store
        .put_pool(&pool_manager::model::PoolRecord::new(pool(), spec))
        .await
        .unwrap();
    store.flush().await.unwrap();

    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.reconcile().await.unwrap();
    assert_eq!(pool_instances(&manager).await, before);
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// The same pool created again while a pass is between finding the pool
/// gone and discarding its instances: the discard, judged again under the
/// pool lock, leaves them to the pool. The pass is held right after its
/// look at the pool (the set-aside check that follows a missing record).
#[tokio::test(start_paused = true)]
async fn a_pool_created_again_during_a_pass_keeps_the_instances_it_found_orphaned() {
    use pool_manager::store::RecordKind;
    #[derive(Default)]
    struct HoldAfterPoolLook {
        armed: AtomicBool,
        arrived: tokio::sync::Notify,
        go: tokio::sync::Notify,
    }
    struct Hooks(Arc<HoldAfterPoolLook>);
    #[async_trait::async_trait]
    impl StoreHooks for Hooks {
        async fn before_is_set_aside(&self, kind: RecordKind) {
            if kind == RecordKind::Pool && self.0.armed.swap(false, Ordering::SeqCst) {
                self.0.arrived.notify_one();
                self.0.go.notified().await;
            }
        }
    }
    let sim = sim();
    let hold = Arc::new(HoldAfterPoolLook::default());
    let store = HookedStore::new(Hooks(hold.clone()));
    let manager = started(&sim, store.clone(), 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let before = pool_instances(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    store.inner.delete_pool(&pool()).await.unwrap();
    store.inner.flush().await.unwrap();

    let manager = manager_on(&sim, store.clone());
    hold.armed.store(true, Ordering::SeqCst);
    let starting = tokio::spawn({
        let manager = manager.clone();
        async move { manager.start().await }
    });
    hold.arrived.notified().await;
    let mut spec = spec(2);
    spec.paused = true;
    store
        .inner
        .put_pool(&pool_manager::model::PoolRecord::new(pool(), spec))
        .await
        .unwrap();
    store.inner.flush().await.unwrap();
    hold.go.notify_one();
    starting.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool_instances(&manager).await, before);
    assert_eq!(sim.servers().len(), 2, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// The sim's probe, but every connection refused while `refusing` is set:
/// warmpoold's own side failing (its management network down, its file
/// descriptors used up), every mysqld fine.
struct ProbeRefusingWhenOn {
    sim: cloudsim::SimProbe,
    refusing: AtomicBool,
    /// Each refusal after the 5 s a probe may take: a mysqld that never
    /// answers, not one that refuses at once.
    timing_out: AtomicBool,
    refused: AtomicU32,
}

/// A paused pool of `n` Ready instances probed by [`ProbeRefusingWhenOn`],
/// refusing nothing yet.
async fn probed_by_a_switch(
    sim: &Arc<cloudsim::SimCloud>,
    n: u32,
) -> (PoolManager, Arc<ProbeRefusingWhenOn>) {
    let probe = Arc::new(ProbeRefusingWhenOn {
        sim: sim.probe(),
        refusing: AtomicBool::new(false),
        timing_out: AtomicBool::new(false),
        refused: AtomicU32::new(0),
    });
    let manager = PoolManager::new(temp_store(), sim.clone(), probe.clone(), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(n)).await.unwrap();
    wait_ready(&manager, n).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    (manager, probe)
}

#[async_trait::async_trait]
impl pool_manager::probe::Probe for ProbeRefusingWhenOn {
    async fn probe(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<String, pool_manager::probe::ProbeError> {
        if self.refusing.load(Ordering::SeqCst) {
            if self.timing_out.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(pool_manager::probe::ProbeError::Connect {
                addr,
                reason: "Too many open files (os error 24)".into(),
            });
        }
        self.sim.probe(addr).await
    }
}

/// A probe failing on warmpoold's side makes every instance's mysqld look
/// dead at its claim. Such an instance was deleted without counting
/// toward MAX_DISCARDED_PER_PURCHASE and the next one claimed, its port
/// deleted and made anew each time: one purchase emptied the pool, which
/// a paused pool never refills. Now an instance found silent at its claim
/// goes back to the pool for the reconciler to judge, nothing detached
/// and the order's port kept: its look is none of the reconciler's two,
/// so a pass that hears it again replaces nothing.
#[tokio::test(start_paused = true)]
async fn a_probe_failing_on_warmpools_side_does_not_empty_the_pool() {
    let sim = sim();
    let (manager, probe) = probed_by_a_switch(&sim, 4).await;
    let before = pool_instances(&manager).await;
    probe.refusing.store(true, Ordering::SeqCst);
    sim.reset_call_counts();

    let err = manager
        .allocate(request(
            "order-blip",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("does not answer")),
        "{err}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 4, "{status:?}");
    let calls = sim.call_counts();
    assert_eq!(calls.get("delete_server"), None, "{calls:?}");
    assert_eq!(calls.get("detach_volume"), None, "{calls:?}");
    assert_eq!(calls.get("detach_port"), None, "{calls:?}");
    assert_eq!(calls.get("create_port"), Some(&1), "{calls:?}");

    // A pass still in the blip is the reconciler's first silent look,
    // not its second: nothing replaced. Over by its next: nor then.
    manager.reconcile().await.unwrap();
    assert_eq!(pool_instances(&manager).await, before);
    probe.refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(pool_instances(&manager).await, before);
    let allocation = manager
        .allocate(request(
            "order-after",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .expect("a pool instance, its mysqld answering again");
    assert_eq!(allocation.state, AllocationState::Allocated);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// A waiting purchase that put back the one instance it found silent
/// does not claim it again while it is counted silent, and is served by it
/// once a reconcile pass hears its mysqld again, without waiting for its
/// deadline or for any write to the store.
#[tokio::test(start_paused = true)]
async fn a_waiting_purchase_gets_the_instance_it_found_silent_once_it_answers() {
    let sim = sim();
    let (manager, probe) = probed_by_a_switch(&sim, 1).await;
    let [instance] = &pool_instances(&manager).await[..] else {
        panic!("one instance")
    };
    probe.refusing.store(true, Ordering::SeqCst);
    let mut order = request("order-w", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let purchase = spawn_allocate(&manager, order);
    while probe.refused.load(Ordering::SeqCst) == 0
        || pool_instances(&manager).await[0].state != InstanceState::Ready
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(probe.refused.load(Ordering::SeqCst), 1, "claimed again");
    assert!(!purchase.is_finished());

    probe.refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    let allocation = tokio::time::timeout(Duration::from_secs(10), purchase)
        .await
        .expect("served once the pass heard it")
        .unwrap()
        .unwrap();
    assert_eq!(allocation.instance_id.as_ref(), Some(&instance.id));
    assert_consistent(&sim, &manager).await;
}

/// An attach answered 503 with a Retry-After by what stands in front of a
/// Nova that already did it (a maintenance page, an overloaded proxy) is
/// sent again after the pause, and Nova then refuses it: the volume is
/// already attached (here cloudsim's "status must be 'available'"), the
/// port still in use, by the purchase's own server. The volume's refusal
/// was blamed on the order (FAILED_PRECONDITION "cannot be attached",
/// which billing drops) and the port's on the instance (discarded); both
/// attaches are the purchase's, and it goes on to wait for them.
#[tokio::test(start_paused = true)]
async fn an_attach_done_behind_a_503_is_not_refused_when_sent_again() {
    for method in ["attach_volume", "attach_port"] {
        let sim = sim();
        let cloud = GatedCloud::new(&sim);
        let manager = started_paused(&cloud, temp_store(), 2).await;
        let mut ready = pool_instances(&manager).await;
        ready.sort_by_key(|i| i.ready_at);
        let first = ready[0].server_id.clone();
        cloud.lose_next_answer_as(
            method,
            CloudError::Throttled {
                retry_after: Some(Duration::from_secs(1)),
                message: format!("{method}: Service Unavailable (HTTP 503)"),
                unavailable: true,
            },
        );
        sim.reset_call_counts();

        let allocation = manager
            .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(allocation.state, AllocationState::Allocated, "{method}");
        assert_eq!(
            allocation.server_id, first,
            "{method}: not the first instance"
        );
        assert_eq!(sim.call_counts().get(method), Some(&2), "{method}");
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            status.count(InstanceState::Ready),
            1,
            "{method}: {status:?}"
        );
        assert_eq!(sim.call_counts().get("delete_server"), None, "{method}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_consistent(&sim, &manager).await;
    }
}

/// A pool's supply (Ready, warming, booting) exceeds max_ready by an
/// instance a purchase puts back: its claim took it out of the supply, and
/// the refill booted for it while the purchase probed it (5 s here) is not
/// undone. Once the refill is Ready, the oldest Ready instance above
/// max_ready is retired, and the pool is back at max_ready.
#[tokio::test(start_paused = true)]
async fn an_instance_put_back_beside_its_refill_is_retired_above_max_ready() {
    let sim = sim();
    let probe = Arc::new(ProbeRefusingWhenOn {
        sim: sim.probe(),
        refusing: AtomicBool::new(false),
        timing_out: AtomicBool::new(true),
        refused: AtomicU32::new(0),
    });
    let manager = PoolManager::new(temp_store(), sim.clone(), probe.clone(), settings());
    manager.start().await.unwrap();
    let mut spec = spec(2);
    spec.max_ready = 2;
    manager.create_pool(pool(), spec).await.unwrap();
    wait_ready(&manager, 2).await;
    let supply = || async {
        let status = manager.get_pool(&pool()).await.unwrap();
        [
            InstanceState::Ready,
            InstanceState::Warming,
            InstanceState::Booting,
        ]
        .map(|s| status.count(s))
        .iter()
        .sum::<u32>()
    };
    sim.reset_call_counts();
    probe.refusing.store(true, Ordering::SeqCst);

    let purchase = spawn_allocate(
        &manager,
        request("order-silent", new_volume(), EmptyPoolPolicy::FailFast),
    );
    let mut most = 0;
    while !purchase.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        most = most.max(supply().await);
    }
    probe.refusing.store(false, Ordering::SeqCst);
    let err = purchase.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    for _ in 0..180 {
        most = most.max(supply().await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(most, 3, "max_ready 2, and the instance put back");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_eq!(supply().await, 2, "{status:?}");
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("delete_server"), Some(&1), "{calls:?}");
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// A server mid-reboot (Nova's REBOOT, which warmpool reads as a status it
/// has no name for, busy with the task `rebooting`) has a silent mysqld
/// until the reboot is over. A purchase claiming its instance then took
/// the server for broken (anything but ACTIVE was) and deleted it; busy is
/// not broken, as the reconciler has it: the instance goes back to the
/// pool, for the reconciler to judge once the task is over.
#[tokio::test(start_paused = true)]
async fn an_instance_whose_server_reboots_at_its_claim_goes_back() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let server = sim.servers().pop().unwrap().server.id;
    assert!(sim.stop_mysqld(&server));
    assert!(sim.set_server_task_state(&server, Some("rebooting")));
    cloud.show_server(&server, |s| {
        s.status = pool_manager::cloud::ServerStatus::Other;
        s.mysql_addr = None;
    });
    sim.reset_call_counts();

    let err = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("back in the pool")),
        "{err}"
    );
    let [instance] = &pool_instances(&manager).await[..] else {
        panic!("one instance")
    };
    assert_eq!(instance.state, InstanceState::Ready, "{instance:?}");
    assert_eq!(sim.call_counts().get("delete_server"), None);
}

/// A fail-fast purchase that found the pool's one Ready instance silent
/// at its claim and put it back was told "pool ... has no ready
/// instance", while GetPool showed it Ready. It says the pool's Ready
/// instance was silent at the claim and is back in the pool; it is still
/// counted exhausted (the purchase found no instance it could use).
#[tokio::test(start_paused = true)]
async fn a_purchase_that_put_back_a_silent_instance_says_so_not_that_the_pool_is_empty() {
    for policy in [EmptyPoolPolicy::FailFast, EmptyPoolPolicy::Wait] {
        let sim = sim();
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        let silent = sim.servers().pop().unwrap().server.id;
        assert!(sim.stop_mysqld(&silent));

        let err = manager
            .allocate(request("order-1", new_volume(), policy))
            .await
            .unwrap_err();
        let ManagerError::ResourceExhausted(message) = &err else {
            panic!("{policy:?}: {err}")
        };
        assert!(
            !message.contains("no ready instance")
                && message.contains("1 Ready instance was silent at its claim"),
            "{policy:?}: {message}"
        );
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(status.count(InstanceState::Ready), 1, "{policy:?}");
        assert_eq!(status.record.allocations_exhausted, 1, "{policy:?}");
    }
}

/// Holds the first flush after instance `watched` is written back Ready
/// and unclaimed (a purchase's put-back), and notes whether an order
/// other than `putting_back` claims it.
#[derive(Default)]
struct HoldPutBack {
    watched: std::sync::Mutex<Option<String>>,
    putting_back: &'static str,
    hold_next_flush: AtomicBool,
    claimed_by_another: AtomicBool,
    arrived: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

struct PutBackHooks(Arc<HoldPutBack>);

#[async_trait::async_trait]
impl StoreHooks for PutBackHooks {
    fn written(&self, write: Write) {
        let Write::Instance(id, Some(instance)) = write else {
            return;
        };
        let mut watched = self.0.watched.lock().unwrap();
        if watched.as_deref() != Some(id.as_str()) {
            return;
        }
        if instance.state == InstanceState::Claimed
            && instance.request_id.as_deref() != Some(self.0.putting_back)
        {
            self.0.claimed_by_another.store(true, Ordering::SeqCst);
        }
        if instance.state == InstanceState::Ready && instance.request_id.is_none() {
            // Once: a second put-back of it is another purchase's.
            *watched = None;
            self.0.hold_next_flush.store(true, Ordering::SeqCst);
        }
    }
    async fn before_flush(&self) -> pool_manager::store::StoreResult<()> {
        if self.0.hold_next_flush.swap(false, Ordering::SeqCst) {
            self.0.arrived.notify_one();
            self.0.go.notified().await;
        }
        Ok(())
    }
}

/// An instance found silent at its claim was put back, which wakes the
/// purchases and lets any claim it, before it was noted silent at the
/// claim: a purchase coming in between took it first (the oldest) over
/// another Ready instance, and spent a probe on it. Noted first, it is
/// claimed after the others.
#[tokio::test(start_paused = true)]
async fn an_instance_put_back_silent_is_claimed_after_the_others_at_once() {
    let sim = sim();
    let hold = Arc::new(HoldPutBack {
        putting_back: "order-1",
        ..Default::default()
    });
    let store = HookedStore::new(PutBackHooks(hold.clone()));
    let manager = started_paused(&GatedCloud::new(&sim), store, 2).await;
    let mut ready = pool_instances(&manager).await;
    ready.sort_by_key(|i| i.ready_at);
    let (oldest, other) = (&ready[0], &ready[1]);
    assert!(sim.stop_mysqld(oldest.server_id.as_deref().unwrap()));
    *hold.watched.lock().unwrap() = Some(oldest.id.clone());

    let first = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    hold.arrived.notified().await;
    let second = spawn_allocate(
        &manager,
        request("order-2", new_volume(), EmptyPoolPolicy::FailFast),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    hold.go.notify_one();
    let second = second.await.unwrap().expect("the other instance");
    assert_eq!(second.instance_id.as_ref(), Some(&other.id));
    assert!(
        !hold.claimed_by_another.load(Ordering::SeqCst),
        "the second purchase claimed the instance put back silent"
    );
    first.await.unwrap().unwrap_err();
}

/// An attach of the tenant's existing volume answered 503 with a
/// Retry-After (nothing reached Nova) while another (a second order of
/// the same volume, the tenant) attaches it: sent again, Nova refuses it
/// (the volume is attaching), to no server either lists yet. That was
/// taken for the purchase's own attach; once the other attach failed and
/// the volume was available again, the purchase blamed the instance for a
/// failed attach and went on to the next. The volume being attached by
/// another is the request's: only a volume the order made is attached by
/// nothing else.
#[tokio::test(start_paused = true)]
async fn an_existing_volume_another_attaches_after_a_503_is_not_taken_for_the_purchases() {
    use pool_manager::cloud::{Cloud, ServerSpec};
    use pool_manager::model::VolumeSource;
    let sim = sim();
    let sent = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let sent = sent.clone();
        move |method| {
            (method == "attach_volume" && sent.fetch_add(1, Ordering::SeqCst) == 0).then(|| {
                CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(1)),
                    message: "attach_volume: Service Unavailable (HTTP 503)".into(),
                    unavailable: true,
                }
            })
        }
    });
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let other = sim
        .create_server(&ServerSpec {
            name: "tenant-a-db".into(),
            pool: pool(),
            image: "mysql-8.0".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let first_attach = cloud.hold_next("attach_volume", At::Before);
    let purchase = spawn_allocate(
        &manager,
        request(
            "order-1",
            VolumeSource::Existing {
                volume_id: volume.clone(),
            },
            EmptyPoolPolicy::FailFast,
        ),
    );
    first_attach.reached().await;
    let second_attach = cloud.hold_next("attach_volume", At::Before);
    first_attach.release();
    second_attach.reached().await;
    sim.faults().fail_next_volume_attach_on_host(1);
    sim.attach_volume(&other.id, &volume).await.unwrap();
    second_attach.release();

    let err = purchase
        .await
        .unwrap()
        .expect_err("the volume was being attached by another");
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("cannot be attached")),
        "{err}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1, "{status:?}");
    sim.delete_server(&other.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// A port attach answered 503 with a Retry-After, then, sent again,
/// refused 409 because the server is locked (Nova's "Instance ... is
/// locked"): the conflict was taken for the purchase's own attach done
/// behind the 503, and the purchase waited out the attach's grace (5 min)
/// for a binding that never came, past its deadline. A locked server takes
/// no attach: the refusal is the instance's, and the next one serves.
#[tokio::test(start_paused = true)]
async fn a_locked_servers_refusal_after_a_503_is_not_taken_for_the_purchases_attach() {
    let sim = sim();
    let locked = Arc::new(std::sync::Mutex::new(None::<String>));
    let sent = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let (locked, sent) = (locked.clone(), sent.clone());
        move |method| {
            let server = locked.lock().unwrap().clone()?;
            if method != "attach_port" {
                return None;
            }
            // The locked server's two attaches; the next instance's passes.
            match sent.fetch_add(1, Ordering::SeqCst) {
                0 => Some(CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(1)),
                    message: "attach_port: Service Unavailable (HTTP 503)".into(),
                    unavailable: true,
                }),
                1 => Some(CloudError::Conflict(format!("Instance {server} is locked"))),
                _ => None,
            }
        }
    });
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let mut ready = pool_instances(&manager).await;
    ready.sort_by_key(|i| i.ready_at);
    let (first, second) = (
        ready[0].server_id.clone().unwrap(),
        ready[1].server_id.clone().unwrap(),
    );
    cloud.show_server(&first, |s| s.locked = true);
    *locked.lock().unwrap() = Some(first.clone());
    let started = tokio::time::Instant::now();

    let mut order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(60));
    let allocation = manager
        .allocate(order)
        .await
        .expect("the unlocked instance");
    assert_eq!(allocation.server_id.as_ref(), Some(&second));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A pool of one instance whose mysqld is silent and whose server Nova
/// shows in `status` with no address, the call counts reset: where the
/// tests of a claim on a server broken for good start.
async fn silent_on_a_server_shown(
    status: pool_manager::cloud::ServerStatus,
) -> (Arc<cloudsim::SimCloud>, PoolManager, String) {
    let sim = sim();
    let (_, manager, server) = the_oldest_silent_on_a_server_shown(&sim, 1, status).await;
    (sim, manager, server)
}

/// A paused pool of `n` Ready instances on `sim` whose oldest, the one a
/// purchase claims first, is silent on a server Nova shows in `status`
/// with no address, the call counts reset; the cloud, and that server's id.
async fn the_oldest_silent_on_a_server_shown(
    sim: &Arc<cloudsim::SimCloud>,
    n: u32,
    status: pool_manager::cloud::ServerStatus,
) -> (Arc<GatedCloud>, PoolManager, String) {
    let cloud = GatedCloud::new(sim);
    let (manager, server) = the_oldest_silent_over(&cloud, n, status).await;
    (cloud, manager, server)
}

/// [`the_oldest_silent_on_a_server_shown`] over `cloud`, for a test that
/// answers some calls in cloudsim's stead ([`GatedCloud::with_fault`]).
async fn the_oldest_silent_over(
    cloud: &Arc<GatedCloud>,
    n: u32,
    status: pool_manager::cloud::ServerStatus,
) -> (PoolManager, String) {
    let sim = &cloud.sim;
    let manager = started_paused(cloud, temp_store(), n).await;
    let mut ready = pool_instances(&manager).await;
    ready.sort_by_key(|i| i.ready_at);
    let server = ready[0].server_id.clone().unwrap();
    assert!(sim.stop_mysqld(&server));
    cloud.show_server(&server, move |s| {
        s.status = status;
        s.mysql_addr = None;
    });
    sim.reset_call_counts();
    (manager, server)
}

/// A server Nova shows in ERROR at the claim is discarded, and its delete
/// is no wait of the purchase's: nothing of the tenant's reached it (the
/// claim's probe runs before any attach), so there is no volume for its
/// record to watch over until the server is gone. The discard used to wait
/// for the server to be gone for up to the cleanup budget (2 min), with
/// Nova showing it `deleting` for 3: the purchase, due in 30 s, then failed
/// RESOURCE_EXHAUSTED, counted a miss of the pool, with a Ready instance
/// left in it. It is served by that instance, and the server, once Nova is
/// done, is gone with no record left of it.
#[tokio::test(start_paused = true)]
async fn a_broken_server_discarded_at_the_claim_is_not_waited_for_until_gone() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.latencies.delete = Duration::from_secs(180);
    let sim = cloudsim::SimCloud::new(config);
    let (_, manager, broken) =
        the_oldest_silent_on_a_server_shown(&sim, 2, pool_manager::cloud::ServerStatus::Error)
            .await;
    let other = pool_instances(&manager)
        .await
        .into_iter()
        .find(|i| i.server_id.as_deref() != Some(broken.as_str()))
        .unwrap();

    let mut order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(30));
    let allocation = manager
        .allocate(order)
        .await
        .expect("served by the other Ready instance");
    assert_eq!(allocation.instance_id.as_ref(), Some(&other.id));
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.record.allocations_exhausted, 0,
        "{:?}",
        status.record
    );
    assert_eq!(sim.call_counts().get("delete_server"), Some(&1));

    tokio::time::sleep(Duration::from_secs(240)).await;
    assert!(sim.server(&broken).is_none(), "{:?}", sim.server(&broken));
    let instances = pool_instances(&manager).await;
    assert!(
        instances
            .iter()
            .all(|i| i.server_id.as_deref() != Some(broken.as_str())),
        "{instances:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// The one delete sent for a broken server discarded at the claim may be
/// accepted and then failed by the compute host, the server left as it was:
/// its record is gone by then, and the reconciler deletes it as a leak
/// (nothing of a tenant's is attached to it).
#[tokio::test(start_paused = true)]
async fn a_broken_servers_delete_the_host_failed_after_the_claim_is_swept_as_a_leak() {
    let sim = sim();
    let (cloud, manager, broken) =
        the_oldest_silent_on_a_server_shown(&sim, 2, pool_manager::cloud::ServerStatus::Error)
            .await;
    cloud.undo_next_delete();

    manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .expect("served by the other Ready instance");
    assert!(sim.server(&broken).is_some(), "the delete was undone");

    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(sim.server(&broken).is_none(), "{:?}", sim.server(&broken));
    assert_consistent(&sim, &manager).await;
}

/// The one delete sent for a broken server discarded at the claim may be
/// answered 503 with a Retry-After (or 429, or another 5xx): the purchase
/// sent it again until the cleanup budget (2 min) was spent, holding the
/// buyer on a server already written off, with a Ready instance left in
/// the pool for it. Its record says `Deleting`, which the reconciler
/// deletes: the purchase sends the delete once and goes on to the next
/// instance, and a reconcile pass deletes the server once the cloud takes
/// deletes again.
#[tokio::test(start_paused = true)]
async fn a_broken_servers_delete_answered_503_is_sent_once_and_left_to_the_reconciler() {
    let sim = sim();
    let (cloud, unavailable, deletes) = deletes_unavailable_when_on(&sim);
    let (manager, broken) =
        the_oldest_silent_over(&cloud, 2, pool_manager::cloud::ServerStatus::Error).await;
    let other = pool_instances(&manager)
        .await
        .into_iter()
        .find(|i| i.server_id.as_deref() != Some(broken.as_str()))
        .unwrap();
    let started = tokio::time::Instant::now();

    let allocation = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .expect("served by the other Ready instance");
    let took = started.elapsed();
    assert_eq!(allocation.instance_id.as_ref(), Some(&other.id));
    // The claim's probe of the silent mysqld takes up to its 5 s timeout.
    assert!(took < Duration::from_secs(10), "the purchase took {took:?}");
    assert_eq!(deletes.load(Ordering::SeqCst), 1, "deletes sent");
    let discarded: Vec<_> = pool_instances(&manager)
        .await
        .into_iter()
        .filter(|i| i.server_id.as_deref() == Some(broken.as_str()))
        .collect();
    assert!(
        matches!(&discarded[..], [i] if i.state == InstanceState::Deleting && i.request_id.is_none()),
        "{discarded:?}"
    );

    unavailable.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(sim.server(&broken).is_none(), "{:?}", sim.server(&broken));
    assert_consistent(&sim, &manager).await;
}

/// The delete cloudsim answers 503 with a Retry-After of a minute while
/// the switch returned is on (it starts on), and every delete sent, the
/// refused ones included: a real 503 never reaches the service behind.
fn deletes_unavailable_when_on(
    sim: &Arc<cloudsim::SimCloud>,
) -> (Arc<GatedCloud>, Arc<AtomicBool>, Arc<AtomicU32>) {
    let unavailable = Arc::new(AtomicBool::new(true));
    let deletes = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(sim, {
        let (unavailable, deletes) = (unavailable.clone(), deletes.clone());
        move |method| {
            if method != "delete_server" {
                return None;
            }
            deletes.fetch_add(1, Ordering::SeqCst);
            unavailable
                .load(Ordering::SeqCst)
                .then(|| CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(60)),
                    message: "delete_server: Service Unavailable (HTTP 503)".into(),
                    unavailable: true,
                })
        }
    });
    (cloud, unavailable, deletes)
}

/// A purchase whose instance was silent at the claim, on a server Nova
/// shows fine, puts it back, unless its pool started draining meanwhile:
/// then it is discarded as the drain would have. Its delete, answered 503
/// with a Retry-After, was sent again until the cleanup budget (2 min) was
/// spent, the buyer held as for a broken server's. Sent once: the record
/// says `Deleting`, and a reconcile pass deletes the server.
#[tokio::test(start_paused = true)]
async fn a_drained_pools_instance_put_back_has_its_delete_sent_once() {
    let sim = sim();
    let (cloud, unavailable, deletes) = deletes_unavailable_when_on(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let server = pool_instances(&manager).await[0].server_id.clone().unwrap();
    assert!(sim.stop_mysqld(&server));

    // The purchase heard the silence and asked Nova how the server is.
    let looked = cloud.hold_next("get_server", At::After);
    let started = tokio::time::Instant::now();
    let buying = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    looked.reached().await;
    let claimed = pool_instances(&manager).await;
    assert!(
        matches!(&claimed[..], [i] if i.state == InstanceState::Claimed),
        "{claimed:?}"
    );
    manager.delete_pool(&pool()).await.unwrap();
    looked.release();

    let err = buying.await.unwrap().unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().contains("its pool being deleted"), "{err}");
    // The claim's probe of the silent mysqld takes up to its 5 s timeout.
    assert!(took < Duration::from_secs(10), "the purchase took {took:?}");
    assert_eq!(deletes.load(Ordering::SeqCst), 1, "deletes sent");

    unavailable.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(sim.server(&server).is_none(), "{:?}", sim.server(&server));
    assert_consistent(&sim, &manager).await;
}

/// A server Nova shows stopped (SHUTOFF) with no task to start it again is
/// broken for good: an instance silent at its claim on one is discarded at
/// once, and the answer names Nova's status in words (it used to print
/// warmpool's own `Other`).
#[tokio::test(start_paused = true)]
async fn an_instance_whose_server_is_stopped_at_its_claim_is_discarded_naming_shutoff() {
    let (sim, manager, server) =
        silent_on_a_server_shown(pool_manager::cloud::ServerStatus::Stopped).await;

    let err = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains(&format!("its server {server} is stopped (Nova shows it SHUTOFF), so it was discarded"))),
        "{err}"
    );
    let instances = pool_instances(&manager).await;
    assert!(
        instances.iter().all(|i| i.state == InstanceState::Deleting),
        "{instances:?}"
    );
    assert_eq!(sim.call_counts().get("delete_server"), Some(&1));
}

/// A server Nova shows paused, suspended or in rescue with no task under
/// way stays so until someone unpauses, resumes or unrescues it, as a
/// stopped one does: an instance silent at its claim on one is discarded
/// at once, the answer naming Nova's status. They read as a status Nova
/// may leave by itself: the instance was put back, and purchases spent a
/// probe on it until two reconcile passes judged it.
#[tokio::test(start_paused = true)]
async fn an_instance_whose_server_is_paused_suspended_or_rescued_at_its_claim_is_discarded() {
    use pool_manager::cloud::ServerStatus;
    for (status, shown) in [
        (ServerStatus::Paused, "paused (Nova shows it PAUSED)"),
        (
            ServerStatus::Suspended,
            "suspended (Nova shows it SUSPENDED)",
        ),
        (ServerStatus::Rescued, "in rescue (Nova shows it RESCUE)"),
    ] {
        let (sim, manager, server) = silent_on_a_server_shown(status).await;

        let err = manager
            .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagerError::ResourceExhausted(m)
                if m.contains(&format!("its server {server} is {shown}, so it was discarded"))),
            "{status:?}: {err}"
        );
        let instances = pool_instances(&manager).await;
        assert!(
            instances.iter().all(|i| i.state == InstanceState::Deleting),
            "{status:?}: {instances:?}"
        );
        assert_eq!(sim.call_counts().get("delete_server"), Some(&1));
    }
}

fn a_port_listing(method: &str) -> bool {
    method == "ports_bound_to"
}

/// A read failing until the purchase gives up, three ways: down (503),
/// throttled past the deadline (429), refusing warmpool's user (403).
fn read_failures() -> [CloudError; 3] {
    [
        CloudError::Transient("HTTP 503 Service Unavailable".into()),
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(600)),
            message: "This request was rate-limited. (HTTP 429)".into(),
            unavailable: false,
        },
        CloudError::Fatal("HTTP 403 Forbidden: policy does not allow this".into()),
    ]
}

/// The purchase answered the cloud's `failure` (its kind), naming
/// `service`, and discarded only the instance its attaches touched: 2 of
/// the pool's 3 stay Ready. `case` names the run in a failure.
async fn assert_ended_as_the_clouds(
    manager: &PoolManager,
    err: &ManagerError,
    failure: &CloudError,
    service: &str,
    case: &str,
) {
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        2,
        "{case}: only the touched instance is discarded; answered: {err}"
    );
    assert!(
        matches!(err, ManagerError::Cloud(e)
            if std::mem::discriminant(e) == std::mem::discriminant(failure)
                && e.to_string().contains(service)),
        "{case}: answered: {err}"
    );
}

/// `service` failing every `read` (a method of [`GatedCloud`]) until the
/// purchase gives up, each of [`read_failures`]' ways. A fail-fast purchase must answer
/// the cloud's failure, naming the service, and discard only the instance
/// its attaches touched; the order is rolled back, and served warm once
/// the service answers again.
async fn failing_reads_discard_only_the_touched_instance(read: &'static str, service: &str) {
    for failure in read_failures() {
        let sim = sim();
        let (manager, failing) = attaches_failing_when_on(&sim, move |method| method == read, {
            let failure = failure.clone();
            move |_| failure.clone()
        })
        .await;
        failing.store(true, Ordering::SeqCst);

        let err = manager
            .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap_err();
        assert_ended_as_the_clouds(
            &manager,
            &err,
            &failure,
            service,
            &format!("{read}, {failure}"),
        )
        .await;

        // A rollback that needs the failing service is the reconciler's to
        // finish once the service answers.
        failing.store(false, Ordering::SeqCst);
        manager.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let left = manager.get_allocation("order-1").await;
        assert!(left.is_err(), "{read}, {failure}: rolled back: {left:?}");
        assert_consistent(&sim, &manager).await;
        let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
        let allocation = manager.allocate(order).await.unwrap();
        assert!(allocation.warm_hit, "{read}, {failure}");
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(status.count(InstanceState::Ready), 1, "{read}, {failure}");
    }
}

/// The verify after a try's attaches lists its server's ports in Neutron.
/// A listing Neutron fails until the purchase gives up says nothing of the
/// instance, yet it was blamed on it: the purchase discarded the instance
/// and tried the next Ready one, two per purchase when the failure came
/// before the deadline (a 429, a 403), and every call billing made again
/// cost two more warm instances; a 503 cost one, answered as if a longer
/// timeout would help.
#[tokio::test(start_paused = true)]
async fn port_listings_failing_at_the_verify_discard_only_the_touched_instance() {
    failing_reads_discard_only_the_touched_instance("ports_bound_to", "network service (Neutron)")
        .await;
}

/// The same for the look at the port after Nova took its attach, which
/// waits for Neutron to show it bound to the server.
#[tokio::test(start_paused = true)]
async fn port_reads_failing_after_the_attach_discard_only_the_touched_instance() {
    failing_reads_discard_only_the_touched_instance("get_port", "network service (Neutron)").await;
}

/// The same for the verify's read of the server in Nova: a read Nova
/// fails is the cloud's, as a listing Neutron fails is.
#[tokio::test(start_paused = true)]
async fn server_reads_failing_at_the_verify_discard_only_the_touched_instance() {
    failing_reads_discard_only_the_touched_instance("get_server", "compute service (Nova)").await;
}

/// Nova answers the port attach 409 after doing it (a retried call, a
/// proxy's answer), and the look at whether the port is the try's own
/// (Neutron's port, then the server's port listing) fails until the
/// purchase gives up. That failure is the cloud's, as at the verify; it
/// was taken for "not ours", so the 409 was blamed on the instance: the
/// purchase discarded it and tried the next Ready one.
#[tokio::test(start_paused = true)]
async fn port_reads_failing_at_a_port_attach_answered_409_discard_only_the_touched_instance() {
    for failure in read_failures() {
        let sim = sim();
        let failing = Arc::new(AtomicBool::new(false));
        let cloud = GatedCloud::with_fault(&sim, {
            let (failing, failure) = (failing.clone(), failure.clone());
            move |method| {
                (matches!(method, "get_port" | "ports_bound_to") && failing.load(Ordering::SeqCst))
                    .then(|| failure.clone())
            }
        });
        let manager = started_paused(&cloud, temp_store(), 3).await;
        failing.store(true, Ordering::SeqCst);
        cloud.lose_next_answer_as(
            "attach_port",
            CloudError::Conflict("Port is still in use. (HTTP 409)".into()),
        );

        let err = manager
            .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap_err();
        assert_ended_as_the_clouds(
            &manager,
            &err,
            &failure,
            "network service (Neutron)",
            &failure.to_string(),
        )
        .await;
        assert_eq!(sim.call_counts().get("attach_port"), Some(&1), "{failure}");
    }
}

/// Nova answers the volume attach 409, and the look at whether that
/// attach is the try's own (Cinder's volume, then Nova's server) fails
/// until the purchase gives up. As at the port attach, that failure is
/// the cloud's: it was taken for "not ours", so the purchase answered
/// FAILED_PRECONDITION "volume ... cannot be attached: 409", sending the
/// client to mend a volume nothing was wrong with.
#[tokio::test(start_paused = true)]
async fn reads_failing_at_a_volume_attach_answered_409_end_the_purchase_as_the_clouds() {
    for (read, service) in [
        ("get_volume", "block-storage service (Cinder)"),
        ("get_server", "compute service (Nova)"),
    ] {
        for failure in [
            CloudError::Transient("HTTP 503 Service Unavailable".into()),
            CloudError::Fatal("HTTP 403 Forbidden: policy does not allow this".into()),
        ] {
            let sim = sim();
            // The reads fail from the attach on: the order's volume is
            // created and seen available first.
            let failing = Arc::new(AtomicBool::new(false));
            let cloud = GatedCloud::with_fault(&sim, {
                let (failing, failure) = (failing.clone(), failure.clone());
                move |method| {
                    if method == "attach_volume" && !failing.swap(true, Ordering::SeqCst) {
                        return Some(CloudError::Conflict(
                            "Invalid volume: volume is in use (HTTP 409)".into(),
                        ));
                    }
                    (method == read && failing.load(Ordering::SeqCst)).then(|| failure.clone())
                }
            });
            let manager = started_paused(&cloud, temp_store(), 3).await;

            let err = manager
                .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
                .await
                .unwrap_err();
            assert_ended_as_the_clouds(
                &manager,
                &err,
                &failure,
                service,
                &format!("{read} {failure}"),
            )
            .await;
            assert_eq!(
                sim.call_counts().get("attach_volume"),
                None,
                "{read} {failure}"
            );
        }
    }
}

/// The order's port deleted (by someone else) once Nova took its attach:
/// Neutron answers 404 for it. That is no failure of Neutron to show it,
/// which is what the purchase said ("call again once the network service
/// answers"); the port is gone, the try with it, and the next try, on the
/// next Ready instance, makes a new port.
#[tokio::test(start_paused = true)]
async fn a_port_deleted_after_its_attach_was_taken_is_said_gone_and_replaced() {
    use pool_manager::cloud::Cloud;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 3).await;
    let attached = cloud.hold_next("attach_port", At::After);
    let purchase = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attached.reached().await;
    let deleted = manager.get_allocation("order-1").await.unwrap();
    let port = deleted.port_id.clone().expect("the try's port is recorded");
    let first_server = deleted.server_id.clone();
    sim.delete_port(&port).await.unwrap();
    // The discard's delete held, so that its record shows why.
    let deleting = cloud.hold_next("delete_server", At::Before);
    attached.release();
    deleting.reached().await;
    let instances = pool_instances(&manager).await;
    let discarded = instances
        .iter()
        .find(|i| i.server_id == first_server)
        .expect("the first try's instance, being deleted");
    assert_eq!(discarded.state, InstanceState::Deleting, "{instances:?}");
    let why = discarded.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains(&port) && why.contains("is gone") && !why.contains("failed to show"),
        "{why}"
    );
    deleting.release();

    let allocation = purchase
        .await
        .unwrap()
        .expect("served by the next instance with a new port");
    assert_ne!(allocation.port_id.as_deref(), Some(port.as_str()));
    assert_ne!(allocation.server_id, first_server);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// Port listings failing 503 for a while, less than the purchase may
/// wait: its verify is asked again until Neutron answers, and the purchase
/// succeeds on its first instance, none discarded.
#[tokio::test(start_paused = true)]
async fn a_verify_waits_out_a_short_neutron_outage() {
    let sim = sim();
    let (manager, neutron_failing) = attaches_failing_when_on(&sim, a_port_listing, |_| {
        CloudError::Transient("HTTP 503 Service Unavailable".into())
    })
    .await;
    neutron_failing.store(true, Ordering::SeqCst);
    let purchase = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!purchase.is_finished());
    assert_eq!(sim.call_counts().get("attach_port"), Some(&1));
    neutron_failing.store(false, Ordering::SeqCst);

    let allocation = purchase.await.unwrap().unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_eq!(status.count(InstanceState::Deleting), 0, "{status:?}");
    assert_eq!(sim.servers().len(), 3, "no server was deleted or booted");
    assert_consistent(&sim, &manager).await;
}

/// A verify that read the server fine and found it without what the
/// attaches should have made (here Nova lists no volume on it) is still
/// the instance's failure: the purchase discards it and is served by the
/// next Ready instance.
#[tokio::test(start_paused = true)]
async fn a_server_read_fine_without_the_attached_volume_is_the_instances_failure() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 3).await;
    let mut ready = pool_instances(&manager).await;
    // The order purchases claim them in: oldest Ready first.
    ready.sort_by_key(|i| i.ready_at);
    let first = ready[0].server_id.clone().unwrap();
    cloud.show_server(&first, |s| s.attached_volumes.clear());

    let allocation = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .expect("served by the next instance");
    assert_ne!(allocation.server_id.as_deref(), Some(first.as_str()));
    let instances = pool_instances(&manager).await;
    let discarded = instances
        .iter()
        .find(|i| i.server_id.as_deref() == Some(&first));
    assert!(
        discarded.is_none_or(|i| i.state == InstanceState::Deleting),
        "{instances:?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1, "{status:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}
