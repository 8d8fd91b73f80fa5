//! Property tests: random sequences of Allocate, Release, cloud faults,
//! restarts and passing time keep the store and the cloud consistent, and
//! concurrent Allocates, their store calls interleaved, never hand one
//! instance out twice.

mod common;

use common::*;
use pool_manager::model::{EmptyPoolPolicy, Instance, InstanceState};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Allocate { order: u8, tenant: u8, policy: u8 },
    Release { order: u8, delete_volume: bool },
    FailVolumeAttach,
    FailPortAttach,
    BootError,
    Restart,
    Wait { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..2, 0u8..3).prop_map(|(order, tenant, policy)| Op::Allocate { order, tenant, policy }),
        2 => (0u8..6, any::<bool>()).prop_map(|(order, delete_volume)| Op::Release { order, delete_volume }),
        1 => Just(Op::FailVolumeAttach),
        1 => Just(Op::FailPortAttach),
        1 => Just(Op::BootError),
        1 => Just(Op::Restart),
        2 => (1u16..400).prop_map(|secs| Op::Wait { secs }),
    ]
}

/// Yields to the other tasks before each store call, as many times as
/// the plan's next entry says (the plan cycled), and notes every instance
/// write that takes an instance from one request for another.
struct Interleaved {
    plan: Vec<u8>,
    calls: AtomicUsize,
    /// Each instance's record as last written.
    instances: Mutex<HashMap<String, Instance>>,
    /// "instance i: request a's record overwritten by request b's".
    taken_over: Mutex<Vec<String>>,
}

impl Interleaved {
    fn new(plan: Vec<u8>) -> Self {
        Self {
            plan,
            calls: AtomicUsize::new(0),
            instances: Mutex::default(),
            taken_over: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl StoreHooks for Interleaved {
    async fn before_call(&self) {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        for _ in 0..self.plan[call % self.plan.len()] {
            tokio::task::yield_now().await;
        }
    }

    fn written(&self, write: Write) {
        let Write::Instance(id, Some(new)) = write else {
            return;
        };
        let old = self
            .instances
            .lock()
            .unwrap()
            .insert(id.clone(), new.clone());
        if let Some(old) = old {
            if let (Some(a), Some(b)) = (&old.request_id, &new.request_id) {
                if a != b {
                    self.taken_over.lock().unwrap().push(format!(
                        "instance {id}: {a}'s record ({:?}) overwritten by {b}'s ({:?})",
                        old.state, new.state
                    ));
                }
            }
        }
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_operations_keeps_store_and_cloud_consistent(ops in prop::collection::vec(op(), 1..25)) {
        paused_runtime().block_on(async {
            let sim = sim();
            let dir = tempfile::tempdir().unwrap();
            let mut manager = started(&sim, open_store(dir.path()), 2).await;
            // What each acknowledged order was answered with.
            let mut answered: std::collections::HashMap<String, (u8, pool_manager::model::Allocation)> = Default::default();
            // The delete_volume each order's first answered release asked for.
            let mut released_with: std::collections::HashMap<String, bool> = Default::default();
            for op in ops {
                match op {
                    Op::Allocate { order, tenant, policy } => {
                        let id = format!("order-{order}");
                        let policy = [EmptyPoolPolicy::FailFast, EmptyPoolPolicy::Wait, EmptyPoolPolicy::ColdBoot][policy as usize];
                        let mut req = request(&id, new_volume(), policy);
                        req.params.tenant_project_id = format!("tenant-{tenant}");
                        req.timeout = Some(Duration::from_secs(if policy == EmptyPoolPolicy::ColdBoot { 900 } else { 30 }));
                        match manager.allocate(req).await {
                            Ok(allocation) => {
                                if let Some((first_tenant, first)) = answered.get(&id) {
                                    assert_eq!(*first_tenant, tenant, "same id, other tenant must abort");
                                    assert_eq!(first.instance_id, allocation.instance_id);
                                } else {
                                    answered.insert(id, (tenant, allocation));
                                }
                            }
                            Err(pool_manager::ManagerError::Aborted(_)) => {
                                let (first_tenant, _) = answered.get(&id).expect("abort only for a used id");
                                assert_ne!(*first_tenant, tenant);
                            }
                            // A pool without a Ready instance; or, after a
                            // failed try (an injected attach failure), no
                            // other instance, which answers the try's failure.
                            Err(pool_manager::ManagerError::ResourceExhausted(_) | pool_manager::ManagerError::Cloud(pool_manager::cloud::CloudError::Transient(_))) => {
                                assert!(!answered.contains_key(&id), "an answered order must be answered again");
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                    Op::Release { order, delete_volume } => {
                        let id = format!("order-{order}");
                        match manager.release(&id, Some(delete_volume)).await {
                            Ok(released) => {
                                assert!(answered.contains_key(&id), "{released:?}");
                                let first = *released_with.entry(id).or_insert(delete_volume);
                                assert_eq!(first, delete_volume, "a release cannot change delete_volume");
                            }
                            // A release done asked for the other volume decision.
                            Err(pool_manager::ManagerError::Aborted(_)) => {
                                assert_eq!(released_with.get(&id), Some(&!delete_volume));
                            }
                            Err(pool_manager::ManagerError::AllocationNotFound(_)) => assert!(!answered.contains_key(&id)),
                            Err(e) => panic!("unexpected release error: {e}"),
                        }
                    }
                    Op::FailVolumeAttach => sim.faults().fail_next_volume_attach(1),
                    Op::FailPortAttach => sim.faults().fail_next_port_attach(1),
                    Op::BootError => sim.faults().error_next_boots(1, "NoValidHost"),
                    Op::Restart => {
                        manager.shutdown().await.unwrap();
                        drop(manager);
                        manager = manager_on(&sim, open_store(dir.path()));
                        manager.start().await.unwrap();
                    }
                    Op::Wait { secs } => tokio::time::sleep(Duration::from_secs(secs.into())).await,
                }
                assert_consistent(&sim, &manager).await;
            }
            manager.shutdown().await.unwrap();
        });
    }

    #[test]
    fn concurrent_allocates_never_share_an_instance(
        ready in 0u32..8,
        requests in 1usize..16,
        yields in prop::collection::vec(0u8..4, 1..24),
        silent in 0u32..3,
    ) {
        paused_runtime().block_on(async {
            let sim = sim();
            let store = HookedStore::new(Interleaved::new(yields));
            let manager = started(&sim, store.clone(), ready).await;
            manager.update_pool(&pool(), |s| s.paused = true).await.unwrap();
            // The oldest Ready instances, the first claimed, silent: each
            // purchase that claims one puts it back (no write takes it
            // from one order's claim to another's; it goes Ready between)
            // and claims the next, and another purchase may claim it again.
            let mut oldest = manager.list_instances(Some(&pool())).await.unwrap();
            oldest.sort_by_key(|i| i.ready_at);
            let silent: Vec<String> = oldest
                .iter()
                .take(silent as usize)
                .map(|i| i.id.clone())
                .collect();
            for instance in &oldest[..silent.len()] {
                assert!(sim.stop_mysqld(instance.server_id.as_deref().unwrap()));
            }
            let answering = ready - silent.len() as u32;
            // Purchases through the real claim, their store calls
            // interleaved: one's listing of the Ready instances and its
            // compare-and-swap fall between another's.
            let calls: Vec<_> = (0..requests)
                .map(|r| spawn_allocate(&manager, request(&format!("order-{r}"), new_volume(), EmptyPoolPolicy::FailFast)))
                .collect();
            let mut holder: HashMap<String, String> = HashMap::new();
            for (r, call) in calls.into_iter().enumerate() {
                match call.await.unwrap() {
                    Ok(allocation) => {
                        assert!(allocation.warm_hit, "{allocation:?}");
                        let instance = allocation.instance_id.clone().unwrap();
                        assert!(!silent.contains(&instance), "silent instance {instance} handed to order-{r}");
                        if let Some(other) = holder.insert(instance.clone(), allocation.params.request_id.clone()) {
                            panic!("instance {instance} handed to {other} and order-{r}");
                        }
                    }
                    Err(pool_manager::ManagerError::ResourceExhausted(_)) => {}
                    Err(e) => panic!("order-{r}: unexpected error: {e}"),
                }
            }
            let taken_over = store.hooks.taken_over.lock().unwrap().clone();
            assert!(taken_over.is_empty(), "claims over another purchase's: {taken_over:#?}");
            let instances = manager.list_instances(None).await.unwrap();
            for (id, order) in &holder {
                let instance = instances.iter().find(|i| &i.id == id);
                let instance = instance.unwrap_or_else(|| panic!("{order}'s instance {id} has no record"));
                assert_eq!(instance.state, InstanceState::Allocated, "{instance:?}");
                assert_eq!(instance.request_id.as_ref(), Some(order), "{instance:?}");
            }
            let warm = holder.len() as u32;
            assert_eq!(warm, answering.min(requests as u32), "warm hits of {requests} purchases over {ready} ready, {} silent", silent.len());
            let status = manager.get_pool(&pool()).await.unwrap();
            assert_eq!(status.count(InstanceState::Allocated), warm);
            assert_eq!(status.count(InstanceState::Ready), ready - warm);
            assert_eq!(status.record.allocations_warm, u64::from(warm));
            assert_consistent(&sim, &manager).await;
            manager.shutdown().await.unwrap();
        });
    }
}
