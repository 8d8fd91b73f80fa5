//! The sled store's narrow listings (a pool's untouched instances, the
//! unfinished allocations) and its instance counts (of a pool, of every
//! pool) answer from what it keeps in memory; whatever sequence of swaps,
//! failed swaps, deletions and reopenings happens, they must give exactly
//! what filtering the full listings would.

use pool_manager::model::{
    Allocation, AllocationParams, AllocationState, Instance, InstanceState, NetworkRequest,
    PoolKey, VolumeRequest, VolumeSource,
};
use pool_manager::store::{SledStore, Store};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
enum Op {
    /// Swaps instance `id` (absent or not) for one of `pool` in `state`.
    PutInstance {
        id: u8,
        pool: u8,
        state: u8,
    },
    DeleteInstance {
        id: u8,
    },
    /// A writer holding a stale copy tries to swap: it must lose and change nothing.
    StaleInstance {
        id: u8,
        state: u8,
    },
    PutAllocation {
        id: u8,
        state: u8,
    },
    DeleteAllocation {
        id: u8,
    },
    StaleAllocation {
        id: u8,
        state: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, 0u8..2, 0u8..8).prop_map(|(id, pool, state)| Op::PutInstance { id, pool, state }),
        2 => (0u8..8).prop_map(|id| Op::DeleteInstance { id }),
        2 => (0u8..8, 0u8..8).prop_map(|(id, state)| Op::StaleInstance { id, state }),
        4 => (0u8..8, 0u8..4).prop_map(|(id, state)| Op::PutAllocation { id, state }),
        2 => (0u8..8).prop_map(|id| Op::DeleteAllocation { id }),
        2 => (0u8..8, 0u8..4).prop_map(|(id, state)| Op::StaleAllocation { id, state }),
        1 => Just(Op::Reopen),
    ]
}

fn pool(n: u8) -> PoolKey {
    PoolKey {
        flavor: format!("db.f{n}"),
        availability_zone: "az1".into(),
    }
}

const ALLOCATION_STATES: [AllocationState; 4] = [
    AllocationState::Allocating,
    AllocationState::Allocated,
    AllocationState::Releasing,
    AllocationState::Released,
];

fn instance(id: u8, pool_n: u8, state: u8) -> Instance {
    Instance {
        id: format!("i{id}"),
        pool: pool(pool_n),
        server_id: None,
        state: InstanceState::ALL[usize::from(state)],
        created_at: SystemTime::UNIX_EPOCH,
        ready_at: None,
        attempts: 0,
        last_error: None,
        request_id: None,
        mysql_addr: None,
        image: None,
    }
}

fn allocation(id: u8, state: u8) -> Allocation {
    let mut allocation = Allocation::new(
        AllocationParams {
            request_id: format!("r{id}"),
            tenant_project_id: "tenant-a".into(),
            pool: pool(0),
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 1,
                    volume_type: None,
                },
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: "net".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: Default::default(),
        },
        0,
    );
    allocation.state = ALLOCATION_STATES[usize::from(state)];
    allocation.created_at = SystemTime::UNIX_EPOCH;
    allocation
}

fn open(dir: &Path) -> SledStore {
    SledStore::open_waiting(dir, Duration::from_secs(30)).expect("store opens")
}

async fn apply(store: &SledStore, op: &Op) {
    match *op {
        Op::PutInstance { id, pool, state } => {
            let current = store.get_instance(&format!("i{id}")).await.unwrap();
            let new = instance(id, pool, state);
            assert!(store
                .cas_instance(current.as_ref(), Some(&new))
                .await
                .unwrap());
        }
        Op::DeleteInstance { id } => {
            if let Some(current) = store.get_instance(&format!("i{id}")).await.unwrap() {
                assert!(store.cas_instance(Some(&current), None).await.unwrap());
            }
        }
        Op::StaleInstance { id, state } => {
            let current = store.get_instance(&format!("i{id}")).await.unwrap();
            let mut stale = instance(id, 0, state);
            stale.attempts = 99; // never what a PutInstance writes
            let new = instance(id, 1, (state + 1) % 8);
            let swapped = store.cas_instance(Some(&stale), Some(&new)).await.unwrap();
            assert!(!swapped, "a stale copy won against {current:?}");
        }
        Op::PutAllocation { id, state } => {
            let current = store.get_allocation(&format!("r{id}")).await.unwrap();
            let new = allocation(id, state);
            assert!(store
                .cas_allocation(current.as_ref(), Some(&new))
                .await
                .unwrap());
        }
        Op::DeleteAllocation { id } => {
            if let Some(current) = store.get_allocation(&format!("r{id}")).await.unwrap() {
                assert!(store.cas_allocation(Some(&current), None).await.unwrap());
            }
        }
        Op::StaleAllocation { id, state } => {
            let mut stale = allocation(id, state);
            stale.warm_hit = true; // never what a PutAllocation writes
            let new = allocation(id, 0);
            let swapped = store
                .cas_allocation(Some(&stale), Some(&new))
                .await
                .unwrap();
            assert!(!swapped, "a stale copy of r{id} won");
        }
        Op::Reopen => unreachable!("the caller reopens"),
    }
}

async fn assert_listings_agree(store: &SledStore, after: &Op) {
    let instances = store.list_instances().await.unwrap();
    for n in 0..2 {
        let expected: Vec<Instance> = instances
            .iter()
            .filter(|i| i.is_untouched_in(&pool(n)))
            .cloned()
            .collect();
        let listed = store.list_untouched_instances(&pool(n)).await.unwrap();
        assert_eq!(
            listed, expected,
            "untouched instances of pool {n} after {after:?}"
        );

        let mut expected = BTreeMap::new();
        for instance in instances.iter().filter(|i| i.pool == pool(n)) {
            *expected.entry(instance.state).or_insert(0) += 1;
        }
        let counted = store.count_instances(&pool(n)).await.unwrap();
        assert_eq!(
            counted, expected,
            "instance counts of pool {n} after {after:?}"
        );
    }
    let mut expected: BTreeMap<PoolKey, BTreeMap<InstanceState, u32>> = BTreeMap::new();
    for instance in &instances {
        *expected
            .entry(instance.pool.clone())
            .or_default()
            .entry(instance.state)
            .or_insert(0) += 1;
    }
    let counted = store.count_instances_by_pool().await.unwrap();
    assert_eq!(
        counted, expected,
        "instance counts of every pool after {after:?}"
    );
    let mut expected = store.list_allocations().await.unwrap();
    expected.retain(|a| a.state.is_unfinished());
    let listed = store.list_unfinished_allocations().await.unwrap();
    assert_eq!(listed, expected, "unfinished allocations after {after:?}");
}

proptest! {
    // Each case opens a data dir, and a reopening waits for sled to let go of
    // its lock: fewer, longer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn narrow_listings_and_counts_equal_the_filtered_full_listings(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            for op in &ops {
                if let Op::Reopen = op {
                    store.flush().await.unwrap();
                    drop(store);
                    store = open(dir.path());
                } else {
                    apply(&store, op).await;
                }
                assert_listings_agree(&store, op).await;
            }
        });
    }
}

/// Records written before the store kept ids in memory (or by any earlier
/// process) are listed after opening: the ids are rebuilt from the trees.
#[tokio::test]
async fn reopening_lists_what_earlier_handles_wrote() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for (id, state) in [(1, 2), (2, 4), (3, 0), (4, 7)] {
            let new = instance(id, 0, state);
            assert!(store.cas_instance(None, Some(&new)).await.unwrap());
        }
        for (id, state) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            assert!(store
                .cas_allocation(None, Some(&allocation(id, state)))
                .await
                .unwrap());
        }
        store.flush().await.unwrap();
    }
    let store = open(dir.path());
    let untouched: Vec<String> = store
        .list_untouched_instances(&pool(0))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    // i2 is Allocated: a tenant's.
    assert_eq!(untouched, ["i1", "i3", "i4"]);
    let unfinished: Vec<String> = store
        .list_unfinished_allocations()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.params.request_id)
        .collect();
    assert_eq!(unfinished, ["r1", "r3"]);
    let counts = store.count_instances(&pool(0)).await.unwrap();
    assert_eq!(
        counts,
        BTreeMap::from([
            (InstanceState::Booting, 1),
            (InstanceState::Ready, 1),
            (InstanceState::Allocated, 1),
            (InstanceState::Deleting, 1),
        ])
    );
    assert!(store
        .list_untouched_instances(&pool(1))
        .await
        .unwrap()
        .is_empty());
}
