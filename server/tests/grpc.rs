//! warmpoold end to end over real sockets: the daemon started in-process with
//! `warmpool_server::start` on 127.0.0.1:0, the embedded cloud at 1/100 speed
//! with real MySQL-greeting listeners (so readiness goes through the real TCP
//! probe), and `warmpool_client::Client` on the other side.
//!
//! These run on the real clock. They wait with bounded polling loops and never
//! assert on how long anything took.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

mod support;

use futures::StreamExt;
use pool_manager::cloud::VolumeOwner;
use support::{expect_code, list_pools_over, tls_options, Daemon};
use tonic::Code;
use warmpool_client::{api, Client};
use warmpool_server::config::Config;

/// How long any eventual condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// [`support::eventually`] with [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    support::eventually(what, PATIENCE, check).await
}

fn counts(pool: &api::Pool) -> api::PoolCounts {
    pool.counts.expect("Pool.counts is always set")
}

/// Waits until the pool has `ready` Ready instances and nothing booting or
/// warming (so it is at rest at its target).
async fn wait_ready(client: &Client, flavor: &str, az: &str, ready: u32) -> api::Pool {
    eventually(&format!("{flavor}@{az} to have {ready} ready"), || async {
        let pool = client
            .get_pool(flavor, az)
            .await
            .map_err(|e| e.to_string())?;
        let c = counts(&pool);
        if c.ready == ready && c.booting == 0 && c.warming == 0 {
            Ok(pool)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await
}

fn allocate_request(request_id: &str, flavor: &str, az: &str) -> api::AllocateRequest {
    api::AllocateRequest {
        request_id: request_id.into(),
        tenant_project_id: "tenant-a".into(),
        flavor: flavor.into(),
        availability_zone: az.into(),
        volume: Some(api::VolumeSpec {
            source: Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                size_gib: 20,
                volume_type: String::new(),
            })),
            delete_on_release: false,
        }),
        network: Some(api::NetworkSpec {
            network_id: "tenant-net".into(),
            subnet_id: String::new(),
            fixed_ip: String::new(),
        }),
        labels: [("order".to_owned(), request_id.to_owned())].into(),
        empty_pool_policy: api::EmptyPoolPolicy::Wait.into(),
        timeout: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
    }
}

fn state(a: &api::Allocation) -> api::AllocationState {
    api::AllocationState::try_from(a.state).expect("known allocation state")
}

/// The next item of a WatchPools stream, within [`PATIENCE`].
async fn next_status(watch: &mut warmpool_client::PoolStatusStream) -> api::PoolStatus {
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("a pool status within the time limit")
        .expect("the stream stays open")
        .expect("no stream error")
}

/// Everything a successful warm Allocate promises.
#[track_caller]
fn assert_warm_hit(a: &api::Allocation, request_id: &str, flavor: &str, az: &str) {
    assert_eq!(a.request_id, request_id);
    assert_eq!(a.tenant_project_id, "tenant-a");
    assert_eq!(
        (a.flavor.as_str(), a.availability_zone.as_str()),
        (flavor, az)
    );
    assert_eq!(state(a), api::AllocationState::Allocated, "{a:?}");
    assert!(a.warm_hit, "{a:?}");
    assert!(!a.instance_id.is_empty(), "{a:?}");
    assert!(!a.server_id.is_empty(), "{a:?}");
    assert!(!a.volume_id.is_empty(), "{a:?}");
    assert!(!a.port_id.is_empty(), "{a:?}");
    a.ip_address
        .parse::<IpAddr>()
        .unwrap_or_else(|_| panic!("ip_address {:?} is not an IP", a.ip_address));
    assert!(a.created_at.is_some(), "{a:?}");
    let t = a.timings.as_ref().expect("timings");
    for (name, d) in [
        ("claim", &t.claim),
        ("volume", &t.volume),
        ("port", &t.port),
        ("verify", &t.verify),
        ("wait", &t.wait),
        ("total", &t.total),
    ] {
        let d = d.unwrap_or_else(|| panic!("timings.{name} missing: {t:?}"));
        assert!(
            d.seconds >= 0 && d.nanos >= 0,
            "timings.{name} negative: {t:?}"
        );
    }
    let total = t.total.unwrap();
    assert!(total.seconds > 0 || total.nanos > 0, "total is zero: {t:?}");
    assert_eq!(a.labels.get("order").map(String::as_str), Some(request_id));
}

#[tokio::test]
async fn pools_reach_their_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(
        dir.path(),
        &[("db.small", "az1", 2, 4), ("db.medium", "az2", 1, 2)],
    )
    .await;
    let c = &d.client;

    wait_ready(c, "db.small", "az1", 2).await;
    wait_ready(c, "db.medium", "az2", 1).await;

    let mut pools = c.list_pools().await.unwrap();
    pools.sort_by(|a, b| a.flavor.cmp(&b.flavor));
    assert_eq!(pools.len(), 2, "{pools:?}");
    let medium = &pools[0];
    let small = &pools[1];
    assert_eq!(
        (medium.flavor.as_str(), medium.availability_zone.as_str()),
        ("db.medium", "az2")
    );
    assert_eq!(medium.effective_target, 1);
    assert_eq!(counts(medium).ready, 1);
    assert_eq!(small.effective_target, 2);
    assert_eq!(counts(small).ready, 2);
    let spec = small.spec.as_ref().unwrap();
    assert_eq!((spec.min_ready, spec.max_ready, spec.target), (2, 4, 0));
    assert_eq!(spec.image, "mysql-8.0");
    assert_eq!(
        spec.boot_timeout,
        Some(prost_types::Duration {
            seconds: 60,
            nanos: 0
        })
    );
    assert!(!small.draining && !spec.paused);
    assert_eq!(small.allocations_warm + small.allocations_cold, 0);
    // Sent at 0 too: warmpoolctl tells an older server by its absence.
    assert_eq!(small.allocations_exhausted, Some(0));
    assert_eq!(small.allocations_waited, Some(0));

    // Every instance: Ready, with a server, unclaimed.
    let all = c.list_instances("", "").await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    for i in &all {
        assert_eq!(i.state, i32::from(api::InstanceState::Ready), "{i:?}");
        assert!(!i.server_id.is_empty() && !i.id.is_empty(), "{i:?}");
        assert!(i.ready_at.is_some() && i.created_at.is_some(), "{i:?}");
        assert!(i.request_id.is_empty(), "{i:?}");
        assert_eq!(i.image, "mysql-8.0", "the image it was booted from: {i:?}");
    }
    let small_only = c.list_instances("db.small", "az1").await.unwrap();
    assert_eq!(small_only.len(), 2);
    assert!(small_only
        .iter()
        .all(|i| i.flavor == "db.small" && i.availability_zone == "az1"));
    // And those servers exist in the cloud.
    let servers: Vec<String> = d
        .cloud()
        .servers()
        .into_iter()
        .map(|s| s.server.id)
        .collect();
    for i in &all {
        assert!(
            servers.contains(&i.server_id),
            "{} not in {servers:?}",
            i.server_id
        );
    }

    // The listing is named for the CLI user and the API caller alike.
    let lists = "`warmpoolctl pools` or ListPools lists the pools";
    let msg = expect_code(c.get_pool("db.large", "az1").await, Code::NotFound);
    assert!(msg.contains("db.large@az1"), "{msg}");
    assert!(msg.contains(lists), "{msg}");
    // A pool neither known nor named by any instance (a typo) is not found,
    // not an empty listing; a deleted pool's instances are listed while
    // tenants hold them (create_update_and_delete_pools).
    let msg = expect_code(c.list_instances("db.large", "az1").await, Code::NotFound);
    assert!(msg.contains("db.large@az1"), "{msg}");
    assert!(msg.contains(lists), "{msg}");
    let msg = expect_code(c.get_pool("", "az1").await, Code::InvalidArgument);
    assert!(msg.contains("flavor"), "{msg}");
    let msg = expect_code(c.get_pool("db.small", "").await, Code::InvalidArgument);
    assert!(msg.contains("availability_zone"), "{msg}");
    let msg = expect_code(
        c.list_instances("db.small", "").await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("availability_zone"), "{msg}");
}

#[tokio::test]
async fn allocate_is_a_warm_hit_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 2, 4)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 2).await;

    let request = allocate_request("order-1", "db.small", "az1");
    let first = c.allocate(request.clone()).await.unwrap();
    assert_warm_hit(&first, "order-1", "db.small", "az1");

    // The cloud agrees: the server has the volume and the port, and the
    // volume was created in warmpool's project (Cinder creates in the
    // token's), tagged with the tenant it is for.
    let server = d.cloud().server(&first.server_id).expect("server exists");
    assert!(
        server.server.attached_volumes.contains(&first.volume_id),
        "{server:?}"
    );
    assert!(
        server.server.attached_ports.contains(&first.port_id),
        "{server:?}"
    );
    let volume = d
        .cloud()
        .volumes()
        .into_iter()
        .find(|v| v.id == first.volume_id)
        .expect("volume exists");
    assert_eq!(volume.owner, VolumeOwner::Warmpool, "{volume:?}");
    assert_eq!(volume.tagged_tenant(), Some("tenant-a"), "{volume:?}");

    // Same request id, same parameters: the same allocation, not a second one.
    let again = c.allocate(request.clone()).await.unwrap();
    assert_eq!(again, first);
    let got = c.get_allocation("order-1").await.unwrap();
    assert_eq!(got, first);

    // Same request id, other parameters: ABORTED, and nothing changes.
    let mut other_tenant = request.clone();
    other_tenant.tenant_project_id = "tenant-b".into();
    let msg = expect_code(c.allocate(other_tenant).await, Code::Aborted);
    assert!(msg.contains("order-1"), "{msg}");
    let mut other_size = request.clone();
    other_size.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::NewVolume(api::NewVolume {
            size_gib: 99,
            volume_type: String::new(),
        })),
        delete_on_release: false,
    });
    expect_code(c.allocate(other_size).await, Code::Aborted);
    assert_eq!(c.get_allocation("order-1").await.unwrap(), first);

    // The instance is accounted as allocated, held by the request.
    let instances = c.list_instances("db.small", "az1").await.unwrap();
    let held = instances
        .iter()
        .find(|i| i.id == first.instance_id)
        .expect("allocated instance listed");
    assert_eq!(held.state, i32::from(api::InstanceState::Allocated));
    assert_eq!(held.request_id, "order-1");
    assert_eq!(held.server_id, first.server_id);

    // The pool refills behind the allocation and counts the warm hit.
    let pool = wait_ready(c, "db.small", "az1", 2).await;
    assert_eq!(counts(&pool).allocated, 1);
    assert_eq!(pool.allocations_warm, 1);
    assert_eq!(pool.allocations_cold, 0);

    // A second order gets a different server.
    let second = c
        .allocate(allocate_request("order-2", "db.small", "az1"))
        .await
        .unwrap();
    assert_warm_hit(&second, "order-2", "db.small", "az1");
    assert_ne!(second.server_id, first.server_id);
    assert_ne!(second.volume_id, first.volume_id);
    assert_ne!(second.ip_address, first.ip_address);
}

#[tokio::test]
async fn concurrent_allocates_with_one_request_id_get_one_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 3, 3)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az2", 3).await;

    let request = allocate_request("order-dup", "db.small", "az2");
    let calls = (0..4).map(|_| c.allocate(request.clone()));
    let results = futures::future::join_all(calls).await;
    let allocations: Vec<api::Allocation> = results
        .into_iter()
        .map(|r| r.expect("every duplicate gets the allocation"))
        .collect();
    for a in &allocations {
        assert_eq!(a, &allocations[0]);
    }
    assert_warm_hit(&allocations[0], "order-dup", "db.small", "az2");
    let held: Vec<_> = c
        .list_instances("db.small", "az2")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| !i.request_id.is_empty())
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        c.get_pool("db.small", "az2")
            .await
            .unwrap()
            .allocations_warm,
        1
    );
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 1, 1)]).await;
    let c = &d.client;

    type Edit = fn(&mut api::AllocateRequest);
    let cases: Vec<(&str, Edit)> = vec![
        ("request_id", |r| r.request_id.clear()),
        ("request_id", |r| r.request_id = "has spaces".into()),
        ("request_id", |r| r.request_id = "x".repeat(129)),
        ("tenant_project_id", |r| r.tenant_project_id.clear()),
        ("flavor", |r| r.flavor.clear()),
        ("availability_zone", |r| r.availability_zone.clear()),
        ("volume", |r| r.volume = None),
        ("volume", |r| r.volume.as_mut().unwrap().source = None),
        ("volume.new_volume.size_gib", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                    size_gib: 0,
                    volume_type: String::new(),
                }))
        }),
        ("volume.existing_volume_id", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::ExistingVolumeId(String::new()))
        }),
        ("volume.existing_volume_id", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::ExistingVolumeId("..".into()))
        }),
        ("volume.existing_volume_id", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::ExistingVolumeId("detail".into()))
        }),
        ("labels", |r| {
            r.labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect()
        }),
        ("labels", |r| {
            r.labels.insert(String::new(), "v".into());
        }),
        ("labels", |r| {
            r.labels.insert("note".into(), "x".repeat(1025));
        }),
        ("labels", |r| {
            r.labels.insert("note".into(), "a\u{1b}[2J".into());
        }),
        ("network", |r| r.network = None),
        ("network.network_id", |r| {
            r.network.as_mut().unwrap().network_id.clear()
        }),
        ("network.fixed_ip", |r| {
            r.network.as_mut().unwrap().fixed_ip = "10.0.0.9".into()
        }),
        ("network.subnet_id", |r| {
            r.network.as_mut().unwrap().subnet_id = "x".repeat(256)
        }),
        ("network.subnet_id", |r| {
            r.network.as_mut().unwrap().subnet_id = "a\u{1b}[2J".into()
        }),
        ("volume.new_volume.volume_type", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                    size_gib: 1,
                    volume_type: "x".repeat(256),
                }))
        }),
        ("network.fixed_ip", |r| {
            let n = r.network.as_mut().unwrap();
            n.subnet_id = "subnet-1".into();
            n.fixed_ip = "not-an-ip".into();
        }),
        ("empty_pool_policy", |r| r.empty_pool_policy = 42),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: -5,
                nanos: 0,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: i64::MIN,
                nanos: 0,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: 0,
                nanos: -1,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: 1,
                nanos: 1_000_000_000,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 999_999_999,
            })
        }),
        ("timeout", |r| {
            r.timeout = Some(prost_types::Duration {
                seconds: 3601,
                nanos: 0,
            })
        }),
    ];
    for (field, edit) in cases {
        let mut request = allocate_request("order-bad", "db.small", "az1");
        edit(&mut request);
        let result = c.allocate(request.clone()).await;
        let msg = expect_code(result, Code::InvalidArgument);
        assert!(
            msg.starts_with(&format!("invalid {field}:")),
            "message {msg:?} should name {field}; request {request:?}"
        );
    }
    // A refused request leaves nothing behind.
    expect_code(c.get_allocation("order-bad").await, Code::NotFound);

    // Several fields wrong: the first in the message's order is named, so
    // a caller fixing one at a time goes through them in order.
    let firsts: Vec<(&str, Edit)> = vec![
        ("request_id", |r| *r = api::AllocateRequest::default()),
        ("tenant_project_id", |r| {
            *r = api::AllocateRequest {
                request_id: "order-bad".into(),
                ..Default::default()
            }
        }),
        ("flavor", |r| {
            r.flavor.clear();
            r.volume = None;
            r.network = None;
        }),
    ];
    for (field, edit) in firsts {
        let mut request = allocate_request("order-bad", "db.small", "az1");
        edit(&mut request);
        let msg = expect_code(c.allocate(request).await, Code::InvalidArgument);
        assert!(
            msg.starts_with(&format!("invalid {field}:")),
            "{field}: {msg}"
        );
    }

    let msg = expect_code(c.get_allocation("").await, Code::InvalidArgument);
    assert!(msg.contains("request_id"), "{msg}");
    let msg = expect_code(c.release("", None).await, Code::InvalidArgument);
    assert!(msg.contains("request_id"), "{msg}");
}

/// A name or id with a space before or after it (pasted, or padded by a
/// form) names nothing in the cloud: Nova, Cinder and Neutron would refuse
/// it later, NOT_FOUND or FAILED_PRECONDITION with messages that do not
/// show the space, and a tenant id so sent would tag the volume with it.
/// It is INVALID_ARGUMENT naming the field and quoting the value.
#[tokio::test]
async fn names_with_surrounding_whitespace_are_refused_quoted() {
    let d = Daemon::start(&[("db.small", "az1", 0, 1)]).await;
    let c = &d.client;

    type Edit = fn(&mut api::AllocateRequest);
    let cases: Vec<(&str, &str, Edit)> = vec![
        ("availability_zone", "\"az1 \"", |r| {
            r.availability_zone = "az1 ".into()
        }),
        ("flavor", "\"db.small \"", |r| r.flavor = "db.small ".into()),
        ("tenant_project_id", "\"t \"", |r| {
            r.tenant_project_id = "t ".into()
        }),
        ("network.network_id", "\" tenant-net\"", |r| {
            r.network.as_mut().unwrap().network_id = " tenant-net".into()
        }),
        ("network.subnet_id", "\"subnet-1\\t\"", |r| {
            r.network.as_mut().unwrap().subnet_id = "subnet-1\t".into()
        }),
        ("volume.new_volume.volume_type", "\"ssd\\n\"", |r| {
            r.volume.as_mut().unwrap().source =
                Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                    size_gib: 1,
                    volume_type: "ssd\n".into(),
                }))
        }),
    ];
    for (field, quoted, edit) in cases {
        let mut request = allocate_request("order-spaced", "db.small", "az1");
        edit(&mut request);
        let msg = expect_code(c.allocate(request.clone()).await, Code::InvalidArgument);
        assert!(
            msg.starts_with(&format!("invalid {field}:")) && msg.contains(quoted),
            "message {msg:?} should name {field} and quote {quoted}; request {request:?}"
        );
    }
    expect_code(c.get_allocation("order-spaced").await, Code::NotFound);

    let spec = api::PoolSpec {
        min_ready: 0,
        max_ready: 1,
        image: "mysql-8.0".into(),
        boot_timeout: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        ..Default::default()
    };
    for (flavor, az, field, quoted) in [
        ("db.small", "az1 ", "availability_zone", "\"az1 \""),
        (" db.small", "az1", "flavor", "\" db.small\""),
    ] {
        let msg = expect_code(
            c.create_pool(flavor, az, spec.clone()).await,
            Code::InvalidArgument,
        );
        assert!(
            msg.starts_with(&format!("invalid {field}:")) && msg.contains(quoted),
            "{msg}"
        );
    }
    let spaced_image = api::PoolSpec {
        image: "mysql-8.0 ".into(),
        ..spec
    };
    let msg = expect_code(
        c.create_pool("db.small", "az2", spaced_image).await,
        Code::InvalidArgument,
    );
    assert!(
        msg.starts_with("invalid image:") && msg.contains("\"mysql-8.0 \""),
        "{msg}"
    );
    let pools = c.list_pools().await.unwrap();
    assert_eq!(pools.len(), 1, "{pools:?}");
    d.shut_down().await;
}

#[tokio::test]
async fn unknown_and_empty_pools() {
    let dir = tempfile::tempdir().unwrap();
    // db.medium@az2 has no target: it stays empty.
    let d = Daemon::start_in(
        dir.path(),
        &[("db.small", "az1", 1, 2), ("db.medium", "az2", 0, 2)],
    )
    .await;
    let c = &d.client;

    let msg = expect_code(
        c.allocate(allocate_request("order-x", "db.large", "az1"))
            .await,
        Code::NotFound,
    );
    assert!(msg.contains("db.large@az1"), "{msg}");
    let msg = expect_code(c.get_allocation("never-made").await, Code::NotFound);
    assert!(msg.contains("never-made"), "{msg}");
    expect_code(c.release("never-made", None).await, Code::NotFound);

    let mut fail_fast = allocate_request("order-ff", "db.medium", "az2");
    fail_fast.empty_pool_policy = api::EmptyPoolPolicy::FailFast.into();
    let msg = expect_code(c.allocate(fail_fast).await, Code::ResourceExhausted);
    assert!(msg.contains("db.medium@az2"), "{msg}");
    expect_code(c.get_allocation("order-ff").await, Code::NotFound);

    // WAIT gives up at its deadline with the same code.
    let mut wait = allocate_request("order-wait", "db.medium", "az2");
    wait.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    expect_code(c.allocate(wait).await, Code::ResourceExhausted);
    expect_code(c.get_allocation("order-wait").await, Code::NotFound);

    let pool = c.get_pool("db.medium", "az2").await.unwrap();
    assert_eq!(pool.allocations_failed, 2, "{pool:?}");
    assert_eq!(pool.effective_target, 0);
    assert_eq!(counts(&pool), api::PoolCounts::default());
    // The volume of a failed allocation is not left behind.
    assert!(d.cloud().volumes().is_empty(), "{:?}", d.cloud().volumes());
}

/// On the embedded cloud too, a flavor or image it does not have is named
/// beside those it has, at CreatePool (FAILED_PRECONDITION, nothing
/// created) and at the start-up check of a configured pool: Nova's bare
/// "Flavor db.smal could not be found." sent a demo's user guessing.
#[tokio::test]
async fn a_flavor_or_image_the_embedded_cloud_lacks_is_named_with_those_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]).await;
    let c = &d.client;
    let spec = api::PoolSpec {
        min_ready: 0,
        max_ready: 1,
        image: "mysql-8.0".into(),
        ..Default::default()
    };
    let flavors = "no flavor named 'db.smal' in the simulated cloud (its flavors: db.large, db.medium, db.small)";
    let refused = expect_code(
        c.create_pool("db.smal", "az1", spec.clone()).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.contains("db.smal@az1") && refused.contains(flavors),
        "{refused}"
    );
    let image = api::PoolSpec {
        image: "mysql-9.9".into(),
        ..spec
    };
    let refused = expect_code(
        c.create_pool("db.small", "az1", image).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused
            .contains("no image named 'mysql-9.9' in the simulated cloud (its images: mysql-8.0"),
        "{refused}"
    );
    let pools = c.list_pools().await.unwrap();
    assert!(pools.is_empty(), "{pools:?}");
    assert!(d.cloud().servers().is_empty());

    let other = tempfile::tempdir().unwrap();
    let config = support::config(other.path(), &[("db.smal", "az1", 0, 1)]);
    let error = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("started with a pool of a flavor the embedded cloud lacks"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("db.smal@az1") && error.contains(flavors),
        "{error}"
    );
}

/// The embedded cloud has the demo's network, tenant-net, and no other:
/// an order naming a mistyped one is refused as Neutron would refuse its
/// port, not sold with a port on a network that does not exist.
#[tokio::test]
async fn an_order_on_a_network_the_embedded_cloud_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 1, 2)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 1).await;
    let mut typo = allocate_request("order-typo", "db.small", "az1");
    typo.network.as_mut().unwrap().network_id = "tenant-nett".into();
    let err = c.allocate(typo).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Network tenant-nett could not be found"),
        "{err:?}"
    );
    assert!(d.cloud().ports().is_empty(), "{:?}", d.cloud().ports());
    c.allocate(allocate_request("order-1", "db.small", "az1"))
        .await
        .expect("tenant-net is the embedded cloud's");
}

#[tokio::test]
async fn cold_boot_serves_an_empty_pool() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.medium", "az1", 0, 2)]).await;
    let c = &d.client;
    let mut request = allocate_request("order-cold", "db.medium", "az1");
    request.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    let a = c.allocate(request.clone()).await.unwrap();
    assert_eq!(state(&a), api::AllocationState::Allocated);
    assert!(!a.warm_hit, "{a:?}");
    assert!(!a.server_id.is_empty() && !a.port_id.is_empty() && !a.volume_id.is_empty());
    assert_eq!(c.allocate(request).await.unwrap(), a);
    let pool = c.get_pool("db.medium", "az1").await.unwrap();
    assert_eq!((pool.allocations_warm, pool.allocations_cold), (0, 1));
    assert_eq!(counts(&pool).allocated, 1);
}

/// A unary call still waiting for its answer when the grace period ends is
/// answered UNAVAILABLE, "shutting down", as every call a stop refuses is
/// (clients retry it), before its connection is cut: the cut used to end
/// it with no gRPC status at all (UNKNOWN "transport error" to a tonic
/// client, which does not retry that). Here a cold boot, which goes on
/// through a stop, on the embedded cloud at real speed (a boot of 90 s)
/// with a grace of 1 s.
#[tokio::test]
async fn a_call_still_waiting_when_the_grace_ends_is_answered_unavailable() {
    let data = tempfile::tempdir().unwrap();
    let text = support::config_text(data.path(), &[("db.medium", "az1", 0, 1)])
        .replacen(r#"shutdown_grace = "5s""#, r#"shutdown_grace = "1s""#, 1)
        .replacen("time_scale = 0.01", "time_scale = 1.0", 1)
        .replacen(
            "[manager]\n",
            "[manager]\nallow_short_intervals = true\n",
            1,
        );
    let d = Daemon::start_text(&text, data).await;
    let client = d.client.clone();
    let mut request = allocate_request("cold-at-stop", "db.medium", "az1");
    request.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    let cold = tokio::spawn(async move { client.allocate(request).await });
    eventually("the cold boot's server to be asked for", || async {
        match d.cloud().servers().len() {
            0 => Err("no server yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    let (served, _data) = d.stop();
    let message = expect_code(cold.await.unwrap(), Code::Unavailable);
    assert!(message.contains("shutting down"), "{message}");
    assert!(
        message.contains("an Allocate with the same request id"),
        "{message}"
    );
    served.await.unwrap().unwrap();
}

/// A paused pool boots nothing, for a COLD_BOOT purchase either: one that
/// finds no Ready instance gets FAIL_FAST's answer, the pause named, and
/// nothing is made for it; unpaused, the same order boots.
#[tokio::test]
async fn a_paused_pool_refuses_cold_boots_until_unpaused() {
    let d = Daemon::start(&[("db.medium", "az1", 0, 2)]).await;
    let c = &d.client;
    let paused = |paused| api::PoolSpec {
        paused,
        ..Default::default()
    };
    c.update_pool("db.medium", "az1", paused(true), ["paused"])
        .await
        .unwrap();
    let mut request = allocate_request("order-cold", "db.medium", "az1");
    request.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    let msg = expect_code(c.allocate(request.clone()).await, Code::ResourceExhausted);
    assert!(
        msg.contains("db.medium@az1 has no ready instance (the pool is paused: it boots nothing until it is unpaused)"),
        "{msg}"
    );
    expect_code(c.get_allocation("order-cold").await, Code::NotFound);
    assert!(d.cloud().servers().is_empty(), "{:?}", d.cloud().servers());
    assert!(d.cloud().volumes().is_empty(), "{:?}", d.cloud().volumes());

    c.update_pool("db.medium", "az1", paused(false), ["paused"])
        .await
        .unwrap();
    let a = c.allocate(request).await.unwrap();
    assert_eq!(state(&a), api::AllocationState::Allocated);
    assert!(!a.warm_hit, "{a:?}");
}

/// A cold boot of a flavor the cloud has retired since is
/// FAILED_PRECONDITION: billing must change the order. It was
/// RESOURCE_EXHAUSTED, which billing retries, each retry creating and
/// rolling back a volume and a port.
#[tokio::test]
async fn a_cold_boot_of_a_retired_flavor_is_failed_precondition() {
    let d = Daemon::start(&[("db.medium", "az1", 0, 2)]).await;
    let c = &d.client;
    d.cloud().retire_flavor("db.medium");
    let mut request = allocate_request("order-cold", "db.medium", "az1");
    request.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    let msg = expect_code(c.allocate(request).await, Code::FailedPrecondition);
    assert!(msg.contains("db.medium"), "{msg}");
    expect_code(c.get_allocation("order-cold").await, Code::NotFound);
    assert!(d.cloud().volumes().is_empty(), "{:?}", d.cloud().volumes());
    assert!(d.cloud().ports().is_empty(), "{:?}", d.cloud().ports());
}

/// A release whose volume Cinder refuses to delete (the tenant has
/// snapshots of it) fails FAILED_PRECONDITION and leaves the order
/// RELEASING; GetAllocation says why (`last_error`), which it used to
/// leave to a WARN log, until a release finishes it.
#[tokio::test]
async fn a_stuck_release_says_why_in_get_allocation() {
    let d = Daemon::start(&[("db.small", "az1", 1, 1)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 1).await;
    let a = c
        .allocate(allocate_request("order-snap", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(a.last_error, "");
    assert!(d.cloud().set_volume_snapshots(&a.volume_id, 1));

    let msg = expect_code(
        c.release("order-snap", Some(true)).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("snapshots"), "{msg}");
    let stuck = c.get_allocation("order-snap").await.unwrap();
    assert_eq!(state(&stuck), api::AllocationState::Releasing);
    assert!(
        stuck.last_error.contains(&a.volume_id) && stuck.last_error.contains("snapshots"),
        "{stuck:?}"
    );
    // A repeat of the order answers what GetAllocation does.
    let repeat = c
        .allocate(allocate_request("order-snap", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(state(&repeat), api::AllocationState::Releasing);
    assert_eq!(repeat.last_error, stuck.last_error);

    assert!(d.cloud().set_volume_snapshots(&a.volume_id, 0));
    let released = c.release("order-snap", Some(true)).await.unwrap();
    assert_eq!(state(&released), api::AllocationState::Released);
    assert_eq!(released.last_error, "");
    assert_eq!(c.get_allocation("order-snap").await.unwrap(), released);
}

#[tokio::test]
async fn release_deletes_the_server_and_the_pool_refills() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 2, 2)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 2).await;

    // An existing volume, kept on release.
    let kept = d.cloud().create_volume_for_test("tenant-a", "az1", 10);
    let mut request = allocate_request("order-keep", "db.small", "az1");
    request.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(kept.clone())),
        delete_on_release: false,
    });
    let a = c.allocate(request).await.unwrap();
    assert_warm_hit(&a, "order-keep", "db.small", "az1");
    assert_eq!(a.volume_id, kept);

    // A volume in use is never attached a second time.
    let mut reuse = allocate_request("order-reuse", "db.small", "az1");
    reuse.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(kept.clone())),
        delete_on_release: false,
    });
    expect_code(c.allocate(reuse).await, Code::FailedPrecondition);
    let mut missing = allocate_request("order-missing", "db.small", "az1");
    missing.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(
            "00000000-0000-4000-8000-00000000d0e5".into(),
        )),
        delete_on_release: false,
    });
    expect_code(c.allocate(missing).await, Code::FailedPrecondition);

    // A new volume, deleted on release.
    let mut request = allocate_request("order-drop", "db.small", "az1");
    request.volume.as_mut().unwrap().delete_on_release = true;
    let b = c.allocate(request).await.unwrap();
    assert_warm_hit(&b, "order-drop", "db.small", "az1");
    wait_ready(c, "db.small", "az1", 2).await;
    // What a plain release will do to each tenant's volume, before it is asked.
    assert_eq!(a.delete_volume_on_release, Some(false), "{a:?}");
    assert_eq!(b.delete_volume_on_release, Some(true), "{b:?}");
    assert_eq!(
        c.get_allocation("order-drop")
            .await
            .unwrap()
            .delete_volume_on_release,
        Some(true)
    );

    assert_eq!(a.released_at, None);
    let released = c.release("order-keep", None).await.unwrap();
    assert_eq!(state(&released), api::AllocationState::Released);
    assert_eq!(released.server_id, a.server_id);
    let (created, finished) = (
        released.created_at.unwrap(),
        released.released_at.expect("released_at is set at release"),
    );
    assert!(
        (finished.seconds, finished.nanos) >= (created.seconds, created.nanos),
        "{released:?}"
    );
    // Idempotent: releasing again answers the same.
    assert_eq!(c.release("order-keep", None).await.unwrap(), released);
    assert_eq!(c.get_allocation("order-keep").await.unwrap(), released);
    // So is Allocate with the request id of a released allocation.
    let mut same = allocate_request("order-keep", "db.small", "az1");
    same.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(kept.clone())),
        delete_on_release: false,
    });
    let replay = c.allocate(same).await.unwrap();
    assert_eq!(state(&replay), api::AllocationState::Released);
    assert_eq!(replay.server_id, a.server_id);

    let released = c.release("order-drop", None).await.unwrap();
    assert_eq!(state(&released), api::AllocationState::Released);
    assert_eq!(
        released.delete_volume_on_release,
        Some(true),
        "{released:?}"
    );
    // A release's own choice beats the Allocate's, and is what it answers.
    let mut request = allocate_request("order-override", "db.small", "az1");
    request.volume.as_mut().unwrap().delete_on_release = true;
    c.allocate(request).await.unwrap();
    let overridden = c.release("order-override", Some(false)).await.unwrap();
    assert_eq!(
        overridden.delete_volume_on_release,
        Some(false),
        "{overridden:?}"
    );

    let cloud = d.cloud();
    eventually(
        "released servers, ports and the dropped volume to go",
        || async {
            let servers: Vec<String> = cloud.servers().into_iter().map(|s| s.server.id).collect();
            let ports: Vec<String> = cloud.ports().into_iter().map(|p| p.id).collect();
            let volumes = cloud.volumes();
            let gone = !servers.contains(&a.server_id)
                && !servers.contains(&b.server_id)
                && !ports.contains(&a.port_id)
                && !ports.contains(&b.port_id)
                && !volumes.iter().any(|v| v.id == b.volume_id);
            let kept_available = volumes.iter().any(|v| {
                v.id == kept
                    && v.attached_to.is_empty()
                    && v.status == pool_manager::cloud::VolumeStatus::Available
            });
            if gone && kept_available {
                Ok(())
            } else {
                Err(format!(
                    "servers {servers:?} ports {ports:?} volumes {volumes:?}"
                ))
            }
        },
    )
    .await;

    // The instances are gone from the store; the pool is back at target
    // with nothing allocated.
    eventually("released instances to be forgotten", || async {
        let instances = c.list_instances("", "").await.map_err(|e| e.to_string())?;
        let pool = c
            .get_pool("db.small", "az1")
            .await
            .map_err(|e| e.to_string())?;
        let c = counts(&pool);
        let held = instances
            .iter()
            .any(|i| i.id == a.instance_id || i.id == b.instance_id);
        if !held && c.ready == 2 && c.allocated == 0 && c.releasing == 0 {
            Ok(())
        } else {
            Err(format!("{c:?} {instances:?}"))
        }
    })
    .await;

    // The kept volume can be handed to the next allocation.
    let mut next = allocate_request("order-next", "db.small", "az1");
    next.volume = Some(api::VolumeSpec {
        source: Some(api::volume_spec::Source::ExistingVolumeId(kept.clone())),
        delete_on_release: false,
    });
    let n = c.allocate(next).await.unwrap();
    assert_eq!(n.volume_id, kept);
    assert_ne!(n.server_id, a.server_id);
}

#[tokio::test]
async fn create_update_and_delete_pools() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 1, 2)]).await;
    let c = &d.client;

    // Create: through the API, filled like a configured pool.
    let spec = api::PoolSpec {
        min_ready: 1,
        max_ready: 3,
        target: 0,
        image: "mysql-8.0".into(),
        boot_timeout: None,
        max_age: None,
        paused: false,
        ..Default::default()
    };
    let created = c
        .create_pool("db.large", "az2", spec.clone())
        .await
        .unwrap();
    assert_eq!(created.effective_target, 1);
    let created_spec = created.spec.unwrap();
    assert_eq!(
        created_spec.boot_timeout,
        Some(prost_types::Duration {
            seconds: 15 * 60,
            nanos: 0
        }),
        "default boot timeout"
    );
    wait_ready(c, "db.large", "az2", 1).await;
    assert_eq!(c.list_pools().await.unwrap().len(), 2);

    let msg = expect_code(
        c.create_pool("db.large", "az2", spec.clone()).await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("db.large@az2"), "{msg}");
    let msg = expect_code(
        c.create_pool(
            "db.medium",
            "az1",
            api::PoolSpec {
                max_ready: u32::MAX,
                ..spec.clone()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        msg.contains("max_ready must be at most 10000 instances, got 4294967295"),
        "{msg}"
    );
    expect_code(c.get_pool("db.medium", "az1").await, Code::NotFound);
    let msg = expect_code(
        c.create_pool(
            "db.medium",
            "az1",
            api::PoolSpec {
                min_ready: 3,
                max_ready: 1,
                ..spec.clone()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("max_ready"), "{msg}");
    let msg = expect_code(
        c.create_pool(
            "db.medium",
            "az1",
            api::PoolSpec {
                image: String::new(),
                ..spec.clone()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("image"), "{msg}");
    let msg = expect_code(
        c.create_pool(
            "db.medium",
            "az1",
            api::PoolSpec {
                target: 4,
                ..spec.clone()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        msg.starts_with("invalid target: target 4 is above max_ready (3)"),
        "{msg}"
    );
    let min = Some(prost_types::Duration {
        seconds: i64::MIN,
        nanos: 0,
    });
    for (field, bad) in [
        (
            "spec.boot_timeout",
            api::PoolSpec {
                boot_timeout: min,
                ..spec.clone()
            },
        ),
        (
            "spec.max_age",
            api::PoolSpec {
                max_age: min,
                ..spec.clone()
            },
        ),
    ] {
        let msg = expect_code(
            c.create_pool("db.medium", "az1", bad).await,
            Code::InvalidArgument,
        );
        assert!(msg.starts_with(&format!("invalid {field}:")), "{msg}");
    }
    // Accepted once, they overflowed every boot's deadline.
    let max = Some(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    });
    for (field, bad) in [
        (
            "boot_timeout",
            api::PoolSpec {
                boot_timeout: max,
                ..spec.clone()
            },
        ),
        (
            "max_age",
            api::PoolSpec {
                max_age: max,
                ..spec.clone()
            },
        ),
    ] {
        let msg = expect_code(
            c.create_pool("db.medium", "az1", bad).await,
            Code::InvalidArgument,
        );
        assert!(msg.starts_with(&format!("invalid {field}:")), "{msg}");
        assert!(msg.contains("at most"), "{msg}");
    }
    let msg = expect_code(
        c.create_pool("", "az1", spec.clone()).await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("flavor"), "{msg}");
    let mut raw = c.raw();
    let status = raw
        .create_pool(api::CreatePoolRequest {
            flavor: "db.medium".into(),
            availability_zone: "az1".into(),
            spec: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("spec"), "{}", status.message());
    expect_code(c.get_pool("db.medium", "az1").await, Code::NotFound);

    // Update: only the masked fields change; the pool follows its new target.
    let before = c.get_pool("db.small", "az1").await.unwrap().spec.unwrap();
    let updated = c
        .update_pool(
            "db.small",
            "az1",
            api::PoolSpec {
                min_ready: 3,
                max_ready: 5,
                image: String::new(), // not in the mask: ignored
                ..Default::default()
            },
            ["min_ready", "spec.max_ready"],
        )
        .await
        .unwrap();
    let after = updated.spec.unwrap();
    assert_eq!((after.min_ready, after.max_ready), (3, 5));
    assert_eq!(after.image, before.image);
    assert_eq!(after.boot_timeout, before.boot_timeout);
    assert_eq!(updated.effective_target, 3);
    wait_ready(c, "db.small", "az1", 3).await;

    // A fixed target above min_ready.
    let updated = c
        .update_pool(
            "db.small",
            "az1",
            api::PoolSpec {
                target: 4,
                ..Default::default()
            },
            ["target"],
        )
        .await
        .unwrap();
    assert_eq!(updated.effective_target, 4);
    wait_ready(c, "db.small", "az1", 4).await;

    // A bad update changes nothing.
    let unchanged = c.get_pool("db.small", "az1").await.unwrap().spec;
    let bad_updates: Vec<(Vec<&str>, &str, api::PoolSpec)> = vec![
        (
            vec!["min_ready", "colour"],
            "update_mask",
            api::PoolSpec {
                min_ready: 1,
                max_ready: 5,
                ..Default::default()
            },
        ),
        (vec![], "update_mask", api::PoolSpec::default()),
        (
            vec!["max_ready"],
            "max_ready",
            api::PoolSpec {
                max_ready: 1,
                ..Default::default()
            },
        ),
        (vec!["image"], "image", api::PoolSpec::default()),
        // A count no warm pool needs fills the project's quota and starves
        // every other pool: refused by name, with the bound.
        (
            vec!["min_ready", "max_ready"],
            "max_ready must be at most 10000 instances, got 4294967295",
            api::PoolSpec {
                min_ready: 1,
                max_ready: u32::MAX,
                ..Default::default()
            },
        ),
        (
            vec!["min_ready", "max_ready"],
            "min_ready must be at most 10000 instances, got 10001",
            api::PoolSpec {
                min_ready: 10_001,
                max_ready: 10_001,
                ..Default::default()
            },
        ),
        (
            vec!["max_ready"],
            "max_ready must be at most 10000 instances, got 10001",
            api::PoolSpec {
                max_ready: 10_001,
                ..Default::default()
            },
        ),
        (
            vec!["boot_timeout"],
            "boot_timeout",
            api::PoolSpec {
                boot_timeout: Some(prost_types::Duration {
                    seconds: 24 * 60 * 60 + 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ),
        // Shorter than a boot: every boot timed out and booted again.
        (
            vec!["boot_timeout"],
            "boot_timeout must be at least 1m",
            api::PoolSpec {
                boot_timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000_000,
                }),
                ..Default::default()
            },
        ),
    ];
    for (mask, field, spec) in bad_updates {
        let msg = expect_code(
            c.update_pool("db.small", "az1", spec, mask.clone()).await,
            Code::InvalidArgument,
        );
        assert!(msg.contains(field), "mask {mask:?}: {msg}");
        assert_eq!(
            c.get_pool("db.small", "az1").await.unwrap().spec,
            unchanged,
            "mask {mask:?} changed the pool"
        );
    }
    let status = raw
        .update_pool(api::UpdatePoolRequest {
            flavor: "db.small".into(),
            availability_zone: "az1".into(),
            spec: Some(api::PoolSpec::default()),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("update_mask"),
        "{}",
        status.message()
    );
    // A mask with no spec would read every named field as zero: max_ready 0
    // retires every ready instance. The fields come from the spec, so it is required.
    let status = raw
        .update_pool(api::UpdatePoolRequest {
            flavor: "db.small".into(),
            availability_zone: "az1".into(),
            spec: None,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["min_ready".into(), "max_ready".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("spec") && status.message().contains("required"),
        "{}",
        status.message()
    );
    assert_eq!(
        c.get_pool("db.small", "az1").await.unwrap().spec,
        unchanged,
        "an update without a spec changed the pool"
    );
    // Windows are capped: a pool too large to list would break every listing.
    let too_many_windows = api::PoolSpec {
        windows: vec!["Mon 09:00-18:00 min 1".to_string(); 65],
        ..Default::default()
    };
    let msg = expect_code(
        c.update_pool("db.small", "az1", too_many_windows, ["windows"])
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("at most 64 windows, got 65"), "{msg}");
    assert_eq!(c.get_pool("db.small", "az1").await.unwrap().spec, unchanged);
    expect_code(
        c.update_pool("db.huge", "az1", api::PoolSpec::default(), ["paused"])
            .await,
        Code::NotFound,
    );

    // Pausing stops replenishment but still hands out what is there.
    c.update_pool(
        "db.small",
        "az1",
        api::PoolSpec {
            paused: true,
            ..Default::default()
        },
        ["paused"],
    )
    .await
    .unwrap();
    let a = c
        .allocate(allocate_request("order-paused", "db.small", "az1"))
        .await
        .unwrap();
    assert!(a.warm_hit);
    let pool = wait_ready(c, "db.small", "az1", 3).await;
    assert!(pool.spec.unwrap().paused);

    // Delete: an allocation from the pool outlives it.
    let from_large = c
        .allocate(allocate_request("order-large", "db.large", "az2"))
        .await
        .unwrap();
    assert_warm_hit(&from_large, "order-large", "db.large", "az2");
    let drained = c.delete_pool("db.large", "az2").await.unwrap();
    assert!(drained.draining, "{drained:?}");
    assert_eq!(
        (drained.flavor.as_str(), drained.availability_zone.as_str()),
        ("db.large", "az2")
    );
    eventually("db.large@az2 to be deleted", || async {
        match c.get_pool("db.large", "az2").await {
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(pool) => {
                // While it drains it can no longer be changed.
                let update = c
                    .update_pool("db.large", "az2", api::PoolSpec::default(), ["paused"])
                    .await;
                if let Err(e) = &update {
                    assert!(
                        matches!(e.code(), Some(Code::FailedPrecondition | Code::NotFound)),
                        "{e}"
                    );
                } else {
                    panic!("a draining pool accepted an update: {update:?}");
                }
                Err(format!("{pool:?}"))
            }
        }
    })
    .await;
    let pools = c.list_pools().await.unwrap();
    assert!(pools.iter().all(|p| p.flavor != "db.large"), "{pools:?}");
    expect_code(c.delete_pool("db.large", "az2").await, Code::NotFound);
    expect_code(
        c.allocate(allocate_request("order-large-2", "db.large", "az2"))
            .await,
        Code::NotFound,
    );
    // Its unallocated servers are deleted; the allocated one is not.
    let instances = c.list_instances("", "").await.unwrap();
    let large: Vec<_> = instances
        .iter()
        .filter(|i| i.flavor == "db.large")
        .collect();
    assert_eq!(large.len(), 1, "{large:?}");
    assert_eq!(large[0].request_id, "order-large");
    // The pool's own listing still shows it, though the pool record is gone.
    let listed = c.list_instances("db.large", "az2").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].request_id, "order-large");
    assert_eq!(listed[0].server_id, from_large.server_id);
    assert!(d.cloud().server(&from_large.server_id).is_some());
    assert_eq!(c.get_allocation("order-large").await.unwrap(), from_large);
    // The metrics count it too (a dashboard's `sum by (state)` of tenants'
    // VMs), while the gauges of the pool's settings and sizing are gone
    // with it.
    let large = r#"flavor="db.large",availability_zone="az2""#;
    let metrics = d.scrape().await;
    assert!(
        metrics.contains(&format!(
            "warmpool_pool_instances{{{large},state=\"allocated\"}} 1\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "warmpool_pool_instances{{{large},state=\"ready\"}} 0\n"
        )),
        "{metrics}"
    );
    let settings: Vec<_> = metrics
        .lines()
        .filter(|l| {
            l.contains(large)
                && l.starts_with("warmpool_pool_")
                && !l.starts_with("warmpool_pool_instances{")
                && !l.contains("_total")
        })
        .collect();
    assert!(settings.is_empty(), "{settings:?}");
    // And it can still be released; then nothing of the pool is left to count.
    let released = c.release("order-large", None).await.unwrap();
    assert_eq!(state(&released), api::AllocationState::Released);
    let metrics = d.scrape().await;
    assert!(
        !metrics.contains(&format!("warmpool_pool_instances{{{large},")),
        "{metrics}"
    );
}

#[tokio::test]
async fn watch_pools_streams_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(
        dir.path(),
        &[("db.small", "az1", 1, 2), ("db.small", "az2", 1, 1)],
    )
    .await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 1).await;
    wait_ready(c, "db.small", "az2", 1).await;

    let mut watch = c.watch_pools().await.unwrap();
    // First one message per pool.
    let mut initial = Vec::new();
    for _ in 0..2 {
        let status = next_status(&mut watch).await;
        assert!(status.at.is_some());
        let pool = status.pool.unwrap();
        assert_eq!(counts(&pool).ready, 1, "{pool:?}");
        initial.push(pool.availability_zone);
    }
    initial.sort();
    assert_eq!(initial, ["az1", "az2"]);
    // Then the mark that every pool was sent.
    let complete = next_status(&mut watch).await;
    assert!(
        complete.snapshot_complete && complete.pool.is_none(),
        "{complete:?}"
    );

    let a = c
        .allocate(allocate_request("order-w", "db.small", "az1"))
        .await
        .unwrap();
    // Then the allocation shows, and the refill behind it.
    loop {
        let pool = next_status(&mut watch).await.pool.unwrap();
        assert_eq!(pool.flavor, "db.small");
        if pool.availability_zone != "az1" {
            continue;
        }
        let c = counts(&pool);
        if c.allocated == 1 && pool.allocations_warm == 1 && c.ready == 1 {
            break;
        }
    }

    // Release shows too.
    c.release(&a.request_id, None).await.unwrap();
    loop {
        let pool = next_status(&mut watch).await.pool.unwrap();
        if pool.availability_zone == "az1" && counts(&pool).allocated == 0 {
            break;
        }
    }
}

/// Reads a WatchPools stream until a message carries an event of `kind`
/// (for the pool `flavor`, when given); returns that message and event.
async fn watch_for_event(
    watch: &mut warmpool_client::PoolStatusStream,
    kind: api::PoolEventKind,
    flavor: Option<&str>,
) -> (api::PoolStatus, api::PoolEvent) {
    let find = async {
        loop {
            let status = next_status(watch).await;
            let found = status
                .events
                .iter()
                .find(|e| e.kind == i32::from(kind) && flavor.is_none_or(|f| e.flavor == f));
            if let Some(event) = found.cloned() {
                return (status, event);
            }
        }
    };
    tokio::time::timeout(PATIENCE, find)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event within {PATIENCE:?}"))
}

#[tokio::test]
async fn watch_pools_delivers_pool_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 1, 2)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 1).await;
    let mut watch = c.watch_pools().await.unwrap();
    let first = next_status(&mut watch).await;
    assert!(first.events.is_empty() && !first.deleted, "{first:?}");

    // Settings changed: the event comes with the pool's new state.
    c.update_pool(
        "db.small",
        "az1",
        api::PoolSpec {
            max_ready: 3,
            ..Default::default()
        },
        ["max_ready"],
    )
    .await
    .unwrap();
    let (status, event) = watch_for_event(
        &mut watch,
        api::PoolEventKind::SettingsChanged,
        Some("db.small"),
    )
    .await;
    assert_eq!(event.availability_zone, "az1");
    assert!(event.at.is_some() && !event.message.is_empty(), "{event:?}");
    assert_eq!(status.pool.unwrap().spec.unwrap().max_ready, 3);

    // Exhausted: an empty pool and a fail-fast purchase.
    c.create_pool(
        "db.small",
        "az2",
        api::PoolSpec {
            min_ready: 0,
            max_ready: 1,
            image: "mysql-8.0".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut request = allocate_request("order-none", "db.small", "az2");
    request.empty_pool_policy = api::EmptyPoolPolicy::FailFast.into();
    expect_code(c.allocate(request).await, Code::ResourceExhausted);
    let (_, event) =
        watch_for_event(&mut watch, api::PoolEventKind::Exhausted, Some("db.small")).await;
    assert_eq!(event.availability_zone, "az2");
    assert!(event.message.contains("exhausted"), "{event:?}");

    // Degraded after three failed boots in a row, recovered by the next
    // Ready one. A message carries its pool's state when the stream's
    // watcher handled the event, not when the event happened: the boots
    // fail until the Degraded message is read, so that message shows the
    // pool degraded however late the watcher runs (a slow machine's showed
    // it recovered already, had the fourth boot been Ready meanwhile).
    d.cloud().faults().error_next_boots(u64::MAX, "NoValidHost");
    c.create_pool(
        "db.medium",
        "az2",
        api::PoolSpec {
            min_ready: 1,
            max_ready: 1,
            image: "mysql-8.0".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (status, event) =
        watch_for_event(&mut watch, api::PoolEventKind::Degraded, Some("db.medium")).await;
    assert_eq!(event.cause, "no_valid_host", "{event:?}");
    // The event's own words are of when it happened.
    assert!(
        event.message.contains("3 boots failed in a row"),
        "{event:?}"
    );
    let pool = status.pool.unwrap();
    assert!(pool.degraded, "{pool:?}");
    assert!(pool.consecutive_boot_failures >= 3, "{pool:?}");
    d.cloud().faults().error_next_boots(0, "NoValidHost");
    let (status, _) =
        watch_for_event(&mut watch, api::PoolEventKind::Recovered, Some("db.medium")).await;
    let pool = status.pool.unwrap();
    assert!(!pool.degraded, "{pool:?}");
    assert_eq!(pool.consecutive_boot_failures, 0, "{pool:?}");

    // A leaked server of a known pool, deleted by the reconciler.
    let leak = d
        .cloud()
        .inject_leak(&pool_manager::model::PoolKey::new("db.small", "az1"));
    d.running.manager.reconcile().await.unwrap();
    let (_, event) = watch_for_event(
        &mut watch,
        api::PoolEventKind::LeakDeleted,
        Some("db.small"),
    )
    .await;
    assert!(event.message.contains(&leak), "{event:?}");

    // A deleted pool gets a last message saying so.
    c.delete_pool("db.medium", "az2").await.unwrap();
    let (status, event) =
        watch_for_event(&mut watch, api::PoolEventKind::Deleted, Some("db.medium")).await;
    assert!(status.deleted, "{status:?}");
    assert_eq!(event.availability_zone, "az2");
    assert_eq!(status.pool.unwrap().flavor, "db.medium");
    expect_code(c.get_pool("db.medium", "az2").await, Code::NotFound);
}

/// The longest free text from the cloud a test accepts in a pool's,
/// instance's or event's error: what warmpool keeps of one, with its own
/// words around it.
const LONGEST_KEPT_ERROR: usize = 2000;

/// A cloud's error text is as long as the cloud makes it (a Nova server's
/// fault carries a stack trace; a broken cloud, anything). Kept whole, one
/// of over 4 MiB in a pool's record failed ListPools, GetPool and
/// WatchPools for every client (OUT_OF_RANGE, "decoded message length too
/// large") for as long as the store kept it. What is stored or sent is cut,
/// saying so. Here the embedded cloud, which cuts nothing, gives the text,
/// so that what warmpool writes, not the OpenStack driver, is what cuts it.
#[tokio::test]
async fn a_huge_error_from_the_cloud_is_cut_before_it_is_stored_or_sent() {
    let d = Daemon::start(&[]).await;
    let c = &d.client;
    let mut watch = c.watch_pools().await.unwrap();
    let fault = "F".repeat(64 << 10);
    d.cloud()
        .faults()
        .error_next_boots(u64::MAX, fault.as_str());
    c.create_pool(
        "db.small",
        "az1",
        api::PoolSpec {
            min_ready: 1,
            max_ready: 1,
            image: "mysql-8.0".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (status, event) =
        watch_for_event(&mut watch, api::PoolEventKind::Degraded, Some("db.small")).await;
    let cut = |what: &str, text: &str| {
        assert!(
            text.len() < LONGEST_KEPT_ERROR
                && text.contains("FFF... (")
                && text.contains(" more characters)"),
            "{what}: {} bytes, {}",
            text.len(),
            &text[..text.len().min(200)]
        );
    };
    cut("the Degraded event", &event.message);
    cut("the watched pool", &status.pool.unwrap().last_error);
    let listed = c.list_pools().await.unwrap();
    cut("ListPools", &listed[0].last_error);
    cut(
        "GetPool",
        &c.get_pool("db.small", "az1").await.unwrap().last_error,
    );
    for instance in c.list_instances("db.small", "az1").await.unwrap() {
        assert!(
            instance.last_error.len() < LONGEST_KEPT_ERROR,
            "instance {}: {} bytes",
            instance.id,
            instance.last_error.len()
        );
    }
    // What a client does not see is cut too: the store's records.
    let manager = &d.running.manager;
    let key = pool_manager::model::PoolKey::new("db.small", "az1");
    let record = manager.get_pool(&key).await.unwrap().record;
    cut(
        "the stored pool",
        record.last_error.as_deref().unwrap_or_default(),
    );
}

#[tokio::test]
async fn auto_pools_show_their_sizing_and_updates_keep_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]).await;
    let c = &d.client;
    let auto = api::PoolSpec {
        min_ready: 1,
        max_ready: 5,
        image: "mysql-8.0".into(),
        target_mode: api::TargetMode::Auto.into(),
        ..Default::default()
    };
    let created = c
        .create_pool("db.large", "az1", auto.clone())
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.target_mode, i32::from(api::TargetMode::Auto));
    let sizing = created.sizing.expect("Pool.sizing is always set");
    assert!(sizing.auto);
    assert_eq!(sizing.target, created.effective_target);
    assert!((1..=5).contains(&sizing.target), "{sizing:?}");
    assert!(sizing.service_level > 0.5 && sizing.z > 0.0, "{sizing:?}");
    // The embedded cloud's flavors set no disk IOPS limit.
    assert_eq!(
        (
            sizing.lead_time_prior.map(|p| p.seconds),
            sizing.prior_iops_limit,
            sizing.prior_iops_limit_source.as_str()
        ),
        (Some(90), None, ""),
        "{sizing:?}"
    );
    // And GetPool says so, once the flavor is read.
    let why = eventually("why the flavor's IOPS limit is unknown", || async {
        let pool = c
            .get_pool("db.large", "az1")
            .await
            .map_err(|e| e.to_string())?;
        let why = pool.sizing.unwrap().prior_iops_limit_unknown;
        if why.contains("extra specs") {
            Ok(why)
        } else {
            Err(why)
        }
    })
    .await;
    assert!(
        why.contains("db.large") && why.contains("quota:disk_total_iops_sec"),
        "{why}"
    );
    let gate = sizing.gate.expect("the AZ's gate");
    assert_eq!(gate.state, i32::from(api::ThrottleState::Open), "{gate:?}");
    assert!(gate.window.is_some_and(|w| w >= 1.0), "{gate:?}");

    // Once a boot finished, p50 is measured; p90 stays the prior (90 s,
    // above this fast cloud's boots) until three are, and says so.
    let sizing = eventually("a measured lead time", || async {
        let pool = c
            .get_pool("db.large", "az1")
            .await
            .map_err(|e| e.to_string())?;
        let sizing = pool.sizing.unwrap();
        if sizing.lead_time_samples >= 1 {
            Ok(sizing)
        } else {
            Err(format!("{sizing:?}"))
        }
    })
    .await;
    let p50 = sizing.lead_time_p50.unwrap();
    let p90 = sizing.lead_time_p90.unwrap();
    assert!(p50.seconds > 0 || p50.nanos > 0, "{sizing:?}");
    assert!(p50.seconds < 90, "measured, not the prior: {sizing:?}");
    if sizing.lead_time_samples < 3 {
        let prior = (i32::from(api::LeadTimeSource::Prior), 90);
        assert_eq!((sizing.lead_time_source, p90.seconds), prior, "{sizing:?}");
    } else {
        let observed = i32::from(api::LeadTimeSource::Observed);
        assert_eq!(sizing.lead_time_source, observed, "{sizing:?}");
    }
    assert!(
        (p90.seconds, p90.nanos) >= (p50.seconds, p50.nanos),
        "{sizing:?}"
    );
    assert!(!sizing.plan_reason.is_empty(), "{sizing:?}");

    // Updating other fields, or the target with AUTO, keeps the pool auto.
    for (mask, spec) in [
        (
            vec!["max_ready"],
            api::PoolSpec {
                max_ready: 6,
                ..Default::default()
            },
        ),
        (vec!["target"], auto.clone()),
        (vec!["target_mode"], auto.clone()),
    ] {
        let updated = c
            .update_pool("db.large", "az1", spec, mask.clone())
            .await
            .unwrap();
        let spec = updated.spec.unwrap();
        assert_eq!(
            spec.target_mode,
            i32::from(api::TargetMode::Auto),
            "mask {mask:?} made the pool fixed"
        );
        assert!(updated.sizing.unwrap().auto, "mask {mask:?}");
    }
    // A client that predates target_mode sets a fixed target.
    let updated = c
        .update_pool(
            "db.large",
            "az1",
            api::PoolSpec {
                target: 3,
                ..Default::default()
            },
            ["target"],
        )
        .await
        .unwrap();
    assert_eq!(
        updated.spec.as_ref().unwrap().target_mode,
        i32::from(api::TargetMode::Fixed)
    );
    assert_eq!(updated.effective_target, 3);
    assert!(!updated.sizing.unwrap().auto);
    // An unknown mode is refused, naming the field.
    let msg = expect_code(
        c.update_pool(
            "db.large",
            "az1",
            api::PoolSpec {
                target_mode: 9,
                ..Default::default()
            },
            ["target"],
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("target_mode"), "{msg}");
}

#[tokio::test]
async fn windows_and_iops_limits_are_set_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]).await;
    let c = &d.client;
    let spec = api::PoolSpec {
        min_ready: 1,
        max_ready: 5,
        image: "mysql-8.0".into(),
        target_mode: api::TargetMode::Auto.into(),
        windows: vec!["daily 00:00-24:00 min 3".into()],
        iops_limit: Some(500),
        ..Default::default()
    };
    let created = c
        .create_pool("db.large", "az1", spec.clone())
        .await
        .unwrap();
    let got = created.spec.unwrap();
    assert_eq!(got.windows, ["daily 00:00-24:00 min 3"]);
    assert_eq!(got.iops_limit, Some(500));
    assert_eq!(got.volume_iops_limit, None);
    // The prior is stretched for the pool's own limit, and says so.
    let sizing = created.sizing.unwrap();
    assert_eq!(
        (
            sizing.prior_iops_limit,
            sizing.prior_iops_limit_source.as_str()
        ),
        (Some(500), "pool"),
        "{sizing:?}"
    );
    assert_eq!(sizing.prior_iops_limit_unknown, "", "{sizing:?}");
    assert!(
        sizing.lead_time_prior.unwrap().seconds > 90 * 3,
        "{sizing:?}"
    );
    // The open window lifts the floor of the auto target.
    let pool = wait_ready(c, "db.large", "az1", 3).await;
    assert_eq!(pool.sizing.unwrap().window_min, Some(3));
    assert!(pool.effective_target >= 3, "{}", pool.effective_target);

    // A malformed window or a zero limit is refused, naming the field, and
    // changes nothing.
    for (bad, field) in [
        (
            api::PoolSpec {
                windows: vec![
                    "Mon-Fri 09:00-18:00 min 2".into(),
                    "Mon-Fry 09:00-18:00 min 3".into(),
                ],
                ..Default::default()
            },
            "spec.windows[1]",
        ),
        (
            api::PoolSpec {
                windows: vec!["daily 09:00-18:00 min 1 +1é1".into()],
                ..Default::default()
            },
            "spec.windows[0]",
        ),
        (
            api::PoolSpec {
                iops_limit: Some(0),
                ..Default::default()
            },
            "spec.iops_limit",
        ),
    ] {
        let mask = if field.contains("windows") {
            "windows"
        } else {
            "iops_limit"
        };
        let msg = expect_code(
            c.update_pool("db.large", "az1", bad, [mask]).await,
            Code::InvalidArgument,
        );
        assert!(msg.contains(field), "{msg}");
    }
    let unchanged = c.get_pool("db.large", "az1").await.unwrap().spec.unwrap();
    assert_eq!(unchanged.windows, got.windows);
    assert_eq!(unchanged.iops_limit, Some(500));

    // The mask replaces the windows and clears a limit.
    let updated = c
        .update_pool(
            "db.large",
            "az1",
            api::PoolSpec {
                windows: vec!["Sat,Sun 10:00-12:00 min 2 UTC+02:00".into()],
                ..Default::default()
            },
            ["windows", "iops_limit"],
        )
        .await
        .unwrap();
    let spec = updated.spec.unwrap();
    assert_eq!(spec.windows.len(), 1, "{:?}", spec.windows);
    assert!(
        spec.windows[0].starts_with("Sat-Sun 10:00-12:00 min 2"),
        "{:?}",
        spec.windows
    );
    assert_eq!(spec.iops_limit, None);
    assert_eq!(spec.target_mode, i32::from(api::TargetMode::Auto));
}

/// The junk a partly filled or stale spec may carry in every field a
/// parse could refuse.
fn junk_spec(min_ready: u32) -> api::PoolSpec {
    api::PoolSpec {
        min_ready,
        max_ready: 0,
        image: String::new(),
        target_mode: 9,
        boot_timeout: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        max_age: Some(prost_types::Duration {
            seconds: 0,
            nanos: -1,
        }),
        windows: vec!["junk".into()],
        iops_limit: Some(0),
        volume_iops_limit: Some(0),
        ..Default::default()
    }
}

#[tokio::test]
async fn update_pool_reads_only_the_masked_fields_of_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]).await;
    let c = &d.client;
    let created = c
        .create_pool(
            "db.large",
            "az1",
            api::PoolSpec {
                min_ready: 1,
                max_ready: 4,
                image: "mysql-8.0".into(),
                target_mode: api::TargetMode::Auto.into(),
                windows: vec!["Sat 10:00-12:00 min 2".into()],
                iops_limit: Some(500),
                volume_iops_limit: Some(300),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .spec
        .unwrap();

    // Whatever the fields outside the mask hold, only min_ready is read.
    let updated = c
        .update_pool("db.large", "az1", junk_spec(2), ["min_ready"])
        .await
        .unwrap()
        .spec
        .unwrap();
    let expected = api::PoolSpec {
        min_ready: 2,
        ..created.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(
        c.get_pool("db.large", "az1").await.unwrap().spec.unwrap(),
        expected
    );

    // The same junk in a masked field is refused, naming that field, and
    // changes nothing, not even the valid fields masked beside it.
    for (mask, field) in [
        ("windows", "spec.windows[0]"),
        ("iops_limit", "spec.iops_limit"),
        ("volume_iops_limit", "spec.volume_iops_limit"),
        ("target_mode", "spec.target_mode"),
        ("target", "spec.target_mode"),
        ("boot_timeout", "spec.boot_timeout"),
        ("max_age", "spec.max_age"),
        ("image", "image"),
    ] {
        let msg = expect_code(
            c.update_pool("db.large", "az1", junk_spec(3), ["min_ready", mask])
                .await,
            Code::InvalidArgument,
        );
        assert!(msg.contains(field), "mask {mask:?}: {msg}");
        assert_eq!(
            c.get_pool("db.large", "az1").await.unwrap().spec.unwrap(),
            expected,
            "mask {mask:?} changed the pool"
        );
    }
    // max_ready 0 is read and judged with the stored min_ready.
    let msg = expect_code(
        c.update_pool("db.large", "az1", junk_spec(2), ["max_ready"])
            .await,
        Code::InvalidArgument,
    );
    assert!(
        msg.contains("max_ready (0) is below min_ready (2)"),
        "{msg}"
    );
    // The mask itself is still checked: an unknown path is refused.
    let msg = expect_code(
        c.update_pool("db.large", "az1", junk_spec(3), ["min_ready", "colour"])
            .await,
        Code::InvalidArgument,
    );
    assert!(
        msg.contains("update_mask") && msg.contains("colour"),
        "{msg}"
    );
    assert_eq!(
        c.get_pool("db.large", "az1").await.unwrap().spec.unwrap(),
        expected
    );
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 0, 1)]).await;
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "warmpool.v1.WarmPool"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            i32::from(ServingStatus::Serving),
            "service {service:?}"
        );
    }
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The watch form answers at once too.
    let mut stream = health
        .watch(HealthCheckRequest {
            service: "warmpool.v1.WarmPool".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, i32::from(ServingStatus::Serving));
}

#[tokio::test]
async fn restart_keeps_allocations_and_pool_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("store");
    let pools = [("db.small", "az1", 1, 2)];

    let d = Daemon::start_in(&data_dir, &pools).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 1).await;
    let request = allocate_request("order-r", "db.small", "az1");
    let before = c.allocate(request.clone()).await.unwrap();
    assert_warm_hit(&before, "order-r", "db.small", "az1");
    // Settings changed through the API, and a pool the config does not have.
    c.update_pool(
        "db.small",
        "az1",
        api::PoolSpec {
            min_ready: 2,
            max_ready: 3,
            ..Default::default()
        },
        ["min_ready", "max_ready"],
    )
    .await
    .unwrap();
    c.create_pool(
        "db.medium",
        "az2",
        api::PoolSpec {
            min_ready: 1,
            max_ready: 1,
            image: "mysql-8.0".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let spec_before = c.get_pool("db.small", "az1").await.unwrap().spec;
    d.shut_down().await;

    // Same data dir, same config file.
    let d = Daemon::start_in(&data_dir, &pools).await;
    let c = &d.client;
    let pool = c.get_pool("db.small", "az1").await.unwrap();
    assert_eq!(
        pool.spec, spec_before,
        "API-changed settings survive a restart"
    );
    assert_eq!(pool.effective_target, 2);
    assert_eq!(pool.allocations_warm, 1);
    c.get_pool("db.medium", "az2").await.unwrap();

    assert_eq!(c.get_allocation("order-r").await.unwrap(), before);
    assert_eq!(c.allocate(request.clone()).await.unwrap(), before);
    let mut changed = request.clone();
    changed.network.as_mut().unwrap().network_id = "net-other".into();
    expect_code(c.allocate(changed).await, Code::Aborted);

    // The pools fill again (the embedded cloud starts empty every time).
    wait_ready(c, "db.small", "az1", 2).await;
    wait_ready(c, "db.medium", "az2", 1).await;
    // With servers of ids the first run never handed out: the old
    // allocation's release deletes its own server id, never a new
    // instance's (the embedded cloud's ids once repeated at each start).
    let pool_servers: Vec<String> = c
        .list_instances("", "")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.request_id.is_empty())
        .map(|i| i.server_id)
        .collect();
    assert_eq!(pool_servers.len(), 3, "{pool_servers:?}");
    assert!(
        !pool_servers.contains(&before.server_id),
        "{} again: {pool_servers:?}",
        before.server_id
    );
    c.release("order-r", None).await.unwrap();
    for server in &pool_servers {
        let alive = d
            .cloud()
            .server(server)
            .is_some_and(|s| s.server.status != pool_manager::cloud::ServerStatus::Deleted);
        assert!(alive, "{server} was deleted");
    }
    let after = c
        .allocate(allocate_request("order-r2", "db.small", "az1"))
        .await
        .unwrap();
    assert_warm_hit(&after, "order-r2", "db.small", "az1");
    d.shut_down().await;
}

#[test]
fn broken_config_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let load = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).expect_err(text).to_string();
        assert!(
            err.starts_with(&format!("config file {}: ", path.display())),
            "{err}"
        );
        err
    };

    let err = load(
        "unknown.toml",
        "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n",
    );
    assert!(err.contains("listen_addr"), "{err}");
    let err = load(
        "unknown-pool-field.toml",
        "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\nmin_redy = 1\n",
    );
    assert!(err.contains("min_redy"), "{err}");

    let err = load(
        "duration.toml",
        "[manager]\npoll_interval = \"soon\"\nreplenish_interval = \"1s\"\nreconcile_interval = \"1m\"\nmax_concurrent_boots = 2\n",
    );
    assert!(err.contains("manager.poll_interval: "), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = load("grace.toml", "shutdown_grace = 30\n");
    assert!(err.contains("shutdown_grace"), "{err}");

    let err = load(
        "bounds.toml",
        "[[pools]]\nflavor = \"db.small\"\navailability_zone = \"az1\"\nmin_ready = 5\nmax_ready = 2\nimage = \"mysql-8.0\"\n",
    );
    assert!(err.contains("max_ready"), "{err}");
    assert!(err.contains("db.small@az1"), "{err}");

    let err = load("zero.toml", "[manager]\npoll_interval = \"0s\"\nreplenish_interval = \"1s\"\nreconcile_interval = \"1m\"\nmax_concurrent_boots = 2\n");
    assert!(err.contains("manager.poll_interval"), "{err}");

    // A panic here once killed warmpoold at start: a byte offset inside 'é'.
    let err = load(
        "offset.toml",
        "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\nwindows = [\"daily 09:00-18:00 min 1 +1é1\"]\n",
    );
    assert!(err.contains("pools") && err.contains("+1é1"), "{err}");

    // Refused at load: once start reached it, the pools before it were
    // already in the store.
    let good = "[[pools]]\nflavor = \"db.small\"\navailability_zone = \"az1\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n";
    for (name, key, field) in [
        (
            "flavor.toml",
            "flavor = \"\"\navailability_zone = \"az1\"",
            "flavor",
        ),
        (
            "az.toml",
            "flavor = \"db.large\"\navailability_zone = \" \"",
            "availability_zone",
        ),
        (
            "control.toml",
            "flavor = \"db\\nlarge\"\navailability_zone = \"az1\"",
            "flavor",
        ),
    ] {
        let err = load(
            name,
            &format!("{good}[[pools]]\n{key}\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n"),
        );
        assert!(err.contains(&format!(": {field}: {field} ")), "{err}");
    }

    let err = load(
        "scale.toml",
        "[cloud]\nkind = \"embedded\"\ntime_scale = -1.0\n",
    );
    assert!(err.contains("time_scale"), "{err}");

    let err = load(
        "twice.toml",
        "[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n[[pools]]\nflavor = \"f\"\navailability_zone = \"a\"\nmin_ready = 1\nmax_ready = 2\nimage = \"i\"\n",
    );
    assert!(err.contains("f@a"), "{err}");

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.toml"), "{err}");

    // And a good file loads.
    let path = dir.path().join("good.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[manager]\npoll_interval = \"50ms\"\nreplenish_interval = \"100ms\"\nreconcile_interval = \"1s\"\nmax_concurrent_boots = 2\n[[pools]]\nflavor = \"db.small\"\navailability_zone = \"az1\"\nmin_ready = 1\nmax_ready = 2\nimage = \"mysql-8.0\"\n",
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.pools.len(), 1);
    assert_eq!(config.manager.poll_interval, Duration::from_millis(50));
}

/// A configured pool the store already has keeps its stored settings, and a
/// second daemon on the same data dir is refused while the first runs.
#[tokio::test]
async fn config_pools_do_not_override_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 0, 1)]).await;
    let second = warmpool_server::start(
        support::config(dir.path(), &[("db.small", "az2", 0, 1)]),
        std::future::pending(),
    )
    .await;
    assert!(second.is_err(), "two daemons opened one store");
    let err = format!("{:#}", second.err().unwrap());
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("locked by another process"), "{err}");
    d.shut_down().await;

    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 1, 3)]).await;
    let pool = d.client.get_pool("db.small", "az2").await.unwrap();
    let spec = pool.spec.unwrap();
    assert_eq!((spec.min_ready, spec.max_ready), (0, 1));
    d.shut_down().await;
}

/// An operator who edits a pool's `[[pools]]` entry and restarts is told
/// the restart did not apply it: start-up logged "keeping its stored
/// settings" at INFO for every stored pool, changed or not, and only a
/// SIGHUP compared the file. A stored pool whose entry differs gets a WARN
/// naming the settings that differ and `warmpoolctl pools update`; one
/// whose entry matches gets none.
#[tokio::test]
async fn a_start_warns_of_a_configured_pool_whose_stored_settings_differ() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 0, 1)]).await;
    d.shut_down().await;

    let logs = support::Logs::capture();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 0, 1)]).await;
    d.shut_down().await;
    let text = logs.text();
    assert!(!text.contains("WARN"), "the file matches the store: {text}");

    let d = Daemon::start_in(dir.path(), &[("db.small", "az2", 1, 3)]).await;
    d.shut_down().await;
    let text = logs.text();
    let warned = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("db.small@az2"))
        .unwrap_or_else(|| panic!("no WARN naming the pool: {text}"));
    assert!(
        warned.contains("differs from the stored pool in min_ready, max_ready"),
        "{warned}"
    );
    assert!(
        warned.contains("`warmpoolctl pools update db.small az2 ...`"),
        "{warned}"
    );
}

/// The demo's pools (no config file, or one without `pools`) are built
/// in, not a file's entries: a restart after one was changed through the
/// API told the user to "make the file's [[pools]] entry match" a file
/// that does not exist, as a WARN. It now names them as the demo's
/// built-in pools, at INFO: there is nothing to mend.
#[tokio::test]
async fn a_restarted_demo_names_its_changed_pools_built_in_not_a_files_entries() {
    let dir = tempfile::tempdir().unwrap();
    let demo = support::config_text(dir.path(), &[]).replace("pools = []", "");
    let start = || async {
        Daemon::run_config(warmpool_server::config::Config::parse(&demo).unwrap()).await
    };
    let d = start().await;
    let spec = api::PoolSpec {
        min_ready: 1,
        ..Default::default()
    };
    d.client
        .update_pool("db.small", "az1", spec, ["min_ready"])
        .await
        .unwrap();
    d.shut_down().await;

    let logs = support::Logs::capture();
    let d = start().await;
    d.shut_down().await;
    let text = logs.text();
    assert!(!text.contains("[[pools]] entry"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("db.small@az1")),
        "{text}"
    );
    let told = text
        .lines()
        .find(|l| l.contains("INFO") && l.contains("db.small@az1") && l.contains("differs"))
        .unwrap_or_else(|| panic!("no INFO naming the pool: {text}"));
    assert!(
        told.contains(
            "the demo's built-in pool db.small@az1 differs from the stored pool in min_ready"
        ),
        "{told}"
    );
}

/// warmpoold serves at most `MAX_WATCH_STREAMS` `WatchPools` streams at
/// once, over every connection (each re-lists every pool every second):
/// one more is RESOURCE_EXHAUSTED, saying how many are open and that
/// watchers should share one; once a stream ends its slot is free again.
#[tokio::test]
async fn watch_pools_streams_are_capped_and_a_closed_one_frees_its_slot() {
    use warmpool_server::service::MAX_WATCH_STREAMS;
    let d = Daemon::start(&[("db.small", "az1", 0, 1)]).await;
    let mut watches = Vec::new();
    for _ in 0..MAX_WATCH_STREAMS {
        watches.push(d.client.watch_pools().await.unwrap());
    }
    // Over another connection: the first carries no more calls than that.
    let other = Client::connect(&d.endpoint()).await.unwrap();
    let message = expect_code(other.watch_pools().await.map(drop), Code::ResourceExhausted);
    assert!(
        message.contains(&format!("{MAX_WATCH_STREAMS} WatchPools streams are open"))
            && message.contains("share one"),
        "{message}"
    );
    // The other calls are served as before.
    other.list_pools().await.unwrap();

    drop(watches.pop());
    let mut watch = eventually("a closed stream's slot to be free", || async {
        other.watch_pools().await.map_err(|e| e.to_string())
    })
    .await;
    assert!(next_status(&mut watch).await.pool.is_some());
    drop(watches);
    d.shut_down().await;
}

/// warmpoold tells each connection how many calls it may carry at once
/// (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`): tonic sends no limit unless
/// told, and one connection could open streams without end.
#[tokio::test]
async fn a_connection_is_told_how_many_calls_it_may_carry() {
    use tonic::codegen::http;
    let d = Daemon::start(&[]).await;
    let tcp = tokio::net::TcpStream::connect(d.running.grpc_addr)
        .await
        .unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let check = http::Request::post(format!("{}/grpc.health.v1.Health/Check", d.endpoint()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, _) = client
        .ready()
        .await
        .unwrap()
        .send_request(check, true)
        .unwrap();
    // The server's settings come before any answer.
    let answered = async {
        tokio::select! {
            answer = answer => drop(answer.expect("an answer")),
            ended = &mut connection => panic!("the connection ended first: {ended:?}"),
        }
    };
    tokio::time::timeout(PATIENCE, answered)
        .await
        .expect("an answer within the time limit");
    assert_eq!(
        connection.max_concurrent_send_streams(),
        warmpool_server::MAX_CONCURRENT_STREAMS as usize
    );
    drop(connection);
    d.shut_down().await;
}

/// A request the server cannot decode (here a string field holding bytes
/// that are not UTF-8, sent raw over HTTP/2 as no generated client would)
/// is answered INTERNAL by tonic, before any handler runs: gRPC's own
/// table gives INTERNAL to a message that fails to parse. The README says
/// INTERNAL means this too, besides the store failing or a bug; the
/// message names the field, and the daemon serves on.
#[tokio::test]
async fn a_request_the_server_cannot_decode_is_internal_naming_the_field() {
    use tonic::codegen::http;
    let d = Daemon::start(&[]).await;
    let tcp = tokio::net::TcpStream::connect(d.running.grpc_addr)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    // GetAllocationRequest { request_id: b"\xff\xfe" }: field 1, length
    // delimited, then gRPC's frame (not compressed, 4-byte length).
    let message = [0x0a, 0x02, 0xff, 0xfe];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let call = http::Request::post(format!(
        "{}/warmpool.v1.WarmPool/GetAllocation",
        d.endpoint()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (answer, mut body) = client
        .ready()
        .await
        .unwrap()
        .send_request(call, false)
        .unwrap();
    body.send_data(frame.into(), true).unwrap();
    let answer = tokio::time::timeout(PATIENCE, answer)
        .await
        .expect("an answer within the time limit")
        .unwrap();
    assert_eq!(answer.status(), http::StatusCode::OK);
    // A trailers-only answer carries the status in its headers; otherwise
    // it comes in the trailers after the (empty) body.
    let (head, mut answer_body) = answer.into_parts();
    let status = match head.headers.get("grpc-status") {
        Some(_) => head.headers,
        None => {
            while let Some(chunk) = answer_body.data().await {
                assert!(chunk.unwrap().is_empty(), "no message is answered");
            }
            answer_body.trailers().await.unwrap().expect("trailers")
        }
    };
    let code = status["grpc-status"].to_str().unwrap();
    let said = percent_decoded(status["grpc-message"].to_str().unwrap());
    assert_eq!(
        tonic::Code::from_bytes(code.as_bytes()),
        Code::Internal,
        "{code}: {said}"
    );
    assert!(
        said.contains("request_id") && said.contains("UTF-8"),
        "{said}"
    );
    driver.abort();
    // Nothing of the daemon was hurt.
    d.client.list_pools().await.unwrap();
    d.shut_down().await;
}

/// grpc-message is percent-encoded (gRPC's spec); the test reads it back.
fn percent_decoded(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A `WatchPools` reader that falls behind is told that events were lost,
/// and how many, instead of silently missing them; the stream goes on.
#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[("db.small", "az1", 0, 1)]).await;
    // A tiny HTTP/2 window: the daemon can send little before this reader
    // must take it, so not reading holds the stream up at once.
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let slow = Client::from_channel(channel);
    let mut watch = slow.watch_pools().await.unwrap();
    next_status(&mut watch).await;

    // Each refused purchase is two events (the purchase, the pool found
    // empty): far more than the daemon keeps for a reader that is behind.
    for i in 0..1000 {
        let mut request = allocate_request(&format!("order-{i}"), "db.small", "az1");
        request.empty_pool_policy = api::EmptyPoolPolicy::FailFast.into();
        expect_code(d.client.allocate(request).await, Code::ResourceExhausted);
    }
    let (status, event) = watch_for_event(&mut watch, api::PoolEventKind::EventsMissed, None).await;
    assert!(status.pool.is_none() && !status.deleted, "{status:?}");
    assert!(event.flavor.is_empty(), "not one pool's: {event:?}");
    let missed: u64 = event
        .message
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("says how many: {event:?}"));
    assert!(missed > 0, "{event:?}");
    // The stream goes on with the pools' current state.
    let next = next_status(&mut watch).await;
    assert!(next.pool.is_some(), "{next:?}");
    d.shut_down().await;
}

/// ListInstances answers in pages: each at most `page_size` long, every
/// instance once across them, in the one order; a token it did not give
/// out and a negative size are refused.
#[tokio::test]
async fn list_instances_pages_through_every_instance_once() {
    let d = Daemon::start(&[("db.small", "az1", 3, 3), ("db.medium", "az1", 2, 2)]).await;
    let c = &d.client;
    wait_ready(c, "db.small", "az1", 3).await;
    wait_ready(c, "db.medium", "az1", 2).await;
    let everything = c.list_instances("", "").await.unwrap();
    assert_eq!(everything.len(), 5, "{everything:?}");

    let mut raw = c.raw();
    let mut request = api::ListInstancesRequest {
        page_size: 2,
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut paged = Vec::new();
    loop {
        let page = raw
            .list_instances(request.clone())
            .await
            .unwrap()
            .into_inner();
        pages.push(page.instances.len());
        paged.extend(page.instances.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let whole: Vec<String> = everything.into_iter().map(|i| i.id).collect();
    assert_eq!(paged, whole, "every instance once, in the one order");
    assert_eq!(pages, [2, 2, 1]);

    let bad = raw
        .list_instances(api::ListInstancesRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"), "{bad:?}");
    // A token of one pool's listing, under another pool's filter, would
    // have answered an empty last page (or one skipping instances).
    let small = raw
        .list_instances(api::ListInstancesRequest {
            flavor: "db.small".into(),
            availability_zone: "az1".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!small.next_page_token.is_empty());
    for (flavor, az) in [("db.medium", "az1"), ("", "")] {
        let bad = raw
            .list_instances(api::ListInstancesRequest {
                flavor: flavor.into(),
                availability_zone: az.into(),
                page_token: small.next_page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(
            bad.message()
                .contains("continues a listing of pool db.small@az1"),
            "{bad:?}"
        );
    }
    let bad = raw
        .list_instances(api::ListInstancesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    d.shut_down().await;
}

/// Input of any size is answered with a status the client can read: long
/// names are refused by their length, and a message echoing a long value
/// is cut short of what fits a client's header limit.
#[tokio::test]
async fn huge_input_gets_a_readable_refusal() {
    let d = Daemon::start(&[("db.small", "az1", 0, 1)]).await;
    let c = &d.client;
    let huge = "x".repeat(20_000);
    let msg = expect_code(c.get_pool(&huge, "az1").await, Code::InvalidArgument);
    assert!(msg.contains("flavor") && msg.len() < 2_000, "{}", msg.len());

    let msg = expect_code(
        c.create_pool(
            "db.small",
            "az2",
            api::PoolSpec {
                min_ready: 0,
                max_ready: 1,
                image: "mysql-8.0".into(),
                windows: vec![format!("Mon-Fri 09:00-18:00 min 2 {huge}")],
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("spec.windows[0]"), "{msg:.200}");
    assert!(msg.len() <= 1_100, "{}", msg.len());

    let msg = expect_code(
        c.create_pool(
            "db.small",
            "az2",
            api::PoolSpec {
                min_ready: 0,
                max_ready: 1,
                image: huge.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("image"), "{msg:.200}");
    // Nothing was created.
    expect_code(c.get_pool("db.small", "az2").await, Code::NotFound);
    d.shut_down().await;
}

/// Each warmpool.v1 method called once through `client` with an empty
/// request, by name: what it answered, or OK.
async fn every_method(client: &Client) -> Vec<(&'static str, Code)> {
    let code = |result: Result<(), tonic::Status>| result.map_or_else(|s| s.code(), |()| Code::Ok);
    let mut raw = client.raw();
    vec![
        (
            "Allocate",
            code(
                raw.allocate(api::AllocateRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "GetAllocation",
            code(
                raw.get_allocation(api::GetAllocationRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "Release",
            code(raw.release(api::ReleaseRequest::default()).await.map(drop)),
        ),
        (
            "ListPools",
            code(raw.list_pools(api::ListPoolsRequest {}).await.map(drop)),
        ),
        (
            "GetPool",
            code(raw.get_pool(api::GetPoolRequest::default()).await.map(drop)),
        ),
        (
            "CreatePool",
            code(
                raw.create_pool(api::CreatePoolRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "UpdatePool",
            code(
                raw.update_pool(api::UpdatePoolRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "DeletePool",
            code(
                raw.delete_pool(api::DeletePoolRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListInstances",
            code(
                raw.list_instances(api::ListInstancesRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "WatchPools",
            code(raw.watch_pools(api::WatchPoolsRequest {}).await.map(drop)),
        ),
    ]
}

#[tokio::test]
async fn api_tokens_let_each_role_call_its_methods_only() {
    use warmpool_server::access::token_sha256;

    let data = tempfile::tempdir().unwrap();
    let mut text = support::config_text(data.path(), &[("db.small", "az1", 1, 2)]);
    for (name, role, token) in [
        ("grafana", "reader", "read-token"),
        ("billing", "billing", "buy-token"),
        ("ops", "operator", "run-token"),
    ] {
        text += &format!(
            "\n[[api_tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            token_sha256(token)
        );
    }
    let d = Daemon::start_text(&text, data).await;
    let anonymous = d.client.clone();
    let as_role = |token: &str| d.client.clone().with_token(token).unwrap();

    // Without a token, or with one the daemon does not know, every method
    // is refused before it looks at the request.
    for client in [&anonymous, &as_role("guessed")] {
        for (method, code) in every_method(client).await {
            assert_eq!(code, Code::Unauthenticated, "{method}");
        }
    }
    let msg = support::expect_code(anonymous.list_pools().await, Code::Unauthenticated);
    assert!(msg.contains("authorization: Bearer <token>"), "{msg}");

    // Each role gets past the check (to the request's own validation) for
    // its methods, and PERMISSION_DENIED for the others.
    let reads = ["ListPools", "GetPool", "ListInstances", "WatchPools"];
    let buys = ["Allocate", "GetAllocation", "Release"];
    let pool_changes = ["CreatePool", "UpdatePool", "DeletePool"];
    for (token, may) in [
        ("read-token", reads.to_vec()),
        ("buy-token", [&reads[..], &buys[..]].concat()),
        (
            "run-token",
            [&reads[..], &buys[..], &pool_changes[..]].concat(),
        ),
    ] {
        for (method, code) in every_method(&as_role(token)).await {
            if may.contains(&method) {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{token} {method}: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{token} {method}");
            }
        }
    }
    let reader = as_role("read-token");
    let msg = support::expect_code(
        reader.delete_pool("db.small", "az1").await,
        Code::PermissionDenied,
    );
    assert_eq!(
        msg,
        "token 'grafana' has role reader; DeletePool needs role operator"
    );
    assert_eq!(
        reader.get_pool("db.small", "az1").await.unwrap().flavor,
        "db.small"
    );

    // The billing system buys; the refused calls changed nothing.
    let billing = as_role("buy-token");
    wait_ready(&billing, "db.small", "az1", 1).await;
    let sold = billing
        .allocate(allocate_request("order-1", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(sold.request_id, "order-1");
    let ops = as_role("run-token");
    assert_eq!(ops.list_pools().await.unwrap().len(), 1);

    // Refusals are counted by method and reason: ten methods twice
    // unauthenticated, then the reader's six and the billing token's three
    // refused methods, and the reader's DeletePool once more.
    let metrics = d.scrape().await;
    let refused = |method: &str, reason: &str| {
        let series =
            format!("warmpool_api_calls_refused_total{{method=\"{method}\",reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map(|value| value.parse::<f64>().unwrap())
    };
    assert_eq!(
        refused("Allocate", "unauthenticated"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        refused("ListPools", "unauthenticated"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        refused("DeletePool", "permission_denied"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        refused("Allocate", "permission_denied"),
        Some(1.0),
        "{metrics}"
    );
    // Never refused, but there at zero: `rate()` and `absent()` see a 0,
    // not "no data", before the first refusal.
    assert_eq!(
        refused("GetPool", "permission_denied"),
        Some(0.0),
        "{metrics}"
    );

    // A watch outlives no reload that revokes its token: it ends with
    // UNAUTHENTICATED, while the calls of a token kept go on.
    let mut watch = reader.watch_pools().await.unwrap();
    next_status(&mut watch).await;
    use warmpool_server::access::{Access, Caller, Role};
    let only_ops = Access::with_tokens([(
        token_sha256("run-token"),
        Caller {
            name: "ops".into(),
            role: Role::Operator,
        },
    )]);
    assert_eq!(d.running.access.reload(only_ops), Ok(1));
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the watch ended without saying why"),
            }
        }
    })
    .await
    .expect("the revoked token's watch ends");
    assert_eq!(ended.code(), Some(Code::Unauthenticated), "{ended}");
    expect_code(reader.list_pools().await, Code::Unauthenticated);
    assert_eq!(ops.list_pools().await.unwrap().len(), 1);

    // Health stays open to load balancers.
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
    d.shut_down().await;
}

/// A call is checked before its message is read: a caller without a valid
/// token learns nothing from how the daemon decodes what it sent (it got
/// the decode error). A caller with one gets the decode error, INTERNAL as
/// gRPC's status code table has it for a request that does not parse.
#[tokio::test]
async fn a_call_is_checked_before_its_message_is_read() {
    use warmpool_server::access::token_sha256;
    let data = tempfile::tempdir().unwrap();
    let mut text = support::config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    text += &format!(
        "\n[[api_tokens]]\nname = \"billing\"\nrole = \"billing\"\nsha256 = \"{}\"\n",
        token_sha256("buy-token")
    );
    let d = Daemon::start_text(&text, data).await;
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A Duration's varint where AllocateRequest has its request_id string:
    // a message that does not decode as an AllocateRequest.
    let garbled = |token: Option<&str>| {
        let mut request = tonic::Request::new(prost_types::Duration {
            seconds: 7,
            nanos: 0,
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        refused_raw(&channel, "/warmpool.v1.WarmPool/Allocate", request)
    };
    let anonymous = garbled(None).await;
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert!(
        anonymous
            .message()
            .contains("Allocate needs a bearer token"),
        "{anonymous:?}"
    );
    let guessed = garbled(Some("guessed")).await;
    assert_eq!(guessed.code(), Code::Unauthenticated, "{guessed:?}");
    let billing = garbled(Some("buy-token")).await;
    assert_eq!(billing.code(), Code::Internal, "{billing:?}");
    assert!(
        billing
            .message()
            .contains("failed to decode Protobuf message"),
        "{billing:?}"
    );
    // A method the daemon does not have (a newer client) says so, by name.
    let unknown = refused_raw(
        &channel,
        "/warmpool.v1.WarmPool/Frobnicate",
        tonic::Request::new(prost_types::Duration::default()),
    )
    .await;
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    assert!(
        unknown
            .message()
            .starts_with("warmpool.v1.WarmPool has no method \"Frobnicate\" in this daemon"),
        "{unknown:?}"
    );
    // A name of many kilobytes is not echoed whole: the answer would not
    // fit the header a client accepts.
    let long: &'static str =
        Box::leak(format!("/warmpool.v1.WarmPool/{}", "X".repeat(15_000)).into_boxed_str());
    let unknown = refused_raw(
        &channel,
        long,
        tonic::Request::new(prost_types::Duration::default()),
    )
    .await;
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    assert!(
        unknown.message().len() <= 1030,
        "{}",
        unknown.message().len()
    );
    // Refused calls are counted once each.
    let metrics = d.scrape().await;
    assert!(
        metrics.contains(
            "warmpool_api_calls_refused_total{method=\"Allocate\",reason=\"unauthenticated\"} 2\n"
        ),
        "{metrics}"
    );
    d.shut_down().await;
}

/// The status a call of `path` with `request` (any message, sent as is) is
/// refused with.
async fn refused_raw(
    channel: &tonic::transport::Channel,
    path: &'static str,
    request: tonic::Request<prost_types::Duration>,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary::<_, prost_types::Duration, _>(
        request,
        path.parse().unwrap(),
        tonic::codec::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

/// A daemon from `text` (its data dir in `data`), started without
/// [`Daemon`]'s plaintext client; stops when the sender is dropped.
async fn start_bare(
    text: &str,
) -> anyhow::Result<(warmpool_server::Running, tokio::sync::oneshot::Sender<()>)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start(Config::parse(text)?, async move {
        let _ = stopped.await;
    })
    .await?;
    Ok((running, stop))
}

/// Stops a daemon [`start_bare`] started and lets go of its store.
async fn stop_bare(running: warmpool_server::Running, stop: tokio::sync::oneshot::Sender<()>) {
    let warmpool_server::Running {
        served, manager, ..
    } = running;
    drop(manager);
    drop(stop);
    served.await.unwrap().unwrap();
}

/// Connections that never start their TLS handshake (a scanner, an
/// attacker holding sockets open) do not keep others out: with every
/// handshake slot taken by them, a new connection takes the oldest one's
/// slot, and a client gets its answer. They used to fill the slots for the
/// handshake timeout, again and again, while clients waited in the backlog.
#[tokio::test]
async fn idle_connections_holding_every_handshake_slot_do_not_lock_clients_out() {
    use support::pki::Pki;
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(data.path(), "ca");
    let server = pki.issue("server", &["127.0.0.1"]);
    let text =
        support::config_text(data.path(), &[("db.small", "az1", 0, 1)]) + &server.tls_section();
    let (running, stop) = start_bare(&text).await.unwrap();
    let addr = running.grpc_addr;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Well under the daemon's 10 s handshake timeout: an answer within it
    // is one the idle sockets did not hold up.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        list_pools_over(
            &format!("https://127.0.0.1:{}", addr.port()),
            tls_options(Some(pki.ca_pem()), None),
        ),
    )
    .await;
    assert_eq!(answer.ok(), Some(Ok(1)));
    drop(idle);
    stop_bare(running, stop).await;
}

/// The first bytes the daemon sends on `socket` (its HTTP/2 SETTINGS):
/// the connection is established and being served.
async fn served<S: tokio::io::AsyncRead + Unpin>(what: &str, socket: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {}
        other => panic!("{what}: no HTTP/2 SETTINGS from the daemon: {other:?}"),
    }
}

/// Reads `socket` until the daemon closes it (end of file or an error);
/// panics if it is still open after [`PATIENCE`].
async fn closed_by_the_daemon<S: tokio::io::AsyncRead + Unpin>(what: &str, socket: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what} is still open {PATIENCE:?} after the daemon's time for a silent connection"
    );
}

/// Moves the clock past `duration` at once, then lets it run on: timers
/// the daemon set for the connections open now fire.
async fn jump_past(duration: Duration) {
    tokio::time::pause();
    tokio::time::advance(duration + Duration::from_secs(1)).await;
    tokio::time::resume();
}

/// Plaintext connections that never send the HTTP/2 preface, or only part
/// of it (a scanner, an attacker holding file descriptors until accept
/// fails with EMFILE), are closed; they used to stay open for good, as
/// the keepalive pings start only after the preface. Clients are still
/// served.
#[tokio::test]
async fn connections_that_never_send_the_http2_preface_are_closed() {
    use tokio::io::AsyncWriteExt;
    let daemon = Daemon::start(&[]).await;
    let addr = daemon.running.grpc_addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..16])
        .await
        .unwrap();
    served("the silent connection", &mut silent).await;
    served("the connection with part of a preface", &mut partial).await;
    jump_past(warmpool_server::listener::PREFACE_TIMEOUT).await;
    closed_by_the_daemon("the silent connection", &mut silent).await;
    closed_by_the_daemon("the connection with part of a preface", &mut partial).await;
    daemon.client.list_pools().await.unwrap();
    let client = Client::connect(&daemon.endpoint()).await.unwrap();
    client.list_pools().await.unwrap();
    daemon.shut_down().await;
}

/// Connections to the metrics port that send no request, or only part of
/// a request line (a slowloris holding file descriptors until accept
/// fails with EMFILE), are closed; they used to stay open for good, as
/// axum::serve gave hyper no timer and its header read timeout never ran.
/// Scrapes are still served.
#[tokio::test]
async fn metrics_connections_that_never_finish_a_request_are_closed() {
    use tokio::io::AsyncWriteExt;
    let daemon = Daemon::start(&[]).await;
    let addr = daemon.running.metrics_addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"GET /metr").await.unwrap();
    // Accepted after the two above: once it is answered, their
    // connections are being served and their timeouts are running.
    daemon.scrape().await;
    jump_past(warmpool_server::metrics::HEADER_READ_TIMEOUT).await;
    closed_by_the_daemon("the silent metrics connection", &mut silent).await;
    closed_by_the_daemon(
        "the metrics connection with part of a request",
        &mut partial,
    )
    .await;
    daemon.scrape().await;
    daemon.shut_down().await;
}

/// A daemon with a 30 s grace whose metrics port holds a request half sent
/// (a scraper cut off mid-request, or a slowloris), being read: the
/// daemon, the sender that stops it, the one that stops it at once (a
/// second signal; dropped, it sends), and the half-sent request's socket.
async fn a_metrics_request_half_sent(
    data: &std::path::Path,
) -> (
    warmpool_server::Running,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::net::TcpStream,
) {
    use tokio::io::AsyncWriteExt;
    support::init_tracing();
    let text = support::config_text(data, &[]).replacen(
        r#"shutdown_grace = "5s""#,
        r#"shutdown_grace = "30s""#,
        1,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_now, stopped_now) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start_stoppable(
        Config::parse(&text).unwrap(),
        async move {
            let _ = stopped.await;
        },
        async move {
            let _ = stopped_now.await;
        },
    )
    .await
    .unwrap();
    let addr = running.metrics_addr;
    let mut half_sent = tokio::net::TcpStream::connect(addr).await.unwrap();
    half_sent
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Accepted after it: once this is answered, the half-sent request's
    // connection is being served, its headers awaited.
    let (status, _, body) = support::http_get(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    (running, stop, stop_now, half_sent)
}

/// A request half sent to the metrics port when warmpoold stops holds the
/// stop no longer than the cut connections' patience, alongside the final
/// flush: it used to hold it, after the flush, up to the grace period
/// again, here until hyper's header read timeout (10 s), outside the stop
/// timeout the deploy files give (grace, 5 s, the flush).
#[tokio::test]
async fn a_metrics_request_half_sent_holds_a_stop_no_longer_than_the_cut_patience() {
    use warmpool_server::shutdown::{CUT_PATIENCE, STREAM_END_DRAIN};
    let data = tempfile::tempdir().unwrap();
    let (running, stop, _stop_now, _half_sent) = a_metrics_request_half_sent(data.path()).await;
    let warmpool_server::Running {
        served, manager, ..
    } = running;
    drop(manager);
    tokio::time::pause();
    stop.send(()).unwrap();
    let patience = STREAM_END_DRAIN + CUT_PATIENCE + Duration::from_secs(1);
    let ended = tokio::time::timeout(patience, served).await;
    let Ok(ended) = ended else {
        panic!("still stopping {patience:?} after the signal");
    };
    ended.unwrap().unwrap();
}

/// A second signal stops warmpoold without waiting for a request half
/// sent to the metrics port either, as it does for the gRPC calls: it
/// used to wait for it after the flush, up to the grace period.
#[tokio::test]
async fn a_second_signal_does_not_wait_for_a_metrics_request_half_sent() {
    use warmpool_server::shutdown::CUT_PATIENCE;
    let data = tempfile::tempdir().unwrap();
    let (running, stop, stop_now, _half_sent) = a_metrics_request_half_sent(data.path()).await;
    let warmpool_server::Running {
        served, manager, ..
    } = running;
    drop(manager);
    tokio::time::pause();
    stop.send(()).unwrap();
    stop_now.send(()).unwrap();
    let ended = tokio::time::timeout(CUT_PATIENCE, served).await;
    let Ok(ended) = ended else {
        panic!("still stopping {CUT_PATIENCE:?} after a second signal");
    };
    ended.unwrap().unwrap();
}

/// A TLS connection that completes its handshake and then sends nothing
/// is closed: the handshake timeout no longer covers it, and it used to
/// stay open for good. Clients are still served.
#[tokio::test]
async fn tls_connections_silent_after_their_handshake_are_closed() {
    use support::pki::Pki;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(data.path(), "ca");
    let server = pki.issue("server", &["127.0.0.1"]);
    let text =
        support::config_text(data.path(), &[("db.small", "az1", 0, 1)]) + &server.tls_section();
    let (running, stop) = start_bare(&text).await.unwrap();
    let addr = running.grpc_addr;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&pki.ca_pem()).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut silent = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), socket)
        .await
        .expect("the TLS handshake completes");
    // The daemon's SETTINGS come once it has finished the handshake too.
    served("the silent TLS connection", &mut silent).await;
    jump_past(warmpool_server::listener::PREFACE_TIMEOUT).await;
    closed_by_the_daemon("the silent TLS connection", &mut silent).await;
    assert_eq!(
        list_pools_over(
            &format!("https://127.0.0.1:{}", addr.port()),
            tls_options(Some(pki.ca_pem()), None),
        )
        .await,
        Ok(1)
    );
    stop_bare(running, stop).await;
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_daemon_and_mutual_tls_checks_them() {
    use support::pki::Pki;
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(data.path(), "ca");
    let stranger = Pki::new(data.path(), "stranger-ca");
    let server = pki.issue("server", &["127.0.0.1", "localhost"]);
    let plain = support::config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let tls = |client_ca: Option<&std::path::Path>| {
        let mut text = plain.clone() + &server.tls_section();
        if let Some(ca) = client_ca {
            text += &format!("client_ca_file = {ca:?}\n");
        }
        text
    };

    let (running, stop) = start_bare(&tls(None)).await.unwrap();
    let port = running.grpc_addr.port();
    let https = format!("https://127.0.0.1:{port}");
    assert_eq!(
        list_pools_over(&https, tls_options(Some(pki.ca_pem()), None)).await,
        Ok(1)
    );
    let by_name = format!("https://localhost:{port}");
    assert_eq!(
        list_pools_over(&by_name, tls_options(Some(pki.ca_pem()), None)).await,
        Ok(1)
    );
    // A client that does not trust the daemon's CA, or speaks plaintext,
    // gets nothing.
    let untrusted = list_pools_over(&https, tls_options(Some(stranger.ca_pem()), None)).await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    let plaintext = list_pools_over(&format!("127.0.0.1:{port}"), Default::default()).await;
    assert!(plaintext.is_err(), "{plaintext:?}");
    stop_bare(running, stop).await;

    // Mutual TLS: only clients with a certificate from the client CA.
    let clients = Pki::new(data.path(), "clients-ca");
    let ops = clients.issue("ops", &["ops"]);
    let impostor = stranger.issue("impostor", &["ops"]);
    let (running, stop) = start_bare(&tls(Some(&clients.ca_file("clients-ca"))))
        .await
        .unwrap();
    let https = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    assert_eq!(
        list_pools_over(&https, tls_options(Some(pki.ca_pem()), Some(&ops))).await,
        Ok(1)
    );
    for refused in [None, Some(&impostor)] {
        let answer = list_pools_over(&https, tls_options(Some(pki.ca_pem()), refused)).await;
        assert!(answer.is_err(), "{answer:?}");
    }
    stop_bare(running, stop).await;

    // A [tls] section naming a missing file or a file of the wrong kind
    // stops start-up, naming it.
    let missing = data.path().join("missing.crt");
    // `openssl x509 -req` without -extfile issues X.509 v1, which rustls
    // refuses whatever the key.
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let (v1_cert, v1_key) = (support.join("x509-v1.crt"), support.join("x509-v1.key"));
    for (cert, key, says) in [
        (&missing, &server.key_file, "cannot read tls.cert_file"),
        (&v1_cert, &v1_key, "is an X.509 v1 certificate"),
        (
            &server.key_file,
            &server.key_file,
            "holds no PEM certificate",
        ),
        (
            &server.cert_file,
            &server.cert_file,
            "holds no PEM private key",
        ),
        (
            &server.cert_file,
            &ops.key_file,
            "do not make a TLS identity",
        ),
    ] {
        let text = plain.clone() + &format!("\n[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
        let err = format!(
            "{:#}",
            start_bare(&text).await.err().expect("start-up fails")
        );
        assert!(err.contains(says), "{err}");
    }
}

/// A renewed certificate (and a new client CA) is served without a restart:
/// a reload reads the `[tls]` files again, connections accepted after it
/// use them and those already open keep working; files that do not load
/// change nothing.
#[tokio::test]
async fn tls_files_are_read_again_on_reload() {
    use support::pki::Pki;
    use warmpool_server::config::TlsConfig;
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let old_ca = Pki::new(data.path(), "old-ca");
    let server = old_ca.issue("server", &["127.0.0.1"]);
    let plain = support::config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let text = plain + &server.tls_section();
    let (running, stop) = start_bare(&text).await.unwrap();
    let https = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let tls = running.tls.clone().expect("serving TLS");
    // A client that connects and never says hello holds up no other.
    let _silent = tokio::net::TcpStream::connect(running.grpc_addr)
        .await
        .unwrap();
    let opened_before = Client::connect_with(&https, tls_options(Some(old_ca.ca_pem()), None))
        .await
        .unwrap();
    assert_eq!(opened_before.list_pools().await.unwrap().len(), 1);

    // The renewal lands on the same paths, from another CA here so that a
    // client can tell which certificate it was served.
    let new_ca = Pki::new(data.path(), "new-ca");
    assert_eq!(
        new_ca.issue("server", &["127.0.0.1"]).cert_file,
        server.cert_file
    );
    let trusting = |ca: &Pki| list_pools_over(&https, tls_options(Some(ca.ca_pem()), None));
    assert!(trusting(&new_ca).await.is_err(), "served before the reload");
    let files = TlsConfig {
        cert_file: server.cert_file.clone(),
        key_file: server.key_file.clone(),
        client_ca_file: None,
    };
    tls.reload(&files).unwrap();
    assert_eq!(trusting(&new_ca).await, Ok(1));
    assert!(
        trusting(&old_ca).await.is_err(),
        "the old certificate is gone"
    );
    assert_eq!(opened_before.list_pools().await.unwrap().len(), 1);

    // A client CA added by a reload: only clients with its certificates.
    let clients = Pki::new(data.path(), "clients-ca");
    let ops = clients.issue("ops", &["ops"]);
    let mutual = TlsConfig {
        client_ca_file: Some(clients.ca_file("clients-ca")),
        ..files.clone()
    };
    tls.reload(&mutual).unwrap();
    assert!(trusting(&new_ca).await.is_err(), "no client certificate");
    assert_eq!(
        list_pools_over(&https, tls_options(Some(new_ca.ca_pem()), Some(&ops))).await,
        Ok(1)
    );

    // A half-written renewal, a key of another certificate, or a file
    // without the client CA (which may be the API's only access control):
    // refused, saying why, and the settings in force stay.
    std::fs::write(&server.cert_file, "-----BEGIN CERT").unwrap();
    let err = format!("{:#}", tls.reload(&mutual).unwrap_err());
    assert!(err.contains("tls.cert_file"), "{err}");
    new_ca.issue("server", &["127.0.0.1"]);
    let mismatched = TlsConfig {
        key_file: ops.key_file.clone(),
        ..mutual.clone()
    };
    let err = format!("{:#}", tls.reload(&mismatched).unwrap_err());
    assert!(err.contains("do not make a TLS identity"), "{err}");
    let err = format!("{:#}", tls.reload(&files).unwrap_err());
    assert!(err.contains("no client_ca_file"), "{err}");
    assert!(
        trusting(&new_ca).await.is_err(),
        "still no client certificate"
    );
    assert_eq!(
        list_pools_over(&https, tls_options(Some(new_ca.ca_pem()), Some(&ops))).await,
        Ok(1),
        "the mutual TLS settings are still in force"
    );

    // Stopped, the daemon takes no more connections.
    // Asked of the socket, not the port: another test's listener may be
    // given the freed port at once (see `Daemon::shut_down`).
    let addr = running.grpc_addr;
    let listening = support::listening_socket(addr);
    stop_bare(running, stop).await;
    assert!(
        !support::holds_socket(listening),
        "warmpoold still holds its listening socket on {addr} once stopped"
    );
}

/// `[tls]` files as a reload takes them: `issued`'s certificate, and
/// `key_file` (`issued`'s key when `None`).
fn tls_files(
    issued: &support::pki::Issued,
    key_file: Option<&std::path::Path>,
) -> warmpool_server::config::TlsConfig {
    warmpool_server::config::TlsConfig {
        cert_file: issued.cert_file.clone(),
        key_file: key_file.unwrap_or(&issued.key_file).to_owned(),
        client_ca_file: None,
    }
}

/// A certificate outside its validity window, expired or not valid yet,
/// stops start-up and is refused by a reload, naming the file and the
/// date; the certificate in force stays. Both used to be taken, and every
/// client's handshake then failed ("certificate expired") while warmpoold
/// logged that at debug only and looked healthy.
#[tokio::test]
async fn a_certificate_outside_its_validity_stops_start_up_and_is_refused_by_a_reload() {
    use support::pki::Pki;
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(data.path(), "ca");
    let plain = support::config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let expired = pki.issue_valid("expired", &["127.0.0.1"], (2001, 1, 1), (2002, 1, 1));
    let early = pki.issue_valid("early", &["127.0.0.1"], (2990, 1, 1), (2991, 1, 1));
    let refusals = [
        (&expired, "expired at 2002-01-01T00:00:00Z (its notAfter)"),
        (
            &early,
            "is not valid until 2990-01-01T00:00:00Z (its notBefore)",
        ),
    ];
    for (issued, says) in refusals {
        let err = format!(
            "{:#}",
            start_bare(&(plain.clone() + &issued.tls_section()))
                .await
                .err()
                .expect("start-up fails")
        );
        assert!(
            err.contains(&format!("tls.cert_file {}", issued.cert_file.display())),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }

    let server = pki.issue("server", &["127.0.0.1"]);
    let (running, stop) = start_bare(&(plain + &server.tls_section())).await.unwrap();
    let https = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let tls = running.tls.clone().expect("serving TLS");
    for (issued, says) in refusals {
        let err = format!("{:#}", tls.reload(&tls_files(issued, None)).unwrap_err());
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(
        list_pools_over(&https, tls_options(Some(pki.ca_pem()), None)).await,
        Ok(1),
        "the certificate in force stays"
    );
    stop_bare(running, stop).await;
}

/// An encrypted private key (PKCS#8's "ENCRYPTED PRIVATE KEY", or
/// OpenSSL's older "Proc-Type: 4,ENCRYPTED") is named as one, with the
/// command that decrypts it, at start and on reload. The errors were "no
/// items found" and "base64 decode error: InvalidCharacter(45)".
#[tokio::test]
async fn an_encrypted_server_key_is_named_with_how_to_decrypt_it() {
    use support::pki::Pki;
    support::init_tracing();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new(data.path(), "ca");
    let server = pki.issue("server", &["127.0.0.1"]);
    let plain = support::config_text(data.path(), &[("db.small", "az1", 0, 1)]);
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let encrypted = [
        support.join("encrypted-pkcs8.key"),
        support.join("encrypted-traditional.key"),
    ];
    let says = |key: &std::path::Path| {
        format!(
            "tls.key_file {} is an encrypted private key; warmpoold needs it unencrypted \
             (`openssl pkey -in KEY -out PLAIN_KEY` decrypts it",
            key.display()
        )
    };
    for key in &encrypted {
        let text = plain.clone()
            + &format!(
                "\n[tls]\ncert_file = {:?}\nkey_file = {key:?}\n",
                server.cert_file
            );
        let err = format!(
            "{:#}",
            start_bare(&text).await.err().expect("start-up fails")
        );
        assert!(err.contains(&says(key)), "{err}");
    }

    let (running, stop) = start_bare(&(plain + &server.tls_section())).await.unwrap();
    let tls = running.tls.clone().expect("serving TLS");
    for key in &encrypted {
        let err = format!(
            "{:#}",
            tls.reload(&tls_files(&server, Some(key))).unwrap_err()
        );
        assert!(err.contains(&says(key)), "{err}");
    }
    stop_bare(running, stop).await;
}
