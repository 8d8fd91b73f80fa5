//! The in-process face against calibration.md and the `Cloud` contract, on a
//! paused tokio clock (plus one real-time test for the TCP greeting).

use cloudsim::{AzConfig, RateLimit, SimCloud, SimConfig, SimNetwork};
use pool_manager::cloud::{
    Cloud, CloudError, NetworkShare, NewPortSpec, NewVolumeSpec, QuotaLeft, ServerSpec,
    ServerStatus, VolumeOwner, VolumeStatus, META_POOL, META_TENANT,
};
use pool_manager::model::PoolKey;
use pool_manager::probe::{MysqlGreetingProbe, Probe, ProbeError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

fn spec(name: &str, flavor: &str, az: &str) -> ServerSpec {
    let pool = PoolKey::new(flavor, az);
    let mut metadata = BTreeMap::new();
    metadata.insert(META_POOL.to_string(), pool.to_string());
    ServerSpec {
        name: name.into(),
        pool,
        image: "mysql-8.0".into(),
        metadata,
    }
}

fn small(name: &str) -> ServerSpec {
    spec(name, "db.small", "az1")
}

fn one_host() -> SimConfig {
    SimConfig {
        availability_zones: vec![AzConfig::new("az1", 1), AzConfig::new("az2", 1)],
        ..SimConfig::deterministic()
    }
}

fn volume_spec(name: &str, az: &str) -> NewVolumeSpec {
    NewVolumeSpec {
        name: name.into(),
        size_gib: 10,
        volume_type: None,
        availability_zone: az.into(),
        metadata: Default::default(),
    }
}

fn port_spec(name: &str, fixed_ip: Option<&str>) -> NewPortSpec {
    NewPortSpec {
        name: name.into(),
        network_id: "net-tenant".into(),
        subnet_id: None,
        fixed_ip: fixed_ip.map(Into::into),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

async fn at(t0: Instant, s: f64) {
    sleep_until(t0 + secs(s)).await;
}

/// A server that is ACTIVE (the Nova phase of a lone boot is 25 s).
async fn active_server(cloud: &SimCloud, name: &str, az: &str) -> String {
    let id = cloud
        .create_server(&spec(name, "db.small", az))
        .await
        .unwrap()
        .id;
    tokio::time::sleep(secs(200.0)).await;
    assert_eq!(
        cloud.get_server(&id).await.unwrap().status,
        ServerStatus::Active
    );
    id
}

#[test]
fn handles_are_send_sync_and_coerce_to_dyn_cloud() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SimCloud>();
    send_sync::<cloudsim::Faults>();
    send_sync::<cloudsim::SimProbe>();
    let cloud: Arc<dyn Cloud> = SimCloud::new(SimConfig::deterministic());
    let _probe: Arc<dyn Probe> = Arc::new(cloudsim::SimProbe::new(&SimCloud::new(
        SimConfig::deterministic(),
    )));
    drop(cloud);
}

#[tokio::test(start_paused = true)]
async fn lone_boot_is_active_at_t_alone_and_mysqld_ready_at_90s() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let probe = cloud.probe();
    let t0 = Instant::now();
    let s = cloud.create_server(&small("a")).await.unwrap();
    assert_eq!(s.status, ServerStatus::Build);
    assert_eq!(s.mysql_addr, None);
    assert_eq!(Instant::now(), t0, "create_server returns at once");

    at(t0, 24.9).await;
    assert_eq!(
        cloud.get_server(&s.id).await.unwrap().status,
        ServerStatus::Build
    );
    at(t0, 25.0).await;
    let active = cloud.get_server(&s.id).await.unwrap();
    assert_eq!(active.status, ServerStatus::Active);
    let addr = active.mysql_addr.expect("an ACTIVE server has an address");
    assert!(matches!(
        probe.probe(addr).await,
        Err(ProbeError::Connect { .. })
    ));

    at(t0, 89.9).await;
    assert!(probe.probe(addr).await.is_err());
    at(t0, 90.0).await;
    assert_eq!(probe.probe(addr).await.unwrap(), "8.0.36-cloudsim");
    let sim = cloud.server(&s.id).unwrap();
    assert!(sim.mysqld_ready);
    assert_eq!(sim.active_at, Some(t0 + secs(25.0)));
    assert_eq!(sim.mysqld_ready_at, Some(t0 + secs(90.0)));
    assert_eq!(sim.host.as_deref(), Some("az1-compute-0"));
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_ten_percent() {
    let cloud = SimCloud::new(SimConfig {
        listeners: false,
        ..SimConfig::default()
    });
    let t0 = Instant::now();
    for i in 0..8 {
        // two AZs x 4 hosts: every boot alone on its host
        let az = if i % 2 == 0 { "az1" } else { "az2" };
        cloud
            .create_server(&spec(&format!("s{i}"), "db.small", az))
            .await
            .unwrap();
    }
    for s in cloud.servers() {
        let nova = (s.active_at.unwrap() - t0).as_secs_f64();
        assert!((22.5..=27.5).contains(&nova), "nova phase {nova}");
        let ready = (s.mysqld_ready_at.unwrap() - t0).as_secs_f64();
        assert!((81.0..=99.0).contains(&ready), "ready at {ready}");
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_boots_on_one_host_take_t_alone_plus_k_n() {
    let cloud = SimCloud::new(one_host());
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            cloud
                .create_server(&small(&format!("s{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    // The i-th boot shares the host with i boots still in BUILD.
    for (i, id) in ids.iter().enumerate() {
        let s = cloud.server(id).unwrap();
        assert_eq!(
            s.active_at,
            Some(t0 + secs(25.0 + 4.5 * i as f64)),
            "boot {i}"
        );
    }
    // Calibration: first ACTIVE at 25 s, last at about 200 s.
    at(t0, 200.0).await;
    assert_eq!(
        cloud.get_server(&ids[39]).await.unwrap().status,
        ServerStatus::Build
    );
    at(t0, 200.5).await;
    assert_eq!(
        cloud.get_server(&ids[39]).await.unwrap().status,
        ServerStatus::Active
    );
    assert_eq!(cloud.hosts()[0].building, 0);
    // Once the host is idle again, a boot is back to T_alone.
    let t1 = Instant::now();
    let late = cloud.create_server(&small("late")).await.unwrap().id;
    assert_eq!(
        cloud.server(&late).unwrap().active_at,
        Some(t1 + secs(25.0))
    );
}

#[tokio::test(start_paused = true)]
async fn a_host_serves_one_boot_per_k_and_more_concurrency_only_adds_latency() {
    let cloud = SimCloud::new(one_host());
    let t0 = Instant::now();
    // One boot every k = 4.5 s: about 6 are in BUILD at a time, yet none
    // waits, because the serialized section is free when each arrives.
    for i in 0..20 {
        at(t0, 4.5 * i as f64).await;
        let placed = Instant::now();
        let id = cloud
            .create_server(&small(&format!("paced{i}")))
            .await
            .unwrap()
            .id;
        assert!(cloud.hosts()[0].building > 1 || i == 0);
        assert_eq!(
            cloud.server(&id).unwrap().active_at,
            Some(placed + secs(25.0)),
            "paced boot {i}"
        );
    }
    // Twice that rate: the host still finishes one per 4.5 s, so each boot
    // waits 2.25 s longer than the one before.
    let t1 = t0 + secs(200.0);
    at(t0, 200.0).await;
    let mut actives = Vec::new();
    for i in 0..20 {
        at(t1, 2.25 * i as f64).await;
        let id = cloud
            .create_server(&small(&format!("fast{i}")))
            .await
            .unwrap()
            .id;
        actives.push(cloud.server(&id).unwrap().active_at.unwrap());
    }
    for (i, pair) in actives.windows(2).enumerate() {
        assert_eq!(
            pair[1] - pair[0],
            secs(4.5),
            "boot {} of the fast batch",
            i + 1
        );
    }
    assert_eq!(
        actives[19] - (t1 + secs(2.25 * 19.0)),
        secs(25.0 + 2.25 * 19.0)
    );
}

#[tokio::test(start_paused = true)]
async fn boots_go_to_the_least_loaded_host_of_their_az() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            cloud
                .create_server(&small(&format!("s{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let hosts: Vec<_> = ids
        .iter()
        .map(|id| cloud.server(id).unwrap().host.unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "az1-compute-0",
            "az1-compute-1",
            "az1-compute-2",
            "az1-compute-3",
            "az1-compute-0"
        ]
    );
    // The first four boot alone; the fifth shares host 0 with one boot.
    assert_eq!(
        cloud.server(&ids[3]).unwrap().active_at,
        Some(t0 + secs(25.0))
    );
    assert_eq!(
        cloud.server(&ids[4]).unwrap().active_at,
        Some(t0 + secs(29.5))
    );
    let loads = cloud.hosts();
    assert_eq!(loads.len(), 8);
    assert_eq!(loads[0].building, 2);
    assert_eq!(loads[4].servers, 0, "az2 untouched");
}

#[tokio::test(start_paused = true)]
async fn iops_throttling_stretches_both_phases() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let t0 = Instant::now();
    let fast = cloud.create_server(&small("fast")).await.unwrap().id;
    cloud.faults().set_iops_throttled(true);
    assert!(cloud.faults().iops_throttled());
    let slow = cloud.create_server(&small("slow")).await.unwrap().id;
    let fast = cloud.server(&fast).unwrap();
    let slow = cloud.server(&slow).unwrap();
    assert_eq!(fast.mysqld_ready_at, Some(t0 + secs(90.0)));
    // Nova x2.5, mysqld x4: 62.5 s + 260 s.
    assert_eq!(slow.active_at, Some(t0 + secs(62.5)));
    assert_eq!(slow.mysqld_ready_at, Some(t0 + secs(322.5)));

    let throttled = SimCloud::new(SimConfig {
        iops_throttled: true,
        ..SimConfig::deterministic()
    });
    let t1 = Instant::now();
    let id = throttled.create_server(&small("x")).await.unwrap().id;
    assert_eq!(
        throttled.server(&id).unwrap().mysqld_ready_at,
        Some(t1 + secs(322.5))
    );
}

#[tokio::test(start_paused = true)]
async fn time_scale_multiplies_latencies() {
    let cloud = SimCloud::new(SimConfig {
        time_scale: 0.05,
        ..SimConfig::deterministic()
    });
    let t0 = Instant::now();
    let id = cloud.create_server(&small("a")).await.unwrap().id;
    let s = cloud.server(&id).unwrap();
    assert_eq!(s.active_at, Some(t0 + secs(1.25)));
    assert_eq!(s.mysqld_ready_at, Some(t0 + secs(4.5)));
    assert_eq!(cloud.scaled(secs(20.0)), secs(1.0));
}

#[tokio::test(start_paused = true)]
async fn unknown_flavor_image_or_az_is_fatal() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let err = cloud
        .create_server(&spec("a", "db.huge", "az1"))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Fatal(_)), "{err:?}");
    let mut bad_image = small("b");
    bad_image.image = "postgres".into();
    assert!(matches!(
        cloud.create_server(&bad_image).await,
        Err(CloudError::Fatal(_))
    ));
    assert!(matches!(
        cloud.create_server(&spec("c", "db.small", "az9")).await,
        Err(CloudError::Fatal(_))
    ));
    assert!(matches!(
        cloud.create_volume(&volume_spec("v", "az9")).await,
        Err(CloudError::Fatal(_))
    ));
    assert!(cloud.servers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn quotas_are_enforced_at_create() {
    let mut cfg = SimConfig::deterministic();
    cfg.quotas.max_instances = 2;
    cfg.quotas.max_volumes = 1;
    // The two servers' own ports and one more.
    cfg.quotas.max_ports = 3;
    let cloud = SimCloud::new(cfg);
    let a = cloud.create_server(&small("a")).await.unwrap().id;
    cloud.create_server(&small("b")).await.unwrap();
    assert!(matches!(
        cloud.create_server(&small("c")).await,
        Err(CloudError::QuotaExceeded(_))
    ));
    // A server being deleted still counts until it is gone.
    cloud.delete_server(&a).await.unwrap();
    assert!(matches!(
        cloud.create_server(&small("c")).await,
        Err(CloudError::QuotaExceeded(_))
    ));
    tokio::time::sleep(secs(2.0)).await;
    cloud.create_server(&small("c")).await.unwrap();

    cloud
        .create_volume(&volume_spec("v1", "az1"))
        .await
        .unwrap();
    assert!(matches!(
        cloud.create_volume(&volume_spec("v2", "az1")).await,
        Err(CloudError::QuotaExceeded(_))
    ));
    cloud.create_port(&port_spec("p1", None)).await.unwrap();
    assert!(matches!(
        cloud.create_port(&port_spec("p2", None)).await,
        Err(CloudError::QuotaExceeded(_))
    ));
}

/// Nova makes a port for each server it boots (unnamed, on the server's
/// network, bound to it), and it counts against the port quota as ports
/// made through Neutron do, until the server is gone. A boot that finds no
/// port left is refused in Nova's words, a port create in Neutron's.
#[tokio::test(start_paused = true)]
async fn each_server_takes_a_port_of_the_quota_until_it_is_gone() {
    let mut cfg = SimConfig::deterministic();
    cfg.quotas.max_ports = 3;
    let cloud = SimCloud::new(cfg);
    let a = cloud.create_server(&small("a")).await.unwrap().id;
    let own = cloud.server_ports();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].name, "");
    assert_eq!(own[0].device_id.as_deref(), Some(a.as_str()));
    assert!(
        cloud.ports().is_empty(),
        "only Neutron's creates are listed"
    );
    // A server's own port, and the tenant's it takes when sold.
    let h = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(h.servers, Some(1), "{h:?}");
    assert_eq!(h.limited_by.as_deref(), Some("ports: 1 of 3 used"));
    assert!(h.quotas.contains(&QuotaLeft::new("ports", 2, 2)), "{h:?}");

    // A look-up by name finds the port made with that name alone.
    let p1 = cloud.create_port(&port_spec("p1", None)).await.unwrap();
    let found = cloud.find_ports_by_name("p1").await.unwrap();
    assert_eq!(found.iter().map(|p| &p.id).collect::<Vec<_>>(), [&p1.id]);
    cloud.create_server(&small("b")).await.unwrap();
    assert!(matches!(
        cloud.create_server(&small("c")).await,
        Err(CloudError::QuotaExceeded(m)) if m == "Maximum number of ports exceeded"
    ));
    assert!(matches!(
        cloud.create_port(&port_spec("p2", None)).await,
        Err(CloudError::QuotaExceeded(m)) if m == "Quota exceeded for resources: ['port']."
    ));
    assert_eq!(
        cloud.boot_headroom("db.small").await.unwrap().servers,
        Some(0)
    );

    // Deleted with its server, once the server is gone.
    cloud.delete_server(&a).await.unwrap();
    assert_eq!(cloud.server_ports().len(), 2);
    tokio::time::sleep(secs(2.0)).await;
    assert_eq!(cloud.server_ports().len(), 1);
    cloud.create_server(&small("c")).await.unwrap();
}

/// The headroom a flavor's quota leaves, as the driver reads Nova's
/// `/limits`: room while the project has some, `beyond_quota` when one
/// server needs more than a quota allows in all (an instances quota of 0
/// too, as Nova's answer reads).
#[tokio::test(start_paused = true)]
async fn boot_headroom_names_the_binding_quota_and_a_flavor_beyond_it() {
    let mut cfg = SimConfig::deterministic();
    cfg.quotas.max_instances = 3;
    cfg.max_cores = Some(20);
    let cloud = SimCloud::new(cfg.clone());
    cloud.create_server(&small("a")).await.unwrap();
    let h = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(h.servers, Some(2), "{h:?}");
    assert_eq!(h.limited_by.as_deref(), Some("instances: 1 of 3 used"));
    assert!(!h.beyond_quota);
    assert_eq!(
        h.quotas,
        [
            QuotaLeft::new("instances", 2, 1),
            QuotaLeft::new("cores", 19, 1)
        ]
    );

    cfg.quotas.max_instances = 0;
    let cloud = SimCloud::new(cfg);
    let h = cloud.boot_headroom("db.small").await.unwrap();
    assert!(h.beyond_quota, "{h:?}");
    assert_eq!(h.servers, Some(0));
    assert_eq!(
        h.limited_by.as_deref(),
        Some("instances: one db.small server needs 1, the quota is 0")
    );
}

/// A volume created through the face is in the cloud user's own project
/// (warmpool's), as Cinder creates in the token's project, whatever tenant
/// it is for; its metadata is kept and shown.
#[tokio::test(start_paused = true)]
async fn a_created_volume_is_the_users_and_keeps_its_metadata() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let spec = NewVolumeSpec {
        metadata: BTreeMap::from([(META_TENANT.into(), "tenant-a".into())]),
        ..volume_spec("data", "az1")
    };
    let created = cloud.create_volume(&spec).await.unwrap();
    assert_eq!(created.owner, VolumeOwner::Warmpool);
    assert_eq!(created.tagged_tenant(), Some("tenant-a"));
    let read = cloud.get_volume(&created.id).await.unwrap();
    assert_eq!(
        (read.owner, read.metadata),
        (VolumeOwner::Warmpool, spec.metadata)
    );
}

/// A Cinder zone whose volume services are all down or disabled: the zone
/// check refuses it, naming it unavailable; a volume created there anyway
/// ends in `error` (Cinder's API takes the zone, its scheduler finds no
/// backend); reopened, it takes volumes again.
#[tokio::test(start_paused = true)]
async fn a_closed_volume_zone_is_unavailable_and_its_new_volumes_fail() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let az2 = PoolKey::new("db.small", "az2");
    cloud.close_volume_zone("az2");
    let e = cloud.check_volume_zone(&az2).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("'az2' is unavailable")),
        "{e:?}"
    );
    let v = cloud
        .create_volume(&volume_spec("data", "az2"))
        .await
        .unwrap();
    tokio::time::sleep(secs(3.0)).await;
    assert_eq!(
        cloud.get_volume(&v.id).await.unwrap().status,
        VolumeStatus::Error
    );
    cloud.reopen_volume_zone("az2");
    cloud.check_volume_zone(&az2).await.unwrap();
}

/// Nova attaches a volume of another zone unless `[cinder]
/// cross_az_attach = False`; then it refuses with a 400 warmpool's driver
/// reads as `Fatal` (the request's fault), which the in-process face
/// answers alike.
#[tokio::test(start_paused = true)]
async fn a_volume_of_another_zone_attaches_unless_cross_az_attach_is_off() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let az2 = cloud.create_volume_for_test("tenant", "az2", 20);
    cloud.attach_volume(&server, &az2).await.unwrap();
    tokio::time::sleep(secs(2.0)).await;
    assert_eq!(
        cloud.get_volume(&az2).await.unwrap().attached_to,
        vec![server.clone()]
    );

    let strict = SimCloud::new(SimConfig {
        cross_az_attach: false,
        ..SimConfig::deterministic()
    });
    let server = active_server(&strict, "a", "az1").await;
    let az2 = strict.create_volume_for_test("tenant", "az2", 20);
    let err = strict.attach_volume(&server, &az2).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Fatal(m) if m == &format!(
            "Invalid volume: Instance {server} and volume {az2} are not in the same availability_zone. Instance is in az1. Volume is in az2"
        )),
        "{err:?}"
    );
    assert_eq!(
        strict.get_volume(&az2).await.unwrap().status,
        VolumeStatus::Available
    );
}

/// With networks configured, a port create is checked against them as
/// Neutron checks it, and refused as warmpool's driver reads Neutron's
/// answers: an unknown network NotFound (404), a subnet of another network
/// or an address its subnet cannot give (outside it, or its network or
/// broadcast address) Fatal (400).
#[tokio::test(start_paused = true)]
async fn a_port_create_is_checked_against_the_configured_networks() {
    let cloud = SimCloud::new(SimConfig {
        networks: vec![
            SimNetwork::new(
                "net-tenant",
                "subnet-tenant",
                "10.0.0.0/16".parse().unwrap(),
            ),
            SimNetwork::new("net-other", "subnet-other", "10.1.0.0/24".parse().unwrap()),
        ],
        ..SimConfig::deterministic()
    });
    let on = |network: &str, subnet: Option<&str>, ip: Option<&str>| NewPortSpec {
        name: "p".into(),
        network_id: network.into(),
        subnet_id: subnet.map(Into::into),
        fixed_ip: ip.map(Into::into),
    };
    let err = cloud
        .create_port(&on("net-tenat", None, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::NotFound(m) if m == "Network net-tenat could not be found."),
        "{err:?}"
    );
    let err = cloud
        .create_port(&on("net-tenant", Some("subnet-other"), None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::Fatal(m) if m == "Invalid input for operation: Failed to create port on network net-tenant, because fixed_ips included invalid subnet subnet-other."),
        "{err:?}"
    );
    for ip in ["10.1.0.7", "10.0.0.0", "10.0.255.255"] {
        let err = cloud
            .create_port(&on("net-tenant", None, Some(ip)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CloudError::Fatal(m) if m == &format!("IP address {ip} is not a valid IP for the specified subnet.")),
            "{ip}: {err:?}"
        );
    }
    assert!(cloud.ports().is_empty(), "a refused create made a port");
    let port = cloud
        .create_port(&on("net-tenant", Some("subnet-tenant"), Some("10.0.0.1")))
        .await
        .unwrap();
    assert_eq!(port.ip_address.as_deref(), Some("10.0.0.1"));
    let port = cloud
        .create_port(&on("net-other", None, None))
        .await
        .unwrap();
    let ip: std::net::Ipv4Addr = port.ip_address.unwrap().parse().unwrap();
    assert!(ip.octets()[..3] == [10, 1, 0], "{ip}");
}

/// `member_port_policy`, as the driver reads Neutron's 403s: a port
/// create setting an address on another project's network is
/// `PolicyRefused` in Neutron's words (the rule naming the subnet too when
/// the create names it), one without an address or on warmpool's own
/// network is made; a port bound to a server may not be deleted (`Fatal`)
/// until Nova has unbound it.
#[tokio::test(start_paused = true)]
async fn a_member_may_set_no_address_on_another_projects_network_nor_delete_a_bound_port() {
    let cloud = SimCloud::new(SimConfig {
        networks: vec![
            SimNetwork::new(
                "net-tenant",
                "subnet-tenant",
                "10.0.0.0/16".parse().unwrap(),
            ),
            SimNetwork::new(
                "net-theirs",
                "subnet-theirs",
                "10.1.0.0/24".parse().unwrap(),
            )
            .of_project("tenant")
            .shared_with(NetworkShare::Warmpool),
        ],
        member_port_policy: true,
        ..SimConfig::deterministic()
    });
    let on = |network: &str, subnet: Option<&str>, ip: Option<&str>| NewPortSpec {
        name: "p".into(),
        network_id: network.into(),
        subnet_id: subnet.map(Into::into),
        fixed_ip: ip.map(Into::into),
    };
    let rule = |rules: &str| {
        format!("(rule:create_port and (rule:create_port:fixed_ips and ({rules}))) is disallowed by policy")
    };
    let err = cloud
        .create_port(&on("net-theirs", None, Some("10.1.0.7")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CloudError::PolicyRefused(rule("rule:create_port:fixed_ips:ip_address"))
    );
    let err = cloud
        .create_port(&on("net-theirs", Some("subnet-theirs"), Some("10.1.0.7")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CloudError::PolicyRefused(rule(
            "rule:create_port:fixed_ips:ip_address and rule:create_port:fixed_ips:subnet_id"
        ))
    );
    assert!(cloud.ports().is_empty(), "a refused create made a port");
    cloud
        .create_port(&on("net-theirs", Some("subnet-theirs"), None))
        .await
        .unwrap();
    cloud
        .create_port(&on("net-tenant", None, Some("10.0.0.7")))
        .await
        .unwrap();

    let server = active_server(&cloud, "a", "az1").await;
    let port = cloud
        .create_port(&on("net-theirs", None, None))
        .await
        .unwrap();
    cloud.attach_port(&server, &port.id).await.unwrap();
    tokio::time::sleep(secs(2.0)).await;
    let err = cloud.delete_port(&port.id).await.unwrap_err();
    assert_eq!(
        err,
        CloudError::Fatal("rule:delete_port is disallowed by policy".into())
    );
    cloud.detach_port(&server, &port.id).await.unwrap();
    tokio::time::sleep(secs(2.0)).await;
    cloud.delete_port(&port.id).await.unwrap();
}

/// Cinder keeps quota per project: tenants' volumes (of other projects)
/// take nothing of the cloud user's gigabytes nor volumes.
#[tokio::test(start_paused = true)]
async fn other_projects_volumes_take_none_of_the_projects_quota() {
    let cloud = SimCloud::new(SimConfig {
        quotas: cloudsim::Quotas {
            max_gigabytes: 1000,
            max_volumes: 2,
            ..cloudsim::Quotas::default()
        },
        ..SimConfig::deterministic()
    });
    cloud.create_volume_for_test("tenant", "az1", 995);
    cloud.create_volume_for_test("tenant", "az1", 1);
    let spec = NewVolumeSpec {
        size_gib: 10,
        ..volume_spec("data", "az1")
    };
    cloud.create_volume(&spec).await.unwrap();
    cloud.create_volume(&spec).await.unwrap();
    let err = cloud.create_volume(&spec).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::QuotaExceeded(m) if m.contains("Maximum number of volumes allowed (2)")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn volume_lifecycle_and_attach_fencing() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let other = active_server(&cloud, "b", "az1").await;

    // Created through the API: creating, then available after ~3 s.
    let v = cloud
        .create_volume(&volume_spec("data", "az1"))
        .await
        .unwrap();
    assert_eq!(v.status, VolumeStatus::Creating);
    assert!(matches!(
        cloud.attach_volume(&server, &v.id).await,
        Err(CloudError::Conflict(_))
    ));
    tokio::time::sleep(secs(3.0)).await;
    assert_eq!(
        cloud.get_volume(&v.id).await.unwrap().status,
        VolumeStatus::Available
    );
    assert_eq!(cloud.find_volumes_by_name("data").await.unwrap().len(), 1);
    assert!(cloud.find_volumes_by_name("dat").await.unwrap().is_empty());

    // Attach: accepted at once, in-use after ~2 s.
    let t0 = Instant::now();
    cloud.attach_volume(&server, &v.id).await.unwrap();
    assert_eq!(
        cloud.get_volume(&v.id).await.unwrap().status,
        VolumeStatus::Attaching
    );
    assert!(cloud
        .get_server(&server)
        .await
        .unwrap()
        .attached_volumes
        .is_empty());
    // Fencing: never attach a volume that is not available.
    assert!(matches!(
        cloud.attach_volume(&other, &v.id).await,
        Err(CloudError::Conflict(_))
    ));
    at(t0, 2.0).await;
    let in_use = cloud.get_volume(&v.id).await.unwrap();
    assert_eq!(in_use.status, VolumeStatus::InUse);
    assert_eq!(in_use.attached_to, vec![server.clone()]);
    assert_eq!(
        cloud.get_server(&server).await.unwrap().attached_volumes,
        vec![v.id.clone()]
    );
    assert!(matches!(
        cloud.attach_volume(&other, &v.id).await,
        Err(CloudError::Conflict(_))
    ));
    assert!(matches!(
        cloud.delete_volume(&v.id).await,
        Err(CloudError::Conflict(_))
    ));

    // A tenant volume in use by some other VM.
    let tenant = cloud.create_volume_for_test("tenant", "az1", 20);
    assert_eq!(
        cloud.get_volume(&tenant).await.unwrap().owner,
        VolumeOwner::Project("tenant".into())
    );
    let elsewhere = cloud.attach_volume_elsewhere(&tenant).unwrap();
    assert_eq!(
        cloud.get_volume(&tenant).await.unwrap().attached_to,
        vec![elsewhere]
    );
    let err = cloud.attach_volume(&other, &tenant).await.unwrap_err();
    assert!(matches!(err, CloudError::Conflict(_)), "{err:?}");

    // Unknown ids, a server still building.
    assert!(matches!(
        cloud.attach_volume(&other, "no-such-volume").await,
        Err(CloudError::NotFound(_))
    ));
    let fresh = cloud.create_volume_for_test("tenant", "az1", 20);
    assert!(matches!(
        cloud.attach_volume("no-such-server", &fresh).await,
        Err(CloudError::NotFound(_))
    ));
    let building = cloud.create_server(&small("c")).await.unwrap().id;
    assert!(matches!(
        cloud.attach_volume(&building, &fresh).await,
        Err(CloudError::Conflict(_))
    ));
    assert_eq!(
        cloud.get_volume(&fresh).await.unwrap().status,
        VolumeStatus::Available,
        "a refused attach leaves the volume alone"
    );

    // Detach: detaching, then available; detaching again is a no-op.
    let t1 = Instant::now();
    cloud.detach_volume(&server, &v.id).await.unwrap();
    assert_eq!(
        cloud.get_volume(&v.id).await.unwrap().status,
        VolumeStatus::Detaching
    );
    cloud.detach_volume(&server, &v.id).await.unwrap();
    cloud.detach_volume(&other, &v.id).await.unwrap();
    cloud
        .detach_volume(&server, "no-such-volume")
        .await
        .unwrap();
    at(t1, 2.0).await;
    let back = cloud.get_volume(&v.id).await.unwrap();
    assert_eq!(back.status, VolumeStatus::Available);
    assert!(back.attached_to.is_empty());
    cloud.attach_volume(&other, &v.id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ports_get_addresses_and_attach() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let t0 = Instant::now();
    let p1 = cloud.create_port(&port_spec("p1", None)).await.unwrap();
    assert_eq!(
        Instant::now() - t0,
        secs(0.5),
        "Neutron port create is synchronous"
    );
    let p2 = cloud.create_port(&port_spec("p2", None)).await.unwrap();
    let ip1 = p1.ip_address.clone().unwrap();
    assert!(ip1.starts_with("10."), "{ip1}");
    assert_ne!(p1.ip_address, p2.ip_address);
    assert!(matches!(
        cloud.create_port(&port_spec("p3", Some(&ip1))).await,
        Err(CloudError::Conflict(_))
    ));
    let fixed = cloud
        .create_port(&port_spec("p3", Some("10.9.9.9")))
        .await
        .unwrap();
    assert_eq!(fixed.ip_address.as_deref(), Some("10.9.9.9"));
    assert_eq!(cloud.find_ports_by_name("p3").await.unwrap(), vec![fixed]);
    assert!(cloud.find_ports_by_name("p").await.unwrap().is_empty());

    let t1 = Instant::now();
    cloud.attach_port(&server, &p1.id).await.unwrap();
    assert_eq!(cloud.get_port(&p1.id).await.unwrap().device_id, None);
    assert!(matches!(
        cloud.attach_port(&server, &p1.id).await,
        Err(CloudError::Conflict(_))
    ));
    at(t1, 1.5).await;
    assert_eq!(
        cloud.get_port(&p1.id).await.unwrap().device_id.as_deref(),
        Some(server.as_str())
    );
    assert_eq!(
        cloud.get_server(&server).await.unwrap().attached_ports,
        vec![p1.id.clone()]
    );
    assert!(matches!(
        cloud.attach_port(&server, "nope").await,
        Err(CloudError::NotFound(_))
    ));

    cloud.detach_port(&server, &p1.id).await.unwrap();
    assert!(cloud
        .get_server(&server)
        .await
        .unwrap()
        .attached_ports
        .is_empty());
    tokio::time::sleep(secs(1.0)).await;
    assert_eq!(cloud.get_port(&p1.id).await.unwrap().device_id, None);
    cloud.delete_port(&p1.id).await.unwrap();
    cloud.delete_port(&p1.id).await.unwrap();
    assert!(matches!(
        cloud.get_port(&p1.id).await,
        Err(CloudError::NotFound(_))
    ));
    // Its address is free again.
    cloud
        .create_port(&port_spec("again", Some(&ip1)))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn deletes_of_gone_objects_are_idempotent_and_server_delete_releases_attachments() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let vol = cloud.create_volume_for_test("tenant", "az1", 10);
    let port = cloud.create_port(&port_spec("p", None)).await.unwrap().id;
    cloud.attach_volume(&server, &vol).await.unwrap();
    cloud.attach_port(&server, &port).await.unwrap();
    tokio::time::sleep(secs(5.0)).await;

    let t0 = Instant::now();
    cloud.delete_server(&server).await.unwrap();
    cloud.delete_server(&server).await.unwrap();
    cloud.delete_server("never-existed").await.unwrap();
    // As Nova shows it until the host is done: the status it had, and
    // task_state `deleting`; listed too.
    let going = cloud.get_server(&server).await.unwrap();
    assert_eq!(going.status, ServerStatus::Active);
    assert!(going.deleting && going.is_going() && !going.is_usable());
    assert!(cloud.servers().is_empty(), "being deleted is not live");
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].id == server && listed[0].deleting);
    // Cinder's attachment goes last: in use until the server is gone.
    let v = cloud.get_volume(&vol).await.unwrap();
    assert_eq!(v.status, VolumeStatus::InUse);
    assert_eq!(v.attached_to, vec![server.clone()]);
    at(t0, 2.0).await;
    assert!(matches!(
        cloud.get_server(&server).await,
        Err(CloudError::NotFound(_))
    ));
    assert!(cloud.list_pool_servers().await.unwrap().is_empty());
    cloud.delete_server(&server).await.unwrap();
    // The volume and port survive, released.
    let v = cloud.get_volume(&vol).await.unwrap();
    assert_eq!(v.status, VolumeStatus::Available);
    assert!(v.attached_to.is_empty());
    assert_eq!(cloud.get_port(&port).await.unwrap().device_id, None);

    cloud.delete_volume(&vol).await.unwrap();
    // Cinder refuses a delete of a volume `deleting` (400 InvalidVolume,
    // which warmpool's driver reads as a Conflict).
    let again = cloud.delete_volume(&vol).await.unwrap_err();
    assert!(
        matches!(&again, CloudError::Conflict(m) if m.contains("status must be available or error")),
        "{again:?}"
    );
    assert_eq!(
        cloud.get_volume(&vol).await.unwrap().status,
        VolumeStatus::Other("deleting".into())
    );
    assert!(cloud.volumes().is_empty());
    tokio::time::sleep(secs(2.0)).await;
    assert!(matches!(
        cloud.get_volume(&vol).await,
        Err(CloudError::NotFound(_))
    ));
    cloud.delete_volume(&vol).await.unwrap();
    cloud.delete_port("never-existed").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn list_pool_servers_and_injected_leaks() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let pooled = cloud.create_server(&small("pooled")).await.unwrap().id;
    let mut plain = small("plain");
    plain.metadata.clear();
    cloud.create_server(&plain).await.unwrap();
    let key = PoolKey::new("db.medium", "az2");
    let leak = cloud.inject_leak(&key);

    let listed = cloud.list_pool_servers().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [pooled.as_str(), leak.as_str()]);
    let leaked = &listed[1];
    assert_eq!(leaked.status, ServerStatus::Active);
    assert_eq!(leaked.availability_zone, "az2");
    assert_eq!(leaked.metadata[META_POOL], "db.medium@az2");
    assert!(leaked
        .metadata
        .contains_key(pool_manager::cloud::META_INSTANCE));
    assert!(cloud
        .probe()
        .probe(leaked.mysql_addr.unwrap())
        .await
        .is_ok());
    assert_eq!(cloud.servers().len(), 3);
    assert_eq!(
        cloud.call_counts().get("list_pool_servers"),
        Some(&1),
        "inspection and injection are not API calls"
    );
    assert_eq!(cloud.total_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn boot_faults_fire_exactly_n_times() {
    let cloud = SimCloud::new(one_host());
    let faults = cloud.faults();
    faults.error_next_boots(2, "NoValidHost");
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            cloud
                .create_server(&small(&format!("s{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    at(t0, 3.0).await;
    for id in &ids[..2] {
        let s = cloud.get_server(id).await.unwrap();
        assert_eq!(s.status, ServerStatus::Error);
        assert_eq!(s.fault.as_deref(), Some("NoValidHost"));
        assert_eq!(s.mysql_addr, None);
    }
    let third = cloud.get_server(&ids[2]).await.unwrap();
    assert_eq!(third.status, ServerStatus::Build);
    assert_eq!(third.fault, None);
    // Failed scheduling never occupied the host: the third boot ran alone.
    at(t0, 25.0).await;
    assert_eq!(
        cloud.get_server(&ids[2]).await.unwrap().status,
        ServerStatus::Active
    );

    faults.mysqld_never_starts_next(1);
    let t1 = Instant::now();
    let dead = cloud.create_server(&small("dead")).await.unwrap().id;
    let alive = cloud.create_server(&small("alive")).await.unwrap().id;
    at(t1, 1000.0).await;
    let probe = cloud.probe();
    let dead = cloud.get_server(&dead).await.unwrap();
    assert_eq!(dead.status, ServerStatus::Active, "boots to ACTIVE");
    assert!(probe.probe(dead.mysql_addr.unwrap()).await.is_err());
    let alive = cloud.get_server(&alive).await.unwrap();
    assert!(probe.probe(alive.mysql_addr.unwrap()).await.is_ok());
    let next = cloud.create_server(&small("next")).await.unwrap().id;
    assert!(cloud.server(&next).unwrap().mysqld_ready_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn attach_and_api_faults_fire_exactly_n_times() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let faults = cloud.faults();
    let server = active_server(&cloud, "a", "az1").await;
    let v = cloud.create_volume_for_test("tenant", "az1", 10);

    faults.fail_next_volume_attach(1);
    assert!(matches!(
        cloud.attach_volume(&server, &v).await,
        Err(CloudError::Transient(_))
    ));
    assert_eq!(
        cloud.get_volume(&v).await.unwrap().status,
        VolumeStatus::Available
    );
    cloud.attach_volume(&server, &v).await.unwrap();

    faults.fail_next_port_attach(2);
    let p = cloud.create_port(&port_spec("p", None)).await.unwrap().id;
    for _ in 0..2 {
        assert!(matches!(
            cloud.attach_port(&server, &p).await,
            Err(CloudError::Transient(_))
        ));
    }
    cloud.attach_port(&server, &p).await.unwrap();

    let throttled = CloudError::Throttled {
        retry_after: Some(secs(1.0)),
        message: "slow down".into(),
        unavailable: false,
    };
    faults.api_errors_next(2, throttled.clone());
    assert_eq!(cloud.get_server(&server).await.unwrap_err(), throttled);
    assert_eq!(cloud.list_pool_servers().await.unwrap_err(), throttled);
    cloud.get_server(&server).await.unwrap();

    faults.api_errors_next(1, CloudError::Transient("HTTP 500".into()));
    assert!(matches!(
        cloud.create_server(&small("x")).await,
        Err(CloudError::Transient(_))
    ));
    assert_eq!(cloud.servers().len(), 1, "a failed call has no effect");

    faults.slow_calls(secs(5.0));
    let t0 = Instant::now();
    cloud.get_server(&server).await.unwrap();
    assert_eq!(Instant::now() - t0, secs(5.0));
    faults.clear();
    let t1 = Instant::now();
    cloud.get_server(&server).await.unwrap();
    assert_eq!(Instant::now(), t1);

    let counts = cloud.call_counts();
    assert_eq!(counts["attach_volume"], 2);
    assert_eq!(counts["attach_port"], 3);
    assert_eq!(counts["create_server"], 2);
    cloud.reset_call_counts();
    assert_eq!(cloud.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_method_fault_fails_only_that_methods_next_calls() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let faults = cloud.faults();
    let a = active_server(&cloud, "a", "az1").await;
    let b = active_server(&cloud, "b", "az1").await;
    let p = cloud.create_port(&port_spec("p", None)).await.unwrap().id;
    let throttled = CloudError::Throttled {
        retry_after: Some(secs(1.0)),
        message: "slow down".into(),
        unavailable: false,
    };

    faults.fail_next_calls_of("delete_server", 2, throttled.clone());
    faults.fail_next_calls_of("delete_port", 1, CloudError::Transient("HTTP 503".into()));
    // Other methods pass while those are armed.
    cloud.get_server(&a).await.unwrap();
    cloud.get_port(&p).await.unwrap();
    assert_eq!(cloud.delete_server(&a).await.unwrap_err(), throttled);
    assert_eq!(cloud.delete_server(&b).await.unwrap_err(), throttled);
    assert!(matches!(
        cloud.delete_port(&p).await,
        Err(CloudError::Transient(_))
    ));
    assert_eq!(cloud.servers().len(), 2, "a failed delete has no effect");
    assert_eq!(cloud.ports().len(), 1, "a failed delete has no effect");
    cloud.delete_server(&a).await.unwrap();
    cloud.delete_port(&p).await.unwrap();
    assert!(cloud.ports().is_empty());

    // Cleared with every other fault.
    faults.fail_next_calls_of("delete_server", 1, throttled);
    faults.clear();
    cloud.delete_server(&b).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn hang_after_calls_hangs_every_later_call() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let faults = cloud.faults();
    faults.hang_after_calls(2);
    let id = cloud.create_server(&small("a")).await.unwrap().id;
    cloud.get_server(&id).await.unwrap();
    let hung = tokio::time::timeout(secs(3600.0), cloud.get_server(&id)).await;
    assert!(hung.is_err(), "third call must hang");
    let hung = tokio::time::timeout(secs(3600.0), cloud.delete_server(&id)).await;
    assert!(hung.is_err(), "and every call after it");

    // Simulated crash: abort a task stuck in the cloud.
    let c = cloud.clone();
    let task = tokio::spawn(async move { c.create_server(&small("b")).await });
    tokio::time::sleep(secs(10.0)).await;
    assert!(!task.is_finished());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // A restarted process talks to a live cloud again.
    faults.clear_hang();
    cloud.get_server(&id).await.unwrap();
    assert_eq!(cloud.servers().len(), 1, "the hung create had no effect");
    assert_eq!(cloud.call_counts()["get_server"], 3);

    faults.hang_after_calls(0);
    assert!(tokio::time::timeout(secs(1.0), cloud.list_pool_servers())
        .await
        .is_err());
}

/// Held calls wait at the gate, counted, without effect, however long; calls
/// of other methods pass; a release lets the held ones and later ones go on,
/// and so does `clear`.
#[tokio::test(start_paused = true)]
async fn held_calls_wait_until_released() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let faults = cloud.faults();
    faults.hold_calls("create_server");
    let c = cloud.clone();
    let held = tokio::spawn(async move { c.create_server(&small("a")).await });
    tokio::time::sleep(secs(3600.0)).await;
    assert!(!held.is_finished());
    assert_eq!(cloud.call_counts()["create_server"], 1);
    assert!(
        cloud.servers().is_empty(),
        "a held create has no effect yet"
    );
    cloud.list_pool_servers().await.unwrap();

    faults.release_calls("create_server");
    let id = held.await.unwrap().unwrap().id;
    assert_eq!(cloud.servers().len(), 1);
    cloud.create_server(&small("b")).await.unwrap();

    faults.hold_calls("get_server");
    let c = cloud.clone();
    let held = tokio::spawn(async move { c.get_server(&id).await });
    tokio::time::sleep(secs(3600.0)).await;
    assert!(!held.is_finished());
    faults.clear();
    held.await.unwrap().unwrap();
}

/// The gap `hang_after_calls` leaves: a call the cloud carried out whose
/// answer the crashed caller never got.
#[tokio::test(start_paused = true)]
async fn hang_after_calls_take_effect_carries_out_every_later_call_unanswered() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let faults = cloud.faults();
    let mut hung = cloud.hung_calls();
    faults.hang_after_calls_take_effect(1);
    let kept = cloud.create_server(&small("a")).await.unwrap().id;

    let create = tokio::spawn({
        let c = cloud.clone();
        async move { c.create_server(&small("b")).await }
    });
    hung.wait_for(|n| *n == 1).await.unwrap();
    assert_eq!(cloud.servers().len(), 2, "the hung create took effect");
    // A port create takes its time before its effect, then hangs too.
    let port = tokio::spawn({
        let c = cloud.clone();
        async move { c.create_port(&port_spec("p", None)).await }
    });
    hung.wait_for(|n| *n == 2).await.unwrap();
    assert_eq!(cloud.ports().len(), 1, "the hung port create took effect");
    let deleted = tokio::time::timeout(secs(3600.0), cloud.delete_server(&kept)).await;
    assert!(deleted.is_err(), "every later call hangs");
    assert_eq!(cloud.servers().len(), 1, "after taking effect");
    // A call the gate refuses has nothing to carry out; it hangs all the same.
    faults.api_errors_next(1, CloudError::Transient("refused".into()));
    let refused = tokio::time::timeout(secs(3600.0), cloud.create_server(&small("c"))).await;
    assert!(refused.is_err());
    assert_eq!(cloud.servers().len(), 1, "a refused call has no effect");
    assert_eq!(*hung.borrow(), 4);

    // Simulated crash: the tasks stuck in the cloud are aborted; a restarted
    // process finds what the lost answers named.
    assert!(!create.is_finished() && !port.is_finished());
    create.abort();
    port.abort();
    faults.clear_hang();
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(cloud.find_ports_by_name("p").await.unwrap().len(), 1);

    // `hang_after_calls` hangs before the effect again.
    faults.hang_after_calls_take_effect(5);
    faults.hang_after_calls(0);
    let hung_create = tokio::time::timeout(secs(3600.0), cloud.create_server(&small("d"))).await;
    assert!(hung_create.is_err());
    assert_eq!(cloud.servers().len(), 1, "the hung create had no effect");
    assert_eq!(*hung.borrow(), 5);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_answers_throttled_with_retry_after() {
    let cloud = SimCloud::new(SimConfig {
        rate_limit: Some(RateLimit {
            per_second: 2.0,
            burst: 2,
        }),
        ..SimConfig::deterministic()
    });
    cloud.list_pool_servers().await.unwrap();
    cloud.list_pool_servers().await.unwrap();
    let Err(CloudError::Throttled { retry_after, .. }) = cloud.list_pool_servers().await else {
        panic!("third call within the burst window must be throttled");
    };
    let retry_after = retry_after.expect("a Retry-After");
    assert_eq!(retry_after, secs(0.5));
    tokio::time::sleep(retry_after).await;
    cloud.list_pool_servers().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run() {
    async fn run(seed: u64) -> Vec<(String, Duration, Duration)> {
        let cloud = SimCloud::new(SimConfig {
            seed,
            listeners: false,
            ..SimConfig::default()
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..6 {
            let id = cloud
                .create_server(&small(&format!("s{i}")))
                .await
                .unwrap()
                .id;
            let s = cloud.server(&id).unwrap();
            out.push((
                id,
                s.active_at.unwrap() - t0,
                s.mysqld_ready_at.unwrap() - t0,
            ));
        }
        out
    }
    assert_eq!(run(7).await, run(7).await);
    assert_ne!(run(7).await, run(8).await);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_cloud() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let cloud = cloud.clone();
        tasks.spawn(async move {
            let az = if i % 2 == 0 { "az1" } else { "az2" };
            let id = cloud
                .create_server(&spec(&format!("s{i}"), "db.large", az))
                .await?
                .id;
            let port = cloud
                .create_port(&port_spec(&format!("p{i}"), None))
                .await?;
            loop {
                tokio::time::sleep(secs(2.0)).await;
                if cloud.get_server(&id).await?.status == ServerStatus::Active {
                    break;
                }
            }
            cloud.attach_port(&id, &port.id).await?;
            Ok::<_, CloudError>(id)
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(cloud.servers().len(), 50);
    assert_eq!(cloud.call_counts()["attach_port"], 50);
    let loads = cloud.hosts();
    assert!(loads.iter().all(|h| h.servers == 6 || h.servers == 7));
}

/// The server's `mysql_addr`, polled for in real time until it is ACTIVE.
async fn mysql_addr_once_active(cloud: &SimCloud, id: &str) -> std::net::SocketAddr {
    loop {
        if let Some(addr) = cloud.get_server(id).await.unwrap().mysql_addr {
            return addr;
        }
        tokio::time::sleep(secs(0.005)).await;
    }
}

/// Real sockets, real time: a server's `mysql_addr` refuses connections until
/// mysqld is ready, then greets like MySQL 8.0, and stops when deleted.
#[tokio::test]
async fn listener_greets_on_a_real_port_once_ready() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cloud = SimCloud::new(SimConfig {
        time_scale: 0.001,
        ..SimConfig::default()
    });
    // ACTIVE with mysqld not up, however slow the machine: its mysqld never
    // starts, so the refusal is checked whatever time has passed.
    cloud.faults().mysqld_never_starts_next(1);
    let silent = cloud.create_server(&small("silent")).await.unwrap().id;
    let silent_addr = mysql_addr_once_active(&cloud, &silent).await;
    assert!(silent_addr.ip().is_loopback());
    assert!(!cloud.server(&silent).unwrap().mysqld_ready);
    assert!(
        tokio::net::TcpStream::connect(silent_addr).await.is_err(),
        "connection accepted before mysqld is ready"
    );

    let id = cloud.create_server(&small("real")).await.unwrap().id;
    let addr = mysql_addr_once_active(&cloud, &id).await;
    assert!(addr.ip().is_loopback());
    assert_ne!(addr, silent_addr);

    let probe = MysqlGreetingProbe::default();
    let deadline = Instant::now() + secs(20.0);
    let version = loop {
        match probe.probe(addr).await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, ProbeError::Connect { .. }), "{e:?}");
                tokio::time::sleep(secs(0.02)).await;
            }
            Err(e) => panic!("mysqld never greeted: {e}"),
        }
    };
    assert_eq!(version, "8.0.36-cloudsim");
    assert!(cloud.server(&id).unwrap().mysqld_ready);

    // Raw bytes: one packet, sequence 0; a client that hangs up then gets
    // nothing more, and the server closes too.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut header = [0u8; 4];
    tokio::time::timeout(secs(5.0), stream.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    assert_eq!(header[3], 0);
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.unwrap();
    assert_eq!(
        pool_manager::probe::parse_greeting(&payload).unwrap(),
        "8.0.36-cloudsim"
    );
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(secs(5.0), stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    // The model-backed probe agrees with the socket.
    assert_eq!(cloud.probe().probe(addr).await.unwrap(), version);

    cloud.delete_server(&id).await.unwrap();
    let deadline = Instant::now() + secs(5.0);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still up after delete");
        tokio::time::sleep(secs(0.01)).await;
    }
    assert!(cloud.probe().probe(addr).await.is_err());
}

/// A server whose mysqld stopped, or whose host failed, still has its
/// address: the port stays bound and refusing, as when mysqld never starts,
/// so no server created later listens there and greets a probe of the dead
/// one.
#[tokio::test]
async fn a_stopped_or_failed_servers_port_stays_reserved() {
    use tokio::io::AsyncReadExt;
    let cloud = SimCloud::new(SimConfig {
        time_scale: 0.001,
        ..SimConfig::default()
    });
    for (name, talked_to) in [("stopped", false), ("failed", true)] {
        let id = cloud.create_server(&small(name)).await.unwrap().id;
        let addr = mysql_addr_once_active(&cloud, &id).await;
        let deadline = Instant::now() + secs(20.0);
        let mut stream = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{name}: mysqld never listened: {e}"
                    );
                    tokio::time::sleep(secs(0.01)).await;
                }
            }
        };
        if talked_to {
            // A client that read the greeting and hung up first, so the
            // server's end of it holds no TIME_WAIT on the port.
            let mut header = [0u8; 4];
            stream.read_exact(&mut header).await.unwrap();
        }
        drop(stream);
        if talked_to {
            assert!(cloud.fail_server(&id, "host failed"));
        } else {
            assert!(cloud.stop_mysqld(&id));
        }
        let deadline = Instant::now() + secs(5.0);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "{name}: still listening");
            tokio::time::sleep(secs(0.01)).await;
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let bound = socket.bind(addr);
        assert_eq!(
            bound.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::AddrInUse),
            "{name} server's port {addr} is free for another server: {bound:?}"
        );
    }
}

#[tokio::test]
async fn listener_never_opens_when_mysqld_never_starts() {
    let cloud = SimCloud::new(SimConfig {
        time_scale: 0.001,
        ..SimConfig::default()
    });
    cloud.faults().mysqld_never_starts_next(1);
    let id = cloud.create_server(&small("dead")).await.unwrap().id;
    tokio::time::sleep(secs(0.3)).await;
    let s = cloud.get_server(&id).await.unwrap();
    assert_eq!(s.status, ServerStatus::Active);
    let err = MysqlGreetingProbe::default()
        .probe(s.mysql_addr.unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");
}

/// Nova refuses to detach a volume still attaching (Cinder wants it
/// `in-use`), and a delete waits for an attach in progress (the instance
/// lock): the volume is attaching, in use, and available once the server
/// is gone.
#[tokio::test(start_paused = true)]
async fn a_volume_still_attaching_is_not_detached_and_outlasts_a_delete_in_use() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let vol = cloud.create_volume_for_test("tenant", "az1", 10);
    let t0 = Instant::now();
    cloud.attach_volume(&server, &vol).await.unwrap();
    let refused = cloud.detach_volume(&server, &vol).await.unwrap_err();
    assert!(
        matches!(&refused, CloudError::Conflict(m) if m.contains("must be 'in-use'")),
        "{refused:?}"
    );
    cloud.delete_server(&server).await.unwrap();
    assert_eq!(
        cloud.get_volume(&vol).await.unwrap().status,
        VolumeStatus::Attaching
    );
    // The attach takes 2 s, then the delete 2 s more.
    at(t0, 3.0).await;
    let v = cloud.get_volume(&vol).await.unwrap();
    assert_eq!(v.status, VolumeStatus::InUse);
    assert_eq!(v.attached_to, vec![server.clone()]);
    at(t0, 4.0).await;
    let v = cloud.get_volume(&vol).await.unwrap();
    assert_eq!(v.status, VolumeStatus::Available);
    assert!(v.attached_to.is_empty());
    assert!(matches!(
        cloud.get_server(&server).await,
        Err(CloudError::NotFound(_))
    ));
}

/// An attach failing on the compute host: accepted, `attaching` for the
/// attach latency, then `available` again and attached to nothing.
#[tokio::test(start_paused = true)]
async fn an_attach_failing_on_the_host_leaves_the_volume_available() {
    let cloud = SimCloud::new(SimConfig::deterministic());
    let server = active_server(&cloud, "a", "az1").await;
    let vol = cloud.create_volume_for_test("tenant", "az1", 10);
    cloud.faults().fail_next_volume_attach_on_host(1);
    let t0 = Instant::now();
    cloud.attach_volume(&server, &vol).await.unwrap();
    assert_eq!(
        cloud.get_volume(&vol).await.unwrap().status,
        VolumeStatus::Attaching
    );
    at(t0, 2.0).await;
    let v = cloud.get_volume(&vol).await.unwrap();
    assert_eq!(v.status, VolumeStatus::Available);
    assert!(v.attached_to.is_empty());
    assert!(cloud
        .get_server(&server)
        .await
        .unwrap()
        .attached_volumes
        .is_empty());
    // The next attach is a normal one.
    cloud.attach_volume(&server, &vol).await.unwrap();
    at(t0, 4.0).await;
    assert_eq!(
        cloud.get_volume(&vol).await.unwrap().status,
        VolumeStatus::InUse
    );
}

/// A rate limit of no calls per second is refused when the cloud is made,
/// saying which setting, not met as a panic at the first throttled call.
#[test]
#[should_panic(expected = "rate_limit.per_second")]
fn a_rate_limit_of_zero_per_second_is_refused() {
    let _ = SimCloud::new(SimConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.0,
            burst: 1,
        }),
        ..SimConfig::deterministic()
    });
}

/// So is a time scale that would overflow (or make no sense of) the
/// model's durations.
#[test]
#[should_panic(expected = "time_scale")]
fn an_infinite_time_scale_is_refused() {
    let _ = SimCloud::new(SimConfig {
        time_scale: f64::INFINITY,
        ..SimConfig::deterministic()
    });
}
