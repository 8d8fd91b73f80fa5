//! The manager's own judgements, broadcast as events, on the paused clock:
//! a pool degrades after boots keep failing and recovers at the next Ready
//! boot; a throttled cloud call's pause is reported when it is taken (and
//! not when the deadline does not allow it), and counted as under way while
//! it lasts.

mod common;

use common::*;
use pool_manager::cloud::CloudError;
use pool_manager::cloud::VolumeStatus;
use pool_manager::events::{
    AllocationOutcome, BootOutcome, CloudService, DegradedCause, Event, EventKind, MarkProof,
    DEGRADED_AFTER,
};
use pool_manager::model::{
    AllocationState, EmptyPoolPolicy, InstanceState, PoolKey, VolumeSource, TWIN_WATCH,
};
use pool_manager::{AllocateRequest, ManagerError, PoolManager};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The next event of `pool()` (or of no pool), within an hour of simulated time.
async fn next_event(events: &mut broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(3600), events.recv())
        .await
        .expect("an event within an hour")
        .expect("the manager is running and the test keeps up")
}

#[tokio::test(start_paused = true)]
async fn boots_failing_degrade_the_pool_and_a_ready_boot_recovers_it() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    sim.faults()
        .error_next_boots(u64::from(DEGRADED_AFTER), "NoValidHost");
    // One boot at a time, so the failures are consecutive by construction.
    manager.create_pool(pool(), spec(1)).await.unwrap();

    let mut failures = 0;
    loop {
        let event = next_event(&mut events).await;
        match event.kind {
            EventKind::Boot { outcome, .. } => {
                assert_eq!(outcome, BootOutcome::NoValidHost, "{event:?}");
                failures += 1;
                let health = manager.get_pool(&pool()).await.unwrap().health;
                assert_eq!(health.consecutive_boot_failures, failures);
                assert_eq!(health.degraded, failures >= DEGRADED_AFTER);
            }
            EventKind::Degraded {
                cause,
                consecutive_failures,
                last_error,
            } => {
                assert_eq!(event.pool, Some(pool()));
                assert_eq!(cause, DegradedCause::Boots(BootOutcome::NoValidHost));
                assert_eq!(
                    last_error.as_deref(),
                    Some("server went to ERROR: NoValidHost")
                );
                assert_eq!(consecutive_failures, DEGRADED_AFTER);
                assert_eq!(failures, DEGRADED_AFTER, "degraded right after the third");
                break;
            }
            _ => {}
        }
    }

    // The faults are used up: the next boot succeeds and the pool recovers.
    loop {
        let event = next_event(&mut events).await;
        match event.kind {
            EventKind::Boot { outcome, .. } => {
                assert_eq!(outcome, BootOutcome::Ready, "{event:?}");
                // The verdict follows the boot that earned it.
                let verdict = next_event(&mut events).await;
                assert_eq!(verdict.pool, Some(pool()));
                assert_eq!(
                    verdict.kind,
                    EventKind::Recovered {
                        after_failures: DEGRADED_AFTER,
                        checked: false,
                    }
                );
                break;
            }
            EventKind::Degraded { .. } => panic!("degraded twice in one episode"),
            _ => {}
        }
    }
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert!(!health.degraded, "{health:?}");
    assert_eq!(health.consecutive_boot_failures, 0);
    manager.shutdown().await.unwrap();
}

/// While a pool's own boots pause after failures, and then go one at a
/// time, its plan names that backoff, and while the pause lasts when it
/// ends: not `pool_cap`, which points the operator at
/// `max_concurrent_boots` (16 here), nothing to do with it.
#[tokio::test(start_paused = true)]
async fn a_pool_backing_off_after_failed_boots_names_the_backoff_in_its_plan() {
    use pool_manager::sizing::{Backoff, PlanReason};
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    sim.faults().error_next_boots(1000, "NoValidHost");
    manager.create_pool(pool(), spec(4)).await.unwrap();
    while !matches!(next_event(&mut events).await.kind, EventKind::Boot { .. }) {}
    // The step the failure wakes has run.
    tokio::time::sleep(settings().replenish_interval).await;

    let mut paused_seen = 0;
    for _ in 0..300 {
        let status = manager.get_pool(&pool()).await.unwrap();
        assert!(status.health.consecutive_boot_failures > 0, "{status:?}");
        let plan = status.sizing.last_plan.expect("a plan");
        assert_eq!(
            plan.reason.as_str(),
            "backoff",
            "failed boots hold the pool back, not its boot cap: {plan:?}"
        );
        assert!(plan.boots_now <= 1, "{plan:?}");
        if let PlanReason::Backoff(Backoff::Paused { until }) = plan.reason {
            assert_eq!(plan.boots_now, 0, "{plan:?}");
            if until > tokio::time::Instant::now() {
                paused_seen += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(paused_seen > 0, "the pause and its end shown at some point");
    manager.shutdown().await.unwrap();
}

/// A pool its start-up cloud check found unusable is degraded by an event,
/// as one whose boots keep failing is, so that the `Recovered` the check
/// passing again brings ends an episode every subscriber saw begin.
/// Marking it again in the same episode says nothing new.
#[tokio::test(start_paused = true)]
async fn a_pool_marked_unusable_is_degraded_by_an_event_its_recovery_ends() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    let mut events = manager.events();
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: no flavor",
            MarkProof::Recheck,
        )
        .await
        .unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.pool, Some(pool()));
    assert_eq!(
        event.kind,
        EventKind::Degraded {
            cause: DegradedCause::CloudCheck {
                problem: "start-up cloud check: no flavor".into()
            },
            consecutive_failures: 0,
            last_error: None,
        }
    );
    assert_eq!(
        event.kind.describe().unwrap(),
        "pool degraded: its servers cannot boot: start-up cloud check: no flavor"
    );
    manager
        .mark_unusable(&pool(), "again", MarkProof::Recheck)
        .await
        .unwrap();
    assert!(manager.get_pool(&pool()).await.unwrap().health.degraded);

    // The cloud has the flavor: the check, made again after the pause,
    // passes, at a target of 0 too (no boot is needed, nor made).
    loop {
        match next_event(&mut events).await.kind {
            EventKind::Degraded { .. } => panic!("degraded twice in one episode"),
            EventKind::Boot { .. } => panic!("a boot proves nothing the check does not"),
            kind @ EventKind::Recovered { .. } => {
                assert_eq!(
                    kind,
                    EventKind::Recovered {
                        after_failures: 0,
                        checked: true
                    }
                );
                assert_eq!(
                    kind.describe().unwrap(),
                    "pool recovered: the cloud check that marked it passes again"
                );
                break;
            }
            _ => {}
        }
    }
    assert!(!manager.get_pool(&pool()).await.unwrap().health.degraded);
    manager.shutdown().await.unwrap();
}

/// A pool its start-up cloud check marked while it held its whole target
/// (its management network broken over the restart, which only a boot
/// shows mended) has nothing to refill, and only a Ready boot ends the
/// episode once the check passes again: it boots one server all the
/// same, one at a time after its pause, as a degraded pool below its
/// target does, so a cloud fixed since is noticed and the mark cleared.
/// Before, it booted nothing and stayed degraded for good
/// (WarmpoolBootsDegraded firing, `plan: at_target`), whatever the log's
/// remedy promised of "its next good boot". The extra server is retired
/// once Ready: the pool is back at its max_ready.
#[tokio::test(start_paused = true)]
async fn a_pool_marked_unusable_at_its_target_boots_one_server_and_recovers() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let full = pool_manager::model::PoolSpec {
        min_ready: 2,
        max_ready: 2,
        ..spec(2)
    };
    manager.create_pool(pool(), full).await.unwrap();
    wait_ready(&manager, 2).await;
    let mut events = manager.events();
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: network: no network named 'mgmt'",
            MarkProof::RecheckAndBoot,
        )
        .await
        .unwrap();
    // The step the mark wakes has run, within the mark's pause: the check
    // is made again first, and nothing boots before it passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let plan = status.sizing.last_plan;
    assert_eq!(
        plan.map(|p| (p.reason.as_str(), p.boots_now)),
        Some(("at_target", 0)),
        "a degraded pool at its target waits out its pause: {plan:?}"
    );
    assert_eq!(status.count(InstanceState::Booting), 0, "{status:?}");
    let mut booted = false;
    let recovered = tokio::time::timeout(Duration::from_secs(3600), async {
        loop {
            match events.recv().await.unwrap().kind {
                EventKind::Recovered {
                    after_failures,
                    checked,
                } => break (after_failures, checked),
                EventKind::Boot { outcome, .. } => {
                    assert_eq!(outcome, BootOutcome::Ready);
                    booted = true;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(booted, "the mark asks for a boot");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        recovered,
        Ok((0, false)),
        "a pool at its target recovers within an hour of its cloud being fine: {:?}, plan {:?}",
        status.health,
        status.sizing.last_plan
    );
    assert!(!status.health.degraded, "{status:?}");
    // The probe's surplus goes: max_ready 2.
    for _ in 0..120 {
        if sim.servers().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sim.servers().len(), 2);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_reports_the_pause_it_takes() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    // No refill boots: the one injected 429 must meet the Allocate's calls,
    // not a replacement boot racing it.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut events = manager.events();
    let retry_after = Duration::from_secs(5);
    sim.faults().api_errors_next(
        1,
        CloudError::Throttled {
            retry_after: Some(retry_after),
            message: "Rate limit exceeded".into(),
            unavailable: false,
        },
    );
    // The warm path's first cloud calls create the volume and the port.
    manager
        .allocate(request("paused", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();

    let mut pauses = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Throttled { service, pause } = event.kind {
            assert_eq!(event.pool, None);
            pauses.push((service, pause));
        }
    }
    assert_eq!(
        pauses.len(),
        1,
        "one throttled answer, one pause: {pauses:?}"
    );
    let (service, pause) = pauses[0];
    assert!(
        matches!(service, Some(CloudService::Volume | CloudService::Network)),
        "{service:?}"
    );
    // The pause taken: Retry-After, stretched by the gate's jitter so that
    // calls throttled together do not come back together.
    let jitter = settings().gate.retry_after_jitter;
    assert!(
        pause >= retry_after && pause <= retry_after.mul_f64(1.0 + jitter),
        "{pause:?} is not Retry-After {retry_after:?} with at most {jitter} jitter"
    );
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pause_past_the_deadline_is_not_taken_nor_reported() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    // No refill boots to take the injected 429 instead of the Allocate.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut events = manager.events();
    // Far past the Allocate's 120 s timeout: the call gives up instead.
    sim.faults().api_errors_next(
        1,
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(3600)),
            message: "Rate limit exceeded".into(),
            unavailable: false,
        },
    );
    let result = manager
        .allocate(request("too-long", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(
            result,
            Err(ManagerError::Cloud(CloudError::Throttled { .. }))
        ),
        "{result:?}"
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::Throttled { .. }),
            "a pause not taken was reported: {event:?}"
        );
    }
    manager.shutdown().await.unwrap();
}

/// The calls `manager` counts as waiting out a Retry-After now, of every
/// service.
fn paused_calls(manager: &PoolManager) -> u64 {
    manager.paused_cloud_calls().values().sum()
}

/// Waits (in simulated time) until `manager` counts a call paused.
async fn until_a_call_is_paused(manager: &PoolManager) {
    for _ in 0..60 {
        if paused_calls(manager) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no call paused: {:?}", manager.paused_cloud_calls());
}

fn throttled_for(retry_after: Duration) -> CloudError {
    CloudError::Throttled {
        retry_after: Some(retry_after),
        message: "Rate limit exceeded".into(),
        unavailable: false,
    }
}

/// A call waiting out a long Retry-After is counted as paused, under its
/// service, from the start of its pause: the pause event (and the pause
/// seconds counted from it) come only at its end, up to an hour later.
#[tokio::test(start_paused = true)]
async fn a_call_waiting_out_a_retry_after_is_counted_while_it_waits() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let retry_after = Duration::from_secs(30 * 60);
    let (cloud, throttled) =
        GatedCloud::failing_next(&sim, "create_volume", throttled_for(retry_after));
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let none = manager.paused_cloud_calls();
    // Keystone (a token renewal throttled inside a call) and unknown too.
    assert_eq!(none.len(), CloudService::ALL.len() + 2, "{none:?}");
    assert!(none.values().all(|n| *n == 0), "{none:?}");

    throttled.store(1, Ordering::SeqCst);
    let mut events = manager.events();
    let order = AllocateRequest {
        timeout: Some(Duration::from_secs(2 * 3600)),
        ..request("long-pause", new_volume(), EmptyPoolPolicy::FailFast)
    };
    let purchase = spawn_allocate(&manager, order);
    until_a_call_is_paused(&manager).await;
    let paused_at = tokio::time::Instant::now();
    let paused = manager.paused_cloud_calls();
    assert_eq!(paused[&Some(CloudService::Volume)], 1, "{paused:?}");
    assert_eq!(paused_calls(&manager), 1, "{paused:?}");

    tokio::time::sleep(retry_after / 2).await;
    assert_eq!(paused_calls(&manager), 1, "halfway through the pause");
    assert!(
        std::iter::from_fn(|| events.try_recv().ok())
            .all(|e| !matches!(e.kind, EventKind::Throttled { .. })),
        "the pause is reported only once taken"
    );

    purchase.await.unwrap().unwrap();
    assert!(paused_at.elapsed() >= retry_after - Duration::from_secs(1));
    assert_eq!(
        paused_calls(&manager),
        0,
        "{:?}",
        manager.paused_cloud_calls()
    );
    manager.shutdown().await.unwrap();
}

/// A call whose caller drops it mid-pause is no longer counted: it will
/// never end its pause, and a count left raised would keep the alert on
/// it firing for good.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_pause_is_no_longer_counted() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    // Within a pass's cleanup deadline, so the pass takes the pause.
    let (cloud, throttled) = GatedCloud::failing_next(
        &sim,
        "list_pool_servers",
        throttled_for(Duration::from_secs(20)),
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    throttled.store(1, Ordering::SeqCst);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    until_a_call_is_paused(&manager).await;
    let paused = manager.paused_cloud_calls();
    assert_eq!(paused[&Some(CloudService::Compute)], 1, "{paused:?}");

    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled());
    assert_eq!(
        paused_calls(&manager),
        0,
        "{:?}",
        manager.paused_cloud_calls()
    );
    manager.shutdown().await.unwrap();
}
/// The outcomes the Allocate calls of `events` reported, in order.
fn allocation_outcomes(events: &mut broadcast::Receiver<Event>) -> Vec<AllocationOutcome> {
    let mut outcomes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Allocation { outcome, .. } = event.kind {
            assert_eq!(event.pool, Some(pool()));
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// The pool record (GetPool's counters, warmpoolctl's HIT RATE) counts
/// the outcomes the metrics count (the dashboard's hit rate) that the hit
/// rate is made of: warm, cold, waited and exhausted. An order id reused
/// with other parameters is in neither's hit rate; a fail-fast purchase of
/// an empty pool is a miss in both, and still a failure once under way; a
/// WAIT purchase of the empty pool served once it boots an instance is a
/// miss in both too, and no failure.
#[tokio::test(start_paused = true)]
async fn the_pool_record_counts_the_outcomes_of_the_hit_rate_as_the_events_do() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    // Paused, the pool does not replace what it sells: it is empty after.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut events = manager.events();
    let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    assert!(manager.allocate(order.clone()).await.unwrap().warm_hit);
    let mut reused = order;
    reused.params.tenant_project_id = "tenant-b".into();
    let result = manager.allocate(reused).await;
    assert!(
        matches!(result, Err(ManagerError::Aborted(_))),
        "{result:?}"
    );
    let result = manager
        .allocate(request("order-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(result, Err(ManagerError::ResourceExhausted(_))),
        "{result:?}"
    );
    let mut waiting = request("order-3", new_volume(), EmptyPoolPolicy::Wait);
    waiting.timeout = Some(Duration::from_secs(600));
    let waiting = spawn_allocate(&manager, waiting);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiting.is_finished(), "the paused pool has nothing for it");
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    let waited = waiting.await.unwrap().unwrap();
    assert!(!waited.warm_hit, "{waited:?}");

    let outcomes = allocation_outcomes(&mut events);
    assert_eq!(
        outcomes,
        [
            AllocationOutcome::Warm,
            AllocationOutcome::Failed,
            AllocationOutcome::Exhausted,
            AllocationOutcome::Waited
        ]
    );
    let counted = |o: AllocationOutcome| outcomes.iter().filter(|&&x| x == o).count() as u64;
    let record = manager.get_pool(&pool()).await.unwrap().record;
    assert_eq!(
        (
            record.allocations_warm,
            record.allocations_cold,
            record.allocations_waited,
            record.allocations_exhausted
        ),
        (
            counted(AllocationOutcome::Warm),
            counted(AllocationOutcome::Cold),
            counted(AllocationOutcome::Waited),
            counted(AllocationOutcome::Exhausted)
        ),
        "{record:?}"
    );
    assert_eq!(record.allocations_failed, 1, "{record:?}");
    manager.shutdown().await.unwrap();
}

/// A quota of warmpool's project refusing the order's own volume or port
/// (Cinder's volumes or gigabytes, Neutron's ports) while the pool holds
/// Ready instances is no miss of the pool's depth: not counted exhausted
/// (GetPool's allocations_exhausted, the hit rate) but failed, still
/// answered RESOURCE_EXHAUSTED (a quota), naming the quota and saying the
/// pool had instances, so nobody deepens the pool for it.
#[tokio::test(start_paused = true)]
async fn a_quota_refusing_the_orders_own_volume_or_port_is_no_miss_of_the_pool() {
    for (method, quota) in [
        (
            "create_volume",
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota",
        ),
        ("create_port", "Quota exceeded for resources: ['port']"),
    ] {
        let sim = sim();
        let (cloud, _) = GatedCloud::refusing(
            &sim,
            method,
            CloudError::QuotaExceeded(quota.into()),
            true,
        );
        let manager = started_paused(&cloud, temp_store(), 2).await;
        let mut events = manager.events();
        let result = manager
            .allocate(request("order-q", new_volume(), EmptyPoolPolicy::FailFast))
            .await;
        let Err(err) = result else {
            panic!("{method}: {result:?}");
        };
        assert!(
            matches!(&err, ManagerError::Cloud(CloudError::QuotaExceeded(_))),
            "{method}: {err:?}"
        );
        assert_eq!(
            allocation_outcomes(&mut events),
            [AllocationOutcome::Failed],
            "{method}"
        );
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            (
                status.record.allocations_exhausted,
                status.record.allocations_failed
            ),
            (0, 1),
            "{method}: {:?}",
            status.record
        );
        let message = err.to_string();
        assert!(
            message.contains(quota) && message.contains("2 Ready") && message.contains("warmpool's project"),
            "{method}: {message}"
        );
        assert_eq!(status.count(InstanceState::Ready), 2, "{method}");
        manager.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_volume_refused_before_anything_is_claimed_is_counted() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let mut events = manager.events();
    let missing = VolumeSource::Existing {
        volume_id: "00000000-0000-4000-8000-00000000d0e5".into(),
    };
    let result = manager
        .allocate(request("missing", missing, EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(&result, Err(ManagerError::FailedPrecondition(m)) if m.contains("does not exist")),
        "{result:?}"
    );
    assert_eq!(
        allocation_outcomes(&mut events),
        [AllocationOutcome::PreconditionFailed]
    );
    manager.shutdown().await.unwrap();
}

/// Refusals before an order is recorded count as Allocate calls too: an
/// order id reused with other parameters (ABORTED: failed, in the order's
/// own pool) and a purchase from a pool being deleted (FAILED_PRECONDITION).
#[tokio::test(start_paused = true)]
async fn a_reused_order_id_and_a_deleted_pool_are_counted() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    manager.allocate(order.clone()).await.unwrap();
    let mut events = manager.events();
    let mut other = order.clone();
    other.params.tenant_project_id = "tenant-b".into();
    let result = manager.allocate(other).await;
    assert!(
        matches!(result, Err(ManagerError::Aborted(_))),
        "{result:?}"
    );
    let event = next_event(&mut events).await;
    assert_eq!(event.pool.as_ref(), Some(&pool()));
    assert!(
        matches!(
            event.kind,
            EventKind::Allocation {
                outcome: AllocationOutcome::Failed,
                ..
            }
        ),
        "{event:?}"
    );

    // A boot under way keeps the deleted pool draining for a while.
    manager
        .update_pool(&pool(), |s| s.min_ready = 2)
        .await
        .unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    let mut events = manager.events();
    let result = manager
        .allocate(request("order-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(&result, Err(ManagerError::FailedPrecondition(m)) if m.contains("being deleted")),
        "{result:?}"
    );
    assert_eq!(
        allocation_outcomes(&mut events),
        [AllocationOutcome::PreconditionFailed]
    );
    manager.shutdown().await.unwrap();
}

/// A malformed Allocate is refused before anything is counted: no
/// allocation event (so no `warmpool_allocations_total` outcome) and none
/// of the pool record's counters, `allocations_failed` included.
#[tokio::test(start_paused = true)]
async fn an_invalid_allocate_is_counted_nowhere() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let before = manager.get_pool(&pool()).await.unwrap().record;
    let mut events = manager.events();
    let mut order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    order.params.tenant_project_id = String::new();
    let result = manager.allocate(order).await;
    assert!(
        matches!(result, Err(ManagerError::InvalidArgument { .. })),
        "{result:?}"
    );
    assert_eq!(allocation_outcomes(&mut events), []);
    let after = manager.get_pool(&pool()).await.unwrap().record;
    assert_eq!(
        pool_manager::events::PoolMark::of(&after),
        pool_manager::events::PoolMark::of(&before)
    );
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_volume_or_port_the_cloud_refuses_to_create_is_the_callers_to_fix() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    // No refill boots to take the injected errors instead of the Allocate.
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut events = manager.events();
    // Cinder's answer to an unknown volume type (404) and Neutron's to an
    // address outside the subnet (400): asking again will not help, so the
    // caller must not be told the cloud is unavailable.
    for (i, refusal) in [
        CloudError::NotFound("volume type no-such-type could not be found".into()),
        CloudError::Fatal("invalid input for fixed_ips (HTTP 400)".into()),
    ]
    .into_iter()
    .enumerate()
    {
        // Both first calls of the warm path (volume and port creates) fail.
        sim.faults().api_errors_next(2, refusal.clone());
        let result = manager
            .allocate(request(
                &format!("refused-{i}"),
                new_volume(),
                EmptyPoolPolicy::FailFast,
            ))
            .await;
        assert!(
            matches!(&result, Err(ManagerError::FailedPrecondition(m)) if m.contains("cannot create the tenant")),
            "{refusal:?}: {result:?}"
        );
    }
    assert_eq!(
        allocation_outcomes(&mut events),
        [AllocationOutcome::PreconditionFailed; 2]
    );
    // The creates come before any claim: a caller retrying a bad request
    // does not drain the pool, and the next purchase is served warm.
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{:?}", status.counts);
    let served = manager
        .allocate(request("good", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(served.warm_hit);
    // Nothing of the refused purchases is left behind.
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// Deleting a pool while its instances boot and warm is not a run of
/// failed boots: the drain deletes their servers under the boot tasks,
/// which stand down (no failure reported, no degraded pool, no boot timing
/// out after probing a deleted server for its whole boot timeout).
#[tokio::test(start_paused = true)]
async fn draining_a_pool_with_boots_under_way_reports_no_failed_boots() {
    // 10 s in, the servers build; 45 s in, they are ACTIVE and mysqld
    // (which never starts here) does not answer yet.
    for (after, state) in [(10, InstanceState::Booting), (45, InstanceState::Warming)] {
        drain_while(Duration::from_secs(after), state).await;
    }
}

async fn drain_while(after: Duration, state: InstanceState) {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    sim.faults().mysqld_never_starts_next(4);
    manager.create_pool(pool(), spec(4)).await.unwrap();
    tokio::time::sleep(after).await;
    let states: Vec<InstanceState> = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(states, vec![state; 4]);

    manager.delete_pool(&pool()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    assert!(manager.get_pool(&pool()).await.is_err(), "the pool is gone");
    assert!(sim.servers().is_empty());
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event.kind,
                EventKind::Degraded { .. }
                    | EventKind::Boot {
                        outcome: BootOutcome::Failed | BootOutcome::Timeout,
                        ..
                    }
            ),
            "{event:?}"
        );
    }
}

/// An Allocate the cloud refused is counted by what its caller is told: a
/// refusal as a bad request (FAILED_PRECONDITION) as precondition_failed,
/// not as cloud_error, which reads as the cloud being unavailable.
#[tokio::test(start_paused = true)]
async fn a_purchase_refused_as_a_bad_request_is_counted_as_a_failed_precondition() {
    let sim = sim();
    let (cloud, _refusing) = GatedCloud::refusing(
        &sim,
        "attach_volume",
        CloudError::Fatal("Invalid volume: not in the same availability_zone".into()),
        true,
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let mut events = manager.events();
    let result = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(
        matches!(&result, Err(ManagerError::Cloud(CloudError::Fatal(_)))),
        "{result:?}"
    );
    assert_eq!(
        allocation_outcomes(&mut events),
        [AllocationOutcome::PreconditionFailed]
    );
    manager.shutdown().await.unwrap();
}

/// A pool whose boots the cloud keeps refusing (its flavor retired) does
/// not send the cloud a create every poll: once its boots fail, it boots
/// one at a time, each after a pause that doubles with the failures in a
/// row (up to `BOOT_BACKOFF_MAX`); the first boot the cloud takes again
/// fills it.
#[tokio::test(start_paused = true)]
async fn a_pool_whose_boots_keep_failing_backs_off_and_recovers() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let sim = sim();
    let creates = Arc::new(AtomicU64::new(0));
    let refusing = Arc::new(AtomicBool::new(true));
    let cloud = GatedCloud::with_fault(&sim, {
        let (creates, refusing) = (creates.clone(), refusing.clone());
        move |method| {
            if method != "create_server" {
                return None;
            }
            creates.fetch_add(1, Ordering::SeqCst);
            refusing
                .load(Ordering::SeqCst)
                .then(|| CloudError::Fatal("Flavor db.small could not be found".into()))
        }
    });
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(4)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let sent = creates.load(Ordering::SeqCst);
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert!(health.degraded, "{health:?}");
    // Without a pause, every failure's change woke the replenisher for
    // another round of boots: thousands in half an hour.
    assert!(
        (5..=20).contains(&sent),
        "{sent} creates in 30 min of refusals"
    );

    refusing.store(false, Ordering::SeqCst);
    wait_ready(&manager, 4).await;
    assert!(!manager.get_pool(&pool()).await.unwrap().health.degraded);
    manager.shutdown().await.unwrap();
}

/// A new volume a rolled-back purchase left stuck `error_attaching` is
/// announced once, naming it, its order and what it needs, and listed as
/// stuck (the metrics' gauge) however many passes find it so, until the
/// reconciler has deleted it after an admin's reset.
#[tokio::test(start_paused = true)]
async fn a_new_volume_left_stuck_error_attaching_is_announced_and_listed_until_deleted() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    let mut events = manager.events();
    sim.faults().error_next_volume_attach(1, false);
    let mut order = request("o-stuck", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(3600));
    manager.allocate(order).await.unwrap_err();
    let stuck = the_error_attaching_volume(&sim);
    for _ in 0..3 {
        manager.reconcile().await.unwrap();
        assert_eq!(manager.stuck_volumes().await.unwrap(), vec![stuck.clone()]);
    }
    let mut announced = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind, EventKind::VolumeStuck { .. }) {
            announced.push(event);
        }
    }
    let expected = EventKind::VolumeStuck {
        request_id: "o-stuck".into(),
        volume_id: stuck.clone(),
        status: "error_attaching".into(),
    };
    let announced: Vec<_> = announced.into_iter().map(|e| (e.pool, e.kind)).collect();
    assert_eq!(
        announced,
        vec![(Some(pool()), expected.clone())],
        "once, by the rollback, not at every pass"
    );
    let said = expected.describe().expect("announced to operators");
    assert!(said.contains(&stuck) && said.contains("reset"), "{said}");

    // An admin's reset comes hours after the watch's own end, and Cinder's
    // backend then fails the delete the pass sends: still named, as any
    // volume whose delete was accepted, until it is gone.
    tokio::time::sleep(TWIN_WATCH).await;
    sim.faults().error_next_volume_deletes(1);
    assert!(sim.reset_error_attaching(&stuck));
    manager.reconcile().await.unwrap();
    stays_named_until_deleted(&sim, &manager, &mut events, "o-stuck", &stuck).await;
}

/// The VolumeStuck events announced so far.
fn stuck_announced(events: &mut broadcast::Receiver<Event>) -> Vec<(Option<PoolKey>, EventKind)> {
    let mut announced = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind, EventKind::VolumeStuck { .. }) {
            announced.push((event.pool, event.kind));
        }
    }
    announced
}

/// Longer than the sim's delete latency: a volume being deleted is gone,
/// or Cinder's backend has failed its delete, by then.
const DELETE_DONE: Duration = Duration::from_secs(10);

/// A volume whose delete Cinder accepted and then failed (`error_deleting`)
/// is announced once and listed as stuck on every pass, until an admin's
/// reset lets the reconciler delete it; then it is gone and no longer
/// listed. The order's call answered while Cinder was still deleting it.
async fn stays_named_until_deleted(
    sim: &cloudsim::SimCloud,
    manager: &pool_manager::PoolManager,
    events: &mut broadcast::Receiver<Event>,
    request_id: &str,
    volume: &str,
) {
    let status = |id: &str| {
        sim.volumes()
            .into_iter()
            .find(|v| v.id == id)
            .map(|v| v.status)
    };
    assert_eq!(
        status(volume),
        Some(VolumeStatus::Other("deleting".into())),
        "answered without waiting for the delete"
    );
    manager.reconcile().await.unwrap();
    assert_eq!(manager.stuck_volumes().await.unwrap(), Vec::<String>::new());
    tokio::time::sleep(DELETE_DONE).await;
    for _ in 0..3 {
        manager.reconcile().await.unwrap();
        assert_eq!(
            manager.stuck_volumes().await.unwrap(),
            vec![volume.to_owned()]
        );
        assert_eq!(
            status(volume),
            Some(VolumeStatus::Other("error_deleting".into()))
        );
    }
    let announced = stuck_announced(events);
    assert_eq!(announced.len(), 1, "once, not at every pass: {announced:?}");
    let (pool_of, kind) = &announced[0];
    assert_eq!(pool_of, &Some(pool()));
    assert_eq!(
        kind,
        &EventKind::VolumeStuck {
            request_id: request_id.into(),
            volume_id: volume.into(),
            status: "error_deleting".into(),
        }
    );
    let said = kind.describe().expect("announced to operators");
    assert!(
        said.contains("error_deleting") && said.contains("reset"),
        "{said}"
    );

    assert!(sim.reset_error_deleting(volume));
    manager.reconcile().await.unwrap();
    assert_eq!(manager.stuck_volumes().await.unwrap(), Vec::<String>::new());
    tokio::time::sleep(DELETE_DONE).await;
    manager.reconcile().await.unwrap();
    assert_eq!(status(volume), None, "deleted once Cinder allows it");
    assert!(stuck_announced(events).is_empty());
}

/// A rolled-back purchase's new volume whose delete Cinder accepted, then
/// failed: its record used to go at the accepted answer, leaving a volume
/// on warmpool's quota that nothing named.
#[tokio::test(start_paused = true)]
async fn a_rolled_back_volume_cinder_fails_to_delete_stays_named_until_deleted() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let mut events = manager.events();
    // The one instance's attach fails and no other is there: rolled back.
    sim.faults().fail_next_volume_attach(1);
    sim.faults().error_next_volume_deletes(1);
    manager
        .allocate(request("o-del", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    let volume = sim
        .volumes()
        .pop()
        .expect("the purchase's volume is kept")
        .id;
    stays_named_until_deleted(&sim, &manager, &mut events, "o-del", &volume).await;
    manager.shutdown().await.unwrap();
}

/// A rollback that stops after Cinder accepted its volume's delete (here
/// at an error further on: its look for twins refused) is redone by the
/// next passes, whose delete Cinder refuses (the volume is `deleting`, then
/// `error_deleting`). Taken for a failure to wait out, that refusal held
/// the order Allocating, every pass, until an admin came, and nothing
/// named the volume. The redo takes it for the delete done, and the volume
/// was watched before the delete was sent: named even while the redo still
/// fails.
#[tokio::test(start_paused = true)]
async fn a_rollback_stopped_after_its_volume_delete_is_redone_and_the_volume_stays_named() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let (cloud, refused) = GatedCloud::failing_next(
        &sim,
        "find_ports_by_name",
        CloudError::Fatal("listing ports is not allowed".into()),
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let mut events = manager.events();
    sim.faults().fail_next_volume_attach(1);
    sim.faults().error_next_volume_deletes(1);
    // The rollback's look for twins, and the first pass's again.
    refused.store(2, Ordering::SeqCst);
    manager
        .allocate(request("o-redo", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    let volume = sim
        .volumes()
        .pop()
        .expect("the purchase's volume is kept")
        .id;
    tokio::time::sleep(DELETE_DONE).await;
    manager.reconcile().await.unwrap();
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "the pass's redo did not get past the volume's delete"
    );
    assert_eq!(
        manager.stuck_volumes().await.unwrap(),
        vec![volume.clone()],
        "not named while the rollback fails"
    );
    manager.reconcile().await.unwrap();
    let allocating: Vec<_> = manager
        .list_allocations()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.state == AllocationState::Allocating)
        .collect();
    assert!(allocating.is_empty(), "{allocating:?}");
    assert_eq!(manager.stuck_volumes().await.unwrap(), vec![volume.clone()]);
    assert_eq!(
        stuck_announced(&mut events),
        vec![(
            Some(pool()),
            EventKind::VolumeStuck {
                request_id: "o-redo".into(),
                volume_id: volume,
                status: "error_deleting".into(),
            }
        )]
    );
    manager.shutdown().await.unwrap();
}

/// The same for a volume a release deletes: warmpool's own and a tenant's.
/// The release answers Released as soon as Cinder accepts the delete (its
/// server and port are gone, the volume is left to the reconciler, named).
#[tokio::test(start_paused = true)]
async fn a_released_volume_cinder_fails_to_delete_stays_named_until_deleted() {
    for existing in [false, true] {
        let sim = sim();
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        let mut events = manager.events();
        let source = match existing {
            false => new_volume(),
            true => VolumeSource::Existing {
                volume_id: sim.create_volume_for_test("tenant-a", "az1", 10),
            },
        };
        let allocation = manager
            .allocate(request("o-rel", source, EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        let volume = allocation.volume_id.unwrap();
        sim.faults().error_next_volume_deletes(1);
        let released = manager.release("o-rel", Some(true)).await.unwrap();
        assert_eq!(released.state, AllocationState::Released);
        stays_named_until_deleted(&sim, &manager, &mut events, "o-rel", &volume).await;
        manager.shutdown().await.unwrap();
    }
}

/// A pass's look at a deleted volume waits out a 429 as the pass's other
/// calls do. Left to the next pass, each throttled look kept its watch:
/// with more releases an hour than the cloud's burst of calls, the
/// watches piled up, every pass looked at them all again, and every
/// purchase of a new volume read them all.
#[tokio::test(start_paused = true)]
async fn a_pass_looks_at_a_deleted_volume_through_a_429() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let (cloud, throttled) = GatedCloud::failing_next(
        &sim,
        "get_volume",
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
            message: "Rate limit exceeded".into(),
            unavailable: false,
        },
    );
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 1).await;
    let volume = manager
        .allocate(request("o-429", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap()
        .volume_id
        .unwrap();
    manager.release("o-429", Some(true)).await.unwrap();
    tokio::time::sleep(DELETE_DONE).await;
    assert!(sim.volumes().iter().all(|v| v.id != volume));

    throttled.store(1, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(throttled.load(Ordering::SeqCst), 0, "the pass never looked");
    assert_eq!(
        store.list_twin_watches().await.unwrap(),
        vec![],
        "the watch of a volume gone outlived the pass"
    );
    manager.shutdown().await.unwrap();
}

/// An operator who mends a failing pool by changing what it boots (its
/// image, its boot timeout) need not wait out its pause: UpdatePool left
/// the boot backoff of the old spec in place, so the pool waited up to
/// 5 minutes and then booted one at a time. A change of the boot spec
/// lets the next step boot the whole deficit; the pool stays degraded
/// until a boot is Ready (its RECOVERED event then).
#[tokio::test(start_paused = true)]
async fn changing_what_a_failing_pool_boots_ends_its_boot_pause() {
    use pool_manager::sizing::{Backoff, PlanReason};
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        images: ["mysql-8.0", "mysql-8.4"].map(String::from).to_vec(),
        ..sim().config()
    });
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    sim.faults().error_next_boots(1000, "NoValidHost");
    manager.create_pool(pool(), spec(4)).await.unwrap();
    // Until the pool's pause is long: a minute or more ahead.
    let paused_long = || async {
        let plan = manager.get_pool(&pool()).await.unwrap().sizing.last_plan;
        matches!(
            plan.map(|p| p.reason),
            Some(PlanReason::Backoff(Backoff::Paused { until }))
                if until > tokio::time::Instant::now() + Duration::from_secs(60)
        )
    };
    for _ in 0..3600 {
        if paused_long().await {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(paused_long().await, "the pool never paused a minute");
    assert!(manager.get_pool(&pool()).await.unwrap().health.degraded);

    // The image the pool boots is mended.
    sim.faults().error_next_boots(0, "NoValidHost");
    sim.reset_call_counts();
    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    tokio::time::sleep(settings().replenish_interval + Duration::from_secs(1)).await;
    let calls = sim.call_counts();
    assert_eq!(
        calls.get("create_server"),
        Some(&4),
        "the whole deficit boots at once: {calls:?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.health.degraded, "until a boot is Ready: {status:?}");
    wait_ready(&manager, 4).await;
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert!(!health.degraded, "{health:?}");
    manager.shutdown().await.unwrap();
}

/// Also for a pool whose boots have not failed yet (a new pool, or one
/// healthy since the start): created with a wrong image, fixed while its
/// first boots are on their way, those boots failing after the change
/// pause nothing, and the next refill boots the whole deficit. The change
/// was recorded only for a pool with a boot outcome already, so these
/// failures earned a pause, and the pool then booted one at a time.
#[tokio::test(start_paused = true)]
async fn a_new_pool_whose_image_is_fixed_before_its_boots_fail_boots_its_whole_deficit() {
    use pool_manager::sizing::PlanReason;
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        images: ["mysql-8.0", "mysql-8.4"].map(String::from).to_vec(),
        ..sim().config()
    });
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    sim.faults().error_next_boots(4, "NoValidHost");
    manager.create_pool(pool(), spec(4)).await.unwrap();
    for _ in 0..600 {
        if sim.call_counts().get("create_server") == Some(&4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Mended a moment after the boots started (cloudsim fails them 3 s in):
    // a boot started at the very instant of the change is not known to be
    // of the old spec.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert_eq!(health.consecutive_boot_failures, 0, "none failed yet");

    sim.reset_call_counts();
    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    for _ in 0..3600 {
        let health = manager.get_pool(&pool()).await.unwrap().health;
        if health.consecutive_boot_failures >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(settings().replenish_interval + Duration::from_secs(1)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.health.consecutive_boot_failures, 4, "{status:?}");
    let calls = sim.call_counts();
    assert_eq!(
        calls.get("create_server"),
        Some(&4),
        "the whole deficit boots at once: {calls:?}, plan {:?}, health {:?}",
        status.sizing.last_plan,
        status.health
    );
    assert!(
        !matches!(
            status.sizing.last_plan.map(|p| p.reason),
            Some(PlanReason::Backoff(_))
        ),
        "{:?}",
        status.sizing.last_plan
    );
    wait_ready(&manager, 4).await;
    assert!(sim.servers().iter().all(|s| s.image == "mysql-8.4"));
    manager.shutdown().await.unwrap();
}

/// Waits (in simulated time) until the pool is degraded.
async fn until_degraded(manager: &PoolManager) -> pool_manager::events::PoolHealth {
    for _ in 0..3600 {
        let health = manager.get_pool(&pool()).await.unwrap().health;
        if health.degraded {
            return health;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the pool never degraded");
}

/// A pool's health outlives a restart: one whose boots keep failing is
/// still degraded after it (GetPool, the metrics' gauge and its alert read
/// this), with its failures in a row, and its first step after the start
/// still boots one at a time after a pause. The verdict lived in memory
/// only: the restarted pool read healthy with no failure, until three more
/// boots failed, and its first step booted its whole deficit at once.
#[tokio::test(start_paused = true)]
async fn a_restart_keeps_a_failing_pools_verdict_and_its_boot_pause() {
    use pool_manager::sizing::PlanReason;
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    sim.faults().error_next_boots(1000, "NoValidHost");
    manager.create_pool(pool(), spec(2)).await.unwrap();
    let before = until_degraded(&manager).await;
    assert!(
        before.consecutive_boot_failures >= DEGRADED_AFTER,
        "{before:?}"
    );
    manager.shutdown().await.unwrap();
    drop(manager);

    let manager = manager_on(&sim, open_store(dir.path()));
    let mut events = manager.events();
    manager.start().await.unwrap();
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert!(
        health.degraded,
        "the restart forgot the verdict: {health:?}"
    );
    assert!(
        health.consecutive_boot_failures >= before.consecutive_boot_failures,
        "the restart forgot the failures in a row: {health:?}, before it {before:?}"
    );
    // Announced again, so that this process's episodes (the metrics')
    // include the one its recovery will end.
    let event = next_event(&mut events).await;
    assert_eq!(event.pool, Some(pool()));
    assert!(
        matches!(
            event.kind,
            EventKind::Degraded {
                cause: DegradedCause::Boots(BootOutcome::NoValidHost),
                consecutive_failures,
                // The pool's, kept in its record.
                last_error: Some(ref error),
            } if consecutive_failures >= before.consecutive_boot_failures
                && error.contains("NoValidHost")
        ),
        "{event:?}"
    );
    let plan = loop {
        if let Some(plan) = manager.get_pool(&pool()).await.unwrap().sizing.last_plan {
            break plan;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(plan.reason, PlanReason::Backoff(_)),
        "the first step after the restart is still paced: {plan:?}"
    );
    assert!(plan.boots_now <= 1, "{plan:?}");
    manager.shutdown().await.unwrap();
}

/// A store on which a pool's boots kept failing until it was degraded,
/// the manager stopped since; cloudsim's boots succeed again.
async fn degraded_store(sim: &std::sync::Arc<cloudsim::SimCloud>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_on(sim, open_store(dir.path()));
    manager.start().await.unwrap();
    sim.faults().error_next_boots(1000, "NoValidHost");
    manager.create_pool(pool(), spec(1)).await.unwrap();
    until_degraded(&manager).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    sim.faults().error_next_boots(0, "NoValidHost");
    dir
}

/// A degraded pool's stored health, left behind with a store an older
/// warmpoold then ran (it leaves the `pool_health` tree alone): that
/// build deleted the pool and created it again, or saw its boots recover.
/// The restart on this version restored the old verdict on a pool that
/// had none, degraded with the old pause: one at its target boots nothing,
/// so it stayed degraded (WarmpoolBootsDegraded firing) for good.
#[tokio::test(start_paused = true)]
async fn health_stored_before_an_older_build_ran_is_not_restored_onto_a_changed_pool() {
    use pool_manager::model::{Instance, PoolRecord};
    let sim = sim();

    // The older build deletes the pool (its instances and its record, not
    // the health) and creates it again, at a target of 0.
    let dir = degraded_store(&sim).await;
    {
        let store = open_store(dir.path());
        assert!(store.get_pool_health(&pool()).await.unwrap().is_some());
        for instance in store.list_instances().await.unwrap() {
            assert!(store.cas_instance(Some(&instance), None).await.unwrap());
        }
        store
            .put_pool(&PoolRecord::new(pool(), spec(0)))
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert_eq!(
        health,
        Default::default(),
        "a pool created again shows the deleted one's health"
    );
    manager.shutdown().await.unwrap();
    drop(manager);

    // Or it keeps the pool, and a boot of it is Ready: the failures in a
    // row ended.
    let dir = degraded_store(&sim).await;
    {
        let store = open_store(dir.path());
        let stored = store.get_pool_health(&pool()).await.unwrap().unwrap();
        let written = stored.paused_from.expect("paused");
        let ready = Instance {
            id: "booted-by-the-older-build".into(),
            pool: pool(),
            server_id: Some("its-server".into()),
            state: InstanceState::Ready,
            created_at: written,
            ready_at: Some(written + Duration::from_secs(3600)),
            attempts: 1,
            last_error: None,
            request_id: None,
            mysql_addr: None,
            image: None,
        };
        assert!(store.cas_instance(None, Some(&ready)).await.unwrap());
        store.flush().await.unwrap();
    }
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert_eq!(
        health,
        Default::default(),
        "a pool whose boots recovered since shows its old verdict"
    );
    manager.shutdown().await.unwrap();
}

/// Holds the first flush after the pool's record is written, until
/// released.
#[derive(Default)]
struct HoldFlushAfterPut {
    armed: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldFlushAfterPut {
    async fn before_put_pool(&self, _pool: &pool_manager::model::PoolRecord) {
        use std::sync::atomic::Ordering;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
        }
    }

    async fn before_flush(&self) -> pool_manager::store::StoreResult<()> {
        use std::sync::atomic::Ordering;
        if self.held.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        Ok(())
    }
}

/// A pool created under the key of one deleted is a new pool, healthy from
/// its first listing and after a restart, whatever health the store kept
/// of the old one: a warmpoold of 3474b12 or older deletes a pool and
/// leaves its `pool_health` record, which, written at the old pool's first
/// failed boot (before that failure was written on the pool), matches a
/// pool record new under the key. The create deletes it before it writes
/// the pool's record.
#[tokio::test(start_paused = true)]
async fn a_pool_created_again_never_shows_the_deleted_ones_health() {
    use pool_manager::events::{PoolMark, StoredHealth};
    use pool_manager::model::PoolRecord;
    use std::sync::atomic::Ordering;
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(HookedStore {
        inner: open_store(dir.path()),
        hooks: HoldFlushAfterPut::default(),
    });
    let left_behind = StoredHealth {
        consecutive_boot_failures: 1,
        last_failure: Some(BootOutcome::NoValidHost),
        backoff_steps: 1,
        paused_from: Some(std::time::SystemTime::now()),
        written_for: Some(PoolMark::of(&PoolRecord::new(pool(), spec(1)))),
        written_at: Some(std::time::SystemTime::now()),
    };
    store
        .inner
        .put_pool_health(&pool(), Some(&left_behind))
        .await
        .unwrap();
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();

    store.hooks.armed.store(true, Ordering::SeqCst);
    let create = tokio::spawn({
        let manager = manager.clone();
        async move { manager.create_pool(pool(), spec(0)).await }
    });
    store.hooks.reached.notified().await;
    assert_eq!(
        store.inner.get_pool_health(&pool()).await.unwrap(),
        None,
        "the pool's record is about to be flushed with the deleted pool's health"
    );
    let listed = manager.list_pools().await.unwrap();
    let new = listed
        .iter()
        .find(|p| p.record.key == pool())
        .expect("listed");
    assert_eq!(
        new.health,
        Default::default(),
        "the new pool shows the deleted one's health"
    );
    store.hooks.release.notify_one();
    let created = create.await.unwrap().unwrap();
    assert_eq!(created.health, Default::default());
    manager.shutdown().await.unwrap();
    drop((manager, store));

    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    let health = manager.get_pool(&pool()).await.unwrap().health;
    assert_eq!(
        health,
        Default::default(),
        "after a restart, the new pool shows the deleted one's health"
    );
    manager.shutdown().await.unwrap();
}

/// A pool whose target is its whole depth: nothing to refill at rest.
fn full(n: u32) -> pool_manager::model::PoolSpec {
    pool_manager::model::PoolSpec {
        min_ready: n,
        max_ready: n,
        ..spec(n)
    }
}

/// A stored pool marked at start-up for its Cinder zone (listed
/// unavailable) stays degraded while the zone is closed: boots never touch
/// Cinder, so a Ready boot proves nothing of it. The mark used to end at
/// the probe boot of a pool at its target (or any refill's), and the pool
/// read healthy while every purchase with a new volume failed. It ends
/// when the check that made it passes again, made after each pause, and
/// no server is booted for it.
#[tokio::test(start_paused = true)]
async fn a_cinder_mark_outlives_a_boot_that_never_touched_cinder() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), full(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    let mut events = manager.events();
    sim.close_volume_zone("az1");
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: volumes: Cinder zone 'az1' is unavailable",
            MarkProof::Recheck,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(sim.servers().len(), 2, "no server booted to prove Cinder");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status.health.degraded,
        "Cinder is still closed, yet the mark is gone: {:?}",
        status.health
    );
    let order = manager
        .allocate(request("o1", new_volume(), EmptyPoolPolicy::FailFast))
        .await;
    assert!(order.is_err(), "Cinder is closed: {order:?}");
    // The failed sale took no server, and the check fails again after
    // each pause: still marked.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.health.degraded, "{:?}", status.health);

    sim.reopen_volume_zone("az1");
    let recovered = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            if let EventKind::Recovered { checked, .. } = events.recv().await.unwrap().kind {
                break checked;
            }
        }
    })
    .await;
    assert_eq!(
        recovered,
        Ok(true),
        "the check passing again ends the mark, within a pause of at most 5 min"
    );
    assert!(!manager.get_pool(&pool()).await.unwrap().health.degraded);
    manager
        .allocate(request("o2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
}

/// A Ready boot ends no check mark: a pool marked for its Cinder zone
/// while its boots are in flight stays degraded when they are Ready (boots
/// never touch Cinder), until the check passes again.
#[tokio::test(start_paused = true)]
async fn a_ready_boot_in_flight_at_the_mark_ends_no_check_mark() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), full(2)).await.unwrap();
    sim.close_volume_zone("az1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 0, "{status:?}");
    assert!(!sim.servers().is_empty(), "boots in flight at the mark");
    let mut events = manager.events();
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: volumes: Cinder zone 'az1' is unavailable",
            MarkProof::Recheck,
        )
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status.health.degraded,
        "Cinder is still closed, yet a Ready boot ended the mark: {:?}",
        status.health
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::Recovered { .. }),
            "{event:?}"
        );
    }
    manager.shutdown().await.unwrap();
}

/// A pool marked for its Cinder zone (its boots would work) below its
/// target boots nothing while the check fails: it is checked again after
/// each pause, and its plan says so (paused until the next check). Nor does
/// it poll the quota headroom for boots it cannot make. Once the check
/// passes, it boots its deficit.
#[tokio::test(start_paused = true)]
async fn a_marked_pool_below_target_boots_nothing_until_its_check_passes() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    sim.close_volume_zone("az1");
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: volumes: Cinder zone 'az1' is unavailable",
            MarkProof::Recheck,
        )
        .await
        .unwrap();
    // A deficit of 2 (floor raised; not a boot-spec change).
    manager
        .update_pool(&pool(), |s| s.min_ready = 4)
        .await
        .unwrap();
    sim.reset_call_counts();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let st = manager.get_pool(&pool()).await.unwrap();
        let plan = st.sizing.last_plan.expect("a plan");
        assert!(
            matches!(
                plan.reason,
                pool_manager::sizing::PlanReason::Backoff(
                    pool_manager::sizing::Backoff::Paused { .. }
                )
            ) && plan.boots_now == 0,
            "{plan:?}"
        );
    }
    let calls = sim.call_counts();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.health.degraded);
    assert_eq!(calls.get("create_server"), None, "{calls:?}");
    assert_eq!(calls.get("boot_headroom"), None, "{calls:?}");
    sim.reopen_volume_zone("az1");
    wait_ready(&manager, 4).await;
    assert!(!manager.get_pool(&pool()).await.unwrap().health.degraded);
    manager.shutdown().await.unwrap();
}

/// A re-check answered 429 with a Retry-After of 10 minutes: Cinder's
/// pause holds the pool's next check as Nova's holds the headroom poll,
/// rather than the pool's own pause sending it again inside the hold, and
/// the pool's gate shows that hold.
#[tokio::test(start_paused = true)]
async fn rechecks_wait_out_a_retry_after() {
    let sim = sim();
    let throttling = Arc::new(AtomicBool::new(false));
    let rechecks = Arc::new(AtomicU32::new(0));
    let (t, r) = (throttling.clone(), rechecks.clone());
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        if method == "check_volume_zone" {
            r.fetch_add(1, Ordering::SeqCst);
            if t.load(Ordering::SeqCst) {
                return Some(CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(600)),
                    message: "429 Too Many Requests".into(),
                    unavailable: false,
                });
            }
        }
        None
    });
    let manager = started_over(&cloud, temp_store(), 2).await;
    throttling.store(true, Ordering::SeqCst);
    rechecks.store(0, Ordering::SeqCst);
    let mut events = manager.events();
    manager
        .mark_unusable(&pool(), "volumes: az1 unavailable", MarkProof::Recheck)
        .await
        .unwrap();
    // Within the first 429's Retry-After (10 min from the first recheck).
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    let n = rechecks.load(Ordering::SeqCst);
    let st = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        n, 1,
        "rechecks sent inside a 10-min Retry-After; gate {:?}",
        st.sizing.gate
    );
    // What the pool waits for is shown (GetPool, WatchPools, the hold
    // metric): Cinder's pause, not OPEN.
    assert!(
        matches!(
            st.sizing.gate.hold,
            Some(pool_manager::gate::Hold::Throttled {
                service: CloudService::Volume,
                ..
            })
        ),
        "the check's wait shows no hold: {:?}",
        st.sizing.gate
    );
    // The 429 earned the pool no longer pause: once the throttle is over
    // (jitter aside) the check is made again, and passes.
    throttling.store(false, Ordering::SeqCst);
    let recovered = tokio::time::timeout(Duration::from_secs(5 * 60), async {
        loop {
            if let EventKind::Recovered { checked, .. } = events.recv().await.unwrap().kind {
                break checked;
            }
        }
    })
    .await;
    assert_eq!(recovered, Ok(true));
    manager.shutdown().await.unwrap();
}

/// Under the driver's image override a stored pool boots the override,
/// and the start-up check looks only at that: the re-check that ends its
/// mark checks the same, not the pool's own image, which may be long
/// deleted (a mark that would otherwise last until a restart).
#[tokio::test(start_paused = true)]
async fn a_recheck_under_the_image_override_checks_the_image_booted() {
    let sim = sim();
    let store = temp_store();
    let stored = pool_manager::model::PoolSpec {
        image: "mysql-5.7-deleted".into(),
        ..spec(0)
    };
    store
        .put_pool(&pool_manager::model::PoolRecord::new(pool(), stored))
        .await
        .unwrap();
    let cloud = GatedCloud::new(&sim);
    cloud.boot_every_pool_from(Some("mysql-8.0"));
    let manager = manager_over(&cloud, store);
    manager.start().await.unwrap();
    let mut events = manager.events();
    manager
        .mark_unusable(&pool(), "volumes: az1 unavailable", MarkProof::Recheck)
        .await
        .unwrap();
    let recovered = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            if let EventKind::Recovered { checked, .. } = events.recv().await.unwrap().kind {
                break checked;
            }
        }
    })
    .await;
    assert_eq!(
        recovered,
        Ok(true),
        "{:?}",
        manager.get_pool(&pool()).await.unwrap().health
    );
    manager.shutdown().await.unwrap();
}

/// A pool marked for an image the cloud lacks is checked again after each
/// pause, and each re-check asks for the image alone
/// ([`ImageMiss::Alone`]): on OpenStack, naming the images on offer beside
/// it lists Glance's images (paged on a large cloud), for a message the
/// re-check only logs at debug. UpdatePool's check, whose refusal a human
/// reads, still asks for them.
#[tokio::test(start_paused = true)]
async fn a_recheck_of_a_missing_image_asks_for_it_alone() {
    use pool_manager::cloud::ImageMiss;
    let sim = sim();
    let store = temp_store();
    let stored = pool_manager::model::PoolSpec {
        image: "mysql-5.7-deleted".into(),
        ..spec(0)
    };
    store
        .put_pool(&pool_manager::model::PoolRecord::new(pool(), stored))
        .await
        .unwrap();
    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, store);
    manager.start().await.unwrap();
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: image: no image named 'mysql-5.7-deleted'",
            MarkProof::Recheck,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let rechecks = cloud.image_checks();
    assert!(rechecks.len() >= 2, "{rechecks:?}");
    assert!(
        rechecks
            .iter()
            .all(|c| *c == ("mysql-5.7-deleted".to_string(), ImageMiss::Alone)),
        "{rechecks:?}"
    );
    assert!(manager.get_pool(&pool()).await.unwrap().health.degraded);

    manager
        .update_pool(&pool(), |s| s.image = "mysql-9.9".into())
        .await
        .unwrap_err();
    let checks = cloud.image_checks();
    assert!(
        checks.contains(&("mysql-9.9".to_string(), ImageMiss::NameOffered)),
        "{checks:?}"
    );
    manager.shutdown().await.unwrap();
}

/// A degraded pool at its target whose cached quota headroom read 0 polls
/// the headroom again when due, as a pool below its target does: its one
/// boot is a boot too. Only a pool below its target polled, so room freed
/// since was never seen, the boot never made, the pool degraded for good.
#[tokio::test(start_paused = true)]
async fn a_degraded_pool_at_its_target_sees_quota_freed() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        quotas: cloudsim::Quotas {
            max_instances: 3,
            max_volumes: 1000,
            max_ports: cloudsim::Quotas::UNLIMITED,
            max_gigabytes: 1000 * 1000,
            max_gigabytes_per_volume: None,
        },
        ..cloudsim::SimConfig::deterministic()
    });
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), full(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    // A sale: its refill takes the last room the next poll shows.
    manager
        .allocate(request("o1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    wait_ready(&manager, 2).await;
    assert_eq!(sim.servers().len(), 3);
    // The sale ends: one server's room is free again.
    manager.release("o1", Some(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.servers().len(), 2);
    let quota = manager.get_pool(&pool()).await.unwrap().sizing.quota;
    assert_eq!(quota.left, Some(0), "the last poll saw no room: {quota:?}");
    // A mark only a boot ends (a management network's).
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: network: no network named 'mgmt'",
            MarkProof::RecheckAndBoot,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        !status.health.degraded,
        "an hour on a fine cloud with room for a server, still degraded: {:?}, plan {:?}, quota {:?}",
        status.health,
        status.sizing.last_plan,
        status.sizing.quota
    );
    assert_eq!(sim.servers().len(), 2, "the boot's surplus retired");
    manager.shutdown().await.unwrap();
}

/// After a restart (no headroom read yet), a degraded pool at its target
/// in a project whose quota holds exactly its servers polls the headroom
/// before its one boot, and makes none while it reads 0: the pool stays
/// degraded (nothing shows its cloud fixed) but sends no create. It used
/// to send it blind, refused for quota, again after each of the project's
/// quota pauses (every pool's speculative boots held with it), its
/// failures counting up and the alert blaming quota, for good. Room freed
/// (its target lowered) lets the boot go, and its Ready ends the mark.
#[tokio::test(start_paused = true)]
async fn a_restarted_degraded_pool_at_a_full_quota_polls_instead_of_probing_blind() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        quotas: cloudsim::Quotas {
            max_instances: 2,
            max_volumes: 1000,
            max_ports: cloudsim::Quotas::UNLIMITED,
            max_gigabytes: 1000 * 1000,
            max_gigabytes_per_volume: None,
        },
        ..cloudsim::SimConfig::deterministic()
    });
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    manager.create_pool(pool(), full(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    let manager = manager_on(&sim, open_store(dir.path()));
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: network: no network named 'mgmt'",
            MarkProof::RecheckAndBoot,
        )
        .await
        .unwrap();
    manager.start().await.unwrap();
    sim.reset_call_counts();
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let calls = sim.call_counts();
    assert_eq!(
        calls.get("create_server"),
        None,
        "no boot sent into a full quota: {calls:?}"
    );
    assert_eq!(
        status.health.consecutive_boot_failures, 0,
        "{:?}",
        status.health
    );
    assert!(status.health.degraded, "{:?}", status.health);
    assert_eq!(
        status.sizing.last_plan.map(|p| p.reason.as_str()),
        Some("quota"),
        "{:?}",
        status.sizing.last_plan
    );
    assert_eq!(
        status.sizing.quota.left,
        Some(0),
        "{:?}",
        status.sizing.quota
    );
    assert_eq!(
        status.sizing.gate.quota_refusals, 0,
        "{:?}",
        status.sizing.gate
    );

    manager
        .update_pool(&pool(), |s| *s = full(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        !status.health.degraded,
        "room for its boot: {:?}, plan {:?}",
        status.health, status.sizing.last_plan
    );
    assert_eq!(status.health.consecutive_boot_failures, 0);
    manager.shutdown().await.unwrap();
}

/// The log reads cause before effect: each failed boot's WARN, then the
/// verdict it earned, naming the error the operator has to mend (not only
/// its kind).
#[tokio::test(start_paused = true)]
async fn the_degraded_line_follows_the_failure_it_names() {
    let logs = warmpool_test_support::Logs::capture();
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    sim.faults()
        .error_next_boots(u64::from(DEGRADED_AFTER), "NoValidHost");
    manager.create_pool(pool(), spec(1)).await.unwrap();
    until_degraded(&manager).await;
    manager.shutdown().await.unwrap();

    let warnings = logs.warnings();
    let degraded = warnings
        .iter()
        .position(|l| l.contains("pool degraded"))
        .expect("a degraded line");
    let failed_before = warnings[..degraded]
        .iter()
        .filter(|l| l.contains("boot failed"))
        .count();
    assert_eq!(
        failed_before, DEGRADED_AFTER as usize,
        "the third failure is logged before the verdict it caused: {warnings:#?}"
    );
    assert!(
        warnings[degraded].contains("server went to ERROR: NoValidHost"),
        "the verdict names the last error: {}",
        warnings[degraded]
    );
}

/// A degraded pool's boots keep failing, paced by its backoff: one WARN
/// per failed boot, not two (the create's failures are the boot's).
#[tokio::test(start_paused = true)]
async fn a_degraded_pools_failed_boot_is_one_warning() {
    let logs = warmpool_test_support::Logs::capture();
    let sim = sim();
    let cloud = GatedCloud::with_fault(&sim, |method| {
        (method == "create_server").then(|| CloudError::Transient("Nova answered 500".into()))
    });
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    until_degraded(&manager).await;
    // From here on: the boots' events and lines so far are left behind.
    while events.try_recv().is_ok() {}
    let since = logs.text().len();
    let mut failed = 0;
    let watched = tokio::time::timeout(Duration::from_secs(3600), async {
        loop {
            if let EventKind::Boot { outcome, .. } = next_event(&mut events).await.kind {
                assert_ne!(outcome, BootOutcome::Ready);
                failed += 1;
            }
        }
    })
    .await;
    assert!(watched.is_err());
    // Read before the shutdown, which may end a boot under way.
    let text = logs.text();
    manager.shutdown().await.unwrap();
    let warnings: Vec<&str> = text[since..]
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("WARN"))
        .collect();
    // A boot retries its create until boot_timeout, then the pool pauses.
    assert!(failed >= 3, "{failed} boots failed in an hour");
    assert_eq!(
        warnings.len(),
        failed,
        "one warning per failed boot: {warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("boot failed") && l.contains("Nova answered 500")),
        "{warnings:#?}"
    );
}

/// A pool degraded by a failed cloud check, not by boots: once the check
/// passes again its mark waits for a Ready boot, and a boot whose creates
/// Nova keeps failing (500) is warned of early, as a healthy pool's is,
/// and shown as the pool's last error: nothing else says so before
/// boot_timeout, the last error still naming the check mended since.
#[tokio::test(start_paused = true)]
async fn a_pool_a_cloud_check_degraded_warns_of_creates_failing_before_boot_timeout() {
    let logs = warmpool_test_support::Logs::capture();
    let sim = sim();
    let failing = Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(&sim, {
        let failing = failing.clone();
        move |method| {
            (method == "create_server" && failing.load(Ordering::SeqCst))
                .then(|| CloudError::Transient("Nova answered 500".into()))
        }
    });
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    let full = pool_manager::model::PoolSpec {
        min_ready: 1,
        max_ready: 1,
        ..spec(1)
    };
    manager.create_pool(pool(), full).await.unwrap();
    wait_ready(&manager, 1).await;
    failing.store(true, Ordering::SeqCst);
    let since = logs.text().len();
    manager
        .mark_unusable(
            &pool(),
            "start-up cloud check: network: no network named 'mgmt'",
            MarkProof::RecheckAndBoot,
        )
        .await
        .unwrap();
    // The check passes again; the mark waits for a Ready boot.
    let mut passed = None;
    for _ in 0..3600 {
        let health = manager.get_pool(&pool()).await.unwrap().health;
        if health.check_mark.is_some_and(|m| !m.recheck) {
            passed = Some(tokio::time::Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let booting_from = passed.expect("the check passes again within an hour");
    // Well before boot_timeout, when the boot's own failure is warned of.
    let early = booting_from + spec(1).boot_timeout / 2;
    let mut warned = None;
    while tokio::time::Instant::now() < early {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = logs.text();
        warned = text[since..]
            .lines()
            .find(|l| {
                l.split_whitespace().nth(1) == Some("WARN")
                    && l.contains("keeps failing this boot's server create")
                    && l.contains("Nova answered 500")
            })
            .map(str::to_owned);
        if warned.is_some() {
            break;
        }
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    let text = logs.text();
    manager.shutdown().await.unwrap();
    assert!(
        status.health.degraded,
        "still degraded, no boot Ready: {status:?}"
    );
    assert!(
        warned.is_some(),
        "no WARN of the failing creates well before boot_timeout: {}",
        &text[since..]
    );
    assert!(
        status
            .record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Nova answered 500")),
        "the pool's last error: {:?}",
        status.record.last_error
    );
}
