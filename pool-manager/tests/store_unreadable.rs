//! A store record this version cannot read (a newer warmpoold wrote it, a
//! disk damaged it) stops the store from opening with a message that names
//! it and says what to do; an operator can list such records and set one
//! aside, after which warmpool starts and keeps that record's id taken.
//! Records that come back (moved back by a version that reads them, or a
//! data dir restored from a copy) are settled against the cloud.

mod common;

use common::*;
use pool_manager::cloud::{ServerStatus, VolumeStatus};
use pool_manager::model::{AllocationState, EmptyPoolPolicy, InstanceState};
use pool_manager::store::{
    RecordKind, SetAside, SledStore, StoreError, StoreRepair, DEFAULT_LOCK_WAIT,
};
use pool_manager::ManagerError;
use std::path::Path;
use std::time::Duration;

/// Whether cloudsim has the server and it is not being deleted.
fn alive(sim: &cloudsim::SimCloud, server_id: &str) -> bool {
    sim.server(server_id)
        .is_some_and(|s| s.server.status != ServerStatus::Deleted)
}

/// A manager started on the store in `dir` after a reconcile pass, once
/// cloudsim has finished any deletion the pass began (a server being
/// deleted is gone after 10 s).
async fn restarted(
    sim: &std::sync::Arc<cloudsim::SimCloud>,
    dir: &Path,
) -> pool_manager::PoolManager {
    let manager = manager_on(sim, open_store(dir));
    manager.start().await.unwrap();
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    manager
}

/// The servers the last reconcile pass left alone: (unknown_sold, set_aside).
fn left_alone(manager: &pool_manager::PoolManager) -> (usize, usize) {
    let counts = manager.servers_left_alone();
    (
        counts[&pool_manager::LeftAlone::UnknownSold],
        counts[&pool_manager::LeftAlone::SetAside],
    )
}

/// sled's database in `dir`, opened directly.
fn raw_store(dir: &Path) -> sled::Db {
    // sled lets go of its lock a moment after the last handle is dropped.
    (0..500)
        .find_map(|_| match sled::open(dir) {
            Ok(db) => Some(db),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("the store is free")
}

/// Overwrites one record the way a newer version might have written it.
fn write_unreadable(dir: &Path, tree: &str, key: &str) {
    let db = raw_store(dir);
    db.open_tree(tree)
        .unwrap()
        .insert(
            key,
            br#"{"state":"Hibernating","from_the_future":true}"#.to_vec(),
        )
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_record_is_named_and_can_be_set_aside() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let sold = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    // A second pool, so o-3 has an instance of its own to be sold.
    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 3;
            s.max_ready = 3;
        })
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let kept = manager
        .allocate(request("o-3", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let ready = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.state == InstanceState::Ready)
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    write_unreadable(dir.path(), "allocations", "o-1");
    write_unreadable(dir.path(), "instances", &ready.id);
    // o-3's own record reads, its instance's does not.
    let kept_instance = kept.instance_id.clone().unwrap();
    write_unreadable(dir.path(), "instances", &kept_instance);

    // The store does not open, and says which record and what to do.
    let refused = SledStore::open(dir.path()).err().expect("refused");
    let message = refused.to_string();
    assert!(
        matches!(&refused, StoreError::Unreadable { .. }),
        "{refused:?}"
    );
    assert!(message.contains("warmpoold store check"), "{message}");
    assert!(
        [&ready.id, kept.instance_id.as_ref().unwrap()]
            .iter()
            .any(|id| message.contains(&format!("warmpoold store set-aside instances '{id}'"))),
        "{message}"
    );

    // The operator's tools: list them, set each aside. A readable record
    // is not hidden, an unknown one is not invented.
    {
        let repair = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).unwrap();
        let found: Vec<(RecordKind, String)> = repair
            .unreadable()
            .unwrap()
            .into_iter()
            .map(|r| (r.kind, r.key))
            .collect();
        let mut expected = vec![
            (RecordKind::Instance, ready.id.clone()),
            (RecordKind::Instance, kept_instance.clone()),
            (RecordKind::Allocation, "o-1".to_owned()),
        ];
        expected[..2].sort();
        assert_eq!(found, expected);
        assert_eq!(
            repair.set_aside(RecordKind::Pool, "db.small@az1").unwrap(),
            SetAside::Readable
        );
        assert_eq!(
            repair.set_aside(RecordKind::Allocation, "o-2").unwrap(),
            SetAside::NoSuchRecord
        );
        for (kind, key) in &found {
            assert_eq!(repair.set_aside(*kind, key).unwrap(), SetAside::Moved);
        }
        assert!(repair.unreadable().unwrap().is_empty());
        let mut aside: Vec<_> = repair
            .set_aside_records()
            .unwrap()
            .into_iter()
            .map(|record| {
                assert!(!record.superseded, "{record:?}");
                (record.kind, record.key)
            })
            .collect();
        aside.sort();
        let mut found = found;
        found.sort();
        assert_eq!(aside, found);
    }

    // warmpool starts. The set-aside instance's server is not deleted as
    // a leak, and the set-aside order cannot be bought, read or released.
    let manager = restarted(&sim, dir.path()).await;
    let server = ready.server_id.clone().unwrap();
    assert!(alive(&sim, &server), "server {server} deleted");
    let kept_server = kept.server_id.clone().unwrap();
    assert!(alive(&sim, &kept_server), "o-3's database deleted");
    // Both servers are counted as left alone for a record set aside (o-3's,
    // its tenant's volume attached, is not taken for one whose record was
    // lost).
    assert_eq!(
        left_alone(&manager),
        (0, 2),
        "(unknown_sold, set_aside) servers"
    );
    for refused in [
        manager
            .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .map(drop),
        manager.get_allocation("o-1").await.map(drop),
        manager.release("o-1", Some(true)).await.map(drop),
    ] {
        match refused {
            Err(ManagerError::FailedPrecondition(m)) => {
                assert!(m.contains("set aside"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
    // The tenant's database of that order is untouched.
    assert!(alive(&sim, sold.server_id.as_ref().unwrap()));

    // Releasing o-3 deletes its server, though no instance record names it
    // any more (the reconciler leaves such a server alone).
    manager.release("o-3", Some(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !alive(&sim, &kept_server),
        "o-3's server outlived its release"
    );
    manager.reconcile().await.unwrap();
    assert_eq!(left_alone(&manager), (0, 1));
    manager.shutdown().await.unwrap();
}

/// The version that wrote an order set aside runs again (rolled forward
/// after a rollback): it reads the record, so its start moves it back, and
/// the order is served as before: its release deletes its server. Before,
/// no version read the set-aside tree, and the order was refused for good.
#[tokio::test(start_paused = true)]
async fn a_set_aside_order_comes_back_with_a_version_that_reads_it() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 1).await;
    let sold = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    let readable = set_aside_as_newer(dir.path(), RecordKind::Allocation, "o-1");
    readable_again(dir.path(), RecordKind::Allocation, "o-1", readable);

    let manager = restarted(&sim, dir.path()).await;
    let order = manager.get_allocation("o-1").await.unwrap();
    assert_eq!(order.state, AllocationState::Allocated);
    manager.release("o-1", Some(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let server = sold.server_id.unwrap();
    assert!(!alive(&sim, &server), "o-1's server outlived its release");
    manager.shutdown().await.unwrap();
    drop(manager);
    let repair = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).unwrap();
    assert!(repair.set_aside_records().unwrap().is_empty());
}

/// An instance claimed by an order whose record was set aside is left
/// alone: the version that wrote the order may have handed it out already.
#[tokio::test(start_paused = true)]
async fn an_instance_claimed_by_a_set_aside_order_is_left_alone() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let manager = started(&sim, store.clone(), 1).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let ready = manager.list_instances(None).await.unwrap().remove(0);
    // As a newer version left it: claimed for o-9, whose record it wrote
    // in a shape this version cannot read.
    let mut claimed = ready.clone();
    claimed.state = InstanceState::Claimed;
    claimed.request_id = Some("o-9".into());
    assert!(store
        .cas_instance(Some(&ready), Some(&claimed))
        .await
        .unwrap());
    store.flush().await.unwrap();
    manager.shutdown().await.unwrap();
    drop((manager, store));
    write_unreadable(dir.path(), "allocations", "o-9");
    let repair = (0..500)
        .find_map(|_| StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).ok())
        .unwrap();
    assert_eq!(
        repair.set_aside(RecordKind::Allocation, "o-9").unwrap(),
        SetAside::Moved
    );
    drop(repair);

    let manager = restarted(&sim, dir.path()).await;
    let server = ready.server_id.clone().unwrap();
    assert!(
        alive(&sim, &server),
        "the claimed instance's server was deleted"
    );
    assert_eq!(left_alone(&manager), (0, 1));
    let instances = manager.list_instances(None).await.unwrap();
    assert!(
        instances
            .iter()
            .any(|i| i.id == ready.id && i.state == InstanceState::Claimed),
        "{instances:?}"
    );
    manager.shutdown().await.unwrap();
}

/// A store in a new directory whose pool's learned-sizing record this
/// version cannot read (a newer version's).
async fn with_unreadable_sizing(sim: &std::sync::Arc<cloudsim::SimCloud>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manager = started(sim, open_store(dir.path()), 1).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    write_unreadable(
        dir.path(),
        RecordKind::LearnedSizing.tree(),
        "db.small\0az1",
    );
    dir
}

/// A learned-sizing record this version cannot read (a newer version's)
/// does not stop it: the pool is sized from scratch, and the record is
/// kept for the version that wrote it, not saved over a minute later, so
/// `store check` still lists it.
#[tokio::test(start_paused = true)]
async fn an_unreadable_learned_sizing_record_is_not_saved_over() {
    let sim = sim();
    let dir = with_unreadable_sizing(&sim).await;
    let manager = restarted(&sim, dir.path()).await;
    // Purchases and the boots replacing them: something to learn and save.
    for order in ["o-1", "o-2"] {
        manager
            .allocate(request(order, new_volume(), EmptyPoolPolicy::Wait))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3 * 60)).await;
    }
    manager.shutdown().await.unwrap();
    drop(manager);

    let repair = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).unwrap();
    let unreadable = repair.unreadable().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0].kind, RecordKind::LearnedSizing);
}

/// The pool whose learned sizing could not be read is deleted (its drain
/// deletes that record too) and created again: the new pool's sizing is
/// saved as any pool's. It was never saved for the rest of the process.
#[tokio::test(start_paused = true)]
async fn a_pool_created_again_after_an_unreadable_sizing_record_saves_its_own() {
    let sim = sim();
    let dir = with_unreadable_sizing(&sim).await;
    let store = open_store(dir.path());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();

    manager.delete_pool(&pool()).await.unwrap();
    for _ in 0..600 {
        if manager.get_pool(&pool()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager
        .allocate(request("o-again", new_volume(), EmptyPoolPolicy::Wait))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    let learned = store.get_learned_sizing(&pool()).await.unwrap();
    assert_eq!(learned.map(|l| l.allocations), Some(1));
}

/// The stored record of `key` in `tree`, its JSON changed by `change`.
fn rewrite(dir: &Path, tree: &str, key: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let db = raw_store(dir);
    let tree = db.open_tree(tree).unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
    change(&mut record);
    tree.insert(key, serde_json::to_vec(&record).unwrap())
        .unwrap();
    db.flush().unwrap();
}

/// Rewrites the record of `key` as a newer version would (this one's, with
/// a field it does not know) and sets it aside; returns its bytes as they
/// were, the ones the version that wrote it reads.
fn set_aside_as_newer(dir: &Path, kind: RecordKind, key: &str) -> Vec<u8> {
    let readable = raw_store(dir)
        .open_tree(kind.tree())
        .unwrap()
        .get(key)
        .unwrap()
        .unwrap()
        .to_vec();
    rewrite(dir, kind.tree(), key, |record| {
        record["from_the_future"] = true.into();
    });
    let repair = StoreRepair::open(dir, DEFAULT_LOCK_WAIT).unwrap();
    assert_eq!(repair.set_aside(kind, key).unwrap(), SetAside::Moved);
    readable
}

/// Puts `readable` in place of the set-aside bytes of `key`: the version
/// that wrote them reads them, and this build stands in for it once they
/// are bytes it reads.
fn readable_again(dir: &Path, kind: RecordKind, key: &str, readable: Vec<u8>) {
    let db = raw_store(dir);
    db.open_tree("set_aside")
        .unwrap()
        .insert(format!("{}/{key}", kind.tree()), readable)
        .unwrap();
    db.flush().unwrap();
}

/// A sold instance's record set aside as unreadable, its order then
/// released by the version that cannot read it (which deletes the server
/// the order recorded), comes back when a version that reads it opens the
/// store: the reconciler forgets it, rather than keep it sold, counted in
/// its pool, for good.
#[tokio::test(start_paused = true)]
async fn a_set_aside_instance_of_an_order_released_meanwhile_is_forgotten_once_back() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 1).await;
    let sold = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    let instance_id = sold.instance_id.clone().unwrap();
    let server_id = sold.server_id.clone().unwrap();
    let readable = set_aside_as_newer(dir.path(), RecordKind::Instance, &instance_id);

    // The version that cannot read it releases the order.
    let manager = restarted(&sim, dir.path()).await;
    manager.release("o-1", Some(false)).await.unwrap();
    assert!(!alive(&sim, &server_id));
    manager.shutdown().await.unwrap();
    drop(manager);

    // The version that reads it: the record set aside reads now.
    readable_again(dir.path(), RecordKind::Instance, &instance_id, readable);
    let manager = restarted(&sim, dir.path()).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(
        instances.iter().all(|i| i.id != instance_id),
        "the released order's instance is back: {instances:#?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Allocated), 0, "{status:?}");
    assert_consistent(&sim, &manager).await;
}

/// A sold instance whose order is `Released` while its server is still
/// there (no release leaves one so: the record came back from elsewhere)
/// has its release's instance step done: the tenant's volume detached and
/// kept, the server deleted, the record dropped. One whose order's record
/// is gone is a tenant's: its server is left alone.
#[tokio::test(start_paused = true)]
async fn a_sold_instance_outliving_its_order_is_released_or_left_alone() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 2).await;
    let released = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let lost = manager
        .allocate(request("o-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    rewrite(dir.path(), "allocations", "o-1", |record| {
        record["state"] = "Released".into();
    });
    {
        let db = raw_store(dir.path());
        db.open_tree("allocations").unwrap().remove("o-2").unwrap();
        db.flush().unwrap();
    }

    let manager = restarted(&sim, dir.path()).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let ids: Vec<_> = instances.iter().map(|i| i.id.clone()).collect();
    assert!(
        !ids.contains(released.instance_id.as_ref().unwrap()),
        "{instances:#?}"
    );
    assert!(!alive(&sim, released.server_id.as_deref().unwrap()));
    let volume = sim
        .volumes()
        .into_iter()
        .find(|v| Some(v.id.as_str()) == released.volume_id.as_deref())
        .expect("the tenant keeps the volume");
    assert_eq!(volume.status, VolumeStatus::Available, "{volume:?}");
    assert!(
        ids.contains(lost.instance_id.as_ref().unwrap()),
        "{instances:#?}"
    );
    assert!(alive(&sim, lost.server_id.as_deref().unwrap()));
    assert_eq!(
        manager.get_allocation("o-1").await.unwrap().state,
        AllocationState::Released
    );
}

/// Copies a stopped store's data dir, as a backup is taken.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store restored from a copy (README, backups) over a cloud that moved
/// on: a warm server the copy has Ready but that was sold since (its
/// tenant's volume attached) is never sold again, but left alone as a
/// tenant's whose record was lost; warm servers booted since are leaks;
/// an order released since is still sold in the copy, its server gone,
/// until it is released again.
#[tokio::test(start_paused = true)]
async fn a_store_restored_from_a_copy_never_sells_a_server_sold_since() {
    restore_a_copy_over_a_server_sold_since(false).await;
}

/// As above, but the copy has the instance sold since as a boot whose
/// create was accepted but not answered (a graceful stop aborted it):
/// Booting, no server id. Found by the instance id its server carries, that
/// server is the tenant's all the same, never adopted back into the pool.
#[tokio::test(start_paused = true)]
async fn a_store_restored_from_a_copy_never_adopts_a_server_sold_since() {
    restore_a_copy_over_a_server_sold_since(true).await;
}

/// The restore of a copy, its instance sold since recorded `unanswered`
/// (Booting, no server id yet) or as it was (Ready).
async fn restore_a_copy_over_a_server_sold_since(unanswered: bool) {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 2).await;
    let released_since = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    let servers = |manager: &pool_manager::PoolManager| {
        let manager = manager.clone();
        async move {
            let instances = manager.list_instances(Some(&pool())).await.unwrap();
            let ids: Vec<String> = instances.into_iter().filter_map(|i| i.server_id).collect();
            ids
        }
    };
    let in_copy = servers(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    drop(raw_store(dir.path()));
    let backup = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), backup.path());

    let manager = restarted(&sim, dir.path()).await;
    manager.release("o-1", Some(false)).await.unwrap();
    let sold_since = manager
        .allocate(request("o-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let sold_server = sold_since.server_id.clone().unwrap();
    wait_ready(&manager, 2).await;
    let mut booted_since = servers(&manager).await;
    booted_since.retain(|s| !in_copy.contains(s));
    assert!(!booted_since.is_empty());
    manager.shutdown().await.unwrap();
    drop(manager);
    drop(raw_store(dir.path()));

    let restored = tempfile::tempdir().unwrap();
    copy_dir(backup.path(), restored.path());
    if unanswered {
        let instance = sold_since.instance_id.clone().unwrap();
        rewrite(restored.path(), "instances", &instance, |record| {
            record["state"] = "Booting".into();
            record["server_id"] = serde_json::Value::Null;
            record["ready_at"] = serde_json::Value::Null;
            record["mysql_addr"] = serde_json::Value::Null;
        });
    }
    // The start-up pass alone, no later one, keeps it out of the pool: the
    // pool sells from the moment it starts.
    let manager = manager_on(&sim, open_store(restored.path()));
    manager.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(
        instances
            .iter()
            .all(|i| i.server_id.as_deref() != Some(sold_server.as_str())),
        "the server sold since the copy is pool supply again: {instances:#?}"
    );
    assert!(alive(&sim, &sold_server));
    assert_eq!(left_alone(&manager), (1, 0));
    for server in &booted_since {
        assert!(!alive(&sim, server), "booted since the copy: a leak");
    }
    // Every unsold instance, the one it may have taken first included.
    wait_ready(&manager, 2).await;
    for order in ["o-4", "o-5"] {
        let bought = manager
            .allocate(request(order, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert_ne!(bought.server_id.as_deref(), Some(sold_server.as_str()));
    }
    manager.reconcile().await.unwrap();
    assert_eq!(left_alone(&manager), (1, 0), "found again by the next pass");
    let bought = manager
        .allocate(request("o-3", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    assert_ne!(bought.server_id.as_deref(), Some(sold_server.as_str()));

    // Released since the copy: still sold in it, until released again.
    let instance = released_since.instance_id.unwrap();
    let still = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(still.iter().any(|i| i.id == instance), "{still:#?}");
    manager.release("o-1", Some(false)).await.unwrap();
    let after = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(after.iter().all(|i| i.id != instance), "{after:#?}");
}

/// A pool whose record is set aside is gone from this version until it is
/// created again, which takes its instances back: the reconciler, which
/// discards the Ready instances of a pool that is gone, leaves them.
#[tokio::test(start_paused = true)]
async fn a_set_aside_pools_ready_instances_wait_for_it_to_be_created_again() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    rewrite(dir.path(), "pools", "db.small\0az1", |record| {
        record["from_the_future"] = true.into();
    });
    {
        let repair = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).unwrap();
        assert_eq!(
            repair.set_aside(RecordKind::Pool, "db.small@az1").unwrap(),
            SetAside::Moved
        );
    }

    let manager = restarted(&sim, dir.path()).await;
    assert!(manager.get_pool(&pool()).await.is_err());
    let kept = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(sim.servers().len(), 2);

    let mut paused = spec(2);
    paused.paused = true;
    manager.create_pool(pool(), paused).await.unwrap();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_eq!(sim.servers().len(), 2, "nothing booted anew");
}
