//! Durations too large for `Instant` (a request's timeout, a pool's boot
//! timeout, the manager's intervals) mean "no deadline": the core must not
//! panic on them, whatever the API edge lets through.

mod common;

use common::*;
use pool_manager::model::{AllocationState, EmptyPoolPolicy, PoolRecord};
use pool_manager::{ManagerError, ManagerSettings, PoolManager};
use std::sync::Arc;
use std::time::Duration;

fn manager_with(sim: &Arc<cloudsim::SimCloud>, settings: ManagerSettings) -> PoolManager {
    PoolManager::new(temp_store(), sim.clone(), Arc::new(sim.probe()), settings)
}

#[tokio::test(start_paused = true)]
async fn an_allocate_with_a_huge_timeout_is_served() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let mut order = request("order-h", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::MAX);
    let done = manager.allocate(order).await.unwrap();
    assert_eq!(done.state, AllocationState::Allocated);
}

#[tokio::test(start_paused = true)]
async fn a_pool_with_a_huge_boot_timeout_fills() {
    let sim = sim();
    let store = temp_store();
    // Written past create_pool's checks: the core takes what the store holds.
    let mut spec = spec(1);
    spec.boot_timeout = Duration::MAX;
    store
        .put_pool(&PoolRecord::new(pool(), spec))
        .await
        .unwrap();
    let manager = PoolManager::new(store, sim.clone(), Arc::new(sim.probe()), settings());
    manager.start().await.unwrap();
    wait_ready(&manager, 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_replenish_interval_still_fills_on_changes() {
    let sim = sim();
    let manager = manager_with(
        &sim,
        ManagerSettings {
            replenish_interval: Duration::MAX,
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_poll_interval_does_not_stop_a_rollback() {
    let sim = sim();
    let manager = manager_with(
        &sim,
        ManagerSettings {
            poll_interval: Duration::MAX,
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    let err = manager
        .allocate(request("order-p", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert!(manager.get_allocation("order-p").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_backoff_gives_up_at_the_deadline() {
    let sim = sim();
    let manager = manager_with(
        &sim,
        ManagerSettings {
            retry_backoff: Duration::MAX,
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    // A 5xx on the Allocate's first calls: the backoff before asking again
    // is past the deadline, so the call gives up instead of waiting.
    sim.faults().api_errors_next(
        2,
        pool_manager::cloud::CloudError::Transient("HTTP 503".into()),
    );
    let err = manager
        .allocate(request("order-b", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_huge_headroom_interval_still_fills() {
    let sim = sim();
    let mut settings = settings();
    settings.gate.headroom_interval = Duration::MAX;
    let manager = manager_with(&sim, settings);
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    // The refill asks the gate again whether the flavor's headroom is due,
    // an interval past the first poll.
    manager
        .allocate(request("order-q", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    wait_ready(&manager, 1).await;
}
