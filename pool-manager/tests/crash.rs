//! A crash between any two steps of an allocation, a release or a refill —
//! simulated by freezing the cloud at the N-th call, before or after the
//! cloud carried it out, dropping the whole process state and reopening
//! the store, with every write, only the flushed ones, or those and a
//! prefix of the others — followed by the start-up reconcile loses nothing
//! and leaks nothing.

mod common;

use cloudsim::SimCloud;
use common::*;
use pool_manager::cloud::VolumeStatus;
use pool_manager::events::EventKind;
use pool_manager::model::{
    Allocation, AllocationState, EmptyPoolPolicy, Instance, InstanceState, VolumeSource,
};
use pool_manager::store::Store;
use pool_manager::{ManagerError, PoolManager};
use std::collections::BTreeMap;
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

impl Survives {
    const ALL: [Survives; 3] = [
        Survives::EveryWrite,
        Survives::FlushedWrites,
        Survives::FlushedAndHalfTheRest,
    ];
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

impl Hang {
    const BOTH: [Hang; 2] = [Hang::BeforeEffect, Hang::AfterEffect];
}

/// One run of the process, on the store of `dir` as `survives` leaves it.
struct Process {
    manager: PoolManager,
    /// cloudsim behind a gate, the restarted process's cloud too.
    cloud: Arc<GatedCloud>,
    image: Option<Arc<HookedStore<CrashImage>>>,
}

/// A pool of `target` Ready instances that makes no cloud call behind the
/// test's back: paused once full, so a warm purchase's instance is not
/// replaced. An empty pool of target 0 is left unpaused: it boots nothing
/// by itself, and a paused pool would refuse the cold boot under test.
async fn quiet_pool(cloud: &Arc<GatedCloud>, store: Arc<dyn Store>, target: u32) -> PoolManager {
    if target == 0 {
        started_over(cloud, store, 0).await
    } else {
        started_paused(cloud, store, target).await
    }
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
        let cloud = GatedCloud::new(sim);
        let manager = quiet_pool(&cloud, store, target).await;
        Self {
            manager,
            cloud,
            image,
        }
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
        let manager = manager_over(&self.cloud, store);
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
    /// From a pool of three Ready instances, the first try's volume attach
    /// failing (a transient error): the try is undone, its instance
    /// discarded, and the next one is tried.
    WarmAfterAFailedAttach,
}

/// Whose volume the crashed order attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrderVolume {
    /// A new one warmpool creates, and deletes if the order is rolled back.
    New,
    /// The tenant's existing one, which nothing warmpool does deletes
    /// (invariant 4): only the `volume_created` flag tells a rollback so.
    Tenants,
}

async fn crash_at_every_step_of_an_allocation(survives: Survives, purchase: Purchase, hang: Hang) {
    crash_at_every_step_of_an_order(survives, purchase, hang, OrderVolume::New).await;
}

async fn crash_at_every_step_of_an_order(
    survives: Survives,
    purchase: Purchase,
    hang: Hang,
    volume: OrderVolume,
) {
    let sweep = format!("an allocation ({survives:?}, {purchase:?}, {hang:?}, {volume:?})");
    at_every_crash_point(&sweep, 8, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        // Not an API call: the crash points count the order's calls alone.
        let tenants = (volume == OrderVolume::Tenants)
            .then(|| sim.create_volume_for_test("tenant-a", "az1", 20));
        let source = match &tenants {
            Some(volume_id) => VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            None => new_volume(),
        };
        let (ready, policy) = match purchase {
            Purchase::Warm => (2, EmptyPoolPolicy::Wait),
            Purchase::Cold => (0, EmptyPoolPolicy::ColdBoot),
            Purchase::WarmAfterAFailedAttach => (3, EmptyPoolPolicy::Wait),
        };
        let process = Process::first(&sim, dir.path(), survives, ready).await;
        if let Purchase::WarmAfterAFailedAttach = purchase {
            sim.faults().fail_next_volume_attach(1);
        }
        let order = request("order-crash", source, policy);
        let acknowledged = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            let order = order.clone();
            async move { manager.allocate(order).await }
        })
        .await
        .map(|answer| answer.expect("allocation without a crash succeeds"));
        if let (Some(_), Purchase::WarmAfterAFailedAttach) = (&acknowledged, purchase) {
            let calls = sim.call_counts();
            assert_eq!(
                calls.get("attach_volume"),
                Some(&2),
                "the first try's attach did not fail: {calls:?}"
            );
        }

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!(
            "{survives:?}, {purchase:?}, {volume:?}, crash after {crash_after} calls, {hang:?}"
        );
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
        if let Some(volume_id) = &tenants {
            // A rollback's detach takes Cinder a moment.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let server = acknowledged.as_ref().and_then(|a| a.server_id.as_deref());
            assert_tenants_volume_kept(&sim, volume_id, server, &what);
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
        if let Some(volume_id) = &tenants {
            assert_tenants_volume_kept(&sim, volume_id, retried.server_id.as_deref(), &what);
        }
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
    for survives in Survives::ALL {
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
    for survives in Survives::ALL {
        crash_at_every_step_of_an_allocation(survives, Purchase::Warm, Hang::AfterEffect).await;
    }
}

/// The same for a purchase served by a cold boot: a server created whose
/// id the process never learned.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_a_cold_boot_purchase_took_effect_is_repaired() {
    for survives in Survives::ALL {
        crash_at_every_step_of_an_allocation(survives, Purchase::Cold, Hang::AfterEffect).await;
    }
}

/// The same when the purchase's first try fails at its volume attach: a
/// crash anywhere in the failed try's undoing (its detaches, deletes and
/// discard) or in the next try.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_an_allocation_after_a_failed_try_is_repaired() {
    for hang in Hang::BOTH {
        for survives in Survives::ALL {
            crash_at_every_step_of_an_allocation(survives, Purchase::WarmAfterAFailedAttach, hang)
                .await;
        }
    }
}

/// A crash at any step of a purchase that attaches the tenant's existing
/// volume, before or after the call took effect, the store keeping every
/// write, only the flushed ones, or some of the others: after the restart's
/// reconcile the volume is still there, attached to the order's server if
/// the order was acknowledged, else `available` and attached to nothing,
/// and no call ever asked Cinder to delete it.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_an_allocation_of_the_tenants_volume_keeps_it() {
    for hang in Hang::BOTH {
        for survives in Survives::ALL {
            crash_at_every_step_of_an_order(survives, Purchase::Warm, hang, OrderVolume::Tenants)
                .await;
        }
    }
}

/// The same when the purchase's first try fails its attach of the
/// tenant's volume: the failed try's undoing detaches it, never deletes it.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_an_allocation_of_the_tenants_volume_after_a_failed_try_keeps_it() {
    for hang in Hang::BOTH {
        for survives in Survives::ALL {
            crash_at_every_step_of_an_order(
                survives,
                Purchase::WarmAfterAFailedAttach,
                hang,
                OrderVolume::Tenants,
            )
            .await;
        }
    }
}

/// The tenant's volume `volume_id` is there, was never sent a delete (no
/// volume of the scenario was), and is attached to `server` alone, or,
/// with none, `available` and attached to nothing.
fn assert_tenants_volume_kept(sim: &SimCloud, volume_id: &str, server: Option<&str>, what: &str) {
    let calls = sim.call_counts();
    assert_eq!(
        calls.get("delete_volume"),
        None,
        "{what}: a volume was sent a delete, and the only one is the tenant's: {calls:?}"
    );
    let volume = sim
        .volumes()
        .into_iter()
        .find(|v| v.id == volume_id)
        .unwrap_or_else(|| panic!("{what}: the tenant's volume {volume_id} was deleted"));
    match server {
        Some(server) => {
            assert_eq!(volume.status, VolumeStatus::InUse, "{what}: {volume:?}");
            assert_eq!(volume.attached_to, [server], "{what}: {volume:?}");
        }
        None => {
            assert_eq!(volume.status, VolumeStatus::Available, "{what}: {volume:?}");
            assert!(volume.attached_to.is_empty(), "{what}: {volume:?}");
        }
    }
}

/// What the crashed release is of, and what it does with the volume.
#[derive(Clone, Copy, Debug)]
struct Release {
    /// `delete_volume` of the Release; `false`: the tenant keeps it.
    delete_volume: bool,
    /// The order's port and volume creates lost their answers and were
    /// sent again (`creates_in_doubt`): their twins, deleted by the
    /// commit's look, are named by a watch the release takes over.
    in_doubt: bool,
    /// The order attached the tenant's existing volume, which it did not
    /// create: with `delete_volume` false, nothing may delete it.
    tenants_volume: bool,
}

impl Release {
    const DELETING_THE_VOLUME: Self = Self {
        delete_volume: true,
        in_doubt: false,
        tenants_volume: false,
    };
}

/// A release sweep in every mode of survival: `hang` and `release` as given.
async fn crash_at_every_step_of_a_release_surviving_anything(hang: Hang, release: Release) {
    for survives in Survives::ALL {
        crash_at_every_step_of_a_release(survives, hang, release).await;
    }
}

async fn crash_at_every_step_of_a_release(survives: Survives, hang: Hang, release: Release) {
    let sweep = format!("a release ({survives:?}, {hang:?}, {release:?})");
    let Release {
        delete_volume,
        in_doubt,
        tenants_volume,
    } = release;
    at_every_crash_point(&sweep, 4, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 2).await;
        if in_doubt {
            // cloudsim creates each, and then the allocator's retry too.
            process.cloud.lose_next_answer("create_port");
            process.cloud.lose_next_answer("create_volume");
        }
        let source = match tenants_volume {
            true => VolumeSource::Existing {
                volume_id: sim.create_volume_for_test("tenant-a", "az1", 20),
            },
            false => new_volume(),
        };
        let sold = process
            .manager
            .allocate(request("order-crash", source, EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert_eq!(sold.creates_in_doubt, in_doubt);
        if in_doubt {
            // The commit's look deletes the twins; the release looks again.
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_consistent(&sim, &process.manager).await;
        }
        let acknowledged = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            async move { manager.release("order-crash", Some(delete_volume)).await }
        })
        .await
        .map(|answer| answer.expect("a release without a crash succeeds"));

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!("{survives:?}, crash after {crash_after} calls, {hang:?}, {release:?}");
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
        if tenants_volume {
            // A release's detach takes Cinder a moment.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let volume = sold.volume_id.as_deref().unwrap();
            let server = match after_restart.state {
                AllocationState::Allocated => sold.server_id.as_deref(),
                _ => None,
            };
            assert_tenants_volume_kept(&sim, volume, server, &what);
        }

        // The billing system retries the release and it is done once.
        let retried = manager
            .release("order-crash", Some(delete_volume))
            .await
            .unwrap();
        assert_eq!(retried.state, AllocationState::Released, "{what}");
        if let Some(done) = &acknowledged {
            assert_eq!(&retried, done, "{what}");
        }
        // The passes that follow (the name's watch among them) leave the
        // volume as the release did.
        tokio::time::sleep(Duration::from_secs(10)).await;
        manager.reconcile().await.unwrap();
        let volume = sold.volume_id.as_deref().unwrap();
        let left = sim.volumes().into_iter().find(|v| v.id == volume);
        match delete_volume {
            true => assert!(left.is_none(), "{what}: the released volume was kept"),
            false => {
                let left =
                    left.unwrap_or_else(|| panic!("{what}: the tenant's volume was deleted"));
                assert_eq!(left.status, VolumeStatus::Available, "{what}: {left:?}");
                assert!(left.attached_to.is_empty(), "{what}: {left:?}");
            }
        }
        assert!(sim.ports().is_empty(), "{what}: {:?}", sim.ports());
        if tenants_volume && !delete_volume {
            assert_tenants_volume_kept(&sim, volume, None, &what);
        }
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
    crash_at_every_step_of_a_release_surviving_anything(
        Hang::BeforeEffect,
        Release::DELETING_THE_VOLUME,
    )
    .await;
}

/// A crash after the cloud carried out a call of a release and before the
/// process heard so (a server, port or volume deleted unrecorded): the
/// release is finished or can be asked again, and nothing of it stays.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_of_a_release_took_effect_is_repaired() {
    crash_at_every_step_of_a_release_surviving_anything(
        Hang::AfterEffect,
        Release::DELETING_THE_VOLUME,
    )
    .await;
}

/// The same for a release that leaves the tenant its volume: finished or
/// asked again, it hands the volume back `available`, attached to nothing,
/// and no later pass deletes it.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_release_keeping_the_volume_keeps_it() {
    let keeping = Release {
        delete_volume: false,
        in_doubt: false,
        tenants_volume: false,
    };
    for hang in Hang::BOTH {
        crash_at_every_step_of_a_release_surviving_anything(hang, keeping).await;
    }
}

/// The same for a release of an order that attached the tenant's existing
/// volume: finished or asked again, it hands the volume back `available`,
/// attached to nothing, and no call of the release, the restart's
/// reconcile or a later pass ever asks Cinder to delete it.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_release_of_the_tenants_volume_keeps_it() {
    let keeping = Release {
        delete_volume: false,
        in_doubt: false,
        tenants_volume: true,
    };
    for hang in Hang::BOTH {
        crash_at_every_step_of_a_release_surviving_anything(hang, keeping).await;
    }
}

/// The same for a release of an order whose port and volume creates lost
/// their answers (`creates_in_doubt`): the release's look for twins and
/// the name's watch delete none of what the tenant keeps, and leave
/// nothing else. Deleting the volume is swept once, its calls taking
/// effect and the unflushed writes lost (the sweeps cost time).
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_release_of_creates_in_doubt_is_repaired() {
    let keeping = Release {
        delete_volume: false,
        in_doubt: true,
        tenants_volume: false,
    };
    for hang in Hang::BOTH {
        crash_at_every_step_of_a_release_surviving_anything(hang, keeping).await;
    }
    let deleting = Release {
        delete_volume: true,
        ..keeping
    };
    crash_at_every_step_of_a_release(Survives::FlushedWrites, Hang::AfterEffect, deleting).await;
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
        // A boot whose create was on its way at the crash and made no
        // server is kept, Deleting, while that create may land yet.
        let (with_server, awaiting): (Vec<_>, Vec<_>) =
            instances.iter().partition(|i| i.server_id.is_some());
        assert!(
            awaiting.iter().all(|i| i.state == InstanceState::Deleting),
            "{survives:?}, crash after {crash_after} calls, {hang:?}: {instances:#?}"
        );
        assert_eq!(
            sim.servers().len(),
            with_server.len(),
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
    for survives in Survives::ALL {
        crash_at_every_step_of_a_refill(survives, Hang::AfterEffect).await;
    }
}

/// Waits (in simulated time) until `done` says the manager came to rest.
async fn until(manager: &PoolManager, what: &str, done: impl AsyncFn(&PoolManager) -> bool) {
    for _ in 0..600 {
        if done(manager).await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "{what} never came: {:#?}",
        manager.list_instances(None).await.unwrap()
    );
}

async fn pool_gone(manager: &PoolManager) -> bool {
    manager.get_pool(&pool()).await.is_err()
}

async fn crash_at_every_step_of_a_pool_deletion(survives: Survives, hang: Hang) {
    let sweep = format!("a pool deletion ({survives:?}, {hang:?})");
    at_every_crash_point(&sweep, 4, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 3).await;
        let sold = process
            .manager
            .allocate(request(
                "order-crash",
                new_volume(),
                EmptyPoolPolicy::FailFast,
            ))
            .await
            .unwrap();
        // Two Ready, and two booting (their servers created) when the
        // deletion comes.
        process
            .manager
            .update_pool(&pool(), |s| {
                s.paused = false;
                s.min_ready = 4;
            })
            .await
            .unwrap();
        until(&process.manager, "two boots", async |manager| {
            let instances = manager.list_instances(Some(&pool())).await.unwrap();
            let booting = instances
                .iter()
                .filter(|i| i.state == InstanceState::Booting && i.server_id.is_some());
            booting.count() == 2
        })
        .await;
        let drained = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            async move {
                manager.delete_pool(&pool()).await.unwrap();
                until(&manager, "the drain", pool_gone).await;
            }
        })
        .await
        .is_some();

        // The deletion was on disk before the drain's first call: the
        // restart drains on without being asked again.
        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!("{survives:?}, crash after {crash_after} calls, {hang:?}");
        until(&manager, &what, pool_gone).await;
        manager.reconcile().await.unwrap();
        assert_consistent(&sim, &manager).await;
        // Of the pool, only the tenant's server and port are left.
        let servers: Vec<_> = sim.servers().into_iter().map(|s| s.server.id).collect();
        assert_eq!(servers, Vec::from_iter(sold.server_id.clone()), "{what}");
        let ports: Vec<_> = sim.ports().into_iter().map(|p| p.id).collect();
        assert_eq!(ports, Vec::from_iter(sold.port_id.clone()), "{what}");
        let instances = manager.list_instances(None).await.unwrap();
        assert_eq!(instances.len(), 1, "{what}: {instances:#?}");
        assert_eq!(manager.get_allocation("order-crash").await.unwrap(), sold);

        // The tenant's instance outlives its pool, and is released cleanly.
        let released = manager.release("order-crash", Some(true)).await.unwrap();
        assert_eq!(released.state, AllocationState::Released, "{what}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        manager.reconcile().await.unwrap();
        assert!(sim.servers().is_empty(), "{what}: {:?}", sim.servers());
        assert!(sim.ports().is_empty(), "{what}: {:?}", sim.ports());
        assert!(sim.volumes().is_empty(), "{what}: {:?}", sim.volumes());
        assert!(manager.list_instances(None).await.unwrap().is_empty());
        assert_consistent(&sim, &manager).await;
        manager.shutdown().await.unwrap();
        drained
    })
    .await;
}

/// A crash between any two steps of a pool's drain (its Ready and booting
/// instances deleted, a tenant's left), or after one of its calls took
/// effect, the store keeping every write, only the flushed ones, or some
/// of the others: the restart drains on, the pool goes with every server
/// and port of it but the tenant's, which is released cleanly later.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_a_pool_deletion_is_repaired() {
    for hang in Hang::BOTH {
        for survives in Survives::ALL {
            crash_at_every_step_of_a_pool_deletion(survives, hang).await;
        }
    }
}

/// After the restart of a process that dropped (or stopped) a boot while
/// its create was on its way, the cloud made the server: once the restart
/// and a pass 10 s later are done, the server is gone as its instance's, no
/// leak, and nothing of it is left in the store.
async fn no_server_left_of_the_dropped_boot(
    sim: &Arc<SimCloud>,
    manager: &PoolManager,
    what: &str,
) {
    let mut events = manager.events();
    tokio::time::sleep(Duration::from_secs(10)).await;
    manager.reconcile().await.unwrap();
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::LeakDeleted { .. }),
            "{what}: a later pass took the dropped boot's server for a leak: {event:?}"
        );
    }
    assert!(sim.servers().is_empty(), "{what}: {:?}", sim.servers());
    let instances = manager.list_instances(None).await.unwrap();
    assert!(instances.is_empty(), "{what}: {instances:#?}");
    assert_consistent(sim, manager).await;
}

/// A pool deleted while the create of its one boot is on its way (the
/// cloud made the server, its answer not back yet), then a crash, or a
/// graceful stop (every write kept), which aborts the boot task before the
/// answer: the drain must not drop the record that is all that names the
/// server. The restart starts (a store knowing nothing would refuse the
/// server as unknown), and deletes the server as the boot's own, no leak.
#[tokio::test(start_paused = true)]
async fn a_crash_after_deleting_a_pool_mid_create_deletes_the_server_as_its_own() {
    for survives in Survives::ALL {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 0).await;
        let created = process.cloud.hold_next("create_server", At::After);
        process
            .manager
            .update_pool(&pool(), |s| s.min_ready = 1)
            .await
            .unwrap();
        created.reached().await;
        assert_eq!(sim.servers().len(), 1, "the cloud made the server");
        process.manager.delete_pool(&pool()).await.unwrap();
        until(&process.manager, "the drain", pool_gone).await;

        let what = format!("{survives:?}");
        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        assert!(pool_gone(&manager).await, "{what}");
        no_server_left_of_the_dropped_boot(&sim, &manager, &what).await;
        manager.shutdown().await.unwrap();
    }
}

/// A cold boot whose purchase's deadline passed while its create was on
/// its way, the pool with no room for it (max_ready 0): the purchase's
/// rollback discards it as a drain does. A crash, or a graceful stop, then
/// must not leave its server to the restart as a leak.
#[tokio::test(start_paused = true)]
async fn a_crash_after_a_rollback_dropped_a_cold_boot_mid_create_deletes_the_server_as_its_own() {
    for survives in Survives::ALL {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 0).await;
        process
            .manager
            .update_pool(&pool(), |s| s.max_ready = 0)
            .await
            .unwrap();
        let created = process.cloud.hold_next("create_server", At::After);
        let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
        order.timeout = Some(Duration::from_secs(45));
        let err = process.manager.allocate(order).await.unwrap_err();
        assert!(
            matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("no room")),
            "{err:?}"
        );
        assert_eq!(sim.servers().len(), 1, "the cloud made the server");
        drop(created);

        let what = format!("{survives:?}");
        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        assert!(manager.get_allocation("late").await.is_err(), "{what}");
        no_server_left_of_the_dropped_boot(&sim, &manager, &what).await;
        manager.shutdown().await.unwrap();
    }
}

async fn crash_at_every_step_of_a_retirement(survives: Survives, hang: Hang) {
    let sweep = format!("a retirement ({survives:?}, {hang:?})");
    at_every_crash_point(&sweep, 2, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 3).await;
        let booted: Vec<_> = sim.servers().into_iter().map(|s| s.server.id).collect();
        sim.reset_call_counts();
        let one_left = async |manager: &PoolManager| {
            let instances = manager.list_instances(Some(&pool())).await.unwrap();
            instances.len() == 1 && instances[0].state == InstanceState::Ready
        };
        let retired = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            async move {
                manager
                    .update_pool(&pool(), |s| {
                        s.paused = false;
                        s.min_ready = 1;
                        s.max_ready = 1;
                    })
                    .await
                    .unwrap();
                until(&manager, "the retirements", one_left).await;
            }
        })
        .await
        .is_some();

        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what = format!("{survives:?}, crash after {crash_after} calls, {hang:?}");
        until(&manager, &what, one_left).await;
        manager.reconcile().await.unwrap();
        assert_consistent(&sim, &manager).await;
        // Two of the three retired, the third kept, and nothing booted.
        let instances = manager.list_instances(None).await.unwrap();
        let servers = sim.servers();
        assert_eq!(servers.len(), 1, "{what}: {servers:?}");
        assert!(booted.contains(&servers[0].server.id), "{what}");
        assert_eq!(instances[0].server_id.as_ref(), Some(&servers[0].server.id));
        let calls = sim.call_counts();
        assert_eq!(calls.get("create_server"), None, "{what}: {calls:?}");
        manager.shutdown().await.unwrap();
        retired
    })
    .await;
}

/// A crash between any two steps of retiring the Ready instances above a
/// lowered max_ready, or after one of its calls took effect, the store
/// keeping every write, only the flushed ones, or some of the others: the
/// restart retires exactly the surplus, boots nothing and leaks nothing.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_retiring_a_surplus_is_repaired() {
    for hang in Hang::BOTH {
        for survives in Survives::ALL {
            crash_at_every_step_of_a_retirement(survives, hang).await;
        }
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
        cloud,
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
    assert_consistent(&sim, &manager).await;
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
    for survives in Survives::ALL {
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
            let manager = quiet_pool(&cloud, store, 0).await;
            let answered = mid_create.then(|| cloud.hold_next("create_server", At::After));
            let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
            // A lone boot takes 90 s.
            order.timeout = Some(Duration::from_secs(45));
            let err = manager.allocate(order.clone()).await.unwrap_err();
            assert!(
                matches!(&err, pool_manager::ManagerError::ResourceExhausted(_)),
                "{err:?}"
            );
            let process = Process {
                manager,
                cloud: cloud.clone(),
                image,
            };
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

/// A crash image that dies at the `left`-th store write from when the test
/// sets it, and the cloud with it: every call from then on hangs, so
/// nothing the process does after the write reaches the cloud.
struct CrashAtWrite {
    image: CrashImage,
    /// Writes until the crash; 0: not counting.
    left: std::sync::atomic::AtomicU64,
    crashed: std::sync::atomic::AtomicBool,
    /// An instance was claimed by a write before the crashing one.
    claimed: std::sync::atomic::AtomicBool,
    /// A write before the crashing one put a claimed instance back
    /// (`Ready`, unclaimed).
    put_back: std::sync::atomic::AtomicBool,
    sim: Arc<SimCloud>,
}

#[async_trait::async_trait]
impl StoreHooks for CrashAtWrite {
    fn written(&self, write: Write) {
        use std::sync::atomic::Ordering::SeqCst;
        let claim =
            matches!(&write, Write::Instance(_, Some(i)) if i.state == InstanceState::Claimed);
        // Only a purchase claims here, so a Ready write after a claim is
        // its put-back.
        let put_back = self.claimed.load(SeqCst)
            && matches!(&write, Write::Instance(_, Some(i))
                if i.state == InstanceState::Ready && i.request_id.is_none());
        self.image.written(write);
        if self.left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) == Ok(1) {
            self.image.crash();
            self.crashed.store(true, SeqCst);
            self.sim.faults().hang_after_calls(0);
        }
        if !self.crashed.load(SeqCst) {
            if claim {
                self.claimed.store(true, SeqCst);
            }
            if put_back {
                self.put_back.store(true, SeqCst);
            }
        }
    }

    async fn before_flush(&self) -> pool_manager::store::StoreResult<()> {
        self.image.before_flush().await
    }
}

/// A fault a purchase meets in [`crash_at_every_write_of_a_purchase`], on a
/// pool of two Ready instances.
#[async_trait::async_trait]
trait PurchaseFault: Sync {
    /// The process's cloud, over `sim`, the fault not yet on.
    fn cloud(&self, sim: &Arc<SimCloud>) -> Arc<GatedCloud>;
    /// Turns the fault on, once the pool is Ready.
    async fn arm(&self, cloud: &GatedCloud, manager: &PoolManager);
    /// Turns off what is the process's and not the cloud's, before the
    /// restart.
    fn disarm(&self) {}
    /// Checks what the purchase answered when no write crashed it.
    fn answered(&self, answer: Result<Allocation, ManagerError>);
    /// Checks the pool once the restart's reconcile is done and 60 s passed.
    async fn repaired(&self, after: &Restarted<'_>);
}

/// A purchase's process after its crash (or its answer) and restart.
struct Restarted<'a> {
    /// The crash point, for the messages.
    what: String,
    /// A write crashed the process; else the purchase answered first.
    crashed: bool,
    /// A write before the crashing one put a claimed instance back in the
    /// pool. It is flushed before any later write, so it survives.
    put_back: bool,
    /// The instances the reopened store held, before the restart.
    at_restart: Vec<Instance>,
    manager: &'a PoolManager,
}

impl Restarted<'_> {
    /// Instances the reopened store held claimed: each the rollback's to
    /// discard.
    fn claimed_at_restart(&self) -> usize {
        let claimed = self.at_restart.iter();
        claimed
            .filter(|i| i.state == InstanceState::Claimed)
            .count()
    }
}

/// What the restart's repair leaves, 60 s on, of the instances a crashed
/// purchase's reopened store holds, by id: a Ready one stays; an
/// Allocated one stays if its order was committed; the rest go, their
/// servers deleted and their records dropped: the claimed one (invariant
/// 3: sold or deleted, and a purchase rolled back sold nothing), the one
/// being discarded, and the one a rolled-back order had taken. Nothing is
/// booted (the pool is paused).
fn repaired_from(
    at_restart: &[Instance],
    order: Option<&Allocation>,
) -> BTreeMap<String, InstanceState> {
    let committed = order.is_some_and(|o| o.state == AllocationState::Allocated);
    let kept = at_restart.iter().filter(|i| match i.state {
        InstanceState::Ready => true,
        InstanceState::Allocated => committed,
        InstanceState::Claimed | InstanceState::Deleting => false,
        state => panic!("a purchase leaves no instance {state:?}: {i:#?}"),
    });
    kept.map(|i| (i.id.clone(), i.state)).collect()
}

/// A purchase meeting `fault`, crashed at its first store write, then its
/// second, and so on until it answers before the crash; once keeping only
/// the flushed writes, once every one. After each, the process starts
/// again on what survived, and 60 s later the store agrees with the cloud
/// ([`assert_consistent`]), the instances are exactly those
/// [`repaired_from`] keeps of what the reopened store held, `fault` checks
/// the rest, and the order asked again is served.
async fn crash_at_every_write_of_a_purchase(fault: &dyn PurchaseFault) {
    use std::sync::atomic::Ordering::SeqCst;
    for every_write in [false, true] {
        for at in 1u64.. {
            assert!(at < 100, "a purchase should need far fewer writes");
            let sim = sim();
            let dir = tempfile::tempdir().unwrap();
            let cloud = fault.cloud(&sim);
            let store = HookedStore::new(CrashAtWrite {
                image: CrashImage::default(),
                left: Default::default(),
                crashed: Default::default(),
                claimed: Default::default(),
                put_back: Default::default(),
                sim: sim.clone(),
            });
            let manager = started_paused(&cloud, store.clone(), 2).await;
            fault.arm(&cloud, &manager).await;
            store.hooks.left.store(at, SeqCst);
            let order = request("order-crash", new_volume(), EmptyPoolPolicy::FailFast);
            let purchase = tokio::spawn({
                let manager = manager.clone();
                let order = order.clone();
                async move { manager.allocate(order).await }
            });
            while !purchase.is_finished() && !store.hooks.crashed.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let crashed = store.hooks.crashed.load(SeqCst);
            let put_back = store.hooks.put_back.load(SeqCst);
            if crashed {
                purchase.abort();
            } else {
                fault.answered(purchase.await.unwrap());
                store.hooks.image.crash();
            }
            manager.shutdown().await.unwrap();
            drop(manager);
            sim.faults().clear_hang();
            fault.disarm();
            let kept = match every_write {
                true => |unflushed: usize| unflushed,
                false => |_| 0,
            };
            let store = store.hooks.image.reopen(dir.path(), kept).await;
            let at_restart = store.list_instances().await.unwrap();
            let order_at_restart = store.get_allocation("order-crash").await.unwrap();
            let manager = manager_over(&cloud, store);
            manager.start().await.unwrap();

            let what = format!("crash at write {at}, every write kept: {every_write}");
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert_consistent(&sim, &manager).await;
            let expected = repaired_from(&at_restart, order_at_restart.as_ref());
            let instances = manager.list_instances(None).await.unwrap();
            let repaired: BTreeMap<_, _> =
                instances.iter().map(|i| (i.id.clone(), i.state)).collect();
            assert_eq!(
                repaired, expected,
                "{what}: the restart found {at_restart:#?} and the order {order_at_restart:#?}"
            );
            let restarted = Restarted {
                what,
                crashed,
                put_back,
                at_restart,
                manager: &manager,
            };
            fault.repaired(&restarted).await;
            let what = restarted.what;

            manager
                .update_pool(&pool(), |s| s.paused = false)
                .await
                .unwrap();
            wait_ready(&manager, 2).await;
            let served = manager.allocate(order).await.unwrap();
            assert_eq!(served.state, AllocationState::Allocated, "{what}");
            assert_consistent(&sim, &manager).await;
            manager.shutdown().await.unwrap();
            if !crashed {
                break;
            }
        }
    }
}

/// Every attach refused 429 ([`a_crash_at_any_write_of_a_purchase_putting_its_instance_back_is_repaired`]).
#[derive(Default)]
struct AttachesThrottled {
    throttling: Arc<std::sync::atomic::AtomicBool>,
    /// A crash came after the put-back.
    put_back_seen: std::sync::atomic::AtomicBool,
    /// A crash came while the instance was claimed, and it was discarded.
    discard_seen: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PurchaseFault for AttachesThrottled {
    fn cloud(&self, sim: &Arc<SimCloud>) -> Arc<GatedCloud> {
        use std::sync::atomic::Ordering::SeqCst;
        let throttling = self.throttling.clone();
        GatedCloud::with_fault(sim, move |method| {
            (matches!(method, "attach_volume" | "attach_port") && throttling.load(SeqCst)).then(
                || pool_manager::cloud::CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(600)),
                    message: format!("{method}: rate-limited (HTTP 429)"),
                    unavailable: false,
                },
            )
        })
    }

    async fn arm(&self, _: &GatedCloud, _: &PoolManager) {
        self.throttling
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.throttling
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn answered(&self, answer: Result<Allocation, ManagerError>) {
        let err = answer.unwrap_err();
        assert!(err.to_string().contains("back in the pool"), "{err}");
    }

    async fn repaired(&self, after: &Restarted<'_>) {
        use std::sync::atomic::Ordering::SeqCst;
        let what = &after.what;
        assert!(
            after.manager.get_allocation("order-crash").await.is_err(),
            "{what}: the order is rolled back"
        );
        let instances = after.manager.list_instances(Some(&pool())).await.unwrap();
        assert!(
            instances
                .iter()
                .all(|i| i.state == InstanceState::Ready && i.request_id.is_none()),
            "{what}: {instances:#?}"
        );
        // Back in the pool, or (a crash while claimed) discarded.
        let claimed = after.claimed_at_restart();
        assert!(claimed <= 1, "{what}: {:#?}", after.at_restart);
        assert!(
            !after.put_back || claimed == 0,
            "{what}: the put-back was lost: {:#?}",
            after.at_restart
        );
        assert!(after.crashed || claimed == 0, "{what}");
        assert_eq!(instances.len(), 2 - claimed, "{what}: {instances:#?}");
        if after.crashed && after.put_back {
            self.put_back_seen.store(true, SeqCst);
        }
        if claimed == 1 {
            self.discard_seen.store(true, SeqCst);
        }
    }
}

/// A purchase whose attaches are all refused 429 puts its instance back
/// in the pool with two writes: the order no longer naming it, then the
/// instance unclaimed. A crash at any write of the purchase, keeping only
/// the flushed writes or every one, leaves after the restart's reconcile
/// no instance both in the pool and claimed or named by the order, the
/// order rolled back, and the order served when asked again.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_write_of_a_purchase_putting_its_instance_back_is_repaired() {
    use std::sync::atomic::Ordering::SeqCst;
    let fault = AttachesThrottled::default();
    crash_at_every_write_of_a_purchase(&fault).await;
    assert!(
        fault.put_back_seen.load(SeqCst),
        "no crash point came after the put-back"
    );
    assert!(
        fault.discard_seen.load(SeqCst),
        "no crash point came while the instance was claimed"
    );
}

/// The oldest Ready instance, the one a purchase claims first, silent at
/// its claim on a server Nova shows as `shown` (`None`: as cloudsim has it,
/// ACTIVE): put back, or discarded if Nova shows it broken, and the
/// purchase served by the other one.
#[derive(Default)]
struct OldestSilent {
    shown: Option<pool_manager::cloud::ServerStatus>,
    /// The silent instance's id, once armed.
    silent: std::sync::Mutex<Option<String>>,
    /// A crash left the order rolled back.
    rolled_back_seen: std::sync::atomic::AtomicBool,
    /// A crash left the order served.
    served_seen: std::sync::atomic::AtomicBool,
    /// A crash came after the silent instance went back to the pool.
    put_back_seen: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PurchaseFault for OldestSilent {
    fn cloud(&self, sim: &Arc<SimCloud>) -> Arc<GatedCloud> {
        GatedCloud::new(sim)
    }

    async fn arm(&self, cloud: &GatedCloud, manager: &PoolManager) {
        let mut ready = manager.list_instances(Some(&pool())).await.unwrap();
        ready.sort_by_key(|i| i.ready_at);
        let server = ready[0].server_id.clone().unwrap();
        assert!(cloud.sim.stop_mysqld(&server));
        if let Some(status) = self.shown {
            cloud.show_server(&server, move |s| {
                s.status = status;
                s.mysql_addr = None;
            });
        }
        *self.silent.lock().unwrap() = Some(ready[0].id.clone());
    }

    fn answered(&self, answer: Result<Allocation, ManagerError>) {
        let served = answer.expect("served by the instance that answers");
        let silent = self.silent.lock().unwrap().clone();
        assert_ne!(served.instance_id, silent, "{served:#?}");
    }

    async fn repaired(&self, after: &Restarted<'_>) {
        use std::sync::atomic::Ordering::SeqCst;
        let what = &after.what;
        let silent = self.silent.lock().unwrap().clone().unwrap();
        let order = after.manager.get_allocation("order-crash").await.ok();
        match &order {
            None => self.rolled_back_seen.store(true, SeqCst),
            Some(order) => {
                assert_eq!(
                    order.state,
                    AllocationState::Allocated,
                    "{what}: {order:#?}"
                );
                assert_ne!(order.instance_id.as_ref(), Some(&silent), "{what}");
                self.served_seen.store(true, SeqCst);
            }
        }
        let instances = after.manager.list_instances(Some(&pool())).await.unwrap();
        for instance in &instances {
            match instance.state {
                InstanceState::Ready => {
                    assert_eq!(instance.request_id, None, "{what}: {instance:#?}")
                }
                InstanceState::Allocated => {
                    let order = order.as_ref().expect("an Allocated instance's order");
                    assert_eq!(
                        order.instance_id.as_ref(),
                        Some(&instance.id),
                        "{what}: {instances:#?}"
                    );
                    assert_eq!(
                        instance.request_id.as_deref(),
                        Some("order-crash"),
                        "{what}: {instance:#?}"
                    );
                }
                // A discarded one is gone by now (repaired_from).
                _ => panic!("{what}: neither in the pool nor sold: {instance:#?}"),
            }
        }
        let silent_ready = instances
            .iter()
            .any(|i| i.id == silent && i.state == InstanceState::Ready);
        if !after.crashed {
            // The purchase claimed the silent instance first, and put it
            // back, or discarded it.
            assert_eq!(silent_ready, self.shown.is_none(), "{what}: {instances:#?}");
        }
        if self.shown.is_none() && after.crashed && after.put_back {
            assert!(silent_ready, "{what}: {instances:#?}");
            self.put_back_seen.store(true, SeqCst);
        }
    }
}

impl OldestSilent {
    fn shown(shown: Option<pool_manager::cloud::ServerStatus>) -> Self {
        Self {
            shown,
            ..Self::default()
        }
    }

    fn assert_both_outcomes_seen(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        assert!(
            self.rolled_back_seen.load(SeqCst),
            "no crash point left the order rolled back"
        );
        assert!(
            self.served_seen.load(SeqCst),
            "no crash point left the order served"
        );
    }
}

/// A purchase whose first instance is silent at its claim, its server
/// ACTIVE, puts it back in the pool (the order no longer naming it, then
/// the instance unclaimed) and is served by the other. A crash at any
/// write of the purchase, keeping only the flushed writes or every one,
/// leaves after the restart's reconcile the order rolled back or served,
/// each instance in the pool unclaimed, discarded, or sold to the order
/// that names it, and the order served when asked again.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_write_of_a_purchase_putting_a_silent_instance_back_is_repaired() {
    let fault = OldestSilent::shown(None);
    crash_at_every_write_of_a_purchase(&fault).await;
    fault.assert_both_outcomes_seen();
    assert!(
        fault
            .put_back_seen
            .load(std::sync::atomic::Ordering::SeqCst),
        "no crash point came after the silent instance was put back"
    );
}

/// As [`a_crash_at_any_write_of_a_purchase_putting_a_silent_instance_back_is_repaired`],
/// the silent instance's server shown stopped (SHUTOFF): the purchase
/// discards it (its claim let go of, its delete not waited for) and is
/// served by the other.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_write_of_a_purchase_discarding_a_broken_server_is_repaired() {
    let fault = OldestSilent::shown(Some(pool_manager::cloud::ServerStatus::Stopped));
    crash_at_every_write_of_a_purchase(&fault).await;
    fault.assert_both_outcomes_seen();
}

/// A boot resumed after a restart keeps the deadline its boot request set
/// (`PoolSpec::boot_timeout`: not Ready this long after the request, it is
/// discarded): restarted at 0.9 × the timeout, an instance whose mysqld
/// never answers fails shortly after 1 ×, not a whole new timeout later
/// (under a crash loop, never).
#[tokio::test(start_paused = true)]
async fn a_boot_resumed_after_a_restart_keeps_its_deadline() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let dir = tempfile::tempdir().unwrap();
    let wall = std::time::SystemTime::now();
    let began = tokio::time::Instant::now();
    // One wall clock across the restart, as a machine's is.
    let on_one_wall_clock = || {
        let mut settings = settings();
        settings.sizing.wall_clock_start = Some(wall + began.elapsed());
        PoolManager::new(
            open_store(dir.path()),
            sim.clone(),
            Arc::new(sim.probe()),
            settings,
        )
    };
    let manager = on_one_wall_clock();
    manager.start().await.unwrap();
    let spec = spec(1);
    let boot_timeout = spec.boot_timeout;
    manager.create_pool(pool(), spec).await.unwrap();
    tokio::time::sleep(boot_timeout.mul_f64(0.9)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let [silent] = instances.as_slice() else {
        panic!("one instance, its mysqld silent: {instances:#?}");
    };
    assert_eq!(silent.state, InstanceState::Warming, "{silent:#?}");
    manager.shutdown().await.unwrap();
    drop(manager);

    let manager = on_one_wall_clock();
    manager.start().await.unwrap();
    let restarted = tokio::time::Instant::now();
    // The rest of its timeout, a poll and the failed boot's delete.
    let past_its_deadline = began + boot_timeout + Duration::from_secs(30);
    tokio::time::sleep_until(past_its_deadline).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(
        instances.iter().all(|i| i.id != silent.id),
        "still there {:?} after the restart, {:?} after its boot request: {instances:#?}",
        restarted.elapsed(),
        began.elapsed()
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    let last_error = status.record.last_error.unwrap_or_default();
    assert!(last_error.contains("mysqld never answered"), "{last_error}");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A crash between the tag of an untagged volume and its order's commit
/// leaves the tag of an order rolled back, which served no one. Warmpool
/// cannot tell that tag from a served order's, so another tenant's order
/// is still refused the volume, but it is not told that the tagged
/// tenant's order was served it: it is told what the tag says, and how to
/// remove one that no order of that tenant was answered with.
#[tokio::test(start_paused = true)]
async fn a_tag_a_crash_left_before_the_commit_is_not_said_to_be_a_served_orders() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let survives = Survives::EveryWrite;
    let process = Process::first(&sim, dir.path(), survives, 2).await;
    let volume = sim.create_own_volume_for_test("az1", 20);
    let existing = || VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let tag_of = || {
        let found = sim.volumes().into_iter().find(|v| v.id == volume);
        found.and_then(|v| v.tagged_tenant().map(str::to_owned))
    };
    // The first metadata write is the fence's empty one; the tag is the
    // next, once the volume is attached.
    let attached = process.cloud.hold_next("attach_volume", At::After);
    let order = tokio::spawn({
        let manager = process.manager.clone();
        let order = request("order-a", existing(), EmptyPoolPolicy::FailFast);
        async move { manager.allocate(order).await }
    });
    attached.reached().await;
    let tagged = process.cloud.hold_next("set_volume_metadata", At::After);
    attached.release();
    tagged.reached().await;
    assert_eq!(tag_of().as_deref(), Some("tenant-a"));

    let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
    drop(order);
    assert!(
        manager.get_allocation("order-a").await.is_err(),
        "the order was committed"
    );
    let volume_free = async |_: &PoolManager| {
        let found = sim.volumes().into_iter().find(|v| v.id == volume);
        found.is_some_and(|v| v.status == VolumeStatus::Available)
    };
    until(&manager, "the rollback's detach", volume_free).await;
    assert_eq!(tag_of().as_deref(), Some("tenant-a"), "the tag stays");

    let mut b = request("order-b", existing(), EmptyPoolPolicy::FailFast);
    b.params.tenant_project_id = "tenant-b".into();
    let err = manager.allocate(b).await.unwrap_err();
    let ManagerError::FailedPrecondition(message) = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains(&volume) && message.contains("tenant-a") && message.contains("tenant-b"),
        "{message}"
    );
    assert!(!message.contains("served it"), "{message}");
    assert!(
        message.contains(&format!(
            "openstack volume unset --property warmpool.tenant {volume}"
        )),
        "{message}"
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A purchase whose volume and port creates lost their answers, frozen at
/// every cloud call: an acknowledged order is kept, an unacknowledged one
/// rolled back, its retry served, and no twin outlives it. With a fixed IP
/// the port create sent again is refused the address its twin took, and
/// the purchase takes that twin.
async fn crash_with_lost_answers(survives: Survives, hang: Hang, fixed_ip: bool) {
    let sweep = format!("lost answers ({survives:?}, {hang:?}, fixed_ip {fixed_ip})");
    at_every_crash_point(&sweep, 4, |crash_after| async move {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let process = Process::first(&sim, dir.path(), survives, 2).await;
        let mut order = request("order-crash", new_volume(), EmptyPoolPolicy::Wait);
        if fixed_ip {
            order.params.network.subnet_id = Some("tenant-subnet".into());
            order.params.network.fixed_ip = Some("10.0.0.50".into());
        }
        process.cloud.lose_next_answer("create_volume");
        process.cloud.lose_next_answer("create_port");
        let acknowledged = until_the_cloud_hangs(&sim, hang, crash_after, {
            let manager = process.manager.clone();
            let order = order.clone();
            async move { manager.allocate(order).await }
        })
        .await
        .map(|answer| answer.expect("allocation without a crash succeeds"));
        let manager = process.crash_and_restart(&sim, dir.path(), survives).await;
        let what =
            format!("{survives:?}, {hang:?}, fixed_ip {fixed_ip}, crash after {crash_after} calls");
        tokio::time::sleep(Duration::from_secs(60)).await;
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
        manager
            .update_pool(&pool(), |s| s.paused = false)
            .await
            .unwrap();
        let retried = manager.allocate(order).await;
        let retried = retried.unwrap_or_else(|e| panic!("{what}: retry failed: {e:?}"));
        assert_eq!(retried.state, AllocationState::Allocated, "{what}");
        if let Some(done) = &acknowledged {
            assert_eq!(&retried, done, "{what}");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_consistent(&sim, &manager).await;
        let name = retried.resource_name();
        let vols: Vec<_> = sim
            .volumes()
            .into_iter()
            .filter(|v| v.name == name)
            .map(|v| v.id)
            .collect();
        assert_eq!(
            vols,
            vec![retried.volume_id.clone().unwrap()],
            "{what}: volume twin left"
        );
        let ports: Vec<_> = sim
            .ports()
            .into_iter()
            .filter(|p| p.name == name)
            .map(|p| p.id)
            .collect();
        assert_eq!(
            ports,
            vec![retried.port_id.clone().unwrap()],
            "{what}: port twin left"
        );
        manager.shutdown().await.unwrap();
        acknowledged.is_some()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_a_purchase_whose_creates_lost_their_answers_is_repaired() {
    for survives in Survives::ALL {
        for hang in Hang::BOTH {
            crash_with_lost_answers(survives, hang, false).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_a_fixed_ip_purchase_whose_creates_lost_their_answers_is_repaired() {
    for survives in Survives::ALL {
        for hang in Hang::BOTH {
            crash_with_lost_answers(survives, hang, true).await;
        }
    }
}
