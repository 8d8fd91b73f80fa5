//! Allocate, Release and the pool lifecycle over the in-process cloudsim.

mod common;

use common::*;
use pool_manager::model::{
    Allocation, AllocationState, EmptyPoolPolicy, Instance, InstanceState, PoolKey, VolumeSource,
};
use pool_manager::store::{StoreError, StoreResult};
use pool_manager::ManagerError;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn concurrent_allocates_hand_out_each_instance_once() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 60).await;
    manager
        .update_pool(&pool(), |s| {
            s.paused = true; // keep the pool from refilling, so supply is exactly 60
        })
        .await
        .unwrap();

    let mut calls = Vec::new();
    for i in 0..200 {
        let manager = manager.clone();
        let id = format!("order-{}", i % 50);
        calls.push(tokio::spawn(async move {
            let allocation = manager
                .allocate(request(&id, new_volume(), EmptyPoolPolicy::FailFast))
                .await
                .unwrap();
            (id, allocation)
        }));
    }
    let mut instance_of: HashMap<String, String> = HashMap::new();
    for call in calls {
        let (id, allocation) = call.await.unwrap();
        assert_eq!(allocation.state, AllocationState::Allocated);
        assert!(allocation.warm_hit);
        let instance = allocation.instance_id.unwrap();
        // Every answer for one request id names the same instance.
        assert_eq!(instance_of.entry(id).or_insert(instance.clone()), &instance);
    }
    assert_eq!(instance_of.len(), 50);
    let distinct: HashSet<&String> = instance_of.values().collect();
    assert_eq!(distinct.len(), 50, "an instance went to two requests");

    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Allocated), 50);
    assert_eq!(status.count(InstanceState::Ready), 10);
    assert_eq!(status.record.allocations_warm, 50);
    // Each allocated server carries exactly its own volume and port.
    for instance in manager.list_instances(None).await.unwrap() {
        if instance.state == InstanceState::Allocated {
            let server = sim.server(instance.server_id.as_deref().unwrap()).unwrap();
            assert_eq!(server.server.attached_volumes.len(), 1);
            assert_eq!(server.server.attached_ports.len(), 1);
        }
    }
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn same_request_id_returns_same_allocation_and_other_params_abort() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let manager = started(&sim, open_store(dir.path()), 2).await;
    let first = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::Wait))
        .await
        .unwrap();
    assert!(first.server_id.is_some() && first.volume_id.is_some());
    assert!(first.port_id.is_some() && first.ip_address.is_some());
    let again = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::Wait))
        .await
        .unwrap();
    assert_eq!(again, first);

    let mut other = request("order-1", new_volume(), EmptyPoolPolicy::Wait);
    other.params.tenant_project_id = "tenant-b".into();
    let err = manager.allocate(other.clone()).await.unwrap_err();
    assert!(matches!(err, ManagerError::Aborted(_)), "{err}");
    assert!(
        err.to_string().contains("(tenant_project_id differs)"),
        "{err}"
    );
    let mut two = other.clone();
    two.params.labels.insert("plan".into(), "gold".into());
    let err = manager.allocate(two).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("(tenant_project_id, labels differ)"),
        "{err}"
    );

    // Within the volume and network, the very field is named.
    let mut keep = request("order-1", new_volume(), EmptyPoolPolicy::Wait);
    keep.params.volume.delete_on_release = true;
    let err = manager.allocate(keep).await.unwrap_err();
    assert!(matches!(err, ManagerError::Aborted(_)), "{err}");
    assert!(
        err.to_string()
            .contains("(volume.delete_on_release differs)"),
        "{err}"
    );
    let mut ip = request("order-1", new_volume(), EmptyPoolPolicy::Wait);
    ip.params.network.subnet_id = Some("tenant-subnet".into());
    ip.params.network.fixed_ip = Some("10.0.0.9".into());
    let err = manager.allocate(ip).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("(network.subnet_id, network.fixed_ip differ)"),
        "{err}"
    );

    // After a restart on the same store the answer is the same.
    manager.shutdown().await.unwrap();
    drop(manager);
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    let after_restart = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::Wait))
        .await
        .unwrap();
    assert_eq!(after_restart, first);
    assert!(matches!(
        manager.allocate(other).await.unwrap_err(),
        ManagerError::Aborted(_)
    ));
    assert_eq!(manager.get_allocation("order-1").await.unwrap(), first);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn failed_volume_attach_rolls_back_and_uses_the_next_instance() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 3).await;
    let servers_before: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    sim.faults().fail_next_volume_attach(1);
    let allocation = manager
        .allocate(request("order-v", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    let servers_after: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    let discarded: Vec<_> = servers_before.difference(&servers_after).collect();
    assert_eq!(
        discarded.len(),
        1,
        "the instance with the failed attach is deleted"
    );
    assert_ne!(Some(discarded[0]), allocation.server_id.as_ref());
    // Nothing of the tenant's is left on the discarded server, and one port exists.
    assert_eq!(sim.ports().len(), 1);
    assert_eq!(sim.volumes().len(), 1);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn failed_port_attach_rolls_back_and_uses_the_next_instance() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 3).await;
    sim.faults().fail_next_port_attach(1);
    let allocation = manager
        .allocate(request("order-p", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Allocated), 1);
    let ports = sim.ports();
    assert_eq!(
        ports.len(),
        1,
        "the port of the failed try was deleted: {ports:?}"
    );
    assert_eq!(ports[0].device_id, allocation.server_id);
    let volume = sim.volumes().pop().unwrap();
    assert_eq!(
        volume.attached_to,
        vec![allocation.server_id.clone().unwrap()]
    );
    assert_consistent(&sim, &manager).await;
}

/// An Allocate that finds its pool empty is counted once, whatever the
/// policy: a waiting one is not counted again each time some other write
/// wakes it, and a cold-booted one is counted too.
#[tokio::test(start_paused = true)]
async fn an_allocate_finding_the_pool_empty_is_counted_once() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let mut events = manager.events();
    let exhausted = |events: &mut tokio::sync::broadcast::Receiver<pool_manager::events::Event>| {
        let mut n = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(event.kind, EventKind::Exhausted) {
                assert_eq!(event.pool, Some(pool()));
                n += 1;
            }
        }
        n
    };

    // Another pool fills meanwhile: its writes wake the waiting Allocate.
    manager
        .create_pool(PoolKey::new("db.large", "az1"), spec(3))
        .await
        .unwrap();
    let mut waiting = request("w", new_volume(), EmptyPoolPolicy::Wait);
    waiting.timeout = Some(Duration::from_secs(90));
    let err = manager.allocate(waiting).await.unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert_eq!(exhausted(&mut events), 1);

    manager
        .allocate(request("c", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    assert_eq!(exhausted(&mut events), 1);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn empty_pool_honours_fail_fast_wait_and_cold_boot() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;

    let err = manager
        .allocate(request("ff", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert!(
        manager.get_allocation("ff").await.is_err(),
        "a failed Allocate leaves no record"
    );

    let mut short = request("w1", new_volume(), EmptyPoolPolicy::Wait);
    short.timeout = Some(Duration::from_secs(10));
    let err = manager.allocate(short).await.unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert!(
        sim.volumes().is_empty(),
        "the volume created for it was deleted"
    );

    // A waiting Allocate gets the instance that a raised target boots: it
    // waited for it, so no warm hit.
    let waiter = {
        let manager = manager.clone();
        let mut req = request("w2", new_volume(), EmptyPoolPolicy::Wait);
        req.timeout = Some(Duration::from_secs(600));
        tokio::spawn(async move { manager.allocate(req).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    let waited = waiter.await.unwrap().unwrap();
    assert!(!waited.warm_hit);
    assert!(waited.timings.wait > Duration::from_secs(30));

    // Empty the pool again: no target, and whatever was booted meanwhile handed out.
    manager
        .update_pool(&pool(), |s| s.min_ready = 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    for i in 0.. {
        let drain = request(
            &format!("drain-{i}"),
            new_volume(),
            EmptyPoolPolicy::FailFast,
        );
        if manager.allocate(drain).await.is_err() {
            break;
        }
    }
    let cold = manager
        .allocate(request("cold", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    assert!(!cold.warm_hit);
    assert_eq!(cold.state, AllocationState::Allocated);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.allocations_cold, 1);
    assert_eq!(status.record.allocations_waited, 1);
    assert_consistent(&sim, &manager).await;
}

/// A WAIT purchase that finds its pool empty and gets the instance the
/// pool boots meanwhile waited for it: no warm hit (the hit rate is the
/// share of purchases that found an instance Ready), but a purchase of its
/// own kind in the pool record, beside the warm one before it that found
/// the pool's only instance Ready.
#[tokio::test(start_paused = true)]
async fn a_purchase_that_waited_for_an_instance_is_no_warm_hit() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let mut one = spec(1);
    one.max_ready = 1;
    manager.create_pool(pool(), one).await.unwrap();
    wait_ready(&manager, 1).await;
    let order = |id: &str| {
        let mut order = request(id, new_volume(), EmptyPoolPolicy::Wait);
        order.timeout = Some(Duration::from_secs(600));
        order
    };

    let first = manager.allocate(order("first")).await.unwrap();
    assert!(first.warm_hit, "{first:?}");
    let second = manager.allocate(order("second")).await.unwrap();
    assert_eq!(second.state, AllocationState::Allocated);
    assert!(!second.warm_hit, "{second:?}");
    assert_ne!(second.instance_id, first.instance_id);

    let record = manager.get_pool(&pool()).await.unwrap().record;
    assert_eq!(
        (
            record.allocations_warm,
            record.allocations_waited,
            record.allocations_cold,
            record.allocations_exhausted,
            record.allocations_failed
        ),
        (1, 1, 0, 0, 0),
        "{record:?}"
    );
    assert_eq!(manager.get_allocation("second").await.unwrap(), second);
    assert_consistent(&sim, &manager).await;
}

/// A paused pool boots nothing, a purchase's cold boot included: a
/// COLD_BOOT purchase that finds no Ready instance is answered as a
/// FAIL_FAST one is, before anything is made for it, and the same order
/// boots once the pool is unpaused. A WAIT purchase waits on, and gets
/// the instance the unpaused pool boots before its timeout (no warm hit:
/// it waited for it).
#[tokio::test(start_paused = true)]
async fn a_paused_pool_cold_boots_nothing() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let pause = |paused| {
        let manager = manager.clone();
        async move {
            manager
                .update_pool(&pool(), move |s| s.paused = paused)
                .await
                .unwrap()
        }
    };
    pause(true).await;
    let fail_fast = manager
        .allocate(request("ff", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    let cold = manager
        .allocate(request("cold", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap_err();
    assert!(
        matches!(&cold, ManagerError::ResourceExhausted(m)
            if m.ends_with("(the pool is paused: it boots nothing until it is unpaused); ask again once it is unpaused")),
        "{cold:?}"
    );
    assert_eq!(cold.to_string(), fail_fast.to_string());
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(sim.volumes().is_empty() && sim.ports().is_empty());
    assert!(manager.get_allocation("cold").await.is_err());

    pause(false).await;
    let cold = manager
        .allocate(request("cold", new_volume(), EmptyPoolPolicy::ColdBoot))
        .await
        .unwrap();
    assert!(!cold.warm_hit);
    assert_eq!(cold.state, AllocationState::Allocated);

    // Raised while paused, the target boots nothing until the unpause.
    pause(true).await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    let mut order = request("w", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let waiter = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiter.is_finished());
    assert_eq!(sim.servers().len(), 1, "the paused pool booted");
    pause(false).await;
    let waited = waiter.await.unwrap().unwrap();
    assert!(!waited.warm_hit);
    assert_consistent(&sim, &manager).await;
}

/// A cold boot already asked for when its pool is paused goes on: the
/// purchase gets it, and so does a retry of the order meanwhile (which
/// waits for the first call's answer).
#[tokio::test(start_paused = true)]
async fn a_cold_boot_under_way_when_its_pool_is_paused_finishes() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    let create = cloud.hold_next("create_server", At::Before);
    let order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    let buyer = spawn_allocate(&manager, order.clone());
    create.reached().await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let retry = spawn_allocate(&manager, order);
    tokio::task::yield_now().await;
    create.release();
    let bought = buyer.await.unwrap().unwrap();
    assert!(!bought.warm_hit);
    assert_eq!(retry.await.unwrap().unwrap(), bought);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_pool_and_malformed_requests_are_refused_without_change() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let calls_before = sim.total_calls();

    let mut unknown = request("u", new_volume(), EmptyPoolPolicy::FailFast);
    unknown.params.pool = PoolKey::new("db.huge", "az1");
    assert!(matches!(
        manager.allocate(unknown).await.unwrap_err(),
        ManagerError::PoolNotFound(_)
    ));

    type Breakage = Box<dyn Fn(&mut pool_manager::AllocateRequest)>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("request_id", Box::new(|r| r.params.request_id.clear())),
        (
            "request_id",
            Box::new(|r| r.params.request_id = "x".repeat(200)),
        ),
        (
            "request_id",
            Box::new(|r| r.params.request_id = "a b".into()),
        ),
        (
            "tenant_project_id",
            Box::new(|r| r.params.tenant_project_id.clear()),
        ),
        ("flavor", Box::new(|r| r.params.pool.flavor.clear())),
        (
            "availability_zone",
            Box::new(|r| r.params.pool.availability_zone.clear()),
        ),
        (
            "network.network_id",
            Box::new(|r| r.params.network.network_id.clear()),
        ),
        (
            "volume.new_volume.size_gib",
            Box::new(|r| {
                r.params.volume.source = VolumeSource::New {
                    size_gib: 0,
                    volume_type: None,
                }
            }),
        ),
        (
            "volume.existing_volume_id",
            Box::new(|r| {
                r.params.volume.source = VolumeSource::Existing {
                    volume_id: String::new(),
                }
            }),
        ),
        (
            "network.fixed_ip",
            Box::new(|r| r.params.network.fixed_ip = Some("10.0.0.5".into())),
        ),
        (
            "network.fixed_ip",
            Box::new(|r| {
                r.params.network.subnet_id = Some("s".into());
                r.params.network.fixed_ip = Some("not-an-ip".into());
            }),
        ),
    ];
    for (field, break_it) in cases {
        let mut req = request("bad", new_volume(), EmptyPoolPolicy::FailFast);
        break_it(&mut req);
        match manager.allocate(req).await.unwrap_err() {
            ManagerError::InvalidArgument { field: named, .. } => assert_eq!(named, field),
            other => panic!("{field}: expected InvalidArgument, got {other}"),
        }
    }
    // An optional field given blank is refused as blank: "is required"
    // would send the caller to fill in a field it may leave out.
    type Blank = Box<dyn Fn(&mut pool_manager::AllocateRequest)>;
    let blanks: Vec<(&str, Blank)> = vec![
        (
            "network.subnet_id",
            Box::new(|r| r.params.network.subnet_id = Some(" ".into())),
        ),
        (
            "volume.new_volume.volume_type",
            Box::new(|r| {
                r.params.volume.source = VolumeSource::New {
                    size_gib: 1,
                    volume_type: Some("\t".into()),
                }
            }),
        ),
    ];
    for (field, blank_it) in blanks {
        let mut req = request("bad", new_volume(), EmptyPoolPolicy::FailFast);
        blank_it(&mut req);
        match manager.allocate(req).await.unwrap_err() {
            ManagerError::InvalidArgument {
                field: named,
                message,
            } => {
                assert_eq!(named, field);
                assert!(
                    message.contains("blank") && message.contains("leave it"),
                    "{field}: {message}"
                );
            }
            other => panic!("{field}: expected InvalidArgument, got {other}"),
        }
    }
    assert_eq!(
        sim.total_calls(),
        calls_before,
        "bad requests reached the cloud"
    );
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .count(InstanceState::Ready),
        1
    );
    assert_consistent(&sim, &manager).await;
}

/// A label refused names its key and what is wrong with it, so the
/// caller knows which of its labels to mend.
#[tokio::test(start_paused = true)]
async fn a_refused_label_is_named_by_its_key() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let long_key = "k".repeat(129);
    let cases: [(&str, String, &str); 4] = [
        ("", "x".into(), "empty"),
        (&long_key, "x".into(), "129 bytes"),
        ("plan", "v".repeat(1025), "1025 bytes"),
        ("plan", "gold\n".into(), "control"),
    ];
    for (key, value, says) in cases {
        let mut req = request("labelled", new_volume(), EmptyPoolPolicy::FailFast);
        req.params.labels.insert(key.to_owned(), value);
        match manager.allocate(req).await.unwrap_err() {
            ManagerError::InvalidArgument { field, message } => {
                assert_eq!(field, "labels");
                // An over-long key is quoted in part (status messages are
                // bounded); the others whole.
                let head: String = key.chars().take(64).collect();
                assert!(message.contains(&format!("{head:?}")), "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_consistent(&sim, &manager).await;
}

/// An invisible character in a name (a zero-width space, a byte-order
/// mark: Unicode's format characters) makes one that looks like another:
/// a flavor so sent was answered "no pool db.small@az1" with the space
/// unseen in it, and a tenant so sent tagged a volume with it. Both are
/// refused as invalid, the value quoted with the character escaped; an
/// unknown pool's NOT_FOUND quotes the name too.
#[tokio::test(start_paused = true)]
async fn invisible_characters_in_names_are_refused_quoted() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let calls_before = sim.total_calls();

    let mut flavor = request("zw", new_volume(), EmptyPoolPolicy::FailFast);
    flavor.params.pool = PoolKey::new("db.small\u{200B}", "az1");
    match manager.allocate(flavor).await.unwrap_err() {
        ManagerError::InvalidArgument { field, message } => {
            assert_eq!(field, "flavor");
            assert!(message.contains(r#""db.small\u{200b}""#), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let mut tenant = request("bom", new_volume(), EmptyPoolPolicy::FailFast);
    tenant.params.tenant_project_id = "\u{FEFF}tenant-a".into();
    match manager.allocate(tenant).await.unwrap_err() {
        ManagerError::InvalidArgument { field, message } => {
            assert_eq!(field, "tenant_project_id");
            assert!(message.contains(r#""\u{feff}tenant-a""#), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(
        sim.total_calls(),
        calls_before,
        "refused names reached the cloud"
    );
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());

    let mut unknown = request("u", new_volume(), EmptyPoolPolicy::FailFast);
    unknown.params.pool = PoolKey::new("db.huge", "az1");
    let err = manager.allocate(unknown).await.unwrap_err();
    assert!(matches!(err, ManagerError::PoolNotFound(_)), "{err:?}");
    assert!(err.to_string().contains(r#""db.huge@az1""#), "{err}");
    assert_consistent(&sim, &manager).await;
}

/// A volume that is not attachable only for a moment (still attached to a
/// server being deleted, as after a failed try of the same order; still
/// being created or detached) is a call to ask again (UNAVAILABLE), not
/// the caller's to change (FAILED_PRECONDITION): billing may take the
/// latter as final and drop a valid order. Asked again once the server is
/// gone, the purchase gets the volume.
#[tokio::test(start_paused = true)]
async fn a_volume_held_by_a_server_being_deleted_is_asked_again() {
    use pool_manager::cloud::{Cloud, ServerSpec};
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let holder = sim
        .create_server(&ServerSpec {
            name: "tenant-a-db".into(),
            pool: pool(),
            image: "mysql-8.0".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    sim.attach_volume(&holder.id, &volume).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    sim.delete_server(&holder.id).await.unwrap();

    let order = || {
        let volume = VolumeSource::Existing {
            volume_id: volume.clone(),
        };
        request("order-held", volume, EmptyPoolPolicy::FailFast)
    };
    let err = manager.allocate(order()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains(&holder.id) && m.contains("ask again")),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let allocation = manager.allocate(order()).await.unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);

    // A volume Cinder is still creating: the same.
    let creating = sim
        .create_volume(&pool_manager::cloud::NewVolumeSpec {
            name: "tenant-a-data".into(),
            size_gib: 10,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    let volume = VolumeSource::Existing {
        volume_id: creating.id.clone(),
    };
    let early = request("order-early", volume, EmptyPoolPolicy::FailFast);
    let err = manager.allocate(early).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("still being created")),
        "{err}"
    );
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_volume_in_use_is_never_attached() {
    // Nova's `[cinder] cross_az_attach = False`, for the volume of another
    // zone below (by default Nova attaches it).
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        cross_az_attach: false,
        ..sim().config()
    });
    let manager = started(&sim, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let holder = sim.attach_volume_elsewhere(&volume).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;

    let req = request(
        "order-iu",
        VolumeSource::Existing {
            volume_id: volume.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    let err = manager.allocate(req).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m == &format!("volume {volume} is attached to a server; a volume is never attached while in use (detach it first)")),
        "{err}"
    );
    let after = sim.volumes().into_iter().find(|v| v.id == volume).unwrap();
    assert_eq!(after.attached_to, vec![holder]);
    assert!(manager.get_allocation("order-iu").await.is_err());
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .count(InstanceState::Ready),
        2
    );

    let elsewhere = sim.create_volume_for_test("tenant-a", "az2", 10);
    let req = request(
        "order-az",
        VolumeSource::Existing {
            volume_id: elsewhere,
        },
        EmptyPoolPolicy::FailFast,
    );
    let err = manager.allocate(req).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(_)),
        "{err:?}"
    );

    // An available volume in the right AZ is attached.
    let free = sim.create_volume_for_test("tenant-a", "az1", 10);
    let req = request(
        "order-ok",
        VolumeSource::Existing {
            volume_id: free.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    let allocation = manager.allocate(req).await.unwrap();
    assert_eq!(allocation.volume_id, Some(free));
    assert!(!allocation.volume_created);
    assert_consistent(&sim, &manager).await;
}

/// Every volume warmpool makes lives in warmpool's own project, whatever
/// the order's tenant: only the tag it carries tells whose it is. An order
/// naming another tenant's volume (one wrong id from billing) is refused
/// before anything is done for it: no claim, no port, no attach; and a
/// later Release deleting "its" volume cannot delete the other tenant's.
/// The tenant's own later order gets it.
#[tokio::test(start_paused = true)]
async fn a_volume_made_for_one_tenant_is_refused_to_another() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let mut made = request("order-b", new_volume(), EmptyPoolPolicy::FailFast);
    made.params.tenant_project_id = "tenant-b".into();
    let volume = manager.allocate(made).await.unwrap().volume_id.unwrap();
    manager.release("order-b", Some(false)).await.unwrap();
    wait_ready(&manager, 2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let existing = || VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let calls = sim.call_counts();
    let err = manager
        .allocate(request("order-a", existing(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("tenant-b") && m.contains("tenant-a")),
        "{err}"
    );
    let after = sim.call_counts();
    for call in [
        "create_port",
        "attach_volume",
        "attach_port",
        "create_volume",
    ] {
        assert_eq!(after.get(call), calls.get(call), "{call}");
    }
    assert!(manager.get_allocation("order-a").await.is_err());
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_eq!(status.count(InstanceState::Claimed), 0, "{status:?}");
    let kept = sim.volumes().into_iter().find(|v| v.id == volume).unwrap();
    assert!(kept.attached_to.is_empty(), "{kept:?}");

    let mut own = request("order-b2", existing(), EmptyPoolPolicy::FailFast);
    own.params.tenant_project_id = "tenant-b".into();
    let allocation = manager.allocate(own).await.unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_eq!(allocation.volume_id.as_deref(), Some(volume.as_str()));
    assert_consistent(&sim, &manager).await;
}

/// Where the cloud shows whose a volume is (Cinder's
/// `os-vol-tenant-attr:tenant_id`, to an admin), one of a project that is
/// neither the order's tenant nor warmpool's own is refused; the tenant's
/// own is attached.
#[tokio::test(start_paused = true)]
async fn a_volume_of_another_project_is_refused() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let theirs = sim.create_volume_for_test("tenant-c", "az1", 10);
    let order = request(
        "order-c",
        VolumeSource::Existing {
            volume_id: theirs.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&theirs) && m.contains("tenant-c") && m.contains("tenant-a")),
        "{err}"
    );
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .count(InstanceState::Ready),
        2
    );

    let mine = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = request(
        "order-mine",
        VolumeSource::Existing { volume_id: mine },
        EmptyPoolPolicy::FailFast,
    );
    assert_eq!(
        manager.allocate(order).await.unwrap().state,
        AllocationState::Allocated
    );
    assert_consistent(&sim, &manager).await;
}

/// A cloud whose networks are: `net-a` and `net-b`, tenant-a's and
/// tenant-b's own; `provider-net`, the admin's, shared with every project;
/// `net-c`, tenant-c's, shared (Neutron RBAC) with tenant-a; and `net-d`,
/// tenant-d's, shared with warmpool's project alone, as a deployment may
/// share a tenant's network so that a member user can make its port (which
/// Neutron then shows warmpool `shared: true`).
fn sim_with_tenant_networks() -> Arc<cloudsim::SimCloud> {
    use cloudsim::SimNetwork;
    use pool_manager::cloud::NetworkShare;
    let network = |id: &str, third_octet: u8| {
        let cidr = format!("10.{third_octet}.0.0/16").parse().unwrap();
        SimNetwork::new(id, format!("{id}-subnet"), cidr)
    };
    cloudsim::SimCloud::new(cloudsim::SimConfig {
        networks: vec![
            network("net-a", 1).of_project("tenant-a"),
            network("net-b", 2).of_project("tenant-b"),
            network("provider-net", 3)
                .of_project("admin")
                .shared_with(NetworkShare::EveryProject),
            network("net-c", 4)
                .of_project("tenant-c")
                .shared_with(NetworkShare::Project("tenant-a".into())),
            network("net-d", 5)
                .of_project("tenant-d")
                .shared_with(NetworkShare::Warmpool),
        ],
        ..sim().config()
    })
}

/// A deployment may sell into the project warmpool works in: an order
/// whose tenant is warmpool's own project takes that project's networks and
/// those shared with it alone, which stay refused to every other tenant.
#[tokio::test(start_paused = true)]
async fn an_order_of_warmpools_own_project_takes_its_networks() {
    let sim = sim_with_tenant_networks();
    let cloud = on_a_project(&sim);
    let manager = started_over(&cloud, temp_store(), 4).await;
    let own_project = match a_project() {
        pool_manager::cloud::CloudIdentity::OpenStack { project_id, .. } => project_id,
        other => panic!("{other:?}"),
    };
    let on = |id: &str, tenant: &str, network: &str| {
        let mut order = request(id, new_volume(), EmptyPoolPolicy::FailFast);
        order.params.tenant_project_id = tenant.into();
        order.params.network.network_id = network.into();
        order
    };
    // net-d is shared with warmpool's project alone.
    let err = manager
        .allocate(on("order-a", "tenant-a", "net-d"))
        .await
        .unwrap_err();
    assert!(matches!(&err, ManagerError::FailedPrecondition(_)), "{err}");
    let allocation = manager
        .allocate(on("order-own", &own_project, "net-d"))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_consistent(&sim, &manager).await;
}

/// The tenant's port is made in warmpool's project, so Neutron (to an
/// admin user) takes it on any project's network. An order naming another
/// tenant's network (one wrong id from billing) is refused before anything
/// is done for it: no record, no port, no claim; and so is one naming a
/// network shared with warmpool's project alone, which Neutron shows
/// warmpool as `shared`. The tenant's own network, one shared with every
/// project, and one shared with the tenant are taken.
#[tokio::test(start_paused = true)]
async fn a_network_the_tenant_may_not_use_is_refused_before_anything_is_made() {
    let sim = sim_with_tenant_networks();
    let manager = started(&sim, temp_store(), 4).await;
    let on = |id: &str, tenant: &str, network: &str| {
        let mut order = request(id, new_volume(), EmptyPoolPolicy::FailFast);
        order.params.tenant_project_id = tenant.into();
        order.params.network.network_id = network.into();
        order
    };

    for (order, network, says) in [
        ("order-b", "net-b", "project tenant-b"),
        ("order-d", "net-d", "(only with warmpool's project)"),
    ] {
        let calls = sim.call_counts();
        let err = manager
            .allocate(on(order, "tenant-a", network))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagerError::FailedPrecondition(m)
                if m.contains(network) && m.contains(says) && m.contains("tenant-a")
                    && m.contains("access_as_shared")),
            "{err}"
        );
        let after = sim.call_counts();
        for call in [
            "create_port",
            "create_volume",
            "attach_volume",
            "attach_port",
        ] {
            assert_eq!(after.get(call), calls.get(call), "{order}: {call}");
        }
        assert!(
            matches!(
                manager.get_allocation(order).await,
                Err(ManagerError::AllocationNotFound(_))
            ),
            "{order} was recorded"
        );
    }
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 4, "{status:?}");
    assert_eq!(status.count(InstanceState::Claimed), 0, "{status:?}");

    for (order, tenant, network) in [
        ("order-own", "tenant-a", "net-a"),
        ("order-provider", "tenant-a", "provider-net"),
        ("order-rbac", "tenant-a", "net-c"),
        ("order-b-own", "tenant-b", "net-b"),
    ] {
        let allocation = manager.allocate(on(order, tenant, network)).await.unwrap();
        assert_eq!(allocation.state, AllocationState::Allocated, "{order}");
        let port = allocation.port_id.unwrap();
        let port = sim.ports().into_iter().find(|p| p.id == port).unwrap();
        assert_eq!(port.network_id, network, "{order}");
    }
    assert_consistent(&sim, &manager).await;
}

/// A volume of warmpool's project that came without a tag (made there by
/// an operator, or kept by a warmpool from before the tag) is the tenant's
/// once an order of that tenant is served it: tagged before the answer, it
/// is refused to another tenant's order after a release kept it (with the
/// first tenant's data on it), before anything is done for that order.
/// The tenant's own next order gets it, writing no tag again; a volume in
/// the tenant's own project (its owner tells) is not tagged.
#[tokio::test(start_paused = true)]
async fn an_untagged_volume_served_to_one_tenant_is_refused_to_another() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let volume = sim.create_own_volume_for_test("az1", 10);
    let existing = || VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let tag_of = |id: &str| {
        let found = sim.volumes().into_iter().find(|v| v.id == id);
        found.and_then(|v| v.tagged_tenant().map(str::to_owned))
    };
    let a = request("order-a", existing(), EmptyPoolPolicy::FailFast);
    manager.allocate(a).await.unwrap();
    assert_eq!(tag_of(&volume).as_deref(), Some("tenant-a"));
    manager.release("order-a", Some(false)).await.unwrap();
    wait_ready(&manager, 2).await;

    let calls = sim.call_counts();
    let mut b = request("order-b", existing(), EmptyPoolPolicy::FailFast);
    b.params.tenant_project_id = "tenant-b".into();
    let err = manager.allocate(b).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("tenant-a") && m.contains("tenant-b")),
        "{err}"
    );
    let after = sim.call_counts();
    for call in [
        "create_port",
        "attach_volume",
        "attach_port",
        "set_volume_metadata",
    ] {
        assert_eq!(after.get(call), calls.get(call), "{call}");
    }
    assert!(manager.get_allocation("order-b").await.is_err());
    assert_eq!(tag_of(&volume).as_deref(), Some("tenant-a"));

    let again = request("order-a2", existing(), EmptyPoolPolicy::FailFast);
    let allocation = manager.allocate(again).await.unwrap();
    assert_eq!(allocation.volume_id.as_deref(), Some(volume.as_str()));
    assert_eq!(
        sim.call_counts().get("set_volume_metadata"),
        calls.get("set_volume_metadata"),
        "a tag written again"
    );
    manager.release("order-a2", Some(false)).await.unwrap();

    wait_ready(&manager, 2).await;
    let own = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = request(
        "order-own",
        VolumeSource::Existing {
            volume_id: own.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    manager.allocate(order).await.unwrap();
    assert_eq!(tag_of(&own), None);
    assert_consistent(&sim, &manager).await;
}

/// A volume tagged with its tenant's id in upper case (by a warmpool from
/// before ids were made canonical, or by hand) is that tenant's: its order,
/// whose id is taken in lower case, is served it, as the cloud finds ids
/// in any case.
#[tokio::test(start_paused = true)]
async fn a_volume_tagged_with_the_tenants_id_in_upper_case_is_the_tenants() {
    use pool_manager::cloud::{Cloud, META_TENANT};
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let tenant = "5F8C0A1B2C3D4E5F8A9B0C1D2E3F4A5B";
    let volume_id = sim.create_own_volume_for_test("az1", 20);
    let tag = std::collections::BTreeMap::from([(META_TENANT.to_string(), tenant.to_string())]);
    sim.set_volume_metadata(&volume_id, &tag).await.unwrap();
    let mut order = request(
        "o-tag",
        VolumeSource::Existing {
            volume_id: volume_id.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    order.params.tenant_project_id = tenant.into();
    let served = manager.allocate(order).await.unwrap();
    assert_eq!(served.state, AllocationState::Allocated);
    assert_eq!(served.volume_id.as_deref(), Some(volume_id.as_str()));
    assert_consistent(&sim, &manager).await;
}

/// A tag is written only for an order that is served. One whose try fails
/// once the volume is attached (here Nova refuses the port's attach, the
/// request's fault) is rolled back and leaves an untagged volume of
/// warmpool's project untagged, as it came: an order naming another
/// tenant's volume by mistake does not make it the first tenant's. It
/// stayed tagged for the failed order's tenant, and its own tenant's
/// orders were refused it.
#[tokio::test(start_paused = true)]
async fn a_failed_order_leaves_an_untagged_volume_untagged() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let volume = sim.create_own_volume_for_test("az1", 10);
    let existing = || VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let tag_of = |id: &str| {
        let found = sim.volumes().into_iter().find(|v| v.id == id);
        found.and_then(|v| v.tagged_tenant().map(str::to_owned))
    };
    sim.faults().fail_next_calls_of(
        "attach_port",
        1,
        pool_manager::cloud::CloudError::Fatal("Nova refuses the port's attach (test)".into()),
    );
    let a = request("order-a", existing(), EmptyPoolPolicy::FailFast);
    let err = manager.allocate(a).await.unwrap_err();
    assert!(err.to_string().contains("(test)"), "{err}");
    assert_eq!(sim.call_counts().get("attach_volume"), Some(&1));
    assert!(manager.get_allocation("order-a").await.is_err());
    assert_eq!(tag_of(&volume), None, "tagged by an order rolled back");

    wait_ready(&manager, 2).await;
    let mut b = request("order-b", existing(), EmptyPoolPolicy::FailFast);
    b.params.tenant_project_id = "tenant-b".into();
    let allocation = manager.allocate(b).await.unwrap();
    assert_eq!(allocation.volume_id.as_deref(), Some(volume.as_str()));
    assert_eq!(tag_of(&volume).as_deref(), Some("tenant-b"));
    assert_consistent(&sim, &manager).await;
}

/// Two orders of different tenants naming one untagged volume may both
/// pass the check before either attaches, and Cinder's metadata has no
/// compare-and-swap: the tag is written by the try that holds the volume.
/// An order whose check passed while another tenant's order was served the
/// volume (tagged, then released keeping it) finds that tag once its own
/// attach is done: it is refused and rolled back, its server (which held
/// the other tenant's data) discarded, and the tag stays the first one's.
#[tokio::test(start_paused = true)]
async fn an_untagged_volume_served_to_another_tenant_meanwhile_is_refused_once_attached() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    let volume = sim.create_own_volume_for_test("az1", 10);
    let existing = || VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let attach = cloud.hold_next("attach_volume", At::Before);
    let mut late = request("order-b", existing(), EmptyPoolPolicy::FailFast);
    late.params.tenant_project_id = "tenant-b".into();
    let buying = spawn_allocate(&manager, late);
    attach.reached().await;
    let held = manager
        .get_allocation("order-b")
        .await
        .unwrap()
        .server_id
        .unwrap();

    let first = request("order-a", existing(), EmptyPoolPolicy::FailFast);
    manager.allocate(first).await.unwrap();
    manager.release("order-a", Some(false)).await.unwrap();
    let kept = || sim.volumes().into_iter().find(|v| v.id == volume).unwrap();
    for _ in 0..600 {
        if kept().status == pool_manager::cloud::VolumeStatus::Available {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(kept().tagged_tenant(), Some("tenant-a"));
    attach.release();

    let err = buying.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("tenant-a") && m.contains("tenant-b")
                && m.contains("once attached")),
        "{err}"
    );
    assert!(manager.get_allocation("order-b").await.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(kept().tagged_tenant(), Some("tenant-a"));
    assert!(kept().attached_to.is_empty(), "{:?}", kept());
    assert!(
        sim.server(&held).is_none(),
        "the touched instance is discarded"
    );
    assert_consistent(&sim, &manager).await;
}

/// Billing may send the tenant's volume id in upper case: Cinder (on
/// MySQL) finds it in any case, but Nova lists the attachment under
/// Cinder's lower-case id. The id is taken in its canonical, lower-case
/// form, so the attachment is verified on the first instance tried, and
/// the same order sent in either case is the same order.
#[tokio::test(start_paused = true)]
async fn a_volume_id_in_upper_case_is_attached_and_verified() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    cloud.find_volumes_in_any_case();
    let manager = started_over(&cloud, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let servers_before: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    let order = |id: &str| {
        let existing = VolumeSource::Existing {
            volume_id: id.to_owned(),
        };
        request("order-upper", existing, EmptyPoolPolicy::FailFast)
    };

    let allocation = manager
        .allocate(order(&volume.to_ascii_uppercase()))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_eq!(allocation.volume_id.as_deref(), Some(volume.as_str()));
    assert_eq!(
        allocation.params.volume.source,
        VolumeSource::Existing {
            volume_id: volume.clone()
        }
    );
    let servers_after: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert!(
        servers_before.is_subset(&servers_after),
        "a warm instance was discarded: {:?}",
        servers_before
            .difference(&servers_after)
            .collect::<Vec<_>>()
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.allocations_failed, 0, "{status:?}");
    // The same order in the other case is answered as the same order.
    let again = manager.allocate(order(&volume)).await.unwrap();
    assert_eq!(again, allocation);
    assert_consistent(&sim, &manager).await;
}

/// A tenant's volume Cinder failed is refused as failed, not as in use.
#[tokio::test(start_paused = true)]
async fn a_volume_in_error_is_refused_for_what_it_is() {
    use pool_manager::cloud::{Cloud, NewVolumeSpec, VolumeStatus};
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    sim.faults().error_next_volumes(1);
    let broken = sim
        .create_volume(&NewVolumeSpec {
            name: "tenant-volume".into(),
            size_gib: 10,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        sim.get_volume(&broken.id).await.unwrap().status,
        VolumeStatus::Error
    );
    let req = request(
        "order-err",
        VolumeSource::Existing {
            volume_id: broken.id.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    let err = manager.allocate(req).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m == &format!("volume {} is in error: Cinder failed it, and it cannot be attached (restore it or use another)", broken.id)),
        "{err}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1);
    assert_consistent(&sim, &manager).await;
}

/// A multiattach volume is refused before anything is done, however
/// `available` it is: Cinder lets such a volume be attached to two servers
/// at once, so two orders naming it could both pass the fence and both
/// attach it (two mysqlds writing one data directory), where Cinder itself
/// refuses a single-attach volume's second attach.
#[tokio::test(start_paused = true)]
async fn a_multiattach_volume_is_refused_and_never_attached() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let volume = sim.create_multiattach_volume_for_test("tenant-a", "az1", 10, "shared-ssd");
    let order = |id: &str| {
        let existing = VolumeSource::Existing {
            volume_id: volume.clone(),
        };
        request(id, existing, EmptyPoolPolicy::FailFast)
    };
    // Two orders at once, as in the race the fence is to stop.
    let (first, second) = tokio::join!(
        manager.allocate(order("order-ma-1")),
        manager.allocate(order("order-ma-2"))
    );
    for (id, answer) in [("order-ma-1", first), ("order-ma-2", second)] {
        let err = answer.unwrap_err();
        assert!(
            matches!(&err, ManagerError::FailedPrecondition(m) if m.starts_with(&format!("volume {volume} is multiattach (type shared-ssd)")) && m.contains("retype")),
            "{err}"
        );
        assert!(manager.get_allocation(id).await.is_err());
    }
    let after = sim.volumes().into_iter().find(|v| v.id == volume).unwrap();
    assert_eq!(after.status, pool_manager::cloud::VolumeStatus::Available);
    assert!(after.attached_to.is_empty());
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .count(InstanceState::Ready),
        2
    );
    assert_consistent(&sim, &manager).await;
}

/// Defence in depth: a volume attached to another server besides the
/// purchase's once its attach is done (retyped to a multiattach type after
/// the fence, and attached by someone else meanwhile) fails the purchase,
/// which is rolled back: the volume is detached from the purchase's server
/// only, and the tenant's volume is left where it was, never deleted.
#[tokio::test(start_paused = true)]
async fn a_volume_attached_to_another_server_too_fails_the_purchase() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let attach = cloud.hold_next("attach_volume", At::Before);
    let existing = VolumeSource::Existing {
        volume_id: volume.clone(),
    };
    let buying = spawn_allocate(
        &manager,
        request("order-shared", existing, EmptyPoolPolicy::FailFast),
    );
    attach.reached().await;
    let ours = manager
        .get_allocation("order-shared")
        .await
        .unwrap()
        .server_id
        .unwrap();
    let other = sim
        .attach_volume_elsewhere_too(&volume, "shared-ssd")
        .unwrap();
    attach.release();

    let err = buying.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains(&volume) && m.contains(&other) && m.contains("one server only")),
        "{err}"
    );
    assert!(manager.get_allocation("order-shared").await.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = sim
        .volumes()
        .into_iter()
        .find(|v| v.id == volume)
        .expect("the tenant's volume is never deleted");
    assert_eq!(after.attached_to, vec![other]);
    assert!(
        sim.server(&ours).is_none(),
        "the touched instance is discarded"
    );
    assert_consistent(&sim, &manager).await;
}

/// The check of the tenant's existing volume waits out a 429 and a 503 like
/// every other call of the purchase, instead of failing it at once.
#[tokio::test(start_paused = true)]
async fn the_existing_volume_check_waits_out_throttling_and_transient_errors() {
    let sim = sim();
    let answered = std::sync::Mutex::new(0);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        if method != "get_volume" {
            return None;
        }
        let mut answered = answered.lock().unwrap();
        *answered += 1;
        match *answered {
            1 => Some(pool_manager::cloud::CloudError::Throttled {
                retry_after: Some(Duration::from_secs(3)),
                message: "get_volume: slow down".into(),
                unavailable: false,
            }),
            2 => Some(pool_manager::cloud::CloudError::Transient(
                "503 Service Unavailable".into(),
            )),
            _ => None,
        }
    });
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = request(
        "order-fence-429",
        VolumeSource::Existing {
            volume_id: volume.clone(),
        },
        EmptyPoolPolicy::FailFast,
    );
    let allocation = manager.allocate(order).await.unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    assert_eq!(allocation.volume_id, Some(volume));
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn release_deletes_the_server_and_the_pool_refills() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let allocation = manager
        .allocate(request("order-r", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let server = allocation.server_id.clone().unwrap();
    let released = manager.release("order-r", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert!(
        !sim.servers().iter().any(|s| s.server.id == server),
        "released server still exists"
    );
    assert!(sim.ports().is_empty());
    // The volume is the tenant's: kept by default, and free again once Cinder lets go.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let volume = sim.volumes().pop().unwrap();
    assert!(volume.attached_to.is_empty());
    // Releasing again answers the same; the pool is back at target.
    assert_eq!(manager.release("order-r", None).await.unwrap(), released);
    wait_ready(&manager, 2).await;
    assert!(matches!(
        manager.release("nope", None).await.unwrap_err(),
        ManagerError::AllocationNotFound(_)
    ));

    // Asking for the volume to go deletes it.
    manager
        .allocate(request("order-r2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.release("order-r2", Some(true)).await.unwrap();
    assert_eq!(sim.volumes().len(), 1, "only order-r's kept volume remains");
    assert_consistent(&sim, &manager).await;
}

/// A pool user with a member role only (Neutron's default policy): a port
/// a server is bound to may not be deleted until Nova unbinds it, which
/// follows the server's deletion or a detach asynchronously. Release and
/// the undoing of a failed try wait for it: every first release used to
/// fail FAILED_PRECONDITION ("disallowed by policy"), stuck in RELEASING.
#[tokio::test(start_paused = true)]
async fn a_member_only_user_releases_and_rolls_back_at_the_first_try() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        member_port_policy: true,
        ..sim().config()
    });
    let (cloud, refuse_attach) = refusing_one_attach(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    manager
        .allocate(request("order-m", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let released = manager.release("order-m", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());

    // A purchase whose volume attach is refused beside its port's: the
    // purchase fails for that refusal, and its port goes once free.
    wait_ready(&manager, 2).await;
    refuse_attach.store(true, Ordering::SeqCst);
    let err = manager
        .allocate(request("order-n", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("attach refused"), "{err}");
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert_consistent(&sim, &manager).await;
}

/// A member-only user again, and a failed try whose port Nova will not
/// detach (a server in ERROR answers 409): the port stays bound until the
/// server's deletion, so it is deleted after the discard, and the purchase
/// goes on to the next instance. Deleted before it, the port's delete
/// waited out the cleanup deadline for an unbind that never came, and the
/// purchase failed "disallowed by policy" with Ready instances left.
#[tokio::test(start_paused = true)]
async fn a_port_nova_will_not_detach_is_deleted_after_its_server_and_the_next_instance_tried() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        member_port_policy: true,
        ..sim().config()
    });
    let cloud = GatedCloud::with_fault(&sim, |method| {
        (method == "detach_port").then(|| {
            pool_manager::cloud::CloudError::Conflict(
                "Cannot 'detach_interface' instance while it is in vm_state error".into(),
            )
        })
    });
    let manager = started_over(&cloud, temp_store(), 2).await;
    sim.faults().fail_next_volume_attach(1);
    let allocation = manager
        .allocate(request("order-e", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sim.ports().len(), 1, "{:?}", sim.ports());
    assert_consistent(&sim, &manager).await;
}

/// A failed try whose server Nova will not delete now (a locked server, a
/// delete refused 409): its record says Deleting, so the reconciler
/// finishes the delete later, and the purchase goes on to the next
/// instance. It used to fail with Ready instances left.
#[tokio::test(start_paused = true)]
async fn a_failed_trys_server_delete_refused_is_left_to_the_reconciler() {
    let sim = sim();
    let refuse = std::sync::Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(&sim, {
        let refuse = refuse.clone();
        move |method| {
            (method == "delete_server" && refuse.load(Ordering::SeqCst)).then(|| {
                pool_manager::cloud::CloudError::Conflict(
                    "Instance is locked and cannot be deleted".into(),
                )
            })
        }
    });
    let manager = started_over(&cloud, temp_store(), 2).await;
    refuse.store(true, Ordering::SeqCst);
    sim.faults().fail_next_volume_attach(1);
    let allocation = manager
        .allocate(request("order-l", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);

    refuse.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_consistent(&sim, &manager).await;
}

/// A cloud that refuses the next volume attach ("attach refused") once
/// the returned flag is set.
fn refusing_one_attach(
    sim: &std::sync::Arc<cloudsim::SimCloud>,
) -> (std::sync::Arc<GatedCloud>, std::sync::Arc<AtomicBool>) {
    let refuse_attach = std::sync::Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(sim, {
        let refuse_attach = refuse_attach.clone();
        move |method| {
            (method == "attach_volume" && refuse_attach.swap(false, Ordering::SeqCst))
                .then(|| pool_manager::cloud::CloudError::Fatal("attach refused".into()))
        }
    });
    (cloud, refuse_attach)
}

/// A rollback deletes the purchase's new volume once: the look for twins
/// of a lost create that follows found it `deleting` and deleted it again
/// (Cinder answers that 400, logged as a twin of a lost create).
#[tokio::test(start_paused = true)]
async fn a_rollback_deletes_its_new_volume_once() {
    let sim = sim();
    let (cloud, refuse_attach) = refusing_one_attach(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    refuse_attach.store(true, Ordering::SeqCst);
    let deletes = || sim.call_counts().get("delete_volume").copied().unwrap_or(0);
    let before = deletes();
    let err = manager
        .allocate(request("order-d", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("attach refused"), "{err}");
    assert_eq!(deletes() - before, 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    assert_consistent(&sim, &manager).await;
}

/// Cinder rate-limits volume deletes (413 `overLimit`, "retryAfter": "30"):
/// a release waits the Retry-After out, as a port's delete does, instead of
/// sending the DELETE again twice a second until its cleanup deadline. Once
/// the limit lifts, a reconcile pass finishes the release.
#[tokio::test(start_paused = true)]
async fn a_throttled_volume_delete_waits_out_retry_after() {
    let sim = sim();
    let throttling = Arc::new(AtomicBool::new(false));
    let deletes = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let (throttling, deletes) = (throttling.clone(), deletes.clone());
        move |method| {
            (method == "delete_volume" && throttling.load(Ordering::SeqCst)).then(|| {
                deletes.fetch_add(1, Ordering::SeqCst);
                pool_manager::cloud::CloudError::Throttled {
                    retry_after: Some(Duration::from_secs(30)),
                    message: "DELETE /volumes: This request was rate-limited. (HTTP 413)".into(),
                    unavailable: false,
                }
            })
        }
    });
    let manager = started_over(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-rl", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();

    throttling.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let released = tokio::time::timeout(
        Duration::from_secs(30),
        manager.release("order-rl", Some(true)),
    )
    .await;
    tokio::time::sleep_until(started + Duration::from_secs(30)).await;
    let sent = deletes.load(Ordering::SeqCst);
    assert!(
        sent <= 2,
        "{sent} volume deletes in 30 s under a Retry-After of 30 s ({released:?})"
    );

    throttling.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(
        manager.get_allocation("order-rl").await.unwrap().state,
        AllocationState::Released
    );
    assert_consistent(&sim, &manager).await;
}

/// A volume Cinder will not delete for a reason waiting does not mend (the
/// tenant has snapshots of it) fails its release at once with a message
/// saying what to do, instead of asking Cinder again and again until the
/// cleanup deadline; the server and port are gone, and once the snapshots
/// are, releasing again finishes.
#[tokio::test(start_paused = true)]
async fn a_volume_with_snapshots_fails_its_release_at_once_and_says_why() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-v", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    assert!(sim.set_volume_snapshots(&volume, 2));

    sim.reset_call_counts();
    let err = manager.release("order-v", Some(true)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("snapshots") && m.contains("release again")),
        "{err:?}"
    );
    // Asked while the volume detached from the deleted server, and once
    // it had: not again and again until the cleanup deadline.
    let deletes = sim.call_counts().get("delete_volume").copied().unwrap_or(0);
    assert!(deletes <= 2, "Cinder's refusal was asked {deletes} times");
    assert_eq!(
        manager.get_allocation("order-v").await.unwrap().state,
        AllocationState::Releasing
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!sim
        .servers()
        .iter()
        .any(|s| Some(&s.server.id) == allocation.server_id.as_ref()));
    assert!(sim.ports().is_empty());

    assert!(sim.set_volume_snapshots(&volume, 0));
    let released = manager.release("order-v", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.volumes().is_empty());
    assert_consistent(&sim, &manager).await;
}

/// Cinder's one message for every state it refuses a volume's delete in.
const CINDER_DELETE_REFUSED: &str = "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.";

/// A volume someone created a transfer for (`awaiting-transfer`) stays so
/// until the transfer is accepted or deleted: its release fails at once,
/// FAILED_PRECONDITION naming the transfer. It used to be taken for a
/// volume still detaching, waited for until the cleanup deadline (2 min,
/// past billing's deadline, holding a reconcile pass as long), and
/// answered UNAVAILABLE "not detached yet".
#[tokio::test(start_paused = true)]
async fn a_volume_awaiting_a_transfer_fails_its_release_at_once_and_says_why() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_volume",
        pool_manager::cloud::CloudError::Conflict(CINDER_DELETE_REFUSED.into()),
        false,
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-t", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    refusing.store(true, Ordering::SeqCst);
    cloud.show_volume_status_after(
        0,
        Some(pool_manager::cloud::VolumeStatus::Other(
            "awaiting-transfer".into(),
        )),
    );

    let started = tokio::time::Instant::now();
    let err = manager.release("order-t", Some(true)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("awaiting-transfer") && m.contains("release again")),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    assert_eq!(
        manager.get_allocation("order-t").await.unwrap().state,
        AllocationState::Releasing
    );
    // GetAllocation's reason for the RELEASING it shows.
    assert_eq!(manager.release_error("order-t"), Some(err.to_string()));

    // The transfer deleted, releasing again finishes.
    refusing.store(false, Ordering::SeqCst);
    cloud.show_volume_status_after(0, None);
    let released = manager.release("order-t", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert_eq!(manager.release_error("order-t"), None);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    assert_consistent(&sim, &manager).await;
}

/// A volume attached to a server other than the order's (a multiattach
/// volume the tenant attached elsewhere too) stays so until someone
/// detaches it: its release fails at once, FAILED_PRECONDITION naming that
/// server, not UNAVAILABLE "not detached yet" after the cleanup deadline.
#[tokio::test(start_paused = true)]
async fn a_volume_in_use_by_another_server_fails_its_release_at_once_naming_it() {
    use pool_manager::cloud::Cloud;
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-m", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    let other = sim
        .attach_volume_elsewhere_too(&volume, "multiattach")
        .unwrap();

    let started = tokio::time::Instant::now();
    let err = manager.release("order-m", Some(true)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains(&other) && m.contains("release again")),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "answered after {took:?}");

    // Detached there, releasing again finishes.
    sim.detach_volume(&other, &volume).await.unwrap();
    let released = manager.release("order-m", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    assert_consistent(&sim, &manager).await;
}

/// An attachment Cinder still lists once the order's server is gone (Nova
/// failed to delete it with the server) never goes by itself: the release
/// fails FAILED_PRECONDITION saying so, well before the cleanup deadline.
#[tokio::test(start_paused = true)]
async fn a_stale_attachment_to_the_deleted_server_fails_its_release_saying_so() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_volume",
        pool_manager::cloud::CloudError::Conflict(CINDER_DELETE_REFUSED.into()),
        false,
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-s", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    let server = allocation.server_id.clone().unwrap();
    refusing.store(true, Ordering::SeqCst);
    cloud.show_volume_status_after(0, Some(pool_manager::cloud::VolumeStatus::InUse));
    cloud.show_volume_attached_to(Some(vec![server.clone()]));

    let started = tokio::time::Instant::now();
    let err = manager.release("order-s", Some(true)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains(&server) && m.contains("stale") && m.contains("release again")),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(90), "answered after {took:?}");
    assert!(!sim.servers().iter().any(|s| s.server.id == server));
}

/// An order whose Allocate failed, and whose rollback the cloud keeps
/// from finishing (a port's delete refused), is ALLOCATING with no call
/// working on it: its Release used to say to release it "once Allocate
/// has answered", which it had. It says that nothing is allocated, that
/// the rollback goes on, and that the order reads NOT_FOUND once done.
#[tokio::test(start_paused = true)]
async fn the_release_of_an_order_whose_allocate_failed_says_it_is_being_rolled_back() {
    let sim = sim();
    let cloud = GatedCloud::with_fault(&sim, |method| {
        matches!(method, "attach_volume" | "delete_port")
            .then(|| pool_manager::cloud::CloudError::Fatal(format!("{method} refused")))
    });
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-r", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert_eq!(
        manager.get_allocation("order-r").await.unwrap().state,
        AllocationState::Allocating
    );

    let err = manager.release("order-r", None).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m)
            if m.contains("order-r") && m.contains("rolled back") && m.contains("NOT_FOUND")
                && !m.contains("once Allocate has answered")),
        "{err:?}"
    );
}

/// Holds the first read of order `order-x` once armed, after the store
/// answered it, until let go.
#[derive(Default)]
struct HoldOrderRead {
    armed: AtomicBool,
    reached: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldOrderRead {
    async fn after_get_allocation(&self, request_id: &str) {
        if request_id == "order-x" && self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.go.notified().await;
        }
    }
}

/// Billing's Allocate ran out of its deadline and billing sends Release to
/// cancel the order just as the purchase commits: the Release read the
/// order ALLOCATING, and only then asked whether a call still works on
/// it. The purchase had committed meanwhile (its in-flight mark gone), so
/// the Release said the order was being rolled back with nothing of it
/// allocated, of an ALLOCATED order.
#[tokio::test(start_paused = true)]
async fn a_release_racing_the_purchases_commit_is_not_told_the_order_is_rolled_back() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = HookedStore::new(HoldOrderRead::default());
    let manager = started_paused(&cloud, store.clone(), 1).await;
    let attaching = cloud.hold_next("attach_port", At::Before);
    let allocate = spawn_allocate(
        &manager,
        request("order-x", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attaching.reached().await;

    store.hooks.armed.store(true, Ordering::SeqCst);
    let release = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.release("order-x", None).await })
    };
    store.hooks.reached.notified().await;
    attaching.release();
    let allocated = allocate.await.unwrap().unwrap();
    assert_eq!(allocated.state, AllocationState::Allocated);
    store.hooks.go.notify_one();

    // The order the purchase committed is what is released.
    let released = release.await.unwrap().expect("the release goes ahead");
    assert_eq!(released.state, AllocationState::Released);
    assert_consistent(&sim, &manager).await;
}

/// Fails the flush after an order is written RELEASED, once.
#[derive(Default)]
struct FailFlushOfReleased {
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl StoreHooks for FailFlushOfReleased {
    fn written(&self, write: Write) {
        if let Write::Allocation(_, Some(a)) = write {
            if a.state == AllocationState::Released {
                self.armed.store(true, Ordering::SeqCst);
            }
        }
    }
    async fn before_flush(&self) -> StoreResult<()> {
        match self.armed.swap(false, Ordering::SeqCst) {
            true => Err(disk_error()),
            false => Ok(()),
        }
    }
}

/// A release whose last step, the flush of the RELEASED record, fails is
/// answered "call again", but the order is released: why it failed is no
/// reason an order stays RELEASING, and was kept (for GetAllocation's
/// `last_error`) for as long as the process ran.
#[tokio::test(start_paused = true)]
async fn a_release_failing_after_the_order_is_released_keeps_no_release_error() {
    let sim = sim();
    let store = HookedStore::new(FailFlushOfReleased::default());
    let manager = started(&sim, store.clone(), 1).await;
    manager
        .allocate(request("order-f", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();

    let err = manager.release("order-f", None).await.unwrap_err();
    assert!(matches!(&err, ManagerError::TryAgain(_)), "{err:?}");
    assert_eq!(
        manager.get_allocation("order-f").await.unwrap().state,
        AllocationState::Released
    );
    assert_eq!(manager.release_error("order-f"), None);
}

/// A tenant's server whose host failed (ERROR) cannot have its volume or
/// port detached; its release deletes it anyway, which frees both, instead
/// of failing at the detach for good.
#[tokio::test(start_paused = true)]
async fn release_of_a_server_in_error_deletes_it_and_frees_the_volume() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-e", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let server = allocation.server_id.clone().unwrap();
    assert!(sim.fail_server(&server, "host compute-2 is down"));

    let released = manager.release("order-e", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !sim.servers().iter().any(|s| s.server.id == server),
        "the server in ERROR still exists"
    );
    assert!(sim.ports().is_empty());
    let volume = sim.volumes().pop().expect("the tenant's volume is kept");
    assert!(volume.attached_to.is_empty(), "{volume:?}");
    assert_consistent(&sim, &manager).await;
}

/// A delete Nova accepts may still fail on the compute host, which puts
/// the server back in ERROR as it was: for a release whose detach Nova
/// refused, with the tenant's volume attached. The reconciler never
/// deletes a server it does not know that holds a volume, so the instance
/// is forgotten only once its server is gone: the release sends the
/// delete again, and the volume is free for the tenant's next purchase.
#[tokio::test(start_paused = true)]
async fn release_whose_delete_the_host_failed_deletes_the_server_again() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let allocation = manager
        .allocate(request("order-h", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let server = allocation.server_id.clone().unwrap();
    assert!(sim.fail_server(&server, "host compute-2 is down"));
    cloud.undo_next_delete();

    let released = manager.release("order-h", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    for _ in 0..3 {
        manager.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert!(
        !sim.servers().iter().any(|s| s.server.id == server),
        "the server whose delete failed still exists"
    );
    let volume = sim.volumes().pop().expect("the tenant's volume is kept");
    assert!(volume.attached_to.is_empty(), "{volume:?}");
    assert_consistent(&sim, &manager).await;
}

/// A reconcile pass retires a Ready instance whose server went into ERROR
/// (its host failed) and the pool refills, so no purchase has to find it.
#[tokio::test(start_paused = true)]
async fn reconcile_replaces_a_ready_instance_whose_server_failed() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let broken = sim.servers().pop().unwrap().server.id;
    assert!(sim.fail_server(&broken, "host compute-1 is down"));

    manager.reconcile().await.unwrap();
    assert!(
        !manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .iter()
            .any(|i| i.server_id.as_deref() == Some(broken.as_str())),
        "the instance of the failed server is still listed"
    );
    wait_ready(&manager, 2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!sim.servers().iter().any(|s| s.server.id == broken));
    assert_consistent(&sim, &manager).await;
}

/// A reconcile pass marks a claimed instance Allocated only when its
/// purchase's allocation names it. One claimed for a purchase that holds
/// another instance (no path leaves one; the test writes it, as a stale
/// record or an id drawn again would) is a claim left over: it is
/// discarded, not handed to the purchase as a second instance.
#[tokio::test(start_paused = true)]
async fn reconcile_marks_allocated_only_the_instance_its_allocation_names() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;
    let allocation = manager
        .allocate(request("order-c", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let other = store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.state == InstanceState::Ready)
        .unwrap();
    let mut claimed = other.clone();
    claimed.state = InstanceState::Claimed;
    claimed.request_id = Some("order-c".into());
    assert!(store
        .cas_instance(Some(&other), Some(&claimed))
        .await
        .unwrap());

    manager.reconcile().await.unwrap();
    let instances = manager.list_instances(None).await.unwrap();
    assert!(
        !instances.iter().any(|i| i.id == other.id),
        "the stray claim is still there: {instances:#?}"
    );
    assert_eq!(manager.get_allocation("order-c").await.unwrap(), allocation);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_consistent(&sim, &manager).await;
}

/// A second Allocate of an order whose first is still running waits for
/// its answer until its own deadline, then says to try again (UNAVAILABLE
/// over gRPC, which clients retry), not FAILED_PRECONDITION (which they
/// take as "do not retry"); so does a Release of it meanwhile.
#[tokio::test(start_paused = true)]
async fn a_duplicate_allocate_that_outwaits_its_deadline_says_try_again() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    sim.faults().slow_calls(Duration::from_secs(60));
    let first = spawn_allocate(
        &manager,
        request("order-d", new_volume(), EmptyPoolPolicy::FailFast),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut again = request("order-d", new_volume(), EmptyPoolPolicy::FailFast);
    again.timeout = Some(Duration::from_secs(5));
    let err = manager.allocate(again).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("still in progress")),
        "{err:?}"
    );
    // Its release, too, is for later.
    let err = manager.release("order-d", None).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("still in progress")),
        "{err:?}"
    );
    sim.faults().slow_calls(Duration::ZERO);
    let allocation = first.await.unwrap().expect("the first call's answer");
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_consistent(&sim, &manager).await;
}

/// Before an Allocate writes its record it checks the tenant's existing
/// volume, retrying Cinder's 5xx up to its deadline. A Release or a
/// GetAllocation of the order meanwhile used to answer NOT_FOUND: billing,
/// cancelling the order, would close it, and the Allocate then succeed,
/// a database billing thinks never existed. Both say to call again
/// (UNAVAILABLE), as once the record is written.
#[tokio::test(start_paused = true)]
async fn an_order_whose_allocate_checks_its_volume_is_in_progress_not_unknown() {
    let sim = sim();
    let (cloud, failing) = GatedCloud::failing_next(
        &sim,
        "get_volume",
        pool_manager::cloud::CloudError::Transient("HTTP 503".into()),
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    failing.store(1000, Ordering::SeqCst);
    let first = spawn_allocate(
        &manager,
        request(
            "order-f",
            VolumeSource::Existing { volume_id },
            EmptyPoolPolicy::FailFast,
        ),
    );
    // Until the volume check has been refused a few times.
    while failing.load(Ordering::SeqCst) > 995 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(manager.list_allocations().await.unwrap().is_empty());
    let in_progress = |err: &ManagerError| matches!(err, ManagerError::TryAgain(m) if m.contains("order-f") && m.contains("still in progress"));
    let err = manager.release("order-f", None).await.unwrap_err();
    assert!(in_progress(&err), "{err:?}");
    let err = manager.get_allocation("order-f").await.unwrap_err();
    assert!(in_progress(&err), "{err:?}");

    failing.store(0, Ordering::SeqCst);
    let allocation = first.await.unwrap().expect("the Allocate's answer");
    assert_eq!(allocation.state, AllocationState::Allocated);
    let released = manager.release("order-f", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    // An order no Allocate is working on is unknown.
    assert!(matches!(
        manager.get_allocation("order-g").await.unwrap_err(),
        ManagerError::AllocationNotFound(_)
    ));
    assert_consistent(&sim, &manager).await;
}

/// A volume state that passes by itself (a backup) found at the attach,
/// after the check of the tenant's volume let it through, says to call
/// again (UNAVAILABLE), as the same state at the check does; it used to be
/// FAILED_PRECONDITION ("backing-up, not available"), which billing takes
/// for "mend the order" and drops.
#[tokio::test(start_paused = true)]
async fn a_volume_being_backed_up_at_the_attach_says_try_again() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    // The check's look sees it available; the attach's, being backed up.
    cloud.show_volume_status_after(
        1,
        Some(pool_manager::cloud::VolumeStatus::Other(
            "backing-up".into(),
        )),
    );
    let err = manager
        .allocate(request(
            "order-b",
            VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("being backed up")),
        "{err:?}"
    );
    // Rolled back: no record, the volume attached nowhere.
    assert!(matches!(
        manager.get_allocation("order-b").await.unwrap_err(),
        ManagerError::AllocationNotFound(_)
    ));
    cloud.show_volume_status_after(0, None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let volume = sim
        .volumes()
        .into_iter()
        .find(|v| v.id == volume_id)
        .unwrap();
    assert!(volume.attached_to.is_empty(), "{volume:?}");
    assert_consistent(&sim, &manager).await;
}

/// A fixed_ip is an address, compared as one: the same order sent with
/// its IPv6 address written another way (upper-case hex digits, zeros not
/// elided) used to be refused ABORTED ("network differs").
#[tokio::test(start_paused = true)]
async fn a_fixed_ip_written_another_way_is_the_same_order() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let with_ip = |ip: &str| {
        let mut order = request("order-ip", new_volume(), EmptyPoolPolicy::FailFast);
        order.params.network.subnet_id = Some("tenant-subnet".into());
        order.params.network.fixed_ip = Some(ip.into());
        order
    };
    let first = manager.allocate(with_ip("2001:DB8::1")).await.unwrap();
    for same in ["2001:db8::1", "2001:0db8:0:0:0:0:0:0001"] {
        assert_eq!(manager.allocate(with_ip(same)).await.unwrap(), first);
    }
    // Asked of Neutron in its canonical form, too.
    assert_eq!(first.ip_address.as_deref(), Some("2001:db8::1"));
    let err = manager.allocate(with_ip("2001:db8::2")).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Aborted(m) if m.contains("(network.fixed_ip differs)")),
        "{err:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// A reconcile pass probes the pool's Ready instances: one whose mysqld
/// died after it went Ready is replaced once it has been silent on two
/// passes in a row (one silent pass may be mysqld restarting), so the pool's
/// depth counts only databases that answer.
#[tokio::test(start_paused = true)]
async fn reconcile_replaces_a_ready_instance_whose_mysqld_died() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let silent = sim.servers().pop().unwrap().server.id;
    assert!(sim.stop_mysqld(&silent));
    let listed = || async {
        manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .iter()
            .any(|i| i.server_id.as_deref() == Some(silent.as_str()))
    };

    manager.reconcile().await.unwrap();
    assert!(listed().await, "discarded after one silent pass");
    manager.reconcile().await.unwrap();
    assert!(!listed().await, "still in the pool after two silent passes");
    wait_ready(&manager, 2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!sim.servers().iter().any(|s| s.server.id == silent));
    assert_consistent(&sim, &manager).await;
}

/// A Ready instance whose host failed (its server in ERROR) refuses the
/// attach (Nova's 409 on the instance's state): that is the instance's
/// fault, not the volume's, so the purchase discards it and takes the next.
#[tokio::test(start_paused = true)]
async fn an_instance_that_cannot_take_the_attach_is_skipped() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let broken = sim.servers().pop().unwrap().server.id;
    assert!(sim.fail_server(&broken, "host compute-1 is down"));

    buys_another_and_discards(&sim, &manager, "order-s", &broken).await;
}

/// Nova refuses an attach (409) to a server busy with a task, though it
/// shows it ACTIVE (an operator's snapshot, `image_snapshot`): the refusal
/// is the instance's, not the tenant's volume's, so the purchase takes the
/// next instance instead of failing as FAILED_PRECONDITION.
#[tokio::test(start_paused = true)]
async fn an_instance_busy_with_a_task_is_skipped_by_a_purchase() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let busy = sim.servers().pop().unwrap().server.id;
    assert!(sim.set_server_task_state(&busy, Some("image_snapshot")));

    buys_another_and_discards(&sim, &manager, "order-b", &busy).await;
}

/// A purchase of `request_id` gets an instance other than the one on
/// `refusing` (whose server refuses the attach), and that server is
/// discarded, not left to leak.
async fn buys_another_and_discards(
    sim: &Arc<cloudsim::SimCloud>,
    manager: &pool_manager::PoolManager,
    request_id: &str,
    refusing: &str,
) {
    let mut order = request(request_id, new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let allocation = manager.allocate(order).await.expect("the next instance");
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert_ne!(allocation.server_id.as_deref(), Some(refusing));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !sim.servers().iter().any(|s| s.server.id == refusing),
        "the instance of the failed try was discarded, not left to leak"
    );
    assert_consistent(sim, manager).await;
}

/// Busy is not broken: a reconcile pass keeps a Ready instance whose
/// server Nova is busy with (a live migration), and a purchase after the
/// task ended gets it.
#[tokio::test(start_paused = true)]
async fn reconcile_keeps_a_ready_instance_whose_server_is_busy() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let busy = sim.servers().pop().unwrap().server.id;
    assert!(sim.set_server_task_state(&busy, Some("migrating")));

    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1, "{status:?}");
    assert!(sim.servers().iter().any(|s| s.server.id == busy));

    assert!(sim.set_server_task_state(&busy, None));
    let a = manager
        .allocate(request("order-m", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(a.server_id.as_deref(), Some(busy.as_str()));
    assert_consistent(&sim, &manager).await;
}

/// A task that takes the guest down (a cold migration, a non-live
/// snapshot, a rebuild) silences mysqld while Nova is busy with the
/// server: a reconcile pass neither probes it nor counts that silence, and
/// discarded such an instance after two passes (busy is not broken). Once
/// the task has ended it is judged as any other: silent on two passes from
/// then, it is replaced.
#[tokio::test(start_paused = true)]
async fn reconcile_keeps_a_ready_instance_silent_while_its_server_is_busy() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let busy = sim.servers().pop().unwrap().server.id;
    assert!(sim.set_server_task_state(&busy, Some("migrating")));
    assert!(sim.stop_mysqld(&busy));
    let listed = || async {
        manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .iter()
            .any(|i| i.server_id.as_deref() == Some(busy.as_str()))
    };

    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    assert!(listed().await, "discarded while its server was busy");
    assert!(sim.servers().iter().any(|s| s.server.id == busy));

    // The task is over and mysqld is still silent: one silent pass is let
    // be, the second replaces it.
    assert!(sim.set_server_task_state(&busy, None));
    manager.reconcile().await.unwrap();
    assert!(listed().await, "its silence while busy was counted");
    manager.reconcile().await.unwrap();
    assert!(!listed().await, "still in the pool after two silent passes");
}

/// A silent pass before the server's task began is forgotten by a busy
/// pass: the first silent pass after the task is the first of two again,
/// not the second of the silence from before it.
#[tokio::test(start_paused = true)]
async fn a_busy_pass_forgets_the_silence_before_the_servers_task() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let busy = sim.servers().pop().unwrap().server.id;
    assert!(sim.stop_mysqld(&busy));
    let listed = || async {
        manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .iter()
            .any(|i| i.server_id.as_deref() == Some(busy.as_str()))
    };

    manager.reconcile().await.unwrap();
    assert!(listed().await, "replaced after one silent pass");
    assert!(sim.set_server_task_state(&busy, Some("migrating")));
    manager.reconcile().await.unwrap();
    assert!(sim.set_server_task_state(&busy, None));
    manager.reconcile().await.unwrap();
    assert!(
        listed().await,
        "its silence from before the task was counted after it"
    );
    manager.reconcile().await.unwrap();
    assert!(!listed().await, "still in the pool after two silent passes");
}

/// mysqld on a Ready instance died after it went Ready (its server is
/// still ACTIVE): a purchase probes the instance it claims, puts the
/// silent one back and hands out the next, instead of a database that does
/// not answer. The reconciler replaces it once it is silent on two passes.
#[tokio::test(start_paused = true)]
async fn a_purchase_skips_a_ready_instance_whose_mysqld_died() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let silent = sim.servers().pop().unwrap().server.id;
    assert!(sim.stop_mysqld(&silent));

    // Two purchases: whichever order the pool hands its two instances out
    // in, one of them claims the silent one.
    for order in ["order-m1", "order-m2"] {
        let mut order = request(order, new_volume(), EmptyPoolPolicy::Wait);
        order.timeout = Some(Duration::from_secs(600));
        let allocation = manager.allocate(order).await.expect("a live instance");
        assert_eq!(allocation.state, AllocationState::Allocated);
        assert_ne!(allocation.server_id.as_deref(), Some(silent.as_str()));
    }
    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !sim.servers().iter().any(|s| s.server.id == silent),
        "the silent server was not discarded"
    );
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_vm_whose_mysqld_never_answers_stays_out_of_the_pool() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let mut spec = spec(2);
    spec.boot_timeout = Duration::from_secs(300);
    manager.create_pool(pool(), spec).await.unwrap();
    // Before the boot timeout: the silent VM is Warming, never Ready.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let ready = instances
        .iter()
        .filter(|i| i.state == InstanceState::Ready)
        .count();
    let warming = instances
        .iter()
        .filter(|i| i.state == InstanceState::Warming)
        .count();
    assert_eq!((ready, warming), (1, 1), "{instances:?}");
    // After it: discarded and replaced.
    wait_ready(&manager, 2).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status
        .record
        .last_error
        .unwrap()
        .contains("mysqld never answered"));
    assert_eq!(sim.servers().len(), 2, "the silent VM's server was deleted");
    assert!(sim.servers().iter().all(|s| s.mysqld_ready));
    assert_consistent(&sim, &manager).await;
}

/// The pool's one instance, once it is `state`.
async fn until_the_instance_is(
    manager: &pool_manager::PoolManager,
    state: InstanceState,
) -> Instance {
    for _ in 0..3600 {
        let instances = manager.list_instances(Some(&pool())).await.unwrap();
        if let [instance] = &instances[..] {
            if instance.state == state {
                return instance.clone();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the pool's instance never was {state:?}");
}

/// A warming VM whose host dies (its server in ERROR): its boot task only
/// probed mysqld, and the reconciler leaves alone what a task drives, so
/// it counted as supply, never Ready, until the boot timeout (15 min).
/// The task looks at the server once probes have failed a while, and the
/// boot fails, the server is deleted and a replacement boots.
#[tokio::test(start_paused = true)]
async fn a_warming_vm_whose_server_fails_is_replaced_before_the_boot_timeout() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let spec = spec(1);
    let boot_timeout = spec.boot_timeout;
    manager.create_pool(pool(), spec).await.unwrap();
    let warming = until_the_instance_is(&manager, InstanceState::Warming).await;
    let started = tokio::time::Instant::now();
    let server = warming.server_id.clone().unwrap();
    assert!(sim.fail_server(&server, "host compute-1 is down"));

    wait_ready(&manager, 1).await;
    assert!(
        started.elapsed() < boot_timeout / 3,
        "replaced after {:?}",
        started.elapsed()
    );
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(
        instances.iter().all(|i| i.id != warming.id),
        "{instances:?}"
    );
    assert!(
        !sim.servers().iter().any(|s| s.server.id == server),
        "the failed server was not deleted"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    let why = status.record.last_error.unwrap_or_default();
    assert!(
        why.contains("server went to ERROR: host compute-1 is down"),
        "{why}"
    );
    assert_consistent(&sim, &manager).await;
}

/// The same, the server deleted by someone else while it warms: the
/// pool's last error says so, not that it went to ERROR.
#[tokio::test(start_paused = true)]
async fn a_warming_vm_whose_server_is_deleted_is_replaced_before_the_boot_timeout() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let spec = spec(1);
    let boot_timeout = spec.boot_timeout;
    manager.create_pool(pool(), spec).await.unwrap();
    let warming = until_the_instance_is(&manager, InstanceState::Warming).await;
    let started = tokio::time::Instant::now();
    let server = warming.server_id.clone().unwrap();
    pool_manager::cloud::Cloud::delete_server(sim.as_ref(), &server)
        .await
        .unwrap();

    wait_ready(&manager, 1).await;
    assert!(
        started.elapsed() < boot_timeout / 3,
        "replaced after {:?}",
        started.elapsed()
    );
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert!(
        instances.iter().all(|i| i.id != warming.id),
        "{instances:?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    let why = status.record.last_error.unwrap_or_default();
    assert!(why.contains("server was deleted"), "{why}");
    assert!(!why.contains("ERROR"), "{why}");
    assert_consistent(&sim, &manager).await;
}

/// Looking at a warming VM's server costs a normal boot nothing: its
/// mysqld answers (65 s after ACTIVE) before the first look is due.
#[tokio::test(start_paused = true)]
async fn a_normal_boot_does_not_look_at_its_server_while_it_warms() {
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    until_the_instance_is(&manager, InstanceState::Warming).await;
    let looks = || sim.call_counts().get("get_server").copied().unwrap_or(0);
    let before = looks();
    until_the_instance_is(&manager, InstanceState::Ready).await;
    assert_eq!(looks(), before, "get_server called while the VM warmed");
    assert_consistent(&sim, &manager).await;
}

/// The instance writes a store took, in order.
#[derive(Default)]
struct InstanceWrites(std::sync::Mutex<Vec<Instance>>);

impl StoreHooks for InstanceWrites {
    fn written(&self, write: Write) {
        if let Write::Instance(_, Some(instance)) = write {
            self.0.lock().unwrap().push(instance);
        }
    }
}

/// Why a warming VM's mysqld does not answer is on the instance from the
/// first failed probe (`warmpoolctl instances` LAST ERROR), not only in
/// the pool's last error once the boot timeout (15 min here) has gone by;
/// it is written when it appears, not at every probe, and a VM whose
/// mysqld answers in the end is Ready without it.
#[tokio::test(start_paused = true)]
async fn a_warming_vm_shows_why_its_mysqld_does_not_answer_yet() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let store = HookedStore::new(InstanceWrites::default());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    let spec = spec(1);
    let boot_timeout = spec.boot_timeout;
    let started = tokio::time::Instant::now();
    manager.create_pool(pool(), spec).await.unwrap();
    // ACTIVE after about 25 s; mysqld, which never starts here, would
    // answer 65 s later.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let [silent] = &instances[..] else {
        panic!("one instance: {instances:?}")
    };
    assert_eq!(silent.state, InstanceState::Warming, "{silent:?}");
    assert!(started.elapsed() < boot_timeout);
    let shown = silent.last_error.as_deref().unwrap_or_default();
    assert!(
        shown.starts_with("mysqld not answering yet: ") && shown.contains("Connection refused"),
        "{silent:?}"
    );
    let warming_writes = store
        .hooks
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.id == silent.id && i.state == InstanceState::Warming)
        .count();
    assert_eq!(warming_writes, 2, "ACTIVE, then the probe's error once");

    // Its replacement's mysqld answers: Ready, with no error left.
    wait_ready(&manager, 1).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let ready: Vec<_> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Ready)
        .collect();
    assert_eq!(ready.len(), 1, "{instances:?}");
    assert_eq!(ready[0].last_error, None, "{instances:?}");
    let replacement_noted = store.hooks.0.lock().unwrap().iter().any(|i| {
        i.id == ready[0].id
            && i.state == InstanceState::Warming
            && i.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Connection refused"))
    });
    assert!(replacement_noted, "while it warmed, it said why");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// The sim's probe, but a mysqld that is not up leaves the TCP connect
/// unanswered for the whole probe timeout, as a guest that has not brought
/// its NIC up does while the fabric answers ARP for its port (OVN, l2pop).
struct UnansweredUntilUp(Arc<cloudsim::SimCloud>);

#[async_trait::async_trait]
impl pool_manager::probe::Probe for UnansweredUntilUp {
    async fn probe(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<String, pool_manager::probe::ProbeError> {
        use pool_manager::probe::{ProbeError, DEFAULT_PROBE_TIMEOUT};
        match self.0.probe().probe(addr).await {
            Ok(version) => Ok(version),
            Err(_) => {
                tokio::time::sleep(DEFAULT_PROBE_TIMEOUT).await;
                Err(ProbeError::ConnectUnanswered {
                    addr,
                    timeout: DEFAULT_PROBE_TIMEOUT,
                })
            }
        }
    }
}

/// Nova says ACTIVE before the guest's network is up, and on a fabric that
/// answers ARP for the port a connect then goes unanswered for the first
/// seconds of every boot: that is no sign of a firewall while the boot has
/// time left, and a warming instance does not claim one. At boot_timeout
/// the silence is the firewall's likeliest doing, and says so.
#[tokio::test(start_paused = true)]
async fn a_warming_vm_whose_connect_goes_unanswered_blames_no_firewall_before_its_deadline() {
    let sim = sim();
    sim.faults().mysqld_never_starts_next(1);
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        sim.clone(),
        Arc::new(UnansweredUntilUp(sim.clone())),
        settings(),
    );
    manager.start().await.unwrap();
    let mut spec = spec(1);
    spec.boot_timeout = Duration::from_secs(300);
    manager.create_pool(pool(), spec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(200)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let [silent] = &instances[..] else {
        panic!("one instance: {instances:?}")
    };
    assert_eq!(silent.state, InstanceState::Warming, "{silent:?}");
    let shown = silent.last_error.as_deref().unwrap_or_default();
    assert!(
        shown.starts_with("mysqld not answering yet: ") && shown.contains("still booting"),
        "{shown}"
    );
    assert!(!shown.contains("likely drops"), "{shown}");

    // Past boot_timeout: discarded, the firewall named.
    wait_ready(&manager, 1).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    let failed = status.record.last_error.unwrap_or_default();
    assert!(
        failed.contains("mysqld never answered")
            && failed.contains("security group or firewall likely drops"),
        "{failed}"
    );
    manager.shutdown().await.unwrap();
}

/// Nova answering 500 to every create used to stay hidden for the whole
/// boot_timeout (15 min): the boot retried it, the pool showed a booting
/// instance, health ok and no last error, and the error was logged at
/// DEBUG only. From the third transient failure of one boot's create in
/// a row, the cloud's error shows as the instance's and the pool's last
/// error and is logged at WARN, once per boot; the create is retried
/// until boot_timeout as before. Once a create lands, the instance shows
/// it no longer.
#[tokio::test(start_paused = true)]
async fn a_create_failing_500_shows_as_last_error_long_before_boot_timeout() {
    let logs = Logs::capture();
    let sim = sim();
    let nova_500 = "POST /servers: Unexpected API Error. (HTTP 500)";
    sim.faults().fail_next_calls_of(
        "create_server",
        u64::MAX,
        pool_manager::cloud::CloudError::Transient(nova_500.into()),
    );
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;

    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Booting), 1, "{status:?}");
    let shown = status.record.last_error.clone().unwrap_or_default();
    assert!(
        shown.contains(nova_500) && shown.contains("boot_timeout"),
        "{status:?}"
    );
    assert!(status.record.last_error_at.is_some(), "{status:?}");
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let [booting] = &instances[..] else {
        panic!("one instance: {instances:?}")
    };
    let why = booting.last_error.as_deref().unwrap_or_default();
    assert!(
        shown == format!("instance {}: {why}", booting.id) && why.contains("(15m)"),
        "{shown} / {booting:?}"
    );
    let creates = sim.call_counts().get("create_server").copied().unwrap_or(0);
    assert!(creates > 10, "retried on: {creates} creates");
    assert_eq!(
        logs.count("WARN", nova_500),
        1,
        "once per boot, not per retry: {:?}",
        logs.warnings()
    );

    sim.faults().fail_next_calls_of(
        "create_server",
        0,
        pool_manager::cloud::CloudError::Transient(String::new()),
    );
    wait_ready(&manager, 1).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let [ready] = &instances[..] else {
        panic!("one instance: {instances:?}")
    };
    assert_eq!(ready.id, booting.id, "the same boot, its create retried");
    assert_eq!(ready.last_error, None, "{ready:?}");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A boot whose record is taken (a drain, a purchase's rollback: it is
/// `Deleting`) before its create fails for the third time in a row shows
/// no create failure: the instance is being deleted, and the pool (here
/// the one created again under the deleted pool's key) must not read
/// "instance X: the server create failed..." about it.
#[tokio::test(start_paused = true)]
async fn a_create_failing_for_a_taken_boot_shows_on_no_pool() {
    let sim = sim();
    let nova_500 = "POST /servers: Unexpected API Error. (HTTP 500)";
    let (cloud, failing) = GatedCloud::failing_next(
        &sim,
        "create_server",
        pool_manager::cloud::CloudError::Transient(nova_500.into()),
    );
    failing.store(3, Ordering::SeqCst);
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    // The third create is held before the cloud fails it.
    let mut held = cloud.hold_next("create_server", At::Before);
    manager.create_pool(pool(), spec(1)).await.unwrap();
    for _ in 0..2 {
        held.reached().await;
        let next = cloud.hold_next("create_server", At::Before);
        held.release();
        held = next;
    }
    held.reached().await;
    manager.delete_pool(&pool()).await.unwrap();
    for _ in 0..60 {
        if manager.get_pool(&pool()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let taken = manager.list_instances(Some(&pool())).await.unwrap();
    let [taken] = &taken[..] else {
        panic!("the taken boot's record: {taken:?}")
    };
    assert_eq!(taken.state, InstanceState::Deleting, "{taken:?}");
    manager.create_pool(pool(), spec(0)).await.unwrap();
    held.release();

    // The fourth create lands; the taken boot deletes its server.
    for _ in 0..600 {
        if manager.list_instances(None).await.unwrap().is_empty() && sim.servers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(failing.load(Ordering::SeqCst), 0, "three creates failed");
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.last_error, None, "{status:?}");
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn boot_errors_are_replaced_and_leaks_are_deleted() {
    let sim = sim();
    sim.faults().error_next_boots(1, "NoValidHost");
    let before = std::time::SystemTime::now();
    let manager = started(&sim, temp_store(), 2).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.record.last_error.unwrap().contains("NoValidHost"));
    // When it happened, so that an old error reads as history.
    let at = status.record.last_error_at.expect("the error's time");
    assert!(at >= before, "{at:?} before {before:?}");

    let leak = sim.inject_leak(&pool());
    manager.reconcile().await.unwrap();
    assert!(
        !sim.servers().iter().any(|s| s.server.id == leak),
        "leaked server survived reconcile"
    );
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// A release the cloud keeps refusing (a locked port) fails only itself:
/// the reconcile pass still deletes a leak, a restart still starts, and
/// the release finishes once the cloud lets it.
#[tokio::test(start_paused = true)]
async fn a_release_the_cloud_keeps_refusing_stops_neither_reconcile_nor_restart() {
    use std::sync::Arc;
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_port",
        pool_manager::cloud::CloudError::Fatal("port is locked".into()),
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let manager = started_paused(&cloud, open_store(dir.path()), 2).await;
    manager
        .allocate(request(
            "order-stuck",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    refusing.store(true, Ordering::SeqCst);
    assert!(manager.release("order-stuck", None).await.is_err());

    let leak = sim.inject_leak(&pool());
    manager.reconcile().await.unwrap();
    assert!(
        !sim.servers().iter().any(|s| s.server.id == leak),
        "a stuck release kept the pass from deleting a leaked server"
    );

    manager.shutdown().await.unwrap();
    drop(manager);
    let manager = pool_manager::PoolManager::new(
        open_store(dir.path()),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    assert_eq!(
        manager.get_allocation("order-stuck").await.unwrap().state,
        AllocationState::Releasing
    );

    refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(
        manager.get_allocation("order-stuck").await.unwrap().state,
        AllocationState::Released
    );
    assert_consistent(&sim, &manager).await;
}

/// A cloud whose port deletes and looks, once `missing` is set, get the
/// driver's Fatal for Neutron's 404 to a path it routes nowhere.
fn port_calls_missing_their_route(
    sim: &Arc<cloudsim::SimCloud>,
) -> (Arc<GatedCloud>, Arc<AtomicBool>) {
    let missing = Arc::new(AtomicBool::new(false));
    let cloud = GatedCloud::with_fault(sim, {
        let missing = missing.clone();
        move |method| {
            (matches!(method, "delete_port" | "get_port") && missing.load(Ordering::SeqCst)).then(|| {
                pool_manager::cloud::CloudError::Fatal(format!(
                    "{method}: HTTP 404 The resource could not be found.: an OpenStack API's answer to a URL it has no route for, which names no object and so says nothing of this one: check that the network endpoint warmpool uses (the service catalog's, or network_endpoint_override in clouds.yaml) and any gateway in front of it lead to Neutron"
                ))
            })
        }
    });
    (cloud, missing)
}

/// Neutron's answer to a path it routes nowhere (a wrong
/// `network_endpoint_override`, a gateway sending the calls elsewhere) is
/// a Fatal error naming the endpoint, for a port's delete and its look
/// alike. A refused delete is waited out while the port is bound, and a
/// look that failed so was taken for "maybe bound": the release looked
/// again every 500 ms for its whole cleanup budget, then answered that
/// the port was still bound. A look that cannot succeed ends it at once,
/// with the error that names the endpoint to check.
#[tokio::test(start_paused = true)]
async fn a_release_whose_port_calls_miss_their_route_fails_at_once_naming_it() {
    let sim = sim();
    let (cloud, missing) = port_calls_missing_their_route(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-r", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    missing.store(true, Ordering::SeqCst);
    let asked = tokio::time::Instant::now();
    let err = manager.release("order-r", None).await.unwrap_err();
    let took = asked.elapsed();
    let message = err.to_string();
    assert!(
        message.contains("network_endpoint_override") && !message.contains("still bound"),
        "{err:?}"
    );
    assert!(
        matches!(&err, ManagerError::Cloud(e) if !e.is_retryable()),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    assert_eq!(
        manager.get_allocation("order-r").await.unwrap().state,
        AllocationState::Releasing
    );

    // The endpoint mended, the release finishes.
    missing.store(false, Ordering::SeqCst);
    let released = manager.release("order-r", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert_consistent(&sim, &manager).await;
}

/// A port a SOFT_DELETED server keeps bound is looked at each pass, and
/// deleted once unbound. Calls that are Neutron's 404 for a path it routes
/// nowhere (a wrong endpoint) were once taken for the binding's refusal:
/// the watch waited on the port for good, nothing said above debug. A
/// look that fails, then a refused delete, is a warning naming the
/// endpoint to check.
#[tokio::test(start_paused = true)]
async fn a_bound_port_watch_whose_port_calls_miss_their_route_warns() {
    use pool_manager::model::TwinWatch;
    let sim = sim();
    let (cloud, missing) = port_calls_missing_their_route(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 0).await;
    let watch = TwinWatch {
        name: "warmpool-order-w-1".into(),
        request_id: "order-w".into(),
        pool: Some(pool()),
        volumes: false,
        keep: Vec::new(),
        stuck_volume: None,
        deleted_volumes: Vec::new(),
        deleted_only: true,
        bound_ports: vec!["port-held".into()],
        until: std::time::SystemTime::UNIX_EPOCH,
    };
    assert!(store.cas_twin_watch(None, Some(&watch)).await.unwrap());
    missing.store(true, Ordering::SeqCst);

    let logs = Logs::capture();
    manager.reconcile().await.unwrap();
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("network_endpoint_override")),
        "{text}"
    );
    assert_eq!(store.list_twin_watches().await.unwrap(), vec![watch]);
}

/// A release under way keeps the volume decision it began with: a second
/// Release asking for the other one is refused and changes nothing.
#[tokio::test(start_paused = true)]
async fn a_release_under_way_keeps_its_volume_decision() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_port",
        pool_manager::cloud::CloudError::Fatal("port is locked".into()),
        true,
    );
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let allocation = manager
        .allocate(request(
            "order-keep",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    // Stops half-way, Releasing, with the volume to be deleted.
    assert!(manager.release("order-keep", Some(true)).await.is_err());
    let releasing = manager.get_allocation("order-keep").await.unwrap();
    assert_eq!(releasing.state, AllocationState::Releasing);
    assert_eq!(releasing.delete_volume_on_release, Some(true));

    let err = manager
        .release("order-keep", Some(false))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Aborted(_)), "{err}");
    assert!(err.to_string().contains("delete_volume=true"), "{err}");
    assert_eq!(
        manager.get_allocation("order-keep").await.unwrap(),
        releasing
    );

    // The same decision, or none, finishes it.
    refusing.store(false, Ordering::SeqCst);
    let released = manager.release("order-keep", None).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert_eq!(released.delete_volume_on_release, Some(true));
    assert!(!sim.volumes().iter().any(|v| v.id == volume));

    // Once released too: asking for the other is refused, not answered as
    // done (the billing would take a kept volume for deleted, or the reverse).
    let err = manager
        .release("order-keep", Some(false))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Aborted(_)), "{err}");
    assert!(
        err.to_string()
            .contains("was released with delete_volume=true"),
        "{err}"
    );
    for same in [Some(true), None] {
        assert_eq!(manager.release("order-keep", same).await.unwrap(), released);
    }
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_twin_server_of_an_instance_is_deleted() {
    use pool_manager::cloud::{Cloud, ServerSpec, META_INSTANCE, META_POOL};
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let instance = manager.list_instances(None).await.unwrap().remove(0);
    let recorded = instance.server_id.clone().unwrap();
    // What a create retried after its lost answer leaves when the first
    // create completes late: a second server naming the same instance.
    let twin = sim
        .create_server(&ServerSpec {
            name: format!("warmpool-{}", instance.id),
            pool: pool(),
            image: "mysql-8.0".into(),
            metadata: [
                (META_POOL.to_string(), pool().to_string()),
                (META_INSTANCE.to_string(), instance.id.clone()),
            ]
            .into(),
        })
        .await
        .unwrap();
    manager.reconcile().await.unwrap();
    let left: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert_eq!(left, [recorded], "the twin {} survived", twin.id);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn pools_are_created_updated_and_drained() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    assert!(matches!(
        manager.create_pool(pool(), spec(1)).await.unwrap_err(),
        ManagerError::PoolExists(_)
    ));
    // A flavor or image the cloud does not know is refused at once, and
    // nothing is created or changed.
    let unknown_flavor = PoolKey::new("db.huge", "az1");
    let err = manager
        .create_pool(unknown_flavor.clone(), spec(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("db.huge")),
        "{err:?}"
    );
    assert!(manager.get_pool(&unknown_flavor).await.is_err());
    let mut typo = spec(1);
    typo.image = "msyql-8.0".into();
    let err = manager
        .create_pool(PoolKey::new("db.large", "az1"), typo)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("msyql-8.0")),
        "{err:?}"
    );
    let err = manager
        .update_pool(&pool(), |s| s.image = "msyql-8.0".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert_eq!(
        manager.get_pool(&pool()).await.unwrap().record.spec.image,
        "mysql-8.0"
    );
    let err = manager
        .update_pool(&pool(), |s| s.max_ready = 0)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ManagerError::InvalidArgument {
            field: "max_ready",
            ..
        }
    ));
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .record
            .spec
            .max_ready,
        8,
        "refused update changed nothing"
    );

    manager
        .update_pool(&pool(), |s| s.min_ready = 4)
        .await
        .unwrap();
    wait_ready(&manager, 4).await;

    let allocation = manager
        .allocate(request("keep", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    // Created again while it drains: not "already exists", but when it may be.
    let err = manager.create_pool(pool(), spec(1)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("is being deleted") && m.contains("once it is gone")),
        "{err:?}"
    );
    for _ in 0..600 {
        if manager.get_pool(&pool()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(matches!(
        manager.get_pool(&pool()).await.unwrap_err(),
        ManagerError::PoolNotFound(_)
    ));
    // Only the allocated server is left; the allocation is untouched.
    let servers = sim.servers();
    assert_eq!(servers.len(), 1);
    assert_eq!(Some(&servers[0].server.id), allocation.server_id.as_ref());
    assert_eq!(
        manager.get_allocation("keep").await.unwrap().state,
        AllocationState::Allocated
    );
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn events_report_boots_allocations_and_leaks() {
    use pool_manager::events::{AllocationOutcome, BootOutcome, EventKind};
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager
        .allocate(request("ev", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let leak = sim.inject_leak(&pool());
    manager.reconcile().await.unwrap();

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event.kind);
    }
    assert!(seen.iter().any(|k| matches!(k, EventKind::Boot { outcome: BootOutcome::Ready, lead_time: Some(lead_time) } if *lead_time >= Duration::from_secs(25))), "{seen:?}");
    assert!(
        seen.iter().any(|k| matches!(
            k,
            EventKind::Allocation {
                outcome: AllocationOutcome::Warm,
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&EventKind::LeakDeleted { server_id: leak }),
        "{seen:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// cloudsim, except that the first call of each of `create_volume`,
/// `create_port`, `attach_volume` and `attach_port` is answered 429 with
/// `retry_after` (without reaching the cloud, as a real 429).
fn throttle_first(
    sim: &std::sync::Arc<cloudsim::SimCloud>,
    retry_after: Duration,
) -> std::sync::Arc<GatedCloud> {
    let seen = std::sync::Mutex::new(HashSet::new());
    GatedCloud::with_fault(sim, move |method| {
        let allocating = matches!(
            method,
            "create_volume" | "create_port" | "attach_volume" | "attach_port"
        );
        (allocating && seen.lock().unwrap().insert(method)).then(|| {
            pool_manager::cloud::CloudError::Throttled {
                retry_after: Some(retry_after),
                message: format!("{method}: slow down"),
                unavailable: false,
            }
        })
    })
}

/// A manager over `throttle_first` with one paused pool of `n` Ready instances.
async fn throttled_at_first(
    retry_after: Duration,
    n: u32,
) -> (
    std::sync::Arc<cloudsim::SimCloud>,
    pool_manager::PoolManager,
) {
    let sim = sim();
    // Paused: the replenisher does not replace what the allocation takes.
    let manager = started_paused(&throttle_first(&sim, retry_after), temp_store(), n).await;
    (sim, manager)
}

#[tokio::test(start_paused = true)]
async fn throttled_attach_and_create_calls_wait_out_retry_after_on_the_same_instance() {
    let (sim, manager) = throttled_at_first(Duration::from_secs(7), 2).await;
    let servers_before: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    let mut events = manager.events();
    let allocation = manager
        .allocate(request(
            "order-429",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    // The first instance was kept: nothing was discarded.
    let servers_after: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert_eq!(servers_before, servers_after);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1);
    assert_eq!(status.count(InstanceState::Deleting), 0);
    // Each branch waited out two Retry-Afters of 7 s (create, then attach),
    // stretched by at most 20 % of jitter.
    for (step, took) in [
        ("volume", allocation.timings.volume),
        ("port", allocation.timings.port),
    ] {
        assert!(
            took >= Duration::from_secs(14) && took < Duration::from_secs(25),
            "{step} took {took:?}"
        );
    }
    // The cloud saw each call once, after the 429s.
    let calls = sim.call_counts();
    for method in [
        "create_volume",
        "attach_volume",
        "create_port",
        "attach_port",
    ] {
        assert_eq!(calls.get(method), Some(&1), "{method}: {calls:?}");
    }
    // The pauses were taken, jittered: not all exactly 7 s.
    let mut pauses = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let pool_manager::events::EventKind::Throttled { pause, .. } = event.kind {
            pauses.push(pause);
        }
    }
    assert_eq!(pauses.len(), 4, "{pauses:?}");
    assert!(pauses
        .iter()
        .all(|p| *p >= Duration::from_secs(7) && *p <= Duration::from_millis(8400)));
    assert!(
        pauses.iter().any(|p| *p != Duration::from_secs(7)),
        "{pauses:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// A purchase's 429/413 is one its zone's gate counts (GetPool's
/// `throttled_responses`, "429/413 answers seen in the AZ") and a pause of
/// the service that answered, every AZ's: Nova answered the attach, so new
/// refill boots in every zone wait (the cloud named how long). An attach is
/// no boot's call: the zone's window is not halved (only a boot's own Nova
/// 429, a cold boot's quota poll's too, halves it). The purchase itself
/// waits out its own Retry-After and goes on with the instance it has. It
/// never told the gate: refills kept adding calls to a cloud that was
/// turning a purchase away.
#[tokio::test(start_paused = true)]
async fn a_purchases_attach_429_pauses_nova_refills_in_every_zone_and_halves_no_window() {
    use pool_manager::events::CloudService;
    use pool_manager::gate::Hold;
    let sim = sim();
    let first = AtomicBool::new(true);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "attach_volume" && first.swap(false, Ordering::SeqCst)).then(|| {
            pool_manager::cloud::CloudError::Throttled {
                retry_after: Some(Duration::from_secs(60)),
                message: "attach_volume: slow down".into(),
                unavailable: false,
            }
        })
    });
    let manager = started_paused(&cloud, temp_store(), 1).await;
    // A pool of another zone, which the purchase never touches.
    let elsewhere = PoolKey::new("db.small", "az2");
    manager
        .create_pool(elsewhere.clone(), spec(1))
        .await
        .unwrap();
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!((gate.throttled, gate.hold), (0, None), "{gate:?}");
    let decreases_before = gate.decreases;
    let mut order = request("order-wait-429", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let buyer = manager.clone();
    let purchase = tokio::spawn(async move { buyer.allocate(order).await });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.throttled, 1, "{gate:?}");
    let held_by_nova = |hold: Option<Hold>| matches!(hold, Some(Hold::Throttled { until, service: CloudService::Compute }) if until >= tokio::time::Instant::now() + Duration::from_secs(40));
    assert!(held_by_nova(gate.hold), "{gate:?}");
    assert_eq!(
        gate.decreases, decreases_before,
        "an attach halved the window: {gate:?}"
    );
    let other = manager.get_pool(&elsewhere).await.unwrap().sizing.gate;
    assert!(held_by_nova(other.hold), "az2 not paused: {other:?}");
    let allocation = purchase.await.unwrap().unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    assert_eq!(sim.call_counts().get("attach_volume"), Some(&1));
    assert_consistent(&sim, &manager).await;
}

/// A purchase's Cinder 429 is Cinder's pause: refills call Nova alone,
/// so they go on booting meanwhile, and the zone's boot window (its
/// compute hosts) stays. It paused the zone's Nova refills for the
/// Retry-After and halved the window, though Nova was never throttled.
/// The purchase still waits out its own Retry-After.
#[tokio::test(start_paused = true)]
async fn a_cinder_429_on_a_purchase_neither_pauses_refills_nova_boots_nor_halves_the_window() {
    let sim = sim();
    let first = AtomicBool::new(true);
    let cloud = GatedCloud::with_fault(&sim, move |method| {
        (method == "create_volume" && first.swap(false, Ordering::SeqCst)).then(|| {
            pool_manager::cloud::CloudError::Throttled {
                retry_after: Some(Duration::from_secs(120)),
                message: "create_volume: slow down".into(),
                unavailable: false,
            }
        })
    });
    let manager = started_over(&cloud, temp_store(), 1).await;
    let before = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    let creates = || sim.call_counts().get("create_server").copied().unwrap_or(0);
    let created_before = creates();
    let mut order = request("order-cinder-429", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(600));
    let buyer = manager.clone();
    let started = tokio::time::Instant::now();
    let purchase = tokio::spawn(async move { buyer.allocate(order).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gate = manager.get_pool(&pool()).await.unwrap().sizing.gate;
    assert_eq!(gate.throttled, 1, "counted in the zone: {gate:?}");
    assert_eq!(gate.hold, None, "Nova's refills wait for Cinder: {gate:?}");
    assert_eq!(
        (gate.window, gate.decreases),
        (before.window, before.decreases),
        "{gate:?}"
    );
    // The pool wants one more (the purchase makes its volume before it
    // takes an instance): its refill boots during Cinder's pause.
    manager
        .update_pool(&pool(), |s| s.min_ready = 2)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        creates() > created_before,
        "a refill boots during Cinder's pause"
    );
    let allocation = purchase.await.unwrap().unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    assert!(started.elapsed() >= Duration::from_secs(120));
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_fails_the_request_without_sleeping_through_it() {
    let (sim, manager) = throttled_at_first(Duration::from_secs(600), 2).await;
    let mut order = request("order-late", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    let err = manager.allocate(order).await.unwrap_err();
    assert!(err.to_string().contains("throttled"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // Rolled back. The volume and port creates were throttled before any
    // instance was claimed, so both are still Ready.
    assert!(manager.get_allocation("order-late").await.is_err());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn allocations_get_through_a_rate_limited_cloud_without_losing_instances() {
    // cloudsim's own rate limit: 2 calls/s, burst 3, answering 429 with the
    // time until the next token.
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        rate_limit: Some(cloudsim::RateLimit {
            per_second: 2.0,
            burst: 3,
        }),
        ..cloudsim::SimConfig::deterministic()
    });
    let manager = started(&sim, temp_store(), 4).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let manager = manager.clone();
        let mut order = request(&format!("rl-{i}"), new_volume(), EmptyPoolPolicy::FailFast);
        order.timeout = Some(Duration::from_secs(600));
        tasks.push(tokio::spawn(async move { manager.allocate(order).await }));
    }
    for task in tasks {
        let allocation = task.await.unwrap().unwrap();
        assert!(allocation.warm_hit);
    }
    // Three allocations, three instances: none was discarded for a 429.
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Allocated), 3);
    assert_eq!(status.count(InstanceState::Ready), 1);
    assert_eq!(sim.servers().len(), 4);
    assert_consistent(&sim, &manager).await;
}

/// A drain lists the pool's Ready instances, then discards them one by one;
/// an Allocate that started before the drain claims one in between. The
/// drain must leave it to the Allocate, whose answer must name a live server.
/// A caller that gives up on an Allocate (a gRPC client's deadline drops
/// the call) does not stop it: the purchase finishes, and the caller's
/// retry with the same request id gets its answer at once, instead of
/// waiting for the reconciler to roll a half-done purchase back.
#[tokio::test(start_paused = true)]
async fn an_allocate_its_caller_gave_up_on_still_finishes() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let attaching = cloud.hold_next("attach_port", At::Before);
    let order = || {
        let mut order = request("order-gone", new_volume(), EmptyPoolPolicy::FailFast);
        order.timeout = Some(Duration::from_secs(10));
        order
    };
    let gave_up = tokio::time::timeout(Duration::from_secs(1), manager.allocate(order())).await;
    assert!(gave_up.is_err(), "the held Allocate answered");

    attaching.release();
    let retried = manager.allocate(order()).await.expect("the retry's answer");
    assert_eq!(retried.state, AllocationState::Allocated);
    assert!(retried.warm_hit);
    assert_consistent(&sim, &manager).await;
}

/// A caller that gives up on a Release (a gRPC client's deadline drops the
/// call while the server is being deleted) does not stop it: the release
/// finishes and is announced now, not at the next reconcile pass.
#[tokio::test(start_paused = true)]
async fn a_release_its_caller_gave_up_on_still_finishes() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request(
            "order-gone",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    let mut events = manager.events();
    let deleting = cloud.hold_next("delete_server", At::Before);
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        manager.release("order-gone", Some(true)),
    )
    .await;
    assert!(gave_up.is_err(), "the held Release answered");

    deleting.release();
    // Far less than the tests' reconcile interval (a day).
    announced(
        &mut events,
        EventKind::Released,
        Duration::from_secs(600),
        "the release",
    )
    .await;
    let released = manager.get_allocation("order-gone").await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    assert_consistent(&sim, &manager).await;
}

/// An Allocate that finds the pool empty, then gets an instance that fails
/// (its host fails during the attach), then finds the pool empty again is
/// still one call that found it empty: counted once.
#[tokio::test(start_paused = true)]
async fn an_allocate_finding_the_pool_empty_twice_is_counted_once() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let pause = |paused: bool| {
        let manager = manager.clone();
        async move {
            manager
                .update_pool(&pool(), move |s| s.paused = paused)
                .await
                .unwrap();
        }
    };
    manager
        .allocate(request("order-a", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let mut events = manager.events();
    let attaching = cloud.hold_next("attach_port", At::Before);
    let waiting = {
        let manager = manager.clone();
        let mut order = request("order-b", new_volume(), EmptyPoolPolicy::Wait);
        order.timeout = Some(Duration::from_secs(900));
        tokio::spawn(async move { manager.allocate(order).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    pause(false).await;
    attaching.reached().await;
    pause(true).await;
    let claimed = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.request_id.as_deref() == Some("order-b"))
        .unwrap();
    assert!(sim.fail_server(claimed.server_id.as_deref().unwrap(), "host down"));
    attaching.release();
    tokio::time::sleep(Duration::from_secs(5)).await;
    pause(false).await;
    let allocation = waiting.await.unwrap().expect("the next instance");
    assert_ne!(allocation.instance_id, Some(claimed.id));

    let mut exhausted = 0;
    while let Ok(event) = events.try_recv() {
        exhausted += usize::from(matches!(event.kind, EventKind::Exhausted));
    }
    assert_eq!(exhausted, 1);
    assert_consistent(&sim, &manager).await;
}

/// Two Releases of one allocation at once (billing's retry): the second
/// waits for the first, which alone does the deletes and reports the
/// release: one release counted, and both answer the stored record.
#[tokio::test(start_paused = true)]
async fn two_releases_at_once_are_one_release() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    manager
        .allocate(request("order-r", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let mut events = manager.events();
    let deleting = cloud.hold_next("delete_port", At::Before);
    let first = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.release("order-r", None).await })
    };
    deleting.reached().await;
    let second = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.release("order-r", None).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!second.is_finished(), "the second waits for the first");
    deleting.release();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();

    let stored = manager.get_allocation("order-r").await.unwrap();
    assert_eq!(stored.state, AllocationState::Released);
    assert_eq!(first, stored);
    assert_eq!(second, stored);
    let mut released = 0;
    while let Ok(event) = events.try_recv() {
        released += usize::from(matches!(event.kind, EventKind::Released));
    }
    assert_eq!(released, 1);
    assert_consistent(&sim, &manager).await;
}

/// A store lost or swapped for an empty one (an operator wiping the data
/// directory to get past a store that will not open, then starting with
/// `delete_unknown_servers`) must not cost tenants their databases: the
/// reconciler deletes pool servers the store does not know, but not one
/// with a volume attached, which only a purchase gives a pool server. It is
/// left alone (and logged).
#[tokio::test(start_paused = true)]
async fn a_server_with_a_tenant_volume_is_never_deleted_as_a_leak() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let allocation = manager
        .allocate(request("order-t", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let tenant = allocation.server_id.unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);

    let manager = on_a_store_meant_to_be_new(temp_store(), sim.clone(), &sim);
    manager.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let servers: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert_eq!(servers, [tenant], "only the warm servers are leaks");
}

/// Such a server is counted as left alone (`servers_left_alone`, which the
/// metrics read; the passes only logged it): from the pass that found it,
/// by a pass that could not read it again too, and no more once it is gone.
#[tokio::test(start_paused = true)]
async fn a_sold_server_the_store_does_not_know_is_counted_as_left_alone_until_gone() {
    use pool_manager::cloud::{Cloud, CloudError};
    use pool_manager::LeftAlone;
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let sold = manager
        .allocate(request("order-t", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let tenant = sold.server_id.unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);

    let (cloud, unreadable) =
        GatedCloud::failing_next(&sim, "get_server", CloudError::Transient("HTTP 503".into()));
    // A store meant to be new, as the test before.
    let manager = on_a_store_meant_to_be_new(temp_store(), cloud.clone(), &sim);
    assert_eq!(manager.servers_left_alone()[&LeftAlone::UnknownSold], 0);
    manager.start().await.unwrap();
    let left_alone = |manager: &pool_manager::PoolManager| {
        let counts = manager.servers_left_alone();
        (
            counts[&LeftAlone::UnknownSold],
            counts[&LeftAlone::SetAside],
        )
    };
    assert_eq!(left_alone(&manager), (1, 0));
    // The warm servers deleted as leaks are gone; the tenant's stays.
    tokio::time::sleep(Duration::from_secs(30)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(left_alone(&manager), (1, 0));
    unreadable.store(u32::MAX, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    unreadable.store(0, Ordering::SeqCst);
    assert_eq!(left_alone(&manager), (1, 0), "unread, still there");

    // Deleted by hand once billing has settled it.
    sim.delete_server(&tenant).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(left_alone(&manager), (0, 0));
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
}

/// A manager on `sim` fills a pool of `ready`, sells one (order `o-1`) and
/// stops, leaving its servers: the sold one's id.
async fn sold_one_and_filled(sim: &Arc<cloudsim::SimCloud>, ready: u32) -> String {
    let manager = started(sim, temp_store(), ready).await;
    let sold = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap()
        .server_id
        .unwrap();
    wait_ready(&manager, ready).await;
    manager.shutdown().await.unwrap();
    sold
}

/// The ids of `sim`'s servers, sorted.
fn server_ids(sim: &cloudsim::SimCloud) -> Vec<String> {
    let mut ids: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    ids.sort();
    ids
}

/// A manager started on a store that knows no instance and no order (a
/// mistyped or relative data dir, an unmounted volume's empty mount point,
/// a store wiped after corruption, a second manager sharing the cloud)
/// over a cloud holding pool servers would take every one for a leak:
/// delete the warm ones, leave the sold ones (logging an error at every
/// pass) and answer their orders NOT_FOUND. Its start is refused before
/// anything is deleted, counting them and the sold ones. Pools alone do not
/// count: warmpoold writes its declared pools at every start.
#[tokio::test(start_paused = true)]
async fn a_start_on_a_store_that_knows_nothing_over_pool_servers_is_refused() {
    use pool_manager::events::EventKind;
    let sim = sim();
    sold_one_and_filled(&sim, 3).await;
    let servers = || server_ids(&sim);
    let before = servers();
    assert_eq!(before.len(), 4);

    // A store that has the pool (and what was learned of it), nothing else.
    let store = temp_store();
    let elsewhere = manager_on(&common::sim(), store.clone());
    elsewhere.start().await.unwrap();
    elsewhere.create_pool(pool(), spec(0)).await.unwrap();
    elsewhere.shutdown().await.unwrap();
    drop(elsewhere);

    let fresh = manager_on(&sim, store.clone());
    let mut events = fresh.events();
    let refused = fresh.start().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let mut leaks = 0;
    while let Ok(event) = events.try_recv() {
        leaks += usize::from(matches!(event.kind, EventKind::LeakDeleted { .. }));
    }
    assert_eq!(
        servers(),
        before,
        "start: {refused:?}; {leaks} leaks deleted"
    );
    match refused {
        Err(
            e @ ManagerError::UnknownServers {
                servers: 4,
                sold: 1,
                adopted: false,
            },
        ) => {
            assert!(e.to_string().contains("delete_unknown_servers"), "{e}")
        }
        other => panic!("started on a store that knows none of them: {other:?}"),
    }
    fresh.shutdown().await.unwrap();
    drop(fresh);

    // Servers on their way out are no one's: the store starts over them.
    for id in &before {
        pool_manager::cloud::Cloud::delete_server(sim.as_ref(), id)
            .await
            .unwrap();
    }
    assert!(sim.servers().iter().all(|s| s.server.deleting));
    manager_on(&sim, store).start().await.unwrap();
}

/// `delete_unknown_servers` is for one start: the start it lets go on
/// notes the store as meant to be new, so a later start on that store is
/// not refused though that start wrote nothing else (the sold server left
/// alone, a pool at target 0: no instance, no order).
#[tokio::test(start_paused = true)]
async fn delete_unknown_servers_is_needed_for_one_start_only() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);

    let store = temp_store();
    let flagged = on_a_store_meant_to_be_new(store.clone(), sim.clone(), &sim);
    flagged.start().await.unwrap();
    flagged.create_pool(pool(), spec(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    flagged.shutdown().await.unwrap();
    drop(flagged);
    assert!(store.list_instances().await.unwrap().is_empty());
    assert!(store.list_allocations().await.unwrap().is_empty());

    let again = manager_on(&sim, store.clone());
    let started = again.start().await;
    assert!(
        started.is_ok(),
        "the next start, without the flag: {started:?}"
    );
    assert_eq!(sim.servers().len(), 1, "the sold server is left alone");
    again.shutdown().await.unwrap();
    drop(again);

    // Another store that knows nothing is still refused.
    let refused = manager_on(&sim, temp_store()).start().await;
    assert!(
        matches!(
            refused,
            Err(ManagerError::UnknownServers {
                servers: 1,
                sold: 1,
                adopted: false,
            })
        ),
        "{refused:?}"
    );
}

/// `delete_unknown_servers` is for one start, as `adopt_cloud` is: left
/// set (in a unit's ExecStart, a StatefulSet's args), a later start on the
/// wrong store (a mistyped data dir, an unmounted volume) deletes the pool
/// servers that store does not know as leaks. A start with it that did
/// not need it (its store knows its servers, or the cloud lists none it
/// does not know) warns once to remove it, naming the flag as the
/// operator gave it; the start it lets go on over unknown servers does
/// not.
#[tokio::test(start_paused = true)]
async fn delete_unknown_servers_left_set_is_warned_of() {
    let logs = Logs::capture();
    let warned = |from: usize| -> Vec<String> {
        logs.text()[from..]
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("--delete-unknown-servers"))
            .map(str::to_owned)
            .collect()
    };
    let start_flagged = |store: Arc<dyn pool_manager::store::Store>,
                         sim: Arc<cloudsim::SimCloud>| async move {
        let manager = on_a_store_meant_to_be_new(store, sim.clone(), &sim);
        manager.start().await.unwrap();
        manager.shutdown().await.unwrap();
    };

    // A new store over an empty cloud: nothing to delete.
    let before = logs.text().len();
    start_flagged(temp_store(), sim()).await;
    assert_eq!(warned(before).len(), 1, "{}", &logs.text()[before..]);

    // A new store over servers it does not know: what the flag is for.
    let sim = sim();
    sold_one_and_filled(&sim, 1).await;
    let store = temp_store();
    let before = logs.text().len();
    start_flagged(store.clone(), sim.clone()).await;
    assert_eq!(warned(before), Vec::<String>::new());

    // The same store again, the flag left set: not needed.
    let before = logs.text().len();
    start_flagged(store.clone(), sim.clone()).await;
    let again = warned(before);
    assert_eq!(again.len(), 1, "{}", &logs.text()[before..]);
    for part in ["--delete-unknown-servers is set", "one start", "remove"] {
        assert!(again[0].contains(part), "{part:?} not in: {}", again[0]);
    }
    assert!(!again[0].contains("delete_unknown_servers"), "{}", again[0]);
}

/// A store records the cloud it serves at its first start: its records
/// name that cloud's servers, volumes and ports, and its pools would boot
/// wherever it is started. A start over another cloud is refused before
/// anything is booted, deleted or reconciled, naming both; with
/// `adopt_cloud` it goes on and records the new cloud in the store, so a
/// later start needs no flag.
#[tokio::test(start_paused = true)]
async fn a_store_of_another_cloud_is_refused_before_anything_is_done() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::model::PoolRecord;
    let sim = sim();
    let cloud = on_a_project(&sim);
    let store = temp_store();
    let other = CloudIdentity::OpenStack {
        project_id: "0123abcd".into(),
        region: None,
        server_tag: "warmpool".into(),
    };
    store.record_cloud_identity(&other).await.unwrap();
    store
        .put_pool(&PoolRecord::new(pool(), spec(2)))
        .await
        .unwrap();
    store.flush().await.unwrap();

    let refused = manager_over(&cloud, store.clone()).start().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    match refused {
        Err(e @ ManagerError::CloudChanged { .. }) => {
            let message = e.to_string();
            for part in [
                r#"OpenStack project 0123abcd under the server tag "warmpool""#,
                r#"OpenStack project cloudsim-project in region RegionOne under the server tag "warmpool""#,
                "start once with adopt_cloud",
            ] {
                assert!(message.contains(part), "{part:?} not in: {message}");
            }
        }
        other => panic!("started on another cloud's store: {other:?}"),
    }
    assert_eq!(sim.total_calls(), 0, "{:?}", sim.call_counts());
    assert_eq!(store.cloud_identity().await.unwrap(), Some(other));

    let adopting = adopting_the_store(store.clone(), cloud.clone(), &sim, false);
    adopting.start().await.unwrap();
    assert_eq!(store.cloud_identity().await.unwrap(), Some(a_project()));
    wait_ready(&adopting, 2).await;
    adopting.shutdown().await.unwrap();
    drop(adopting);

    let again = manager_over(&cloud, store.clone());
    let started = again.start().await;
    assert!(
        started.is_ok(),
        "the next start, without the flag: {started:?}"
    );
    again.shutdown().await.unwrap();
}

/// The embedded simulated cloud adopts no store. It is new at every
/// start and boots nothing real: a store of an OpenStack project started
/// on it with `adopt_cloud` (warmpoold's `--adopt-cloud` without
/// `--config`, which runs the demo) would forget the project's warm
/// servers as gone, drop its pools' boot lead times, boot its pools in
/// the simulation and record the demo as its cloud, so that the next
/// start with the right config is refused. Refused before anything is
/// done, the recorded cloud unchanged, and the refusal does not offer
/// the flag it was given.
#[tokio::test(start_paused = true)]
async fn the_embedded_cloud_adopts_no_store() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::model::PoolRecord;
    let sim = sim();
    let store = temp_store();
    let real = CloudIdentity::OpenStack {
        project_id: "0123abcd".into(),
        region: Some("RegionOne".into()),
        server_tag: "warmpool".into(),
    };
    store.record_cloud_identity(&real).await.unwrap();
    store
        .put_pool(&PoolRecord::new(pool(), spec(2)))
        .await
        .unwrap();
    store.flush().await.unwrap();

    for adopt_cloud in [true, false] {
        let manager = if adopt_cloud {
            adopting_the_store(store.clone(), sim.clone(), &sim, false)
        } else {
            manager_on(&sim, store.clone())
        };
        let refused = manager.start().await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        match refused {
            Err(e @ ManagerError::CloudChanged { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("the embedded simulated cloud adopts no store"),
                    "adopt_cloud {adopt_cloud}: {message}"
                );
                assert!(
                    !message.contains("start once with adopt_cloud"),
                    "adopt_cloud {adopt_cloud}: {message}"
                );
            }
            other => panic!("adopt_cloud {adopt_cloud}: the embedded cloud started: {other:?}"),
        }
        assert_eq!(sim.total_calls(), 0, "{:?}", sim.call_counts());
        assert_eq!(store.cloud_identity().await.unwrap(), Some(real.clone()));
        assert_eq!(store.list_pools().await.unwrap().len(), 1);
        assert!(store.list_instances().await.unwrap().is_empty());
        manager.shutdown().await.unwrap();
    }
}

/// A store an older version wrote recorded no cloud: its first start
/// records the manager's, refusing nothing.
#[tokio::test(start_paused = true)]
async fn a_store_that_recorded_no_cloud_records_the_one_it_starts_on() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::model::PoolRecord;
    let sim = sim();
    let store = temp_store();
    store
        .put_pool(&PoolRecord::new(pool(), spec(1)))
        .await
        .unwrap();
    assert_eq!(store.cloud_identity().await.unwrap(), None);
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    assert_eq!(
        store.cloud_identity().await.unwrap(),
        Some(CloudIdentity::Embedded)
    );
    wait_ready(&manager, 1).await;
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A server tag renamed in the same project and region: the store's
/// servers are this cloud's, though the listing by the new tag shows none
/// of them. The start is refused as a change of tag, not of cloud (which
/// would say the store's servers are not there); adopted, the store keeps
/// serving the servers it has records of, by their ids: the sold one and
/// its order intact, the Ready ones under the old tag sold on, a release
/// deleting its server. Only the servers it has no record of under the
/// old tag are left to an operator.
#[tokio::test(start_paused = true)]
async fn a_store_adopted_under_a_new_server_tag_keeps_serving_its_servers() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    cloud.tag_servers("warmpool-a");
    let store = temp_store();
    let manager = started_over(&cloud, store.clone(), 2).await;
    let sold = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
    drop(manager);
    let ready: HashSet<String> = store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state == InstanceState::Ready)
        .map(|i| i.id)
        .collect();
    assert_eq!(ready.len(), 2);
    let servers_before = sim.servers().len();

    cloud.tag_servers("warmpool-b");
    let refused = manager_over(&cloud, store.clone()).start().await;
    match refused {
        Err(e @ ManagerError::CloudChanged { .. }) => {
            let message = e.to_string();
            for part in [
                r#"the server tag "warmpool-b""#,
                "the servers it has records of",
                "adopt_cloud",
            ] {
                assert!(message.contains(part), "{part:?} not in: {message}");
            }
            assert!(!message.contains("never had"), "{message}");
        }
        other => panic!("started under another tag: {other:?}"),
    }

    let adopting = adopting_the_store(store.clone(), cloud.clone(), &sim, false);
    adopting.start().await.unwrap();
    adopting.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    adopting.reconcile().await.unwrap();
    assert!(
        sim.servers().iter().all(|s| !s.server.deleting),
        "{:?}",
        sim.servers()
    );
    assert_eq!(sim.servers().len(), servers_before);
    let order = adopting.get_allocation("o-1").await.unwrap();
    assert_eq!(order.state, AllocationState::Allocated);
    assert_eq!(order.server_id, sold.server_id);
    let instance = store
        .get_instance(sold.instance_id.as_deref().unwrap())
        .await
        .unwrap()
        .expect("the sold instance is kept");
    assert_eq!(instance.state, InstanceState::Allocated);
    let still: HashSet<String> = adopting
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state == InstanceState::Ready)
        .map(|i| i.id)
        .collect();
    assert_eq!(still, ready);
    let sale = adopting
        .allocate(request("o-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(
        ready.contains(sale.instance_id.as_deref().unwrap()),
        "{sale:?}"
    );

    adopting.release("o-1", None).await.unwrap();
    let server = sold.server_id.as_deref().unwrap();
    assert!(
        sim.server(server).is_none_or(|s| s.server.deleting),
        "the released server under the old tag is deleted"
    );
    assert_consistent(&sim, &adopting).await;
    adopting.shutdown().await.unwrap();
}

/// A store adopted from another cloud knows none of this cloud's servers,
/// as a new store knows none: its start-up pass takes none of them for a
/// leak unless told so. Over a cloud listing pool servers it has no
/// record of (another manager's, sharing the project and tag), a start
/// with `adopt_cloud` is refused before anything is deleted
/// (`UnknownServers`), the store still recording the other cloud, so a
/// start without the flag is refused as before; with
/// `delete_unknown_servers` too, the unsold ones are deleted as leaks, the
/// sold one left alone, and the new cloud is recorded.
#[tokio::test(start_paused = true)]
async fn an_adopted_store_takes_no_server_it_does_not_know_for_a_leak_unless_told() {
    use pool_manager::cloud::CloudIdentity;
    let sim = sim();
    let sold = sold_one_and_filled(&sim, 2).await;
    let servers = || server_ids(&sim);
    let before = servers();
    assert_eq!(before.len(), 3);

    // A store with instances of its own, on a cloud of other ids.
    let elsewhere = cloudsim::SimCloud::new(cloudsim::SimConfig {
        id_salt: 7,
        ..cloudsim::SimConfig::deterministic()
    });
    let store = temp_store();
    let ours = started(&elsewhere, store.clone(), 1).await;
    ours.shutdown().await.unwrap();
    drop(ours);
    let other = CloudIdentity::OpenStack {
        project_id: "0123abcd".into(),
        region: Some("RegionOne".into()),
        server_tag: "warmpool".into(),
    };
    store.record_cloud_identity(&other).await.unwrap();
    store.flush().await.unwrap();
    let cloud = on_a_project(&sim);
    let adopting = |delete_unknown_servers: bool| {
        adopting_the_store(store.clone(), cloud.clone(), &sim, delete_unknown_servers)
    };

    let refused_by = adopting(false);
    let refused = refused_by.start().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(servers(), before, "start: {refused:?}");
    assert!(sim.servers().iter().all(|s| !s.server.deleting));
    match refused {
        Err(
            e @ ManagerError::UnknownServers {
                servers: 3,
                sold: 1,
                adopted: true,
            },
        ) => {
            let message = e.to_string();
            assert!(message.contains("adopted"), "{message}");
            assert!(message.contains("delete_unknown_servers"), "{message}");
        }
        other => panic!("adopted over servers it does not know: {other:?}"),
    }
    assert_eq!(store.cloud_identity().await.unwrap(), Some(other));
    refused_by.shutdown().await.unwrap();
    drop(refused_by);
    let again = manager_over(&cloud, store.clone()).start().await;
    assert!(
        matches!(again, Err(ManagerError::CloudChanged { .. })),
        "{again:?}"
    );

    let told = adopting(true);
    told.start().await.unwrap();
    assert_eq!(store.cloud_identity().await.unwrap(), Some(a_project()));
    for id in &before {
        let server = sim.server(id);
        if *id == sold {
            assert!(server.is_some_and(|s| !s.server.deleting), "the sold one");
        } else {
            assert!(server.is_none_or(|s| s.server.deleting), "unsold {id}");
        }
    }
    told.shutdown().await.unwrap();
}

/// `adopt_cloud` is for one start: left set (in a unit's ExecStart, a
/// StatefulSet's args), it would let a later start on a store of another
/// cloud take that store over unasked. A start with it on a store that
/// serves this cloud already, or records its first, warns once to remove
/// it, naming the flag, `--adopt-cloud`.
#[tokio::test(start_paused = true)]
async fn adopt_cloud_left_set_on_a_store_of_this_cloud_is_warned_of() {
    use pool_manager::cloud::CloudIdentity;
    let logs = Logs::capture();
    let sim = sim();
    for recorded in [Some(CloudIdentity::Embedded), None] {
        let store = temp_store();
        if let Some(recorded) = &recorded {
            store.record_cloud_identity(recorded).await.unwrap();
        }
        let before = logs.text().len();
        let manager = adopting_the_store(store.clone(), sim.clone(), &sim, false);
        manager.claim_store().await.unwrap();
        manager.start().await.unwrap();
        manager.shutdown().await.unwrap();
        let text = logs.text()[before..].to_owned();
        let warned: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("adopt"))
            .collect();
        assert_eq!(warned.len(), 1, "recorded {recorded:?}:\n{text}");
        // Named as the operator gave it, not by the settings' field.
        assert!(
            warned[0].contains("--adopt-cloud is set") && !warned[0].contains("adopt_cloud"),
            "{}",
            warned[0]
        );
        for part in ["one start", "remove"] {
            assert!(warned[0].contains(part), "{part:?} not in: {}", warned[0]);
        }
    }
}

/// A second call with the request id of an Allocate in flight waits for its
/// answer, and gets it when it comes, also when the pool was deleted in the
/// meantime (so no change of the pool's purchase count wakes it).
#[tokio::test(start_paused = true)]
async fn a_duplicate_call_gets_the_answer_of_the_allocate_in_flight() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let attaching = cloud.hold_next("attach_port", At::Before);
    let first = spawn_allocate(
        &manager,
        request("order-dup", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attaching.reached().await;
    let second = {
        let manager = manager.clone();
        let mut order = request("order-dup", new_volume(), EmptyPoolPolicy::FailFast);
        order.timeout = Some(Duration::from_secs(600));
        tokio::spawn(async move { manager.allocate(order).await })
    };
    // The pool goes while its only instance is being handed out.
    manager.delete_pool(&pool()).await.unwrap();
    for _ in 0..600 {
        if manager.get_pool(&pool()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(manager.get_pool(&pool()).await.is_err(), "the pool stayed");

    attaching.release();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.state, AllocationState::Allocated);
    let second = second
        .await
        .unwrap()
        .expect("the duplicate call gets the answer");
    assert_eq!(second, first);
    assert_consistent(&sim, &manager).await;
}

/// Two calls of one order naming the tenant's volume (billing's retry after
/// its deadline, a hedged request) both find no record yet. The second's
/// look at the volume lands after the first has attached it: the volume
/// is in use by the order's own server, which is no refusal of the order.
/// It answers the first's allocation, as a later duplicate does, and is
/// not counted a refused order.
#[tokio::test(start_paused = true)]
async fn a_duplicate_whose_volume_check_comes_after_the_first_attached_it_gets_the_allocation() {
    use pool_manager::events::{AllocationOutcome, EventKind};
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let mut events = manager.events();
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = || {
        request(
            "order-x",
            VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            EmptyPoolPolicy::FailFast,
        )
    };
    // The second call is first to look at the volume, and is held there
    // (as a Cinder 503 retried with backoff would hold it).
    let second_check = cloud.hold_next("get_volume", At::Before);
    let second = spawn_allocate(&manager, order());
    second_check.reached().await;
    let first = manager.allocate(order()).await.expect("the first call");
    assert_eq!(first.state, AllocationState::Allocated);
    second_check.release();
    let second = second.await.unwrap();
    assert_eq!(second.as_ref().ok(), Some(&first), "{second:?}");
    let mut outcomes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Allocation { outcome, .. } = event.kind {
            outcomes.push(outcome);
        }
    }
    assert_eq!(outcomes, [AllocationOutcome::Warm]);
    assert_consistent(&sim, &manager).await;
}

/// The same race with the order released meanwhile, its volume deleted:
/// the duplicate's look finds no volume, and answers the order as stored
/// (released), not "volume does not exist".
#[tokio::test(start_paused = true)]
async fn a_duplicate_whose_volume_check_comes_after_the_release_gets_the_released_order() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = || {
        request(
            "order-r",
            VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            EmptyPoolPolicy::FailFast,
        )
    };
    let second_check = cloud.hold_next("get_volume", At::Before);
    let second = spawn_allocate(&manager, order());
    second_check.reached().await;
    manager.allocate(order()).await.expect("the first call");
    let released = manager.release("order-r", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    second_check.release();
    let second = second.await.unwrap();
    assert_eq!(second.as_ref().ok(), Some(&released), "{second:?}");
    assert_consistent(&sim, &manager).await;
}

/// A duplicate with other parameters racing the first that way is refused
/// ABORTED (the id is taken), as it is once the order is stored: not
/// FAILED_PRECONDITION for the volume the first attached.
#[tokio::test(start_paused = true)]
async fn a_racing_call_of_an_order_with_other_parameters_is_aborted() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = || {
        request(
            "order-o",
            VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            EmptyPoolPolicy::FailFast,
        )
    };
    let mut other = order();
    other.params.labels.insert("plan".into(), "large".into());
    let second_check = cloud.hold_next("get_volume", At::Before);
    let second = spawn_allocate(&manager, other);
    second_check.reached().await;
    manager.allocate(order()).await.expect("the first call");
    second_check.release();
    let err = second.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::Aborted(_)), "{err:?}");
    assert!(err.to_string().contains("labels"), "{err}");
    assert_consistent(&sim, &manager).await;
}

/// Holds the next look at whether an order was set aside (a purchase's
/// first step, before it reads its pool) once armed, until let go.
#[derive(Default)]
struct HoldSetAsideLook {
    armed: AtomicBool,
    reached: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldSetAsideLook {
    async fn before_is_set_aside(&self, kind: pool_manager::store::RecordKind) {
        if kind == pool_manager::store::RecordKind::Allocation
            && self.armed.swap(false, Ordering::SeqCst)
        {
            self.reached.notify_one();
            self.go.notified().await;
        }
    }
}

/// A duplicate that found the order unrecorded reads its pool only after
/// the first call bought it and the pool was deleted (gone, or draining
/// while it deletes a Ready instance's server): it answers the first's
/// allocation, as a later duplicate does, not that the pool is unknown
/// or being deleted.
#[tokio::test(start_paused = true)]
async fn a_duplicate_reading_its_pool_after_the_first_bought_and_the_pool_went_gets_the_allocation()
{
    for draining in [false, true] {
        let sim = sim();
        let cloud = GatedCloud::new(&sim);
        let store = HookedStore::new(HoldSetAsideLook::default());
        let manager = started_paused(&cloud, store.clone(), 1 + u32::from(draining)).await;
        let order = || request("order-p", new_volume(), EmptyPoolPolicy::FailFast);
        store.hooks.armed.store(true, Ordering::SeqCst);
        let second = spawn_allocate(&manager, order());
        store.hooks.reached.notified().await;
        let first = manager.allocate(order()).await.expect("the first call");
        let deleting = draining.then(|| cloud.hold_next("delete_server", At::Before));
        manager.delete_pool(&pool()).await.unwrap();
        match &deleting {
            Some(deleting) => deleting.reached().await,
            None => {
                let mut changes = manager.subscribe();
                while manager.get_pool(&pool()).await.is_ok() {
                    changes.changed().await;
                }
            }
        }
        store.hooks.go.notify_one();
        let second = second.await.unwrap();
        assert_eq!(
            second.as_ref().ok(),
            Some(&first),
            "draining {draining}: {second:?}"
        );
        if let Some(deleting) = deleting {
            deleting.release();
        }
        assert_consistent(&sim, &manager).await;
    }
}

/// Both calls retry Cinder through its 503s, the second started 1.5 s
/// after the first: whichever gets through first buys, and both get its
/// allocation.
#[tokio::test(start_paused = true)]
async fn duplicates_retrying_cinder_503s_both_get_the_allocation() {
    let sim = sim();
    let (cloud, failing) = GatedCloud::failing_next(
        &sim,
        "get_volume",
        pool_manager::cloud::CloudError::Transient("HTTP 503".into()),
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    let order = || {
        request(
            "order-y",
            VolumeSource::Existing {
                volume_id: volume_id.clone(),
            },
            EmptyPoolPolicy::FailFast,
        )
    };
    failing.store(6, Ordering::SeqCst);
    let first = spawn_allocate(&manager, order());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = spawn_allocate(&manager, order());
    let first = first.await.unwrap();
    let second = second.await.unwrap();
    let first = first.expect("the first call");
    assert_eq!(first.state, AllocationState::Allocated);
    assert_eq!(second.as_ref().ok(), Some(&first), "{second:?}");
    assert_consistent(&sim, &manager).await;
}

/// An empty pool's refusal says what the caller can do about it, as fits
/// its policy: a fail-fast purchase may ask again, or wait or cold-boot; a
/// waiting one whose deadline passed may wait longer or cold-boot; either
/// may have the pool kept deeper.
#[tokio::test(start_paused = true)]
async fn an_empty_pools_refusal_says_what_to_do_next() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let err = manager
        .allocate(request(
            "fails-empty",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m == "pool db.small@az1 has no ready instance; ask again later, or with empty_pool_policy WAIT or COLD_BOOT (warmpoolctl --on-empty wait or cold-boot), or have the pool's min_ready or target raised"),
        "{err:?}"
    );
    let mut order = request("waits-empty", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(60));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m == "pool db.small@az1 had no ready instance before the deadline; ask again with a longer timeout or with empty_pool_policy COLD_BOOT (warmpoolctl --on-empty cold-boot), or have the pool's min_ready or target raised"),
        "{err:?}"
    );
    manager.shutdown().await.unwrap();
}

/// Cinder's refusal of an unknown volume type names the field of the
/// order that chose it: its own words name only the type.
#[tokio::test(start_paused = true)]
async fn an_unknown_volume_type_is_pointed_at_the_field_that_names_it() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let order = request(
        "typed",
        VolumeSource::New {
            size_gib: 1,
            volume_type: Some("no-such-type".into()),
        },
        EmptyPoolPolicy::Wait,
    );
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.starts_with("cannot create the tenant volume: ")
                && m.contains("no-such-type could not be found")
                && m.ends_with("; the order's volume type no-such-type (volume.new_volume.volume_type, warmpoolctl --volume-type) must name one of the cloud's volume types (openstack volume type list), or be left empty for its default")),
        "{err:?}"
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A purchase from a pool being deleted is refused as such (the pool still
/// shows, draining), not as an unknown pool.
#[tokio::test(start_paused = true)]
async fn a_purchase_from_a_draining_pool_is_told_it_is_being_deleted() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let draining = cloud.hold_next("delete_server", At::Before);
    manager.delete_pool(&pool()).await.unwrap();
    draining.reached().await;
    let err = manager
        .allocate(request(
            "order-late",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("is being deleted; it hands out nothing more: buy from another pool, or from this one once it is created again"),
        "{err}"
    );
    assert!(manager.get_allocation("order-late").await.is_err());
    // A change of it is refused too, saying what to do instead.
    let err = manager
        .update_pool(&pool(), |s| s.min_ready = 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m == "pool db.small@az1 is being deleted, so it takes no changes: create it again with the settings wanted once it is gone"),
        "{err:?}"
    );
    draining.release();
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_leaves_alone_an_instance_claimed_after_it_listed_the_pool() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let volume = sim.create_volume_for_test("tenant-a", "az1", 10);

    // The Allocate is past the draining check, fencing its volume.
    let fencing = cloud.hold_next("get_volume", At::Before);
    let buying = {
        let manager = manager.clone();
        let order = request(
            "order-d",
            VolumeSource::Existing { volume_id: volume },
            EmptyPoolPolicy::FailFast,
        );
        tokio::spawn(async move { manager.allocate(order).await })
    };
    fencing.reached().await;

    // The drain has listed both Ready instances and deletes the first.
    let first_delete = cloud.hold_next("delete_server", At::Before);
    manager.delete_pool(&pool()).await.unwrap();
    first_delete.reached().await;

    // The Allocate claims the other one and verifies its attachments.
    let verified = cloud.hold_next("get_server", At::After);
    fencing.release();
    verified.reached().await;

    let mut changes = manager.subscribe();
    first_delete.release();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }

    verified.release();
    let done = buying.await.unwrap().unwrap();
    assert_eq!(done.state, AllocationState::Allocated);
    let server = done.server_id.as_deref().unwrap();
    assert!(
        sim.servers().iter().any(|s| s.server.id == server),
        "the Allocate answered with server {server}, which the drain deleted"
    );
    let instance = manager
        .list_instances(None)
        .await
        .unwrap()
        .into_iter()
        .find(|i| Some(&i.id) == done.instance_id.as_ref())
        .expect("the allocated instance is kept");
    assert_eq!(instance.state, InstanceState::Allocated);
    assert_consistent(&sim, &manager).await;
}

/// Someone takes the claimed instance out of service (here: the test,
/// standing for any discard) after the Allocate verified its attachments.
/// The Allocate must not answer with it: it tries the next instance.
#[tokio::test(start_paused = true)]
async fn an_allocate_never_answers_with_an_instance_taken_from_it_after_verification() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;

    let verified = cloud.hold_next("get_server", At::After);
    let buying = spawn_allocate(
        &manager,
        request("order-t", new_volume(), EmptyPoolPolicy::FailFast),
    );
    verified.reached().await;
    let claimed = store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.state == InstanceState::Claimed)
        .expect("the Allocate claimed an instance");
    let mut deleting = claimed.clone();
    deleting.state = InstanceState::Deleting;
    assert!(store
        .cas_instance(Some(&claimed), Some(&deleting))
        .await
        .unwrap());
    verified.release();

    let done = buying.await.unwrap().unwrap();
    assert_ne!(
        done.instance_id.as_ref(),
        Some(&claimed.id),
        "the Allocate answered with an instance being deleted"
    );
    assert_consistent(&sim, &manager).await;
}

/// The first write of an instance (or, with `allocation`, of an
/// allocation) as `Allocated` fails as a full disk would.
struct FailFirstAllocated {
    allocation: bool,
    failed: AtomicBool,
}

impl FailFirstAllocated {
    fn fail(&self, allocation: bool, allocated: bool) -> StoreResult<()> {
        if allocation == self.allocation && allocated && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Io(sled::Error::Io(std::io::Error::other(
                "no space left on device",
            ))));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl StoreHooks for FailFirstAllocated {
    fn before_instance_swap(&self, new: Option<&Instance>) -> StoreResult<()> {
        self.fail(
            false,
            new.is_some_and(|i| i.state == InstanceState::Allocated),
        )
    }
    fn before_allocation_swap(&self, new: Option<&Allocation>) -> StoreResult<()> {
        self.fail(
            true,
            new.is_some_and(|a| a.state == AllocationState::Allocated),
        )
    }
}

/// The next event of `kind`, waited for at most `within`.
async fn announced(
    events: &mut tokio::sync::broadcast::Receiver<pool_manager::events::Event>,
    kind: pool_manager::events::EventKind,
    within: Duration,
    what: &str,
) -> pool_manager::events::Event {
    tokio::time::timeout(within, async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == kind {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} was never announced"))
}

/// What a disk gone bad answers.
fn disk_error() -> StoreError {
    StoreError::Io(sled::Error::Io(std::io::Error::other("input/output error")))
}

/// Every flush fails while `failing` is set, as on a disk gone bad, and
/// every pool deletion while `deletes_failing` is.
#[derive(Default)]
struct FailFlush {
    failing: AtomicBool,
    deletes_failing: AtomicBool,
}

#[async_trait::async_trait]
impl StoreHooks for FailFlush {
    fn before_delete_pool(&self) -> StoreResult<()> {
        match self.deletes_failing.load(Ordering::SeqCst) {
            true => Err(disk_error()),
            false => Ok(()),
        }
    }
    async fn before_flush(&self) -> StoreResult<()> {
        match self.failing.load(Ordering::SeqCst) {
            true => Err(disk_error()),
            false => Ok(()),
        }
    }
}

/// A CreatePool whose record cannot be flushed says call again and leaves
/// no pool behind, so a retry creates it; it left a pool that
/// was listed, answered ALREADY_EXISTS to the retry, and never filled (its
/// replenisher was not started) until a restart. A record that cannot be
/// taken back either stays, and its pool is served like any other.
#[tokio::test(start_paused = true)]
async fn a_create_pool_that_cannot_be_flushed_leaves_no_pool_or_a_served_one() {
    for undo_fails in [false, true] {
        let sim = sim();
        let store = HookedStore::new(FailFlush::default());
        let manager = manager_on(&sim, store.clone());
        manager.start().await.unwrap();
        store.hooks.failing.store(true, Ordering::SeqCst);
        store
            .hooks
            .deletes_failing
            .store(undo_fails, Ordering::SeqCst);
        let err = manager.create_pool(pool(), spec(2)).await.unwrap_err();
        let said = if undo_fails {
            "is recorded"
        } else {
            "nothing was done"
        };
        assert!(
            matches!(&err, ManagerError::TryAgain(m) if m.contains(said)),
            "{err:?}"
        );
        store.hooks.failing.store(false, Ordering::SeqCst);
        store.hooks.deletes_failing.store(false, Ordering::SeqCst);
        let listed = manager.get_pool(&pool()).await;
        if undo_fails {
            assert!(listed.is_ok(), "taken back after all");
        } else {
            assert!(
                matches!(listed, Err(ManagerError::PoolNotFound(_))),
                "the pool of the failed create is there"
            );
            manager.create_pool(pool(), spec(2)).await.unwrap();
        }
        wait_ready(&manager, 2).await;
        assert_consistent(&sim, &manager).await;
    }
}

/// An UpdatePool whose flush fails is in effect all the same (the answer
/// says call again): it is announced and logged as any change, so the
/// replenishers, the metrics and WatchPools follow it before the retry.
#[tokio::test(start_paused = true)]
async fn a_pool_change_whose_flush_fails_is_announced_all_the_same() {
    use pool_manager::events::EventKind;
    let sim = sim();
    let store = HookedStore::new(FailFlush::default());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    let mut events = manager.events();
    store.hooks.failing.store(true, Ordering::SeqCst);
    let err = manager
        .update_pool(&pool(), |s| s.min_ready = 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("is recorded")),
        "{err:?}"
    );
    announced(
        &mut events,
        EventKind::SettingsChanged {
            change: pool_manager::events::SettingsChange::Updated,
        },
        Duration::from_secs(60),
        "the change",
    )
    .await;
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .record
            .spec
            .min_ready,
        2
    );
    assert_consistent(&sim, &manager).await;
}

/// Operators and dashboards follow a pool's settings by its announcements:
/// a DeletePool is one (the pool starts draining), once however often it is
/// asked for, and an UpdatePool that changes nothing is none (a script
/// re-applying its settings every minute must not fill the log, the
/// SETTINGS_CHANGED counter and every watch).
#[tokio::test(start_paused = true)]
async fn a_deletion_is_announced_once_and_a_change_that_changes_nothing_not_at_all() {
    use pool_manager::events::{EventKind, SettingsChange};
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let mut events = manager.events();
    manager
        .update_pool(&pool(), |s| s.max_ready = 9)
        .await
        .unwrap();
    manager
        .update_pool(&pool(), |s| s.max_ready = 9)
        .await
        .unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    let mut announced = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::SettingsChanged { change } = event.kind {
            announced.push(change);
        }
    }
    assert_eq!(
        announced,
        [SettingsChange::Updated, SettingsChange::Deleting],
        "one change, one deletion"
    );
    let deleting = EventKind::SettingsChanged {
        change: SettingsChange::Deleting,
    };
    assert!(
        deleting.describe().unwrap().contains("deletion"),
        "{:?}",
        deleting.describe()
    );
    assert_consistent(&sim, &manager).await;
}

/// Holds the next flush, once armed, until let go; then fails it if `fail`.
#[derive(Default)]
struct HoldFlush {
    armed: AtomicBool,
    fail: AtomicBool,
    reached: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldFlush {
    async fn before_flush(&self) -> StoreResult<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.go.notified().await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(disk_error());
            }
        }
        Ok(())
    }
}

/// A CreatePool whose caller goes away while the record is being flushed
/// (a gRPC client's deadline drops the handler) still ends with a served
/// pool. It used to leave a pool written, answering ALREADY_EXISTS, with
/// no replenisher: it never filled until a restart.
#[tokio::test(start_paused = true)]
async fn a_create_pool_whose_caller_leaves_during_its_flush_still_fills() {
    let sim = sim();
    let store = HookedStore::new(HoldFlush::default());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    store.hooks.armed.store(true, Ordering::SeqCst);
    let call = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.create_pool(pool(), spec(2)).await })
    };
    store.hooks.reached.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    store.hooks.go.notify_one();
    let again = manager.create_pool(pool(), spec(2)).await;
    assert!(
        matches!(again, Err(ManagerError::PoolExists(_))),
        "{again:?}"
    );
    wait_ready(&manager, 2).await;
    assert_consistent(&sim, &manager).await;
}

/// A CreatePool is logged at INFO ("pool created") with the pool's key and
/// settings, as an UpdatePool's change ("pool settings changed") and a
/// DeletePool ("pool draining") are. It logged nothing: the log told when
/// a pool's settings changed and when it went, never when it came or with
/// what; a refused create logs no such line.
#[tokio::test(start_paused = true)]
async fn a_created_pool_is_logged_with_its_settings() {
    let logs = Logs::capture();
    let sim = sim();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(3)).await.unwrap();
    let created: Vec<String> = logs
        .lines_at("INFO")
        .into_iter()
        .filter(|l| l.contains("pool created"))
        .collect();
    assert_eq!(created.len(), 1, "{}", logs.text());
    assert!(
        created[0].contains("pool=db.small@az1")
            && created[0].contains("min_ready: 3")
            && created[0].contains("max_ready: 12")
            && created[0].contains("mysql-8.0"),
        "{}",
        created[0]
    );
    let again = manager.create_pool(pool(), spec(1)).await;
    assert!(
        matches!(again, Err(ManagerError::PoolExists(_))),
        "{again:?}"
    );
    assert_eq!(
        logs.text().matches("pool created").count(),
        1,
        "{}",
        logs.text()
    );
    manager.shutdown().await.unwrap();
}

/// An UpdatePool whose caller goes away while the change is being flushed
/// (a gRPC client's deadline drops the handler) still finishes: the change
/// kept in the store is announced (SETTINGS_CHANGED, which the metrics
/// count and `WatchPools` shows, and the replenisher is woken) and logged.
/// It used to stop at the flush: stored, never announced nor logged.
#[tokio::test(start_paused = true)]
async fn an_update_pool_whose_caller_leaves_during_its_flush_still_announces_it() {
    let logs = Logs::capture();
    let sim = sim();
    let store = HookedStore::new(HoldFlush::default());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    let mut events = manager.events();
    store.hooks.armed.store(true, Ordering::SeqCst);
    let call = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.update_pool(&pool(), |s| s.max_ready = 7).await })
    };
    store.hooks.reached.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    store.hooks.go.notify_one();
    let changed = announced(
        &mut events,
        pool_manager::events::EventKind::SettingsChanged {
            change: pool_manager::events::SettingsChange::Updated,
        },
        Duration::from_secs(60),
        "the change",
    )
    .await;
    assert_eq!(changed.pool, Some(pool()));
    assert_eq!(
        manager
            .get_pool(&pool())
            .await
            .unwrap()
            .record
            .spec
            .max_ready,
        7
    );
    assert!(
        logs.text().contains("pool settings changed"),
        "{}",
        logs.text()
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A DeletePool whose caller goes away while the deletion is being flushed
/// still finishes, its audit line ("pool draining") logged. It used to stop
/// at the flush: the pool drained, with no line saying it was deleted.
#[tokio::test(start_paused = true)]
async fn a_delete_pool_whose_caller_leaves_during_its_flush_is_still_logged() {
    let logs = Logs::capture();
    let sim = sim();
    let store = HookedStore::new(HoldFlush::default());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    store.hooks.armed.store(true, Ordering::SeqCst);
    let call = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.delete_pool(&pool()).await })
    };
    store.hooks.reached.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    store.hooks.go.notify_one();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(logs.text().contains("pool draining"), "{}", logs.text());
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// A drain whose last flush fails has deleted the pool all the same: its
/// replenisher ends. It went on looping, and took a pool created again
/// under the same key for its own: two replenishers, each booting the
/// whole deficit.
#[tokio::test(start_paused = true)]
async fn a_drain_whose_last_flush_fails_leaves_no_second_replenisher() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::PoolDeleted));
    let manager = pool_manager::PoolManager::new(
        store.clone(),
        cloud.clone(),
        std::sync::Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    assert!(
        store.hooks.fired.load(Ordering::SeqCst),
        "the pool was not deleted"
    );
    assert!(!store.hooks.armed.load(Ordering::SeqCst), "no flush failed");

    // Every replenisher of the pool stops at its quota look, after it
    // counted the pool's supply.
    let looks = [
        cloud.hold_next("boot_headroom", At::Before),
        cloud.hold_next("boot_headroom", At::Before),
    ];
    sim.reset_call_counts();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    looks[0].reached().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for look in &looks {
        look.release();
    }
    wait_ready(&manager, 2).await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), Some(&2), "{calls:?}");
    assert_eq!(manager.list_instances(None).await.unwrap().len(), 2);
    assert_consistent(&sim, &manager).await;
}

/// A store error while the allocation is being finished (marking the
/// instance, or the allocation itself): the answer and the stored record
/// must agree. A failed Allocate leaves no record (so a retry starts
/// afresh), never an Allocated one naming resources it deleted.
#[tokio::test(start_paused = true)]
async fn a_store_error_while_finishing_an_allocation_leaves_answer_and_record_agreeing() {
    for allocation in [false, true] {
        store_error_while_finishing(allocation).await;
    }
}

async fn store_error_while_finishing(allocation: bool) {
    let sim = sim();
    let store = HookedStore::new(FailFirstAllocated {
        allocation,
        failed: AtomicBool::new(false),
    });
    let manager = started_paused(&GatedCloud::new(&sim), store, 2).await;
    let order = request("order-s", new_volume(), EmptyPoolPolicy::FailFast);

    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(
        manager.get_allocation("order-s").await.is_err(),
        "a failed Allocate left a record behind"
    );
    assert_consistent(&sim, &manager).await;

    let retried = manager.allocate(order).await.unwrap();
    assert_eq!(retried.state, AllocationState::Allocated);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn an_address_in_use_costs_no_instance_and_boots_nothing() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    let with_ip = |id: &str, policy| {
        let mut order = request(id, new_volume(), policy);
        order.params.network.subnet_id = Some("tenant-subnet".into());
        order.params.network.fixed_ip = Some("10.0.0.50".into());
        order
    };
    let first = manager
        .allocate(with_ip("first", EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(first.ip_address.as_deref(), Some("10.0.0.50"));
    let servers_before = sim.call_counts().get("create_server").copied();

    // The same address again: Neutron answers 409, which only the caller
    // can fix. The port is created before any claim, so the pool keeps its
    // Ready instance however often the caller retries, and a cold-boot
    // purchase does not boot a server it could not hand out.
    for (id, policy) in [
        ("again-1", EmptyPoolPolicy::FailFast),
        ("again-2", EmptyPoolPolicy::Wait),
        ("again-cold", EmptyPoolPolicy::ColdBoot),
    ] {
        let err = manager.allocate(with_ip(id, policy)).await.unwrap_err();
        assert!(
            matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("10.0.0.50")),
            "{id}: {err:?}"
        );
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            status.count(InstanceState::Ready),
            1,
            "{id}: {:?}",
            status.counts
        );
    }
    assert_eq!(
        sim.call_counts().get("create_server").copied(),
        servers_before
    );
    assert_consistent(&sim, &manager).await;
}

/// A tenant network with no subnet: Neutron creates the port with no
/// address, and binding gives it none. Each try used to claim a warm
/// instance, wait out the 5-minute attach grace for the address, and
/// discard the instance: a caller retrying drained the pool.
#[tokio::test(start_paused = true)]
async fn a_port_without_an_address_costs_no_instance_and_no_wait() {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        networks_without_subnet: vec!["subnetless-net".into()],
        ..sim().config()
    });
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    for (id, policy) in [
        ("subnetless-1", EmptyPoolPolicy::Wait),
        ("subnetless-2", EmptyPoolPolicy::ColdBoot),
    ] {
        let mut order = request(id, new_volume(), policy);
        order.params.network.network_id = "subnetless-net".into();
        let asked = tokio::time::Instant::now();
        let err = manager.allocate(order).await.unwrap_err();
        assert!(
            matches!(&err, ManagerError::FailedPrecondition(m)
                if m.contains("network subnetless-net got no IP address")),
            "{id}: {err:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "{id}: {:?}",
            asked.elapsed()
        );
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            status.count(InstanceState::Ready),
            2,
            "{id}: {:?}",
            status.counts
        );
    }
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert_consistent(&sim, &manager).await;
}

/// A purchase waiting on an empty pool learns at once that the pool is
/// being deleted (it used to wait out its timeout and be told the pool had
/// no instance, which a caller retries); one waiting on a paused pool is
/// told at its deadline that the pool is paused.
#[tokio::test(start_paused = true)]
async fn a_waiting_purchase_is_told_the_pool_is_deleted_or_paused() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 0).await;
    let mut order = request("waits-paused", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(60));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m == "pool db.small@az1 had no ready instance before the deadline (the pool is paused: it boots nothing until it is unpaused); ask again once it is unpaused"),
        "{err:?}"
    );
    // A fail-fast purchase is told as much.
    let err = manager
        .allocate(request(
            "fails-paused",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m == "pool db.small@az1 has no ready instance (the pool is paused: it boots nothing until it is unpaused); ask again once it is unpaused"),
        "{err:?}"
    );

    let mut order = request("waits-deleted", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(3600));
    let waiting = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished());
    let asked = tokio::time::Instant::now();
    manager.delete_pool(&pool()).await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    // Which it reads depends on whether the empty pool's drain is done
    // when the purchase wakes: both say the pool is deleted.
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.starts_with("pool db.small@az1 was deleted; ") || m.starts_with("pool db.small@az1 is being deleted; ")),
        "{err:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "{:?}",
        asked.elapsed()
    );
    // What the purchase created for the tenant went with it.
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert_consistent(&sim, &manager).await;
}

/// `stop_waiting` (a graceful stop begins): a purchase waiting on an empty
/// pool gives up with ShuttingDown and undoes what it created; one that
/// came later does not wait; a purchase that can be served still is.
#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_waits_of_purchases_that_hold_nothing() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 0).await;
    let mut order = request("waits", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(3600));
    let waiting = spawn_allocate(&manager, order.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished());
    manager.stop_waiting();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    order.params.request_id = "came-later".into();
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");

    manager
        .update_pool(&pool(), |s| {
            s.paused = false;
            s.min_ready = 1;
        })
        .await
        .unwrap();
    wait_ready(&manager, 1).await;
    order.params.request_id = "served".into();
    manager.allocate(order).await.unwrap();
    assert_consistent(&sim, &manager).await;
}

/// A call repeating an order under way waits for that order's answer; a
/// stop ends that wait too, at once: the order it waits on gives up
/// (ShuttingDown) and is rolled back, after which the repeat, still
/// waiting, would find no order and start a new purchase during the stop.
#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_wait_of_a_repeated_order_at_once() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let mut order = request("waits-twice", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(3600));
    let first = spawn_allocate(&manager, order.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let repeat = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!first.is_finished() && !repeat.is_finished());

    manager.stop_waiting();
    // Answered before any cloud call of the first one's rollback is done.
    let err = tokio::time::timeout(Duration::from_millis(1), repeat)
        .await
        .expect("the repeat answers at once")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");
    assert_eq!(sim.call_counts().get("create_volume"), Some(&1));
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert!(manager.get_allocation("waits-twice").await.is_err());
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_fail_fast_purchase_of_an_empty_pool_creates_nothing() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let err = manager
        .allocate(request(
            "none-left",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err:?}");
    // No volume or port was created (and deleted again) for an answer that
    // never needed them.
    let calls = sim.call_counts();
    for method in [
        "create_volume",
        "create_port",
        "delete_volume",
        "delete_port",
    ] {
        assert_eq!(calls.get(method), None, "{method}: {calls:?}");
    }
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_new_volume_cinder_cannot_build_fails_the_purchase_as_the_clouds_fault() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    sim.faults().error_next_volumes(1);
    let err = manager
        .allocate(request("no-room", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    // The cloud's failure (UNAVAILABLE at the edge), so asking again is
    // right; before any claim, so the pool keeps its instance.
    assert!(
        matches!(&err, ManagerError::Cloud(e) if e.to_string().contains("could not build")),
        "{err:?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 1, "{:?}", status.counts);
    // The broken volume is rolled back with the rest.
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    assert_consistent(&sim, &manager).await;

    let retried = manager
        .allocate(request("no-room", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(retried.warm_hit);
}

/// The timeout bounds a purchase up to the claim: a volume seen available
/// only after it (here the create call alone outlasts it) fails the purchase
/// before an instance is taken, and what it made is rolled back. The pool
/// had an instance to give, so the failure is no miss of its depth: not
/// counted exhausted, and the answer says a longer timeout would do.
#[tokio::test(start_paused = true)]
async fn a_timeout_passing_while_the_volume_is_made_fails_before_the_claim() {
    for policy in [EmptyPoolPolicy::Wait, EmptyPoolPolicy::FailFast] {
        let mut config = cloudsim::SimConfig::deterministic();
        config.latencies.volume_create = Duration::ZERO;
        let sim = cloudsim::SimCloud::new(config);
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        sim.faults().slow_calls(Duration::from_millis(300));
        let mut order = request("o-200ms", new_volume(), policy);
        order.timeout = Some(Duration::from_millis(200));
        let err = manager.allocate(order).await.unwrap_err();
        sim.faults().slow_calls(Duration::ZERO);
        let status = manager.get_pool(&pool()).await.unwrap();
        assert_eq!(
            status.record.allocations_exhausted, 0,
            "{policy:?}: {err}: {:?}",
            status.record
        );
        assert_eq!(status.record.allocations_failed, 1, "{:?}", status.record);
        assert!(
            matches!(&err, ManagerError::DeadlineExceeded(m)
                if m.contains("200ms") && m.contains("longer timeout")),
            "{policy:?}: {err:?}"
        );
        assert_eq!(status.count(InstanceState::Ready), 1, "{:?}", status.counts);
        assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
        assert!(
            manager.get_allocation("o-200ms").await.is_err(),
            "rolled back"
        );
        assert_consistent(&sim, &manager).await;
    }
}

/// A new volume Cinder is still building when the timeout passes fails
/// the purchase as the cloud's slowness, not the pool's: the pool had an
/// instance, so it is not counted exhausted, and the answer names the
/// volume's state and asks for a longer timeout.
#[tokio::test(start_paused = true)]
async fn a_new_volume_still_creating_at_the_deadline_is_no_miss_of_the_pool() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.latencies.volume_create = Duration::from_secs(30);
    let sim = cloudsim::SimCloud::new(config);
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
    let mut order = request("o-slow-volume", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(5));
    let err = manager.allocate(order).await.unwrap_err();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.record.allocations_exhausted, 0,
        "{err}: {:?}",
        status.record
    );
    assert_eq!(status.record.allocations_failed, 1, "{:?}", status.record);
    assert!(
        matches!(&err, ManagerError::DeadlineExceeded(m)
            if m.contains("still being created") && m.contains("longer timeout")),
        "{err:?}"
    );
    assert_eq!(status.count(InstanceState::Ready), 1, "{:?}", status.counts);
    assert!(
        manager.get_allocation("o-slow-volume").await.is_err(),
        "rolled back"
    );
    assert_consistent(&sim, &manager).await;
}

/// A timeout passing while the order's volume and port are made is the
/// pool's miss after all when the pool had no Ready instance to give: a
/// longer timeout would not have served a WAIT purchase of an empty pool, so
/// it answers RESOURCE_EXHAUSTED and counts exhausted. Both ways the deadline
/// passes there: Cinder still building the volume, and the calls outlasting
/// the timeout. It found no Ready instance, so it is announced as the
/// pool's exhaustion too (the EXHAUSTED event, warmpool_pool_exhausted_total,
/// the WarmpoolPoolExhausted alert's numerator), once.
#[tokio::test(start_paused = true)]
async fn a_timeout_passing_while_the_volume_is_made_of_an_empty_pool_is_exhausted() {
    use pool_manager::events::EventKind;
    for slow_calls in [false, true] {
        let mut config = cloudsim::SimConfig::deterministic();
        config.latencies.volume_create = if slow_calls {
            Duration::ZERO
        } else {
            Duration::from_secs(30)
        };
        let sim = cloudsim::SimCloud::new(config);
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 0).await;
        let mut events = manager.events();
        if slow_calls {
            sim.faults().slow_calls(Duration::from_millis(1500));
        }
        let mut order = request("o-empty", new_volume(), EmptyPoolPolicy::Wait);
        order.timeout = Some(Duration::from_secs(1));
        let err = manager.allocate(order).await.unwrap_err();
        sim.faults().slow_calls(Duration::ZERO);
        let status = manager.get_pool(&pool()).await.unwrap();
        assert!(
            matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("no ready instance")),
            "slow calls {slow_calls}: {err:?}"
        );
        assert_eq!(
            status.record.allocations_exhausted, 1,
            "slow calls {slow_calls}: {:?}",
            status.record
        );
        let mut exhausted = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(event.kind, EventKind::Exhausted) {
                assert_eq!(event.pool, Some(pool()));
                exhausted += 1;
            }
        }
        assert_eq!(exhausted, 1, "slow calls {slow_calls}: EXHAUSTED events");
        assert!(
            manager.get_allocation("o-empty").await.is_err(),
            "rolled back"
        );
        assert_consistent(&sim, &manager).await;
    }
}

/// An order id used again once `keep_released` forgot its first use names
/// its volume and port apart from the first's: a failed second use, rolled
/// back by name, leaves the first order's kept volume alone.
#[tokio::test(start_paused = true)]
async fn a_forgotten_order_id_used_again_leaves_the_first_orders_volume_alone() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "attach_volume",
        pool_manager::cloud::CloudError::Fatal("attach refused".into()),
        false,
    );
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        cloud.clone(),
        std::sync::Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            keep_released: Some(Duration::from_secs(24 * 3600)),
            replenish_interval: Duration::from_secs(3600),
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    let first = manager
        .allocate(request("reused", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let kept = first.volume_id.clone().unwrap();
    // The tenant keeps the volume past the release.
    manager.release("reused", Some(false)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(26 * 3600)).await;
    assert!(
        manager.get_allocation("reused").await.is_err(),
        "not forgotten"
    );

    // The id comes again; this time the purchase fails after its volume
    // was created (the attach is refused) and is rolled back.
    wait_ready(&manager, 1).await;
    refusing.store(true, Ordering::SeqCst);
    let mut again = request("reused", new_volume(), EmptyPoolPolicy::FailFast);
    again.timeout = Some(Duration::from_secs(60));
    assert!(manager.allocate(again).await.is_err());
    assert!(manager.get_allocation("reused").await.is_err());
    assert!(
        sim.volumes().iter().any(|v| v.id == kept),
        "the rollback deleted the first order's kept volume"
    );
}

#[tokio::test(start_paused = true)]
async fn released_allocations_are_forgotten_after_keep_released() {
    let sim = sim();
    let keep = Duration::from_secs(24 * 3600);
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        sim.clone(),
        std::sync::Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            keep_released: Some(keep),
            // Nothing to do for a day: keep the paused clock's steps few.
            replenish_interval: Duration::from_secs(3600),
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    wait_ready(&manager, 2).await;
    let order = |id: &str| request(id, new_volume(), EmptyPoolPolicy::FailFast);
    manager.allocate(order("done")).await.unwrap();
    manager.release("done", Some(true)).await.unwrap();
    manager.allocate(order("held")).await.unwrap();

    // Within the period the released order is kept, and a retry of it is
    // answered with it.
    tokio::time::sleep(keep - Duration::from_secs(3600)).await;
    let retried = manager.allocate(order("done")).await.unwrap();
    assert_eq!(retried.state, AllocationState::Released);
    assert_eq!(
        manager.forget_released().await.unwrap(),
        0,
        "forgotten too early"
    );

    // Past it, the manager's own pass (every FORGET_EVERY) forgets it;
    // an allocation still held is never forgotten, however old.
    tokio::time::sleep(Duration::from_secs(3600) + pool_manager::FORGET_EVERY).await;
    assert!(
        matches!(
            manager.get_allocation("done").await,
            Err(ManagerError::AllocationNotFound(_))
        ),
        "{:?}",
        manager.get_allocation("done").await
    );
    assert_eq!(
        manager.get_allocation("held").await.unwrap().state,
        AllocationState::Allocated
    );
    // The id is free again: a new order with it is allocated anew.
    let again = manager.allocate(order("done")).await.unwrap();
    assert_eq!(again.state, AllocationState::Allocated);
    assert_consistent(&sim, &manager).await;
}

/// Holds the first flush after an allocation's commit (its CAS to
/// Allocated) until the test lets it go, and notes whether any flush began
/// after the commit since.
#[derive(Default)]
struct HoldCommitFlush {
    committed: AtomicBool,
    held: AtomicBool,
    flushed_after_commit: AtomicBool,
    holding: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldCommitFlush {
    fn before_allocation_swap(&self, new: Option<&Allocation>) -> StoreResult<()> {
        if new.is_some_and(|a| a.state == AllocationState::Allocated) {
            self.committed.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    async fn before_flush(&self) -> StoreResult<()> {
        if !self.committed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !self.held.swap(true, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
        self.flushed_after_commit.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// An allocation is reported Allocated only once that is on disk: a reader
/// (GetAllocation, a retried Allocate) that reads the commit while its
/// flush is still under way flushes first, or a crash right after the
/// answer would roll back what billing was told is allocated.
#[tokio::test(start_paused = true)]
async fn allocated_is_answered_only_once_flushed() {
    let sim = sim();
    let store = HookedStore::new(HoldCommitFlush::default());
    let manager = started(&sim, store.clone(), 1).await;
    let order = request("order-f", new_volume(), EmptyPoolPolicy::FailFast);
    let buying = {
        let manager = manager.clone();
        let order = order.clone();
        tokio::spawn(async move { manager.allocate(order).await })
    };
    store.hooks.holding.notified().await;

    let retried = manager.allocate(order).await.unwrap();
    assert_eq!(retried.state, AllocationState::Allocated);
    assert!(
        store
            .hooks
            .flushed_after_commit
            .swap(false, Ordering::SeqCst),
        "a retried Allocate answered Allocated before it was flushed"
    );
    let read = manager.get_allocation("order-f").await.unwrap();
    assert_eq!(read, retried);
    assert!(
        store.hooks.flushed_after_commit.load(Ordering::SeqCst),
        "GetAllocation answered Allocated before it was flushed"
    );

    store.hooks.release.notify_one();
    assert_eq!(buying.await.unwrap().unwrap(), read);
    assert_consistent(&sim, &manager).await;
}

/// A volume or port create whose answer was lost is sent again, and the
/// first one landed too: its twin is named as the purchase's own, and is
/// deleted once the purchase has what it uses; a twin that lands later
/// still is deleted by the release. None outlives the allocation.
#[tokio::test(start_paused = true)]
async fn twins_of_a_create_whose_answer_was_lost_are_deleted() {
    use pool_manager::cloud::{Cloud, NewVolumeSpec};
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let named = |name: &str| named_volumes_and_ports(&sim, name);

    cloud.lose_next_answer("create_volume");
    cloud.lose_next_answer("create_port");
    sim.reset_call_counts();
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    let name = a.resource_name();
    // Each create was done twice: a twin of each exists.
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_volume"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("create_port"), Some(&2), "{calls:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (volumes, ports) = named(&name);
    assert_eq!(
        volumes,
        vec![a.volume_id.clone().unwrap()],
        "volume twin left"
    );
    assert_eq!(ports, vec![a.port_id.clone().unwrap()], "port twin left");

    // A twin landing after that (the lost create was still on its way).
    let late = sim
        .create_volume(&NewVolumeSpec {
            name: name.clone(),
            size_gib: 20,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The tenant keeps its volume; the twin goes.
    manager.release("o-1", Some(false)).await.unwrap();
    let (volumes, ports) = named(&name);
    assert_eq!(volumes, vec![a.volume_id.clone().unwrap()], "{late:?} left");
    assert!(ports.is_empty(), "{ports:?}");
    assert_consistent(&sim, &manager).await;

    // Without a lost answer, nothing is looked for: no extra call.
    sim.reset_call_counts();
    let b = manager
        .allocate(request("o-2", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    manager.release("o-2", Some(true)).await.unwrap();
    let calls = sim.call_counts();
    assert_eq!(calls.get("find_volumes_by_name"), None, "{calls:?}");
    assert_eq!(calls.get("find_ports_by_name"), None, "{calls:?}");
    assert!(named(&b.resource_name()).0.is_empty());
}

/// Twins the cloud keeps refusing to look for are warned of once, then
/// hourly while it lasts, however many passes (and the purchase's own
/// look) fail so: the first failure through the pass's item, the further
/// ones (here the volumes' listing, after the ports') by theirs.
#[tokio::test(start_paused = true)]
async fn twins_failing_every_pass_are_warned_of_once_then_hourly() {
    use pool_manager::cloud::CloudError;
    let logs = Logs::capture();
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    cloud.lose_next_answer("create_volume");
    cloud.lose_next_answer("create_port");
    let refused =
        |what: &str| CloudError::Fatal(format!("{what}: policy does not allow (HTTP 403)"));
    sim.faults()
        .fail_next_calls_of("find_ports_by_name", u64::MAX, refused("ports"));
    sim.faults()
        .fail_next_calls_of("find_volumes_by_name", u64::MAX, refused("volumes"));
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(a.creates_in_doubt);
    let further = |logs: &Logs| logs.count("WARN", "volumes: policy does not allow");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        manager.reconcile().await.unwrap();
    }
    assert_eq!(
        further(&logs),
        1,
        "warned of once in 5 passes: {:#?}",
        logs.warnings()
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(
        further(&logs),
        2,
        "reminded after an hour: {:#?}",
        logs.warnings()
    );
}

/// A port create with a fixed_ip whose answer was lost, Neutron having
/// made the port: the create sent again is refused the address (409), taken
/// by its own twin. The cloud had a transient fault, not the order: the
/// twin is the order's port, and no other is left.
#[tokio::test(start_paused = true)]
async fn a_fixed_ip_order_whose_port_create_lost_its_answer_is_served() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let mut order = request("o-ip", new_volume(), EmptyPoolPolicy::FailFast);
    order.params.network.subnet_id = Some("tenant-subnet".into());
    order.params.network.fixed_ip = Some("10.0.0.50".into());
    cloud.lose_next_answer("create_port");
    sim.reset_call_counts();
    let a = manager.allocate(order).await.unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    assert_eq!(a.ip_address.as_deref(), Some("10.0.0.50"));
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_port"), Some(&2), "{calls:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (_, ports) = named_volumes_and_ports(&sim, &a.resource_name());
    assert_eq!(ports, vec![a.port_id.clone().unwrap()]);
    assert_consistent(&sim, &manager).await;
}

/// The same for a port quota with room for the order's port alone: its
/// twin takes it, and the create sent again is refused for quota.
#[tokio::test(start_paused = true)]
async fn an_order_whose_port_create_lost_its_answer_under_a_full_port_quota_is_served() {
    use pool_manager::model::{PoolSpec, Target};
    let mut config = cloudsim::SimConfig::deterministic();
    config.quotas.max_ports = 2;
    let sim = cloudsim::SimCloud::new(config);
    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let fixed = PoolSpec {
        target: Target::Fixed(1),
        ..spec(1)
    };
    manager.create_pool(pool(), fixed).await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    // The Ready server's port and room for one more.
    cloud.lose_next_answer("create_port");
    sim.reset_call_counts();
    let order = request("o-q", new_volume(), EmptyPoolPolicy::FailFast);
    let a = manager.allocate(order).await.unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_port"), Some(&2), "{calls:?}");
    let (_, ports) = named_volumes_and_ports(&sim, &a.resource_name());
    assert_eq!(ports, vec![a.port_id.clone().unwrap()]);
    assert_consistent(&sim, &manager).await;
}

/// The same for Cinder's volumes quota with room for the order's volume
/// alone.
#[tokio::test(start_paused = true)]
async fn an_order_whose_volume_create_lost_its_answer_under_a_full_volume_quota_is_served() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.quotas.max_volumes = 1;
    let sim = cloudsim::SimCloud::new(config);
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    cloud.lose_next_answer("create_volume");
    sim.reset_call_counts();
    let order = request("o-v", new_volume(), EmptyPoolPolicy::FailFast);
    let a = manager.allocate(order).await.unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_volume"), Some(&2), "{calls:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (volumes, _) = named_volumes_and_ports(&sim, &a.resource_name());
    assert_eq!(volumes, vec![a.volume_id.clone().unwrap()]);
    assert_consistent(&sim, &manager).await;
}

/// A 503 naming a Retry-After (a maintenance page, an overloaded proxy)
/// may come from in front of a service that already made the volume or
/// port: the create asked again after the pause makes a twin, which is
/// found and deleted as after a lost answer, and the order's name is
/// watched whether the purchase commits or rolls back.
#[tokio::test(start_paused = true)]
async fn twins_of_a_create_answered_503_after_it_was_done_are_deleted() {
    use pool_manager::cloud::CloudError;
    let unavailable = |method: &str| CloudError::Throttled {
        retry_after: Some(Duration::from_secs(1)),
        message: format!("{method}: 503 Service Unavailable"),
        unavailable: true,
    };
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "attach_volume",
        CloudError::Fatal("attach refused".into()),
        false,
    );
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;
    let named = |name: &str| named_volumes_and_ports(&sim, name);

    cloud.lose_next_answer_as("create_volume", unavailable("create_volume"));
    cloud.lose_next_answer_as("create_port", unavailable("create_port"));
    sim.reset_call_counts();
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    assert!(a.creates_in_doubt, "a create answered 503 is not in doubt");
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_volume"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("create_port"), Some(&2), "{calls:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    manager.reconcile().await.unwrap();
    let (volumes, ports) = named(&a.resource_name());
    assert_eq!(
        volumes,
        vec![a.volume_id.clone().unwrap()],
        "volume twin left"
    );
    assert_eq!(ports, vec![a.port_id.clone().unwrap()], "port twin left");
    manager.release("o-1", Some(true)).await.unwrap();
    assert_consistent(&sim, &manager).await;

    // Rolled back: a twin landing after the rollback is still looked for.
    refusing.store(true, Ordering::SeqCst);
    cloud.lose_next_answer_as("create_volume", unavailable("create_volume"));
    cloud.lose_next_answer_as("create_port", unavailable("create_port"));
    let mut order = request("o-2", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(60));
    assert!(manager.allocate(order).await.is_err());
    let watches = store.list_twin_watches().await.unwrap();
    let Some(watch) = watches.iter().find(|w| w.name.starts_with("warmpool-o-2-")) else {
        panic!("the rolled-back attempt's name is not watched: {watches:?}")
    };
    land_late_twins(&sim, &watch.name).await;
    manager.reconcile().await.unwrap();
    assert_eq!(named(&watch.name), (vec![], vec![]));
    assert_consistent(&sim, &manager).await;
}

/// A boot's create answered 503 with a Retry-After past the boot's
/// timeout (a maintenance page in front of a Nova that had already taken
/// it) is not a refusal: the server it made is looked for by the
/// instance it names and booted on, where the boot failed and the
/// reconciler then deleted the server as a leak (a false leak alert).
#[tokio::test(start_paused = true)]
async fn a_boot_whose_create_was_answered_503_after_it_was_done_boots_on_its_server() {
    use pool_manager::cloud::CloudError;
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    let mut events = manager.events();
    cloud.lose_next_answer_as(
        "create_server",
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(20 * 60)),
            message: "create_server: 503 Service Unavailable".into(),
            unavailable: true,
        },
    );
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    manager.reconcile().await.unwrap();
    assert_no_leak_deleted(&mut events, "the server the create answered 503 made");
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), Some(&1), "{calls:?}");
    assert_consistent(&sim, &manager).await;
}

/// A purchase that fails after a create lost its answer is rolled back,
/// and a twin of that create landing after the rollback (the lost request
/// was still on its way) is deleted by the reconciler too, which watches
/// the rolled-back attempt's name for a while (a store record, so a restart
/// keeps watching). A retry of the order is named apart and keeps what it
/// uses.
#[tokio::test(start_paused = true)]
async fn a_twin_landing_after_a_rollback_is_deleted() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "attach_volume",
        pool_manager::cloud::CloudError::Fatal("attach refused".into()),
        true,
    );
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;
    let watched = || async {
        let watches = store.list_twin_watches().await.unwrap();
        watches.into_iter().map(|w| w.name).collect::<Vec<_>>()
    };

    cloud.lose_next_answer("create_volume");
    cloud.lose_next_answer("create_port");
    let mut order = request("o-1", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(60));
    assert!(manager.allocate(order.clone()).await.is_err());
    assert!(
        manager.get_allocation("o-1").await.is_err(),
        "not rolled back"
    );
    let [name] = &watched().await[..] else {
        panic!("the rolled-back attempt's name is not watched")
    };
    assert!(name.starts_with("warmpool-o-1-"), "{name}");
    assert_eq!(named_volumes_and_ports(&sim, name), (vec![], vec![]));

    land_late_twins(&sim, name).await;
    manager.reconcile().await.unwrap();
    assert_eq!(
        named_volumes_and_ports(&sim, name),
        (vec![], vec![]),
        "a twin landing after the rollback was left"
    );
    assert_consistent(&sim, &manager).await;

    // The order comes again and succeeds under a name of its own; a twin
    // of the failed attempt landing after that goes, the purchase's own
    // volume and port stay.
    refusing.store(false, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    wait_ready(&manager, 2).await;
    let retried = manager.allocate(order).await.unwrap();
    assert_ne!(&retried.resource_name(), name);
    land_late_twins(&sim, name).await;
    manager.reconcile().await.unwrap();
    assert_eq!(named_volumes_and_ports(&sim, name), (vec![], vec![]));
    assert_eq!(
        manager.get_allocation("o-1").await.unwrap(),
        retried,
        "the retry's allocation changed"
    );
    assert_consistent(&sim, &manager).await;

    // The watch ends once no twin can land any more.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    assert!(watched().await.is_empty(), "the watch never ended");

    // Without a lost answer, a rollback watches only the volume it
    // deleted, until a pass sees it gone (Cinder could fail the delete).
    refusing.store(true, Ordering::SeqCst);
    let mut plain = request("o-2", new_volume(), EmptyPoolPolicy::FailFast);
    plain.timeout = Some(Duration::from_secs(60));
    assert!(manager.allocate(plain).await.is_err());
    tokio::time::sleep(Duration::from_secs(10)).await;
    manager.reconcile().await.unwrap();
    assert!(watched().await.is_empty());
}

/// A create that lost its answer and then failed outright may still have
/// been done: its rollback watches the name too.
#[tokio::test(start_paused = true)]
async fn a_create_refused_after_a_lost_answer_is_watched_for_after_the_rollback() {
    let sim = sim();
    let port_creates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let port_creates = port_creates.clone();
        move |called| {
            (called == "create_port" && port_creates.fetch_add(1, Ordering::SeqCst) == 1)
                .then(|| pool_manager::cloud::CloudError::Fatal("network is full".into()))
        }
    });
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 2).await;
    cloud.lose_next_answer("create_port");
    let err = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("network is full"), "{err}");
    let watches = store.list_twin_watches().await.unwrap();
    let [watch] = &watches[..] else {
        panic!("the rolled-back attempt's name is not watched: {watches:?}")
    };
    assert!(watch.name.starts_with("warmpool-o-1-"), "{watch:?}");
    land_late_twins(&sim, &watch.name).await;
    manager.reconcile().await.unwrap();
    assert_eq!(named_volumes_and_ports(&sim, &watch.name), (vec![], vec![]));
    assert_consistent(&sim, &manager).await;
}

/// A create on its way when the process died may land after the restart's
/// rollback looked: the rollback of an Allocate no process finished watches
/// the name when a create's answer is not on record.
#[tokio::test(start_paused = true)]
async fn a_create_in_flight_at_a_crash_is_watched_for_after_the_rollback() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let dir = tempfile::tempdir().unwrap();
    let manager = started_paused(&cloud, open_store(dir.path()), 2).await;
    let creating = cloud.hold_next("create_port", At::Before);
    let buying = spawn_allocate(
        &manager,
        request("o-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    creating.reached().await;
    manager.shutdown().await.unwrap();
    let _ = buying.await;
    drop(manager);

    let store = open_store(dir.path());
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    assert!(
        manager.get_allocation("o-1").await.is_err(),
        "not rolled back"
    );
    let watches = store.list_twin_watches().await.unwrap();
    let [watch] = &watches[..] else {
        panic!("the rolled-back attempt's name is not watched: {watches:?}")
    };
    // The port create lands now.
    land_late_twins(&sim, &watch.name).await;
    manager.reconcile().await.unwrap();
    assert_eq!(named_volumes_and_ports(&sim, &watch.name), (vec![], vec![]));
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// An attach the cloud refuses as a bad request (Nova's 400 for a volume
/// of another zone under `cross_az_attach = False`, a policy's 403) would
/// be refused on any instance: the purchase fails at once, costing one
/// warm instance, where each try took the next until the pool was empty.
#[tokio::test(start_paused = true)]
async fn an_attach_refused_as_a_bad_request_costs_one_instance_not_the_pool() {
    let sim = sim();
    let (cloud, _refusing) = GatedCloud::refusing(
        &sim,
        "attach_volume",
        pool_manager::cloud::CloudError::Fatal(
            "Invalid volume: Instance and volume not in same availability_zone".into(),
        ),
        true,
    );
    let manager = started_paused(&cloud, temp_store(), 3).await;
    let err = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same availability_zone"), "{err}");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_consistent(&sim, &manager).await;
}

/// A volume and a port named `name`, as a lost create that was still on
/// its way leaves them.
async fn land_late_twins(sim: &cloudsim::SimCloud, name: &str) {
    use pool_manager::cloud::{Cloud, NewPortSpec, NewVolumeSpec};
    sim.create_volume(&NewVolumeSpec {
        name: name.to_owned(),
        size_gib: 20,
        volume_type: None,
        availability_zone: "az1".into(),
        metadata: Default::default(),
    })
    .await
    .unwrap();
    sim.create_port(&NewPortSpec {
        name: name.to_owned(),
        network_id: "net-tenant".into(),
        subnet_id: None,
        fixed_ip: None,
    })
    .await
    .unwrap();
}

/// The ids of the volumes and of the ports named `name` in cloudsim.
fn named_volumes_and_ports(sim: &cloudsim::SimCloud, name: &str) -> (Vec<String>, Vec<String>) {
    let volumes = sim
        .volumes()
        .into_iter()
        .filter(|v| v.name == name)
        .map(|v| v.id)
        .collect();
    let ports = sim
        .ports()
        .into_iter()
        .filter(|p| p.name == name)
        .map(|p| p.id)
        .collect();
    (volumes, ports)
}

/// The name of a committed allocation whose create lost an answer is
/// watched from before the commit: a crash right after the commit (or a
/// cloud refusing the first look) leaves the twins to the reconciler's
/// passes, the restart's first, and a twin landing after a look is found by
/// a later one, not by a release that may be months away while a twin port
/// keeps a tenant's IP. The purchase's own port and volume are kept.
#[tokio::test(start_paused = true)]
async fn twins_of_a_lost_create_are_deleted_after_a_crash_right_after_the_commit() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let dir = tempfile::tempdir().unwrap();
    let manager = started_paused(&cloud, open_store(dir.path()), 2).await;
    cloud.lose_next_answer("create_volume");
    cloud.lose_next_answer("create_port");
    let look = cloud.hold_next("find_ports_by_name", At::Before);
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    look.reached().await;
    let (volumes, ports) = named_volumes_and_ports(&sim, &a.resource_name());
    assert_eq!((volumes.len(), ports.len()), (2, 2), "a twin of each");

    // The process dies before its look for the twins gets an answer.
    manager.shutdown().await.unwrap();
    drop(manager);
    let manager = manager_on(&sim, open_store(dir.path()));
    manager.start().await.unwrap();
    let (volumes, ports) = named_volumes_and_ports(&sim, &a.resource_name());
    assert_eq!(
        volumes,
        vec![a.volume_id.clone().unwrap()],
        "volume twin left"
    );
    assert_eq!(ports, vec![a.port_id.clone().unwrap()], "port twin left");
    let stored = manager.get_allocation("o-1").await.unwrap();
    assert_eq!(stored.state, AllocationState::Allocated);
    assert_eq!(
        (&stored.volume_id, &stored.port_id, &stored.server_id),
        (&a.volume_id, &a.port_id, &a.server_id),
        "the purchase keeps what it uses"
    );

    // A twin landing after that look is found by a later pass.
    land_late_twins(&sim, &a.resource_name()).await;
    manager.reconcile().await.unwrap();
    assert_eq!(
        named_volumes_and_ports(&sim, &a.resource_name()),
        (
            vec![a.volume_id.clone().unwrap()],
            vec![a.port_id.clone().unwrap()]
        )
    );
    assert_consistent(&sim, &manager).await;

    // Once the watch is over, a last pass looks, later ones no longer do.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    sim.reset_call_counts();
    manager.reconcile().await.unwrap();
    let calls = sim.call_counts();
    assert_eq!(calls.get("find_ports_by_name"), None, "{calls:?}");
    assert_eq!(calls.get("find_volumes_by_name"), None, "{calls:?}");
    assert_eq!(manager.get_allocation("o-1").await.unwrap(), stored);
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// The allocation's server has the allocation's volume attached, and no
/// other.
fn assert_its_volume_is_attached(sim: &cloudsim::SimCloud, a: &Allocation) {
    let server = sim.server(a.server_id.as_deref().unwrap()).unwrap();
    assert_eq!(
        server.server.attached_volumes,
        vec![a.volume_id.clone().unwrap()]
    );
}

/// An attach whose answer was lost may have been carried out: the volume
/// goes on attaching to the instance the failed try discards. The next
/// instance gets the volume once that instance has let go of it; the
/// purchase does not fail on a volume warmpool itself left in use.
#[tokio::test(start_paused = true)]
async fn an_attach_carried_out_after_its_answer_was_lost_does_not_fail_the_purchase() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 4).await;
    let existing = VolumeSource::Existing {
        volume_id: sim.create_volume_for_test("tenant-a", "az1", 10),
    };
    for volume in [new_volume(), existing] {
        cloud.lose_next_answer("attach_volume");
        let id = format!("o-{}", manager.list_allocations().await.unwrap().len());
        let a = manager
            .allocate(request(&id, volume, EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert_eq!(a.state, AllocationState::Allocated);
        assert_its_volume_is_attached(&sim, &a);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    assert_consistent(&sim, &manager).await;
}

/// An attach Nova accepts and then rolls back on the compute host leaves
/// the volume `available` again: the try fails on that instance, and the
/// purchase goes on with the next one instead of waiting for an attach
/// that will never come.
#[tokio::test(start_paused = true)]
async fn an_attach_failing_on_the_host_moves_on_to_the_next_instance() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    sim.faults().fail_next_volume_attach_on_host(1);
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    assert_its_volume_is_attached(&sim, &a);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        0,
        "one instance was discarded"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// An attach the host fails before the first look at the volume leaves it
/// `available` without its ever being seen `attaching`. Once the server
/// lists no attachment of it either, the try fails on that instance and the
/// purchase goes on with the next one, instead of waiting out its deadline
/// for an attach that will never come.
#[tokio::test(start_paused = true)]
async fn an_attach_failing_on_the_host_at_once_moves_on_to_the_next_instance() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    sim.faults().fail_next_volume_attach_on_host_at_once(1);
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    assert_its_volume_is_attached(&sim, &a);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        0,
        "one instance was discarded"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.servers().len(), 1, "the failed try's server is deleted");
    assert_consistent(&sim, &manager).await;
}

/// An attach that ends with the volume `error_attaching` failed in Cinder
/// on the way to that instance's host; the tenant's volume did nothing
/// wrong. The purchase discards the instance, whose deletion lets go of the
/// volume, and attaches it to the next one, a new volume or an existing
/// one alike.
#[tokio::test(start_paused = true)]
async fn an_attach_ending_in_error_attaching_moves_on_to_the_next_instance() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 4).await;
    let existing = VolumeSource::Existing {
        volume_id: sim.create_volume_for_test("tenant-a", "az1", 10),
    };
    for (i, volume) in [new_volume(), existing].into_iter().enumerate() {
        sim.faults().error_next_volume_attach(1, true);
        let a = manager
            .allocate(request(
                &format!("o-{i}"),
                volume,
                EmptyPoolPolicy::FailFast,
            ))
            .await
            .unwrap();
        assert_eq!(a.state, AllocationState::Allocated);
        assert_its_volume_is_attached(&sim, &a);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        0,
        "each purchase discarded one instance"
    );
    assert_consistent(&sim, &manager).await;
}

/// A volume Cinder keeps `error_attaching` once the failed try's server is
/// gone is not waited for until the deadline: the purchase fails saying
/// what the volume needs (an admin's reset of its state). It is looked at
/// before the next instance is claimed, so it costs the pool no second
/// instance.
#[tokio::test(start_paused = true)]
async fn a_volume_left_error_attaching_fails_the_purchase_saying_why() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    let volume_id = sim.create_volume_for_test("tenant-a", "az1", 10);
    sim.faults().error_next_volume_attach(1, false);
    let existing = VolumeSource::Existing {
        volume_id: volume_id.clone(),
    };
    let mut order = request("o-stuck", existing, EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(3600));
    let e = manager.allocate(order).await.unwrap_err();
    match &e {
        ManagerError::FailedPrecondition(m) => {
            assert!(
                m.contains(&volume_id) && m.contains("error_attaching"),
                "{m}"
            );
            assert!(m.contains("reset"), "{m}");
        }
        e => panic!("{e:?}"),
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        1,
        "only the instance the failed attach was to is discarded"
    );
    assert_eq!(sim.servers().len(), 1, "the failed try's server is deleted");
    assert_consistent(&sim, &manager).await;
}

/// A new volume (warmpool's, created for the order) Cinder keeps
/// `error_attaching` once the failed try's server is gone cannot be
/// deleted either (Cinder refuses it until an admin resets its state).
/// That must not hold the order hostage: the purchase is rolled back and
/// answered at once, UNAVAILABLE. The stuck volume is not forgotten: the
/// reconciler deletes it once an admin resets it, however long that takes,
/// and the same order again is then bought on a fresh volume.
#[tokio::test(start_paused = true)]
async fn a_new_volume_left_error_attaching_is_left_for_later_and_the_order_goes_through_again() {
    use pool_manager::cloud::CloudError;
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 3).await;
    sim.faults().error_next_volume_attach(1, false);
    let mut order = request("o-stuck", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(3600));
    let asked = tokio::time::Instant::now();
    let e = manager.allocate(order.clone()).await.unwrap_err();
    let stuck = the_error_attaching_volume(&sim);
    match &e {
        ManagerError::Cloud(CloudError::Transient(m)) => {
            assert!(m.contains(&stuck) && m.contains("error_attaching"), "{m}");
            assert!(m.contains("new volume"), "{m}");
        }
        e => panic!("{e:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "answered at once, not after waiting out the cleanup deadline: {:?}",
        asked.elapsed()
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        2,
        "only the instance the failed attach was to is discarded"
    );
    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    assert!(
        matches!(
            manager.get_allocation("o-stuck").await,
            Err(ManagerError::AllocationNotFound(_))
        ),
        "the order is rolled back"
    );
    // Long past any twin watch's end, and still not forgotten.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    assert!(
        sim.volumes().iter().any(|v| v.id == stuck),
        "Cinder refuses its delete until an admin resets it"
    );
    assert!(sim.reset_error_attaching(&stuck));
    manager.reconcile().await.unwrap();
    assert!(
        sim.volumes().iter().all(|v| v.id != stuck),
        "deleted once it can be"
    );
    let asked = tokio::time::Instant::now();
    order.timeout = Some(Duration::from_secs(120));
    let again = manager.allocate(order).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(60));
    assert_eq!(again.state, AllocationState::Allocated);
    assert_ne!(again.volume_id.as_deref(), Some(stuck.as_str()));
    assert_its_volume_is_attached(&sim, &again);
    assert_consistent(&sim, &manager).await;
}

/// Cinder's refusal to delete the rolled-back purchase's new volume, left
/// `error_attaching`, holds up neither the other volumes of the watched
/// name (twins of a lost create, listed after it) nor the follow-up of
/// those whose delete was accepted: each pass deletes every twin it can,
/// marks one whose delete Cinder's backend failed, and keeps the watch
/// until an admin's reset lets the stuck one go too.
#[tokio::test(start_paused = true)]
async fn twins_listed_after_a_volume_left_error_attaching_are_deleted_all_the_same() {
    use pool_manager::cloud::{Cloud, NewVolumeSpec, VolumeStatus};
    let sim = sim();
    let store = temp_store();
    let manager = started_paused(&GatedCloud::new(&sim), store.clone(), 3).await;
    sim.faults().error_next_volume_attach(1, false);
    let mut order = request("o-stuck", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(3600));
    manager.allocate(order).await.unwrap_err();
    let stuck = the_error_attaching_volume(&sim);
    let watches = store.list_twin_watches().await.unwrap();
    let [watch] = &watches[..] else {
        panic!("the rolled-back attempt's name is not watched: {watches:?}")
    };
    let name = watch.name.clone();
    let mut twins = Vec::new();
    for _ in 0..2 {
        let spec = NewVolumeSpec {
            name: name.clone(),
            size_gib: 20,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: Default::default(),
        };
        twins.push(sim.create_volume(&spec).await.unwrap().id);
    }
    // Cinder's backend fails the first twin's delete.
    sim.faults().error_next_volume_deletes(1);
    for _ in 0..3 {
        manager.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let left: Vec<_> = sim
        .volumes()
        .into_iter()
        .filter(|v| v.name == name)
        .collect();
    let status = |id: &str| left.iter().find(|v| v.id == id).map(|v| v.status.clone());
    assert_eq!(
        status(&stuck),
        Some(VolumeStatus::Other("error_attaching".into())),
        "{left:?}"
    );
    assert_eq!(
        status(&twins[0]),
        Some(VolumeStatus::Other("error_deleting".into())),
        "{left:?}"
    );
    assert_eq!(
        status(&twins[1]),
        None,
        "the twin listed after the stuck volume was left: {left:?}"
    );
    let watches = store.list_twin_watches().await.unwrap();
    let [watch] = &watches[..] else {
        panic!("the watch of the stuck volume ended: {watches:?}")
    };
    assert_eq!(
        watch.stuck_volumes().collect::<Vec<_>>(),
        [stuck.as_str(), twins[0].as_str()],
        "{watch:?}"
    );

    // Long past the watch's end, an admin resets both: the next pass
    // deletes them, and the watch ends once they are gone.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    assert_eq!(store.list_twin_watches().await.unwrap().len(), 1);
    assert!(sim.reset_error_attaching(&stuck));
    assert!(sim.reset_error_deleting(&twins[0]));
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    manager.reconcile().await.unwrap();
    assert!(
        sim.volumes().iter().all(|v| v.name != name),
        "{:?}",
        sim.volumes()
    );
    assert!(store.list_twin_watches().await.unwrap().is_empty());
    assert_consistent(&sim, &manager).await;
}

/// A Cinder backend that leaves every new volume `error_attaching` would
/// cost warmpool's volume quota one stuck volume per retry of the order,
/// and billing may retry every few seconds. While the order's own new
/// volume is stuck, a retry makes no other: it is answered UNAVAILABLE at
/// once, naming the volume and what it needs, and claims no instance.
/// Once an admin has reset the volume, the same order goes through on a
/// fresh one, without waiting for a reconcile pass, which then deletes
/// the reset one.
#[tokio::test(start_paused = true)]
async fn a_retry_makes_no_second_volume_while_the_first_is_stuck_error_attaching() {
    use pool_manager::cloud::CloudError;
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 3).await;
    sim.faults().error_next_volume_attach(100, false);
    let mut order = request("o-stuck", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(3600));
    manager.allocate(order.clone()).await.unwrap_err();
    let volumes = sim.volumes().len();
    let stuck = the_error_attaching_volume(&sim);
    for _ in 0..5 {
        let asked = tokio::time::Instant::now();
        match manager.allocate(order.clone()).await.unwrap_err() {
            ManagerError::Cloud(CloudError::Transient(m)) => {
                assert!(m.contains(&stuck) && m.contains("error_attaching"), "{m}");
                assert!(m.contains("reset"), "what it takes: {m}");
            }
            e => panic!("{e:?}"),
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "answered at once"
        );
        manager.reconcile().await.unwrap();
    }
    assert_eq!(sim.volumes().len(), volumes, "no volume made for a retry");
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        2,
        "no instance claimed for a retry"
    );

    sim.faults().error_next_volume_attach(0, false);
    assert!(sim.reset_error_attaching(&stuck));
    order.timeout = Some(Duration::from_secs(120));
    let again = manager.allocate(order).await.unwrap();
    assert_eq!(again.state, AllocationState::Allocated);
    assert_ne!(again.volume_id.as_deref(), Some(stuck.as_str()));
    assert_its_volume_is_attached(&sim, &again);
    manager.reconcile().await.unwrap();
    assert!(
        sim.volumes().iter().all(|v| v.id != stuck),
        "the reset volume is deleted"
    );
    assert_consistent(&sim, &manager).await;
}

/// An instance whose host fails after the volume is attached cannot have
/// it detached (Nova's 409 on a server in ERROR): its deletion lets go of
/// the volume, and until then the volume is in use by that discarded
/// server. The next instance waits for it instead of failing the purchase.
#[tokio::test(start_paused = true)]
async fn a_volume_held_by_a_failed_instance_goes_to_the_next_one() {
    volume_held_by_a_failed_instance(false).await;
}

/// As above, but the compute host fails the failed instance's delete after
/// Nova accepted it, leaving the server in ERROR with the volume: the
/// discard sends the delete again, so the volume still goes to the next
/// instance and no server is left holding it.
#[tokio::test(start_paused = true)]
async fn a_volume_held_by_a_failed_instance_whose_delete_failed_goes_to_the_next_one() {
    volume_held_by_a_failed_instance(true).await;
}

/// A purchase whose first instance fails with the volume attached;
/// `undo_delete`: that instance's first delete fails on the host.
async fn volume_held_by_a_failed_instance(undo_delete: bool) {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    let port_attach = cloud.hold_next("attach_port", At::Before);
    let buying = spawn_allocate(
        &manager,
        request("o-1", new_volume(), EmptyPoolPolicy::FailFast),
    );
    port_attach.reached().await;
    let first = manager
        .get_allocation("o-1")
        .await
        .unwrap()
        .server_id
        .unwrap();
    // The volume attach goes on beside the held port attach.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let volume = sim.volumes().pop().unwrap();
    assert_eq!(volume.attached_to, vec![first.clone()]);
    assert!(sim.fail_server(&first, "host compute-1 is down"));
    if undo_delete {
        cloud.undo_next_delete();
    }
    port_attach.release();

    let a = buying.await.unwrap().unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    assert_ne!(a.server_id.as_deref(), Some(first.as_str()));
    let server = sim.server(a.server_id.as_deref().unwrap()).unwrap();
    assert_eq!(server.server.attached_volumes, vec![volume.id]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_consistent(&sim, &manager).await;
}

/// A purchase whose timeout passes while its claimed instance is being
/// attached finishes the attach: a tenant-touched instance never goes back
/// to the pool, so giving up then would cost the pool an instance on every
/// retry of a purchase with a short timeout.
#[tokio::test(start_paused = true)]
async fn a_timeout_passing_during_the_attach_does_not_cost_the_instance() {
    let sim = sim();
    let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 2).await;
    let existing = VolumeSource::Existing {
        volume_id: sim.create_volume_for_test("tenant-a", "az1", 10),
    };
    let mut order = request("o-short", existing, EmptyPoolPolicy::FailFast);
    // The port takes 0.5 s, the attach alone 2 s.
    order.timeout = Some(Duration::from_secs(1));
    let a = manager.allocate(order).await.unwrap();
    assert_eq!(a.state, AllocationState::Allocated);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.count(InstanceState::Ready),
        1,
        "one instance taken, none lost"
    );
    assert_eq!(status.count(InstanceState::Deleting), 0);
    assert_consistent(&sim, &manager).await;
}

/// What [`FailFlushAfter`] fails the flush after, the first time.
#[derive(Clone, Copy, PartialEq)]
enum FlushTrigger {
    /// A swap of an allocation to this state (the commit: `Allocated`; a
    /// release: `Releasing`).
    AllocationTo(AllocationState),
    /// A new instance's record.
    NewInstance,
    /// A swap of an instance to this state.
    InstanceTo(InstanceState),
    /// A pool record's deletion (a drain's end).
    PoolDeleted,
    /// The allocation swap recording its port's address (mid-attach).
    AddressRecorded,
}

/// An order whose new record cannot be flushed fails having done nothing,
/// and takes its record back: the same call again goes ahead at once. The
/// record used to stay, and a retry was told the order was in progress
/// until the reconciler rolled it back.
#[tokio::test(start_paused = true)]
async fn an_order_whose_record_cannot_be_flushed_can_be_retried_at_once() {
    let sim = sim();
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::AllocationTo(
        AllocationState::Allocating,
    )));
    let manager = started(&sim, store.clone(), 1).await;
    let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("nothing was done")),
        "{err:?}"
    );
    assert!(sim.ports().is_empty(), "nothing was created for it");
    let asked = tokio::time::Instant::now();
    let done = manager.allocate(order).await.unwrap();
    assert!(done.warm_hit);
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "{:?}",
        asked.elapsed()
    );
    assert_consistent(&sim, &manager).await;
}

/// A call with the same order id, waiting on an order whose record is then
/// taken back (its flush failed), goes ahead at once: it was left waiting
/// for some unrelated change or its own deadline.
#[tokio::test(start_paused = true)]
async fn a_call_waiting_on_an_order_taken_back_goes_ahead_at_once() {
    let sim = sim();
    let store = HookedStore::new(HoldFlush::default());
    let manager = started(&sim, store.clone(), 1).await;
    store.hooks.fail.store(true, Ordering::SeqCst);
    store.hooks.armed.store(true, Ordering::SeqCst);
    let order = request("order-1", new_volume(), EmptyPoolPolicy::FailFast);
    let first = spawn_allocate(&manager, order.clone());
    store.hooks.reached.notified().await;
    let second = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!second.is_finished(), "it waits on the first");
    let released = tokio::time::Instant::now();
    store.hooks.go.notify_one();
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, ManagerError::TryAgain(_)), "{err:?}");
    let done = second.await.unwrap().unwrap();
    assert!(done.warm_hit);
    assert!(
        released.elapsed() < Duration::from_secs(60),
        "{:?}",
        released.elapsed()
    );
    assert_consistent(&sim, &manager).await;
}

/// Fails the one flush that follows the first write its trigger names.
struct FailFlushAfter {
    trigger: FlushTrigger,
    armed: AtomicBool,
    fired: AtomicBool,
}

impl FailFlushAfter {
    fn new(trigger: FlushTrigger) -> Self {
        Self {
            trigger,
            armed: AtomicBool::new(false),
            fired: AtomicBool::new(false),
        }
    }

    fn saw(&self, trigger: FlushTrigger) {
        if trigger == self.trigger && !self.fired.swap(true, Ordering::SeqCst) {
            self.armed.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl StoreHooks for FailFlushAfter {
    fn before_allocation_swap(&self, new: Option<&Allocation>) -> StoreResult<()> {
        if let Some(a) = new {
            self.saw(FlushTrigger::AllocationTo(a.state));
            if a.ip_address.is_some() {
                self.saw(FlushTrigger::AddressRecorded);
            }
        }
        Ok(())
    }
    fn before_instance_swap(&self, new: Option<&Instance>) -> StoreResult<()> {
        if new.is_some_and(|i| i.state == InstanceState::Booting && i.server_id.is_none()) {
            self.saw(FlushTrigger::NewInstance);
        }
        if let Some(i) = new {
            self.saw(FlushTrigger::InstanceTo(i.state));
        }
        Ok(())
    }
    fn written(&self, write: Write) {
        if matches!(write, Write::PoolDeleted(_)) {
            self.saw(FlushTrigger::PoolDeleted);
        }
    }
    async fn before_flush(&self) -> StoreResult<()> {
        match self.armed.swap(false, Ordering::SeqCst) {
            true => Err(disk_error()),
            false => Ok(()),
        }
    }
}

/// A commit whose flush fails has been written all the same: the record
/// says Allocated, and the tenant's volume and port are on the instance.
/// The answer was the store's INTERNAL error, a failure the caller may
/// take as final, which the record contradicts; now it is UNAVAILABLE
/// (call again), and the same call again gets the allocation.
#[tokio::test(start_paused = true)]
async fn a_commit_whose_flush_fails_says_call_again_and_the_call_gets_it() {
    let sim = sim();
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::AllocationTo(
        AllocationState::Allocated,
    )));
    let manager = started(&sim, store.clone(), 1).await;
    let order = request("o-flush", new_volume(), EmptyPoolPolicy::FailFast);
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("call again")),
        "{err:?}"
    );
    let again = manager.allocate(order).await.unwrap();
    assert_eq!(again.state, AllocationState::Allocated);
    assert_its_volume_is_attached(&sim, &again);
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.allocations_failed, 0);
    assert_eq!(status.record.allocations_warm, 1);
    assert_consistent(&sim, &manager).await;
}

/// A purchase whose flush fails mid-attach (right after its port's address
/// was recorded) fails as a store failure and is rolled back. The record
/// the purchase kept in memory was not moved on when that flush failed, so
/// its next swap (the failed try's port let go of) expected a record the
/// store no longer held: the answer was FAILED_PRECONDITION, "changed by
/// someone else", which billing does not retry, for a one-off disk fault.
#[tokio::test(start_paused = true)]
async fn a_flush_failing_mid_attach_is_a_store_failure_not_someone_elses_change() {
    let sim = sim();
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::AddressRecorded));
    let manager = started(&sim, store.clone(), 2).await;
    let order = request("o-mid", new_volume(), EmptyPoolPolicy::FailFast);
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(store.hooks.fired.load(Ordering::SeqCst));
    assert!(matches!(&err, ManagerError::Store(_)), "{err:?}");
    assert!(
        matches!(
            manager.get_allocation("o-mid").await,
            Err(ManagerError::AllocationNotFound(_))
        ),
        "the failed purchase was rolled back"
    );
    assert!(sim.ports().is_empty(), "{:?}", sim.ports());
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.allocations_failed, 1);
    // The order rolled back: the same call again buys afresh.
    let done = manager.allocate(order).await.unwrap();
    assert_eq!(done.state, AllocationState::Allocated);
    assert_consistent(&sim, &manager).await;
}

/// A release whose record cannot be confirmed on disk goes on all the same
/// (the reconciler finishes it): the answer says to call again, and the
/// call again finishes it; it was the store's INTERNAL error.
#[tokio::test(start_paused = true)]
async fn a_release_whose_flush_fails_says_call_again_and_the_call_finishes_it() {
    let sim = sim();
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::AllocationTo(
        AllocationState::Releasing,
    )));
    let manager = started(&sim, store.clone(), 1).await;
    let a = manager
        .allocate(request("o-rel", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let err = manager.release("o-rel", Some(true)).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("call again")),
        "{err:?}"
    );
    let released = manager.release("o-rel", Some(true)).await.unwrap();
    assert_eq!(released.state, AllocationState::Released);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(sim.server(a.server_id.as_deref().unwrap()).is_none());
    assert_consistent(&sim, &manager).await;
}

/// A release whose later flushes fail (once its instance is marked
/// Releasing, once its record says Released) is recorded all the same: the
/// answer says to call again, and the call again answers it released. It
/// was the store's INTERNAL error, which billing may take as final.
#[tokio::test(start_paused = true)]
async fn a_release_whose_later_flush_fails_says_call_again_and_the_call_gets_it() {
    for trigger in [
        FlushTrigger::InstanceTo(InstanceState::Releasing),
        FlushTrigger::AllocationTo(AllocationState::Released),
    ] {
        let sim = sim();
        let store = HookedStore::new(FailFlushAfter::new(trigger));
        let manager = started_paused(&GatedCloud::new(&sim), store.clone(), 1).await;
        let a = manager
            .allocate(request("o-rel", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        let err = manager.release("o-rel", Some(true)).await.unwrap_err();
        assert!(store.hooks.fired.load(Ordering::SeqCst));
        assert!(
            matches!(&err, ManagerError::TryAgain(m) if m.contains("call again")),
            "{err:?}"
        );
        let released = manager.release("o-rel", Some(true)).await.unwrap();
        assert_eq!(released.state, AllocationState::Released);
        assert!(sim.server(a.server_id.as_deref().unwrap()).is_none());
        assert!(sim.volumes().is_empty() && sim.ports().is_empty());
        assert_consistent(&sim, &manager).await;
    }
}

/// CreatePool of a pool that exists answers ALREADY_EXISTS whatever its
/// spec, before the cloud is asked about it: an image the cloud lacks made
/// it FAILED_PRECONDITION, and a cloud outage UNAVAILABLE.
#[tokio::test(start_paused = true)]
async fn creating_an_existing_pool_is_already_exists_before_the_spec_is_checked() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let mut other = spec(1);
    other.image = "no-such-image".into();
    let err = manager.create_pool(pool(), other).await.unwrap_err();
    assert!(matches!(err, ManagerError::PoolExists(_)), "{err:?}");
    assert_consistent(&sim, &manager).await;
}

/// UpdatePool and DeletePool whose record cannot be confirmed on disk are
/// in effect all the same (the replenisher reads the store): they answer
/// call again, not INTERNAL, and the same call again confirms them.
#[tokio::test(start_paused = true)]
async fn pool_changes_whose_flush_fails_say_call_again() {
    let sim = sim();
    let store = HookedStore::new(FailFlush::default());
    let manager = started(&sim, store.clone(), 1).await;
    store.hooks.failing.store(true, Ordering::SeqCst);
    let err = manager
        .update_pool(&pool(), |s| s.max_ready = 7)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("change of pool") && m.contains("call again")),
        "{err:?}"
    );
    let err = manager.delete_pool(&pool()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains("deletion of pool")),
        "{err:?}"
    );
    store.hooks.failing.store(false, Ordering::SeqCst);
    let status = manager.delete_pool(&pool()).await.unwrap();
    assert!(status.record.draining);
    assert_eq!(status.record.spec.max_ready, 7);
    assert_consistent(&sim, &manager).await;
}

/// Every answer that waits for a flush says call again when the flush
/// fails, as the README promises, not the store's INTERNAL error a caller
/// may take as final: a read of an allocation (whose record may not be on
/// disk yet), a repeated Allocate of a finished order, a Release, a new
/// order or a new pool (both taken back, so the call again makes them).
#[tokio::test(start_paused = true)]
async fn answers_waiting_for_a_failed_flush_say_call_again() {
    let sim = sim();
    let store = HookedStore::new(FailFlush::default());
    let manager = started(&sim, store.clone(), 2).await;
    let order = request("o-done", new_volume(), EmptyPoolPolicy::FailFast);
    manager.allocate(order.clone()).await.unwrap();
    store.hooks.failing.store(true, Ordering::SeqCst);

    let call_again = |what: &str, err: ManagerError| {
        assert!(
            matches!(&err, ManagerError::TryAgain(m) if m.contains("call again")),
            "{what}: {err:?}"
        );
    };
    call_again("get", manager.get_allocation("o-done").await.unwrap_err());
    call_again("allocate again", manager.allocate(order).await.unwrap_err());
    call_again(
        "release",
        manager.release("o-done", Some(true)).await.unwrap_err(),
    );
    let new_order = request("o-new", new_volume(), EmptyPoolPolicy::FailFast);
    call_again(
        "new order",
        manager.allocate(new_order.clone()).await.unwrap_err(),
    );
    let other = pool_manager::model::PoolKey::new("db.large", "az1");
    call_again(
        "new pool",
        manager
            .create_pool(other.clone(), spec(0))
            .await
            .unwrap_err(),
    );

    store.hooks.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        manager.allocate(new_order).await.unwrap().state,
        AllocationState::Allocated
    );
    manager.create_pool(other, spec(0)).await.unwrap();
    manager.release("o-done", Some(true)).await.unwrap();
    assert_consistent(&sim, &manager).await;
}

/// A new instance whose record cannot be flushed is taken back: it stood
/// as supply with no boot behind it, and the pool stayed one short until a
/// reconcile pass dropped it.
#[tokio::test(start_paused = true)]
async fn a_new_instance_whose_flush_fails_does_not_stand_as_supply() {
    let sim = sim();
    let store = HookedStore::new(FailFlushAfter::new(FlushTrigger::NewInstance));
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(2)).await.unwrap();
    // No reconcile pass runs (the tests' interval is a day).
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert!(store.hooks.fired.load(Ordering::SeqCst));
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{:?}", status.counts);
    assert_eq!(
        status.count(InstanceState::Booting),
        0,
        "{:?}",
        status.counts
    );
    assert_consistent(&sim, &manager).await;
}

/// A cold boot the cloud refuses as asked (the pool's flavor retired since)
/// is FAILED_PRECONDITION, and one the cloud keeps failing (5xx until the
/// boot's timeout) is the cloud's error, UNAVAILABLE: both answered
/// RESOURCE_EXHAUSTED, which billing retries as a capacity shortage, each
/// retry creating and rolling back a volume and a port. A boot the cloud
/// found no host for stays RESOURCE_EXHAUSTED.
#[tokio::test(start_paused = true)]
async fn a_failed_cold_boot_answers_what_failed_it() {
    use pool_manager::cloud::CloudError;
    // The in-process cloud refuses a retired flavor as Nova does (400); the
    // OpenStack driver finds no flavor of its name first (a 404).
    let err = cold_boot_on(&GatedCloud::new(&sim()), |sim| {
        sim.retire_flavor("db.small")
    })
    .await;
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("db.small")),
        "{err:?}"
    );
    let refused = |e: CloudError| GatedCloud::refusing(&sim(), "create_server", e, true).0;
    let unknown = CloudError::NotFound("no flavor named 'db.small' is visible to pool".into());
    let err = cold_boot_on(&refused(unknown), |_| {}).await;
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m) if m.contains("db.small")),
        "{err:?}"
    );
    let outage = CloudError::Transient("503 Service Unavailable".into());
    let err = cold_boot_on(&refused(outage), |_| {}).await;
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Transient(_))),
        "{err:?}"
    );
    let err = cold_boot_on(&GatedCloud::new(&sim()), |sim| {
        sim.faults().error_next_boots(1, "NoValidHost")
    })
    .await;
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("NoValidHost")),
        "{err:?}"
    );
}

/// How a cold boot of an empty pool on `cloud` fails once `then` changed
/// the cloud; it must leave nothing behind.
async fn cold_boot_on(
    cloud: &std::sync::Arc<GatedCloud>,
    then: impl FnOnce(&cloudsim::SimCloud),
) -> ManagerError {
    let manager = started_over(cloud, temp_store(), 0).await;
    then(&cloud.sim);
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    // Past the pool's boot timeout: the boot gives up first.
    order.timeout = Some(Duration::from_secs(30 * 60));
    let err = manager.allocate(order).await.unwrap_err();
    assert_consistent(&cloud.sim, &manager).await;
    err
}

/// A cold boot whose server vanishes under it (deleted behind warmpool's
/// back) was not refused as asked: it stays RESOURCE_EXHAUSTED, as the
/// next try boots another server.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_whose_server_vanishes_is_no_refusal() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    let polled = cloud.hold_next("get_server", At::Before);
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30 * 60));
    let buyer = spawn_allocate(&manager, order);
    polled.reached().await;
    let server = sim.servers()[0].server.id.clone();
    pool_manager::cloud::Cloud::delete_server(&*sim, &server)
        .await
        .unwrap();
    while sim.server(&server).is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    polled.release();
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("deleted")),
        "{err:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// A release whose volume Cinder is still detaching, or whose port Neutron
/// still has bound, when it stops waiting says call again (UNAVAILABLE): it
/// was FAILED_PRECONDITION ("refused the call in the object's current
/// state"), which billing takes as its request to change, though the cloud
/// catches up and the release again (or the reconciler) finishes it.
#[tokio::test(start_paused = true)]
async fn a_release_the_cloud_is_slow_to_let_go_of_says_call_again() {
    // Slower than a release waits.
    let slow = pool_manager::cleanup_budget(settings().poll_interval) + Duration::from_secs(60);
    let config = sim().config();
    let detaching = cloudsim::SimCloud::new(cloudsim::SimConfig {
        latencies: cloudsim::Latencies {
            volume_detach: slow,
            ..config.latencies.clone()
        },
        ..config.clone()
    });
    let bound = cloudsim::SimCloud::new(cloudsim::SimConfig {
        member_port_policy: true,
        ..config
    });
    bound.faults().slow_port_unbind(slow);
    for sim in [detaching, bound] {
        let manager = started_paused(&GatedCloud::new(&sim), temp_store(), 1).await;
        let a = manager
            .allocate(request("o-slow", new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        let held = match sim.config().member_port_policy {
            true => a.port_id.clone().unwrap(),
            false => a.volume_id.clone().unwrap(),
        };
        let err = manager.release("o-slow", Some(true)).await.unwrap_err();
        assert!(
            matches!(&err, ManagerError::Cloud(pool_manager::cloud::CloudError::Transient(m))
                if m.contains(&held)),
            "{err:?}"
        );
        let releasing = manager.get_allocation("o-slow").await.unwrap();
        assert_eq!(releasing.state, AllocationState::Releasing);
        tokio::time::sleep(slow).await;
        let released = manager.release("o-slow", Some(true)).await.unwrap();
        assert_eq!(released.state, AllocationState::Released);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
        assert!(sim.ports().is_empty(), "{:?}", sim.ports());
        assert_consistent(&sim, &manager).await;
    }
}

/// A cold boot that misses its purchase's deadline while its create's
/// answer is still on the way goes on in the background: the server the
/// cloud made is recorded when the answer comes (not dropped with the
/// purchase, and so never taken for a leak), boots to Ready, and joins the
/// pool as ordinary supply, which the next purchase gets warm.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_past_its_deadline_mid_create_joins_the_pool() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    let mut events = manager.events();
    let answered = cloud.hold_next("create_server", At::After);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    answered.reached().await;
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains("did not finish before the deadline") && m.contains("join the pool")),
        "{err:?}"
    );
    assert!(manager.get_allocation("late").await.is_err(), "rolled back");
    // The boot is the pool's now, its create still unanswered: a reconcile
    // pass meanwhile leaves the server the cloud made alone.
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0].state, InstanceState::Booting);
    assert_eq!(instances[0].request_id, None, "no longer the purchase's");
    manager.reconcile().await.unwrap();
    assert_eq!(sim.servers().len(), 1);
    answered.release();

    wait_ready(&manager, 1).await;
    let ready = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0].id, instances[0].id);
    assert_eq!(ready[0].request_id, None);
    let supply = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(supply.count(InstanceState::Ready), 1, "{supply:?}");
    manager.reconcile().await.unwrap();

    let next = manager
        .allocate(request("next", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(next.warm_hit);
    assert_eq!(next.instance_id.as_ref(), Some(&ready[0].id));
    assert_no_leak_deleted(&mut events, "the late cold boot's server");
    assert_consistent(&sim, &manager).await;
}

/// A cold boot whose server is still building when the purchase's deadline
/// passes is not deleted: it becomes Ready in the background, counts as the
/// pool's supply (the pool boots nothing more for it), and a retry of the
/// same order, now a new order since the first was rolled back, gets it
/// warm.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_past_its_deadline_is_kept_for_the_retry() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    // A lone boot takes 90 s.
    order.timeout = Some(Duration::from_secs(45));
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(_)),
        "{err:?}"
    );
    let servers = sim.servers();
    assert_eq!(servers.len(), 1, "the boot's server is kept");
    let booting = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(booting.len(), 1, "{booting:?}");
    assert_eq!(booting[0].request_id, None);
    assert!(booting[0].counts_as_supply());

    wait_ready(&manager, 1).await;
    // The pool counted it as its supply all along: nothing else booted.
    assert_eq!(sim.servers().len(), 1);
    let retried = manager.allocate(order).await.unwrap();
    assert!(retried.warm_hit, "{retried:?}");
    assert_eq!(retried.server_id.as_ref(), Some(&servers[0].server.id));
    assert_eq!(retried.instance_id.as_ref(), Some(&booting[0].id));
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.record.allocations_warm, 1);
    assert_eq!(status.record.allocations_failed, 1);
    assert_consistent(&sim, &manager).await;
}

/// A cold boot that fails after its purchase's deadline passed is cleaned
/// up as any failed boot is: its server deleted, its record gone.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_failing_after_its_deadline_is_cleaned_up() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    // mysqld never answers: the boot fails at the pool's boot timeout.
    manager
        .update_pool(&pool(), |s| s.boot_timeout = Duration::from_secs(300))
        .await
        .unwrap();
    sim.faults().mysqld_never_starts_next(1);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(45));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(_)),
        "{err:?}"
    );
    assert_eq!(sim.servers().len(), 1, "still booting");
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    assert_consistent(&sim, &manager).await;
}

/// The most supply (booting, warming, Ready, unreserved) `pool()` has at
/// once, looked at every 500 ms until [`MostSupply::stop`].
struct MostSupply {
    most: Arc<AtomicU32>,
    watching: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl MostSupply {
    fn watch(manager: &pool_manager::PoolManager) -> Self {
        let most = Arc::new(AtomicU32::new(0));
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = tokio::spawn({
            let (manager, most, watching) = (manager.clone(), most.clone(), watching.clone());
            async move {
                while watching.load(Ordering::SeqCst) {
                    let instances = manager.list_instances(Some(&pool())).await.unwrap();
                    let supply = instances.iter().filter(|i| i.counts_as_supply()).count();
                    most.fetch_max(supply as u32, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        Self {
            most,
            watching,
            watcher,
        }
    }

    async fn stop(self) -> u32 {
        self.watching.store(false, Ordering::SeqCst);
        self.watcher.await.unwrap();
        self.most.load(Ordering::SeqCst)
    }
}

/// A cold boot past its deadline joins the pool only while the pool has
/// room for it under max_ready. A client retrying a timed-out ColdBoot
/// order starts a new boot on every retry (a retry only finds Ready
/// instances) while the first one, handed over, is still booting: with
/// every one handed over, a pool of max_ready 1 held three. The ones that
/// find no room are undone with their purchase, their servers deleted.
#[tokio::test(start_paused = true)]
async fn cold_boots_past_their_deadline_join_the_pool_only_below_max_ready() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    manager
        .update_pool(&pool(), |s| s.max_ready = 1)
        .await
        .unwrap();
    let supply = MostSupply::watch(&manager);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    // A lone boot takes 90 s.
    order.timeout = Some(Duration::from_secs(30));
    let first = manager.allocate(order.clone()).await;
    let mut retries = Vec::new();
    for _ in 0..3 {
        retries.push(manager.allocate(order.clone()).await);
    }
    // Every boot done or undone.
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(supply.stop().await, 1, "supply above max_ready");
    let first = first.unwrap_err();
    assert!(
        matches!(&first, ManagerError::ResourceExhausted(m) if m.contains("join the pool")),
        "{first:?}"
    );
    for (retry, answer) in retries.iter().enumerate() {
        match answer {
            // The first boot, Ready by now.
            Ok(allocation) => assert!(allocation.warm_hit, "retry {retry}: {allocation:?}"),
            // Not the pool's: undone with the purchase.
            Err(e) => assert!(
                matches!(e, ManagerError::ResourceExhausted(m)
                    if m.contains("did not finish before the deadline") && !m.contains("join the pool")),
                "retry {retry}: {e:?}"
            ),
        }
    }
    // The first boot (in the pool, or the allocation that took it): the
    // others' servers are gone.
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    manager.reconcile().await.unwrap();
    assert_consistent(&sim, &manager).await;
}

/// Two cold boots missing their deadlines at once, with room for one under
/// max_ready: one joins the pool, the other is undone with its purchase.
/// Each handover counts the supply before it adds to it, so two counting
/// at once would both have found room (the store lets other tasks run
/// after each listing, as a store that waits on its disk would).
#[tokio::test(start_paused = true)]
async fn concurrent_late_cold_boots_take_the_pools_last_room_once() {
    struct YieldAfterListing;
    #[async_trait::async_trait]
    impl StoreHooks for YieldAfterListing {
        async fn after_list_untouched(&self) {
            tokio::task::yield_now().await;
        }
    }
    let sim = sim();
    let manager = started(&sim, HookedStore::new(YieldAfterListing), 0).await;
    manager
        .update_pool(&pool(), |s| s.max_ready = 1)
        .await
        .unwrap();
    let buyers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| {
            let mut order = request(id, new_volume(), EmptyPoolPolicy::ColdBoot);
            order.timeout = Some(Duration::from_secs(30));
            spawn_allocate(&manager, order)
        })
        .collect();
    let mut joined = 0;
    for buyer in buyers {
        let err = buyer.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, ManagerError::ResourceExhausted(_)),
            "{err:?}"
        );
        joined += usize::from(err.to_string().contains("join the pool"));
    }
    assert_eq!(joined, 1);
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert!(instances[0].counts_as_supply());
    wait_ready(&manager, 1).await;
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// A late cold boot handed to the pool while a refill step of that pool is
/// between its count of the supply and its boots: the handover saw no
/// supply and joined; the step, deciding on its count from before the
/// handover, booted the pool's whole target beside it, and a pool of
/// max_ready 1 held two servers until the extra one was Ready and retired.
/// The step counts again, under the lock the handovers take, before it
/// records its boots.
#[tokio::test(start_paused = true)]
async fn a_handover_during_a_refill_step_leaves_the_pool_within_max_ready() {
    /// Holds the first listing of a pool's instances made once armed.
    #[derive(Default)]
    struct HoldNextListing {
        armed: AtomicBool,
        arrived: tokio::sync::Notify,
        go: tokio::sync::Notify,
    }
    struct Hooks(Arc<HoldNextListing>);
    #[async_trait::async_trait]
    impl StoreHooks for Hooks {
        async fn after_list_untouched(&self) {
            if self.0.armed.swap(false, Ordering::SeqCst) {
                self.0.arrived.notify_one();
                self.0.go.notified().await;
            }
        }
    }
    let sim = sim();
    let listing = Arc::new(HoldNextListing::default());
    let manager = started(&sim, HookedStore::new(Hooks(listing.clone())), 0).await;
    manager
        .update_pool(&pool(), |s| s.max_ready = 1)
        .await
        .unwrap();
    let supply = MostSupply::watch(&manager);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    // A lone boot takes 90 s.
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    tokio::time::sleep(Duration::from_secs(20)).await;
    // The step this change starts counts no supply (the cold boot is still
    // the purchase's) and is held right after its count.
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    listing.armed.store(true, Ordering::SeqCst);
    listing.arrived.notified().await;
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("join the pool")),
        "{err:?}"
    );
    listing.go.notify_one();
    // Every boot Ready, and any extra one retired.
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(supply.stop().await, 1, "supply above max_ready");
    let ready = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(ready.count(InstanceState::Ready), 1, "{ready:?}");
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// What an operator changes while a refill step waits on the cloud.
#[derive(Clone, Copy, Debug)]
enum ChangeMidStep {
    Pause,
    LowerMaxReady,
    Delete,
    NewImage,
}

/// A refill step records its boots by the pool as it is then, read again
/// under the pool lock, not as it was when the step began: an UpdatePool
/// or DeletePool answered OK while the step waited on its quota look (a
/// cloud call) is obeyed by the boots that follow it. The step used to
/// boot its whole deficit all the same: in a paused pool, beyond a lowered
/// max_ready, in a deleted pool (servers the drain then deleted), and from
/// the image the pool no longer named.
#[tokio::test(start_paused = true)]
async fn a_refill_step_boots_by_the_pool_as_it_is_when_it_records_the_boots() {
    for change in [
        ChangeMidStep::Pause,
        ChangeMidStep::LowerMaxReady,
        ChangeMidStep::Delete,
        ChangeMidStep::NewImage,
    ] {
        refill_after_a_change_mid_step(change).await;
    }
}

async fn refill_after_a_change_mid_step(change: ChangeMidStep) {
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        images: vec!["mysql-8.0".into(), "mysql-8.4".into()],
        ..sim().config()
    });
    let cloud = GatedCloud::new(&sim);
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        settings(),
    );
    manager.start().await.unwrap();
    // The new pool's first step wants three boots and looks at the quota
    // headroom first: it waits there.
    let headroom = cloud.hold_next("boot_headroom", At::Before);
    manager.create_pool(pool(), spec(3)).await.unwrap();
    headroom.reached().await;
    let supply = MostSupply::watch(&manager);
    match change {
        ChangeMidStep::Pause => {
            manager
                .update_pool(&pool(), |s| s.paused = true)
                .await
                .unwrap();
        }
        ChangeMidStep::LowerMaxReady => {
            manager
                .update_pool(&pool(), |s| {
                    s.min_ready = 1;
                    s.max_ready = 1;
                })
                .await
                .unwrap();
        }
        ChangeMidStep::Delete => {
            manager.delete_pool(&pool()).await.unwrap();
        }
        ChangeMidStep::NewImage => {
            manager
                .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
                .await
                .unwrap();
        }
    }
    headroom.release();
    tokio::time::sleep(Duration::from_secs(400)).await;
    let most = supply.stop().await;
    let creates = sim.call_counts().get("create_server").copied().unwrap_or(0);
    let images: Vec<String> = sim.servers().into_iter().map(|s| s.image).collect();
    match change {
        ChangeMidStep::Pause => {
            assert_eq!(creates, 0, "{change:?}: a paused pool booted");
            assert_eq!(most, 0, "{change:?}");
        }
        ChangeMidStep::LowerMaxReady => {
            assert!(most <= 1, "{change:?}: supply {most} above max_ready 1");
            assert_eq!(creates, 1, "{change:?}");
        }
        ChangeMidStep::Delete => {
            assert_eq!(creates, 0, "{change:?}: a deleted pool booted");
            assert!(manager.get_pool(&pool()).await.is_err(), "drained");
        }
        ChangeMidStep::NewImage => {
            // Booted from the new image at once: none to replace.
            assert_eq!(creates, 3, "{change:?}: {images:?}");
            assert_eq!(images, ["mysql-8.4"; 3], "{change:?}");
        }
    }
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// No `LeakDeleted` among the events received so far: `what` was taken for
/// a leak.
fn assert_no_leak_deleted(
    events: &mut tokio::sync::broadcast::Receiver<pool_manager::events::Event>,
    what: &str,
) {
    use pool_manager::events::EventKind;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::LeakDeleted { .. }),
            "{what} was taken for a leak: {event:?}"
        );
    }
}

/// A cold boot that misses its deadline in the middle of its create, in a
/// pool with no room for it (max_ready 0, which the pool allows), is undone
/// with its purchase as a drain undoes a boot in flight: its record is kept,
/// `Deleting` with no server, for its task, still running, which deletes
/// the server when the create's answer comes, then the record. No server
/// is left, and none is taken for a leak.
#[tokio::test(start_paused = true)]
async fn a_late_cold_boot_the_pool_has_no_room_for_is_undone_mid_create() {
    undone_cold_boot_mid_create(false).await;
}

/// As above, but a reconcile pass runs while the undone boot's create is
/// still on its way: the server it made is listed and only its kept
/// record, no server recorded, names it; its boot task, still running,
/// holds its driving claim and deletes it when the answer comes. The pass deleted it as a leak (a false
/// `LeakDeleted`, feeding `WarmpoolLeakRateHigh`); it leaves it to the task.
#[tokio::test(start_paused = true)]
async fn a_pass_mid_create_leaves_an_undone_cold_boots_server_to_its_task() {
    undone_cold_boot_mid_create(true).await;
}

async fn undone_cold_boot_mid_create(pass_mid_create: bool) {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    manager
        .update_pool(&pool(), |s| s.max_ready = 0)
        .await
        .unwrap();
    let mut events = manager.events();
    let answered = cloud.hold_next("create_server", At::After);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    answered.reached().await;
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains("did not finish before the deadline") && m.contains("discarded")),
        "{err:?}"
    );
    assert!(manager.get_allocation("late").await.is_err(), "rolled back");
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        matches!(&kept[..], [i] if i.state == InstanceState::Deleting && i.server_id.is_none()),
        "the record, all that names the server to come, is kept for its task: {kept:#?}"
    );
    assert_eq!(sim.servers().len(), 1, "made, its answer on the way");
    if pass_mid_create {
        manager.reconcile().await.unwrap();
        assert_eq!(
            sim.servers().len(),
            1,
            "the pass deleted the server a live boot task owns"
        );
    }
    answered.release();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    manager.reconcile().await.unwrap();
    assert_no_leak_deleted(&mut events, "the undone boot's server");
    assert_consistent(&sim, &manager).await;
}

/// A refill whose create is on its way when its pool is drained: its
/// task, finding its record taken, deletes the server the create made.
/// It sent that delete once and ignored the answer, so a 429 left the
/// server to the next reconcile pass, which deleted it as a leak (a false
/// `WarmpoolLeakRateHigh`). The delete is retried as any cleanup's.
#[tokio::test(start_paused = true)]
async fn a_refill_drained_mid_create_deletes_its_server_through_a_429() {
    drained_refill_through_a_429(false).await;
}

/// As above, with a reconcile pass inside the 429's pause: the task still
/// holds its claim and retries its delete after the pause. The pass
/// deleted the server as a leak, the very false alert the retry was for.
#[tokio::test(start_paused = true)]
async fn a_pass_in_a_drained_refills_429_pause_leaves_its_server_to_it() {
    drained_refill_through_a_429(true).await;
}

async fn drained_refill_through_a_429(pass_in_pause: bool) {
    let sim = sim();
    let (cloud, refused) = GatedCloud::failing_next(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Throttled {
            retry_after: Some(Duration::from_secs(5)),
            message: "delete_server: rate-limited (HTTP 429)".into(),
            unavailable: false,
        },
    );
    let manager = started_over(&cloud, temp_store(), 0).await;
    let mut events = manager.events();
    let answered = cloud.hold_next("create_server", At::After);
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    answered.reached().await;
    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    assert_eq!(sim.servers().len(), 1, "made, its answer on the way");
    refused.store(1, Ordering::SeqCst);
    answered.release();
    if pass_in_pause {
        while refused.load(Ordering::SeqCst) != 0 {
            tokio::task::yield_now().await;
        }
        // The task's delete was refused; it waits out the 5 s Retry-After.
        manager.reconcile().await.unwrap();
        assert_eq!(
            sim.servers().len(),
            1,
            "the pass deleted the server a live boot task owns"
        );
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(refused.load(Ordering::SeqCst), 0);
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    manager.reconcile().await.unwrap();
    assert_no_leak_deleted(&mut events, "the drained refill's server");
    assert_consistent(&sim, &manager).await;
}

/// A refill whose create is on its way when its pool is drained, the
/// create then refused: the drain kept the record (`Deleting`, no server)
/// for the boot's task, which drops it once its create made no server, so
/// no record of the deleted pool is left for a reconcile pass to find.
#[tokio::test(start_paused = true)]
async fn a_refill_drained_mid_create_drops_its_record_when_the_create_is_refused() {
    let sim = sim();
    let (cloud, refused) = GatedCloud::failing_next(
        &sim,
        "create_server",
        pool_manager::cloud::CloudError::Fatal("create_server: flavor disabled".into()),
    );
    let manager = started_over(&cloud, temp_store(), 0).await;
    let sent = cloud.hold_next("create_server", At::Before);
    refused.store(1, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    sent.reached().await;
    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        matches!(&kept[..], [i] if i.state == InstanceState::Deleting && i.server_id.is_none()),
        "{kept:#?}"
    );
    sent.release();
    // Well before a reconcile pass (a day apart in these tests) could.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(refused.load(Ordering::SeqCst), 0, "the create was refused");
    let left = manager.list_instances(None).await.unwrap();
    assert!(left.is_empty(), "{left:#?}");
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// Holds a reconcile pass once, after it listed the instances, until the
/// test lets it go (armed by the test: other listings go by).
#[derive(Default)]
struct HoldPassAfterListingInstances {
    armed: AtomicBool,
    holding: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldPassAfterListingInstances {
    async fn after_list_instances(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
    }
}

/// A pass that listed the servers before a drained boot's create answered,
/// and the instances before its task recorded the server, reaches the
/// record once the task has ended (its delete refused): its listing shows
/// no server carrying the instance's id, and the record it read names
/// none. Dropping the record then, by that copy, dropped the only record
/// of the server, which the next pass deleted as a leak. The record is
/// kept, naming the server, which the next pass deletes as its own.
#[tokio::test(start_paused = true)]
async fn a_pass_with_an_older_listing_keeps_a_drained_boots_record_naming_its_server() {
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Fatal("delete_server: the server is locked".into()),
        false,
    );
    let store = HookedStore::new(HoldPassAfterListingInstances::default());
    let manager = started_over(&cloud, store.clone(), 0).await;
    let mut events = manager.events();
    let sent = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    sent.reached().await;
    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }

    // The pass lists the servers (none yet) and the instances (Deleting,
    // no server), then waits.
    store.hooks.armed.store(true, Ordering::SeqCst);
    let pass = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile().await }
    });
    store.hooks.holding.notified().await;
    // The create answers; the task records the server, its delete is
    // refused, and the task ends.
    refusing.store(true, Ordering::SeqCst);
    sent.release();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = match &manager.list_instances(None).await.unwrap()[..] {
        [i] if i.state == InstanceState::Deleting => i.server_id.clone().expect("recorded"),
        other => panic!("{other:#?}"),
    };

    store.hooks.release.notify_one();
    pass.await.unwrap().unwrap();
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        matches!(&kept[..], [i] if i.server_id.as_ref() == Some(&server)),
        "the record naming server {server} was dropped: {kept:#?}"
    );

    refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    assert_no_leak_deleted(&mut events, "the drained boot's server");
    assert_consistent(&sim, &manager).await;
}

/// Holds the first read of a pool by a task other than the one that
/// wrote the first new instance record (so: that instance's boot task,
/// whose first call it is) until the test lets it go.
#[derive(Default)]
struct HoldBootTaskBeforeItsFirstCall {
    creator: std::sync::Mutex<Option<Option<tokio::task::Id>>>,
    held: AtomicBool,
    holding: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl StoreHooks for HoldBootTaskBeforeItsFirstCall {
    fn before_instance_swap(&self, new: Option<&Instance>) -> StoreResult<()> {
        let booting = new.is_some_and(|i| i.state == InstanceState::Booting);
        let mut creator = self.creator.lock().unwrap();
        if booting && creator.is_none() {
            *creator = Some(tokio::task::try_id());
        }
        Ok(())
    }
    async fn reading_pool(&self) {
        let Some(creator) = *self.creator.lock().unwrap() else {
            return;
        };
        let task = tokio::task::try_id();
        if task.is_some() && task != creator && !self.held.swap(true, Ordering::SeqCst) {
            self.holding.notify_one();
            self.release.notified().await;
        }
    }
}

/// A refill drained before its boot task sent the create (before the
/// task's first call, the read of its pool, which is gone by then) sends
/// none, and its record, kept `Deleting` for the task, went only at the
/// next reconcile pass (a day apart in these tests), counting as the
/// pool's meanwhile. The task drops it as it ends.
#[tokio::test(start_paused = true)]
async fn a_refill_drained_before_its_create_drops_its_record() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = HookedStore::new(HoldBootTaskBeforeItsFirstCall::default());
    let manager = started_over(&cloud, store.clone(), 0).await;
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    store.hooks.holding.notified().await;
    manager.delete_pool(&pool()).await.unwrap();
    let mut changes = manager.subscribe();
    while manager.get_pool(&pool()).await.is_ok() {
        changes.changed().await;
    }
    let kept = manager.list_instances(None).await.unwrap();
    assert!(
        matches!(&kept[..], [i] if i.state == InstanceState::Deleting && i.server_id.is_none()),
        "{kept:#?}"
    );

    store.hooks.release.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = manager.list_instances(None).await.unwrap();
    assert!(left.is_empty(), "{left:#?}");
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// The first write of a server's id on its instance fails.
#[derive(Default)]
struct FailRecordingServerId {
    failed: AtomicBool,
}

#[async_trait::async_trait]
impl StoreHooks for FailRecordingServerId {
    fn before_instance_swap(&self, new: Option<&Instance>) -> StoreResult<()> {
        let recording =
            new.is_some_and(|i| i.state == InstanceState::Booting && i.server_id.is_some());
        if recording && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(disk_error());
        }
        Ok(())
    }
}

/// A boot whose server's id the store failed to record: the failed boot's
/// discard, going by the record, deleted no server, and the next reconcile
/// pass deleted it as a leak. The boot deletes the server it made.
#[tokio::test(start_paused = true)]
async fn a_boot_that_cannot_record_its_server_deletes_it() {
    let sim = sim();
    let store = HookedStore::new(FailRecordingServerId::default());
    let manager = manager_on(&sim, store.clone());
    let mut events = manager.events();
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    assert!(store.hooks.failed.load(Ordering::SeqCst));
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_no_leak_deleted(&mut events, "the failed boot's server");
    assert_consistent(&sim, &manager).await;
}

/// A cold boot that misses its deadline in a pool deleted while it ran is
/// undone with its purchase, and the answer says so: the pool being
/// deleted, not a max_ready it has room under.
#[tokio::test(start_paused = true)]
async fn a_late_cold_boot_in_a_pool_being_deleted_says_so() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    let answered = cloud.hold_next("create_server", At::After);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    answered.reached().await;
    manager.delete_pool(&pool()).await.unwrap();
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains("did not finish before the deadline")
                && m.contains("being deleted")
                && !m.contains("max_ready")),
        "{err:?}"
    );
    answered.release();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// A cold boot that fails before its purchase's deadline, its server still
/// being deleted when the deadline passes (the boot answers its purchase
/// once it is discarded): the answer says the boot failed. It said the
/// boot "was undone meanwhile", as a drain's or a rollback's would.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_that_failed_before_its_deadline_is_said_to_have_failed() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 0).await;
    sim.faults().error_next_boots(1, "NoValidHost");
    let deleted = cloud.hold_next("delete_server", At::Before);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    deleted.reached().await;
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains("did not finish before the deadline")
                && m.contains("boot has failed")),
        "{err:?}"
    );
    deleted.release();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    assert_consistent(&sim, &manager).await;
}

/// A cold boot that fails while its purchase's handover, past the
/// deadline, holds the pool lock. The failed boot updated the pool (its
/// last_error, under that lock) before it discarded the instance, so the
/// handover still read it Booting, handed it to the pool, and the purchase
/// was told it would join the pool, just before it was deleted. The
/// failure is recorded on the instance first, so the handover sees it.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_failing_during_its_handover_is_not_said_to_join_the_pool() {
    /// Holds the next read of the watched instance once armed (the
    /// handover's first, under the pool lock), and tells when a write
    /// leaves that instance no longer booting.
    #[derive(Default)]
    struct Watch {
        instance: std::sync::Mutex<Option<String>>,
        armed: AtomicBool,
        arrived: tokio::sync::Notify,
        go: tokio::sync::Notify,
        failed: tokio::sync::Notify,
    }
    impl Watch {
        fn watches(&self, id: &str) -> bool {
            self.instance.lock().unwrap().as_deref() == Some(id)
        }
    }
    struct Hooks(Arc<Watch>);
    #[async_trait::async_trait]
    impl StoreHooks for Hooks {
        async fn before_get_instance(&self, id: &str) {
            if self.0.watches(id) && self.0.armed.swap(false, Ordering::SeqCst) {
                self.0.arrived.notify_one();
                self.0.go.notified().await;
            }
        }
        fn written(&self, write: Write) {
            if let Write::Instance(id, new) = write {
                if self.0.watches(&id) && new.is_none_or(|i| !i.state.is_supply()) {
                    self.0.failed.notify_one();
                }
            }
        }
    }
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let watch = Arc::new(Watch::default());
    let manager = started_over(&cloud, HookedStore::new(Hooks(watch.clone())), 0).await;
    sim.faults().error_next_boots(1, "NoValidHost");
    // The boot's first look at its server waits until past the deadline.
    let polled = cloud.hold_next("get_server", At::Before);
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(30));
    let buyer = spawn_allocate(&manager, order);
    polled.reached().await;
    let booting = manager.list_instances(Some(&pool())).await.unwrap();
    assert_eq!(booting.len(), 1, "{booting:?}");
    *watch.instance.lock().unwrap() = Some(booting[0].id.clone());
    watch.armed.store(true, Ordering::SeqCst);
    watch.arrived.notified().await;
    // The server is in ERROR by now: the boot fails.
    polled.release();
    // Its failure is recorded without the pool lock. On the paused clock
    // the wait ends early only once every task waits: the failure then
    // cannot be recorded before the handover lets go of the lock.
    let recorded = tokio::time::timeout(Duration::from_secs(60), watch.failed.notified())
        .await
        .is_ok();
    watch.go.notify_one();
    let err = buyer.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m)
            if m.contains("did not finish before the deadline")
                && m.contains("boot has failed")
                && !m.contains("join the pool")),
        "{err:?}"
    );
    assert!(recorded, "the failure was recorded only after the handover");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(
        status
            .record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("NoValidHost")),
        "{status:?}"
    );
    assert_consistent(&sim, &manager).await;
}

/// The sim's probe, but its next call panics while `panics` is set (a bug
/// in a boot task).
struct PanickingProbe {
    sim: cloudsim::SimProbe,
    panics: AtomicBool,
}

#[async_trait::async_trait]
impl pool_manager::probe::Probe for PanickingProbe {
    async fn probe(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<String, pool_manager::probe::ProbeError> {
        if self.panics.swap(false, Ordering::SeqCst) {
            panic!("a bug in the boot");
        }
        self.sim.probe(addr).await
    }
}

/// A manager of one empty pool whose probe panics once when armed.
async fn started_with_panicking_probe(
    sim: &Arc<cloudsim::SimCloud>,
) -> (pool_manager::PoolManager, Arc<PanickingProbe>) {
    let probe = Arc::new(PanickingProbe {
        sim: sim.probe(),
        panics: AtomicBool::new(false),
    });
    let manager =
        pool_manager::PoolManager::new(temp_store(), sim.clone(), probe.clone(), settings());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(0)).await.unwrap();
    (manager, probe)
}

/// A cold boot whose task panics leaves its purchase without an answer
/// from it. The manager is not stopping, so that is no UNAVAILABLE
/// "shutting down" (a client would wait for a restart that never comes)
/// but an internal error; the boot is undone with the purchase, and the
/// order bought again gets a new one.
#[tokio::test(start_paused = true)]
async fn a_cold_boot_whose_task_panics_is_an_internal_error_not_a_shutdown() {
    let sim = sim();
    let (manager, probe) = started_with_panicking_probe(&sim).await;
    probe.panics.store(true, Ordering::SeqCst);
    let order = request("panics", new_volume(), EmptyPoolPolicy::ColdBoot);
    let err = manager.allocate(order.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Internal(m) if m.contains("ended without an answer")),
        "{err:?}"
    );
    assert!(
        manager.get_allocation("panics").await.is_err(),
        "rolled back"
    );
    assert!(manager.list_instances(None).await.unwrap().is_empty());
    assert!(sim.servers().is_empty(), "{:?}", sim.servers());
    let bought = manager.allocate(order).await.unwrap();
    assert!(!bought.warm_hit);
    assert_consistent(&sim, &manager).await;
}

/// A cold boot handed to the pool, its purchase gone, whose task then
/// panics: nothing drives it any more, and it must not stay claimed as
/// driven, or no reconcile pass would ever resume it and it would stay
/// Warming, counted as the pool's supply, for good.
#[tokio::test(start_paused = true)]
async fn a_handed_over_cold_boot_whose_task_panics_is_resumed() {
    let sim = sim();
    let (manager, probe) = started_with_panicking_probe(&sim).await;
    let mut order = request("late", new_volume(), EmptyPoolPolicy::ColdBoot);
    // A lone boot takes 90 s.
    order.timeout = Some(Duration::from_secs(30));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::ResourceExhausted(m) if m.contains("join the pool")),
        "{err:?}"
    );
    probe.panics.store(true, Ordering::SeqCst);
    while probe.panics.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    manager.reconcile().await.unwrap();
    wait_ready(&manager, 1).await;
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// A replenisher's boot whose task panics lets go of its driving claim as
/// a cold boot's does: the next reconcile pass resumes the instance, which
/// would otherwise stay Warming, counted as the pool's supply (so never
/// replaced), until a restart.
#[tokio::test(start_paused = true)]
async fn a_refill_boot_whose_task_panics_is_resumed() {
    let sim = sim();
    let (manager, probe) = started_with_panicking_probe(&sim).await;
    probe.panics.store(true, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| s.min_ready = 1)
        .await
        .unwrap();
    while probe.panics.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    manager.reconcile().await.unwrap();
    wait_ready(&manager, 1).await;
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// A boot the reconciler resumed (here after a restart) whose task panics
/// lets go of its driving claim too: the next pass resumes it again.
#[tokio::test(start_paused = true)]
async fn a_resumed_boot_whose_task_panics_is_resumed_again() {
    let sim = sim();
    let store = temp_store();
    let (manager, probe) = {
        let probe = Arc::new(PanickingProbe {
            sim: sim.probe(),
            panics: AtomicBool::new(false),
        });
        let manager =
            pool_manager::PoolManager::new(store.clone(), sim.clone(), probe.clone(), settings());
        manager.start().await.unwrap();
        (manager, probe)
    };
    manager.create_pool(pool(), spec(1)).await.unwrap();
    // A lone boot takes 90 s: stopped part-way, it is left for the next
    // start to resume.
    tokio::time::sleep(Duration::from_secs(30)).await;
    manager.shutdown().await.unwrap();
    drop(manager);
    let booting = store.list_instances().await.unwrap();
    assert!(
        booting.len() == 1
            && booting[0].state.is_supply()
            && booting[0].state != InstanceState::Ready,
        "{booting:?}"
    );
    probe.panics.store(true, Ordering::SeqCst);
    let manager =
        pool_manager::PoolManager::new(store.clone(), sim.clone(), probe.clone(), settings());
    manager.start().await.unwrap();
    while probe.panics.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    manager.reconcile().await.unwrap();
    wait_ready(&manager, 1).await;
    assert_eq!(sim.servers().len(), 1, "{:?}", sim.servers());
    assert_consistent(&sim, &manager).await;
}

/// A manager on `store` started with warmpoold's `--adopt-cloud` (and
/// `--delete-unknown-servers` when `delete_unknown_servers`): the store is
/// to serve `cloud` from now on.
fn adopting_the_store(
    store: Arc<dyn pool_manager::store::Store>,
    cloud: Arc<dyn pool_manager::cloud::Cloud>,
    sim: &cloudsim::SimCloud,
    delete_unknown_servers: bool,
) -> pool_manager::PoolManager {
    pool_manager::PoolManager::new(
        store,
        cloud,
        Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            adopt_cloud: true,
            delete_unknown_servers,
            ..settings()
        },
    )
}

/// A manager on `store` started as one meant to be new (warmpoold's
/// `--delete-unknown-servers`): its start deletes the unsold pool servers
/// it does not know as leaks instead of refusing.
fn on_a_store_meant_to_be_new(
    store: Arc<dyn pool_manager::store::Store>,
    cloud: Arc<dyn pool_manager::cloud::Cloud>,
    sim: &cloudsim::SimCloud,
) -> pool_manager::PoolManager {
    pool_manager::PoolManager::new(
        store,
        cloud,
        Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            delete_unknown_servers: true,
            ..settings()
        },
    )
}

/// A waiting purchase ends at its deadline however busy the store is. One
/// whose every look at its pool met a write it had not waited for (other
/// pools' boots, operators' updates) looked again, past its deadline, for
/// as long as the writes went on: a timeout polls its future before its
/// clock.
#[tokio::test(start_paused = true)]
async fn a_waiting_purchase_ends_at_its_deadline_however_busy_the_store() {
    struct SlowLooks;
    #[async_trait::async_trait]
    impl StoreHooks for SlowLooks {
        // Each look at the pool's instances takes a second, in which
        // writes come.
        async fn after_list_untouched(&self) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let sim = sim();
    let store = HookedStore::new(SlowLooks);
    let manager = manager_on(&sim, store.clone());
    manager.start().await.unwrap();
    let mut empty = spec(0);
    empty.target = pool_manager::model::Target::Fixed(0);
    manager.create_pool(pool(), empty).await.unwrap();
    let writer = tokio::spawn({
        let manager = manager.clone();
        async move {
            for i in 0..120u32 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                manager
                    .update_pool(&pool(), move |s| s.max_ready = 4 + i % 2)
                    .await
                    .unwrap();
            }
        }
    });

    let started = tokio::time::Instant::now();
    let mut order = request("order-w", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(5));
    let err = manager.allocate(order).await.unwrap_err();
    let answered = started.elapsed();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert!(
        answered < Duration::from_secs(10),
        "a 5 s wait answered after {answered:?}, the writes having gone on for 60 s"
    );
    writer.abort();
    assert_consistent(&sim, &manager).await;
}

/// A purchase whose caller stopped waiting (a gRPC client hung up, or its
/// deadline passed) is still the manager's to finish: a graceful stop
/// waits for it within its grace, instead of aborting it for the next
/// start to roll back an order the cloud was about to complete. A call
/// started once the stop has begun is refused.
#[tokio::test(start_paused = true)]
async fn a_graceful_stop_lets_a_purchase_whose_caller_left_finish() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let store = temp_store();
    let manager = started_paused(&cloud, store.clone(), 1).await;
    let attach = cloud.hold_next("attach_volume", At::Before);
    let caller = spawn_allocate(
        &manager,
        request("caller-left", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attach.reached().await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());

    let stopping = tokio::spawn({
        let manager = manager.clone();
        async move { manager.finish_calls(Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let err = manager.release("caller-left", None).await.unwrap_err();
    assert!(matches!(err, ManagerError::ShuttingDown { .. }), "{err:?}");
    attach.release();
    assert_eq!(stopping.await.unwrap(), 0, "no call is left running");
    manager.shutdown().await.unwrap();

    let stored = store.get_allocation("caller-left").await.unwrap().unwrap();
    assert_eq!(stored.state, AllocationState::Allocated, "{stored:?}");
    assert_consistent(&sim, &manager).await;
}

/// A call a graceful stop refuses is told how to call again as fits the
/// call: every one used to be told "an Allocate with the same request id",
/// a Release and the pool calls too.
#[tokio::test(start_paused = true)]
async fn a_call_a_stop_refuses_is_told_how_to_call_it_again() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 1).await;
    let held = manager
        .allocate(request("held", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(manager.finish_calls(Duration::from_secs(30)).await, 0);

    let refused = |result: Result<(), ManagerError>, call: &str, says: &str| {
        let err = result.unwrap_err();
        assert!(
            matches!(err, ManagerError::ShuttingDown { .. }),
            "{call}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("shutting down"), "{call}: {message}");
        assert!(message.contains(says), "{call}: {message}");
        for other in [
            "Allocate",
            "Release",
            "CreatePool",
            "UpdatePool",
            "DeletePool",
        ] {
            assert!(
                other == call || !message.contains(other),
                "{call}: {message}"
            );
        }
    };
    let order = request("later", new_volume(), EmptyPoolPolicy::FailFast);
    refused(
        manager.allocate(order).await.map(drop),
        "Allocate",
        "an Allocate with the same request id",
    );
    refused(
        manager
            .release(&held.params.request_id, None)
            .await
            .map(drop),
        "Release",
        "a Release of the same request id",
    );
    refused(
        manager
            .create_pool(PoolKey::new("db.medium", "az1"), spec(1))
            .await
            .map(drop),
        "CreatePool",
        "the same CreatePool",
    );
    refused(
        manager
            .update_pool(&pool(), |s| s.min_ready = 2)
            .await
            .map(drop),
        "UpdatePool",
        "the same UpdatePool",
    );
    refused(
        manager.delete_pool(&pool()).await.map(drop),
        "DeletePool",
        "the same DeletePool",
    );
    assert_consistent(&sim, &manager).await;
    manager.shutdown().await.unwrap();
}

/// The grace bounds the wait: a purchase still held by the cloud when it
/// is over is left running, counted, for `shutdown` to stop where it is.
#[tokio::test(start_paused = true)]
async fn a_graceful_stop_waits_for_a_purchase_no_longer_than_its_grace() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let attach = cloud.hold_next("attach_volume", At::Before);
    let caller = spawn_allocate(
        &manager,
        request("held", new_volume(), EmptyPoolPolicy::FailFast),
    );
    attach.reached().await;
    caller.abort();

    let asked = tokio::time::Instant::now();
    assert_eq!(manager.finish_calls(Duration::from_secs(30)).await, 1);
    assert_eq!(asked.elapsed(), Duration::from_secs(30));
    manager.shutdown().await.unwrap();
}

/// A repeat of an order under way only waits for its answer: it holds
/// nothing, so it lasts no longer than its caller. It used to wait as a
/// task of the manager until its own deadline (up to an hour), counted as a
/// running call, and when the purchase it waited on failed and was rolled
/// back it started a purchase of its own that nobody waited for: a client
/// retrying with a short deadline left one such task per retry, and a
/// leftover could buy the order after billing had been told it failed.
#[tokio::test(start_paused = true)]
async fn a_repeat_whose_caller_left_stops_waiting_and_starts_nothing() {
    let sim = sim();
    let (cloud, failing) = GatedCloud::failing_next(
        &sim,
        "attach_volume",
        pool_manager::cloud::CloudError::Fatal("HTTP 400: invalid volume".into()),
    );
    let manager = started_paused(&cloud, temp_store(), 1).await;
    let attach = cloud.hold_next("attach_volume", At::Before);
    let mut order = request("order-x", new_volume(), EmptyPoolPolicy::Wait);
    order.timeout = Some(Duration::from_secs(60));
    let first = spawn_allocate(&manager, order.clone());
    attach.reached().await;
    assert_eq!(manager.calls_running(), 1);

    order.timeout = Some(Duration::from_secs(3600));
    let repeats: Vec<_> = (0..20)
        .map(|_| spawn_allocate(&manager, order.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for repeat in repeats {
        assert!(
            !repeat.is_finished(),
            "a repeat answered while the order is under way"
        );
        repeat.abort();
        assert!(repeat.await.unwrap_err().is_cancelled());
    }
    assert_eq!(
        manager.calls_running(),
        1,
        "only the purchase is running once the repeats' callers have left"
    );

    failing.store(1, Ordering::SeqCst);
    attach.release();
    let err = first.await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            ManagerError::Cloud(_) | ManagerError::ResourceExhausted(_)
        ),
        "{err:?}"
    );
    // Time for a leftover waiter to wake, find the order gone and buy it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_volume"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("create_port"), Some(&1), "{calls:?}");
    let err = manager.get_allocation("order-x").await.unwrap_err();
    assert!(
        matches!(err, ManagerError::AllocationNotFound(_)),
        "order-x is bought with no caller: {err:?}"
    );
    assert_eq!(manager.calls_running(), 0);
}

/// Cinder refuses a delete of a volume already `deleting` (400, a
/// Conflict): a release whose volume delete Cinder took but whose answer
/// was lost sees its retry refused, finds the volume being deleted, and is
/// done.
#[tokio::test(start_paused = true)]
async fn a_release_whose_volume_delete_answer_was_lost_is_done() {
    use pool_manager::cloud::Cloud;
    let base = sim().config();
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        latencies: cloudsim::Latencies {
            delete: Duration::from_secs(20),
            ..base.latencies.clone()
        },
        ..base
    });
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    wait_ready(&manager, 2).await;
    let allocation = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    let volume = allocation.volume_id.clone().unwrap();
    cloud.lose_next_answer("delete_volume");
    manager.release("o-1", Some(true)).await.unwrap();
    let v = sim.get_volume(&volume).await.unwrap();
    assert!(v.is_being_deleted(), "{v:?}");
    assert_eq!(sim.call_counts().get("delete_volume").copied(), Some(2));
    assert_consistent(&sim, &manager).await;
}

/// Nova may show a server ACTIVE before warmpool can read its address:
/// the OpenStack driver reads it on the management network's name, which
/// a process's first lookup during a Neutron outage does not get (Nova's
/// read is still answered, the server without an address), and Nova may
/// list an ACTIVE server's addresses a moment late. Its boot polls on
/// until the address shows, within the boot's deadline; it used to take
/// the first ACTIVE read's missing address for a broken server, failing
/// the boot ("server has no address to probe") and booting another.
#[tokio::test(start_paused = true)]
async fn a_boot_polls_on_until_its_active_servers_address_shows() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let unaddressed_reads = Arc::new(AtomicU32::new(5));
    cloud.show_every_server({
        let left = unaddressed_reads.clone();
        move |s| {
            let active = s.status == pool_manager::cloud::ServerStatus::Active;
            if active
                && left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                s.mysql_addr = None;
            }
        }
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(1)).await.unwrap();
    wait_ready(&manager, 1).await;
    assert_eq!(
        (
            sim.call_counts().get("create_server").copied(),
            unaddressed_reads.load(Ordering::SeqCst)
        ),
        (Some(1), 0),
        "(servers created, reads left to show without an address): {:?}",
        manager.get_pool(&pool()).await.unwrap()
    );
    assert_consistent(&sim, &manager).await;
}

/// Neutron fails every port listing (a 503 outage, a 429 storm) while Nova
/// answers: boots go by what Nova shows of their servers (status, address),
/// so a pool still fills, and its boot polls and warming looks list no
/// ports (a real cloud's extra call per read of an ACTIVE server). They
/// used to read ports once a server was ACTIVE, so no boot passed ACTIVE
/// until Neutron came back. A purchase's verify still lists its server's
/// ports: it must not pass a server whose port it could not see.
#[tokio::test(start_paused = true)]
async fn a_pool_fills_while_neutron_fails_port_listings_and_a_purchase_still_verifies_ports() {
    let sim = sim();
    let neutron_down = Arc::new(AtomicBool::new(true));
    let port_listings = Arc::new(AtomicU32::new(0));
    let cloud = GatedCloud::with_fault(&sim, {
        let (neutron_down, port_listings) = (neutron_down.clone(), port_listings.clone());
        move |method| {
            if method != "ports_bound_to" {
                return None;
            }
            port_listings.fetch_add(1, Ordering::SeqCst);
            neutron_down.load(Ordering::SeqCst).then(|| {
                pool_manager::cloud::CloudError::Transient(
                    "GET /v2.0/ports: HTTP 503 Service Unavailable".into(),
                )
            })
        }
    });
    let manager = manager_over(&cloud, temp_store());
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(3)).await.unwrap();
    // Well within a boot's timeout (15 min): the boots fail no try.
    let mut ready = 0;
    for _ in 0..600 {
        ready = manager
            .get_pool(&pool())
            .await
            .unwrap()
            .count(InstanceState::Ready);
        if ready >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        (ready, port_listings.load(Ordering::SeqCst)),
        (3, 0),
        "(Ready, port listings) after 10 min of Neutron failing: {:?}",
        manager.get_pool(&pool()).await.unwrap()
    );

    neutron_down.store(false, Ordering::SeqCst);
    let allocation = manager
        .allocate(request("order-n", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(allocation.state, AllocationState::Allocated);
    assert!(allocation.warm_hit);
    assert!(
        port_listings.load(Ordering::SeqCst) >= 1,
        "the purchase's verify lists its server's ports"
    );
    assert_consistent(&sim, &manager).await;
}

/// Cinder's per-volume size limit (its project's `per_volume_gigabytes`;
/// `VolumeSizeExceedsLimit`, a 413 worded as a quota) refuses a size no
/// release can make fit: FAILED_PRECONDITION, naming the order's size and
/// the limit, not RESOURCE_EXHAUSTED telling the operator to free some,
/// which billing retried for ever, each retry making and deleting a port.
#[tokio::test(start_paused = true)]
async fn a_volume_over_cinders_per_volume_limit_is_the_requests_to_change() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.quotas.max_gigabytes_per_volume = Some(100);
    let sim = cloudsim::SimCloud::new(config);
    let manager = started(&sim, temp_store(), 1).await;
    let err = manager
        .allocate(request(
            "o-huge",
            VolumeSource::New {
                size_gib: 500,
                volume_type: None,
            },
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains("larger than maximum allowed limit 100G")
                && m.contains("size_gib 500") && m.contains("per_volume_gigabytes")
                && !m.contains("release orders")),
        "{err:?}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.record.allocations_exhausted, 0,
        "{:?}",
        status.record
    );
    assert_eq!(status.count(InstanceState::Ready), 1, "{:?}", status.counts);
    assert!(sim.volumes().is_empty(), "{:?}", sim.volumes());
    assert!(
        manager.get_allocation("o-huge").await.is_err(),
        "rolled back"
    );
    assert_consistent(&sim, &manager).await;
    // A size under the limit is sold.
    let sold = manager
        .allocate(request(
            "o-100",
            VolumeSource::New {
                size_gib: 100,
                volume_type: None,
            },
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    assert!(sold.warm_hit);
}

/// A tenant port Neutron has not bound to the claimed server when the
/// attach's deadline passes was late, as a late volume is: the pool had an
/// instance to give, so the answer is DEADLINE_EXCEEDED, asking for a
/// longer timeout, and no miss of the pool's depth (RESOURCE_EXHAUSTED
/// counted one, and moved WarmpoolPoolExhausted).
#[tokio::test(start_paused = true)]
async fn a_port_not_bound_by_the_deadline_is_no_miss_of_the_pool() {
    let mut config = cloudsim::SimConfig::deterministic();
    config.latencies.port_attach = Duration::from_secs(3600);
    let sim = cloudsim::SimCloud::new(config);
    let manager = started(&sim, temp_store(), 1).await;
    let mut order = request("o-slow-port", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(30));
    let err = manager.allocate(order).await.unwrap_err();
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(
        status.record.allocations_exhausted, 0,
        "{err}: {:?}",
        status.record
    );
    assert_eq!(status.record.allocations_failed, 1, "{:?}", status.record);
    assert!(
        matches!(&err, ManagerError::DeadlineExceeded(m)
            if m.contains("port") && m.contains("longer timeout")),
        "{err:?}"
    );
    assert!(
        manager.get_allocation("o-slow-port").await.is_err(),
        "rolled back"
    );
    assert_consistent(&sim, &manager).await;
}

/// The check's empty metadata write, refused for another reason than
/// Cinder's policy, sends no one to mend that policy. A 400 because the
/// volume began uploading to an image (or migrating) between the check's
/// look and the write (Cinder's InvalidVolume, "Updating volume metadata
/// is not allowed for volumes in uploading status") is UNAVAILABLE, to ask
/// again, as the volume seen uploading one call earlier is; any other (a
/// 401, Cinder refusing a token Keystone had just issued) is the cloud's
/// error as it came. Only Cinder's 403 names the policy. None did
/// anything for the order.
#[tokio::test(start_paused = true)]
async fn a_check_write_refused_but_by_cinders_policy_is_no_policy_to_mend() {
    use pool_manager::cloud::{CloudError, VolumeStatus};
    let sim = sim();
    let refusal = Arc::new(std::sync::Mutex::new(None::<CloudError>));
    let cloud = GatedCloud::with_fault(&sim, {
        let refusal = refusal.clone();
        move |called| {
            (called == "set_volume_metadata")
                .then(|| refusal.lock().unwrap().clone())
                .flatten()
        }
    });
    let manager = started_over(&cloud, temp_store(), 2).await;
    let volume = sim.create_own_volume_for_test("az1", 10);
    let order = |id: &str| {
        let source = VolumeSource::Existing {
            volume_id: volume.clone(),
        };
        request(id, source, EmptyPoolPolicy::FailFast)
    };

    *refusal.lock().unwrap() = Some(CloudError::Fatal(format!(
        "POST /volumes/{volume}/metadata: Invalid volume: Updating volume metadata is not allowed for volumes in uploading status. (HTTP 400)"
    )));
    // The check's look sees it available; the next, uploading.
    cloud.show_volume_status_after(1, Some(VolumeStatus::Other("uploading".into())));
    let err = manager.allocate(order("order-a")).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::TryAgain(m) if m.contains(&volume) && m.contains("uploaded to an image")),
        "{err:?}"
    );
    cloud.show_volume_status_after(0, None);

    *refusal.lock().unwrap() = Some(CloudError::Fatal(format!(
        "POST /volumes/{volume}/metadata: the service refused a token Keystone had just issued (HTTP 401): check the service's keystone_authtoken settings"
    )));
    let err = manager.allocate(order("order-b")).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Cloud(CloudError::Fatal(m)) if m.contains("HTTP 401")),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("volume:create_volume_metadata"),
        "{err}"
    );

    // Cinder's 403 alone is its policy, to mend.
    *refusal.lock().unwrap() = Some(CloudError::PolicyRefused(format!(
        "POST /volumes/{volume}/metadata: Policy doesn't allow volume:create_volume_metadata to be performed. (HTTP 403)"
    )));
    let err = manager.allocate(order("order-c")).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::FailedPrecondition(m)
            if m.contains(&volume) && m.contains("Cinder's policy") && m.contains("volume:create_volume_metadata")),
        "{err:?}"
    );

    assert_eq!(sim.call_counts().get("attach_volume"), None);
    for id in ["order-a", "order-b", "order-c"] {
        assert!(manager.get_allocation(id).await.is_err(), "{id} recorded");
    }
    let status = manager.get_pool(&pool()).await.unwrap();
    assert_eq!(status.count(InstanceState::Ready), 2, "{status:?}");
    assert_consistent(&sim, &manager).await;
}

/// A fail-fast Allocate on an empty pool claims nothing, yet was warned
/// of twice: the pool's exhausted event, and "allocation failed; rolling
/// back" as if something had been undone. The pool's event stays the one
/// warning; the Allocate's failure is at info, and says no rollback.
#[tokio::test(start_paused = true)]
async fn a_fail_fast_allocate_on_an_empty_pool_is_warned_of_once_without_a_rollback() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    let logs = Logs::capture();
    let err = manager
        .allocate(request("ff", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
    assert_eq!(logs.count("WARN", "pool exhausted"), 1, "{}", logs.text());
    assert!(!logs.text().contains("rolling back"), "{}", logs.text());
    assert_eq!(
        logs.count("INFO", "allocation failed"),
        1,
        "{}",
        logs.text()
    );
}

/// The line of a warm allocation's outcome, its release's, and a silent
/// mysqld's name the server and pool they are about (the allocated line
/// printed `server=Some("…")` and no pool nor instance; the released one
/// and the silent mysqld's, no server nor pool).
#[tokio::test(start_paused = true)]
async fn allocated_released_and_silent_mysqld_lines_name_server_and_pool() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 2).await;
    let logs = Logs::capture();
    let done = manager
        .allocate(request(
            "order-ids",
            new_volume(),
            EmptyPoolPolicy::FailFast,
        ))
        .await
        .unwrap();
    let server = done.server_id.clone().unwrap();
    let instance = done.instance_id.clone().unwrap();
    manager.release("order-ids", Some(false)).await.unwrap();
    let pool = format!("pool={}", pool());
    let line = |says: &str| {
        logs.lines_at("INFO")
            .into_iter()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no {says:?} line: {}", logs.text()))
    };
    let allocated = line(": allocated ");
    assert!(
        allocated.contains(&format!("server={server}")),
        "{allocated}"
    );
    assert!(allocated.contains(&pool), "{allocated}");
    assert!(
        allocated.contains(&format!("instance={instance}")),
        "{allocated}"
    );
    let released = line(": released ");
    assert!(released.contains(&format!("server={server}")), "{released}");
    assert!(released.contains(&pool), "{released}");

    let silent = sim
        .servers()
        .into_iter()
        .find(|s| s.server.id != server)
        .unwrap()
        .server
        .id;
    assert!(sim.stop_mysqld(&silent));
    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    for says in ["mysqld did not answer", "mysqld silent on two passes"] {
        let silent_line = logs
            .text()
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no {says:?} line: {}", logs.text()))
            .to_owned();
        assert!(
            silent_line.contains(&format!("server={silent}")),
            "{silent_line}"
        );
        assert!(silent_line.contains(&pool), "{silent_line}");
    }
}

/// A cold boot that fails is RESOURCE_EXHAUSTED too, but it made the
/// order's volume and port, and a server, before it failed: those are
/// rolled back, which is warned of as such, not told at info as an
/// Allocate the pool merely had no instance for.
#[tokio::test(start_paused = true)]
async fn a_failed_cold_boot_is_warned_of_with_its_rollback() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 0).await;
    sim.faults().error_next_boots(100, "NoValidHost");
    let logs = Logs::capture();
    let mut order = request("cold", new_volume(), EmptyPoolPolicy::ColdBoot);
    order.timeout = Some(Duration::from_secs(120));
    let err = manager.allocate(order).await.unwrap_err();
    assert!(matches!(err, ManagerError::ResourceExhausted(_)), "{err}");
    assert_eq!(
        logs.count("WARN", "allocation failed; rolling back"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.count("INFO", "no instance for it"),
        0,
        "{}",
        logs.text()
    );
    assert!(manager.get_allocation("cold").await.is_err(), "rolled back");
    assert_consistent(&sim, &manager).await;
}

/// A port a SOFT_DELETED server kept bound, looked at while Neutron is down
/// (a 503 for every port call): the look was retried until the cleanup
/// deadline, then the delete sent anyway was too, minutes of a pass per
/// waiting port with the reconcile lock held, the pass's other repairs (a
/// twin server here, other pools' leaks) and the Releases behind the lock
/// waiting. One look a pass: the pass goes on at once, sends no delete
/// while the look fails, and warns of it once; Neutron back, the port,
/// unbound, is deleted and the watch ends.
#[tokio::test(start_paused = true)]
async fn a_bound_port_watch_during_a_neutron_outage_holds_up_no_pass() {
    use pool_manager::cloud::{
        Cloud, CloudError, NewPortSpec, ServerSpec, META_INSTANCE, META_POOL,
    };
    use pool_manager::model::TwinWatch;
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 1).await;
    let port = sim
        .create_port(&NewPortSpec {
            name: "warmpool-order-n-1".into(),
            network_id: "net-tenant".into(),
            subnet_id: None,
            fixed_ip: None,
        })
        .await
        .unwrap()
        .id;
    let watch = TwinWatch {
        name: "warmpool-order-n-1".into(),
        request_id: "order-n".into(),
        pool: Some(pool()),
        volumes: false,
        keep: Vec::new(),
        stuck_volume: None,
        deleted_volumes: Vec::new(),
        deleted_only: true,
        bound_ports: vec![port.clone()],
        until: std::time::SystemTime::UNIX_EPOCH,
    };
    assert!(store.cas_twin_watch(None, Some(&watch)).await.unwrap());
    // Work of the same pass after the watches: a twin of the instance's
    // server to delete.
    let instance = manager.list_instances(None).await.unwrap().remove(0);
    let recorded = instance.server_id.clone().unwrap();
    let twin = sim
        .create_server(&ServerSpec {
            name: format!("warmpool-{}", instance.id),
            pool: pool(),
            image: "mysql-8.0".into(),
            metadata: [
                (META_POOL.to_string(), pool().to_string()),
                (META_INSTANCE.to_string(), instance.id.clone()),
            ]
            .into(),
        })
        .await
        .unwrap();

    let outage = || CloudError::Transient("HTTP 503 Service Unavailable".into());
    sim.faults().fail_next_calls_of("get_port", 1000, outage());
    sim.faults()
        .fail_next_calls_of("delete_port", 1000, outage());
    let logs = Logs::capture_at(tracing::Level::DEBUG);
    let calls = |method: &str| sim.call_counts().get(method).copied().unwrap_or(0);
    for pass in 1..=2 {
        let (looks, deletes) = (calls("get_port"), calls("delete_port"));
        let began = tokio::time::Instant::now();
        manager.reconcile().await.unwrap();
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "pass {pass} took {took:?}: {}",
            logs.text()
        );
        assert_eq!(calls("get_port") - looks, 1, "pass {pass}: one look");
        assert_eq!(calls("delete_port"), deletes, "pass {pass}: a delete sent");
    }
    let left: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert_eq!(left, [recorded], "the twin {} survived", twin.id);
    let warned: Vec<String> = logs
        .warnings()
        .into_iter()
        .filter(|l| l.contains(&port))
        .collect();
    assert_eq!(warned.len(), 1, "{}", logs.text());
    assert!(warned[0].contains("503"), "{}", warned[0]);
    assert_eq!(store.list_twin_watches().await.unwrap(), vec![watch]);
    assert!(sim.ports().iter().any(|p| p.id == port));

    // Neutron back: the port, bound to nothing, is deleted.
    sim.faults().fail_next_calls_of("get_port", 0, outage());
    sim.faults().fail_next_calls_of("delete_port", 0, outage());
    manager.reconcile().await.unwrap();
    assert!(!sim.ports().iter().any(|p| p.id == port), "{}", logs.text());
    assert!(store.list_twin_watches().await.unwrap().is_empty());
}

/// A port a SOFT_DELETED server kept bound, free by now (its read says so),
/// whose delete Neutron refuses for good (a 403 of its policy, a 400, a
/// 409): the delete is sent once a pass, not retried until the cleanup
/// deadline, the pass goes on at once, and the refusal is warned of once
/// per kind, naming the port and Neutron's answer; the port is left for
/// the next pass, which asks again, and is deleted once Neutron takes it.
#[tokio::test(start_paused = true)]
async fn a_free_bound_ports_delete_refused_for_good_is_sent_once_a_pass() {
    use pool_manager::cloud::{Cloud, CloudError, NewPortSpec};
    use pool_manager::model::TwinWatch;
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 1).await;
    let port = sim
        .create_port(&NewPortSpec {
            name: "warmpool-order-r-1".into(),
            network_id: "net-tenant".into(),
            subnet_id: None,
            fixed_ip: None,
        })
        .await
        .unwrap()
        .id;
    let watch = TwinWatch {
        name: "warmpool-order-r-1".into(),
        request_id: "order-r".into(),
        pool: Some(pool()),
        volumes: false,
        keep: Vec::new(),
        stuck_volume: None,
        deleted_volumes: Vec::new(),
        deleted_only: true,
        bound_ports: vec![port.clone()],
        until: std::time::SystemTime::UNIX_EPOCH,
    };
    assert!(store.cas_twin_watch(None, Some(&watch)).await.unwrap());

    let logs = Logs::capture_at(tracing::Level::DEBUG);
    let calls = |method: &str| sim.call_counts().get(method).copied().unwrap_or(0);
    let forbidden =
        || CloudError::Fatal("DELETE ports: port is owned by another project (HTTP 403)".into());
    let in_use = || CloudError::Conflict("DELETE ports: port is in use (HTTP 409)".into());
    // Warned of once per port and kind of refusal (the error's kind, not
    // its words: PassFailures), hourly after, each other pass at debug:
    // the 400 after the 403 is Fatal too, the 409 a Conflict.
    for (pass, (refusal, warned)) in [
        (forbidden(), Some("HTTP 403")),
        (forbidden(), None),
        (
            CloudError::Fatal("DELETE ports: Invalid input for operation (HTTP 400)".into()),
            None,
        ),
        (in_use(), Some("HTTP 409")),
        (in_use(), None),
    ]
    .into_iter()
    .enumerate()
    {
        let pass = pass + 1;
        sim.faults()
            .fail_next_calls_of("delete_port", 1000, refusal);
        let (looks, deletes) = (calls("get_port"), calls("delete_port"));
        let warnings = logs.warnings().len();
        let began = tokio::time::Instant::now();
        manager.reconcile().await.unwrap();
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "pass {pass} took {took:?}: {}",
            logs.text()
        );
        assert_eq!(calls("get_port") - looks, 1, "pass {pass}: one look");
        assert_eq!(
            calls("delete_port") - deletes,
            1,
            "pass {pass}: one delete: {}",
            logs.text()
        );
        let new = logs.warnings().split_off(warnings);
        match warned {
            Some(answer) => assert!(
                new.len() == 1
                    && new[0]
                        .contains("Neutron refuses the delete of a port no server holds any more")
                    && new[0].contains(&port)
                    && new[0].contains(answer),
                "pass {pass}: one warning naming the port and {answer}: {}",
                logs.text()
            ),
            None => assert!(new.is_empty(), "pass {pass}: {}", logs.text()),
        }
    }
    assert_eq!(store.list_twin_watches().await.unwrap(), vec![watch]);
    assert!(sim.ports().iter().any(|p| p.id == port));

    // Neutron takes the delete: the port is gone, the watch ends.
    sim.faults()
        .fail_next_calls_of("delete_port", 0, CloudError::Fatal(String::new()));
    manager.reconcile().await.unwrap();
    assert!(!sim.ports().iter().any(|p| p.id == port), "{}", logs.text());
    assert!(store.list_twin_watches().await.unwrap().is_empty());
}

/// A port a SOFT_DELETED server kept bound, free by now (its read says so),
/// whose delete Neutron answers with an error that passes by itself to the
/// driver: a 404 without Neutron's fault (a proxy's page: Transient, as it
/// says nothing of the port), a 413 naming no quota (Throttled). The
/// delete was retried until the cleanup deadline, holding the pass (and
/// the Releases behind its lock) minutes per waiting port, then ended the
/// watch's item, the ports after it not looked at. One delete a pass, as
/// the look: the pass goes on at once, the port waits for the next pass,
/// warned of once per kind of failure; once Neutron takes the delete, the
/// port is gone and the watch ends.
#[tokio::test(start_paused = true)]
async fn a_free_bound_ports_delete_failing_for_now_is_sent_once_a_pass() {
    use pool_manager::cloud::{Cloud, CloudError, NewPortSpec};
    use pool_manager::model::TwinWatch;
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 1).await;
    let port = sim
        .create_port(&NewPortSpec {
            name: "warmpool-order-t-1".into(),
            network_id: "net-tenant".into(),
            subnet_id: None,
            fixed_ip: None,
        })
        .await
        .unwrap()
        .id;
    let watch = TwinWatch {
        name: "warmpool-order-t-1".into(),
        request_id: "order-t".into(),
        pool: Some(pool()),
        volumes: false,
        keep: Vec::new(),
        stuck_volume: None,
        deleted_volumes: Vec::new(),
        deleted_only: true,
        // Another port of the watch, after it: gone by now.
        bound_ports: vec![port.clone(), "port-gone".into()],
        until: std::time::SystemTime::UNIX_EPOCH,
    };
    assert!(store.cas_twin_watch(None, Some(&watch)).await.unwrap());

    let logs = Logs::capture_at(tracing::Level::DEBUG);
    let calls = |method: &str| sim.call_counts().get(method).copied().unwrap_or(0);
    // The driver's readings (openstack::error::classify).
    let proxys_404 = || {
        CloudError::Transient(format!(
            "DELETE /v2.0/ports/{port}: HTTP 404, not from the service (no OpenStack error in the answer: a proxy or gateway?)"
        ))
    };
    let too_large = || CloudError::Throttled {
        retry_after: None,
        message: format!("DELETE /v2.0/ports/{port}: Request Entity Too Large (HTTP 413)"),
        unavailable: false,
    };
    // Warned of once per kind of failure, each other pass at debug.
    for (pass, (failure, warned)) in [
        (proxys_404(), Some("HTTP 404")),
        (proxys_404(), None),
        (too_large(), Some("HTTP 413")),
        (too_large(), None),
    ]
    .into_iter()
    .enumerate()
    {
        let pass = pass + 1;
        sim.faults()
            .fail_next_calls_of("delete_port", 1000, failure);
        let (looks, deletes) = (calls("get_port"), calls("delete_port"));
        let warnings = logs.warnings().len();
        let began = tokio::time::Instant::now();
        manager.reconcile().await.unwrap();
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "pass {pass} took {took:?}: {}",
            logs.text()
        );
        // The port after it looked at too (the first pass: dropped then).
        let ports = if pass == 1 { 2 } else { 1 };
        assert_eq!(
            calls("get_port") - looks,
            ports,
            "pass {pass}: one look each"
        );
        assert_eq!(
            calls("delete_port") - deletes,
            1,
            "pass {pass}: one delete: {}",
            logs.text()
        );
        let new = logs.warnings().split_off(warnings);
        match warned {
            Some(answer) => assert!(
                new.len() == 1 && new[0].contains(&port) && new[0].contains(answer),
                "pass {pass}: one warning naming the port and {answer}: {}",
                logs.text()
            ),
            None => assert!(new.is_empty(), "pass {pass}: {}", logs.text()),
        }
    }
    let waiting = TwinWatch {
        bound_ports: vec![port.clone()],
        ..watch
    };
    assert_eq!(store.list_twin_watches().await.unwrap(), vec![waiting]);
    assert!(sim.ports().iter().any(|p| p.id == port));

    // Neutron takes the delete: the port is gone, the watch ends.
    sim.faults()
        .fail_next_calls_of("delete_port", 0, CloudError::Fatal(String::new()));
    let deletes = calls("delete_port");
    manager.reconcile().await.unwrap();
    assert_eq!(calls("delete_port") - deletes, 1);
    assert!(!sim.ports().iter().any(|p| p.id == port), "{}", logs.text());
    assert!(store.list_twin_watches().await.unwrap().is_empty());
}

/// A port's read failing for now (warned of) then, the pass after, its
/// delete failing for now (the same kind of error): the delete's failure,
/// another call's, is warned of too, not left at debug for an hour behind
/// the read's warning.
#[tokio::test(start_paused = true)]
async fn a_bound_ports_failing_delete_after_a_failed_read_is_warned_of() {
    use pool_manager::cloud::{Cloud, CloudError, NewPortSpec};
    use pool_manager::model::TwinWatch;
    let sim = sim();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 1).await;
    let port = sim
        .create_port(&NewPortSpec {
            name: "warmpool-order-t-1".into(),
            network_id: "net-tenant".into(),
            subnet_id: None,
            fixed_ip: None,
        })
        .await
        .unwrap()
        .id;
    let watch = TwinWatch {
        name: "warmpool-order-t-1".into(),
        request_id: "order-t".into(),
        pool: Some(pool()),
        volumes: false,
        keep: Vec::new(),
        stuck_volume: None,
        deleted_volumes: Vec::new(),
        deleted_only: true,
        bound_ports: vec![port.clone()],
        until: std::time::SystemTime::UNIX_EPOCH,
    };
    assert!(store.cas_twin_watch(None, Some(&watch)).await.unwrap());
    let logs = Logs::capture_at(tracing::Level::DEBUG);
    // Pass 1: Neutron's read of the port answers 503: warned of.
    sim.faults().fail_next_calls_of(
        "get_port",
        1,
        CloudError::Transient("GET /v2.0/ports: HTTP 503".into()),
    );
    manager.reconcile().await.unwrap();
    assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
    // Pass 2, a minute on: the read answers (unbound), the delete fails for now.
    tokio::time::sleep(Duration::from_secs(60)).await;
    sim.faults().fail_next_calls_of(
        "delete_port",
        1000,
        CloudError::Transient("DELETE /v2.0/ports: HTTP 404, not from the service".into()),
    );
    manager.reconcile().await.unwrap();
    let warnings = logs.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Neutron's delete of it fails")),
        "the delete's failure is not warned of: {warnings:#?}\n{}",
        logs.text()
    );
}

/// Each failure of a look for twins is paced by its own listing or twin,
/// the first too: the port listing newly refused (ports are listed before
/// volumes) is warned of, though the volumes' refusal, warned of already,
/// came first until then; the volumes' is not warned of again.
#[tokio::test(start_paused = true)]
async fn a_twin_listing_newly_refused_is_warned_of() {
    use pool_manager::cloud::CloudError;
    let logs = Logs::capture();
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_paused(&cloud, temp_store(), 2).await;
    cloud.lose_next_answer("create_volume");
    cloud.lose_next_answer("create_port");
    let refused =
        |what: &str| CloudError::Fatal(format!("{what}: policy does not allow (HTTP 403)"));
    sim.faults()
        .fail_next_calls_of("find_volumes_by_name", u64::MAX, refused("volumes"));
    let a = manager
        .allocate(request("o-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(a.creates_in_doubt);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        manager.reconcile().await.unwrap();
    }
    let volumes_before = logs.count("WARN", "volumes: policy does not allow");
    // Neutron's policy now refuses the port listing too.
    sim.faults()
        .fail_next_calls_of("find_ports_by_name", u64::MAX, refused("ports"));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        manager.reconcile().await.unwrap();
    }
    let volumes_after = logs.count("WARN", "volumes: policy does not allow");
    assert!(
        logs.count("WARN", "ports: policy does not allow") >= 1,
        "the ports' refusal never warned of (volumes' warned {volumes_before} then {volumes_after}): {:#?}",
        logs.warnings()
    );
    assert_eq!(
        volumes_after,
        volumes_before,
        "the volumes' refusal, warned of already, warned of again: {:#?}",
        logs.warnings()
    );
}
