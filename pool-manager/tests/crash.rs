//! A crash between any two steps of an allocation, a release or a refill —
//! simulated by freezing the cloud at the N-th call, before or after the
//! cloud carried it out, dropping the whole process state and reopening
//! the store, with every write, only the flushed ones, or those and a
//! prefix of the others — followed by the start-up reconcile loses nothing
//! and leaks nothing.

mod common;

use cloudsim::SimCloud;
use common::*;
use pool_manager::events::EventKind;
use pool_manager::model::{AllocationState, EmptyPoolPolicy};
use pool_manager::store::Store;
use pool_manager::PoolManager;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a crashed process's store still holds when it starts again.
#[derive(Clone, Copy, Debug)]
enum Survives {
    /// Every write: the store wrote back all it had before the end.
    EveryWrite,
    /// Only the writes a flush covered (see [`CrashImage`]).
    FlushedWrites,
    /// Those and the first half (rounded up) of the others: a crash between
    /// two writes of one step.
    FlushedAndHalfTheRest,
}

/// Where the cloud call the process dies in stops.
#[derive(Clone, Copy, Debug)]
enum Hang {
    /// Before the cloud carries it out: the cloud never hears of it.
    BeforeEffect,
    /// Once the cloud carried it out: a server created, a volume attached,
    /// a port deleted, and the process dies before it hears so.
    AfterEffect,
}

/// One run of the process, on the store of `dir` as `survives` leaves it.
struct Process {
    manager: PoolManager,
    image: Option<Arc<HookedStore<CrashImage>>>,
}

impl Process {
    /// The first run: a pool of `target` Ready instances, paused so that the
    /// N-th cloud call from here on is the test's.
    async fn first(sim: &Arc<SimCloud>, dir: &Path, survives: Survives, target: u32) -> Self {
        let (store, image): (Arc<dyn Store>, _) = match survives {
            Survives::EveryWrite => (open_store(dir), None),
            Survives::FlushedWrites | Survives::FlushedAndHalfTheRest => {
                let image = HookedStore::new(CrashImage::default());
                (image.clone(), Some(image))
            }
        };
        let manager = started(sim, store, target).await;
        manager
            .update_pool(&pool(), |s| s.paused = true)
            .await
            .unwrap();
        Self { manager, image }
    }

    /// The process dies; it starts again (reconciling) on what survived.
    async fn crash_and_restart(
        self,
        sim: &Arc<SimCloud>,
        dir: &Path,
        survives: Survives,
    ) -> PoolManager {
        if let Some(image) = &self.image {
            image.hooks.crash();
        }
        // Stops the dead process's tasks; what it writes now is lost with
        // a crash image, and flushed without one (every write survives).
        self.manager.shutdown().await.unwrap();
        drop(self.manager);
        sim.faults().clear_hang();
        let store = match &self.image {
            Some(image) => {
                let kept = match survives {
                    Survives::FlushedAndHalfTheRest => |unflushed: usize| unflushed.div_ceil(2),
                    _ => |_| 0,
                };
                image.hooks.reopen(dir, kept).await
            }
            None => open_store(dir),
        };
        let manager = manager_on(sim, store);
        let mut events = manager.events();
        manager.start().await.unwrap();
        // Every server of the dead process was recorded before it was
        // created, so the start-up pass finds none of them a leak: not
        // even one that its own rollback has just deleted, which Nova
        // lists until the delete is done.
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event.kind, EventKind::LeakDeleted { .. }),
                "the restart took a server of its own for a leak: {event:?}"
            );
        }
        manager
    }
}

/// Runs `call` until the cloud hangs after `crash_after` calls, as `hang`
/// says; its answer if it gave one before the crash.
async fn until_the_cloud_hangs<T: Send + 'static>(
    sim: &Arc<SimCloud>,
    hang: Hang,
    crash_after: u64,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let mut hung = sim.hung_calls();
    let before = *hung.borrow_and_update();
    match hang {
        Hang::BeforeEffect => sim.faults().hang_after_calls(crash_after),
        Hang::AfterEffect => sim.faults().hang_after_calls_take_effect(crash_after),
    }
    let mut call = tokio::spawn(call);
    // The process dies as a call hangs (once it took effect, if it does),
    // or 100 s on.
    let answer = tokio::select! {
        biased;
        answer = &mut call => Some(answer.unwrap()),
        _ = hung.wait_for(|n| *n > before) => None,
        () = tokio::time::sleep(Duration::from_secs(100)) => None,
    };
    if answer.is_none() {
        call.abort();
        let _ = call.await;
    }
    answer
}

/// Runs `scenario` with the cloud hanging after 0, 1, 2, ... calls, until a
/// run finishes before its crash (`scenario` answers whether it did); at
/// least `at_least` runs crash first.
async fn at_every_crash_point<Run: std::future::Future<Output = bool>>(
    what: &str,
    at_least: u32,
    mut scenario: impl FnMut(u64) -> Run,
) {
    let mut crash_points = 0;
    for crash_after in 0u64.. {
        assert!(
            crash_after < 100,
            "{what} should need far fewer cloud calls"
        );
        if scenario(crash_after).await {
            break;
        }
        crash_points += 1;
    }
    assert!(
        crash_points >= at_least,
        "{what}: only {crash_points} crash points exercised"
    );
}

/// How the crashed purchase is served.
#[derive(Clone, Copy, Debug)]
enum Purchase {
    /// From a pool of two Ready instances.
    Warm,
    /// By a cold boot: the pool is empty.
    Cold,
}

async fn crash_at_every_step_of_an_allocation(survives: Survives, purchase: Purchase, hang: Hang) {
    let sweep = format!("an allocation ({survives:?}, {purchase:?}, {hang:?})");
    at_every_crash_point(&sweep, 8, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let (ready, policy) = match purchase {
            Purchase::Warm => (2, EmptyPoolPolicy::Wait),
            Purchase::Cold => (0, EmptyPoolPolicy::ColdBoot),
        };
        let process = Process::first(&sim, dir.path(), survives, ready).await;
        let order = request("order-crash", new_volume(), policy);
        let acknowledged = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            let order = order.clone();
            async move { manager.allocate(order).await }
        })
        .await
        .map(|answer| answer.expect("allocation without a crash succeeds"));

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!("{survives:?}, {purchase:?}, crash after {crash_after} calls, {hang:?}");
        assert_consistent(&sim, &manager).await;
        match &acknowledged {
            Some(done) => {
                let stored = manager.get_allocation("order-crash").await.unwrap();
                assert_eq!(&stored, done, "{what}: an acknowledged allocation was lost");
            }
            None => assert!(
                manager.get_allocation("order-crash").await.is_err(),
                "{what}: an unacknowledged allocation must be rolled back"
            ),
        }

        // The billing system retries the same order and gets one allocation.
        manager
            .update_pool(&pool(), |s| s.paused = false)
            .await
            .unwrap();
        let retried = manager.allocate(order).await.unwrap();
        assert_eq!(retried.state, AllocationState::Allocated, "{what}");
        if let Some(done) = &acknowledged {
            assert_eq!(&retried, done, "{what}");
        }
        assert_consistent(&sim, &manager).await;
        manager.shutdown().await.unwrap();
        acknowledged.is_some()
    })
    .await;
}

/// A crash between any two steps of an allocation — simulated by freezing the
/// cloud at the N-th call, dropping the whole process state and reopening the
/// store — followed by the start-up reconcile loses nothing and leaks nothing.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_an_allocation_is_repaired_by_reconcile() {
    crash_at_every_step_of_an_allocation(Survives::EveryWrite, Purchase::Warm, Hang::BeforeEffect)
        .await;
}

/// The same, when the crash also loses every write no flush covered, or
/// the later half of them: each step the cloud sees was made durable
/// before it was taken.
#[tokio::test(start_paused = true)]
async fn a_crash_losing_unflushed_writes_at_any_step_of_an_allocation_is_repaired() {
    crash_at_every_step_of_an_allocation(
        Survives::FlushedWrites,
        Purchase::Warm,
        Hang::BeforeEffect,
    )
    .await;
    crash_at_every_step_of_an_allocation(
        Survives::FlushedAndHalfTheRest,
        Purchase::Warm,
        Hang::BeforeEffect,
    )
    .await;
}

/// The same for a purchase from an empty pool, served by a cold boot.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_cold_boot_purchase_is_repaired() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        crash_at_every_step_of_an_allocation(survives, Purchase::Cold, Hang::BeforeEffect).await;
    }
}

/// A crash after the cloud carried out a call of an allocation and before
/// the process heard so (a volume or a port created, an attach done, their
/// ids unrecorded), the store keeping every write, only the flushed ones,
/// or some of the others: nothing is leaked and the order is answered or
/// can be asked again.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_an_allocation_took_effect_is_repaired() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        crash_at_every_step_of_an_allocation(survives, Purchase::Warm, Hang::AfterEffect).await;
    }
}

/// The same for a purchase served by a cold boot: a server created whose
/// id the process never learned.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_a_cold_boot_purchase_took_effect_is_repaired() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        crash_at_every_step_of_an_allocation(survives, Purchase::Cold, Hang::AfterEffect).await;
    }
}

async fn crash_at_every_step_of_a_release(survives: Survives, hang: Hang) {
    let sweep = format!("a release ({survives:?}, {hang:?})");
    at_every_crash_point(&sweep, 4, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 2).await;
        let sold = process
            .manager
            .allocate(request(
                "order-crash",
                new_volume(),
                EmptyPoolPolicy::FailFast,
            ))
            .await
            .unwrap();
        let acknowledged = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            async move { manager.release("order-crash", Some(true)).await }
        })
        .await
        .map(|answer| answer.expect("a release without a crash succeeds"));

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!("{survives:?}, crash after {crash_after} calls, {hang:?}");
        let after_restart = manager.get_allocation("order-crash").await.unwrap();
        if let Some(done) = &acknowledged {
            assert_eq!(
                &after_restart, done,
                "{what}: an acknowledged release was lost"
            );
        } else if after_restart.state == AllocationState::Allocated {
            assert_eq!(after_restart, sold, "{what}");
        }
        assert_consistent(&sim, &manager).await;

        // The billing system retries the release and it is done once.
        let retried = manager.release("order-crash", Some(true)).await.unwrap();
        assert_eq!(retried.state, AllocationState::Released, "{what}");
        if let Some(done) = &acknowledged {
            assert_eq!(&retried, done, "{what}");
        }
        let volume = sold.volume_id.as_deref().unwrap();
        assert!(
            sim.volumes().iter().all(|v| v.id != volume),
            "{what}: the released volume was kept"
        );
        assert_consistent(&sim, &manager).await;
        manager.shutdown().await.unwrap();
        acknowledged.is_some()
    })
    .await;
}

/// A crash between any two steps of a release, the store keeping every
/// write, only the flushed ones, or some of the others: the release is
/// finished or can be asked again, and nothing of it stays in the cloud.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_release_is_repaired_by_reconcile() {
    crash_at_every_step_of_a_release(Survives::EveryWrite, Hang::BeforeEffect).await;
    crash_at_every_step_of_a_release(Survives::FlushedWrites, Hang::BeforeEffect).await;
    crash_at_every_step_of_a_release(Survives::FlushedAndHalfTheRest, Hang::BeforeEffect).await;
}

/// A crash after the cloud carried out a call of a release and before the
/// process heard so (a server, port or volume deleted unrecorded): the
/// release is finished or can be asked again, and nothing of it stays.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_a_release_took_effect_is_repaired() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        crash_at_every_step_of_a_release(survives, Hang::AfterEffect).await;
    }
}

async fn crash_at_every_step_of_a_refill(survives: Survives, hang: Hang) {
    let sweep = format!("a refill ({survives:?}, {hang:?})");
    at_every_crash_point(&sweep, 4, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 1).await;
        let refilled = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            async move {
                manager
                    .update_pool(&pool(), |s| {
                        s.paused = false;
                        s.min_ready = 3;
                    })
                    .await
                    .unwrap();
                wait_ready(&manager, 3).await;
            }
        })
        .await
        .is_some();

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        assert_consistent(&sim, &manager).await;
        wait_ready(&manager, 3).await;
        assert_consistent(&sim, &manager).await;
        let instances = manager.list_instances(None).await.unwrap();
        assert_eq!(
            sim.servers().len(),
            instances.len(),
            "{survives:?}, crash after {crash_after} calls, {hang:?}: {instances:#?}"
        );
        manager.shutdown().await.unwrap();
        refilled
    })
    .await;
}

/// A crash between any two steps of booting instances into a pool, the
/// store keeping every write, only the flushed ones, or some of the others:
/// the restarted
/// manager fills the pool with no server left unknown to it.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_refill_is_repaired_by_reconcile() {
    crash_at_every_step_of_a_refill(Survives::EveryWrite, Hang::BeforeEffect).await;
    crash_at_every_step_of_a_refill(Survives::FlushedWrites, Hang::BeforeEffect).await;
    crash_at_every_step_of_a_refill(Survives::FlushedAndHalfTheRest, Hang::BeforeEffect).await;
}

/// A crash after the cloud carried out a call of a refill and before the
/// process heard so (a server created, its id unrecorded): the restarted
/// manager adopts it and fills the pool, no server left unknown to it.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_a_refill_took_effect_is_repaired() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        crash_at_every_step_of_a_refill(survives, Hang::AfterEffect).await;
    }
}

/// A crash right after Cinder accepted a release's volume delete, the store
/// keeping only its flushed writes: the restart finishes the release though
/// Cinder refuses the delete again (the volume is `deleting`, then its
/// backend fails it), and the volume stays watched, named stuck.
#[tokio::test(start_paused = true)]
async fn a_crash_after_a_releases_volume_delete_is_finished_and_the_volume_watched() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let dir = tempfile::tempdir().unwrap();
    let image = HookedStore::new(CrashImage::default());
    let manager = started_paused(&cloud, image.clone(), 1).await;
    let sold = manager
        .allocate(request(
            "order-crash",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    let volume = sold.volume_id.clone().unwrap();
    sim.faults().error_next_volume_deletes(1);
    let deleted = cloud.hold_next("delete_volume", At::After);
    let releasing = tokio::spawn({
        let manager = manager.clone();
        async move { manager.release("order-crash", Some(true)).await }
    });
    deleted.reached().await;
    let process = Process {
        manager,
        image: Some(image),
    };
    let manager = process
        .crash_and_restart(&sim, dir.path(), Survives::FlushedWrites)
        .await;
    let _ = releasing.await;
    assert_eq!(
        manager.get_allocation("order-crash").await.unwrap().state,
        AllocationState::Released
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(manager.stuck_volumes().await.unwrap(), vec![volume]);
    manager.shutdown().await.unwrap();
}

/// A manager on the store in `dir` that draws instance ids from one seed,
/// the same ones again after each restart.
fn seeded_manager(
    dir: &Path,
    cloud: Arc<dyn pool_manager::cloud::Cloud>,
    sim: &SimCloud,
) -> PoolManager {
    PoolManager::new(
        open_store(dir),
        cloud,
        Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            instance_id_seed: Some(7),
            ..settings()
        },
    )
}

/// A manager with seeded instance ids, restarted on the same store, draws
/// ids the store already holds. The store refuses such a write and a fresh
/// id is drawn: the replenisher drove the tenant's instance it had taken
/// for its new one, booting a second server over its record.
#[tokio::test(start_paused = true)]
async fn a_restarted_seeded_manager_never_boots_over_a_taken_instance_id() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let seeded = || seeded_manager(dir.path(), sim.clone(), &sim);
    let manager = seeded();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    let sold = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    wait_ready(&manager, 1).await;
    manager.shutdown().await.unwrap();
    drop(manager);

    let manager = seeded();
    manager.start().await.unwrap();
    sim.reset_call_counts();
    manager
        .allocate(request("order-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    wait_ready(&manager, 1).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("delete_server"), None, "{calls:?}");
    assert_eq!(manager.get_allocation("order-1").await.unwrap(), sold);
    let instances = manager.list_instances(None).await.unwrap();
    let ids: std::collections::HashSet<_> = instances.iter().map(|i| &i.id).collect();
    assert_eq!(ids.len(), 3, "{instances:#?}");
    let tenants = instances
        .iter()
        .find(|i| Some(&i.id) == sold.instance_id.as_ref())
        .unwrap();
    assert_eq!(tenants.server_id, sold.server_id, "its server was replaced");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A seeded manager restarted on its store draws again the id of an
/// instance whose record a release dropped. A release still unfinished
/// then (its port refused) must not take the instance that now carries the
/// id, another tenant's, for its own: it deleted that tenant's server.
#[tokio::test(start_paused = true)]
async fn an_unfinished_release_leaves_alone_an_instance_that_drew_its_id_again() {
    use pool_manager::cloud::CloudError;
    use std::sync::atomic::Ordering;

    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_port",
        CloudError::Conflict("the port is locked".into()),
        false,
    );
    let seeded = || seeded_manager(dir.path(), cloud.clone(), &sim);
    let manager = seeded();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    // No refill draws an id after the one sold.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let first = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    refusing.store(true, Ordering::SeqCst);
    manager.release("order-1", None).await.unwrap_err();
    manager.shutdown().await.unwrap();
    drop(manager);

    let manager = seeded();
    manager.start().await.unwrap();
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    wait_ready(&manager, 1).await;
    let second = manager
        .allocate(request("order-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(second.instance_id, first.instance_id, "the id drawn again");
    refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(
        manager.get_allocation("order-1").await.unwrap().state,
        AllocationState::Released
    );
    let server = sim.server(second.server_id.as_deref().unwrap());
    assert!(server.is_some(), "the second tenant's server was deleted");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A cold boot that missed its purchase's deadline is the pool's, booting
/// on in the background. A crash then, its server booting or its create's
/// answer still on the way, leaves it to the restart: the record was handed
/// to the pool before the purchase answered, so the restart resumes the
/// boot (adopting the server a create made unrecorded) instead of rolling
/// it back or deleting its server as a leak, and a purchase then gets it
/// warm.
#[tokio::test(start_paused = true)]
async fn a_crash_during_a_cold_boot_past_its_deadline_leaves_it_to_the_pool() {
    for survives in [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ] {
        for mid_create in [false, true] {
            let sim = sim();
            let cloud = GatedCloud::new(&sim);
            let dir = tempfile::tempdir().unwrap();
            let (store, image): (Arc<dyn Store>, _) = match survives {
                Survives::EveryWrite => (open_store(dir.path()), None),
                _ => {
                    let image = HookedStore::new(CrashImage::default());
                    (image.clone(), Some(image))
                }
            };
            let manager = started_paused(&cloud, store, 0).await;
            let answered = mid_create.then(|| cloud.hold_next("create_server", At::After));
            let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
            // A lone boot takes 90 s.
            order.timeout = Some(Duration::from_secs(45));
            let err = manager.allocate(order.clone()).await.unwrap_err();
            assert!(
                matches!(&err, pool_manager::ManagerError::ResourceExhausted(_)),
                "{err:?}"
            );
            let process = Process { manager, image };
            let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
            drop(answered);
            let what = format!("{survives:?}, mid_create {mid_create}");
            assert!(manager.get_allocation("late").await.is_err(), "{what}");
            wait_ready(&manager, 1).await;
            let servers = sim.servers();
            assert_eq!(servers.len(), 1, "{what}: {servers:?}");
            order.empty_pool = EmptyPoolPolicy::FailFast;
            let retried = manager.allocate(order).await.unwrap();
            assert!(retried.warm_hit, "{what}");
            assert_eq!(retried.server_id.as_ref(), Some(&servers[0].server.id));
            assert_consistent(&sim, &manager).await;
            manager.shutdown().await.unwrap();
        }
    }
}
