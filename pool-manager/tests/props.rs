//! Property tests: random sequences of Allocate, Release, cloud faults,
//! restarts and passing time keep the store and the cloud consistent, and
//! concurrent claims never hand one instance out twice.

mod common;

use common::*;
use pool_manager::model::{EmptyPoolPolicy, InstanceState};
use pool_manager::store::{SledStore, Store};
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
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
                            Err(pool_manager::ManagerError::ResourceExhausted(_)) => {
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
    fn concurrent_claims_never_share_an_instance(ready in 0usize..12, requests in 1usize..24) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(SledStore::temporary().unwrap());
            let mut ids = Vec::new();
            for i in 0..ready {
                let instance = pool_manager::model::Instance {
                    id: format!("i-{i}"),
                    pool: pool(),
                    server_id: Some(format!("s-{i}")),
                    state: InstanceState::Ready,
                    created_at: std::time::SystemTime::UNIX_EPOCH,
                    ready_at: None,
                    attempts: 1,
                    last_error: None,
                    request_id: None,
                    mysql_addr: None,
                    image: None,
                };
                assert!(store.cas_instance(None, Some(&instance)).await.unwrap());
                ids.push(instance.id);
            }
            // Every requester walks the Ready list and claims by compare-and-swap,
            // as the allocator does.
            let mut tasks = Vec::new();
            for r in 0..requests {
                let store = store.clone();
                let ids = ids.clone();
                tasks.push(tokio::spawn(async move {
                    for id in ids.iter().cycle().skip(r).take(ids.len()) {
                        let current = store.get_instance(id).await.unwrap().unwrap();
                        if current.state != InstanceState::Ready {
                            continue;
                        }
                        let mut claimed = current.clone();
                        claimed.state = InstanceState::Claimed;
                        claimed.request_id = Some(format!("r-{r}"));
                        if store.cas_instance(Some(&current), Some(&claimed)).await.unwrap() {
                            return Some(id.clone());
                        }
                    }
                    None
                }));
            }
            let mut won = HashSet::new();
            let mut winners = 0;
            for task in tasks {
                if let Some(id) = task.await.unwrap() {
                    winners += 1;
                    assert!(won.insert(id), "one instance claimed twice");
                }
            }
            assert_eq!(winners, ready.min(requests));
            let claimed = store.list_instances().await.unwrap().into_iter().filter(|i| i.state == InstanceState::Claimed).count();
            assert_eq!(claimed, winners);
        });
    }
}
