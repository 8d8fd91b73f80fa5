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
