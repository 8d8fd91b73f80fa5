//! A reconcile pass that runs while an Allocate or a refill has just written
//! its record (before the flush returns) must leave that record alone: it is
//! in flight in this process, not left behind by a crash. Nor may what a
//! pass does from its listing, stale by the time it acts, take an instance
//! a purchase has taken meanwhile.

mod common;

use async_trait::async_trait;
use common::*;
use pool_manager::model::{Allocation, AllocationState, EmptyPoolPolicy, Instance, InstanceState};
use pool_manager::store::StoreResult;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The first flush after the first new record of the kind `on` is written
/// waits until the test lets it go.
struct HoldFlushAfterNewRecord {
    on: Record,
    fired: AtomicBool,
    armed: AtomicBool,
    holding: Notify,
    release: Notify,
}

#[derive(PartialEq)]
enum Record {
    Allocation,
    Instance,
}

impl HoldFlushAfterNewRecord {
    fn new(on: Record) -> Arc<HookedStore<Self>> {
        HookedStore::new(Self {
            on,
            fired: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            holding: Notify::new(),
            release: Notify::new(),
        })
    }

    fn swapped(&self, kind: Record, created: bool) {
        if created && kind == self.on && !self.fired.swap(true, Ordering::SeqCst) {
            self.armed.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl StoreHooks for HoldFlushAfterNewRecord {
    fn after_instance_swap(&self, expected: Option<&Instance>, swapped: bool) {
        self.swapped(Record::Instance, swapped && expected.is_none());
    }
    fn after_allocation_swap(&self, expected: Option<&Allocation>, swapped: bool) {
        self.swapped(Record::Allocation, swapped && expected.is_none());
    }
    async fn before_flush(&self) -> StoreResult<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn reconcile_leaves_an_allocation_alone_between_its_record_and_its_flush() {
    let sim = sim();
    let store = HoldFlushAfterNewRecord::new(Record::Allocation);
    let manager = started(&sim, store.clone(), 1).await;

    let buying = spawn_allocate(
        &manager,
        request("order-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    store.hooks.holding.notified().await;
    let stored = manager.get_allocation("order-1").await.unwrap();
    assert_eq!(stored.state, AllocationState::Allocating);

    manager.reconcile().await.unwrap();
    assert!(
        manager.get_allocation("order-1").await.is_ok(),
        "the reconciler rolled back an allocation that was in flight"
    );

    store.hooks.release.notify_one();
    let done = tokio::time::timeout(Duration::from_secs(300), buying)
        .await
        .expect("the purchase finishes")
        .unwrap()
        .unwrap();
    assert_eq!(done.state, AllocationState::Allocated);
    assert!(done.warm_hit);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn reconcile_leaves_a_new_instance_alone_before_its_boot_task_starts() {
    let sim = sim();
    let store = HoldFlushAfterNewRecord::new(Record::Instance);
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    // The refill's instance record is written, its flush held: no boot task
    // drives it yet and no server exists, as after a crash before the create.
    store.hooks.holding.notified().await;
    let recorded = manager.list_instances(None).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");

    manager.reconcile().await.unwrap();
    assert_eq!(
        manager.list_instances(None).await.unwrap(),
        recorded,
        "the reconciler forgot an instance whose boot was about to start"
    );

    store.hooks.release.notify_one();
    wait_ready(&manager, 1).await;
    assert_eq!(
        sim.call_counts().get("create_server").copied(),
        Some(1),
        "one boot, not one thrown away and another"
    );
    assert_consistent(&sim, &manager).await;
}

/// A pass lists an allocation being released and one being allocated; while
/// it finishes the release, the Allocate answers. The pass must see the
/// allocation as it is when it reaches it (Allocated), not as listed.
#[tokio::test(start_paused = true)]
async fn reconcile_leaves_an_allocation_alone_that_finished_while_the_pass_ran() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;

    // order-a (listed first): a release interrupted after its record said so.
    let a = manager
        .allocate(request("order-a", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let mut releasing = a.clone();
    releasing.state = AllocationState::Releasing;
    releasing.delete_volume_on_release = Some(false);
    assert!(store
        .cas_allocation(Some(&a), Some(&releasing))
        .await
        .unwrap());

    // order-b: an Allocate in flight, held at its port attach.
    let b_attach = cloud.hold_next("attach_port", At::Before);
    let buying = spawn_allocate(
        &manager,
        request("order-b", new_volume(), EmptyPoolPolicy::FailFast),
    );
    b_attach.reached().await;

    // The pass has listed both when it detaches order-a's volume.
    let a_detach = cloud.hold_next("detach_volume", At::Before);
    let pass = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.reconcile().await })
    };
    a_detach.reached().await;

    b_attach.release();
    let b = buying.await.unwrap().unwrap();
    assert_eq!(b.state, AllocationState::Allocated);

    a_detach.release();
    pass.await.unwrap().expect("the pass succeeds");
    assert_eq!(manager.get_allocation("order-b").await.unwrap(), b);
    assert_eq!(
        manager.get_allocation("order-a").await.unwrap().state,
        AllocationState::Released
    );
    assert_consistent(&sim, &manager).await;
}

/// The real probe, until `failing` is set.
struct FlakyProbe {
    sim: cloudsim::SimProbe,
    failing: AtomicBool,
}

#[async_trait]
impl pool_manager::probe::Probe for FlakyProbe {
    async fn probe(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<String, pool_manager::probe::ProbeError> {
        if self.failing.load(Ordering::SeqCst) {
            return self.sim.probe("127.0.0.1:9".parse().unwrap()).await;
        }
        self.sim.probe(addr).await
    }
}

/// A pass lists an instance as Warming; while it works on an earlier
/// instance, that one becomes Ready and a purchase takes it. The boot the
/// pass then resumes from its stale copy fails (the tenant's mysqld does not
/// answer the probe), and must not discard the tenant's instance.
#[tokio::test(start_paused = true)]
async fn a_boot_resumed_from_a_stale_listing_never_discards_a_purchased_instance() {
    use pool_manager::model::InstanceState;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let probe = Arc::new(FlakyProbe {
        sim: sim.probe(),
        failing: AtomicBool::new(false),
    });
    let manager =
        pool_manager::PoolManager::new(store.clone(), cloud.clone(), probe.clone(), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut ready = manager.list_instances(Some(&pool())).await.unwrap();
    ready.sort_by(|a, b| a.id.cmp(&b.id));
    let (first, second) = (ready[0].clone(), ready[1].clone());

    // As the pass will list them: the first being deleted (the pass stalls
    // on its server's delete), the second still Warming.
    let mut deleting = first.clone();
    deleting.state = InstanceState::Deleting;
    assert!(store
        .cas_instance(Some(&first), Some(&deleting))
        .await
        .unwrap());
    let mut warming = second.clone();
    warming.state = InstanceState::Warming;
    assert!(store
        .cas_instance(Some(&second), Some(&warming))
        .await
        .unwrap());
    let stalled = cloud.hold_next("delete_server", At::Before);
    let pass = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.reconcile().await })
    };
    stalled.reached().await;

    // Meanwhile the second becomes Ready and is bought.
    assert!(store
        .cas_instance(Some(&warming), Some(&second))
        .await
        .unwrap());
    let bought = manager
        .allocate(request("order-s", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(bought.instance_id.as_deref(), Some(second.id.as_str()));

    // The tenant's mysqld stops answering; the pass goes on.
    probe.failing.store(true, Ordering::SeqCst);
    stalled.release();
    pass.await.unwrap().unwrap();
    // Past the pool's boot timeout, however the resumed boot ended.
    tokio::time::sleep(spec(2).boot_timeout + Duration::from_secs(60)).await;

    let held = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == second.id)
        .expect("the purchased instance is still stored");
    assert_eq!(held.state, InstanceState::Allocated);
    assert!(sim.server(second.server_id.as_deref().unwrap()).is_some());
    assert_eq!(
        manager.get_allocation("order-s").await.unwrap().state,
        AllocationState::Allocated
    );
    assert_consistent(&sim, &manager).await;
}

/// The first write of the pool's `last_error` waits until the test lets it go.
struct HoldFirstPoolError {
    fired: AtomicBool,
    holding: Notify,
    release: Notify,
}

#[async_trait]
impl StoreHooks for HoldFirstPoolError {
    async fn before_put_pool(&self, pool: &pool_manager::model::PoolRecord) {
        if pool.last_error.is_some() && !self.fired.swap(true, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
    }
}

/// A boot that failed still drives its instance until it has discarded it:
/// a reconcile pass in between must not resume it (a second failed boot of
/// the same instance, reported twice, its cloud work done again).
#[tokio::test(start_paused = true)]
async fn reconcile_does_not_resume_a_failed_boot_before_its_discard() {
    use pool_manager::events::{BootOutcome, EventKind};
    let sim = sim();
    sim.faults()
        .error_next_boots(1, "NoValidHost: No valid host was found.");
    let store = HookedStore::new(HoldFirstPoolError {
        fired: AtomicBool::new(false),
        holding: Notify::new(),
        release: Notify::new(),
    });
    let manager = manager_on(&sim, store.clone());
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    // The boot failed and is recording why; its instance is not discarded yet.
    store.hooks.holding.notified().await;

    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut failed_boots = 0;
    while let Ok(event) = events.try_recv() {
        if let EventKind::Boot { outcome, .. } = event.kind {
            assert_eq!(outcome, BootOutcome::NoValidHost);
            failed_boots += 1;
        }
    }
    assert_eq!(failed_boots, 1, "the failed boot was resumed");

    store.hooks.release.notify_one();
    wait_ready(&manager, 1).await;
    assert_consistent(&sim, &manager).await;
}

/// A pass lists the cloud's servers before the store's instances: a boot
/// that creates its server after the listing and is Ready before the
/// instances are read is missing from the listing only because the listing
/// is older. Its instance is kept (the cloud is asked), and no later pass
/// deletes its server as a leak.
#[tokio::test(start_paused = true)]
async fn a_server_created_after_the_passs_listing_is_not_taken_for_gone() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 1).await;
    let mut events = manager.events();
    let listing = cloud.hold_next("list_pool_servers", At::After);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    listing.reached().await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 2)
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    listing.release();
    pass.await.unwrap().unwrap();

    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    manager.reconcile().await.unwrap();
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::LeakDeleted { .. }),
            "{event:?}"
        );
    }
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// The pass's listing of the cloud's servers is retried like its other
/// calls: one 503 or 429 at start-up, where the pass runs before anything
/// is served, used to fail the start and stop warmpoold.
#[tokio::test(start_paused = true)]
async fn a_transient_error_listing_servers_is_retried_not_fatal_to_the_start() {
    use pool_manager::cloud::CloudError;
    let sim = sim();
    let failures = std::sync::atomic::AtomicU32::new(0);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "list_pool_servers" && failures.fetch_add(1, Ordering::SeqCst) < 2).then(|| {
            CloudError::Throttled {
                retry_after: Some(Duration::from_secs(1)),
                message: "Rate limit exceeded".into(),
                unavailable: false,
            }
        })
    });
    let manager = started_over(&cloud, temp_store(), 1).await;
    assert_consistent(&sim, &manager).await;
}

/// A pass lists the cloud's servers before the store's instances: a server
/// a retirement deletes in between, its record then dropped, is in the
/// listing as it was (ACTIVE, not being deleted) with no record naming it.
/// It was taken for a leak: sent a second delete and reported as
/// `LeakDeleted`, which feeds the leak-rate alert. It is looked at again
/// before it is called a leak, and found going.
#[tokio::test(start_paused = true)]
async fn a_server_retired_after_the_passs_listing_is_not_taken_for_a_leak() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let mut events = manager.events();
    let listing = cloud.hold_next("list_pool_servers", At::After);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    listing.reached().await;
    assert_eq!(sim.call_counts().get("delete_server"), None);
    manager
        .update_pool(&pool(), |s| {
            s.min_ready = 1;
            s.max_ready = 1;
        })
        .await
        .unwrap();
    for _ in 0..600 {
        if manager.list_instances(Some(&pool())).await.unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        manager.list_instances(Some(&pool())).await.unwrap().len(),
        1,
        "one instance retired"
    );
    assert_eq!(sim.call_counts().get("delete_server").copied(), Some(1));
    listing.release();
    pass.await.unwrap().unwrap();

    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::LeakDeleted { .. }),
            "{event:?}"
        );
    }
    assert_eq!(
        sim.call_counts().get("delete_server").copied(),
        Some(1),
        "the retired server was sent a second delete"
    );
    assert_consistent(&sim, &manager).await;
}

/// A pass working on the watch an order's commit wrote (a create of it lost
/// its answer) when the order's Release is called: the Release waits for
/// the pass's watch step (it holds the order's release turn), then writes,
/// under the same name, the watch of the volume it deletes. A pass ending
/// or replacing a watch by name once deleted that one, and the volume
/// Cinder's backend then failed to delete was named by nothing.
#[tokio::test(start_paused = true)]
async fn a_pass_on_an_orders_old_watch_leaves_the_one_its_release_wrote() {
    use pool_manager::model::TWIN_WATCH;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    cloud.lose_next_answer("create_port");
    let sold = manager
        .allocate(request("order-w", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(sold.creates_in_doubt);
    let volume = sold.volume_id.clone().unwrap();
    tokio::time::sleep(TWIN_WATCH).await;

    let looking = cloud.hold_next("find_ports_by_name", At::Before);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    looking.reached().await;
    sim.faults().error_next_volume_deletes(1);
    // The pass holds the order's release turn while it works on the
    // order's watch: the Release waits for it.
    let release = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-w", Some(true)).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !release.is_finished(),
        "the Release did not wait for the pass"
    );
    looking.release();
    pass.await.unwrap().unwrap();
    let released = release.await.unwrap().unwrap();
    assert_eq!(released.state, AllocationState::Released);

    tokio::time::sleep(Duration::from_secs(10)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(manager.stuck_volumes().await.unwrap(), vec![volume]);
    manager.shutdown().await.unwrap();
}

/// How many times each call that lets go of an order's resources was made
/// since `before`.
fn release_calls(
    sim: &cloudsim::SimCloud,
    before: &std::collections::BTreeMap<&'static str, u64>,
) -> Vec<(&'static str, u64)> {
    let now = sim.call_counts();
    [
        "detach_volume",
        "detach_port",
        "delete_server",
        "delete_port",
        "delete_volume",
    ]
    .into_iter()
    .map(|method| {
        let then = before.get(method).copied().unwrap_or(0);
        (method, now.get(method).copied().unwrap_or(0) - then)
    })
    .collect()
}

const EACH_ONCE: [(&str, u64); 5] = [
    ("detach_volume", 1),
    ("detach_port", 1),
    ("delete_server", 1),
    ("delete_port", 1),
    ("delete_volume", 1),
];

/// A Release under way (here held at its server's delete, as Nova's slow
/// delete holds it) is the order's only release: a reconcile pass meanwhile
/// leaves the order alone, and billing's retry of the Release waits for it
/// and answers what it did. Both finished it side by side, each detach and
/// delete sent twice: on a real cloud the second detach of the port, its
/// server being deleted, is refused 409, and the second DELETE is sent all
/// the same.
#[tokio::test(start_paused = true)]
async fn a_release_under_way_is_the_orders_only_release() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-r", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let before = sim.call_counts();

    let deleting = cloud.hold_next("delete_server", At::Before);
    let first = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-r", Some(true)).await }
    });
    deleting.reached().await;
    manager.reconcile().await.expect("the pass succeeds");
    let retry = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-r", Some(true)).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let retry_waited = !retry.is_finished();

    deleting.release();
    let first = first.await.unwrap().expect("the release succeeds");
    let retry = retry.await.unwrap().expect("the retry succeeds");
    assert_eq!(first.state, AllocationState::Released);
    assert_eq!(retry, first, "the retry answers what the release did");
    assert_eq!(release_calls(&sim, &before), EACH_ONCE);
    assert!(retry_waited, "the retry answered before the release");
    assert_consistent(&sim, &manager).await;
}

/// The other way round: a Release called while a reconcile pass finishes
/// the order's release (one a crash interrupted) waits for the pass's and
/// answers it, rather than doing it a second time.
#[tokio::test(start_paused = true)]
async fn a_release_waits_for_the_pass_finishing_it() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 1).await;
    let sold = manager
        .allocate(request("order-p", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let mut releasing = sold.clone();
    releasing.state = AllocationState::Releasing;
    releasing.delete_volume_on_release = Some(true);
    assert!(store
        .cas_allocation(Some(&sold), Some(&releasing))
        .await
        .unwrap());
    let before = sim.call_counts();

    let deleting = cloud.hold_next("delete_server", At::Before);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    deleting.reached().await;
    let release = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-p", None).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let release_waited = !release.is_finished();

    deleting.release();
    pass.await.unwrap().expect("the pass succeeds");
    let released = release.await.unwrap().expect("the release succeeds");
    assert_eq!(released.state, AllocationState::Released);
    assert_eq!(manager.get_allocation("order-p").await.unwrap(), released);
    assert_eq!(release_calls(&sim, &before), EACH_ONCE);
    assert!(release_waited, "the Release answered before the pass");
    assert_consistent(&sim, &manager).await;
}

/// A Release held just before its volume's DELETE (the watch of the
/// deleted volume written and flushed, the volume detached): a pass skips
/// the order (its turn is taken) and its name's watch too, which would
/// otherwise find the volume available and unattached and delete it again.
#[tokio::test(start_paused = true)]
async fn a_pass_leaves_the_watch_of_an_order_under_release_alone() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-v", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let before = sim.call_counts();

    let deleting = cloud.hold_next("delete_volume", At::Before);
    let first = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-v", Some(true)).await }
    });
    deleting.reached().await;
    manager.reconcile().await.expect("the pass succeeds");
    deleting.release();
    let first = first.await.unwrap().expect("the release succeeds");
    assert_eq!(first.state, AllocationState::Released);
    assert_eq!(release_calls(&sim, &before), EACH_ONCE);
}

/// Billing's Release retries, each cut off by its deadline, wait for the
/// turn; when the cloud keeps the release from finishing, each answers the
/// failure of the try it waited for rather than, its caller long gone,
/// doing the whole release again, one after another, each for a cleanup
/// budget.
#[tokio::test(start_paused = true)]
async fn release_retries_cut_off_by_their_deadline_do_not_run_the_release_again() {
    let sim = sim();
    let (cloud, switch) = GatedCloud::refusing(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Transient("HTTP 503".into()),
        false,
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-q", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    switch.store(true, std::sync::atomic::Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    // Billing: a 30 s deadline per call, retried 5 times.
    for _ in 0..5 {
        let _ =
            tokio::time::timeout(Duration::from_secs(30), manager.release("order-q", None)).await;
    }
    let mut waited = Duration::ZERO;
    while manager.calls_running() > 0 && waited < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    eprintln!(
        "calls running until {:?} after the first Release; delete_server calls {:?}",
        start.elapsed(),
        sim.call_counts().get("delete_server")
    );
    assert!(
        start.elapsed() < pool_manager::CLEANUP_FLOOR * 2,
        "{:?}",
        start.elapsed()
    );
}
