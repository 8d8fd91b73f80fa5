//! A reconcile pass that runs while an Allocate or a refill has just written
//! its record (before the flush returns) must leave that record alone: it is
//! in flight in this process, not left behind by a crash.

mod common;

use async_trait::async_trait;
use common::*;
use pool_manager::model::{
    Allocation, AllocationState, EmptyPoolPolicy, Instance, PoolKey, PoolRecord,
};
use pool_manager::sizing::LearnedSizing;
use pool_manager::store::{Store, StoreResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Forwards to a real store; the first flush after the first new record of
/// the kind `on` is written waits until the test lets it go.
struct HoldFlushAfterNewRecord {
    inner: Arc<dyn Store>,
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
    fn new(on: Record) -> Arc<Self> {
        Arc::new(Self {
            inner: temp_store(),
            on,
            fired: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            holding: Notify::new(),
            release: Notify::new(),
        })
    }

    fn created(&self, kind: Record) {
        if kind == self.on && !self.fired.swap(true, Ordering::SeqCst) {
            self.armed.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Store for HoldFlushAfterNewRecord {
    async fn get_pool(&self, key: &PoolKey) -> StoreResult<Option<PoolRecord>> {
        self.inner.get_pool(key).await
    }
    async fn list_pools(&self) -> StoreResult<Vec<PoolRecord>> {
        self.inner.list_pools().await
    }
    async fn put_pool(&self, pool: &PoolRecord) -> StoreResult<()> {
        self.inner.put_pool(pool).await
    }
    async fn delete_pool(&self, key: &PoolKey) -> StoreResult<()> {
        self.inner.delete_pool(key).await
    }
    async fn get_learned_sizing(&self, key: &PoolKey) -> StoreResult<Option<LearnedSizing>> {
        self.inner.get_learned_sizing(key).await
    }
    async fn put_learned_sizing(&self, key: &PoolKey, learned: &LearnedSizing) -> StoreResult<()> {
        self.inner.put_learned_sizing(key, learned).await
    }
    async fn get_instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        self.inner.get_instance(id).await
    }
    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        self.inner.list_instances().await
    }
    async fn cas_instance(
        &self,
        expected: Option<&Instance>,
        new: Option<&Instance>,
    ) -> StoreResult<bool> {
        let created = self.inner.cas_instance(expected, new).await?;
        if created && expected.is_none() {
            self.created(Record::Instance);
        }
        Ok(created)
    }
    async fn get_allocation(&self, request_id: &str) -> StoreResult<Option<Allocation>> {
        self.inner.get_allocation(request_id).await
    }
    async fn list_allocations(&self) -> StoreResult<Vec<Allocation>> {
        self.inner.list_allocations().await
    }
    async fn cas_allocation(
        &self,
        expected: Option<&Allocation>,
        new: Option<&Allocation>,
    ) -> StoreResult<bool> {
        let created = self.inner.cas_allocation(expected, new).await?;
        if created && expected.is_none() {
            self.created(Record::Allocation);
        }
        Ok(created)
    }
    async fn flush(&self) -> StoreResult<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
        self.inner.flush().await
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
    store.holding.notified().await;
    let stored = manager.get_allocation("order-1").await.unwrap();
    assert_eq!(stored.state, AllocationState::Allocating);

    manager.reconcile().await.unwrap();
    assert!(
        manager.get_allocation("order-1").await.is_ok(),
        "the reconciler rolled back an allocation that was in flight"
    );

    store.release.notify_one();
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
    store.holding.notified().await;
    let recorded = manager.list_instances(None).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");

    manager.reconcile().await.unwrap();
    assert_eq!(
        manager.list_instances(None).await.unwrap(),
        recorded,
        "the reconciler forgot an instance whose boot was about to start"
    );

    store.release.notify_one();
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
