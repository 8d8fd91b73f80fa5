//! A crash between any two steps of an allocation — simulated by freezing the
//! cloud at the N-th call, dropping the whole process state and reopening the
//! store — followed by the start-up reconcile loses nothing and leaks nothing.

mod common;

use common::*;
use pool_manager::model::{AllocationState, EmptyPoolPolicy};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_step_of_an_allocation_is_repaired_by_reconcile() {
    let mut crash_points = 0;
    for crash_after in 0u64.. {
        assert!(
            crash_after < 100,
            "an allocation should need far fewer cloud calls"
        );
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let manager = started(&sim, open_store(dir.path()), 2).await;
        // Keep the replenisher quiet so the N-th call is the allocation's.
        manager
            .update_pool(&pool(), |s| s.paused = true)
            .await
            .unwrap();
        let order = request("order-crash", new_volume(), EmptyPoolPolicy::Wait);

        sim.faults().hang_after_calls(crash_after);
        let call = {
            let manager = manager.clone();
            let order = order.clone();
            tokio::spawn(async move { manager.allocate(order).await })
        };
        tokio::time::sleep(Duration::from_secs(100)).await;
        let acknowledged = if call.is_finished() {
            Some(
                call.await
                    .unwrap()
                    .expect("allocation without a crash succeeds"),
            )
        } else {
            call.abort();
            let _ = call.await;
            None
        };

        // The process dies: everything in memory goes, the store is reopened.
        manager.shutdown().await.unwrap();
        drop(manager);
        sim.faults().clear_hang();
        let manager = manager_on(&sim, open_store(dir.path()));
        manager.start().await.unwrap();
        assert_consistent(&sim, &manager).await;

        match &acknowledged {
            Some(done) => {
                let stored = manager.get_allocation("order-crash").await.unwrap();
                assert_eq!(&stored, done, "an acknowledged allocation was lost");
            }
            None => assert!(
                manager.get_allocation("order-crash").await.is_err(),
                "crash after {crash_after} calls: an unacknowledged allocation must be rolled back"
            ),
        }

        // The billing system retries the same order and gets one allocation.
        manager
            .update_pool(&pool(), |s| s.paused = false)
            .await
            .unwrap();
        let retried = manager.allocate(order).await.unwrap();
        assert_eq!(retried.state, AllocationState::Allocated);
        if let Some(done) = &acknowledged {
            assert_eq!(&retried, done);
        }
        assert_consistent(&sim, &manager).await;
        manager.shutdown().await.unwrap();

        if acknowledged.is_some() {
            break;
        }
        crash_points += 1;
    }
    assert!(
        crash_points >= 8,
        "only {crash_points} crash points exercised"
    );
}

/// A manager with seeded instance ids, restarted on the same store, draws
/// ids the store already holds. The store refuses such a write and a fresh
/// id is drawn: the replenisher drove the tenant's instance it had taken
/// for its new one, booting a second server over its record.
#[tokio::test(start_paused = true)]
async fn a_restarted_seeded_manager_never_boots_over_a_taken_instance_id() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let seeded = || {
        pool_manager::PoolManager::new(
            open_store(dir.path()),
            sim.clone(),
            std::sync::Arc::new(sim.probe()),
            pool_manager::ManagerSettings {
                instance_id_seed: Some(7),
                ..settings()
            },
        )
    };
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
