//! A create sent just before a crash that the cloud carries out only after
//! the restart has listed the pool servers (it waited in a proxy's queue,
//! or in Nova's API): the server it makes names an instance the store
//! recorded before the create was sent, and is that instance's, never a
//! leak nor an unknown server.

mod common;

use cloudsim::SimCloud;
use common::*;
use pool_manager::cloud::{Cloud, Server, ServerSpec, META_INSTANCE, META_POOL};
use pool_manager::events::{Event, EventKind};
use pool_manager::model::{EmptyPoolPolicy, Instance, InstanceState};
use pool_manager::store::Store;
use pool_manager::{ManagerError, PoolManager};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The create a crash left on its way lands: the server it makes, named
/// and tagged as the boot of `instance_id` asked.
async fn land_late(sim: &Arc<SimCloud>, instance_id: &str) -> Server {
    Cloud::create_server(
        &**sim,
        &ServerSpec {
            name: format!("warmpool-{instance_id}"),
            pool: pool(),
            image: "mysql-8.0".into(),
            metadata: BTreeMap::from([
                (META_POOL.to_string(), pool().to_string()),
                (META_INSTANCE.to_string(), instance_id.to_string()),
            ]),
        },
    )
    .await
    .unwrap()
}

/// The one instance of the store whose boot's create is held.
async fn the_boot_mid_create(manager: &PoolManager) -> Instance {
    manager
        .list_instances(None)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.state == InstanceState::Booting && i.server_id.is_none())
        .expect("a boot recorded before its create")
}

fn leaks(events: &mut broadcast::Receiver<Event>) -> Vec<String> {
    let mut leaks = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let EventKind::LeakDeleted { server_id } = e.kind {
            leaks.push(server_id);
        }
    }
    leaks
}

/// The server of the late create is gone as `instance_id`'s, no leak, and
/// no record names it any more.
async fn deleted_as_its_own(
    sim: &Arc<SimCloud>,
    manager: &PoolManager,
    events: &mut broadcast::Receiver<Event>,
    late: &Server,
    instance_id: &str,
) {
    let leaks = leaks(events);
    assert!(
        leaks.is_empty(),
        "the server warmpool's own recorded boot asked for (instance {instance_id}) was taken for a leak: {leaks:?}"
    );
    assert!(
        sim.server(&late.id).is_none(),
        "the late server {} of instance {instance_id} is still there",
        late.id
    );
    let left = manager.list_instances(None).await.unwrap();
    assert!(
        left.iter().all(|i| i.id != instance_id),
        "instance {instance_id} is still recorded: {left:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_boot_create_landing_after_the_restarts_listing_is_deleted_as_its_own() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, open_store(dir.path()), 1).await;
    let hold = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 2;
        })
        .await
        .unwrap();
    hold.reached().await;
    let booting = the_boot_mid_create(&manager).await;
    // The process dies with the create on its way (in a proxy's queue).
    manager.shutdown().await.unwrap();
    drop(manager);

    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, open_store(dir.path()));
    let mut events = manager.events();
    manager.start().await.unwrap();
    let late = land_late(&sim, &booting.id).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    manager.reconcile().await.unwrap();
    wait_ready(&manager, 2).await;
    deleted_as_its_own(&sim, &manager, &mut events, &late, &booting.id).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A restart is refused when the store knows no instance and no order
/// but the cloud lists pool servers; the boot that was all the store knew
/// must still be known when its late server shows.
async fn restart_knows_the_late_server(
    sim: &Arc<SimCloud>,
    dir: &Path,
    instance_id: &str,
    what: &str,
) {
    let cloud = GatedCloud::new(sim);
    let manager = manager_over(&cloud, open_store(dir));
    manager.start().await.unwrap();
    let late = land_late(sim, instance_id).await;
    manager.shutdown().await.unwrap();
    drop(manager);

    // Started again before a periodic pass looked.
    let manager = manager_over(&cloud, open_store(dir));
    let mut events = manager.events();
    let started = manager.start().await;
    assert!(
        !matches!(started, Err(ManagerError::UnknownServers { .. })),
        "{what}: the late server of the store's own boot was called unknown: {started:?}"
    );
    started.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    manager.reconcile().await.unwrap();
    deleted_as_its_own(sim, &manager, &mut events, &late, instance_id).await;
    assert!(sim.servers().is_empty(), "{what}: {:?}", sim.servers());
    assert_consistent(sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A new deployment's first boot, its create on its way at a crash, the
/// pool paused meanwhile: the store knows that boot alone.
#[tokio::test(start_paused = true)]
async fn a_store_knowing_only_a_first_boot_lost_mid_create_knows_its_late_server() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, open_store(dir.path()), 0).await;
    let hold = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 1;
        })
        .await
        .unwrap();
    hold.reached().await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let booting = the_boot_mid_create(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);

    restart_knows_the_late_server(&sim, dir.path(), &booting.id, "a paused pool's boot").await;
}

/// The pool deleted while its one boot's create is on its way: the drain
/// leaves the record, `Deleting`, to the create, and a crash ends the task.
#[tokio::test(start_paused = true)]
async fn a_store_knowing_only_a_drained_boot_lost_mid_create_knows_its_late_server() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, open_store(dir.path()), 0).await;
    let hold = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    hold.reached().await;
    let booting = the_boot_mid_create(&manager).await;
    manager.delete_pool(&pool()).await.unwrap();
    for _ in 0..600 {
        if manager.get_pool(&pool()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(manager.get_pool(&pool()).await.is_err(), "the drain ends");
    manager.shutdown().await.unwrap();
    drop(manager);

    restart_knows_the_late_server(&sim, dir.path(), &booting.id, "a drained pool's boot").await;
}

/// A cold boot's create on its way at a crash: the restart rolls its
/// purchase back, and the server that lands after is still the boot's.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_create_landing_after_its_rollback_is_deleted_as_its_own() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let image = HookedStore::new(CrashImage::default());
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, image.clone() as Arc<dyn Store>, 0).await;
    let hold = cloud.hold_next("create_server", At::Before);
    let purchase = tokio::spawn({
        let manager = manager.clone();
        async move {
            manager
                .allocate(request("cold", new_volume(), EmptyPoolPolicy::ColdBoot))
                .await
        }
    });
    hold.reached().await;
    let booting = the_boot_mid_create(&manager).await;
    assert!(booting.request_id.is_some(), "{booting:?}");
    // A crash: only what was flushed survives.
    image.hooks.crash();
    manager.shutdown().await.unwrap();
    purchase.abort();
    let _ = purchase.await;
    drop(manager);
    let store = image.hooks.reopen(dir.path(), |_| 0).await;

    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, store);
    let mut events = manager.events();
    manager.start().await.unwrap();
    assert!(
        manager.get_allocation("cold").await.is_err(),
        "the purchase is rolled back"
    );
    let late = land_late(&sim, &booting.id).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    manager.reconcile().await.unwrap();
    deleted_as_its_own(&sim, &manager, &mut events, &late, &booting.id).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A create lost for good (never carried out): the boot's record is kept
/// for [`pool_manager::LATE_CREATE_GRACE`] past the restart, then dropped
/// by the next pass; nothing else is deleted or booted for it.
#[tokio::test(start_paused = true)]
async fn a_boot_whose_create_never_lands_is_forgotten_once_the_grace_is_over() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, open_store(dir.path()), 0).await;
    let hold = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 1;
        })
        .await
        .unwrap();
    hold.reached().await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let booting = the_boot_mid_create(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);

    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, open_store(dir.path()));
    manager.start().await.unwrap();
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        kept.iter()
            .any(|i| i.id == booting.id && i.state == InstanceState::Deleting),
        "the boot is kept, Deleting, while its create may land: {kept:#?}"
    );
    tokio::time::sleep(pool_manager::LATE_CREATE_GRACE - Duration::from_secs(1)).await;
    manager.reconcile().await.unwrap();
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        kept.iter().any(|i| i.id == booting.id),
        "kept until the grace is over: {kept:#?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    manager.reconcile().await.unwrap();
    let left = manager.list_instances(None).await.unwrap();
    assert!(left.is_empty(), "{left:#?}");
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    manager.shutdown().await.unwrap();
}

/// A boot left mid-create by a crash, the pool paused so nothing else
/// boots: the store under `dir` and the boot's record.
async fn a_boot_lost_mid_create(sim: &Arc<SimCloud>, dir: &Path) -> Instance {
    let cloud = GatedCloud::new(sim);
    let manager = started_paused(&cloud, open_store(dir), 0).await;
    let hold = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 1;
        })
        .await
        .unwrap();
    hold.reached().await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let booting = the_boot_mid_create(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    booting
}

/// A manager over `store` whose wall clock reads `wall` plus the simulated
/// time since `since`: one wall clock across restarts, as a real host has.
fn manager_on_one_wall_clock(
    cloud: &Arc<GatedCloud>,
    store: Arc<dyn Store>,
    wall: std::time::SystemTime,
    since: tokio::time::Instant,
) -> PoolManager {
    let mut settings = settings();
    settings.sizing.wall_clock_start = Some(wall + since.elapsed());
    PoolManager::new(store, cloud.clone(), Arc::new(cloud.sim.probe()), settings)
}

/// A pool deleted right after a restart that kept a boot for its late
/// create is gone at once, not after the grace (the kept record names no
/// server: nothing of the pool is left to delete); the kept record outlives
/// it, and the pass after the grace drops it, its pool gone.
#[tokio::test(start_paused = true)]
async fn a_pool_deleted_after_a_restart_does_not_wait_for_a_kept_boot() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let booting = a_boot_lost_mid_create(&sim, dir.path()).await;

    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, open_store(dir.path()));
    manager.start().await.unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    let mut gone_after = None;
    for tenths in 0..600 {
        if manager.get_pool(&pool()).await.is_err() {
            gone_after = Some(Duration::from_millis(100 * tenths));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone_after.is_some_and(|after| after < Duration::from_secs(30)),
        "the drain waited for the kept boot: pool gone after {gone_after:?}"
    );
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        kept.iter().any(|i| i.id == booting.id),
        "the boot is kept while its create may land, its pool gone: {kept:#?}"
    );
    tokio::time::sleep(pool_manager::LATE_CREATE_GRACE).await;
    manager.reconcile().await.unwrap();
    let left = manager.list_instances(None).await.unwrap();
    assert!(left.is_empty(), "{left:#?}");
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    manager.shutdown().await.unwrap();
}

/// The grace counts from when the boot was first kept, by the wall clock:
/// a restart within it does not start it again (a crash loop would keep
/// the record for ever).
#[tokio::test(start_paused = true)]
async fn a_second_restart_does_not_start_the_grace_again() {
    let (wall, since) = (std::time::SystemTime::now(), tokio::time::Instant::now());
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let booting = a_boot_lost_mid_create(&sim, dir.path()).await;
    let four_minutes = Duration::from_secs(4 * 60);
    assert!(four_minutes < pool_manager::LATE_CREATE_GRACE);
    let mut kept_after = Vec::new();
    for _ in 0..2 {
        let cloud = GatedCloud::new(&sim);
        let manager = manager_on_one_wall_clock(&cloud, open_store(dir.path()), wall, since);
        manager.start().await.unwrap();
        tokio::time::sleep(four_minutes).await;
        manager.reconcile().await.unwrap();
        let instances = manager.list_instances(None).await.unwrap();
        kept_after.push(instances.iter().any(|i| i.id == booting.id));
        manager.shutdown().await.unwrap();
        drop(manager);
    }
    assert_eq!(
        kept_after,
        [true, false],
        "kept 4 min after the first restart, dropped 8 min after it (4 min after the second)"
    );
}

/// Kept for a late create, a boot keeps its own diagnosis (why its
/// earlier creates failed) with the note added; a serverless `Booting`
/// record no task drives found once no create of a process before may
/// land any more is dropped as before, not kept.
#[tokio::test(start_paused = true)]
async fn a_kept_boot_keeps_its_own_error_and_none_is_kept_after_the_grace() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let booting = a_boot_lost_mid_create(&sim, dir.path()).await;
    let own = "the server create failed 3 times: no valid host was found";
    {
        let store = open_store(dir.path());
        let stored = store.get_instance(&booting.id).await.unwrap().unwrap();
        let failed_before = Instance {
            last_error: Some(own.into()),
            ..stored.clone()
        };
        assert!(store
            .cas_instance(Some(&stored), Some(&failed_before))
            .await
            .unwrap());
        store.flush().await.unwrap();
    }

    let cloud = GatedCloud::new(&sim);
    let store = open_store(dir.path());
    let manager = manager_over(&cloud, store.clone());
    manager.start().await.unwrap();
    let kept = store.get_instance(&booting.id).await.unwrap().unwrap();
    assert_eq!(kept.state, InstanceState::Deleting);
    let error = kept.last_error.unwrap_or_default();
    assert!(
        error.starts_with(own) && error.contains("may land late"),
        "{error}"
    );

    tokio::time::sleep(pool_manager::LATE_CREATE_GRACE).await;
    manager.reconcile().await.unwrap();
    let undriven = Instance {
        id: "undriven-boot".into(),
        state: InstanceState::Booting,
        last_error: None,
        ..booting.clone()
    };
    assert!(store.cas_instance(None, Some(&undriven)).await.unwrap());
    manager.reconcile().await.unwrap();
    let left = manager.list_instances(None).await.unwrap();
    assert!(left.is_empty(), "{left:#?}");
    manager.shutdown().await.unwrap();
}
