//! A reconcile pass that runs while an Allocate or a refill has just written
//! its record (before the flush returns) must leave that record alone: it is
//! in flight in this process, not left behind by a crash.

mod common;

use async_trait::async_trait;
use common::*;
use pool_manager::model::{Allocation, AllocationState, EmptyPoolPolicy, Instance};
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
    async fn before_flush(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reconcile_leaves_an_allocation_alone_between_its_record_and_its_flush() {
    let sim = sim();
    let store = HoldFlushAfterNewRecord::new(Record::Allocation);
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;

    let buying = {
        let manager = manager.clone();
        tokio::spawn(async move {
            manager
                .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
                .await
        })
    };
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
    let buying = {
        let manager = manager.clone();
        tokio::spawn(async move {
            manager
                .allocate(request("order-b", new_volume(), EmptyPoolPolicy::FailFast))
                .await
        })
    };
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
