//! A store record this version cannot read (a newer warmpoold wrote it, a
//! disk damaged it) stops the store from opening with a message that names
//! it and says what to do; an operator can list such records and set one
//! aside, after which warmpool starts and keeps that record's id taken.

mod common;

use common::*;
use pool_manager::model::{EmptyPoolPolicy, InstanceState};
use pool_manager::store::{
    RecordKind, SetAside, SledStore, StoreError, StoreRepair, DEFAULT_LOCK_WAIT,
};
use pool_manager::ManagerError;
use std::path::Path;
use std::time::Duration;

/// Overwrites one record the way a newer version might have written it.
fn write_unreadable(dir: &Path, tree: &str, key: &str) {
    // sled lets go of its lock a moment after the last handle is dropped.
    let db = (0..500)
        .find_map(|_| match sled::open(dir) {
            Ok(db) => Some(db),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("the store is free");
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

    // The store does not open, and says which record and what to do.
    let refused = SledStore::open(dir.path()).err().expect("refused");
    let message = refused.to_string();
    assert!(
        matches!(&refused, StoreError::Unreadable { .. }),
        "{refused:?}"
    );
    assert!(message.contains("warmpoold store check"), "{message}");
    assert!(
        message.contains(&format!("set-aside instances {}", ready.id)),
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
        assert_eq!(
            found,
            [
                (RecordKind::Instance, ready.id.clone()),
                (RecordKind::Allocation, "o-1".to_owned()),
            ]
        );
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
        let mut aside = repair.set_aside_records().unwrap();
        aside.sort();
        assert_eq!(aside, found);
    }

    // warmpool starts. The set-aside instance's server is not deleted as
    // a leak, and the set-aside order cannot be bought, read or released.
    let store = (0..500)
        .find_map(|_| SledStore::open(dir.path()).ok())
        .expect("the store opens");
    let manager = manager_on(&sim, std::sync::Arc::new(store));
    manager.start().await.unwrap();
    manager.reconcile().await.unwrap();
    let server = ready.server_id.clone().unwrap();
    assert!(sim.server(&server).is_some(), "server {server} deleted");
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
    assert!(sim.server(sold.server_id.as_ref().unwrap()).is_some());
    manager.shutdown().await.unwrap();
}
