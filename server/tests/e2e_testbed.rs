//! warmpoold end to end against a real OpenStack: deploy/testbed (Keystone,
//! Nova with two fake-virt computes in az1/az2, Cinder, Neutron, Glance on
//! 127.0.0.1), with `[cloud] kind = "openstack"` and the gRPC client.
//!
//! `scripts/test.sh` brings the testbed up before `cargo test`; without it
//! this suite FAILS with a message saying how to start it (it never skips:
//! an e2e suite that silently did nothing would prove nothing).
//!
//! One daemon, one test, steps in order: the reconciler deletes every
//! warmpool server its store does not know, so two daemons in the testbed's
//! `warmpool-e2e` project would delete each other's servers. After the pools
//! fill, each step runs even if an earlier one failed, and the test fails at
//! the end naming every failed step. A second test runs a daemon of its own
//! as a pool user with the member role only, in its own project
//! (`warmpool-member`): the e2e user is an admin, and Neutron's policy is
//! stricter for a member. Servers run no mysqld (fake virt
//! driver): `probe_address_override` points every readiness probe at the
//! testbed's MariaDB.

mod support;

use support::{allocate_request, existing_volume, expect_code, new_volume};
mod testbed;

use std::collections::BTreeMap;

use futures::FutureExt;
use pool_manager::cloud::{
    Cloud, CloudError, NewVolumeSpec, ServerSpec, ServerStatus, VolumeStatus, META_INSTANCE,
    META_POOL, META_TENANT,
};
use pool_manager::model::PoolKey;
use pool_manager::openstack::OpenStackCloud;
use testbed::{
    cloud_as, config_text, eventually, first_page, require_testbed, run_id, soft_deleted_servers,
    Daemon, PoolDecl, E2E_CLOUD, E2E_NETWORK, IMAGE, MEMBER_CLOUD, MEMBER_NETWORK, PATIENCE,
    TENANT_CLOUD, TENANT_NETWORK, VOLUME_AZ,
};
use tonic::Code;
use warmpool_client::{api, Client};

const SMALL: &str = "db.small";
/// How long each purchase may take.
const ALLOCATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// 64 vCPUs: more than the warmpool-e2e project's 40-core quota, so every
/// boot of this flavor is refused for quota.
const HUGE: &str = "db.huge";

const POOLS: [PoolDecl; 3] = [
    PoolDecl {
        flavor: SMALL,
        az: "az1",
        min_ready: 2,
        max_ready: 4,
    },
    PoolDecl {
        flavor: SMALL,
        az: "az2",
        min_ready: 1,
        max_ready: 2,
    },
    PoolDecl {
        flavor: HUGE,
        az: "az1",
        min_ready: 1,
        max_ready: 1,
    },
];

/// The message names how to start the testbed, so a developer who runs
/// `cargo test` without it knows what to do.
#[tokio::test]
async fn an_unreachable_testbed_fails_with_how_to_start_it() {
    let keystone = testbed::closed_port().await.to_string();
    let mariadb = testbed::closed_port().await.to_string();
    let err = testbed::check_reachable(&[("Keystone", keystone.as_str())], &mariadb)
        .await
        .expect_err("nothing listens there");
    assert!(err.contains("deploy/testbed/up.sh"), "{err}");
    assert!(err.contains("scripts/test.sh"), "{err}");
    assert!(err.contains(&format!("Keystone at {keystone}")), "{err}");
}

/// The member-only pool user's daemon: one pool, refilled after each step.
const MEMBER_POOLS: [PoolDecl; 1] = [PoolDecl {
    flavor: SMALL,
    az: "az1",
    min_ready: 1,
    max_ready: 1,
}];

/// Everything a step needs.
struct Ctx {
    run: String,
    client: Client,
    /// The daemon's own cloud user (warmpool-e2e, or warmpool-member).
    e2e: OpenStackCloud,
    tenant: OpenStackCloud,
    /// The tenant's project id: tenant-net is its network, and warmpool
    /// puts a tenant's port only on a network of the order's tenant (or
    /// one shared with it).
    tenant_project: String,
    tenant_net: String,
    metrics_url: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpoold_against_the_openstack_testbed() {
    require_testbed().await;
    let e2e = cloud_as(E2E_CLOUD, E2E_NETWORK).await;
    let tenant = cloud_as(TENANT_CLOUD, TENANT_NETWORK).await;
    let tenant_net = e2e
        .network(TENANT_NETWORK)
        .await
        .expect("tenant-net is shared to warmpool-e2e (bootstrap_warmpool.py)")
        .id;
    let tenant_project = tenant.project_id().await.expect("the tenant's project id");

    // Servers an earlier, interrupted run left would hold quota.
    delete_all_pool_servers(&e2e, &e2e).await;

    let data = tempfile::tempdir().expect("temp dir");
    let text = config_text(&data.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS);
    let daemon = Daemon::start(&text).await;
    let ctx = Ctx {
        run: run_id(),
        client: daemon.client.clone(),
        e2e,
        tenant,
        tenant_project,
        tenant_net,
        metrics_url: daemon.metrics_url(),
    };

    // Every later step needs full pools: this one fails the test at once.
    pools_fill(&ctx).await;

    // The other steps are independent: each runs even if an earlier one
    // failed, and the test fails at the end listing every failed step.
    let mut failed = Vec::new();
    step(
        &mut failed,
        "listings span pages and the driver follows them",
        listings_span_pages(&ctx),
    )
    .await;
    step(&mut failed, "quota is reported", quota_is_reported(&ctx)).await;
    step(
        &mut failed,
        "a leaked server is deleted",
        leaked_server_is_deleted(&ctx),
    )
    .await;
    step(
        &mut failed,
        "allocate a new volume, retry, release",
        allocate_new_volume(&ctx),
    )
    .await;
    step(
        &mut failed,
        "allocate the tenant's volume, fence it, release",
        allocate_tenant_volume(&ctx),
    )
    .await;
    step(
        &mut failed,
        "allocate an untagged volume of warmpool's project, tag it",
        allocate_untagged_own_volume(&ctx),
    )
    .await;
    step(
        &mut failed,
        "a cold boot past the quota is refused",
        cold_boot_past_quota(&ctx),
    )
    .await;
    // Last: whatever happened above, the daemon still serves and refills.
    step(&mut failed, "the daemon survived", survived(&ctx)).await;

    daemon.shut_down().await;
    // Leave the project empty for the next run and for the quota.
    delete_all_pool_servers(&ctx.e2e, &ctx.e2e).await;
    assert!(
        failed.is_empty(),
        "failed steps (details above): {failed:?}"
    );
}

/// warmpoold as a pool user with the member role only (warmpool-member, no
/// admin), as a cloud may grant warmpool's user no more, in a project and
/// with a daemon of its own (beside the main test's). Neutron's default
/// policy is stricter for it than cloudsim by default: it may make the
/// tenant's port on tenant-net (another project's network, shared with
/// it), not choose its address, nor delete it while a server holds it.
/// Its orders are the tenant's own (the tenant owns tenant-net: a member
/// is shown no RBAC policy of it) with a new volume (a tenant's volume is
/// invisible to a member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_only_pool_user_against_the_openstack_testbed() {
    require_testbed().await;
    let member = cloud_as(MEMBER_CLOUD, MEMBER_NETWORK).await;
    let tenant = cloud_as(TENANT_CLOUD, TENANT_NETWORK).await;
    let tenant_net = member
        .network(TENANT_NETWORK)
        .await
        .expect("tenant-net is shared to warmpool-member (bootstrap_warmpool.py)")
        .id;
    let tenant_project = tenant.project_id().await.expect("the tenant's project id");
    // The e2e user is an admin: it force-deletes what the member's
    // deletes leave SOFT_DELETED.
    let admin = cloud_as(E2E_CLOUD, E2E_NETWORK).await;
    delete_all_pool_servers(&member, &admin).await;

    let data = tempfile::tempdir().expect("temp dir");
    let text = config_text(
        &data.path().join("store"),
        MEMBER_CLOUD,
        MEMBER_NETWORK,
        &MEMBER_POOLS,
    );
    let daemon = Daemon::start(&text).await;
    let ctx = Ctx {
        run: run_id(),
        client: daemon.client.clone(),
        e2e: member,
        tenant,
        tenant_project,
        tenant_net,
        metrics_url: daemon.metrics_url(),
    };
    wait_ready(&ctx.client, SMALL, "az1", 1).await;

    let mut failed = Vec::new();
    step(
        &mut failed,
        "member: a purchase on tenant-net is served and released",
        member_purchase_released(&ctx),
    )
    .await;
    step(
        &mut failed,
        "member: a release whose server was deleted by hand deletes the port",
        member_release_of_a_server_deleted_by_hand(&ctx),
    )
    .await;
    step(
        &mut failed,
        "member: a fixed IP on tenant-net is refused, saying what to do",
        member_fixed_ip_refused(&ctx),
    )
    .await;

    daemon.shut_down().await;
    delete_all_pool_servers(&ctx.e2e, &admin).await;
    assert!(
        failed.is_empty(),
        "failed steps (details above): {failed:?}"
    );
}

/// A member's purchase: the port on tenant-net, the volume new, which
/// Neutron refuses the member to delete while the server holds it; Release
/// detaches the port, deletes the server, then the port once Nova has let
/// go of it, and the volume.
async fn member_purchase_released(ctx: &Ctx) {
    let id = format!("e2e-{}-member", ctx.run);
    let a = ctx
        .client
        .allocate(tenants_order(ctx, &id, SMALL, new_volume(1, true)))
        .await
        .expect("a member's purchase on tenant-net");
    check_allocated(&a, &ctx.e2e, "az1").await;
    // What cloudsim's member_port_policy answers: Neutron refuses a member
    // the delete of a port a server holds, and the port stays.
    let refused = ctx
        .e2e
        .delete_port(&a.port_id)
        .await
        .expect_err("a member may not delete a bound port");
    assert!(
        matches!(&refused, CloudError::Fatal(m) if m.contains("rule:delete_port is disallowed by policy (HTTP 403)")),
        "{refused:?}"
    );
    check_allocated(&a, &ctx.e2e, "az1").await;
    ctx.client
        .release(&id, Some(true))
        .await
        .expect("release, delete volume");
    wait_released(ctx, &id, &a).await;
    wait_volume_deleted(&ctx.e2e, &a.volume_id).await;
    wait_ready(&ctx.client, SMALL, "az1", 1).await;
}

/// The server deleted by hand (as the member) just before the release:
/// the port may still be bound when the release deletes it, which Neutron
/// refuses a member (403 "rule:delete_port is disallowed by policy")
/// until Nova has torn the server down. The release waits that out: it
/// answers Released, and neither the port nor the volume is left.
async fn member_release_of_a_server_deleted_by_hand(ctx: &Ctx) {
    let id = format!("e2e-{}-member-by-hand", ctx.run);
    let a = ctx
        .client
        .allocate(tenants_order(ctx, &id, SMALL, new_volume(1, true)))
        .await
        .expect("a member's purchase on tenant-net");
    check_allocated(&a, &ctx.e2e, "az1").await;
    ctx.e2e
        .delete_server(&a.server_id)
        .await
        .expect("the member deletes its server by hand");
    let released = ctx
        .client
        .release(&id, Some(true))
        .await
        .expect("release of a server deleted by hand");
    assert_ne!(
        released.state,
        api::AllocationState::Allocated as i32,
        "{released:?}"
    );
    wait_released(ctx, &id, &a).await;
    wait_volume_deleted(&ctx.e2e, &a.volume_id).await;
    wait_ready(&ctx.client, SMALL, "az1", 1).await;
}

/// Neutron lets a member choose no address on another project's network,
/// whatever the address: the order with a fixed_ip is refused
/// FAILED_PRECONDITION in Neutron's words and saying what to do, the
/// claimed instance back in the pool.
async fn member_fixed_ip_refused(ctx: &Ctx) {
    let subnet = ctx
        .e2e
        .network(TENANT_NETWORK)
        .await
        .expect("tenant-net")
        .subnets
        .and_then(|s| s.into_iter().next())
        .expect("tenant-net has a subnet (deploy/testbed/bootstrap.py)");
    let id = format!("e2e-{}-member-fixed", ctx.run);
    let mut order = tenants_order(ctx, &id, SMALL, new_volume(1, true));
    let network = order.network.as_mut().expect("the order's network");
    network.subnet_id = subnet;
    network.fixed_ip = "10.20.0.250".into();
    let message = expect_code(ctx.client.allocate(order).await, Code::FailedPrecondition);
    eprintln!("member: a fixed IP on tenant-net: {message}");
    assert!(
        message.starts_with("cannot create the tenant port: ")
            && message.contains("rule:create_port:fixed_ips:ip_address")
            && message.contains("without fixed_ip")
            && message.contains("admin role"),
        "{message}"
    );
    wait_ready(&ctx.client, SMALL, "az1", 1).await;
}

/// Waits until Cinder no longer has the volume.
async fn wait_volume_deleted(cloud: &OpenStackCloud, volume_id: &str) {
    eventually(
        &format!("volume {volume_id} to be deleted"),
        PATIENCE,
        || async {
            match cloud.get_volume(volume_id).await {
                Err(CloudError::NotFound(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// A purchase in az1 of the tenant's project, with a port on its
/// tenant-net.
fn tenants_order(
    ctx: &Ctx,
    id: &str,
    flavor: &str,
    volume: api::VolumeSpec,
) -> api::AllocateRequest {
    api::AllocateRequest {
        tenant_project_id: ctx.tenant_project.clone(),
        ..allocate_request(id, flavor, "az1", volume, &ctx.tenant_net, ALLOCATE_TIMEOUT)
    }
}

/// Runs one step, turning its panic into an entry of `failed`.
async fn step(
    failed: &mut Vec<&'static str>,
    name: &'static str,
    body: impl std::future::Future<Output = ()>,
) {
    eprintln!("== step: {name}");
    let started = std::time::Instant::now();
    match std::panic::AssertUnwindSafe(body).catch_unwind().await {
        Ok(()) => eprintln!("== step ok in {:.1?}: {name}", started.elapsed()),
        Err(_) => {
            eprintln!("== step FAILED after {:.1?}: {name}", started.elapsed());
            failed.push(name);
        }
    }
}

/// Pools fill: every Ready instance is an ACTIVE server in its AZ carrying
/// warmpool's metadata.
async fn pools_fill(ctx: &Ctx) {
    let az1 = wait_ready(&ctx.client, SMALL, "az1", 2).await;
    wait_ready(&ctx.client, SMALL, "az2", 1).await;
    assert_eq!(az1.consecutive_boot_failures, 0, "{az1:?}");
    for (az, want) in [("az1", 2), ("az2", 1)] {
        let instances = ctx
            .client
            .list_instances(SMALL, az)
            .await
            .expect("list instances");
        let ready: Vec<_> = instances
            .iter()
            .filter(|i| i.state == api::InstanceState::Ready as i32)
            .collect();
        assert_eq!(ready.len(), want, "{az}: {instances:?}");
        for instance in ready {
            let server = ctx
                .e2e
                .get_server(&instance.server_id)
                .await
                .unwrap_or_else(|e| panic!("server {} of {instance:?}: {e}", instance.server_id));
            assert_eq!(server.status, ServerStatus::Active, "{server:?}");
            assert_eq!(server.availability_zone, az, "{server:?}");
            assert_eq!(
                server.metadata.get(META_POOL),
                Some(&PoolKey::new(SMALL, az).to_string()),
                "{server:?}"
            );
        }
    }
}

/// The testbed pages Nova, Neutron and Cinder listings at 2 items
/// (deploy/testbed/write_configs.sh): each listing here has its first
/// page, read straight from the service, link a next one and hold fewer
/// items than the driver finds, so the driver followed the service's
/// paging (marker, next link, last page) to get them all.
async fn listings_span_pages(ctx: &Ctx) {
    use osauth::services::{BLOCK_STORAGE, COMPUTE, NETWORK};
    let spans = |what: &str, (first, next): (usize, bool), all: usize| {
        assert!(
            next && first < all,
            "{what}: the first page has {first} item(s) (next page linked: {next}), the driver found {all}: the testbed does not page it, or the driver did not follow"
        );
        println!("   {what}: first page {first} item(s) with a next link, the driver found {all}");
    };

    // Nova: the pools' servers (3 ready at least) and the 3 flavors.
    let servers = ctx
        .e2e
        .list_pool_servers()
        .await
        .expect("list pool servers");
    let first = first_page(
        E2E_CLOUD,
        COMPUTE,
        Some("compute 2.52"),
        &["servers", "detail"],
        &[("tags", "warmpool")],
        "servers",
    )
    .await;
    spans("Nova servers tagged warmpool", first, servers.len());
    let fresh = cloud_as(E2E_CLOUD, E2E_NETWORK).await;
    for flavor in [SMALL, "db.large", HUGE] {
        fresh
            .flavor(flavor)
            .await
            .unwrap_or_else(|e| panic!("flavor {flavor}: {e}"));
    }
    let first = first_page(
        E2E_CLOUD,
        COMPUTE,
        None,
        &["flavors", "detail"],
        &[],
        "flavors",
    )
    .await;
    spans("Nova flavors", first, 3);

    // Neutron: every network an admin sees. (Neutron does not page RBAC
    // policies: tenant-net's 5 come on one page.)
    let names = ctx.e2e.network_names().await.expect("network names");
    let first = first_page(E2E_CLOUD, NETWORK, None, &["networks"], &[], "networks").await;
    spans("Neutron networks", first, names.len());

    // Cinder: three volumes of one name (the twins a lost create leaves).
    let name = format!("e2e-{}-twin", ctx.run);
    let mut made = Vec::new();
    for _ in 0..3 {
        let volume = ctx
            .e2e
            .create_volume(&NewVolumeSpec {
                name: name.clone(),
                size_gib: 1,
                volume_type: None,
                availability_zone: VOLUME_AZ.into(),
                metadata: Default::default(),
            })
            .await
            .expect("create a volume");
        made.push(volume.id);
    }
    let found = ctx.e2e.find_volumes_by_name(&name).await;
    let first = std::panic::AssertUnwindSafe(first_page(
        E2E_CLOUD,
        BLOCK_STORAGE,
        Some("volume 3.67"),
        &["volumes", "detail"],
        &[("name", name.as_str())],
        "volumes",
    ))
    .catch_unwind()
    .await;
    for id in &made {
        wait_volume_available(&ctx.e2e, id).await;
        ctx.e2e.delete_volume(id).await.expect("delete a volume");
    }
    let first = first.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let found = found.expect("volumes by name");
    assert_eq!(found.len(), made.len(), "{found:?}");
    spans("Cinder volumes of one name", first, found.len());
}

/// No db.huge server fits the project's cores quota: the pool says so and
/// stays empty. The port quota is read from Neutron.
async fn quota_is_reported(ctx: &Ctx) {
    let huge = eventually("db.huge@az1 to report the quota", PATIENCE, || async {
        let pool = ctx
            .client
            .get_pool(HUGE, "az1")
            .await
            .map_err(|e| e.to_string())?;
        let sizing = pool.sizing.clone().unwrap_or_default();
        // Read from the cloud's limits: 64 vCPUs, more than the cores quota.
        if sizing.beyond_quota && sizing.plan_reason == "quota" {
            Ok(pool)
        } else {
            Err(format!(
                "beyond_quota {}, quota_limited_by {:?}, plan_reason {:?}, counts {:?}",
                sizing.beyond_quota, sizing.quota_limited_by, sizing.plan_reason, pool.counts
            ))
        }
    })
    .await;
    assert_eq!(huge.counts.unwrap_or_default().ready, 0, "{huge:?}");

    // Neutron's quota details are read: the project's port quota (PORTS in
    // bootstrap_warmpool.py) counts in the headroom, two ports a server.
    let ports = ctx
        .e2e
        .port_quota()
        .await
        .expect("GET /v2.0/quotas/{project}/details")
        .expect("the testbed's Neutron tells warmpool-e2e its port quota");
    assert_eq!(ports.max, 100, "{ports:?}");
    let headroom = ctx.e2e.boot_headroom(SMALL).await.expect("boot headroom");
    assert!(
        headroom
            .quotas
            .iter()
            .any(|q| q.resource == "ports" && q.per_server == 2),
        "{headroom:?}"
    );
}

/// A server with warmpool's tag and metadata that the store does not know
/// (what a crash right after POST /servers leaves) is deleted by the
/// reconciler; the pool's own servers are not.
async fn leaked_server_is_deleted(ctx: &Ctx) {
    let before = leaks_deleted(&ctx.metrics_url).await;
    let instance = format!("leak-{}", ctx.run);
    let pool = PoolKey::new(SMALL, "az1");
    let leak = ctx
        .e2e
        .create_server(&ServerSpec {
            name: instance.clone(),
            pool: pool.clone(),
            image: IMAGE.into(),
            metadata: BTreeMap::from([
                (META_POOL.to_owned(), pool.to_string()),
                (META_INSTANCE.to_owned(), instance.clone()),
            ]),
        })
        .await
        .expect("create the leaked server");
    wait_server_gone(&ctx.e2e, &leak.id).await;
    // The counter follows the delete through the event stream, a moment
    // after the server is gone.
    eventually("the leak to be counted", PATIENCE, || async {
        let after = leaks_deleted(&ctx.metrics_url).await;
        if after >= before + 1.0 {
            Ok(())
        } else {
            Err(format!(
                "warmpool_leaks_deleted_total went from {before} to {after}"
            ))
        }
    })
    .await;
    wait_ready(&ctx.client, SMALL, "az1", 2).await;
}

/// Allocate with a new volume and a port on the tenant's network; the
/// retry gets the same answer; other parameters are ABORTED; Release
/// deletes the server, the port and (asked to) the volume.
async fn allocate_new_volume(ctx: &Ctx) {
    let id = format!("e2e-{}-new", ctx.run);
    let request = tenants_order(ctx, &id, SMALL, new_volume(1, false));
    let a = ctx
        .client
        .allocate(request.clone())
        .await
        .expect("allocate, new volume");
    check_allocated(&a, &ctx.e2e, "az1").await;
    assert!(a.warm_hit, "a full pool hands out a warm instance: {a:?}");

    let again = ctx.client.allocate(request.clone()).await.expect("retry");
    assert_eq!(
        (
            &again.server_id,
            &again.volume_id,
            &again.port_id,
            &again.ip_address
        ),
        (&a.server_id, &a.volume_id, &a.port_id, &a.ip_address),
        "a retry must return the same allocation"
    );
    let mut other = request.clone();
    other.availability_zone = "az2".into();
    let message = expect_code(ctx.client.allocate(other).await, Code::Aborted);
    assert!(message.contains(&id), "{message}");

    ctx.client
        .release(&id, Some(true))
        .await
        .expect("release, delete volume");
    wait_released(ctx, &id, &a).await;
    eventually(
        &format!("volume {} to be deleted", a.volume_id),
        PATIENCE,
        || async {
            match ctx.e2e.get_volume(&a.volume_id).await {
                Err(CloudError::NotFound(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_ready(&ctx.client, SMALL, "az1", 2).await;
}

/// Allocate with a volume the tenant created (available, in its own
/// project): attached, seen in use by the tenant, fenced from a second
/// Allocate, and back to available after Release (kept: the default).
async fn allocate_tenant_volume(ctx: &Ctx) {
    let order = format!("e2e-{}-existing", ctx.run);
    with_volume(
        ctx,
        &ctx.tenant,
        "tenant-volume",
        &order,
        |volume_id| async move { allocate_tenant_volume_inner(ctx, &volume_id).await },
    )
    .await;
}

/// Runs `body` on a new 1 GiB volume `cloud` creates, named for this run;
/// then, whatever happened, releases `order` (the one `body` may have
/// placed on it) and deletes the volume once detached.
async fn with_volume<F, Fut>(ctx: &Ctx, cloud: &OpenStackCloud, name: &str, order: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let volume = cloud
        .create_volume(&NewVolumeSpec {
            name: format!("e2e-{}-{name}", ctx.run),
            size_gib: 1,
            volume_type: None,
            availability_zone: VOLUME_AZ.into(),
            metadata: Default::default(),
        })
        .await
        .expect("create a volume");
    let volume_id = volume.id.clone();
    let result = std::panic::AssertUnwindSafe(body(volume_id.clone()))
        .catch_unwind()
        .await;
    let _ = ctx.client.release(order, None).await;
    let _ = eventually("the volume to be detached", PATIENCE, || async {
        match cloud.get_volume(&volume_id).await {
            Ok(v) if v.attached_to.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    cloud
        .delete_volume(&volume_id)
        .await
        .expect("delete the volume");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Waits until `cloud` sees the volume available.
async fn wait_volume_available(cloud: &OpenStackCloud, volume_id: &str) {
    eventually(
        &format!("volume {volume_id} to be available"),
        PATIENCE,
        || async {
            let v = cloud
                .get_volume(volume_id)
                .await
                .map_err(|e| e.to_string())?;
            if v.status == VolumeStatus::Available {
                Ok(())
            } else {
                Err(format!("{:?}", v.status))
            }
        },
    )
    .await;
}

async fn allocate_tenant_volume_inner(ctx: &Ctx, volume_id: &str) {
    wait_volume_available(&ctx.tenant, volume_id).await;
    // The volume is in the tenant's own project: an order for another
    // tenant is refused it, one for this tenant (its Keystone project id)
    // gets it.
    let tenant_project = ctx.tenant_project.clone();
    // An order naming the volume, for `tenant`.
    let order = |id: &str, tenant: &str| api::AllocateRequest {
        tenant_project_id: tenant.to_owned(),
        ..allocate_request(
            id,
            SMALL,
            "az2",
            existing_volume(volume_id),
            &ctx.tenant_net,
            ALLOCATE_TIMEOUT,
        )
    };
    let message = expect_code(
        ctx.client
            .allocate(order(&format!("e2e-{}-other-tenant", ctx.run), "tenant"))
            .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains(&tenant_project), "{message}");
    let id = format!("e2e-{}-existing", ctx.run);
    let b = ctx
        .client
        .allocate(order(&id, &tenant_project))
        .await
        .expect("allocate with the tenant's volume");
    assert_eq!(b.volume_id, volume_id, "{b:?}");
    check_allocated(&b, &ctx.e2e, "az2").await;
    let seen = ctx
        .tenant
        .get_volume(volume_id)
        .await
        .expect("tenant reads its volume");
    assert_eq!(seen.status, VolumeStatus::InUse, "{seen:?}");
    assert_eq!(seen.attached_to, vec![b.server_id.clone()], "{seen:?}");

    // Fencing: a volume in use is never attached again, even to its own
    // tenant's order.
    let message = expect_code(
        ctx.client
            .allocate(order(&format!("e2e-{}-fenced", ctx.run), &tenant_project))
            .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains(volume_id), "{message}");
    assert!(
        !message.contains("neither this order's tenant"),
        "{message}"
    );

    ctx.client
        .release(&id, None)
        .await
        .expect("release, keep volume");
    wait_released(ctx, &id, &b).await;
    eventually(
        "the tenant's volume to be available again",
        PATIENCE,
        || async {
            let v = ctx
                .tenant
                .get_volume(volume_id)
                .await
                .map_err(|e| e.to_string())?;
            if v.status == VolumeStatus::Available && v.attached_to.is_empty() {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
    wait_ready(&ctx.client, SMALL, "az2", 1).await;
}

/// Allocate with an untagged volume of warmpool's own project (one an
/// operator made for a tenant): real Cinder takes the empty metadata write
/// that checks, before anything is made, that the tag can be written, and
/// the volume comes back tagged with the order's tenant.
async fn allocate_untagged_own_volume(ctx: &Ctx) {
    let id = &format!("e2e-{}-untagged", ctx.run);
    with_volume(ctx, &ctx.e2e, "own-volume", id, |volume_id| async move {
        wait_volume_available(&ctx.e2e, &volume_id).await;
        let order = tenants_order(ctx, id, SMALL, existing_volume(&volume_id));
        let a = ctx
            .client
            .allocate(order)
            .await
            .expect("allocate with an untagged volume of warmpool's project");
        assert_eq!(a.volume_id, volume_id, "{a:?}");
        check_allocated(&a, &ctx.e2e, "az1").await;
        let seen = ctx
            .e2e
            .get_volume(&volume_id)
            .await
            .expect("read the volume");
        assert_eq!(
            seen.metadata.get(META_TENANT),
            Some(&ctx.tenant_project),
            "tagged with the order's tenant: {seen:?}"
        );
        ctx.client
            .release(id, None)
            .await
            .expect("release, keep volume");
        wait_released(ctx, id, &a).await;
    })
    .await;
    wait_ready(&ctx.client, SMALL, "az1", 2).await;
}

/// A buyer asking for a cold boot of db.huge is refused at once with
/// FAILED_PRECONDITION naming the quota: no release would make room.
async fn cold_boot_past_quota(ctx: &Ctx) {
    let mut cold = tenants_order(
        ctx,
        &format!("e2e-{}-huge", ctx.run),
        HUGE,
        new_volume(1, false),
    );
    cold.empty_pool_policy = api::EmptyPoolPolicy::ColdBoot.into();
    cold.timeout = Some(prost_types::Duration {
        seconds: 30,
        nanos: 0,
    });
    let message = expect_code(ctx.client.allocate(cold).await, Code::FailedPrecondition);
    assert!(message.to_lowercase().contains("quota"), "{message}");
}

/// After all of the above (quota refusals all along): still serving, the
/// small pools full, db.huge still empty and not degraded into a crash.
async fn survived(ctx: &Ctx) {
    let pools = ctx.client.list_pools().await.expect("list pools");
    assert_eq!(pools.len(), 3, "{pools:?}");
    wait_ready(&ctx.client, SMALL, "az1", 2).await;
    wait_ready(&ctx.client, SMALL, "az2", 1).await;
    let huge = ctx
        .client
        .get_pool(HUGE, "az1")
        .await
        .expect("db.huge pool");
    assert_eq!(huge.counts.unwrap_or_default().ready, 0, "{huge:?}");
}

/// The allocation is released and its server and port are gone.
async fn wait_released(ctx: &Ctx, id: &str, a: &api::Allocation) {
    eventually(
        &format!("allocation {id} to be released"),
        PATIENCE,
        || async {
            let got = ctx
                .client
                .get_allocation(id)
                .await
                .map_err(|e| e.to_string())?;
            if got.state == api::AllocationState::Released as i32 {
                Ok(())
            } else {
                Err(format!("{:?}", got.state))
            }
        },
    )
    .await;
    wait_server_gone(&ctx.e2e, &a.server_id).await;
    eventually(
        &format!("port {} to be deleted", a.port_id),
        PATIENCE,
        || async {
            match ctx.e2e.get_port(&a.port_id).await {
                Err(CloudError::NotFound(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// The allocation is complete, and the cloud agrees: the volume is in use by
/// its server, the port is bound to it with an address on tenant-net.
async fn check_allocated(a: &api::Allocation, cloud: &OpenStackCloud, az: &str) {
    assert_eq!(a.state, api::AllocationState::Allocated as i32, "{a:?}");
    assert_eq!(a.availability_zone, az, "{a:?}");
    for (field, value) in [
        ("server_id", &a.server_id),
        ("volume_id", &a.volume_id),
        ("port_id", &a.port_id),
        ("ip_address", &a.ip_address),
    ] {
        assert!(!value.is_empty(), "{field} is empty: {a:?}");
    }
    // tenant-net is 10.20.0.0/24 (deploy/testbed/bootstrap.py).
    assert!(a.ip_address.starts_with("10.20.0."), "{a:?}");
    let t = a.timings.expect("timings are set");
    for (step, d) in [
        ("claim", t.claim),
        ("volume", t.volume),
        ("port", t.port),
        ("verify", t.verify),
        ("total", t.total),
    ] {
        assert!(d.is_some(), "timings.{step} unset: {t:?}");
    }
    let server = cloud
        .get_server(&a.server_id)
        .await
        .expect("the allocated server");
    assert_eq!(server.status, ServerStatus::Active, "{server:?}");
    assert_eq!(server.availability_zone, az, "{server:?}");
    assert!(server.attached_volumes.contains(&a.volume_id), "{server:?}");
    assert!(server.attached_ports.contains(&a.port_id), "{server:?}");
    let volume = cloud
        .get_volume(&a.volume_id)
        .await
        .expect("the allocated volume");
    assert_eq!(volume.status, VolumeStatus::InUse, "{volume:?}");
    assert_eq!(volume.attached_to, vec![a.server_id.clone()], "{volume:?}");
    let port = cloud
        .get_port(&a.port_id)
        .await
        .expect("the allocated port");
    assert_eq!(
        port.device_id.as_deref(),
        Some(a.server_id.as_str()),
        "{port:?}"
    );
    assert_eq!(
        port.ip_address.as_deref(),
        Some(a.ip_address.as_str()),
        "{port:?}"
    );
}

async fn wait_ready(client: &Client, flavor: &str, az: &str, ready: u32) -> api::Pool {
    eventually(
        &format!("{flavor}@{az} to have {ready} ready"),
        PATIENCE,
        || async {
            let pool = client
                .get_pool(flavor, az)
                .await
                .map_err(|e| e.to_string())?;
            let c = pool.counts.unwrap_or_default();
            if c.ready == ready && c.booting == 0 && c.warming == 0 {
                Ok(pool)
            } else {
                Err(format!("{c:?}, last_error {:?}", pool.last_error))
            }
        },
    )
    .await
}

async fn wait_server_gone(cloud: &OpenStackCloud, server_id: &str) {
    eventually(
        &format!("server {server_id} to be deleted"),
        PATIENCE,
        || async {
            match cloud.get_server(server_id).await {
                Err(CloudError::NotFound(_)) => Ok(()),
                Ok(s) if s.status == ServerStatus::Deleted => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Deletes every pool server `cloud` lists, for good. On a Nova that
/// soft-deletes (`reclaim_instance_interval` above zero) a delete leaves a
/// server SOFT_DELETED, its ports bound until the reclaim, and a member's
/// forceDelete may be refused: `admin`, an admin's client, force-deletes
/// those, and those the daemon left SOFT_DELETED (`admin` is the
/// [`E2E_CLOUD`] user's client), so that no run leaves ports behind for
/// the next.
async fn delete_all_pool_servers(cloud: &OpenStackCloud, admin: &OpenStackCloud) {
    let servers = cloud.list_pool_servers().await.expect("list pool servers");
    for server in &servers {
        cloud
            .delete_server(&server.id)
            .await
            .unwrap_or_else(|e| panic!("delete {}: {e}", server.id));
    }
    for server in &servers {
        wait_server_gone(cloud, &server.id).await;
        force_delete_if_soft_deleted(admin, &server.id).await;
    }
    // Those the daemon deleted (a member's forceDelete refused) are in no
    // listing above: Nova lists SOFT_DELETED servers only when asked by
    // status. Every project's: the member test's servers too.
    let tag = &admin.settings().server_tag;
    for id in soft_deleted_servers(E2E_CLOUD, tag).await {
        force_delete_if_soft_deleted(admin, &id).await;
    }
}

/// Force-deletes `server_id` by `admin`'s client if Nova shows it
/// SOFT_DELETED, and waits until Nova answers 404 for it.
async fn force_delete_if_soft_deleted(admin: &OpenStackCloud, server_id: &str) {
    // Read by the admin's client first: its driver force-deletes a server
    // it has seen SOFT_DELETED, and sends a plain delete else.
    match admin.get_server(server_id).await {
        Ok(s) if s.status == ServerStatus::Deleted && !s.deleting => {
            admin
                .delete_server(server_id)
                .await
                .unwrap_or_else(|e| panic!("forceDelete {server_id}: {e}"));
            wait_server_deleted_for_good(admin, server_id).await;
        }
        Ok(_) | Err(CloudError::NotFound(_)) => {}
        Err(e) => panic!("read {server_id} after its delete: {e}"),
    }
}

/// Waits until Nova answers 404 for `server_id`: SOFT_DELETED is not gone.
async fn wait_server_deleted_for_good(cloud: &OpenStackCloud, server_id: &str) {
    eventually(
        &format!("server {server_id} to be deleted for good"),
        PATIENCE,
        || async {
            match cloud.get_server(server_id).await {
                Err(CloudError::NotFound(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// `warmpool_leaks_deleted_total` from the daemon's /metrics, summed over
/// its pool labels; 0 before the first leak (no series yet).
async fn leaks_deleted(metrics_url: &str) -> f64 {
    let (status, _, body) = support::http_get(metrics_url).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| {
            l.strip_prefix("warmpool_leaks_deleted_total")
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unreadable sample {l:?}"))
        })
        .sum()
}
