//! The OpenStack driver over real HTTP, against cloudsim's HTTP face
//! (Keystone, Nova, Cinder, Neutron, Glance on one listener): every call,
//! every error class through the face's fault knobs, re-login after token
//! revocation and expiry, `check-cloud` (library and binary), the daemon
//! refusing an unusable cloud, and a Keystone behind TLS under a private CA. The config goes through the daemon's own
//! loader and clouds.yaml reader, as in production.

mod support;

use cloudsim::http::{HttpFace, HttpSettings, RunningFace, Service};
use cloudsim::{Quotas, SecurityGroupConfig, SimCloud, SimConfig};
use pool_manager::cloud::{
    Cloud, CloudError, FlavorIops, ImageMiss, IopsExtraSpec, NewPortSpec, NewVolumeSpec, QuotaLeft,
    Server, ServerSpec, ServerStatus, VolumeOwner, VolumeStatus, MAX_RETRY_AFTER, META_INSTANCE,
    META_POOL, META_TENANT,
};
use pool_manager::gate::{Gate, GateSettings, ThrottledCall};
use pool_manager::model::PoolKey;
use pool_manager::openstack::OpenStackCloud;
use pool_manager::probe::{MysqlGreetingProbe, Probe};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::init_tracing;
use warmpool_server::check_cloud::{self, CheckKind};
use warmpool_server::config::{CloudConfig, Config, OpenStackConfig};

/// A simulated cloud behind its HTTP face, and a clouds.yaml for it.
struct Env {
    sim: Arc<SimCloud>,
    face: RunningFace,
    dir: tempfile::TempDir,
    clouds_yaml: PathBuf,
}

/// The default test cloud. No server greets as mysqld ([`with_mysqld`] for
/// a test that needs one): a local MySQL holding the simulated mysqld's
/// port (3306) on every address would stop the face from starting.
fn sim_config() -> SimConfig {
    SimConfig {
        // Boots take ~0.25 s of real time, mysqld ~0.2 s more.
        time_scale: 0.01,
        jitter: 0.0,
        listeners: false,
        ..SimConfig::default()
    }
}

/// [`sim_config`] whose servers greet as mysqld at their own addresses,
/// port 3306: for a test that probes a server, runs a daemon whose pools
/// fill (a boot is Ready only once its mysqld greets), or reads a server's
/// address (of the management subnet, 127.77.0.0/16, only with listeners;
/// the model's synthetic 127.1.x.y otherwise). Such a test cannot start
/// where a local MySQL holds 3306 on every address.
fn with_mysqld() -> SimConfig {
    SimConfig {
        listeners: true,
        ..sim_config()
    }
}

async fn env_with(config: SimConfig, settings: HttpSettings) -> Env {
    init_tracing();
    let sim = SimCloud::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let face = HttpFace::serve(sim.clone(), settings, listener)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clouds_yaml = dir.path().join("clouds.yaml");
    std::fs::write(&clouds_yaml, face.clouds_yaml("cloudsim")).unwrap();
    Env {
        sim,
        face,
        dir,
        clouds_yaml,
    }
}

async fn env() -> Env {
    env_with(sim_config(), HttpSettings::default()).await
}

/// [`env`] whose servers greet as mysqld ([`with_mysqld`]).
async fn env_with_mysqld() -> Env {
    env_with(with_mysqld(), HttpSettings::default()).await
}

impl Env {
    /// The daemon's config text for this cloud; `cloud_extra` goes into
    /// `[cloud]`, `pools` replaces the pool list.
    fn config_text(&self, cloud_extra: &str, pools: &str) -> String {
        format!(
            r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "{data}"
[manager]
poll_interval = "100ms"
replenish_interval = "200ms"
reconcile_interval = "1m"
max_concurrent_boots = 4
# cloudsim answers in milliseconds.
allow_short_intervals = true
[cloud]
kind = "openstack"
cloud = "cloudsim"
clouds_yaml = "{clouds}"
management_network = "mgmt-net"
{timeout}
{cloud_extra}
{pools}
"#,
            data = self.dir.path().join("data").display(),
            clouds = self.clouds_yaml.display(),
            timeout = if cloud_extra.contains("request_timeout") {
                ""
            } else {
                "request_timeout = \"5s\""
            },
        )
    }

    fn config(&self, cloud_extra: &str, pools: &str) -> Config {
        Config::parse(&self.config_text(cloud_extra, pools)).unwrap()
    }

    async fn driver_with(&self, cloud_extra: &str) -> OpenStackCloud {
        let config = self.config(cloud_extra, SMALL_POOL);
        OpenStackCloud::connect(openstack(&config).settings().unwrap())
            .await
            .unwrap()
    }

    async fn driver(&self) -> OpenStackCloud {
        self.driver_with("").await
    }
}

const SMALL_POOL: &str = r#"
[[pools]]
flavor = "db.small"
availability_zone = "az1"
min_ready = 2
max_ready = 4
image = "mysql-8.0"
"#;

fn openstack(config: &Config) -> &OpenStackConfig {
    match &config.cloud {
        CloudConfig::OpenStack(os) => os,
        other => panic!("not an openstack config: {other:?}"),
    }
}

/// The default env, a driver on it, and a db.small server in az1 booted
/// through it.
async fn env_with_a_server() -> (Env, OpenStackCloud, Server) {
    let env = env().await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    (env, cloud, server)
}

fn spec(instance: &str, flavor: &str, az: &str) -> ServerSpec {
    let pool = PoolKey::new(flavor, az);
    ServerSpec {
        name: format!("warmpool-{instance}"),
        image: "mysql-8.0".into(),
        metadata: BTreeMap::from([
            (META_POOL.to_string(), pool.to_string()),
            (META_INSTANCE.to_string(), instance.to_string()),
        ]),
        pool,
    }
}

/// Polls `get_server` until the server leaves BUILD.
async fn settled(cloud: &OpenStackCloud, id: &str) -> pool_manager::cloud::Server {
    for _ in 0..200 {
        let server = cloud.get_server(id).await.unwrap();
        if server.status != ServerStatus::Build {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} never left BUILD");
}

/// Moves the test's clock `by` ahead at once, and lets it run on: the
/// pauses of a cloudsim test's cloud, measured in tokio time, pass while
/// its HTTP answers still come in real time. A current-thread test only.
///
/// Tests here run on the real clock and jump with this, not on a paused
/// clock (`start_paused`): a paused clock moves to its next timer whenever
/// the runtime has nothing to run, even while a request is on its way
/// through a socket, so an answer the kernel hands over a moment late (a
/// busy machine) finds its request timed out (a login's 5 s timeout, the
/// only timer at start-up, fired at once when every answer took 2 ms).
async fn advance_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

async fn volume_reaches(cloud: &OpenStackCloud, id: &str, status: VolumeStatus) {
    for _ in 0..200 {
        if cloud.get_volume(id).await.unwrap().status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("volume {id} never reached {status:?}");
}

/// A port of the tenant project on `network_id`, its address Neutron's choice.
fn port_spec(name: &str, network_id: &str) -> NewPortSpec {
    NewPortSpec {
        name: name.into(),
        network_id: network_id.into(),
        subnet_id: None,
        fixed_ip: None,
    }
}

fn volume_spec(name: &str, size_gib: u32) -> NewVolumeSpec {
    NewVolumeSpec {
        name: name.into(),
        size_gib,
        volume_type: None,
        availability_zone: "az1".into(),
        metadata: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_boot_tagged_list_by_tag_greet_and_delete() {
    // Deletes take an hour of simulated time (36 s of real time, more than
    // the test lasts), so the server is still being deleted when the test
    // looks: at the default 2 s (20 ms real) a busy machine's next call
    // came after the host was done and found nothing.
    let env = env_with(
        SimConfig {
            latencies: cloudsim::Latencies {
                delete: Duration::from_secs(3600),
                ..cloudsim::Latencies::default()
            },
            ..with_mysqld()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env
        .driver_with("server_name_prefix = \"wp-test-\"\nserver_tag = \"wp-test\"")
        .await;
    let created = cloud
        .create_server(&spec("i1", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(created.name, "wp-test-i1", "prefix + instance id");
    assert_eq!(created.status, ServerStatus::Build);

    let server = settled(&cloud, &created.id).await;
    assert_eq!(server.status, ServerStatus::Active);
    assert_eq!(server.availability_zone, "az1");
    assert_eq!(server.metadata[META_INSTANCE], "i1");
    let addr = server
        .mysql_addr
        .expect("an ACTIVE server has a management address");
    assert_eq!(addr.port(), 3306);
    assert!(addr.ip().to_string().starts_with("127.77."), "{addr}");
    // The face's simulated mysqld greets at that address once ready.
    let probe = MysqlGreetingProbe::default();
    let mut greeted = None;
    for _ in 0..100 {
        if let Ok(version) = probe.probe(addr).await {
            greeted = Some(version);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeted.is_some_and(|v| v.contains("cloudsim")));

    // A server without warmpool's tag is not a pool server, even with the metadata.
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [created.id.as_str()]
    );
    let other_tag = env.driver_with("server_tag = \"someone-else\"").await;
    assert!(other_tag.list_pool_servers().await.unwrap().is_empty());

    cloud.delete_server(&created.id).await.unwrap();
    // Nova shows and lists it, task_state `deleting`, until the host is done.
    let going = cloud.get_server(&created.id).await.unwrap();
    assert!(going.deleting && !going.is_usable(), "{going:?}");
    let listed = cloud.list_pool_servers().await.unwrap();
    assert!(
        listed.iter().any(|s| s.id == created.id && s.deleting),
        "{listed:?}"
    );
    cloud.delete_server(&created.id).await.unwrap();
    cloud
        .delete_server("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
    assert!(matches!(
        cloud
            .get_server("00000000-0000-0000-0000-000000000000")
            .await,
        Err(CloudError::NotFound(_))
    ));
}

/// The pool tag goes with the create, from Nova 2.52 (Pike) on. Below it
/// a tag can only be put on a server no longer building (Nova answers 409
/// meanwhile), so every boot would be untagged while it builds, invisible
/// to the reconciler: the driver refuses such a Nova at connect, naming
/// what it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn novas_older_than_2_52_are_refused_at_connect() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            nova_max_version: (2, 52),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    assert_eq!(cloud.compute_microversion(), "2.52");
    let created = cloud
        .create_server(&spec("i1", "db.small", "az1"))
        .await
        .unwrap();
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);

    for old in [(2, 51), (2, 40), (2, 20)] {
        let env = env_with(
            sim_config(),
            HttpSettings {
                nova_max_version: old,
                ..HttpSettings::default()
            },
        )
        .await;
        let config = env.config("", SMALL_POOL);
        let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains("2.52")),
            "{old:?}: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_override_replaces_every_servers_address() {
    let env = env().await;
    let cloud = env
        .driver_with("probe_address_override = \"127.0.0.1:13306\"")
        .await;
    let created = cloud
        .create_server(&spec("i1", "db.small", "az1"))
        .await
        .unwrap();
    let server = settled(&cloud, &created.id).await;
    assert_eq!(server.mysql_addr, Some("127.0.0.1:13306".parse().unwrap()));
}

/// Nova's newest microversions are not spoken: from 2.101 a volume attach
/// is asynchronous (202 before the volume is attached; a volume in use
/// elsewhere or missing is still refused with the answer, as the testbed
/// measured at 2.104), and a reserve a busy compute host is slow over,
/// which nothing has measured, would look like a failed attach. A Nova
/// offering 2.101 or later is spoken to at 2.79, where the attach answers
/// 200 once the volume is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_is_spoken_to_at_2_79_though_it_offers_later_microversions() {
    for (nova_max, expected) in [
        ((2, 104), "2.79"),
        ((2, 101), "2.79"),
        ((2, 100), "2.79"),
        ((2, 79), "2.79"),
        ((2, 78), "2.52"),
    ] {
        let env = env_with(
            sim_config(),
            HttpSettings {
                nova_max_version: nova_max,
                ..HttpSettings::default()
            },
        )
        .await;
        let cloud = env.driver().await;
        assert_eq!(cloud.compute_microversion(), expected, "{nova_max:?}");
    }
}

/// A flavor's disk IOPS limit is read from its extra specs (the total,
/// else the lower of read and write): at 2.79 from the flavor's detail, at
/// 2.52 from its own `os-extra_specs` call, cached either way. A policy
/// hiding extra specs (the detail leaves them out; the call of their own
/// is refused 403) makes the limit unknown, not an error, and is no WARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flavors_disk_iops_limit_is_read_from_its_extra_specs() {
    let specs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (nova_max, spoken) in [((2, 104), "2.79"), ((2, 60), "2.52")] {
        let config = SimConfig {
            flavor_extra_specs: [
                (
                    "db.small".to_owned(),
                    specs(&[
                        ("quota:disk_total_iops_sec", "6400"),
                        ("hw:cpu_policy", "shared"),
                    ]),
                ),
                (
                    "db.medium".to_owned(),
                    specs(&[
                        ("quota:disk_read_iops_sec", "3000"),
                        ("quota:disk_write_iops_sec", "1500"),
                    ]),
                ),
            ]
            .into(),
            ..sim_config()
        };
        let settings = HttpSettings {
            nova_max_version: nova_max,
            ..HttpSettings::default()
        };
        let env = env_with(config, settings).await;
        let cloud = env.driver().await;
        assert_eq!(cloud.compute_microversion(), spoken);
        for _ in 0..2 {
            assert_eq!(
                cloud.flavor_disk_iops("db.small").await.unwrap(),
                FlavorIops::Limited(6400, IopsExtraSpec::Total),
                "{spoken}"
            );
        }
        assert_eq!(
            cloud.flavor_disk_iops("db.medium").await.unwrap(),
            FlavorIops::Limited(1500, IopsExtraSpec::Write),
            "{spoken}"
        );
        assert_eq!(
            cloud.flavor_disk_iops("db.large").await.unwrap(),
            FlavorIops::Unlimited,
            "{spoken}"
        );
        // Below 2.61 one call per flavor, then cached; from it, none.
        let extra_spec_calls = || env.sim.call_counts().get("get_flavor_extra_specs").copied();
        let below_2_61 = spoken == "2.52";
        assert_eq!(extra_spec_calls(), below_2_61.then_some(3), "{spoken}");
        let e = cloud.flavor_disk_iops("db.nope").await.unwrap_err();
        assert!(
            matches!(&e, CloudError::NotFound(m) if m.contains("db.nope")),
            "{e:?}"
        );

        env.sim.hide_flavor_extra_specs(true);
        let logs = support::Logs::capture();
        let hidden = env.driver().await;
        match hidden.flavor_disk_iops("db.small").await {
            Ok(FlavorIops::Unknown(why)) => assert!(
                why.contains("os_compute_api:os-flavor-extra-specs:index")
                    && why.contains("db.small"),
                "{why}"
            ),
            other => panic!("{spoken}: {other:?}"),
        }
        // Refused once and cached: asked no more.
        hidden.flavor_disk_iops("db.small").await.unwrap();
        assert_eq!(extra_spec_calls(), below_2_61.then_some(4), "{spoken}");
        let warned = logs.lines_at("WARN");
        assert!(
            !warned.iter().any(|l| l.contains("extra_specs")),
            "{warned:?}"
        );
    }
}

/// Volume and port attach/detach, idempotent detaches and deletes, and the
/// conflicts of attaching what is in use (Nova refuses the attach itself:
/// 2.79 checks the volume before it answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_ports_attach_and_detach() {
    let env = env().await;
    let cloud = env.driver().await;
    let a = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let b = cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap();
    settled(&cloud, &a.id).await;
    settled(&cloud, &b.id).await;

    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();
    volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;
    cloud.attach_volume(&a.id, &volume.id).await.unwrap();
    volume_reaches(&cloud, &volume.id, VolumeStatus::InUse).await;
    let v = cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(v.attached_to, vec![a.id.clone()]);
    assert!(cloud
        .get_server(&a.id)
        .await
        .unwrap()
        .attached_volumes
        .contains(&volume.id));
    let e = cloud.attach_volume(&b.id, &volume.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Conflict(_)), "{e:?}");
    let e = cloud.delete_volume(&volume.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Conflict(_)), "{e:?}");
    let found = cloud.find_volumes_by_name("warmpool-o1").await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(cloud
        .find_volumes_by_name("warmpool-o")
        .await
        .unwrap()
        .is_empty());

    let network = cloud.network("tenant-net").await.unwrap();
    let port = cloud
        .create_port(&port_spec("warmpool-o1", &network.id))
        .await
        .unwrap();
    cloud.attach_port(&a.id, &port.id).await.unwrap();
    let mut bound = cloud.get_port(&port.id).await.unwrap();
    for _ in 0..100 {
        if bound.device_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        bound = cloud.get_port(&port.id).await.unwrap();
    }
    assert_eq!(bound.device_id.as_deref(), Some(a.id.as_str()));
    assert!(bound.ip_address.is_some());
    assert!(cloud
        .get_server(&a.id)
        .await
        .unwrap()
        .attached_ports
        .contains(&port.id));
    let e = cloud.attach_port(&b.id, &port.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Conflict(_)), "{e:?}");
    assert_eq!(
        cloud.find_ports_by_name("warmpool-o1").await.unwrap().len(),
        1
    );

    cloud.detach_port(&a.id, &port.id).await.unwrap();
    cloud.detach_volume(&a.id, &volume.id).await.unwrap();
    cloud.detach_volume(&a.id, &volume.id).await.unwrap();
    volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;
    cloud.detach_volume(&a.id, &volume.id).await.unwrap();
    cloud.delete_volume(&volume.id).await.unwrap();
    cloud.delete_port(&port.id).await.unwrap();
    cloud.delete_port(&port.id).await.unwrap();
    assert!(matches!(
        cloud.get_port(&port.id).await,
        Err(CloudError::NotFound(_))
    ));
    for _ in 0..200 {
        match cloud.get_volume(&volume.id).await {
            Err(CloudError::NotFound(_)) => break,
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    cloud.delete_volume(&volume.id).await.unwrap();
}

/// From Nova 2.101 a volume attach is asynchronous: Nova answers 202 before
/// the volume is attached, which a busy compute host may take seconds to
/// do (not measured: cloudsim's `attach_reserve_delay` plays it). Spoken
/// to at 2.101, warmpool took a volume still
/// `available` 5 s after the 202, with no attachment on the server, for an
/// attach the instance's host had failed, and discarded one warm instance
/// after another. It speaks 2.79 to such a Nova, which answers once the
/// volume is reserved: the purchase gets the first warm instance, no server
/// is deleted, and its volume ends attached to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attach_reserve_at_nova_2_101_costs_no_warm_instance() {
    use pool_manager::model::InstanceState;
    let env = env_with(
        with_mysqld(),
        HttpSettings {
            nova_max_version: (2, 104),
            attach_reserve_delay: Duration::from_secs(7),
            ..HttpSettings::default()
        },
    )
    .await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let warm: Vec<String> = running
        .manager
        .list_instances(Some(&key))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state == InstanceState::Ready)
        .filter_map(|i| i.server_id)
        .collect();

    let allocated = running.manager.allocate(order(&env, "o1").await).await;
    let deleted = env
        .sim
        .call_counts()
        .get("delete_server")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        deleted, 0,
        "warm servers deleted; the purchase: {allocated:?}"
    );
    let allocated = allocated.unwrap();
    let server = allocated.server_id.clone().unwrap();
    assert!(warm.contains(&server), "{server} not among {warm:?}");
    let volume = allocated.volume_id.clone().unwrap();
    let volumes = env.sim.volumes();
    let volume = volumes.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(volume.status, VolumeStatus::InUse, "{volume:?}");
    assert_eq!(volume.attached_to, vec![server], "{volume:?}");
    stop_daemon(running, stop).await;
}

/// Nova attaches a volume of another zone by default (`[cinder]
/// cross_az_attach = True`), which is what `volume_availability_zone` is
/// for: a pool in Nova's az1 whose volumes Cinder keeps in az2 sells.
/// cloudsim refused every such attach, as a Nova set to `cross_az_attach =
/// False` does, and with a 400 the driver read as the request's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_volume_in_the_zones_cinder_zone_is_attached_across_zones() {
    let env = env_with_mysqld().await;
    let az1_to_az2 = "[cloud.availability_zones.az1]\nvolume_availability_zone = \"az2\"";
    let (running, stop) = start_daemon(env.config(az1_to_az2, SMALL_POOL))
        .await
        .unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .expect("Nova attaches across zones by default");
    let volume = allocated.volume_id.clone().unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volumes = env.sim.volumes();
    let volume = volumes.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(volume.availability_zone, "az2", "{volume:?}");
    assert_eq!(volume.attached_to, vec![server], "{volume:?}");
    stop_daemon(running, stop).await;
}

/// Under `cross_az_attach = False` Nova refuses the attach with its 400
/// "not in the same availability_zone": the request's fault, not the warm
/// instance's, so the purchase fails saying so without trying another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nova_refusing_cross_zone_attaches_fails_the_purchase_without_trying_another() {
    let env = env_with(
        SimConfig {
            cross_az_attach: false,
            ..with_mysqld()
        },
        HttpSettings::default(),
    )
    .await;
    let az1_to_az2 = "[cloud.availability_zones.az1]\nvolume_availability_zone = \"az2\"";
    let (running, stop) = start_daemon(env.config(az1_to_az2, SMALL_POOL))
        .await
        .unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let err = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("are not in the same availability_zone. Instance is in az1. Volume is in az2"),
        "{err}"
    );
    let attaches = env.sim.call_counts().get("attach_volume").copied();
    assert_eq!(attaches, Some(1), "tried again on another instance");
    stop_daemon(running, stop).await;
}

/// Cinder's multiattach flag and volume type are read: the allocator's
/// fence refuses a multiattach volume by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volumes_multiattach_flag_and_type_are_read() {
    let env = env().await;
    let cloud = env.driver().await;
    let shared = env
        .sim
        .create_multiattach_volume_for_test("tenant", "az1", 1, "multiattach");
    let v = cloud.get_volume(&shared).await.unwrap();
    assert!(v.multiattach);
    assert_eq!(v.volume_type.as_deref(), Some("multiattach"));
    let single = env.sim.create_volume_for_test("tenant", "az1", 1);
    let v = cloud.get_volume(&single).await.unwrap();
    assert!(!v.multiattach);
    assert_eq!(v.volume_type.as_deref(), Some("__DEFAULT__"));
}

/// The tenant tag goes with the create (Cinder's `metadata`) and is read
/// back with the volume, and so is whose the volume is: warmpool's own
/// project for what it creates, whatever the tenant, and a tenant's
/// project for a volume made there (as Cinder's default policy shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_volume_carries_its_tenant_tag_and_its_owner_is_read() {
    let env = env().await;
    let cloud = env.driver().await;
    let spec = NewVolumeSpec {
        metadata: BTreeMap::from([(META_TENANT.to_owned(), "tenant-a".to_owned())]),
        ..volume_spec("warmpool-tagged", 1)
    };
    let created = cloud.create_volume(&spec).await.unwrap();
    assert_eq!(created.tagged_tenant(), Some("tenant-a"), "{created:?}");
    assert_eq!(created.owner, VolumeOwner::Warmpool, "{created:?}");
    // What Cinder keeps came in the create's body.
    let kept = env.sim.volumes().into_iter().find(|v| v.id == created.id);
    assert_eq!(kept.map(|v| v.metadata), Some(spec.metadata.clone()));
    let read = cloud.get_volume(&created.id).await.unwrap();
    assert_eq!(read.tagged_tenant(), Some("tenant-a"), "{read:?}");
    assert_eq!(read.owner, VolumeOwner::Warmpool, "{read:?}");
    let found = cloud.find_volumes_by_name("warmpool-tagged").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tagged_tenant(), Some("tenant-a"));

    let theirs = env.sim.create_volume_for_test("tenant-c", "az1", 1);
    let read = cloud.get_volume(&theirs).await.unwrap();
    assert_eq!(
        read.owner,
        VolumeOwner::Project("tenant-c".into()),
        "{read:?}"
    );
    assert_eq!(read.tagged_tenant(), None, "{read:?}");
}

/// The tenant tag the allocator writes on an untagged volume once it
/// holds it goes by Cinder's `POST /volumes/{id}/metadata`, which sets the
/// keys given and keeps the volume's others; sent again, or empty, it
/// changes nothing. A policy refusing it (Cinder's 403) is PolicyRefused,
/// empty or not; Cinder's 400 for a volume being uploaded is Fatal, no
/// policy. A volume Cinder does not have is NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volumes_tenant_tag_is_set_keeping_its_other_metadata() {
    let env = env().await;
    let cloud = env.driver().await;
    let spec = NewVolumeSpec {
        metadata: BTreeMap::from([("purpose".to_owned(), "orders-db".to_owned())]),
        ..volume_spec("operators-volume", 1)
    };
    let created = cloud.create_volume(&spec).await.unwrap();
    assert_eq!(created.tagged_tenant(), None, "{created:?}");
    let tag = BTreeMap::from([(META_TENANT.to_owned(), "tenant-a".to_owned())]);
    let both = BTreeMap::from([
        ("purpose".to_owned(), "orders-db".to_owned()),
        (META_TENANT.to_owned(), "tenant-a".to_owned()),
    ]);
    for _ in 0..2 {
        cloud.set_volume_metadata(&created.id, &tag).await.unwrap();
        let read = cloud.get_volume(&created.id).await.unwrap();
        assert_eq!(read.metadata, both, "{read:?}");
        assert_eq!(read.tagged_tenant(), Some("tenant-a"));
    }
    // Empty, it changes nothing: the allocator's check that it may tag.
    cloud
        .set_volume_metadata(&created.id, &BTreeMap::new())
        .await
        .unwrap();
    let kept = env.sim.volumes().into_iter().find(|v| v.id == created.id);
    assert_eq!(kept.map(|v| v.metadata), Some(both.clone()));
    // Refused by Cinder's policy, an empty one too: told from the other
    // refusals for good.
    env.face.faults().refuse_volume_metadata_writes(true);
    for metadata in [BTreeMap::new(), tag.clone()] {
        let e = cloud
            .set_volume_metadata(&created.id, &metadata)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CloudError::PolicyRefused(m) if m.contains("volume:create_volume_metadata") && m.contains("403")),
            "{e:?}"
        );
    }
    env.face.faults().refuse_volume_metadata_writes(false);
    // Cinder's InvalidVolume for a volume being uploaded to an image.
    env.face.faults().answer_next(
        Service::Volume,
        "POST",
        &format!("/v3/volumes/{}/metadata", created.id),
        1,
        400,
        r#"{"badRequest": {"code": 400, "message": "Invalid volume: Updating volume metadata is not allowed for volumes in uploading status."}}"#,
    );
    let e = cloud
        .set_volume_metadata(&created.id, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("uploading status") && m.contains("400")),
        "{e:?}"
    );
    let kept = env.sim.volumes().into_iter().find(|v| v.id == created.id);
    assert_eq!(kept.map(|v| v.metadata), Some(both));

    let missing = "0b6ec1b4-5e1a-4c4e-9d61-3f7f0a2b9c11";
    let e = cloud.set_volume_metadata(missing, &tag).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains(missing)),
        "{e:?}"
    );
}

/// A Cinder whose policy refuses warmpool's user metadata writes
/// (`volume:create_volume_metadata` made admin-only) answers the tenant
/// tag's write 403. An order naming an untagged volume of warmpool's
/// project is then refused before anything is done for it, naming the
/// policy, however often billing calls again: each call took a warm server,
/// attached the volume, and discarded the server once the tag was refused.
/// Once the policy lets warmpool write, the order is served and the volume
/// tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_tag_cinders_policy_refuses_costs_no_warm_server() {
    use pool_manager::model::{InstanceState, VolumeSource};
    let env = env_with_mysqld().await;
    env.face.faults().refuse_volume_metadata_writes(true);
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let volume = env.sim.create_own_volume_for_test("az1", 1);
    let on_the_volume = |mut request: pool_manager::AllocateRequest| {
        request.params.volume.source = VolumeSource::Existing {
            volume_id: volume.clone(),
        };
        request
    };
    let mut refusals = Vec::new();
    for _ in 0..3 {
        let request = on_the_volume(order(&env, "o1").await);
        refusals.push(running.manager.allocate(request).await.unwrap_err());
    }
    let counts = env.sim.call_counts();
    let deleted = counts.get("delete_server").copied().unwrap_or(0);
    assert_eq!(deleted, 0, "warm servers discarded: {refusals:#?}");
    assert_eq!(counts.get("attach_volume"), None, "{refusals:#?}");
    for refused in &refusals {
        assert!(
            matches!(refused, pool_manager::ManagerError::FailedPrecondition(m)
                if m.contains(&volume) && m.contains("volume:create_volume_metadata")
                    && m.contains(META_TENANT)),
            "{refused}"
        );
    }
    let ready = running.manager.get_pool(&key).await.unwrap();
    assert_eq!(ready.count(InstanceState::Ready), 2, "{ready:?}");

    env.face.faults().refuse_volume_metadata_writes(false);
    let request = on_the_volume(order(&env, "o1").await);
    let allocated = running.manager.allocate(request).await.unwrap();
    assert_eq!(allocated.volume_id.as_deref(), Some(volume.as_str()));
    let kept = env.sim.volumes().into_iter().find(|v| v.id == volume);
    let tag = kept.and_then(|v| v.tagged_tenant().map(str::to_owned));
    assert_eq!(tag.as_deref(), Some("tenant"));
    stop_daemon(running, stop).await;
}

/// A server Nova is busy with (an operator's snapshot) reads as busy, not
/// going, through Nova's task_state, and Nova's refusal of an attach to it
/// is a Conflict: what the allocator needs to try the next instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_with_a_task_is_busy_and_refuses_an_attach() {
    let (env, cloud, server) = env_with_a_server().await;
    settled(&cloud, &server.id).await;
    assert!(env
        .sim
        .set_server_task_state(&server.id, Some("image_snapshot")));
    let busy = cloud.get_server(&server.id).await.unwrap();
    assert_eq!(busy.busy.as_deref(), Some("image_snapshot"));
    assert!(busy.is_usable() && !busy.is_going() && !busy.takes_an_attach_now());

    let volume = cloud
        .create_volume(&volume_spec("warmpool-busy", 1))
        .await
        .unwrap();
    volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;
    let e = cloud
        .attach_volume(&server.id, &volume.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Conflict(m) if m.contains("task_state")),
        "{e:?}"
    );

    assert!(env.sim.set_server_task_state(&server.id, None));
    let idle = cloud.get_server(&server.id).await.unwrap();
    assert!(idle.busy.is_none() && idle.takes_an_attach_now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_of_each_service_are_quota_exceeded() {
    let env = env_with(
        SimConfig {
            quotas: Quotas {
                max_instances: 1,
                max_volumes: 1,
                max_ports: 2,
                ..Quotas::default()
            },
            max_cores: Some(4),
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env.driver().await;
    // Nova 403: cores (db.large wants 4 of 4, fine; two would not) and instances.
    cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let e = cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::QuotaExceeded(m) if m.contains("instances")),
        "{e:?}"
    );
    let headroom = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(headroom.servers, Some(0));
    assert!(headroom.limited_by.unwrap().contains("instances"));
    // Cinder 413 overLimit with retryAfter "0": a quota, not a throttle.
    cloud.create_volume(&volume_spec("v1", 1)).await.unwrap();
    let e = cloud
        .create_volume(&volume_spec("v2", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::QuotaExceeded(_)), "{e:?}");
    // Neutron 409 OverQuota (the management port holds one of the two).
    let network = cloud.network("tenant-net").await.unwrap();
    let port = |name: &str| port_spec(name, &network.id);
    let mut last = Ok(());
    for i in 0..3 {
        last = cloud.create_port(&port(&format!("p{i}"))).await.map(drop);
        if last.is_err() {
            break;
        }
    }
    assert!(
        matches!(last, Err(CloudError::QuotaExceeded(_))),
        "{last:?}"
    );
}

/// Nova with unified limits (`[quota] driver =
/// nova.quota.UnifiedLimitsDriver`) refuses a boot over a Keystone limit
/// with oslo.limit's wording, which never says "quota": it is a quota all
/// the same, for the gate to pause on, not a failed boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_over_a_unified_limit_is_quota_exceeded() {
    let env = env().await;
    let cloud = env.driver().await;
    env.face.faults().answer_next(
        Service::Compute,
        "POST",
        "/v2.1/servers",
        1,
        403,
        &format!(
            r#"{{"forbidden": {{"code": 403, "message": "Project {} is over a limit for [Resource servers is over limit of 2 due to current usage 2 and delta 1]"}}}}"#,
            env.face.project_id()
        ),
    );
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::QuotaExceeded(m) if m.contains("Resource servers is over limit of 2")),
        "{e:?}"
    );
    assert!(
        env.sim.servers().is_empty(),
        "the refused boot made nothing"
    );
}

/// The headroom counts the project's Neutron port quota (its quota
/// details), two ports a server: its own, which Nova made at the boot, and
/// the tenant's it takes when sold. The servers' own ports, unnamed, leave
/// a look-up by name alone. A policy that keeps the quota details from the
/// project leaves Nova's quotas binding, as before, and the headroom says
/// the ports are not counted, and why (what `GetPool` shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_headroom_counts_the_port_quota_and_does_without_it_when_refused() {
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        max_ports: 10,
        ..Quotas::default()
    })
    .await;
    let cloud = env.driver().await;
    for name in ["a", "b"] {
        cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
    }
    let network = cloud.network("tenant-net").await.unwrap();
    let port = cloud
        .create_port(&port_spec("warmpool-o1-a1", &network.id))
        .await
        .unwrap();
    let found = cloud.find_ports_by_name("warmpool-o1-a1").await.unwrap();
    assert_eq!(
        found.iter().map(|p| &p.id).collect::<Vec<_>>(),
        [&port.id],
        "{found:?}"
    );
    assert_eq!(env.sim.server_ports().len(), 2);

    let headroom = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(headroom.servers, Some(3), "{headroom:?}");
    assert_eq!(headroom.limited_by.as_deref(), Some("ports: 3 of 10 used"));
    assert!(
        headroom.quotas.contains(&QuotaLeft::new("ports", 7, 2)),
        "{headroom:?}"
    );
    assert_eq!(headroom.ports_unknown, None);

    env.face.faults().refuse_quota_details(true);
    for _ in 0..2 {
        let headroom = cloud.boot_headroom("db.small").await.unwrap();
        assert_eq!(headroom.servers, Some(8), "{headroom:?}");
        assert_eq!(
            headroom.limited_by.as_deref(),
            Some("instances: 2 of 10 used")
        );
        assert!(
            headroom.quotas.iter().all(|q| q.resource != "ports"),
            "{headroom:?}"
        );
        let why = headroom.ports_unknown.as_deref().unwrap_or_default();
        assert!(
            why.starts_with("Neutron refused the quota details") && why.contains("HTTP 403"),
            "{headroom:?}"
        );
    }
    env.face.faults().refuse_quota_details(false);
    let headroom = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(headroom.limited_by.as_deref(), Some("ports: 3 of 10 used"));
    assert_eq!(headroom.ports_unknown, None);
}

/// A port quota that cannot be read for any other reason (Neutron's 5xx, a
/// timeout, a 429) leaves the headroom Nova's for that poll: the boots
/// Nova's quotas admit are not held up by Neutron's trouble. The headroom
/// says the ports are not counted, and Neutron's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_headroom_is_novas_when_the_port_quota_read_fails() {
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        max_ports: 10,
        ..Quotas::default()
    })
    .await;
    let cloud = env.driver().await;
    cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    env.face.faults().answer_next(
        Service::Network,
        "GET",
        &details,
        u32::MAX,
        503,
        r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#,
    );
    let headroom = cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(headroom.servers, Some(9), "{headroom:?}");
    assert_eq!(
        headroom.limited_by.as_deref(),
        Some("instances: 1 of 10 used")
    );
    assert!(
        headroom.quotas.iter().all(|q| q.resource != "ports"),
        "{headroom:?}"
    );
    let why = headroom.ports_unknown.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("reading Neutron's quota details failed")
            && why.contains("The server is currently unavailable.")
            && why.contains("HTTP 503"),
        "{headroom:?}"
    );
}

/// The daemon's metrics count the port-quota read of a headroom poll as
/// the network service's own call, with its own outcome: a Neutron that
/// fails it, refuses it or throttles it shows as such under `network`,
/// however Nova answered, and Nova's part of the poll as compute's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_quota_read_is_metered_as_the_networks_call() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        max_ports: 10,
        ..Quotas::default()
    })
    .await;
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(env.driver().await), metrics.clone());
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    let sample = |name_and_labels: &str| -> f64 {
        let body = metrics.encode();
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let calls = |service: &str, status: &str| {
        sample(&format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        ))
    };

    cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!((calls("compute", "ok"), calls("network", "ok")), (1.0, 1.0));

    env.face.faults().answer_next(
        Service::Network,
        "GET",
        &details,
        1,
        503,
        r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#,
    );
    cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(calls("network", "transient"), 1.0);

    env.face.faults().answer_next(
        Service::Network,
        "GET",
        &details,
        1,
        429,
        r#"{"NeutronError": {"type": "OverLimit", "message": "Too many requests.", "detail": ""}}"#,
    );
    cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(calls("network", "throttled"), 1.0);
    assert_eq!(
        sample(r#"warmpool_cloud_throttled_total{service="network"}"#),
        1.0
    );

    env.face.faults().refuse_quota_details(true);
    cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!(calls("network", "fatal"), 1.0);

    // Nova answered every poll: compute's calls are all ok, and no other.
    assert_eq!((calls("compute", "ok"), calls("network", "ok")), (4.0, 1.0));
    assert_eq!(
        sample(r#"warmpool_cloud_throttled_total{service="compute"}"#),
        0.0
    );
}

/// The daemon's metrics count a flavor's disk IOPS read as the calls it
/// sends to Nova (the flavor listing a cache miss makes, and below 2.61
/// the os-extra_specs call), and nothing when the driver answers it from
/// its cache: a replenisher's read every 10 minutes per flavor would
/// otherwise add ~0 ms compute calls, pulling Nova's latency down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flavor_iops_read_answered_from_the_cache_is_not_metered() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    // Below 2.61 the listing and os-extra_specs; from it, the listing.
    for (nova_max, http_calls) in [((2, 60), 2.0), ((2, 104), 1.0)] {
        let settings = HttpSettings {
            nova_max_version: nova_max,
            ..HttpSettings::default()
        };
        let env = env_with(sim_config(), settings).await;
        let metrics = Arc::new(Metrics::new());
        let cloud = MeteredCloud::new(Arc::new(env.driver().await), metrics.clone());
        let compute_calls = || {
            let body = metrics.encode();
            body.lines()
                .filter_map(|l| {
                    l.strip_prefix(
                        "warmpool_cloud_request_duration_seconds_count{service=\"compute\"",
                    )
                })
                .map(|l| l.rsplit(' ').next().unwrap().trim().parse::<f64>().unwrap())
                .sum::<f64>()
        };
        let before = compute_calls();
        cloud.flavor_disk_iops("db.small").await.unwrap();
        let sent = compute_calls() - before;
        assert_eq!(sent, http_calls, "{nova_max:?}");
        for _ in 0..3 {
            cloud.flavor_disk_iops("db.small").await.unwrap();
        }
        assert_eq!(
            compute_calls() - before,
            sent,
            "{nova_max:?}: cached answers counted"
        );
    }
}

/// Reading an ACTIVE server asks Nova for the server and Neutron for its
/// ports: the daemon's metrics count each part under its own service, so
/// a Neutron 429 there is network's throttle, not Nova's, and Nova's
/// latency holds no Neutron round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_servers_port_listing_is_metered_as_the_networks_call() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let (env, driver, server) = env_with_a_server().await;
    // ACTIVE, and the driver's lookups cached: the read's only Neutron
    // request is the port listing.
    assert_eq!(
        settled(&driver, &server.id).await.status,
        ServerStatus::Active
    );
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(driver), metrics.clone());
    let sample = |name_and_labels: &str| -> f64 {
        let body = metrics.encode();
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let calls = |service: &str, status: &str| {
        sample(&format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        ))
    };

    env.face.faults().throttle_next_on(
        Service::Network,
        "GET",
        "/v2.0/ports",
        1,
        Duration::from_secs(1),
    );
    let throttled = cloud.get_server(&server.id).await.unwrap_err();
    assert!(
        matches!(throttled, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(1)),
        "{throttled:?}"
    );
    assert_eq!(
        (
            sample(r#"warmpool_cloud_throttled_total{service="network"}"#),
            sample(r#"warmpool_cloud_throttled_total{service="compute"}"#)
        ),
        (1.0, 0.0),
        "the 429 is Neutron's: (network, compute) throttled"
    );
    assert_eq!(
        (calls("compute", "ok"), calls("network", "throttled")),
        (1.0, 1.0)
    );

    let read = cloud.get_server(&server.id).await.unwrap();
    assert_eq!(read.attached_ports.len(), 1, "{read:?}");
    assert_eq!((calls("compute", "ok"), calls("network", "ok")), (2.0, 1.0));
}

/// A purchase's verify reads its server, and the server's ports from
/// Neutron: a Neutron 429 there is network's in the pause the purchase
/// takes (its Throttled event, which the retry-pause metrics count) and in
/// the throttled count, not Nova's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neutron_429_at_a_purchases_verify_is_networks_not_novas() {
    use pool_manager::events::{CloudService, EventKind};
    use pool_manager::model::InstanceState;
    let env = env_with_mysqld().await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    // Nothing in flight beside the purchase: the one 429 armed below is
    // for its verify's port listing.
    running
        .manager
        .update_pool(&key, |s| s.paused = true)
        .await
        .unwrap();
    wait_until_async("no boot in flight", || async {
        let pool = running.manager.get_pool(&key).await.unwrap();
        pool.count(InstanceState::Booting) == 0 && pool.count(InstanceState::Warming) == 0
    })
    .await;
    let order = order(&env, "o1").await;
    let mut events = running.manager.events();
    // The purchase's port create and look go to other routes of Neutron.
    env.face.faults().throttle_next_on(
        Service::Network,
        "GET",
        "/v2.0/ports",
        1,
        Duration::from_secs(1),
    );
    running.manager.allocate(order).await.unwrap();

    let paused: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e.kind {
            EventKind::Throttled { service, .. } => Some(service),
            _ => None,
        })
        .collect();
    assert_eq!(paused, vec![Some(CloudService::Network)]);
    let metrics_url = format!("http://{}/metrics", running.metrics_addr);
    let (_, _, metrics) = support::http_get(&metrics_url).await;
    let sample = |name_and_labels: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(
        (
            sample(r#"warmpool_cloud_throttled_total{service="network"}"#),
            sample(r#"warmpool_cloud_throttled_total{service="compute"}"#)
        ),
        (1.0, 0.0),
        "(network, compute) throttled"
    );
    stop_daemon(running, stop).await;
}

/// The headroom is polled per flavor every 30 s: a Neutron outage is
/// warned of once, when it starts, and its end is told, not one warning
/// per poll for as long as it lasts.
#[tokio::test]
async fn a_failing_port_quota_read_is_warned_of_once_per_outage() {
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        max_ports: 10,
        ..Quotas::default()
    })
    .await;
    let cloud = env.driver().await;
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    let outage = |polls| {
        env.face.faults().answer_next(
            Service::Network,
            "GET",
            &details,
            polls,
            503,
            r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#,
        )
    };
    let logs = support::Logs::capture();
    let warned = || {
        logs.text()
            .matches("cannot read Neutron's port quota")
            .count()
    };
    let told_back = || logs.text().matches("port quota is read again").count();
    outage(3);
    for _ in 0..3 {
        let headroom = cloud.boot_headroom("db.small").await.unwrap();
        assert!(
            headroom.quotas.iter().all(|q| q.resource != "ports"),
            "{headroom:?}"
        );
        // Warned of once, but every poll's status says so.
        assert!(headroom.ports_unknown.is_some(), "{headroom:?}");
    }
    assert_eq!((warned(), told_back()), (1, 0), "{}", logs.text());
    for _ in 0..2 {
        let headroom = cloud.boot_headroom("db.small").await.unwrap();
        assert_eq!(headroom.limited_by.as_deref(), Some("ports: 0 of 10 used"));
        assert_eq!(headroom.ports_unknown, None);
    }
    assert_eq!((warned(), told_back()), (1, 1), "{}", logs.text());
    outage(1);
    cloud.boot_headroom("db.small").await.unwrap();
    assert_eq!((warned(), told_back()), (2, 1), "{}", logs.text());
}

/// A create (of server "twin") whose answer the cloud garbles took effect:
/// it fails Transient, and the retry finds that server, `named` so, rather
/// than booting a twin.
async fn a_lost_create_is_found_again(env: &Env, cloud: &OpenStackCloud, named: &str) {
    env.face.faults().garbage_next(Service::Compute, 1);
    let e = cloud
        .create_server(&spec("twin", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    let retried = cloud
        .create_server(&spec("twin", "db.small", "az1"))
        .await
        .unwrap();
    let twins: Vec<_> = env
        .sim
        .servers()
        .into_iter()
        .filter(|s| s.server.name == named)
        .collect();
    assert_eq!(twins.len(), 1, "{twins:?}");
    assert_eq!(twins[0].server.id, retried.id);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_faults_are_classified() {
    let env = env().await;
    let cloud = env.driver().await;
    let faults = env.face.faults();
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    // Version discovery of a fresh session is throttled too. This one 429
    // is gone when the driver asks the document again for its Retry-After
    // (osauth keeps no header), so the throttle names no wait.
    faults.throttle_next(Service::Volume, 1, Duration::from_secs(1));
    assert!(matches!(
        cloud.find_volumes_by_name("x").await,
        Err(CloudError::Throttled { .. })
    ));
    cloud.find_volumes_by_name("x").await.unwrap();
    cloud.find_ports_by_name("x").await.unwrap();

    // 429 with Retry-After.
    faults.throttle_next(Service::Compute, 1, Duration::from_secs(3));
    let e = cloud.get_server(&server.id).await.unwrap_err();
    assert!(
        matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)),
        "{e:?}"
    );
    faults.throttle_next(Service::Volume, 1, Duration::from_millis(1500));
    let e = cloud.find_volumes_by_name("x").await.unwrap_err();
    assert!(
        matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
        "{e:?}"
    );
    faults.throttle_next(Service::Network, 1, Duration::from_secs(1));
    assert!(matches!(
        cloud.find_ports_by_name("x").await,
        Err(CloudError::Throttled { .. })
    ));
    // A proxy's 500 page.
    faults.server_error_next(Service::Compute, 1);
    let e = cloud.get_server(&server.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    // A create whose answer is lost took effect: the retry finds that server
    // instead of booting a twin.
    a_lost_create_is_found_again(&env, &cloud, "warmpool-twin").await;
    // So with a name prefix Nova's regex reads otherwise (the driver
    // escapes it).
    let dotted = env.driver_with("server_name_prefix = \"wp.db+\"").await;
    // Its flavor and image looked up first: the lost answer is the create's.
    dotted
        .create_server(&spec("first", "db.small", "az1"))
        .await
        .unwrap();
    a_lost_create_is_found_again(&env, &dotted, "wp.db+twin").await;
    // A truncated body on success.
    faults.garbage_next(Service::Volume, 1);
    let e = cloud.create_volume(&volume_spec("g", 1)).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Transient(m) if m.contains("unreadable")),
        "{e:?}"
    );
    // No answer within request_timeout: 3 s, which the connect's login
    // fits in on a busy machine too, of a Compute slowed ten times as long.
    let impatient = env.driver_with("request_timeout = \"3s\"").await;
    faults.slow(Service::Compute, Duration::from_secs(30));
    // Unbounded, the call would get its answer after 30 s and succeed; the
    // timeout may fire in reqwest ("error sending request") or in ours.
    let e = impatient.get_server(&server.id).await.unwrap_err();
    assert!(matches!(&e, CloudError::Transient(_)), "{e:?}");
    faults.slow(Service::Compute, Duration::ZERO);
    // 404.
    let e = cloud
        .get_volume("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::NotFound(_)), "{e:?}");
    // Other 400s are fatal: an AZ Nova does not know.
    let e = cloud
        .create_server(&spec("z", "db.small", "az9"))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Fatal(_)), "{e:?}");
    // Unknown flavor, unknown image: fatal and named.
    let e = cloud
        .create_server(&spec("f", "db.tiny", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("db.tiny")),
        "{e:?}"
    );
    let mut bad_image = spec("g", "db.small", "az1");
    bad_image.image = "mysql-9.9".into();
    let e = cloud.create_server(&bad_image).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("mysql-9.9")),
        "{e:?}"
    );
    // A connection refused is transient: once the face's server task has
    // ended, nothing listens on its port.
    let addr = env.face.local_addr();
    env.face.shutdown().await.unwrap();
    let e = cloud.get_server(&server.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{addr}: {e:?}");
}

/// A volume or port create whose answer is lost took effect (the face's
/// garbage knob applies the call, then truncates the answer): the retry
/// adopts that volume or port instead of making a twin nothing would ever
/// delete. With a fixed IP a twin cannot even be made (409), which would
/// fail the tenant's allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_volume_or_port_create_answer_is_adopted_not_duplicated() {
    let env = env().await;
    let cloud = env.driver().await;
    let faults = env.face.faults();
    let volumes_named = |name: &str| {
        let mut ids: Vec<String> = env
            .sim
            .volumes()
            .into_iter()
            .filter(|v| v.name == name)
            .map(|v| v.id)
            .collect();
        ids.sort();
        ids
    };
    let ports_named = |name: &str| {
        env.sim
            .ports()
            .into_iter()
            .filter(|p| p.name == name)
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    // A fresh session's first call to a service is version discovery: make
    // it before the faults so they hit the creates.
    cloud.find_volumes_by_name("x").await.unwrap();
    let network = cloud.network("tenant-net").await.unwrap();

    faults.garbage_next(Service::Volume, 1);
    let e = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();
    assert_eq!(volumes_named("warmpool-o1"), [volume.id.as_str()]);
    // Adopted while possibly still creating: it becomes available as the
    // answered create's would.
    volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;

    let port_at = |name: &str, fixed_ip: Option<&str>| NewPortSpec {
        fixed_ip: fixed_ip.map(str::to_owned),
        ..port_spec(name, &network.id)
    };
    let fixed = port_at("warmpool-o1", Some("10.0.0.77"));
    // A port create first looks up the management network (cached): the
    // garbage is for the create itself.
    cloud.network("mgmt-net").await.unwrap();
    faults.garbage_next(Service::Network, 1);
    let e = cloud.create_port(&fixed).await.unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    let port = cloud.create_port(&fixed).await.unwrap();
    assert_eq!(port.ip_address.as_deref(), Some("10.0.0.77"));
    assert_eq!(ports_named("warmpool-o1"), [port.id.as_str()]);
    // A network named by its id in upper case (Neutron takes either case
    // and answers the canonical id): the lost create's port is still its.
    let upper = NewPortSpec {
        network_id: network.id.to_uppercase(),
        ..port_spec("warmpool-o3", &network.id)
    };
    faults.garbage_next(Service::Network, 1);
    cloud.create_port(&upper).await.unwrap_err();
    let port = cloud.create_port(&upper).await.unwrap();
    assert_eq!(ports_named("warmpool-o3"), [port.id.as_str()]);

    // Twins left by earlier lost answers: one is kept, the others deleted
    // (a volume Cinder will not delete while creating fails the call
    // transiently until it can).
    for _ in 0..2 {
        let twin = cloud
            .create_volume(&volume_spec("warmpool-o2", 1))
            .await
            .unwrap();
        volume_reaches(&cloud, &twin.id, VolumeStatus::Available).await;
        cloud
            .create_port(&port_at("warmpool-o2", None))
            .await
            .unwrap();
    }
    faults.garbage_next(Service::Volume, 1);
    cloud
        .create_volume(&volume_spec("warmpool-o2", 1))
        .await
        .unwrap_err();
    let made = volumes_named("warmpool-o2");
    assert_eq!(made.len(), 3, "{made:?}");
    let mut kept = None;
    for _ in 0..200 {
        match cloud.create_volume(&volume_spec("warmpool-o2", 1)).await {
            Ok(v) => {
                kept = Some(v);
                break;
            }
            Err(CloudError::Transient(m)) if m.contains("cannot be deleted yet") => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let kept = kept.expect("the twin volumes were never deleted");
    assert!(made.contains(&kept.id), "{kept:?} not one of {made:?}");
    assert_eq!(volumes_named("warmpool-o2"), [kept.id.as_str()]);
    faults.garbage_next(Service::Network, 1);
    cloud
        .create_port(&port_at("warmpool-o2", None))
        .await
        .unwrap_err();
    assert_eq!(ports_named("warmpool-o2").len(), 3);
    let port = cloud
        .create_port(&port_at("warmpool-o2", None))
        .await
        .unwrap();
    assert_eq!(ports_named("warmpool-o2"), [port.id.as_str()]);

    // Once an answer arrived, a create of that name makes a new object: it
    // is the caller's to ask for one.
    let again = cloud
        .create_port(&port_at("warmpool-o2", None))
        .await
        .unwrap();
    assert_ne!(again.id, port.id);
}

/// `Retry-After: 18446744073709551615` (u64::MAX seconds) over HTTP is a
/// throttle like any other: no panic in the face, the driver or the gate it
/// feeds, whose pause stays within `MAX_RETRY_AFTER` (stretched by jitter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_a_throttle_and_panics_nothing() {
    let env = env().await;
    let cloud = env.driver().await;
    let faults = env.face.faults();
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let mut gate = Gate::new(GateSettings::default());
    for sent in [Duration::from_secs(u64::MAX), Duration::MAX] {
        faults.throttle_next(Service::Compute, 1, sent);
        let e = cloud.get_server(&server.id).await.unwrap_err();
        let CloudError::Throttled { retry_after, .. } = e else {
            panic!("{e:?}");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(u64::MAX)));
        // The gate's jitter stretches a pause by at most its own length.
        let longest = MAX_RETRY_AFTER * 2;
        assert!(gate.retry_pause(retry_after) <= longest);
        let now = tokio::time::Instant::now();
        gate.throttled("az1", ThrottledCall::BOOT, retry_after, now);
        let until = gate
            .admission("az1", "db.small", now)
            .hold
            .expect("the zone is paused")
            .until();
        assert!(until <= now + longest);
    }
    // The face and the session are unharmed.
    cloud.get_server(&server.id).await.unwrap();
    cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_valid_host_boot_is_an_error_server_with_its_fault() {
    let env = env().await;
    let cloud = env.driver().await;
    env.sim.faults().error_next_boots(1, "NoValidHost");
    let created = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let server = settled(&cloud, &created.id).await;
    assert_eq!(server.status, ServerStatus::Error);
    let fault = server.fault.expect("the fault");
    assert!(fault.contains("NoValidHost"), "{fault}");
    assert_eq!(server.mysql_addr, None);
}

/// The driver tells a pool's unknown flavor or image from a usable one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_specs_are_checked_against_flavors_and_images() {
    let env = env().await;
    let cloud = env.driver().await;
    let small = PoolKey::new("db.small", "az1");
    cloud.check_boot_spec(&small, "mysql-8.0").await.unwrap();
    let err = cloud
        .check_boot_spec(&PoolKey::new("db.huge", "az1"), "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::NotFound(m) if m.contains("db.huge")),
        "{err:?}"
    );
    let err = cloud
        .check_boot_spec(&small, "msyql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::NotFound(m) if m.contains("msyql-8.0")),
        "{err:?}"
    );
}

/// With the `image` override (cloud.image), which boots every pool, a
/// pool's own image boots nothing until the override is unset, but it is
/// looked up all the same: a typo is refused (CreatePool, an image change,
/// a configured pool at start-up and in check-cloud), naming the override,
/// instead of being stored and shown as the pool's image, to fail every
/// boot once the override goes. An override Glance lacks is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_image_override_a_pools_own_image_is_looked_up_too() {
    let env = env_with(
        SimConfig {
            images: vec!["mysql-8.0".into(), "mysql-8.4".into()],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let every_pool = "image = \"mysql-8.4\"";
    let cloud = env.driver_with(every_pool).await;
    let small = PoolKey::new("db.small", "az1");
    for image in ["mysql-8.0", "mysql-8.4"] {
        cloud.check_boot_spec(&small, image).await.unwrap();
    }
    let e = cloud
        .check_boot_spec(&small, "no-such-image")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("no image named 'no-such-image'")
            && m.contains("cloud.image 'mysql-8.4'")),
        "{e:?}"
    );
    let e = env
        .driver_with("image = \"no-such-golden\"")
        .await
        .check_boot_spec(&small, "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("no image named 'no-such-golden'")),
        "{e:?}"
    );

    let config = env.config(
        every_pool,
        &SMALL_POOL.replace("mysql-8.0", "no-such-image"),
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let image = line(&report, CheckKind::Image).join("\n");
    assert!(image.contains("image: ok (mysql-8.4 = "), "{report}");
    assert!(
        image.contains("no image named 'no-such-image'")
            && image.contains("cloud.image 'mysql-8.4'"),
        "{report}"
    );
    let err = match start_daemon(config).await {
        Ok(_) => panic!("started with a configured pool whose own image Glance lacks"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("no image named 'no-such-image'") && err.contains("db.small@az1"),
        "{err}"
    );
}

/// An operator rotates the pool's image (uploads a new one under the same
/// name, deletes the old): the driver's cached id is refused by Nova, and
/// the boot looks the name up again and goes ahead with the new image
/// instead of every boot failing until a restart. The cloud check sees the
/// new image too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_image_is_looked_up_again() {
    let env = env().await;
    let cloud = env.driver().await;
    let first = cloud
        .create_server(&spec("r1", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().replace_image("mysql-8.0");

    let second = cloud
        .create_server(&spec("r2", "db.small", "az1"))
        .await
        .expect("a boot from the new image");
    assert_eq!(
        settled(&cloud, &second.id).await.status,
        ServerStatus::Active
    );
    cloud
        .check_boot_spec(&PoolKey::new("db.small", "az1"), "mysql-8.0")
        .await
        .unwrap();
    for id in [first.id, second.id] {
        cloud.delete_server(&id).await.unwrap();
    }
}

/// A golden image published as a community image is not in Glance's
/// default listing, but Nova boots it all the same: it is found by name,
/// not refused as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_image_is_found_by_name() {
    let env = env().await;
    env.face
        .faults()
        .set_image_visibility("mysql-8.0", "community");
    let cloud = env.driver().await;
    found_by_name_and_booted(&cloud, "community").await;
}

/// mysql-8.0, which the test hid from the image list one way or another,
/// passes the pool's check by name and boots a server that gets ACTIVE.
async fn found_by_name_and_booted(cloud: &OpenStackCloud, how: &str) {
    let pool = PoolKey::new("db.small", "az1");
    cloud
        .check_boot_spec(&pool, "mysql-8.0")
        .await
        .unwrap_or_else(|e| panic!("the {how} image is not found by name: {e}"));
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_or_else(|e| panic!("no boot from the {how} image: {e}"));
    assert_eq!(
        settled(cloud, &server.id).await.status,
        ServerStatus::Active
    );
}

/// A golden image hidden from the image list (`os_hidden`, so users do
/// not pick it) is not in Glance's default listing, but Nova boots it all
/// the same: it is found by name, not refused as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_image_is_found_by_name() {
    let env = env().await;
    env.face.faults().hide_image("mysql-8.0");
    let cloud = env.driver().await;
    found_by_name_and_booted(&cloud, "hidden").await;
    // An image of no name is still unknown, hidden or not.
    let pool = PoolKey::new("db.small", "az1");
    let err = cloud
        .check_boot_spec(&pool, "mysql-9.9")
        .await
        .expect_err("no such image");
    assert!(
        err.to_string().contains("no image named 'mysql-9.9'"),
        "{err}"
    );
}

/// Other images of the pool's image name that are not active (an upload
/// queued, saving or killed, an old image deactivated) do not make the
/// name ambiguous: boots go on from the one active image. Two active
/// images of a name still are ambiguous, and an image given by id, or a
/// name with no active image, that is not active is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_active_images_count_for_a_name() {
    let env = env().await;
    for status in ["queued", "saving", "killed", "deactivated"] {
        env.face.faults().upload_image("mysql-8.0", status);
    }
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .expect("a boot from the active image");
    assert_eq!(
        settled(&cloud, &server.id).await.status,
        ServerStatus::Active
    );
    let pool = PoolKey::new("db.small", "az1");
    cloud.check_boot_spec(&pool, "mysql-8.0").await.unwrap();

    let queued = env.face.faults().upload_image("mysql-8.1", "queued");
    for image in [queued.as_str(), "mysql-8.1"] {
        let e = cloud.image_id(image).await.unwrap_err();
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains(&queued) && m.contains("is queued, not active")),
            "{image}: {e:?}"
        );
    }

    env.face.faults().upload_image("mysql-8.0", "active");
    let e = cloud.check_boot_spec(&pool, "mysql-8.0").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 images are named 'mysql-8.0'")),
        "{e:?}"
    );
}

/// An image given by id whose custom properties include one named
/// `image` (Glance shows them beside its own fields) is read as the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_a_property_named_image_is_read_by_id() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            image_properties: BTreeMap::from([("image".into(), "mysql".into())]),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let id = cloud.image_id("mysql-8.0").await.unwrap();
    assert_eq!(cloud.image_id(&id).await.unwrap(), id);
}

/// Nova pages flavors too (`[api] max_limit`): a pool's flavor past the
/// first page of `GET /flavors/detail` is found, and boots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flavor_past_the_first_page_is_found() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            page_limit: Some(2),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    // db.small and db.medium fill the first page.
    let large = cloud.flavor("db.large").await.expect("db.large, on page 2");
    assert_eq!(large.name, "db.large");
    cloud
        .check_boot_spec(&PoolKey::new("db.large", "az1"), "mysql-8.0")
        .await
        .unwrap();
    let server = cloud
        .create_server(&spec("l", "db.large", "az1"))
        .await
        .unwrap();
    assert_eq!(
        settled(&cloud, &server.id).await.status,
        ServerStatus::Active
    );
}

/// Glance pages images at 25, newest first: thirty failed or deactivated
/// images uploaded under the pool's image name since the active one put it
/// on the second page of `GET /v2/images?name=`. The name still resolves to
/// the active image, and a second active image there still makes it
/// ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_image_past_glances_first_page_is_found() {
    let env = env().await;
    let active = env.driver().await.image_id("mysql-8.0").await.unwrap();
    for i in 0..30 {
        let status = ["killed", "queued", "deactivated"][i % 3];
        env.face.faults().upload_image("mysql-8.0", status);
    }
    let cloud = env.driver().await;
    assert_eq!(
        cloud
            .image_id("mysql-8.0")
            .await
            .expect("the active image, on page 2"),
        active
    );
    let pool = PoolKey::new("db.small", "az1");
    cloud.check_boot_spec(&pool, "mysql-8.0").await.unwrap();

    // Another active image of the name, older than the thirty uploads: it
    // is on page 2 too, and a fresh look sees both.
    let env = crate::env().await;
    env.face.faults().upload_image("mysql-8.0", "active");
    for _ in 0..30 {
        env.face.faults().upload_image("mysql-8.0", "killed");
    }
    let e = env.driver().await.image_id("mysql-8.0").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 images are named 'mysql-8.0'")),
        "{e:?}"
    );
}

/// The image a Glance page marker names may be deleted before the next
/// page is asked for (an operator cleaning up failed uploads): Glance
/// answers 400 "No image found with ID", and the lookup starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glance_page_marker_deleted_between_pages_starts_the_lookup_again() {
    let env = env().await;
    let active = env.driver().await.image_id("mysql-8.0").await.unwrap();
    for _ in 0..30 {
        env.face.faults().upload_image("mysql-8.0", "killed");
    }
    env.face.faults().delete_next_markers(Service::Image, 1);
    let cloud = env.driver().await;
    assert_eq!(cloud.image_id("mysql-8.0").await.unwrap(), active);
    env.face.faults().clear();
}

/// Glance answers its listing (`GET /v2/images?name=`) 200 with whatever
/// matches, nothing included: a 404 there is a proxy's or a gateway's, as
/// one without the service's fault is from Nova, Cinder or Neutron, and
/// says nothing of the pool's image. Read as "no such image" it refused
/// the pool (CreatePool, UpdatePool) and failed its boots for good; it is
/// asked again instead. A name Glance has no image of is still not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_to_glances_listing_is_no_missing_image() {
    let env = env().await;
    let cloud = env.driver().await;
    // Glance's version discovery is done: the 404 meets the listing.
    cloud
        .check_boot_image("mysql-8.0", ImageMiss::NameOffered)
        .await
        .unwrap();
    env.face.faults().not_found_next(Service::Image, 1);
    let e = cloud
        .check_boot_image("mysql-8.0", ImageMiss::NameOffered)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Transient(m) if m.contains("HTTP 404")),
        "{e:?}"
    );
    // The failed look cached nothing: the boot looks the name up itself.
    env.face.faults().not_found_next(Service::Image, 1);
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(matches!(&e, CloudError::Transient(_)), "{e:?}");

    cloud
        .check_boot_image("mysql-8.0", ImageMiss::NameOffered)
        .await
        .unwrap();
    let e = cloud
        .check_boot_image("mysql-9.9", ImageMiss::NameOffered)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("no image named 'mysql-9.9'")),
        "{e:?}"
    );
    let mut unknown = spec("b", "db.small", "az1");
    unknown.image = "mysql-9.9".into();
    let e = cloud.create_server(&unknown).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("no image named 'mysql-9.9'")),
        "{e:?}"
    );
}

/// Neutron pages networks when `pagination_max_limit` is set: a second
/// network of a name, on a later page, makes the name ambiguous rather
/// than the first page's network being taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_name_is_looked_up_on_every_page() {
    let mut settings = HttpSettings {
        page_limit: Some(1),
        ..HttpSettings::default()
    };
    let twin = cloudsim::http::NetworkSpec {
        id: "5b2f1c1e-0000-4000-8000-00000000aa01".into(),
        subnet_id: "5b2f1c1e-0000-4000-8000-00000000aa02".into(),
        ..cloudsim::http::NetworkSpec::new("tenant-net", "10.9.0.0/16", "10.9.0.1", true)
    };
    settings.networks.push(twin);
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    let mgmt = cloud
        .network("mgmt-net")
        .await
        .expect("a name with one network, its page full");
    assert_eq!(mgmt.name.as_deref(), Some("mgmt-net"));
    let e = cloud.network("tenant-net").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 networks are named 'tenant-net'")),
        "{e:?}"
    );
}

/// A network given by its id in upper case (an operator's config, a
/// tenant's request) is the network Neutron shows for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_given_by_its_id_in_upper_case_resolves() {
    let env = env().await;
    let cloud = env.driver().await;
    let tenant = cloud.network("tenant-net").await.unwrap();
    let upper = cloud
        .network(&tenant.id.to_uppercase())
        .await
        .expect("the network, by id");
    assert_eq!(upper, tenant);
}

/// A cloud that pages its listings (Nova's `osapi_max_limit`, Neutron's
/// `pagination_max_limit`) still shows the reconciler every pool server,
/// and the allocator's verify every port attached to one (the one Nova
/// made at the boot first): the driver follows the next links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_listings_are_followed_to_the_end() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            page_limit: Some(2),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let network = cloud.network("tenant-net").await.unwrap();
    let mut ports_of = std::collections::BTreeMap::new();
    for name in ["a", "b", "c"] {
        let server = cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
        settled(&cloud, &server.id).await;
        let port = cloud
            .create_port(&port_spec(&format!("warmpool-{name}"), &network.id))
            .await
            .unwrap();
        cloud.attach_port(&server.id, &port.id).await.unwrap();
        let own = env
            .sim
            .server_ports()
            .into_iter()
            .find(|p| p.device_id.as_deref() == Some(server.id.as_str()))
            .expect("Nova made the server's port")
            .id;
        ports_of.insert(server.id, vec![own, port.id]);
    }
    let listed: std::collections::BTreeSet<_> = cloud
        .list_pool_servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        ports_of.keys().collect::<Vec<_>>()
    );
    for _ in 0..100 {
        let mut seen = std::collections::BTreeMap::new();
        for id in ports_of.keys() {
            let server = cloud.get_server(id).await.unwrap();
            seen.insert(server.id, server.attached_ports);
        }
        if seen == ports_of {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the servers' reads never showed every port: {ports_of:?}");
}

/// The pool-server listing is Nova's alone: its readers (the reconciler,
/// the adoption of a crash's server) go by ids, status and metadata, and
/// the one reader of a server's ports, the allocator's verify, reads them
/// through `get_server`. A Neutron answering 5xx once failed every listing,
/// and with it the start-up reconcile (warmpoold exited) and every later
/// pass (releases, leak sweeps, resumed boots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_servers_are_listed_while_neutron_fails() {
    let (env, cloud, server) = env_with_a_server().await;
    settled(&cloud, &server.id).await;
    env.face.faults().server_error_next(Service::Network, 1000);

    let listed = cloud
        .list_pool_servers()
        .await
        .expect("Nova answered the listing");
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [server.id.as_str()], "{listed:?}");

    let data = env.dir.path().join("data");
    let store = tokio::task::spawn_blocking(move || pool_manager::store::SledStore::open(&data))
        .await
        .unwrap()
        .unwrap();
    let manager = pool_manager::PoolManager::new(
        Arc::new(store),
        Arc::new(cloud),
        Arc::new(MysqlGreetingProbe::default()),
        pool_manager::ManagerSettings {
            // The new store's start lists the server as unknown: deleting
            // it as a leak is Nova's work too.
            delete_unknown_servers: true,
            ..pool_manager::ManagerSettings::default()
        },
    );
    manager
        .start()
        .await
        .expect("the start-up reconcile needs no Neutron");
    manager.shutdown().await.unwrap();
    env.face.faults().clear();
}

/// The name lookups follow the next links as the listings do: on a cloud
/// paging at one item, a lookup reading only the first page saw one of two
/// ports or volumes of a name (a twin a lost create left would stay, its
/// port or volume never deleted), and missed the server a lost create
/// made behind a newer one its name's pattern matches (and booted a twin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_lookups_follow_the_next_links() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            page_limit: Some(1),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let network = cloud.network("tenant-net").await.unwrap();
    for _ in 0..2 {
        cloud
            .create_port(&port_spec("warmpool-dup", &network.id))
            .await
            .unwrap();
        cloud
            .create_volume(&volume_spec("warmpool-dup", 1))
            .await
            .unwrap();
    }
    let ports = cloud.find_ports_by_name("warmpool-dup").await.unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    let volumes = cloud.find_volumes_by_name("warmpool-dup").await.unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");

    // Flavor, image and network looked up before the garbled answer.
    cloud
        .create_server(&spec("first", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().garbage_next(Service::Compute, 1);
    let e = cloud
        .create_server(&spec("twin", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    // Newer, and matched by the lookup's pattern: listed first.
    cloud
        .create_server(&spec("twin2", "db.small", "az1"))
        .await
        .unwrap();
    let retried = cloud
        .create_server(&spec("twin", "db.small", "az1"))
        .await
        .unwrap();
    let twins: Vec<_> = env
        .sim
        .servers()
        .into_iter()
        .filter(|s| s.server.name == "warmpool-twin")
        .collect();
    assert_eq!(twins.len(), 1, "{twins:?}");
    assert_eq!(twins[0].server.id, retried.id);
}

/// A revoked token (Keystone restarted with new keys, an operator revoked
/// it) is still "alive" for osauth, which never retries a 401: only the
/// driver's own re-login recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_by_a_fresh_login() {
    let (env, cloud, server) = env_with_a_server().await;
    cloud.find_volumes_by_name("x").await.unwrap();
    cloud.find_ports_by_name("x").await.unwrap();
    env.face.faults().revoke_all_tokens();
    cloud
        .get_server(&server.id)
        .await
        .expect("re-login after revocation");
    // Concurrent calls after a revocation (one re-login for all) all succeed,
    // on every service.
    env.face.faults().revoke_all_tokens();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let cloud = cloud.clone();
            let id = server.id.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => cloud.get_server(&id).await.map(drop),
                    1 => cloud.find_volumes_by_name("x").await.map(drop),
                    _ => cloud.find_ports_by_name("x").await.map(drop),
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("re-login under concurrency");
    }
}

/// A service that refuses even the token Keystone just issued is not a
/// wrong password: the call fails saying so (Fatal, the request's fault, so
/// that no retry logs in again and no purchase discards instances for it),
/// one login was made for it, and once the service takes tokens the next
/// call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_the_service_refuses_is_named_as_such() {
    let (env, cloud, server) = env_with_a_server().await;
    let logins = env.face.faults().password_logins();
    env.face.faults().refuse_tokens_next(Service::Compute, 2);
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Fatal(m) if m.contains("refused a token Keystone had just issued")),
        "{err:?}"
    );
    assert_eq!(env.face.faults().password_logins(), logins + 1);
    cloud
        .get_server(&server.id)
        .await
        .expect("the service takes the token now");
}

/// A re-login Keystone rate-limits is throttling, to be waited out like any
/// 429, not "an unusable cloud configuration".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_re_login_is_throttling() {
    let (env, cloud, server) = env_with_a_server().await;
    env.face.faults().revoke_all_tokens();
    env.face
        .faults()
        .throttle_next(Service::Identity, 1, Duration::from_secs(2));
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(matches!(err, CloudError::Throttled { .. }), "{err:?}");
    cloud
        .get_server(&server.id)
        .await
        .expect("the next call logs in");
}

/// A re-login answered 404 (a proxy in front of Keystone routing it
/// nowhere) says nothing about the server being deleted: the delete fails
/// and the server stays, instead of "already gone", which would let the
/// caller forget a server that still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_login_answered_404_is_not_a_deleted_server() {
    let (env, cloud, server) = env_with_a_server().await;
    env.face.faults().revoke_all_tokens();
    env.face.faults().not_found_next(Service::Identity, 1);
    let err = cloud.delete_server(&server.id).await.unwrap_err();
    assert!(
        !matches!(err, CloudError::NotFound(_)),
        "a failed login read as a missing server: {err:?}"
    );
    assert!(err.to_string().contains("auth"), "{err}");
    cloud
        .get_server(&server.id)
        .await
        .expect("the server was not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_working_past_token_expiry() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(1),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cloud
        .get_server(&server.id)
        .await
        .expect("nova past expiry");
    cloud
        .list_pool_servers()
        .await
        .expect("listing past expiry");
    cloud
        .find_volumes_by_name("x")
        .await
        .expect("cinder past expiry");
    cloud
        .find_ports_by_name("x")
        .await
        .expect("neutron past expiry");
    let logins = env.face.faults().password_logins();
    assert!(
        logins >= 2,
        "the token issued at connect expired and was renewed: {logins} logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_fatal_and_names_the_user() {
    let env = env().await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    std::fs::write(&env.clouds_yaml, text.replace("'poolpass'", "'wrong'")).unwrap();
    let config = env.config("", SMALL_POOL);
    let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("refused the login of user pool in project service (401)") && m.contains("wrong password")),
        "{e:?}"
    );
}

/// Keystone answers its generic 401 alike for a wrong password, a project
/// or domain name it does not know and a user without a role on the
/// project: the message names each, and claims none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_project_is_not_told_as_a_wrong_password() {
    let env = env().await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    std::fs::write(
        &env.clouds_yaml,
        text.replace("project_name: 'service'", "project_name: 'servcie'"),
    )
    .unwrap();
    let config = env.config("", SMALL_POOL);
    let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap_err();
    let CloudError::Fatal(m) = &e else {
        panic!("{e:?}")
    };
    assert!(!m.contains("rejected the password"), "{m}");
    for named in [
        "password",
        "username",
        "project_name",
        "user_domain_name",
        "project_domain_name",
        "role",
    ] {
        assert!(m.contains(named), "{named} not in: {m}");
    }
}

/// A region_name or interface no catalog endpoint has made every call
/// fail with osauth's "Endpoint for service compute was not found",
/// naming neither. The error names both as configured, and the regions
/// and interfaces the catalog has the service in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_miss_names_the_region_and_interface_and_what_the_catalog_has() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            interfaces: vec!["public", "internal"],
            ..HttpSettings::default()
        },
    )
    .await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    let connect = |clouds_yaml: String| {
        std::fs::write(&env.clouds_yaml, clouds_yaml).unwrap();
        let config = env.config("", SMALL_POOL);
        async move {
            match OpenStackCloud::connect(openstack(&config).settings().unwrap()).await {
                Ok(_) => panic!("connected"),
                Err(e) => e,
            }
        }
    };
    let e = connect(text.replace("region_name: 'RegionOne'", "region_name: 'RegionThree'")).await;
    let CloudError::Fatal(m) = &e else {
        panic!("{e:?}")
    };
    for said in [
        "region_name 'RegionThree'",
        "interface public",
        "compute",
        "RegionOne",
        "RegionTwo",
    ] {
        assert!(m.contains(said), "{said} not in: {m}");
    }
    let e = connect(text.replace("interface: public", "interface: admin")).await;
    let CloudError::Fatal(m) = &e else {
        panic!("{e:?}")
    };
    for said in [
        "region_name 'RegionOne'",
        "interface admin",
        "public, internal",
    ] {
        assert!(m.contains(said), "{said} not in: {m}");
    }
}

/// Two regions whose catalog lists `network` with RegionTwo first (as
/// Keystone's, which orders a service's endpoints by their random ids,
/// may) and the others with RegionOne first, RegionTwo's endpoints at
/// 127.0.0.2, where nothing listens: a call sent to RegionTwo fails
/// naming that address. No server is made (no simulated mysqld).
async fn two_regions_network_first_in_region_two() -> Env {
    env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            other_regions_host: Some("127.0.0.2".into()),
            region_order: BTreeMap::from([(
                "network",
                vec!["RegionTwo".to_owned(), "RegionOne".to_owned()],
            )]),
            ..HttpSettings::default()
        },
    )
    .await
}

impl Env {
    /// The face's clouds.yaml written with its `region_name: 'RegionOne'`
    /// line replaced by `with` (lines of the entry, indented by four;
    /// empty: none).
    fn region_lines(&self, with: &str) {
        let text = self.face.clouds_yaml("cloudsim");
        let line = "    region_name: 'RegionOne'\n";
        assert!(text.contains(line), "{text}");
        std::fs::write(&self.clouds_yaml, text.replace(line, with)).unwrap();
    }
}

/// No region_name on a catalog of two regions: osauth took each service's
/// first endpoint, each service on its own, so Nova, Cinder and Glance
/// went to RegionOne and Neutron to RegionTwo, and check-cloud said
/// nothing of regions. The connect fails for good, naming both regions
/// and region_name; with region_name set every service goes to that
/// region, whatever order the catalog lists it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_name_on_a_catalog_of_two_regions_is_fatal_naming_them() {
    let env = two_regions_network_first_in_region_two().await;
    env.region_lines("");
    let config = env.config("", SMALL_POOL);
    let e = match OpenStackCloud::connect(openstack(&config).settings().unwrap()).await {
        Ok(cloud) => {
            let (report, _) = check_cloud::check(&config, openstack(&config)).await;
            panic!(
                "connected with no region named, as {:?}:\n{report}",
                cloud.cloud_identity().await
            )
        }
        Err(e) => e,
    };
    let CloudError::Fatal(m) = &e else {
        panic!("{e:?}")
    };
    for said in ["region_name", "RegionOne, RegionTwo", "network"] {
        assert!(m.contains(said), "{said} not in: {m}");
    }
    let (report, cloud) = check_cloud::check(&config, openstack(&config)).await;
    assert!(cloud.is_none(), "{report}");
    let auth = line(&report, CheckKind::Auth).join("\n");
    assert!(auth.contains("RegionOne, RegionTwo"), "{report}");

    // Named, every service goes to RegionOne (Neutron too, which the
    // catalog lists in RegionTwo first) ...
    env.region_lines("    region_name: 'RegionOne'\n");
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    assert!(
        line(&report, CheckKind::Auth)[0].contains("region RegionOne"),
        "{report}"
    );
    // ... or every one to RegionTwo (Nova, the first asked, at 127.0.0.2).
    env.region_lines("    region_name: 'RegionTwo'\n");
    let Err(e) = OpenStackCloud::connect(openstack(&config).settings().unwrap()).await else {
        panic!("connected: RegionTwo's endpoints lead nowhere")
    };
    assert!(e.to_string().contains("127.0.0.2"), "{e}");
}

/// The regions a connect goes to are named on check-cloud's auth line:
/// the one named, or, with none named, the catalog's only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_clouds_auth_line_names_the_region() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(
        line(&report, CheckKind::Auth),
        ["auth: ok (user pool in project service, region RegionOne, Nova microversion 2.79)"],
        "{report}"
    );
    env.region_lines("");
    let (report, cloud) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(
        line(&report, CheckKind::Auth),
        ["auth: ok (user pool in project service, no region named (the catalog has one, RegionOne), Nova microversion 2.79)"],
        "{report}"
    );
    // Still recorded as none named: a store of a start before keeps it.
    assert_eq!(
        cloud.unwrap().cloud_identity().await.unwrap(),
        pool_manager::cloud::CloudIdentity::OpenStack {
            project_id: env.face.project_id().to_owned(),
            region: None,
            server_tag: "warmpool".into(),
        }
    );
}

/// clouds.yaml's `regions:` (a vendor's or a multi-region file's list)
/// was dropped in silence: with no region_name its first is the region,
/// as openstacksdk takes it, whether a name or a mapping's `name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regions_list_without_region_name_names_its_first() {
    let env = two_regions_network_first_in_region_two().await;
    let config = env.config("", SMALL_POOL);
    let region_of = |cloud: OpenStackCloud| async move {
        match cloud.cloud_identity().await.unwrap() {
            pool_manager::cloud::CloudIdentity::OpenStack { region, .. } => region,
            other => panic!("{other:?}"),
        }
    };
    for regions in [
        "    regions: [RegionOne, RegionTwo]\n",
        "    regions:\n      - name: RegionOne\n      - name: RegionTwo\n",
    ] {
        env.region_lines(regions);
        let cloud = OpenStackCloud::connect(openstack(&config).settings().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{regions}: {e}"));
        assert_eq!(
            region_of(cloud).await.as_deref(),
            Some("RegionOne"),
            "{regions}"
        );
    }
}

/// `region_name: ''` (or `OS_REGION_NAME=`) was looked for as a region
/// named "" and missed every service; it is none named, as keystoneauth
/// reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_region_name_is_none_named() {
    let env = two_regions_network_first_in_region_two().await;
    let config = env.config("", SMALL_POOL);
    env.region_lines("    region_name: ''\n");
    let Err(e) = OpenStackCloud::connect(openstack(&config).settings().unwrap()).await else {
        panic!("connected: no region named on two regions")
    };
    assert!(
        e.to_string().contains("RegionOne, RegionTwo") && !e.to_string().contains("region_name ''"),
        "{e}"
    );
}

/// Keystone lets an endpoint have no region (`openstack endpoint create`
/// without `--region`) and puts `"region": null` in every token's
/// catalog; osauth cannot read a token with one, of any service, so every
/// login failed as "error decoding response body", a transient error
/// tried again for ever. It is Fatal, and names the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_endpoint_of_no_region_is_fatal_naming_the_fix() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            regionless_endpoints: vec!["placement"],
            ..HttpSettings::default()
        },
    )
    .await;
    let config = env.config("", SMALL_POOL);
    let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap_err();
    let CloudError::Fatal(m) = &e else {
        panic!("{e:?}")
    };
    for said in [
        "no region",
        "openstack endpoint list",
        "openstack endpoint set --region",
    ] {
        assert!(m.contains(said), "{said} not in: {m}");
    }
}

/// A clouds.yaml naming no project gets an unscoped token from Keystone
/// (the user has no default project), which carries no service catalog:
/// osauth failed to read it ("error decoding response body"), a transient
/// error tried again for ever and reported as the cloud unreachable. It is
/// the configuration's fault, and said so, naming the keys to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clouds_yaml_without_a_project_is_fatal_naming_project_name() {
    let env = env().await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    let without = text.replace("      project_name: 'service'\n", "");
    assert_ne!(without, text);
    std::fs::write(&env.clouds_yaml, without).unwrap();
    let config = env.config("", SMALL_POOL);
    let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("project_name") && m.contains("project_id") && m.contains("no project")),
        "{e:?}"
    );
}

/// devstack's clouds.yaml names both domains by id (`user_domain_id:
/// default`, `project_domain_id: default`): the default domain's id is
/// its name "Default" for osauth, which names the user's domain by name
/// only, and the login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devstacks_domain_ids_log_in() {
    let env = env().await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    let by_id = text
        .replace("user_domain_name: 'Default'", "user_domain_id: 'default'")
        .replace(
            "project_domain_name: 'Default'",
            "project_domain_id: 'default'",
        );
    assert!(!by_id.contains("domain_name"), "{by_id}");
    std::fs::write(&env.clouds_yaml, by_id).unwrap();
    let cloud = env.driver().await;
    cloud
        .find_ports_by_name("x")
        .await
        .expect("logged in by the domains' ids");
}

/// A user of another domain named by its id, which osauth cannot carry:
/// it logged in to domain "Default" instead, and Keystone's 401 told to
/// check a `user_domain_name` the file lacks. Refused before any request,
/// naming the key and what to give instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_domain_id_osauth_cannot_carry_is_refused_naming_the_key() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            domain_name: "Users".into(),
            ..HttpSettings::default()
        },
    )
    .await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    let by_id = text.replace(
        "user_domain_name: 'Users'",
        &format!("user_domain_id: '{}'", env.face.domain_id()),
    );
    assert_ne!(by_id, text);
    std::fs::write(&env.clouds_yaml, by_id).unwrap();
    let before = env.face.faults().token_requests();
    let err = match Config::parse(&env.config_text("", SMALL_POOL))
        .map_err(|e| e.to_string())
        .and_then(|config| openstack(&config).settings().map_err(|e| e.to_string()))
    {
        Ok(settings) => match OpenStackCloud::connect(settings).await {
            Ok(_) => panic!("logged in"),
            Err(e) => e.to_string(),
        },
        Err(e) => e,
    };
    assert!(
        err.contains("clouds.cloudsim.auth.user_domain_id")
            && err.contains("user_domain_name instead"),
        "{err}"
    );
    assert_eq!(env.face.faults().token_requests(), before, "{err}");
}

/// Keystone says why it refused a login when it is more than a wrong
/// password (a locked, disabled or expired account: keystone's
/// AccountLocked, UserDisabled, PasswordExpired); that reason is passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_is_named_as_keystone_names_it() {
    let env = env().await;
    env.face.faults().answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        1,
        401,
        r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The account is locked for user: 9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c5d."}}"#,
    );
    let config = env.config("", SMALL_POOL);
    let e = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("user pool in project service (401)") && m.contains("The account is locked for user: 9a8b")),
        "{e:?}"
    );
}

fn line(report: &check_cloud::Report, kind: CheckKind) -> Vec<String> {
    report
        .checks
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_passes_on_a_usable_cloud() {
    let env = env().await;
    let config = env.config("", SMALL_POOL);
    let (report, cloud) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    assert!(cloud.is_some());
    let text = report.to_string();
    for expected in [
        "auth: ok (user pool in project service, region RegionOne, Nova microversion 2.79)",
        "flavor: ok (db.small: 1 vCPU, 1024 MiB RAM)",
        "image: ok (mysql-8.0 = ",
        "network: ok (mgmt-net = ",
        "zones: ok (Nova zones: az1, az2)",
        "volumes: ok (Cinder zones: az1, az2)",
        "quota: ok (",
        "pools need room for 2 more db.small",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

/// check-cloud says, per pool flavor, the disk IOPS limit the lead-time
/// prior would be stretched for and the extra spec it is read from, and
/// that a pool's own `iops_limit` overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_a_flavors_iops_limit_and_its_extra_spec() {
    let env = env_with(
        SimConfig {
            flavor_extra_specs: [
                (
                    "db.small".to_owned(),
                    [("quota:disk_total_iops_sec".to_owned(), "6400".to_owned())].into(),
                ),
                (
                    "db.medium".to_owned(),
                    [
                        ("quota:disk_read_iops_sec".to_owned(), "3000".to_owned()),
                        ("quota:disk_write_iops_sec".to_owned(), "1500".to_owned()),
                    ]
                    .into(),
                ),
            ]
            .into(),
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let pools = format!(
        "{SMALL_POOL}{}",
        r#"
[[pools]]
flavor = "db.medium"
availability_zone = "az1"
min_ready = 1
max_ready = 1
image = "mysql-8.0"
iops_limit = 500
"#
    );
    let config = env.config("", &pools);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        line(&report, CheckKind::FlavorIops),
        [
            "flavor iops: ok (db.medium: 1500 IOPS, from its extra spec quota:disk_write_iops_sec; \
             the own iops_limit of db.medium@az1 (500) overrides it)",
            "flavor iops: ok (db.small: 6400 IOPS, from its extra spec quota:disk_total_iops_sec: \
             the lead-time prior of its pools is stretched for it)",
        ],
        "{report}"
    );
}

/// A flavor without a disk IOPS limit (no front-end QoS, the usual case)
/// is said so, naming the extra specs looked for; one whose extra specs
/// the cloud's policy hides, or whose read fails, is said so too: none
/// fails check-cloud, as the prior works without the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_says_why_a_flavor_has_no_iops_limit_and_passes() {
    for (nova_max, spoken) in [((2, 104), "2.79"), ((2, 60), "2.52")] {
        let env = env_with(
            sim_config(),
            HttpSettings {
                nova_max_version: nova_max,
                ..HttpSettings::default()
            },
        )
        .await;
        let config = env.config("", SMALL_POOL);
        let (report, _) = check_cloud::check(&config, openstack(&config)).await;
        assert!(report.passed(), "{spoken}: {report}");
        let iops = line(&report, CheckKind::FlavorIops);
        assert!(
            iops.len() == 1
                && iops[0].starts_with("flavor iops: ok (db.small: none: its extra specs set no ")
                && iops[0].contains("quota:disk_total_iops_sec"),
            "{spoken}: {report}"
        );

        env.sim.hide_flavor_extra_specs(true);
        let (report, _) = check_cloud::check(&config, openstack(&config)).await;
        assert!(report.passed(), "{spoken}: {report}");
        let iops = line(&report, CheckKind::FlavorIops);
        assert!(
            iops.len() == 1
                && iops[0].starts_with("flavor iops: ok (db.small: unknown: ")
                && iops[0].contains("os_compute_api:os-flavor-extra-specs:index"),
            "{spoken}: {report}"
        );
        env.sim.hide_flavor_extra_specs(false);

        if spoken == "2.52" {
            // Below 2.61 the extra specs are a call of their own, which
            // may fail: said, and passed.
            let id = env.driver().await.flavor("db.small").await.unwrap().id;
            env.face.faults().answer_next(
                Service::Compute,
                "GET",
                &format!("/v2.1/flavors/{id}/os-extra_specs"),
                1,
                500,
                r#"{"computeFault": {"code": 500, "message": "Unexpected API Error."}}"#,
            );
            let (report, _) = check_cloud::check(&config, openstack(&config)).await;
            assert!(report.passed(), "{report}");
            let iops = line(&report, CheckKind::FlavorIops);
            assert!(
                iops.len() == 1
                    && iops[0].starts_with(
                        "flavor iops: db.small: its disk IOPS limit could not be read: "
                    )
                    && iops[0].contains("500"),
                "{report}"
            );
        }
    }
}

/// A pool's own `iops_limit` stretches its lead-time prior whatever its
/// flavor says: the line of a flavor with no limit, or one it cannot
/// read, names that pool too, rather than leaving "not stretched" said
/// for every pool of the flavor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_a_pools_own_iops_limit_when_its_flavor_has_none() {
    let env = env_with(sim_config(), HttpSettings::default()).await;
    let config = env.config("", &format!("{SMALL_POOL}iops_limit = 500\n"));
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    let iops = line(&report, CheckKind::FlavorIops);
    assert!(
        iops.len() == 1
            && iops[0].starts_with("flavor iops: ok (db.small: none: its extra specs set no ")
            && iops[0].ends_with(
                "; the own iops_limit of db.small@az1 (500) stretches that pool's lead-time prior)"
            ),
        "{report}"
    );

    env.sim.hide_flavor_extra_specs(true);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    let iops = line(&report, CheckKind::FlavorIops);
    assert!(
        iops.len() == 1
            && iops[0].starts_with("flavor iops: ok (db.small: unknown: ")
            && iops[0].ends_with(
                "; the own iops_limit of db.small@az1 (500) stretches that pool's lead-time prior)"
            ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_each_problem() {
    let env = env_with_quotas(Quotas {
        max_instances: 2,
        ..Quotas::default()
    })
    .await;
    // Missing image, flavor, network and Cinder zone, short quota at once.
    let pools = r#"
[[pools]]
flavor = "db.small"
availability_zone = "az1"
min_ready = 3
max_ready = 4
image = "mysql-9.9"
[[pools]]
flavor = "db.tiny"
availability_zone = "az1"
min_ready = 1
max_ready = 1
image = "mysql-8.0"
"#;
    let config = env.config(
        "[cloud.availability_zones.az2]\nmanagement_network = \"no-such-net\"\n\
         [cloud.availability_zones.az1]\nvolume_availability_zone = \"nova\"",
        pools,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed());
    let image = line(&report, CheckKind::Image).join("\n");
    assert!(
        image.contains(
            "image: no image named 'mysql-9.9' is visible to user pool in project service"
        ),
        "{report}"
    );
    let flavor = line(&report, CheckKind::Flavor).join("\n");
    assert!(
        flavor.contains("flavor: no flavor named 'db.tiny'"),
        "{report}"
    );
    let network = line(&report, CheckKind::Network).join("\n");
    assert!(
        network.contains("network: no network named 'no-such-net'"),
        "{report}"
    );
    assert!(network.contains("network: ok (mgmt-net"), "{report}");
    let volumes = line(&report, CheckKind::Volume).join("\n");
    assert_eq!(
        volumes,
        "volumes: volumes of pools in az1 are created in Cinder zone 'nova', which Cinder does not have (its zones: az1, az2); set volume_availability_zone for az1",
        "{report}"
    );
    let quota = line(&report, CheckKind::Quota).join("\n");
    assert_eq!(
        quota, "quota: instances 0 of 2 used; pools need room for 3 more db.small; not counted: db.tiny@az1 (its flavor could not be read: see the flavor line)",
        "{report}"
    );
    // Both pools are in az1: az2's section applies to no server.
    assert_eq!(
        line(&report, CheckKind::ZoneOverride),
        ["zone overrides: cloud.availability_zones.az2 applies to no pool, none is in az2 (the pools' zones: az1); if the zone is misspelt, its pools use the defaults (cloud.management_network, a Cinder zone of their zone's name)"],
        "{report}"
    );

    // A wrong password stops at auth, with the user named.
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    std::fs::write(&env.clouds_yaml, text.replace("'poolpass'", "'wrong'")).unwrap();
    let (report, cloud) = check_cloud::check(&config, openstack(&config)).await;
    assert!(cloud.is_none());
    let auth = line(&report, CheckKind::Auth);
    assert!(
        auth.len() == 1
            && auth[0].starts_with(
                "auth: Keystone refused the login of user pool in project service (401): "
            )
            && auth[0].contains("wrong password"),
        "{report}"
    );
    assert_eq!(
        report.checks.len(),
        2,
        "the store's line and auth's: {report}"
    );
}

/// A network, image or security group the cloud does not have is named
/// with those it does have, so that a misspelt name is seen at a glance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_what_is_visible_beside_a_missing_name() {
    let env = env().await;
    let pools = SMALL_POOL.replace("mysql-8.0", "mysql-9.9");
    let text = env
        .config_text("security_groups = [\"no-such-group\"]", &pools)
        .replace(
            "management_network = \"mgmt-net\"",
            "management_network = \"no-such-net\"",
        );
    let config = Config::parse(&text).unwrap();
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed());
    assert_eq!(
        line(&report, CheckKind::Network),
        ["network: no network named 'no-such-net' is visible to user pool in project service (visible networks: mgmt-net, tenant-net)"],
        "{report}"
    );
    let image = line(&report, CheckKind::Image).join("\n");
    assert!(
        image.starts_with("image: no image named 'mysql-9.9' is visible to user pool in project service (visible images: mysql-8.0)"),
        "{report}"
    );
    assert_eq!(
        line(&report, CheckKind::SecurityGroup),
        [
            "security group: cloud.security_groups \"no-such-group\": no security group named 'no-such-group' is visible to user pool in project service (the project's security groups: default)",
            "security group: ok (tenant ports: the project's default group (tenant_port_security_groups unset))",
        ],
        "{report}"
    );
}

/// A flavor the cloud does not have is named, with the project, beside
/// the flavors it does (as a missing image or network is), wherever it
/// reaches an operator: CreatePool and UpdatePool (FAILED_PRECONDITION, as
/// for an image, nothing stored or changed), the start-up check of a
/// configured pool, and check-cloud. Without the list a misspelt or
/// retired flavor meant a trip to `openstack flavor list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_flavor_is_named_with_the_flavors_the_cloud_offers() {
    use warmpool_client::Client;
    let mut flavors: Vec<String> = ["db.small", "db.medium", "db.large"].map(Into::into).into();
    flavors.extend((1..=10).map(|n| format!("db.x{n:02}")));
    let env = env_with(
        SimConfig {
            flavors,
            images: vec!["mysql-8.0".into(), "mysql-8.4".into()],
            // No server is made.
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let offered = "is visible to user pool in project service (visible flavors: db.large, db.medium, db.small, db.x01, db.x02, db.x03, db.x04, db.x05, db.x06, db.x07 and 3 more)";
    let named =
        |m: &str, flavor: &str| m.contains(&format!("no flavor named '{flavor}' {offered}"));

    let e = env
        .driver()
        .await
        .check_boot_spec(&PoolKey::new("db.smal", "az1"), "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if named(m, "db.smal")),
        "{e:?}"
    );

    let config = env.config("", &SMALL_POOL.replace("db.small", "db.smal"));
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let flavor = line(&report, CheckKind::Flavor).join("\n");
    assert!(named(&flavor, "db.smal"), "{report}");
    let err = match start_daemon(config).await {
        Ok(_) => panic!("started with a configured pool of a flavor Nova lacks"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        named(&err, "db.smal") && err.contains("db.smal@az1"),
        "{err}"
    );

    let (running, stop) = start_daemon(env.config("", "")).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let idle = warmpool_proto::v1::PoolSpec {
        min_ready: 0,
        ..api_pool_spec()
    };
    let refused = support::expect_code(
        client.create_pool("db.smal", "az1", idle.clone()).await,
        tonic::Code::FailedPrecondition,
    );
    assert!(
        named(&refused, "db.smal") && refused.contains("db.smal@az1"),
        "{refused}"
    );
    support::expect_code(
        client.get_pool("db.smal", "az1").await,
        tonic::Code::NotFound,
    );

    // A pool whose flavor is retired after it was created: a new image is
    // refused, naming what the cloud offers now, and the pool is unchanged.
    client.create_pool("db.x10", "az1", idle).await.unwrap();
    env.sim.retire_flavor("db.x10");
    let refused = support::expect_code(
        client
            .update_pool(
                "db.x10",
                "az1",
                warmpool_proto::v1::PoolSpec {
                    image: "mysql-8.4".into(),
                    ..Default::default()
                },
                ["image"],
            )
            .await,
        tonic::Code::FailedPrecondition,
    );
    let now_offered = "no flavor named 'db.x10' is visible to user pool in project service (visible flavors: db.large, db.medium, db.small, db.x01, db.x02, db.x03, db.x04, db.x05, db.x06, db.x07 and 2 more)";
    assert!(refused.contains(now_offered), "{refused}");
    let pool = client.get_pool("db.x10", "az1").await.unwrap();
    assert_eq!(pool.spec.unwrap().image, "mysql-8.0");
    assert!(env.sim.servers().is_empty());
    drop(client);
    stop_daemon(running, stop).await;
}

/// How check-cloud's warnings of a management group that lets pool servers
/// reach one another end.
const KEEP_THEM_APART: &str = "every pool server (a sold one too: it keeps its management port) reaches every other's mysqld; admit mysql_port from warmpoold's address only, as a /32 (README, \"A sold server stays on the management network\")";

/// check-cloud's warning of `security_groups` naming the default group
/// (as `setting`).
fn default_group_warning(setting: &str) -> String {
    format!("security group: cloud.security_groups {setting:?} is the project's default group, which admits every protocol from every port in it: {KEEP_THEM_APART}")
}

/// An environment whose cloud has `quotas`, the rest as [`env`]'s.
async fn env_with_quotas(quotas: Quotas) -> Env {
    env_with(
        SimConfig {
            quotas,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await
}

/// A cloud whose project may run `max_instances` servers, a config of one
/// pool of min_ready 3 on it, and the driver.
async fn pool_of_three_under_quota(max_instances: usize) -> (Env, Config, OpenStackCloud) {
    let env = env_with_quotas(Quotas {
        max_instances,
        ..Quotas::default()
    })
    .await;
    let config = env.config(
        "",
        SMALL_POOL
            .replace("min_ready = 2", "min_ready = 3")
            .as_str(),
    );
    let cloud = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap();
    (env, config, cloud)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_quota_counts_pool_servers_that_exist() {
    let (_env, config, cloud) = pool_of_three_under_quota(2).await;
    // Two of the pool's three already run: one more is needed, none fits.
    cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap();
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(
        line(&report, CheckKind::Quota),
        ["quota: instances 2 of 2 used; pools need room for 1 more db.small"]
    );
}

/// An operator window raises what a pool needs at its peak: check-cloud
/// counts the highest window min above min_ready, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_quota_counts_a_pools_window_min() {
    let env = env_with_quotas(Quotas {
        max_instances: 20,
        ..Quotas::default()
    })
    .await;
    let pools = SMALL_POOL.replace(
        "max_ready = 4",
        "max_ready = 300\nwindows = [\"Mon-Fri 09:00-18:00 min 300\", \"Sat 10:00-12:00 min 50\"]",
    );
    let config = env.config("", &pools);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(
        line(&report, CheckKind::Quota),
        ["quota: instances 0 of 20 used; pools need room for 300 more db.small (db.small@az1 counted at its highest window min 300, above min_ready 2)"],
        "{report}"
    );
}

/// check-cloud's quota line counts Neutron's port quota too: each server
/// to boot takes its own port and, sold, the tenant's; each unsold one the
/// tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_quota_counts_the_ports_pool_servers_take() {
    for (max_ports, verdict) in [
        (
            4,
            "quota: ports 1 of 4 used, 5 more needed (each server to boot takes its own and its sale's, each unsold one its sale's); pools need room for 2 more db.small",
        ),
        (
            10,
            "quota: ok (instances 1 of 10, cores 1 used (unlimited), ram 1024 used (unlimited), ports 1 of 10; pools need room for 2 more db.small)",
        ),
    ] {
        let env = env_with_quotas(Quotas {
max_instances: 10,
max_ports,
..Quotas::default()
})
        .await;
        let config = env.config("", &SMALL_POOL.replace("min_ready = 2", "min_ready = 3"));
        let cloud = OpenStackCloud::connect(openstack(&config).settings().unwrap())
            .await
            .unwrap();
        // One of the pool's three runs (its own port taken, its sale's not).
        cloud
            .create_server(&spec("a", "db.small", "az1"))
            .await
            .unwrap();
        let (report, _) = check_cloud::check(&config, openstack(&config)).await;
        assert_eq!(line(&report, CheckKind::Quota), [verdict], "{report}");
    }
}

/// A Neutron that will not tell the port quota (its policy's 403) leaves
/// check-cloud's quota line Nova's verdict, saying the ports are not
/// counted and why, as the daemon's headroom does: the warning the driver
/// logs is below check-cloud's log filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_says_when_it_cannot_count_the_port_quota() {
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        max_ports: 10,
        ..Quotas::default()
    })
    .await;
    let config = env.config("", SMALL_POOL);
    env.face.faults().refuse_quota_details(true);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let quota = line(&report, CheckKind::Quota);
    assert!(
        quota.len() == 1
            && quota[0].starts_with("quota: ok (instances 0 of 10")
            && quota[0].contains("; ports: not counted (Neutron refused the quota details: ")
            && quota[0].contains("HTTP 403"),
        "{report}"
    );
    env.face.faults().refuse_quota_details(false);

    // Neutron failing the read: Nova's verdict still, and why the ports
    // are not counted, not the whole line failed.
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    env.face.faults().answer_next(
        Service::Network,
        "GET",
        &details,
        u32::MAX,
        503,
        r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let quota = line(&report, CheckKind::Quota);
    assert!(
        quota.len() == 1
            && quota[0].starts_with("quota: ok (instances 0 of 10")
            && quota[0].contains("; ports: not counted (reading Neutron's quota details failed: ")
            && quota[0].contains("HTTP 503"),
        "{report}"
    );
    assert!(report.passed(), "{report}");
}

/// A pool whose flavor check-cloud could not read (the cloud has no such
/// flavor) cannot be counted in the quota: the quota line names it and
/// why, rather than an "ok" that reads as covering every pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_quota_names_the_pools_it_could_not_count() {
    let env = env_with_quotas(Quotas {
        max_instances: 10,
        ..Quotas::default()
    })
    .await;
    let pools = format!("{SMALL_POOL}{}", SMALL_POOL.replace("db.small", "db.gone"));
    let config = env.config("", &pools);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let flavor = line(&report, CheckKind::Flavor).join("\n");
    assert!(flavor.contains("no flavor named 'db.gone'"), "{report}");
    let quota = line(&report, CheckKind::Quota);
    assert!(
        quota.len() == 1
            && quota[0].starts_with("quota: ok (instances 0 of 10")
            && quota[0].ends_with(
                "pools need room for 2 more db.small; not counted: db.gone@az1 (its flavor could not be read: see the flavor line))"
            ),
        "{report}"
    );
}

/// A flavor whose sizes are absurd (garbage from the cloud, or a cloud that
/// means "unlimited" by them) does not overflow check-cloud's count of the
/// quota the pools need: the count saturates, and the line is still said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_counts_the_quota_of_a_flavor_of_absurd_sizes() {
    let env = env_with(
        SimConfig {
            flavor_sizes: vec![cloudsim::FlavorSize::new(
                "db.small",
                u32::MAX,
                u64::MAX / 2,
                10,
            )],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config("", &SMALL_POOL.replace("min_ready = 2", "min_ready = 3"));
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let quota = line(&report, CheckKind::Quota);
    assert!(
        quota.len() == 1 && quota[0].contains("pools need room for 3 more db.small"),
        "{report}"
    );
}

/// Neutron's default policy for a project member: a port a server is bound
/// to may not be deleted (403, "disallowed by policy"), which the driver
/// reads as a refusal asking again does not change; once unbound, it may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_may_not_delete_a_bound_port() {
    let env = env_with(
        SimConfig {
            member_port_policy: true,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    settled(&cloud, &server.id).await;
    let network = cloud.network("tenant-net").await.unwrap();
    let port = cloud
        .create_port(&port_spec("warmpool-o1", &network.id))
        .await
        .unwrap();
    cloud.attach_port(&server.id, &port.id).await.unwrap();
    let e = cloud.delete_port(&port.id).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("disallowed by policy")),
        "{e:?}"
    );
    cloud.detach_port(&server.id, &port.id).await.unwrap();
    for _ in 0..200 {
        if cloud.get_port(&port.id).await.unwrap().device_id.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cloud.delete_port(&port.id).await.unwrap();
}

/// A member-only pool user on another project's network, shared with
/// warmpool's (as the testbed's tenant-net): Neutron's default policy
/// lets it make a port there, but not choose its address, whatever the
/// address (403 naming `create_port:fixed_ips:ip_address`). An order with
/// a fixed_ip is refused FAILED_PRECONDITION saying what to do (send it
/// without fixed_ip, or give the cloud user admin), leaving no port and
/// the claimed instance back in the pool; the same order without fixed_ip
/// is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_ip_the_policy_refuses_a_member_says_what_to_do() {
    use cloudsim::http::{project_id_of, NetworkSpec};
    use tonic::Code;
    use warmpool_client::Client;
    let theirs = NetworkSpec::new("their-net", "10.61.0.0/16", "10.61.0.1", false)
        .of_project("tenant")
        .shared_with_project("service");
    let mut settings = HttpSettings::default();
    settings.networks.push(theirs.clone());
    let env = env_with(
        SimConfig {
            member_port_policy: true,
            ..with_mysqld()
        },
        settings,
    )
    .await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let order = |id: &str, fixed_ip: &str| {
        let mut request = support::allocate_request(
            id,
            "db.small",
            "az1",
            support::new_volume(1, true),
            &theirs.id,
            Duration::from_secs(30),
        );
        request.tenant_project_id = project_id_of("tenant");
        if !fixed_ip.is_empty() {
            let network = request.network.as_mut().unwrap();
            network.subnet_id = theirs.subnet_id.clone();
            network.fixed_ip = fixed_ip.into();
        }
        request
    };

    let message = support::expect_code(
        client.allocate(order("o1", "10.61.0.7")).await,
        Code::FailedPrecondition,
    );
    assert!(
        message.starts_with("cannot create the tenant port: ")
            && message.contains("rule:create_port:fixed_ips:ip_address")
            && message.contains("without fixed_ip")
            && message.contains("admin role"),
        "{message}"
    );
    assert!(
        env.sim.ports().iter().all(|p| p.network_id != theirs.id),
        "{:?}",
        env.sim.ports()
    );
    wait_ready(&running.manager, &key, 2).await;

    let served = client.allocate(order("o2", "")).await.unwrap();
    assert!(
        served.ip_address.starts_with("10.61."),
        "an address Neutron chose: {served:?}"
    );
    let released = client.release("o2", None).await.unwrap();
    assert_eq!(
        released.state,
        warmpool_client::api::AllocationState::Released as i32,
        "{released:?}"
    );
    assert!(
        env.sim.ports().iter().all(|p| p.id != served.port_id),
        "the release deleted the order's port, once Nova had unbound it: {:?}",
        env.sim.ports()
    );
    stop_daemon(running, stop).await;
}

/// A network with no subnet: Neutron creates the port with no address and
/// says none is coming (not `ip_allocation: deferred`), which the
/// allocator refuses before it claims an instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_on_a_network_without_a_subnet_has_no_address_coming() {
    let tenant_net = HttpSettings::default()
        .networks
        .into_iter()
        .find(|n| n.name == "tenant-net")
        .unwrap();
    let env = env_with(
        SimConfig {
            networks_without_subnet: vec![tenant_net.id.clone()],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env.driver().await;
    let network = cloud.network("tenant-net").await.unwrap();
    let created = cloud
        .create_port(&port_spec("warmpool-o1", &network.id))
        .await
        .unwrap();
    let read = cloud.get_port(&created.id).await.unwrap();
    for port in [created, read] {
        assert_eq!((port.ip_address, port.address_deferred), (None, false));
    }
}

/// A management network that is not there fails the network check once:
/// listing the pool servers (the quota check) reads their addresses on it,
/// and lists a server whose address cannot be read without one, so the
/// quota is checked, counting that server, and the network's problem is
/// not said again as a quota problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_management_network_is_not_reported_again_as_quota() {
    let env = env().await;
    let cloud = env.driver().await;
    let created = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    // ACTIVE: its address, which the listing reads, is on that network.
    assert_eq!(
        settled(&cloud, &created.id).await.status,
        ServerStatus::Active
    );
    let config = env.config(
        "[cloud.availability_zones.az1]\nmanagement_network = \"no-such-net\"",
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let network = line(&report, CheckKind::Network).join("\n");
    assert!(
        network.contains("no network named 'no-such-net'"),
        "{report}"
    );
    let quota = line(&report, CheckKind::Quota).join("\n");
    assert!(
        quota.starts_with("quota: ok (instances 1 of 200,"),
        "{report}"
    );
}

/// A server read looks its zone's management network up (by name, cached
/// ten minutes) for the address Nova keys by the network's name. A lookup
/// that fails (the network renamed or its share withdrawn: no network of
/// the name; a second network given the name) says nothing of the server:
/// read as the server's own NotFound, the replenisher took a booting server
/// for deleted and the allocator discarded one Ready instance after
/// another. The read, and the listing, give the server as Nova showed it,
/// without the address no name was found for, and the warning names the
/// network and the setting.
#[tokio::test]
async fn a_management_network_that_cannot_be_resolved_is_no_missing_server() {
    let mut settings = HttpSettings::default();
    settings.networks.push(cloudsim::http::NetworkSpec {
        id: "5b2f1c1e-0000-4000-8000-00000000aa01".into(),
        subnet_id: "5b2f1c1e-0000-4000-8000-00000000aa02".into(),
        ..cloudsim::http::NetworkSpec::new("tenant-net", "10.9.0.0/16", "10.9.0.1", true)
    });
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    let created = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(
        settled(&cloud, &created.id).await.status,
        ServerStatus::Active
    );

    for (network, cause) in [
        ("no-such-net", "no network named 'no-such-net'"),
        ("tenant-net", "2 networks are named 'tenant-net'"),
    ] {
        let lost = env
            .driver_with(&format!(
                "[cloud.availability_zones.az1]\nmanagement_network = \"{network}\""
            ))
            .await;
        let logs = support::Logs::capture();
        let read = lost.read_server(&created.id).await.unwrap();
        assert_eq!(
            (read.status, read.mysql_addr),
            (ServerStatus::Active, None),
            "{network}: {read:?}"
        );
        let text = logs.text();
        assert!(
            text.contains(cause) && text.contains("availability_zones.az1.management_network"),
            "{network}: {text}"
        );
        let listed = lost.list_pool_servers().await.unwrap();
        let server = listed.iter().find(|s| s.id == created.id);
        assert_eq!(
            server.map(|s| (s.status, s.mysql_addr)),
            Some((ServerStatus::Active, None)),
            "{network}: {listed:?}"
        );
    }
    // The server is there all along.
    let listed = cloud.list_pool_servers().await.unwrap();
    assert!(listed.iter().any(|s| s.id == created.id), "{listed:?}");
}

/// A zone's management network renamed in Neutron (or deleted, or a
/// second one given its name) leaves its servers' addresses unreadable.
/// No reader of the pool-server listing uses them (the reconciler and the
/// adoption of a crash's server go by ids and metadata), yet the listing
/// failed as a whole: every reconcile pass failed, for every pool, so
/// leaks, ERROR servers and crashed orders were left as they were. Those
/// servers are listed without an address, and the problem is warned of
/// once, not per server per listing or read; a read of one of them is
/// Nova's answer without the address (read on the last name that
/// resolved, which Nova no longer keys it by): a boot waiting for it
/// polls on until the network is mended, or its deadline.
#[tokio::test]
async fn a_zones_lost_management_network_leaves_its_servers_listed_without_an_address() {
    let mut settings = HttpSettings::default();
    settings.networks.push(cloudsim::http::NetworkSpec::new(
        "net2",
        "127.78.0.0/16",
        "127.78.0.254",
        false,
    ));
    let env = env_with(sim_config(), settings).await;
    let cloud = env
        .driver_with("[cloud.availability_zones.az2]\nmanagement_network = \"net2\"")
        .await;
    let mut ids = Vec::new();
    for (instance, az) in [("a", "az1"), ("b", "az2"), ("c", "az2")] {
        let created = cloud
            .create_server(&spec(instance, "db.small", az))
            .await
            .unwrap();
        assert_eq!(
            settled(&cloud, &created.id).await.status,
            ServerStatus::Active
        );
        ids.push(created.id);
    }
    let addressed = |listed: &[Server]| -> Vec<Option<bool>> {
        ids.iter()
            .map(|id| {
                listed
                    .iter()
                    .find(|s| &s.id == id)
                    .map(|s| s.mysql_addr.is_some())
            })
            .collect()
    };
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(addressed(&listed), [Some(true); 3], "{listed:?}");

    env.face.faults().rename_network("net2", "net2-old");
    // Past the ten minutes a looked-up name is trusted.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(601)).await;
    tokio::time::resume();
    let logs = support::Logs::capture();
    for _ in 0..2 {
        let listed = cloud.list_pool_servers().await.unwrap();
        assert_eq!(
            addressed(&listed),
            [Some(true), Some(false), Some(false)],
            "{listed:?}"
        );
    }
    let warned = logs.text().matches("no network named 'net2'").count();
    assert_eq!(warned, 1, "{}", logs.text());
    let read = cloud.read_server(&ids[1]).await.unwrap();
    assert_eq!(
        (read.status, read.mysql_addr),
        (ServerStatus::Active, None),
        "{read:?}"
    );
    let text = logs.text();
    assert_eq!(
        (
            text.matches("no network named 'net2'").count(),
            text.matches("availability_zones.az2.management_network")
                .count()
        ),
        (1, 1),
        "{text}"
    );
}

/// `read_server` is Nova's read; an ACTIVE server's address is read on its
/// zone's management network, whose name the driver asks Neutron for
/// again every ten minutes. A refresh Neutron fails (a 5xx, a 429 storm
/// from its rate limiter) failed the whole read, and its 429 was passed
/// on as Nova's, pausing the zone's boots: no boot got past ACTIVE and
/// purchases were told Nova failed. The read keeps the last name that
/// resolved, and the address with it.
#[tokio::test]
async fn a_server_read_keeps_the_last_management_network_name_while_neutron_fails() {
    let (env, cloud, server) = env_with_a_server().await;
    let active = settled(&cloud, &server.id).await;
    assert_eq!(active.status, ServerStatus::Active);
    let addr = active.mysql_addr.expect("an ACTIVE server's address");
    let faults = env.face.faults();
    let neutron_failing: [&dyn Fn(); 2] =
        [&|| faults.server_error_next(Service::Network, 50), &|| {
            faults.throttle_next(Service::Network, 50, Duration::from_secs(30))
        }];
    let logs = support::Logs::capture();
    for fail in neutron_failing {
        // Past the ten minutes a looked-up name is trusted.
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(601)).await;
        tokio::time::resume();
        fail();
        let read = cloud
            .read_server(&server.id)
            .await
            .expect("Nova answered the read");
        assert_eq!(
            (read.status, read.mysql_addr),
            (ServerStatus::Active, Some(addr)),
            "{read:?}"
        );
        faults.clear();
    }
    assert!(
        logs.text().contains("last name that resolved, 'mgmt-net'"),
        "{}",
        logs.text()
    );
}

/// A process whose first lookup of the management network Neutron fails
/// (a restart during a Neutron outage, resuming boots) has no name to
/// read an address on: the read still gives what Nova showed, its status
/// right, without the address, rather than failing. Neutron is asked
/// again 30 s later.
#[tokio::test]
async fn a_server_read_with_no_management_network_name_yet_gives_the_server_without_an_address() {
    let (env, cloud, server) = env_with_a_server().await;
    assert_eq!(
        settled(&cloud, &server.id).await.status,
        ServerStatus::Active
    );
    let faults = env.face.faults();
    let neutron_failing: [&dyn Fn(); 2] =
        [&|| faults.server_error_next(Service::Network, 50), &|| {
            faults.throttle_next(Service::Network, 50, Duration::from_secs(30))
        }];
    for fail in neutron_failing {
        let fresh = env.driver().await;
        fail();
        let read = fresh
            .read_server(&server.id)
            .await
            .expect("Nova answered the read");
        assert_eq!(
            (read.status, read.mysql_addr),
            (ServerStatus::Active, None),
            "{read:?}"
        );
        faults.clear();
        let read = fresh.read_server(&server.id).await.unwrap();
        assert_eq!(read.mysql_addr, None, "Neutron asked again at once");
        // Once the lookup is asked again, the address is read.
        advance_clock(Duration::from_secs(31)).await;
        let read = fresh.read_server(&server.id).await.unwrap();
        assert!(read.mysql_addr.is_some(), "{read:?}");
    }
}

/// The management network's lookup a server read makes is Neutron's call:
/// the daemon's metrics count it, and its 429, as the network service's,
/// and the read, which Nova answered, as compute's success.
#[tokio::test]
async fn a_server_reads_management_network_lookup_is_metered_as_the_networks_call() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let (env, driver, server) = env_with_a_server().await;
    assert_eq!(
        settled(&driver, &server.id).await.status,
        ServerStatus::Active
    );
    let metrics = Arc::new(Metrics::new());
    // A new process: the name is looked up at its first read.
    let cloud = MeteredCloud::new(Arc::new(env.driver().await), metrics.clone());
    let sample = |name_and_labels: &str| -> f64 {
        let body = metrics.encode();
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let calls = |service: &str, status: &str| {
        sample(&format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        ))
    };
    env.face
        .faults()
        .throttle_next(Service::Network, 50, Duration::from_secs(30));
    // The manager's wrapper, outside this one, still sees the side call
    // (it tells a Keystone 429 from the called service's by them).
    let (read, side_calls) =
        pool_manager::cloud::collecting_side_calls(cloud.read_server(&server.id)).await;
    let read = read.unwrap();
    assert!(
        matches!(
            side_calls.as_slice(),
            [pool_manager::cloud::SideCall {
                service: pool_manager::events::CloudService::Network,
                error: Some(CloudError::Throttled { .. }),
                ..
            }]
        ),
        "passed on: {side_calls:?}"
    );
    assert_eq!(read.status, ServerStatus::Active);
    assert_eq!(
        (
            sample(r#"warmpool_cloud_throttled_total{service="network"}"#),
            sample(r#"warmpool_cloud_throttled_total{service="compute"}"#)
        ),
        (1.0, 0.0),
        "the 429 is Neutron's: (network, compute) throttled"
    );
    assert_eq!(
        (calls("compute", "ok"), calls("network", "throttled")),
        (1.0, 1.0)
    );
    env.face.faults().clear();
    // Past the 429's Retry-After.
    advance_clock(Duration::from_secs(31)).await;
    let read = cloud.read_server(&server.id).await.unwrap();
    assert!(read.mysql_addr.is_some(), "{read:?}");
    assert_eq!((calls("compute", "ok"), calls("network", "ok")), (2.0, 1.0));
}

/// A management network lookup Neutron refused is not sent again before
/// the Retry-After. The read kept the last name, but each read past the
/// name's ten minutes (every boot poll, verify and listing) sent its own
/// `GET /networks` to the Neutron that asked warmpool to back off.
#[tokio::test]
async fn a_throttled_management_network_lookup_waits_out_the_retry_after() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let (env, driver, server) = env_with_a_server().await;
    let addr = settled(&driver, &server.id)
        .await
        .mysql_addr
        .expect("an ACTIVE server's address");
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(driver), metrics.clone());
    let lookups = |status: &str| -> f64 {
        let line = format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"network\",status=\"{status}\"}}"
        );
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str())?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let faults = env.face.faults();
    faults.throttle_next(Service::Network, 50, Duration::from_secs(30));
    // Past the ten minutes a looked-up name is trusted.
    advance_clock(Duration::from_secs(601)).await;
    for _ in 0..5 {
        let read = cloud.read_server(&server.id).await.unwrap();
        assert_eq!(read.mysql_addr, Some(addr), "{read:?}");
    }
    assert_eq!(lookups("throttled"), 1.0, "one lookup for five reads");
    // Past the Retry-After, Neutron is asked again.
    advance_clock(Duration::from_secs(31)).await;
    cloud.read_server(&server.id).await.unwrap();
    assert_eq!(lookups("throttled"), 2.0);
    faults.clear();
    advance_clock(Duration::from_secs(31)).await;
    let read = cloud.read_server(&server.id).await.unwrap();
    assert_eq!(read.mysql_addr, Some(addr), "{read:?}");
    cloud.read_server(&server.id).await.unwrap();
    assert_eq!((lookups("throttled"), lookups("ok")), (2.0, 1.0));
}

/// A 5xx names no wait: the lookup is asked again 30 s after it failed,
/// then 60 s after the next failure, doubling up to the name's ten
/// minutes, not at every read.
#[tokio::test]
async fn a_failing_management_network_lookup_is_asked_again_ever_later() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let (env, driver, server) = env_with_a_server().await;
    settled(&driver, &server.id).await;
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(driver), metrics.clone());
    let failed = || -> f64 {
        metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("warmpool_cloud_request_duration_seconds_count{service=\"network\"")
            })
            .filter(|l| !l.contains("status=\"ok\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum()
    };
    env.face.faults().server_error_next(Service::Network, 50);
    advance_clock(Duration::from_secs(601)).await;
    let mut seen = Vec::new();
    // Reads every 10 s for 3 minutes: lookups at 0, 30 s, 90 s, 210 s.
    for _ in 0..18 {
        cloud.read_server(&server.id).await.unwrap();
        seen.push(failed());
        advance_clock(Duration::from_secs(10)).await;
    }
    let asked_at: Vec<usize> = seen
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] > w[0])
        .map(|(i, _)| (i + 1) * 10)
        .collect();
    assert_eq!((seen[0], asked_at), (1.0, vec![30, 90]), "{seen:?}");
}

/// With no name ever resolved, every read lacks the address its boot
/// waits for: the lookup's backoff does not double then, so the address
/// shows within 30 s of Neutron's recovery, not up to ten minutes later.
#[tokio::test]
async fn with_no_management_network_name_yet_the_lookup_is_asked_again_every_30_s() {
    let (env, driver, server) = env_with_a_server().await;
    settled(&driver, &server.id).await;
    let faults = env.face.faults();
    faults.server_error_next(Service::Network, 50);
    let fresh = env.driver().await;
    // Neutron fails for five minutes of reads, every 10 s.
    for _ in 0..30 {
        let read = fresh.read_server(&server.id).await.unwrap();
        assert_eq!(read.mysql_addr, None, "{read:?}");
        advance_clock(Duration::from_secs(10)).await;
    }
    faults.clear();
    let mut waited = Duration::ZERO;
    while fresh
        .read_server(&server.id)
        .await
        .unwrap()
        .mysql_addr
        .is_none()
    {
        assert!(
            waited <= Duration::from_secs(30),
            "no address {waited:?} after Neutron recovered"
        );
        advance_clock(Duration::from_secs(10)).await;
        waited += Duration::from_secs(10);
    }
}

/// While Keystone refuses a token's renewal (429), osauth's error carries
/// Keystone's status, not the version document's. The re-ask of the
/// version document, meant to recover a service's Retry-After, asked
/// osauth for the endpoint and the token again, and so sent Keystone a
/// second token request for every call tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_token_renewal_sends_keystone_one_token_request() {
    // osauth renews a token it holds for less than ten minutes at every
    // call: each call asks Keystone for one.
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let faults = env.face.faults();
    faults.throttle_next(Service::Identity, 10, Duration::from_secs(30));
    let before = faults.token_requests();
    let e = cloud.read_server(&server.id).await.unwrap_err();
    assert!(matches!(e, CloudError::Throttled { .. }), "{e:?}");
    assert_eq!(faults.token_requests() - before, 1, "{e}");
    // Keystone's refusal, not Nova's: said so, so that no one chases Nova.
    let text = e.to_string();
    assert!(
        text.contains("Keystone") && text.contains("token request"),
        "{text}"
    );
    faults.clear();
    cloud
        .read_server(&server.id)
        .await
        .expect("Keystone answers");
}

/// The daemon's metrics count a call whose token renewal Keystone
/// throttled (or failed) under `service="identity"`, not under the
/// service the call went to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_token_renewal_is_metered_as_keystones() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let driver = env.driver().await;
    let server = driver
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(driver), metrics.clone());
    let sample = |name_and_labels: &str| -> f64 {
        let body = metrics.encode();
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let calls = |service: &str, status: &str| {
        sample(&format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        ))
    };
    env.face
        .faults()
        .throttle_next(Service::Identity, 10, Duration::from_secs(30));
    cloud.read_server(&server.id).await.unwrap_err();
    env.face.faults().clear();
    env.face.faults().server_error_next(Service::Identity, 10);
    cloud.find_ports_by_name("x").await.unwrap_err();
    assert_eq!(
        (
            sample(r#"warmpool_cloud_throttled_total{service="identity"}"#),
            sample(r#"warmpool_cloud_throttled_total{service="compute"}"#),
        ),
        (1.0, 0.0),
        "(identity, compute) throttled"
    );
    assert_eq!(
        (
            calls("identity", "throttled"),
            calls("identity", "transient"),
            calls("compute", "throttled"),
            calls("network", "transient"),
        ),
        (1.0, 1.0, 0.0, 0.0)
    );
    env.face.faults().clear();
    cloud
        .read_server(&server.id)
        .await
        .expect("Keystone answers");
    assert_eq!(calls("compute", "ok"), 1.0);
}

/// A throttled lookup's error, checked: Throttled, asking for the face's
/// 30 s, and naming the service and the object looked up, not osauth's
/// "Input value(s) are invalid or missing" (its word for any 4xx).
fn assert_throttled_naming(e: &CloudError, service: &str, object: &str) {
    assert!(
        matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if *d == Duration::from_secs(30)),
        "the Retry-After kept: {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(service) && text.contains(object) && !text.contains("Input value"),
        "names {service} and {object}: {text}"
    );
}

/// A process's first Neutron call is often the management network's
/// lookup, and osauth reads Neutron's version document before it: a rate
/// limiter throttling Neutron throttles that read, which osauth reports
/// as its own "Input value(s) are invalid or missing" error without the
/// Retry-After (it keeps no header). The lookup failed as a throttle with
/// no wait named, so its caller's own backoff applied instead of the
/// cloud's, and its message named neither Neutron nor the network. Both
/// the lookup and a boot that makes it keep the Retry-After and say what
/// was looked up where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_network_lookup_keeps_the_retry_after_and_names_neutron_and_the_network() {
    let env = env().await;
    let faults = env.face.faults();
    // A new process: its first Neutron request reads the version document.
    let cloud = env.driver().await;
    faults.throttle_next(Service::Network, 50, Duration::from_secs(30));
    let e = cloud.network("mgmt-net").await.unwrap_err();
    assert_throttled_naming(&e, "Neutron", "'mgmt-net'");
    faults.clear();
    cloud.network("mgmt-net").await.expect("Neutron answers");

    // A boot looks the flavor (Nova), the image (Glance) and the network
    // up; only Neutron throttles.
    let booting = env.driver().await;
    faults.throttle_next(Service::Network, 50, Duration::from_secs(30));
    let e = booting
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert_throttled_naming(&e, "Neutron", "'mgmt-net'");
    faults.clear();
    booting
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .expect("Neutron answers");
}

/// The image's lookup is a process's first Glance call, behind the same
/// version-document read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_image_lookup_keeps_the_retry_after_and_names_glance_and_the_image() {
    let env = env().await;
    let cloud = env.driver().await;
    env.face
        .faults()
        .throttle_next(Service::Image, 50, Duration::from_secs(30));
    let e = cloud.image_id("mysql-8.0").await.unwrap_err();
    assert_throttled_naming(&e, "Glance", "'mysql-8.0'");
    env.face.faults().clear();
    cloud.image_id("mysql-8.0").await.expect("Glance answers");
}

/// Nova's version document is read at connect, and again by the session
/// a re-login makes: a flavor lookup after a revoked token meets that read
/// first. Both keep Nova's Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_nova_version_read_keeps_the_retry_after() {
    let env = env().await;
    let faults = env.face.faults();
    faults.throttle_next(Service::Compute, 50, Duration::from_secs(30));
    let config = env.config("", SMALL_POOL);
    let Err(e) = OpenStackCloud::connect(openstack(&config).settings().unwrap()).await else {
        panic!("Nova throttles the connect");
    };
    assert_throttled_naming(&e, "Nova", "version");
    faults.clear();

    let cloud = env.driver().await;
    faults.revoke_all_tokens();
    for path in ["/v2.1", "/v2.1/"] {
        faults.throttle_next_on(Service::Compute, "GET", path, 50, Duration::from_secs(30));
    }
    let e = cloud.flavor("db.small").await.unwrap_err();
    assert_throttled_naming(&e, "Nova", "'db.small'");
    faults.clear();
    cloud.flavor("db.small").await.expect("Nova answers");
}

/// Servers tenants hold keep their pool's tag but are no supply: they use
/// quota and do not count toward `min_ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_quota_does_not_count_sold_servers_as_supply() {
    let (_env, config, cloud) = pool_of_three_under_quota(3).await;
    // Three of the pool's servers, all sold: the pool has no supply and
    // no room for any.
    for name in ["a", "b", "c"] {
        let server = cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
        settled(&cloud, &server.id).await;
        let volume = cloud
            .create_volume(&volume_spec(&format!("warmpool-{name}"), 1))
            .await
            .unwrap();
        volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;
        cloud.attach_volume(&server.id, &volume.id).await.unwrap();
        volume_reaches(&cloud, &volume.id, VolumeStatus::InUse).await;
    }
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(
        line(&report, CheckKind::Quota),
        ["quota: instances 3 of 3 used; pools need room for 3 more db.small"]
    );
}

/// The binary: one line per check on stdout, exit code 1 on a failure, 0 when all pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpoold_check_cloud_prints_and_exits_by_the_result() {
    let env = env().await;
    let run = |text: String| {
        let path = env.dir.path().join("warmpoold.toml");
        std::fs::write(&path, text).unwrap();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
                .args(["check-cloud", "--config"])
                .arg(&path)
                .env_remove("OS_CLOUD")
                .output()
                .await
                .unwrap()
        }
    };
    let ok = run(env.config_text("", SMALL_POOL)).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The data dir (the config's) holds no store: said first, and that
    // it records no cloud yet. `security_groups` unset is warned of, and
    // passes.
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    let (ok_lines, warned): (Vec<&str>, Vec<&str>) =
        stdout.lines().partition(|l| l.contains(": ok ("));
    assert_eq!(ok_lines.len(), 11, "{stdout}");
    assert!(
        warned[0].starts_with("security group: cloud.security_groups is unset, so the management ports get the project's default group"),
        "{stdout}"
    );
    assert!(
        stdout.lines().next().unwrap().contains("no store here"),
        "{stdout}"
    );

    let bad = run(env.config_text("", &SMALL_POOL.replace("mysql-8.0", "mysql-9.9"))).await;
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("image: no image named 'mysql-9.9'"),
        "{stdout}"
    );
}

/// check-cloud, which logs only errors beside its report, still says
/// that the clouds.yaml holding the cloud's password is readable by every
/// user of the host: the first place an operator would look.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpoold_check_cloud_warns_of_a_clouds_yaml_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Others may reach the file: its directory as a home's may be.
    mode(env.dir.path(), 0o755);
    let config = env.dir.path().join("warmpoold.toml");
    std::fs::write(&config, env.config_text("", SMALL_POOL)).unwrap();
    let check = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args(["check-cloud", "--config"])
            .arg(&config)
            .env_remove("OS_CLOUD")
            .env_remove("RUST_LOG")
            .output()
    };
    let warning = format!("{} holds a secret", env.clouds_yaml.display());
    mode(&env.clouds_yaml, 0o644);
    let out = check().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&warning) && stderr.contains("(mode 0644)"),
        "{stderr}"
    );
    mode(&env.clouds_yaml, 0o600);
    let out = check().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(&warning), "{stderr}");
}

/// A TLS listener in front of the face serving `served`'s certificate, its
/// `https://127.0.0.1:PORT` URL: each connection's handshake is answered here
/// and the plaintext passed on to the face.
async fn tls_in_front_of(face: std::net::SocketAddr, served: &support::pki::Issued) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&served.cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&served.key_file).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends here; its
                // alert is what the driver's error leaves out.
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => return tracing::warn!("TLS in front of the face: {e}"),
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(face).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    url
}

/// A Keystone whose certificate a private CA signed, that CA installed
/// system-wide (as private clouds do) and not named in clouds.yaml: the
/// driver trusts it as the system does (`SSL_CERT_FILE` stands in for the
/// system's store, which it replaces), refuses it when the system trusts
/// another CA, and still trusts clouds.yaml's `cacert` then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keystone_signed_by_a_ca_the_system_trusts_is_trusted() {
    let env = env().await;
    let private = support::pki::Pki::new(env.dir.path(), "private-ca");
    let other = support::pki::Pki::new(env.dir.path(), "other-ca");
    let keystone = private.issue("keystone", &["127.0.0.1"]);
    let https = tls_in_front_of(env.face.local_addr(), &keystone).await;
    let clouds_yaml = env
        .face
        .clouds_yaml("cloudsim")
        .replace(env.face.base_url(), &https);
    assert!(clouds_yaml.contains("auth_url: 'https://"), "{clouds_yaml}");
    let config = env.dir.path().join("warmpoold.toml");
    std::fs::write(&config, env.config_text("", SMALL_POOL)).unwrap();
    let check = |system_ca: PathBuf, cacert: Option<PathBuf>| {
        let mut yaml = clouds_yaml.clone();
        if let Some(cacert) = cacert {
            yaml.push_str(&format!("    cacert: '{}'\n", cacert.display()));
        }
        std::fs::write(&env.clouds_yaml, yaml).unwrap();
        let config = config.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
                .args(["check-cloud", "--config"])
                .arg(&config)
                .env_remove("OS_CLOUD")
                .env_remove("OS_CACERT")
                .env_remove("SSL_CERT_DIR")
                .env("SSL_CERT_FILE", system_ca)
                .output()
                .await
                .unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };

    let (ok, text) = check(private.ca_file("private-ca"), None).await;
    assert!(ok, "{text}");

    let (ok, text) = check(other.ca_file("other-ca"), None).await;
    // reqwest's top message, and its cause, which osauth leaves out: what
    // rustls refused, and what to do about it.
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "error sending request for url ({https}/identity/v3"
        )),
        "{text}"
    );
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    assert!(
        text.contains("set cacert in clouds.yaml or install the CA"),
        "{text}"
    );

    let (ok, text) = check(
        other.ca_file("other-ca"),
        Some(private.ca_file("private-ca")),
    )
    .await;
    assert!(ok, "{text}");
}

/// The system's CA store (`SSL_CERT_FILE` here), or clouds.yaml's
/// `cacert`, holding nothing but certificates that do not parse: reqwest
/// cannot build its client, which osauth would answer with a panic. The
/// check says which file is at fault, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_of_unparseable_certificates_is_named_not_a_panic() {
    let env = env().await;
    let config = env.dir.path().join("warmpoold.toml");
    std::fs::write(&config, env.config_text("", SMALL_POOL)).unwrap();
    let garbage = env.dir.path().join("garbage-ca.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let check = |system_ca: Option<&PathBuf>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
        command
            .args(["check-cloud", "--config"])
            .arg(&config)
            .env_remove("OS_CLOUD")
            .env_remove("OS_CACERT")
            .env_remove("SSL_CERT_DIR")
            .env_remove("SSL_CERT_FILE");
        if let Some(system_ca) = system_ca {
            command.env("SSL_CERT_FILE", system_ca);
        }
        async move {
            let out = command.output().await.unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(!text.contains("panicked"), "{text}");
            text
        }
    };

    let text = check(Some(&garbage)).await;
    assert!(
        text.contains(&format!("SSL_CERT_FILE={}", garbage.display())),
        "{text}"
    );
    assert!(
        text.contains("zero valid certificates found in native root store"),
        "{text}"
    );

    let clouds_yaml = env.face.clouds_yaml("cloudsim");
    std::fs::write(
        &env.clouds_yaml,
        format!("{clouds_yaml}    cacert: '{}'\n", garbage.display()),
    )
    .unwrap();
    let text = check(None).await;
    assert!(
        text.contains(&format!(
            "clouds.yaml's cacert {} is unusable",
            garbage.display()
        )),
        "{text}"
    );
}

/// Waits (up to a minute) until `done` holds; panics naming `what` if it never does.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited a minute for {what}");
}

/// A shutdown asked for while the cloud check waits on a cloud that does not
/// answer ends start-up at once, instead of after the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_the_cloud_check_ends_start_up() {
    init_tracing();
    let env = env().await;
    env.sim.faults().hang_after_calls(0);
    let config = env.config(r#"request_timeout = "10m""#, SMALL_POOL);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let starting = tokio::spawn(warmpool_server::start(config, async {
        let _ = stopped.await;
    }));
    wait_until("the cloud check's first call", || env.sim.total_calls() > 0).await;
    let _ = stop.send(());
    let err = match tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("start-up did not end within 30 s of the shutdown")
        .unwrap()
    {
        Ok(_) => panic!("started serving although the cloud never answered"),
        Err(e) => e,
    };
    assert!(err.is::<warmpool_server::StoppedDuringStartUp>(), "{err:#}");
}

/// The gRPC port answers from the moment it is bound: while the start-up
/// reconcile is held undoing an interrupted purchase (as when the cloud
/// does not finish, each such item up to the cleanup budget), health says
/// NOT_SERVING for "" and warmpool.v1 and SERVING for `liveness`, and
/// warmpool.v1 answers UNAVAILABLE, "starting", instead of nothing until a
/// probe times out; once start-up is done, health says SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_not_serving_while_the_start_up_reconcile_runs() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    init_tracing();
    let env = env().await;
    let listening_on = |port: u16| {
        let text = env.config_text("", SMALL_POOL).replacen(
            r#"listen = "127.0.0.1:0""#,
            &format!(r#"listen = "127.0.0.1:{port}""#),
            1,
        );
        Config::parse(&text).unwrap()
    };
    // A purchase a stop interrupted after its port was made: the start-up
    // reconcile rolls it back, deleting the port, which the cloud holds.
    let data_dir = env.config("", SMALL_POOL).data_dir;
    tokio::task::spawn_blocking(move || {
        let store = pool_manager::store::SledStore::open(&data_dir).unwrap();
        let handle = tokio::runtime::Handle::current();
        let mut interrupted = pool_manager::model::Allocation::new(
            pool_manager::model::AllocationParams {
                request_id: "interrupted".into(),
                tenant_project_id: "tenant-a".into(),
                pool: PoolKey::new("db.small", "az1"),
                volume: pool_manager::model::VolumeRequest {
                    source: pool_manager::model::VolumeSource::New {
                        size_gib: 20,
                        volume_type: None,
                    },
                    delete_on_release: false,
                },
                network: pool_manager::model::NetworkRequest {
                    network_id: "tenant-net".into(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: BTreeMap::new(),
            },
            0,
        );
        interrupted.port_id = Some("port-of-an-interrupted-purchase".into());
        handle.block_on(async {
            use pool_manager::store::Store;
            assert!(store
                .cas_allocation(None, Some(&interrupted))
                .await
                .unwrap());
            store.flush().await.unwrap();
        });
    })
    .await
    .unwrap();
    env.sim.faults().hold_calls("delete_port");

    let (port, stop, starting) = start_on_a_free_port(listening_on).await;
    wait_until("the start-up reconcile's port delete, held", || {
        env.sim.call_counts().contains_key("delete_port")
    })
    .await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = |service: &'static str| {
        let mut health = HealthClient::new(channel.clone());
        async move {
            let asked = health.check(HealthCheckRequest {
                service: service.into(),
            });
            let Ok(answer) = tokio::time::timeout(Duration::from_secs(30), asked).await else {
                panic!("health {service:?} did not answer during start-up");
            };
            answer.unwrap().into_inner().status
        }
    };
    for service in ["", "warmpool.v1.WarmPool"] {
        assert_eq!(
            check(service).await,
            i32::from(ServingStatus::NotServing),
            "{service:?}"
        );
    }
    assert_eq!(
        check(warmpool_server::LIVENESS_SERVICE).await,
        i32::from(ServingStatus::Serving)
    );
    let client = warmpool_client::Client::connect(&endpoint).await.unwrap();
    match client.list_pools().await {
        Err(warmpool_client::ClientError::Status { code, message }) => {
            assert_eq!(code, tonic::Code::Unavailable, "{message}");
            assert!(message.contains("starting"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!starting.is_finished());

    env.sim.faults().release_calls("delete_port");
    let running = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("start-up ends once the cloud answers")
        .unwrap()
        .expect("warmpoold starts");
    for service in [
        "",
        "warmpool.v1.WarmPool",
        warmpool_server::LIVENESS_SERVICE,
    ] {
        assert_eq!(
            check(service).await,
            i32::from(ServingStatus::Serving),
            "{service:?}"
        );
    }
    client.list_pools().await.unwrap();
    drop((client, channel));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), running.served)
        .await
        .expect("shutdown within 30 s")
        .unwrap()
        .unwrap();
}

/// SIGTERM while the start-up reconcile waits on the cloud stops warmpoold
/// in order (exit code 0, the store flushed and its lock let go) instead of
/// killing it; the configured pool, created only after the reconcile, is
/// not, so nothing boots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_up_reconcile_stops_warmpoold_in_order() {
    init_tracing();
    let env = env().await;
    let text = env.config_text(r#"request_timeout = "10m""#, SMALL_POOL);
    // The daemon's cloud check makes the same calls as this one; the call
    // after them is the reconcile's listing of the pool servers, and hangs.
    let config = Config::parse(&text).unwrap();
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    let check_calls = env.sim.call_counts();
    env.sim.reset_call_counts();
    env.sim
        .faults()
        .hang_after_calls(check_calls.values().sum());

    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, &text).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--config")
        .arg(&path)
        .env_remove("OS_CLOUD")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let listed_by_check = check_calls.get("list_servers_detail").copied().unwrap_or(0);
    wait_until("the start-up reconcile's listing", || {
        env.sim
            .call_counts()
            .get("list_servers_detail")
            .copied()
            .unwrap_or(0)
            > listed_by_check
    })
    .await;
    let pid = child.id().expect("warmpoold is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("warmpoold did not stop within 30 s of SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}\n{stderr}", out.status);
    assert!(stderr.contains("stopped during start-up"), "{stderr}");

    let dir = env.dir.path().join("data");
    let store = tokio::task::spawn_blocking(move || pool_manager::store::SledStore::open(&dir))
        .await
        .unwrap()
        .expect("the stopped daemon let go of the store");
    use pool_manager::store::Store;
    assert!(store.list_pools().await.unwrap().is_empty());
    assert!(env.sim.servers().is_empty());
}

/// warmpoold on a store that knows no pool server and no order (here
/// `--data-dir` naming another directory) over a project holding pool
/// servers under its tag does not start, and deletes nothing: it names the
/// store, how many servers and how many sold, the tag and the project, and
/// the ways out. With `--delete-unknown-servers` it starts: the unsold ones
/// are deleted as leaks, the sold one is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmpoold_refuses_a_store_that_knows_none_of_the_pool_servers() {
    let env = env_with_mysqld().await;
    let key = PoolKey::new("db.small", "az1");
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    wait_ready(&running.manager, &key, 2).await;
    let sold = running
        .manager
        .allocate(order(&env, "order-1").await)
        .await
        .unwrap()
        .server_id
        .unwrap();
    wait_ready(&running.manager, &key, 2).await;
    stop_daemon(running, stop).await;
    let unsold: Vec<String> = env
        .sim
        .servers()
        .into_iter()
        .map(|s| s.server.id)
        .filter(|id| *id != sold)
        .collect();
    assert_eq!(unsold.len(), 2, "{:?}", env.sim.servers());

    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, env.config_text("", SMALL_POOL)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let store = elsewhere.path().join("store");
    let warmpoold = |flags: &[&str]| warmpoold_on(&path, Some(&store), flags);
    let (stderr, error) = refused_start(warmpoold(&[])).await;
    for part in [
        format!("the store in {} (data_dir, --data-dir)", store.display()),
        "the project of user pool in project service".to_owned(),
        r#"under the tag "warmpool" (cloud.server_tag)"#.to_owned(),
        "lists 3 pool servers, 1 of them sold".to_owned(),
        "and 2 unsold".to_owned(),
        "give this one a cloud.server_tag of its own".to_owned(),
        "start once with --delete-unknown-servers".to_owned(),
    ] {
        assert!(error.contains(&part), "{part:?} not in: {error}");
    }
    assert_eq!(env.sim.servers().len(), 3, "{:?}", env.sim.servers());
    assert!(!stderr.contains("warmpoold serving gRPC"), "{stderr}");
    // Nor does it leave a store in the data dir it made: `store check`
    // would call a mistyped data dir a healthy store.
    assert!(
        !store.exists(),
        "{:?}",
        std::fs::read_dir(&store).map(|d| d.count())
    );
    let no_store = |dir: &std::path::Path| {
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .arg("--data-dir")
            .arg(dir)
            .args(["store", "check"])
            .env_remove("WARMPOOL_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr).into_owned();
        assert_eq!(check.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("no store in {}", dir.display())),
            "{stderr}"
        );
    };
    no_store(&store);
    // In a data dir that was there, only what the refused start made goes.
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("notes"), "kept").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), warmpoold(&[]).output())
        .await
        .expect("warmpoold neither started nor stopped within 60 s")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR)),
        "{out:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes"], "{out:?}");
    no_store(&store);

    let (child, log) = serving(warmpoold(&["--delete-unknown-servers"])).await;
    let deleted = |id: &str| env.sim.server(id).is_none_or(|s| s.server.deleting);
    assert!(unsold.iter().all(|id| deleted(id)), "{log}");
    assert!(!deleted(&sold), "the sold server was deleted: {log}");
    assert_eq!(terminate(child).await, Some(0), "{log}");
}

/// `warmpoold --config CONFIG [--data-dir DIR] FLAGS`, logging at info to
/// a pipe.
fn warmpoold_on(
    config: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    flags: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"));
    command.arg("--config").arg(config);
    if let Some(dir) = data_dir {
        command.arg("--data-dir").arg(dir);
    }
    command
        .args(flags)
        .env_remove("OS_CLOUD")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `warmpoold` to a start it refuses for what only an operator mends
/// (exit 78, EX_CONFIG, which its systemd unit does not restart): its
/// stderr and its `Error:` line.
async fn refused_start(mut warmpoold: tokio::process::Command) -> (String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), warmpoold.output())
        .await
        .expect("warmpoold neither started nor stopped within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(i32::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR)),
        "{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_owned();
    (stderr, error)
}

/// Spawns `warmpoold` and waits until it serves gRPC: the process and its
/// log until then (the rest is drained, so that it never waits on a full
/// pipe).
async fn serving(mut warmpoold: tokio::process::Command) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = warmpoold.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let serving = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log += &line;
            log.push('\n');
            if line.contains("warmpoold serving gRPC") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "{log}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, log)
}

/// Sends `warmpoold` SIGTERM: its exit code.
async fn terminate(mut warmpoold: tokio::process::Child) -> Option<i32> {
    let pid = warmpoold.id().expect("warmpoold is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::timeout(Duration::from_secs(30), warmpoold.wait())
        .await
        .expect("warmpoold did not stop within 30 s of SIGTERM")
        .unwrap()
        .code()
}

/// The embedded demo's config on `data`: its three pools (none declared).
fn embedded_demo_config(data: &std::path::Path) -> Config {
    Config::parse(&format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "{}"
[manager]
poll_interval = "100ms"
replenish_interval = "200ms"
[cloud]
kind = "embedded"
time_scale = 0.01
"#,
        data.display()
    ))
    .unwrap()
}

/// A store used with the embedded demo, then named by a config of a real
/// cloud, would carry the demo into it: its pools booting there, its
/// orders answered ALLOCATED with servers that cloud never had. The store
/// records the cloud it serves at its first start, and warmpoold refuses
/// a start on another before it boots, deletes or changes anything,
/// naming both clouds, the data dir and the ways out; with
/// `--adopt-cloud` it starts, and records the new cloud as the store's,
/// so later starts need no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_cloud_is_refused_until_adopted() {
    let env = env().await;
    let data = env.dir.path().join("data");
    let (running, stop) = start_daemon(embedded_demo_config(&data)).await.unwrap();
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 3).await;
    let mut demo_order = order(&env, "demo-1").await;
    demo_order.params.network.network_id = "tenant-net".into();
    running.manager.allocate(demo_order).await.unwrap();
    stop_daemon(running, stop).await;

    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, env.config_text("", SMALL_POOL)).unwrap();
    let warmpoold = |flags: &[&str]| warmpoold_on(&path, None, flags);
    let (stderr, error) = refused_start(warmpoold(&[])).await;
    for part in [
        format!("the store in {} (data_dir, --data-dir)", data.display()),
        "the embedded simulated cloud".to_owned(),
        format!(
            r#"OpenStack project {} in region RegionOne under the server tag "warmpool""#,
            env.face.project_id()
        ),
        "--adopt-cloud".to_owned(),
        "a new data dir".to_owned(),
    ] {
        assert!(error.contains(&part), "{part:?} not in: {error}");
    }
    assert!(!stderr.contains("warmpoold serving gRPC"), "{stderr}");
    assert!(env.sim.servers().is_empty(), "{:?}", env.sim.servers());
    assert_eq!(env.sim.call_counts().get("create_server"), None);

    let (child, log) = serving(warmpoold(&["--adopt-cloud"])).await;
    let adopted = log
        .lines()
        .find(|l| l.contains("as --adopt-cloud asks"))
        .unwrap_or_else(|| panic!("the adoption is not logged: {log}"));
    assert!(adopted.contains(" WARN "), "{adopted}");
    assert_eq!(terminate(child).await, Some(0), "{log}");

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(&data)
        .args(["store", "check"])
        .env_remove("WARMPOOL_CONFIG")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains(&format!(
            r#"cloud: OpenStack project {} in region RegionOne under the server tag "warmpool""#,
            env.face.project_id()
        )),
        "{shown}"
    );

    // Recorded: the next start needs no flag, and one back on the demo's
    // cloud is refused as well.
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    stop_daemon(running, stop).await;
    let back = match start_daemon(embedded_demo_config(&data)).await {
        Ok(_) => panic!("the demo started on the store of {}", env.face.project_id()),
        Err(e) => e,
    };
    assert!(
        back.is::<warmpool_server::CloudChangedRefused>(),
        "{back:#}"
    );
    // Nor with --adopt-cloud: the demo adopts no store (the flag given
    // without --config took a production store over).
    let mut demo_adopting = embedded_demo_config(&data);
    demo_adopting.adopt_cloud = true;
    let refused = match start_daemon(demo_adopting).await {
        Ok(_) => panic!("the demo adopted the store of {}", env.face.project_id()),
        Err(e) => e,
    };
    assert!(
        refused.is::<warmpool_server::CloudChangedRefused>(),
        "{refused:#}"
    );
    assert!(
        format!("{refused:#}").contains("was --config forgotten?"),
        "{refused:#}"
    );
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    stop_daemon(running, stop).await;
}

/// A store an older warmpoold wrote records no cloud: its first start
/// with this version records the cloud it starts on, refusing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_recorded_no_cloud_records_the_one_it_starts_on() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::store::{SledStore, Store};
    let env = env_with_mysqld().await;
    let config = env.config("", SMALL_POOL);
    let data = config.data_dir.clone();
    let open = |data: PathBuf| async move {
        tokio::task::spawn_blocking(move || SledStore::open(&data))
            .await
            .unwrap()
            .unwrap()
    };
    // What an older version left: its records, no cloud.
    let old = open(data.clone()).await;
    let key = PoolKey::new("db.small", "az1");
    old.put_pool(&pool_manager::model::PoolRecord::new(
        key.clone(),
        config.pools[0].spec(),
    ))
    .await
    .unwrap();
    old.flush().await.unwrap();
    assert_eq!(old.cloud_identity().await.unwrap(), None);
    drop(old);

    let (running, stop) = start_daemon(config).await.unwrap();
    wait_ready(&running.manager, &key, 2).await;
    stop_daemon(running, stop).await;
    let store = open(data).await;
    assert_eq!(
        store.cloud_identity().await.unwrap(),
        Some(CloudIdentity::OpenStack {
            project_id: env.face.project_id().to_owned(),
            region: Some("RegionOne".into()),
            server_tag: "warmpool".into(),
        })
    );
}

/// Keystone is one for every region of a cloud, so a project has the same
/// id in each: a clouds.yaml whose `region_name` changed points Nova,
/// Cinder and Neutron at another deployment under the same project id, and
/// the store's records name servers that deployment never had. The region
/// is part of the cloud a store serves: a start in another region is
/// refused before anything is booted, naming both regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_region_is_refused() {
    use pool_manager::store::{SledStore, Store};
    let one = env_with_mysqld().await;
    let two = env_with(
        sim_config(),
        HttpSettings {
            region: "RegionTwo".into(),
            ..HttpSettings::default()
        },
    )
    .await;
    assert_eq!(one.face.project_id(), two.face.project_id());
    let config = one.config("", SMALL_POOL);
    let data = config.data_dir.clone();
    let open = |data: PathBuf| async move {
        tokio::task::spawn_blocking(move || SledStore::open(&data))
            .await
            .unwrap()
            .unwrap()
    };
    let (running, stop) = start_daemon(config).await.unwrap();
    wait_ready(&running.manager, &PoolKey::new("db.small", "az1"), 2).await;
    stop_daemon(running, stop).await;
    let store = open(data.clone()).await;
    let recorded = store.cloud_identity().await.unwrap().unwrap();
    assert!(recorded.to_string().contains("RegionOne"), "{recorded}");
    drop(store);

    let mut elsewhere = two.config("", SMALL_POOL);
    elsewhere.data_dir = data;
    let refused = match start_daemon(elsewhere).await {
        Ok((running, stop)) => {
            stop_daemon(running, stop).await;
            panic!("started in RegionTwo on the store of RegionOne");
        }
        Err(e) => e,
    };
    assert!(
        refused.is::<warmpool_server::CloudChangedRefused>(),
        "{refused:#}"
    );
    let message = refused.to_string();
    for region in ["RegionOne", "RegionTwo"] {
        assert!(message.contains(region), "{region} not in: {message}");
    }
    assert!(two.sim.servers().is_empty(), "{:?}", two.sim.servers());
}

/// The store's cloud is compared before warmpoold writes anything to the
/// store: a start refused for a store of another cloud leaves it as it
/// was, without the start-up check's mark on a stored pool the configured
/// cloud cannot serve (a mark about a cloud the store does not serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_cloud_is_refused_before_its_pools_are_marked() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::store::{SledStore, Store};
    let env = env().await;
    env.sim.close_zone("az2");
    let config = env.config("", SMALL_POOL);
    let data = config.data_dir.clone();
    let open = |data: PathBuf| async move {
        tokio::task::spawn_blocking(move || SledStore::open(&data))
            .await
            .unwrap()
            .unwrap()
    };
    // The demo's store: the embedded cloud's, with a pool in az2.
    let demo = open(data.clone()).await;
    let key = PoolKey::new("db.small", "az2");
    demo.put_pool(&pool_manager::model::PoolRecord::new(
        key.clone(),
        config.pools[0].spec(),
    ))
    .await
    .unwrap();
    demo.record_cloud_identity(&CloudIdentity::Embedded)
        .await
        .unwrap();
    demo.flush().await.unwrap();
    drop(demo);

    let refused = match start_daemon(config).await {
        Ok((running, stop)) => {
            stop_daemon(running, stop).await;
            panic!("started on the demo's store");
        }
        Err(e) => e,
    };
    assert!(
        refused.is::<warmpool_server::CloudChangedRefused>(),
        "{refused:#}"
    );
    let store = open(data).await;
    let pool = store.get_pool(&key).await.unwrap().expect("the pool");
    assert_eq!(pool.last_error, None);
    assert_eq!(pool.last_error_at, None);
}

/// The daemon checks the cloud before serving: an unusable one stops start-up
/// with the problem named; a usable one fills its pools over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_an_unusable_cloud_and_fills_pools_on_a_usable_one() {
    let env = env_with_mysqld().await;
    let bad = env.config("", &SMALL_POOL.replace("mysql-8.0", "mysql-9.9"));
    let err = match warmpool_server::start(bad, std::future::pending()).await {
        Ok(_) => panic!("started on an unusable cloud"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no image named 'mysql-9.9'"), "{err}");

    let good = env.config("", SMALL_POOL);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start(good, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let key = PoolKey::new("db.small", "az1");
    let mut ready = 0;
    for _ in 0..200 {
        let instances = running.manager.list_instances(Some(&key)).await.unwrap();
        ready = instances
            .iter()
            .filter(|i| i.state == pool_manager::model::InstanceState::Ready)
            .count();
        if ready >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready >= 2, "pool never filled over HTTP");
    assert_eq!(env.sim.servers().len(), 2);
    let _ = stop.send(());
    running.served.await.unwrap().unwrap();
}

/// A cloud failing a call of the start-up check for a moment (a 5xx, a
/// 429) is checked again, after its Retry-After, and warmpoold starts once
/// it answers: a kill -9 soak saw a third of its restarts exit 1 on one
/// such answer, each lengthening a supervisor's back-off. Each try again is
/// a warning naming what failed and when the next try is. What never heals
/// (an image the cloud lacks) still stops start-up at the first try.
#[tokio::test]
async fn a_cloud_failing_for_a_moment_at_start_up_is_checked_again() {
    let logs = support::Logs::capture();
    let env = env().await;
    let pools = SMALL_POOL.replace("min_ready = 2", "min_ready = 0");
    let bad = env.config("", &pools.replace("mysql-8.0", "mysql-9.9"));
    let err = match warmpool_server::start(bad, std::future::pending()).await {
        Ok(_) => panic!("started on an unusable cloud"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no image named 'mysql-9.9'"), "{err}");
    assert!(!err.contains("still failing"), "{err}");
    assert!(
        !logs.text().contains("checks the cloud again"),
        "{}",
        logs.text()
    );

    // The first try's login (Nova's version discovery) gets a proxy's 500,
    // the second's Cinder a 429.
    env.face.faults().server_error_next(Service::Compute, 1);
    env.face
        .faults()
        .throttle_next(Service::Volume, 1, Duration::from_secs(1));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start(env.config("", &pools), async {
        let _ = stopped.await;
    })
    .await
    .expect("started once the cloud answered");
    // Each warning ends its failure (a proxy's page spans lines) with when
    // the next try is.
    let text = logs.text();
    let tried: Vec<&str> = text
        .split("this may pass by itself: warmpoold checks the cloud again at")
        .collect();
    assert_eq!(tried.len(), 3, "{text}");
    assert!(tried[0].contains("(HTTP 500)"), "{text}");
    assert!(tried[1].contains("Cinder: throttled"), "{text}");
    assert!(!tried[2].contains("throttled"), "{text}");
    let _ = stop.send(());
    running.served.await.unwrap().unwrap();
}

/// A cloud whose catalog has Cinder only as `volumev3` (many deployments
/// of the last decade register no `block-storage`): volumes work and the
/// cloud check passes; a catalog with no Cinder at all is named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_registered_only_as_volumev3_is_found() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            cinder_catalog_types: vec!["volumev3"],
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let volume = cloud
        .create_volume(&volume_spec("warmpool-v3", 1))
        .await
        .unwrap();
    assert_eq!(cloud.get_volume(&volume.id).await.unwrap().id, volume.id);
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");

    let env = env_with(
        sim_config(),
        HttpSettings {
            cinder_catalog_types: Vec::new(),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let e = cloud
        .create_volume(&volume_spec("warmpool-none", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("block-storage") && m.contains("volumev3")),
        "{e:?}"
    );
}

/// A Cinder older than Yoga routes its API only under the project id
/// (from microversion 3.67 it is optional), and osauth's version discovery
/// drops it from the catalog URL: without it every volume call met webob's
/// 404, which reads as a proxy's, so the cloud check failed and no purchase
/// got its volume. The driver puts warmpool's project id back in Cinder's
/// paths there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cinder_older_than_yoga_is_spoken_to_under_the_project_id() {
    let env = env_with(
        with_mysqld(),
        HttpSettings {
            cinder_max_version: (3, 60),
            ..HttpSettings::default()
        },
    )
    .await;
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");

    let (running, stop) = start_daemon(config).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    let volumes = env.sim.volumes();
    let volume = volumes.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(volume.status, VolumeStatus::InUse, "{volume:?}");
    assert_eq!(volume.attached_to, vec![server], "{volume:?}");
    stop_daemon(running, stop).await;
}

/// A pool in an availability zone Nova does not have is refused before
/// anything boots: by the cloud check at start-up and by the boot-spec
/// check CreatePool runs (every boot there would be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_in_a_zone_nova_lacks_is_refused() {
    let env = env().await;
    let cloud = env.driver().await;
    cloud
        .check_boot_spec(&PoolKey::new("db.small", "az1"), "mysql-8.0")
        .await
        .unwrap();
    let e = cloud
        .check_boot_spec(&PoolKey::new("db.small", "az-typo"), "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("'az-typo'") && m.contains("az1, az2")),
        "{e:?}"
    );

    let pools = r#"
[[pools]]
flavor = "db.small"
availability_zone = "az-typo"
min_ready = 1
max_ready = 1
image = "mysql-8.0"
"#;
    let config = env.config("", pools);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let zones = line(&report, CheckKind::Zone).join("\n");
    assert_eq!(
        zones,
        "zones: Nova has no availability zone 'az-typo' that takes servers (its zones: az1, az2)",
        "{report}"
    );
}

/// The report's lines that start with `label` ("key pair", "security group").
fn lines_of(report: &check_cloud::Report, label: &str) -> Vec<String> {
    let prefix = format!("{label}: ");
    report
        .to_string()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// A cloud whose users have one key pair, `name`.
async fn env_with_key_pair(name: &str) -> Env {
    env_with(
        SimConfig {
            key_pairs: vec![name.into()],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await
}

/// A key pair deleted after start-up's check: Nova refuses every boot with
/// "Invalid key_name provided." (400), which says nothing of where the name
/// comes from; the boot's error names the setting, so the pool's
/// last_error tells the operator what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_refused_for_its_key_pair_names_the_setting() {
    let env = env_with_key_pair("ops").await;
    let cloud = env.driver_with(r#"key_name = "gone""#).await;
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m)
            if m.contains("Invalid key_name provided") && m.contains("cloud.key_name \"gone\"")),
        "{e:?}"
    );
    assert!(env.sim.servers().is_empty());
    let cloud = env.driver_with(r#"key_name = "ops""#).await;
    cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .expect("a boot with a key pair Nova has");
}

/// A `key_name` the user warmpool logs in as has no key pair of (Nova keeps
/// them per user, and refuses every boot naming another "Invalid key_name
/// provided") fails the check, naming the setting, and so stops start-up
/// before anything is created; a key pair the user has passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_a_key_pair_the_user_lacks() {
    let env = env_with_key_pair("ops").await;
    let config = env.config(r#"key_name = "no-such-key""#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    assert_eq!(
        lines_of(&report, "key pair"),
        ["key pair: cloud.key_name \"no-such-key\": user pool in project service has no key pair of that name (Nova keeps key pairs per user: create or import it as the user warmpool authenticates as)"],
        "{report}"
    );
    let err = match warmpool_server::start(config, std::future::pending()).await {
        Ok(_) => panic!("started with a key pair Nova lacks"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cloud.key_name \"no-such-key\""), "{err}");
    assert!(env.sim.servers().is_empty());

    let config = env.config(r#"key_name = "ops""#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    assert_eq!(lines_of(&report, "key pair"), ["key pair: ok (ops)"]);

    // A Nova failing says nothing of the key pair.
    let cloud = env.driver().await;
    env.face.faults().server_error_next(Service::Compute, 1);
    let e = cloud.key_pair("ops").await.unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    assert_eq!(cloud.key_pair("ops").await.unwrap().name, "ops");
}

/// Nova gives a server the groups of `security_groups` it finds, by name
/// or id, among its project's groups only, and refuses a boot naming any
/// other: each must be exactly one group of warmpool's project. One that is
/// missing, one only another project has (an admin's listing shows every
/// project's groups), one named twice fail the check, naming the setting;
/// `default`, which every project has, passes by name and by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_names_security_groups_warmpools_project_lacks() {
    let env = env_with(
        SimConfig {
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::of_project("default", "tenant"),
                SecurityGroupConfig::of_project("mysql", "tenant"),
                SecurityGroupConfig::new("web"),
                SecurityGroupConfig::new("web"),
            ],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config(
        r#"security_groups = ["default", "nope", "mysql", "web"]"#,
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let lines = lines_of(&report, "security group");
    assert_eq!(lines.len(), 6, "{report}");
    let default_id = lines[0]
        .strip_prefix("security group: ok (default = ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{report}"))
        .to_owned();
    assert_eq!(
        lines[1],
        "security group: cloud.security_groups \"nope\": no security group named 'nope' is visible to user pool in project service (the project's security groups: default, web)",
        "{report}"
    );
    assert!(
        lines[2].starts_with("security group: cloud.security_groups \"mysql\": security group 'mysql' (")
            && lines[2].contains(") belongs to project ")
            && lines[2].ends_with(", not to warmpool's (user pool in project service): Nova gives a server only groups of its own project (the project's security groups: default, web)"),
        "{report}"
    );
    assert_eq!(
        lines[3],
        "security group: cloud.security_groups \"web\": 2 security groups are named 'web'; give its id instead",
        "{report}"
    );
    assert_eq!(lines[5], default_group_warning("default"), "{report}");
    assert!(
        report
            .refusal()
            .is_some_and(|r| r.contains("cloud.security_groups \"nope\"")),
        "{report}"
    );

    let config = env.config(
        &format!(r#"security_groups = ["{default_id}"]"#),
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        lines_of(&report, "security group"),
        [
            format!("security group: ok (default = {default_id})"),
            "security group: ok (tenant ports: the project's default group (tenant_port_security_groups unset))".to_owned(),
            default_group_warning(&default_id),
        ]
    );

    // Neither a Keystone failing to say which project is warmpool's nor a
    // Neutron failing says anything of the group; each is asked again.
    let cloud = env.driver().await;
    for service in [Service::Identity, Service::Network] {
        env.face.faults().server_error_next(service, 1);
        let e = cloud.security_group("default").await.unwrap_err();
        assert!(matches!(e, CloudError::Transient(_)), "{service:?}: {e:?}");
    }
    assert_eq!(
        cloud.security_group("default").await.unwrap().id,
        default_id
    );
}

/// The default settings with the management network (`mgmt-net`) changed
/// by `change`.
fn settings_with_management_network(
    change: impl FnOnce(&mut cloudsim::http::NetworkSpec),
) -> HttpSettings {
    let mut settings = HttpSettings::default();
    change(&mut settings.networks[0]);
    settings
}

/// Nova applies a boot's security groups to the port it makes on each
/// network, and cannot where the network has port security off (its ports
/// filter nothing) or has it on with no subnet: the boot is accepted and
/// the server ends in ERROR (`SecurityGroupCannotBeApplied`). check-cloud
/// refuses such a management network, naming the settings, instead of
/// letting every pool server end in ERROR and be booted again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_refuses_a_management_network_nova_cannot_apply_groups_on() {
    // Port security off: the groups are what cannot be applied.
    let env = env_with_security_groups_and(settings_with_management_network(|n| {
        n.port_security_enabled = false
    }))
    .await;
    let config = env.config(r#"security_groups = ["mysql"]"#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let refusal = report.refusal().unwrap_or_else(|| panic!("{report}"));
    assert!(
        refusal.contains("cloud.security_groups")
            && refusal.contains("\"mgmt-net\"")
            && refusal.contains("port_security_enabled = false"),
        "{report}"
    );
    // Without groups Nova boots there (the port filters nothing).
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    // A lone "default" is dropped by Nova before it reaches Neutron.
    let config = env.config(r#"security_groups = ["default"]"#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");

    // Port security on, no subnet: Nova refuses with or without groups.
    let mgmt = HttpSettings::default().networks[0].id.clone();
    let env = env_with(
        SimConfig {
            networks_without_subnet: vec![mgmt],
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::new("mysql"),
            ],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config(r#"security_groups = ["mysql"]"#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let refusal = report.refusal().unwrap_or_else(|| panic!("{report}"));
    assert!(
        refusal.contains("\"mgmt-net\"") && refusal.contains("no subnet"),
        "{report}"
    );
}

/// A zone's own management network is judged by the pools in that zone,
/// as their flavors and zones are: a provider network without port
/// security that only an override of a zone no pool is in names is a
/// warning (boots fail there only once a pool is made in it), where it
/// stopped start-up for every pool; a configured pool's zone network
/// still refuses start-up, and a stored pool's marks that pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_network_only_an_unused_zone_names_only_warns() {
    let mut settings = HttpSettings::default();
    let mut provider =
        cloudsim::http::NetworkSpec::new("provider-net", "10.9.0.0/16", "10.9.0.1", true);
    provider.port_security_enabled = false;
    settings.networks.push(provider);
    let env = env_with_security_groups_and(settings).await;

    // az1's pool on the default network; az9 has no pool.
    let config = env.config(
        "security_groups = [\"mysql\"]\n\
         [cloud.availability_zones.az9]\nmanagement_network = \"provider-net\"",
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert_eq!(report.refusal(), None, "start-up stopped:\n{report}");
    assert!(report.stale_pools().is_empty(), "{report}");
    assert!(report.passed(), "a warning fails no check:\n{report}");
    let network = line(&report, CheckKind::Network);
    assert!(
        network
            .iter()
            .any(|l| l.contains("network: ok (mgmt-net = ")),
        "{report}"
    );
    assert!(
        network.iter().any(|l| l.contains(
            "cannot be applied on cloud.availability_zones.az9.management_network \"provider-net\""
        ) && l.contains("port_security_enabled = false")
            && l.contains("no pool is in az9 yet")),
        "{report}"
    );

    // A pool in the zone, declared in the config file: start-up refuses.
    let in_az2 = "security_groups = [\"mysql\"]\n\
         [cloud.availability_zones.az2]\nmanagement_network = \"provider-net\"";
    let both = format!("{SMALL_POOL}{}", SMALL_POOL.replace("az1", "az2"));
    let config = env.config(in_az2, &both);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let refusal = report.refusal().unwrap_or_else(|| panic!("{report}"));
    assert!(
        refusal.contains("availability_zones.az2.management_network \"provider-net\"")
            && refusal.contains("[db.small@az2 declared in the config file"),
        "{refusal}"
    );

    // The same pool, stored: it is marked, and the others served.
    let pools: Vec<check_cloud::CheckedPool> = config
        .pools
        .iter()
        .map(|p| match p.key().availability_zone.as_str() {
            "az2" => check_cloud::CheckedPool::stored(p.key(), &p.spec()),
            _ => p.into(),
        })
        .collect();
    let (report, cloud) = check_cloud::check_pools(openstack(&config), &pools).await;
    assert!(cloud.is_some());
    assert_eq!(report.refusal(), None, "{report}");
    let stale = report.stale_pools();
    assert_eq!(
        stale.keys().collect::<Vec<_>>(),
        [&PoolKey::new("db.small", "az2")],
        "{report}"
    );
    let marked = &stale[&PoolKey::new("db.small", "az2")];
    assert!(marked.problems[0].contains("\"provider-net\""), "{report}");
    // Only a boot shows a management network mended.
    assert_eq!(
        marked.proof,
        pool_manager::events::MarkProof::RecheckAndBoot,
        "{report}"
    );
}

/// The pools of `config`, each as the store has it: a daemon's start
/// after the first.
fn all_stored(config: &Config) -> Vec<check_cloud::CheckedPool> {
    config
        .pools
        .iter()
        .map(|p| check_cloud::CheckedPool::stored(p.key(), &p.spec()))
        .collect()
}

/// A store check-cloud cannot read (a running warmpoold holds it) leaves
/// the pools created through the API unchecked: a claim that no pool is
/// in a zone is about the config file's pools only, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_with_the_store_unread_says_its_zone_claims_are_the_files() {
    let env = env().await;
    let data = env.dir.path().join("data");
    let _held = tokio::task::spawn_blocking(move || pool_manager::store::SledStore::open(&data))
        .await
        .unwrap()
        .unwrap();
    let config = env.config(
        "[cloud.availability_zones.az2]\nmanagement_network = \"mgmt-net\"",
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let overrides = line(&report, CheckKind::ZoneOverride);
    assert!(
        overrides.len() == 1
            && overrides[0].contains("applies to no pool")
            && overrides[0].contains("the store was not read")
            && overrides[0].contains("created through the API"),
        "{report}"
    );
    // A warning of every pool's management ports (security_groups unset
    // here) says nothing of "no pool", so nothing of the store either.
    assert_eq!(
        lines_of(&report, "security group")
            .into_iter()
            .filter(|l| !l.contains(": ok ("))
            .collect::<Vec<_>>(),
        [format!("security group: cloud.security_groups is unset, so the management ports get the project's default group, which admits every protocol from every port in it: {KEEP_THEM_APART}")],
        "{report}"
    );
    let store = report.to_string();
    assert!(
        store.contains("with the config file's settings"),
        "{report}"
    );
    assert!(report.passed(), "{report}");
}

/// A Glance warmpool cannot reach at all (here an `image_endpoint_override`
/// leading nowhere: osauth's version discovery fails, as for an image
/// service missing from the region's catalog) answers nothing about any
/// image: every pool's failure, which stops start-up even when the store
/// has every pool, not one marking each pool degraded while none can boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glance_out_of_reach_stops_start_up_with_only_stored_pools() {
    let env = env().await;
    let yaml = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    std::fs::write(
        &env.clouds_yaml,
        format!(
            "{yaml}    image_endpoint_override: {}/nowhere/\n",
            env.face.base_url()
        ),
    )
    .unwrap();
    let config = env.config("", SMALL_POOL);
    let (report, cloud) = check_cloud::check_pools(openstack(&config), &all_stored(&config)).await;
    assert!(cloud.is_some(), "{report}");
    assert!(!line(&report, CheckKind::Image).is_empty(), "{report}");
    let refusal = report.refusal().unwrap_or_else(|| panic!("{report}"));
    assert!(refusal.contains("image: "), "{refusal}");
    assert!(report.stale_pools().is_empty(), "{report}");
}

/// A cloud that ignores the page marker fails every listing the same
/// way, whatever is looked up: every pool's failure, not each flavor's or
/// network's, even with every pool stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_ignoring_the_marker_stops_start_up_with_only_stored_pools() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            page_limit: Some(1),
            ignore_marker: true,
            ..HttpSettings::default()
        },
    )
    .await;
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check_pools(openstack(&config), &all_stored(&config)).await;
    let refusal = report.refusal().unwrap_or_else(|| panic!("{report}"));
    assert!(refusal.contains("ignores the marker"), "{refusal}");
    assert!(report.stale_pools().is_empty(), "{report}");
}

/// A boot naming groups on a management network without port security
/// (or with it, but no subnet) is accepted and ends in ERROR with Nova's
/// fault; without groups, or with a subnet and port security, it boots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_whose_groups_cannot_be_applied_ends_in_error_with_novas_fault() {
    let env = env_with_security_groups_and(settings_with_management_network(|n| {
        n.port_security_enabled = false
    }))
    .await;
    let cloud = env.driver_with(r#"security_groups = ["mysql"]"#).await;
    let created = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let server = settled(&cloud, &created.id).await;
    assert_eq!(server.status, ServerStatus::Error);
    let fault = server.fault.expect("the fault");
    assert!(
        fault.contains(
            "Network requires port_security_enabled and subnet associated in order to apply security groups."
        ),
        "{fault}"
    );
    let cloud = env.driver().await;
    let created = cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(
        settled(&cloud, &created.id).await.status,
        ServerStatus::Active
    );

    let mgmt = HttpSettings::default().networks[0].id.clone();
    let env = env_with(
        SimConfig {
            networks_without_subnet: vec![mgmt],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env.driver().await;
    let created = cloud
        .create_server(&spec("c", "db.small", "az1"))
        .await
        .unwrap();
    let server = settled(&cloud, &created.id).await;
    assert_eq!(server.status, ServerStatus::Error);
    assert!(
        server
            .fault
            .as_deref()
            .is_some_and(|f| f.contains("port_security_enabled and subnet")),
        "{server:?}"
    );
}

/// A group of `security_groups` deleted after start-up's check: Nova
/// refuses every boot (400 "Security group mysql not found."), and one
/// naming a name two groups share (409). The driver looks the flavor,
/// image and network up again (none changed) and its error names the
/// setting, so the pool's last_error tells the operator what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_refused_for_a_security_group_names_the_setting() {
    let env = env_with_security_groups().await;
    let cloud = env.driver_with(r#"security_groups = ["mysql"]"#).await;
    env.sim.delete_security_group("mysql");
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m)
            if m.contains("Security group mysql not found") && m.contains("cloud.security_groups [\"mysql\"]")),
        "{e:?}"
    );
    let cloud = env.driver_with(r#"security_groups = ["web"]"#).await;
    let e = cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m)
            if m.contains("Multiple security_group matches found for name 'web'") && m.contains("cloud.security_groups [\"web\"]")),
        "{e:?}"
    );
    assert!(env.sim.servers().is_empty());
    let cloud = env.driver_with(r#"security_groups = ["db-clients"]"#).await;
    cloud
        .create_server(&spec("c", "db.small", "az1"))
        .await
        .expect("a boot naming a group the project has");
}

/// GET `path` of Neutron's API (`/v2.0/...`) as warmpool's user: what the
/// cloud shows, beyond what the driver reads of it.
async fn neutron_get(env: &Env, path: &str) -> serde_json::Value {
    let settings = env.face.settings();
    let user = &settings.users[0];
    let login = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user.name, "domain": {"name": settings.domain_name}, "password": user.password}}},
        "scope": {"project": {"name": settings.project_name, "domain": {"name": settings.domain_name}}},
    }});
    let (status, headers, answer) = support::http_send(
        "POST",
        &format!("{}/auth/tokens", env.face.auth_url()),
        &[("content-type", "application/json")],
        Some(login.to_string()),
    )
    .await;
    assert_eq!(status, 201, "login: {answer}");
    let token = headers["x-subject-token"].to_str().unwrap();
    let url = format!("{}{path}", env.face.service_url(Service::Network));
    let (status, _, answer) =
        support::http_send("GET", &url, &[("x-auth-token", token)], None).await;
    assert_eq!(status, 200, "GET {path}: {answer}");
    serde_json::from_str(&answer).unwrap()
}

/// The id of warmpool's project's security group `name`.
async fn security_group_id(env: &Env, name: &str) -> String {
    let project = env.face.project_id();
    let groups = neutron_get(
        env,
        &format!("/v2.0/security-groups?name={name}&project_id={project}"),
    )
    .await;
    groups["security_groups"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no group {name}: {groups}"))
        .to_owned()
}

/// The security groups Neutron shows on port `id`.
async fn port_security_groups(env: &Env, id: &str) -> serde_json::Value {
    let port = neutron_get(env, &format!("/v2.0/ports/{id}")).await;
    port["port"]["security_groups"].clone()
}

/// A cloud whose project has the groups `default`, `mysql`, `db-clients`
/// and two named `web`.
async fn env_with_security_groups() -> Env {
    env_with_security_groups_and(HttpSettings::default()).await
}

/// [`env_with_security_groups`], its face served with `settings`.
async fn env_with_security_groups_and(settings: HttpSettings) -> Env {
    env_with_security_groups_on(sim_config(), settings).await
}

/// [`env_with_security_groups_and`] on a simulated cloud otherwise
/// configured as `config`.
async fn env_with_security_groups_on(config: SimConfig, settings: HttpSettings) -> Env {
    env_with(
        SimConfig {
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::new("mysql"),
                SecurityGroupConfig::new("db-clients"),
                SecurityGroupConfig::new("web"),
                SecurityGroupConfig::new("web"),
            ],
            ..config
        },
        settings,
    )
    .await
}

/// check-cloud warns (the report passes) of a management group rule that
/// admits mysqld from a group's ports or from a prefix covering the
/// management network's subnet (127.77.0.0/16 here), as Neutron shows a
/// group's rules with it; a rule admitting one address passes unremarked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_warns_of_management_groups_letting_pool_servers_reach_each_other() {
    let mysql_from = |remote: serde_json::Value| {
        let mut rule = serde_json::json!({"direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 3306, "port_range_max": 3306,
            "remote_ip_prefix": null, "remote_group_id": null});
        rule.as_object_mut()
            .unwrap()
            .extend(remote.as_object().unwrap().clone());
        rule
    };
    let env = env_with(
        SimConfig {
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::new("mgmt-wide").with_rule(mysql_from(
                    serde_json::json!({"remote_ip_prefix": "127.0.0.0/8"}),
                )),
                SecurityGroupConfig::new("mgmt-members").with_rule(mysql_from(
                    serde_json::json!({"remote_group_id": "5f7c0d3e-members"}),
                )),
                SecurityGroupConfig::new("mgmt-tight").with_rule(mysql_from(
                    serde_json::json!({"remote_ip_prefix": "127.77.0.5/32"}),
                )),
            ],
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config(
        r#"security_groups = ["mgmt-wide", "mgmt-members", "mgmt-tight"]
tenant_port_security_groups = ["default"]"#,
        SMALL_POOL,
    );
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(report.passed(), "{report}");
    let warned: Vec<String> = lines_of(&report, "security group")
        .into_iter()
        .filter(|l| !l.contains(": ok ("))
        .collect();
    assert_eq!(
        warned,
        [
            format!("security group: cloud.security_groups \"mgmt-wide\" admits mysql_port 3306 from 127.0.0.0/8, which covers the management subnet 127.77.0.0/16: {KEEP_THEM_APART}"),
            format!("security group: cloud.security_groups \"mgmt-members\" admits mysql_port 3306 from every port of security group 5f7c0d3e-members: {KEEP_THEM_APART}"),
        ],
        "{report}"
    );
}

/// The tenant's port gets the project's default group unless
/// `tenant_port_security_groups` names others, as before the setting was
/// added: the pool servers' `security_groups` are not put on every
/// tenant's port by an upgrade (an operator who opened mysqld's port in the
/// default group would lose every new database). check-cloud says which
/// groups tenant ports get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_port_gets_the_projects_default_group_unless_told() {
    let env = env_with_security_groups_on(with_mysqld(), HttpSettings::default()).await;
    let default = security_group_id(&env, "default").await;
    let config = env.config(r#"security_groups = ["mysql"]"#, SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(
        lines_of(&report, "security group").contains(
            &"security group: ok (tenant ports: the project's default group (tenant_port_security_groups unset))".to_owned()
        ),
        "{report}"
    );
    let (running, stop) = start_daemon(config).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let port = allocated.port_id.clone().unwrap();
    assert_eq!(
        port_security_groups(&env, &port).await,
        serde_json::json!([default])
    );
    stop_daemon(running, stop).await;
}

/// On a dual-stack tenant network Neutron gives the tenant's port, beside
/// the IPv4 address of the subnet (or the address) the order names, an
/// address of the network's IPv6 SLAAC subnet, and lists the two ordered as
/// strings (`2001:db8:...` before `203.0.113....`). The allocation's
/// `ip_address` is the one the order asked for: the named address, else
/// one of the named subnet, else the IPv4 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_port_gives_the_allocation_the_address_asked_for() {
    let mut settings = HttpSettings::default();
    let dual = cloudsim::http::NetworkSpec::new("dual-net", "203.0.113.0/24", "203.0.113.1", true)
        .with_slaac_subnet("2001:db8:1::/64");
    let (dual_id, v4_subnet) = (dual.id.clone(), dual.subnet_id.clone());
    settings.networks.push(dual);
    let env = env_with(with_mysqld(), settings).await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let on_dual = |request_id: &'static str, subnet: Option<&str>, fixed: Option<&str>| {
        let env = &env;
        let (dual_id, subnet, fixed) = (
            dual_id.clone(),
            subnet.map(str::to_owned),
            fixed.map(str::to_owned),
        );
        async move {
            let mut order = order(env, request_id).await;
            order.params.network.network_id = dual_id;
            order.params.network.subnet_id = subnet;
            order.params.network.fixed_ip = fixed;
            order
        }
    };

    let by_subnet = running
        .manager
        .allocate(on_dual("o1", Some(&v4_subnet), None).await)
        .await
        .unwrap();
    let port = neutron_get(
        &env,
        &format!("/v2.0/ports/{}", by_subnet.port_id.as_deref().unwrap()),
    )
    .await;
    let listed: Vec<&str> = port["port"]["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap())
        .collect();
    assert!(
        listed.len() == 2 && listed[0].starts_with("2001:db8:1:"),
        "Neutron lists the SLAAC address first: {port}"
    );
    let ip = by_subnet.ip_address.clone().expect("an address");
    assert!(
        ip.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[..3] == [203, 0, 113]),
        "{ip} is not of the IPv4 subnet asked for"
    );

    let any = running
        .manager
        .allocate(on_dual("o2", None, None).await)
        .await
        .unwrap();
    let ip = any.ip_address.clone().expect("an address");
    assert!(ip.starts_with("203.0.113."), "{ip}: the IPv4 address first");

    let fixed = running
        .manager
        .allocate(on_dual("o3", Some(&v4_subnet), Some("203.0.113.77")).await)
        .await
        .unwrap();
    assert_eq!(fixed.ip_address.as_deref(), Some("203.0.113.77"));
    stop_daemon(running, stop).await;
}

/// A tenant network without port security (`port_security_enabled =
/// false`) filters nothing, and ML2 refuses a port create naming any group
/// there (400 `PortSecurityAndIPRequiredForSecurityGroups`): the purchase's
/// port is made again without groups, and the network remembered, so the
/// next purchase on it sends no create bound to fail. Other networks' ports
/// still get the groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_network_without_port_security_gets_ports_without_groups() {
    let mut settings = HttpSettings::default();
    settings.networks.push(cloudsim::http::NetworkSpec {
        port_security_enabled: false,
        ..cloudsim::http::NetworkSpec::new("open-net", "10.8.0.0/16", "10.8.0.1", true)
    });
    let env = env_with_security_groups_on(with_mysqld(), settings).await;
    let mysql = security_group_id(&env, "mysql").await;
    let open_net = env.driver().await.network("open-net").await.unwrap().id;
    let (running, stop) = start_daemon(env.config(
        "security_groups = [\"mysql\"]\ntenant_port_security_groups = [\"mysql\"]",
        SMALL_POOL,
    ))
    .await
    .unwrap();
    let port_creates = || {
        env.sim
            .call_counts()
            .get("create_port")
            .copied()
            .unwrap_or(0)
    };
    let on_open_net = |request_id: &'static str| {
        let env = &env;
        let open_net = open_net.clone();
        async move {
            let mut order = order(env, request_id).await;
            order.params.network.network_id = open_net;
            order
        }
    };

    let before = port_creates();
    let first = running
        .manager
        .allocate(on_open_net("o1").await)
        .await
        .unwrap();
    assert_eq!(
        port_creates() - before,
        2,
        "the refused create and the one without groups"
    );
    let port = first.port_id.clone().unwrap();
    assert_eq!(
        port_security_groups(&env, &port).await,
        serde_json::json!([])
    );

    let before = port_creates();
    let second = running
        .manager
        .allocate(on_open_net("o2").await)
        .await
        .unwrap();
    assert_eq!(port_creates() - before, 1, "no create bound to fail");
    let port = second.port_id.clone().unwrap();
    assert_eq!(
        port_security_groups(&env, &port).await,
        serde_json::json!([])
    );

    let third = running
        .manager
        .allocate(order(&env, "o3").await)
        .await
        .unwrap();
    let port = third.port_id.clone().unwrap();
    assert_eq!(
        port_security_groups(&env, &port).await,
        serde_json::json!([mysql])
    );
    stop_daemon(running, stop).await;
}

/// The driver reads whose an order's network is from Neutron, as an admin
/// of warmpool's project is shown it: its project, Neutron's `shared`
/// (true for a network shared with warmpool's project alone, as Neutron
/// works it out for the project asking), and its RBAC `access_as_shared`
/// policies, over every page. A purchase then puts the tenant's port only
/// on the tenant's own network or one shared with the tenant or with every
/// project: an order naming another tenant's network, even one shared with
/// warmpool's project so that a member could make ports on it, is refused
/// FAILED_PRECONDITION before any port is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_port_goes_only_on_a_network_the_tenant_may_use() {
    use cloudsim::http::{project_id_of, NetworkSpec};
    use pool_manager::cloud::{NetworkOwner, NetworkShare};
    let mut settings = HttpSettings {
        page_limit: Some(1),
        ..HttpSettings::default()
    };
    // tenant-b's network, shared with warmpool's project ("service").
    let b_net = NetworkSpec::new("b-net", "10.61.0.0/16", "10.61.0.1", false)
        .of_project("tenant-b")
        .shared_with_project("service");
    // tenant-c's network, shared with tenant-z and tenant-a.
    let c_net = NetworkSpec::new("c-net", "10.62.0.0/16", "10.62.0.1", false)
        .of_project("tenant-c")
        .shared_with_project("tenant-z")
        .shared_with_project("tenant-a");
    settings.networks.extend([b_net.clone(), c_net.clone()]);
    let env = env_with(with_mysqld(), settings).await;
    let (tenant_a, tenant_b) = (project_id_of("tenant-a"), project_id_of("tenant-b"));

    let cloud = env.driver().await;
    let b = cloud.get_network(&b_net.id).await.unwrap();
    assert_eq!(b.owner, NetworkOwner::Project(tenant_b.clone()));
    assert!(
        b.shared,
        "shared with warmpool's project shows shared to it"
    );
    assert_eq!(
        cloud.network_shares(&b_net.id).await.unwrap(),
        [NetworkShare::Warmpool]
    );
    assert_eq!(
        cloud.network_shares(&c_net.id).await.unwrap(),
        [
            NetworkShare::Project(project_id_of("tenant-z")),
            NetworkShare::Project(tenant_a.clone())
        ]
    );
    let tenant_net = cloud.network("tenant-net").await.unwrap().id;
    let shown = cloud.get_network(&tenant_net).await.unwrap();
    assert_eq!((shown.owner, shown.shared), (NetworkOwner::Warmpool, true));
    assert_eq!(shown.management, None);
    // The management network is shown, and said to be one, for the fence
    // to refuse: Neutron refused nothing.
    let mgmt = cloud.network("mgmt-net").await.unwrap().id;
    let shown = cloud.get_network(&mgmt).await.unwrap();
    assert_eq!(
        shown.management.as_deref(),
        Some("warmpool's management network \"mgmt-net\"")
    );
    assert_eq!(
        cloud.network_shares(&tenant_net).await.unwrap(),
        [NetworkShare::EveryProject]
    );
    let e = cloud
        .get_network("5b2f1c1e-0000-4000-8000-0000000000ff")
        .await
        .unwrap_err();
    assert!(matches!(&e, CloudError::NotFound(_)), "{e:?}");

    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let port_creates = || {
        env.sim
            .call_counts()
            .get("create_port")
            .copied()
            .unwrap_or(0)
    };
    let on = |request_id: &'static str, tenant: String, network: String| {
        let env = &env;
        async move {
            let mut order = order(env, request_id).await;
            order.params.tenant_project_id = tenant;
            order.params.network.network_id = network;
            order
        }
    };
    let before = port_creates();
    let e = running
        .manager
        .allocate(on("o-a-on-b", tenant_a.clone(), b_net.id.clone()).await)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, pool_manager::ManagerError::FailedPrecondition(m)
            if m.contains(&b_net.id) && m.contains(&tenant_b) && m.contains(&tenant_a)
                && m.contains("only with warmpool's project")),
        "{e}"
    );
    assert_eq!(port_creates(), before, "no port was made");
    assert!(running.manager.get_allocation("o-a-on-b").await.is_err());

    // The management network (warmpool's project's, shared with no one)
    // takes no tenant's port whatever its shares: the refusal says so,
    // before the order is recorded, and sends no one to share it. It is
    // warmpool's refusal, not the cloud's: billing is not told "cloud
    // error", nor is Neutron, which refused nothing, counted as failing.
    let neutron_calls = |status: &str| {
        let body = running.metrics.encode();
        let series = format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"network\",status=\"{status}\"}}"
        );
        body.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let (fatal_before, ok_before) = (neutron_calls("fatal"), neutron_calls("ok"));
    let e = running
        .manager
        .allocate(on("o-a-on-mgmt", tenant_a.clone(), mgmt.clone()).await)
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(&e, pool_manager::ManagerError::FailedPrecondition(_)),
        "{e:?}"
    );
    assert_eq!(
        warmpool_server::convert::status(e).code(),
        tonic::Code::FailedPrecondition,
        "{message}"
    );
    assert!(
        message.contains(&mgmt)
            && message.contains("management network \"mgmt-net\"")
            && !message.contains("cloud error")
            && !message.contains("rbac")
            && !message.contains("share the network"),
        "{message}"
    );
    assert_eq!(
        neutron_calls("fatal"),
        fatal_before,
        "Neutron counted as failing"
    );
    assert!(
        neutron_calls("ok") > ok_before,
        "the fence's look at the network"
    );
    assert_eq!(port_creates(), before, "no port was made");
    assert!(running.manager.get_allocation("o-a-on-mgmt").await.is_err());

    for (request_id, tenant, network) in [
        ("o-b-on-b", tenant_b.clone(), b_net.id.clone()),
        ("o-a-on-c", tenant_a.clone(), c_net.id.clone()),
        ("o-a-on-tenant-net", tenant_a.clone(), tenant_net.clone()),
    ] {
        let allocation = running
            .manager
            .allocate(on(request_id, tenant, network).await)
            .await
            .unwrap();
        assert!(allocation.port_id.is_some(), "{request_id}: {allocation:?}");
    }
    stop_daemon(running, stop).await;
}

/// `tenant_port_security_groups` given: the port gets its groups; an empty
/// list names none, so the project's default group applies. A name that is
/// not exactly one group of warmpool's project refuses every port, naming
/// the setting, and fails check-cloud. A group replaced under its name
/// since it was looked up (Neutron's 404 for the id cached) is looked up
/// again, and the port made with the new one; one deleted for good refuses
/// the port, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_port_security_groups_are_a_setting_of_their_own() {
    let env = env_with_security_groups().await;
    let tenant_net = env.driver().await.network("tenant-net").await.unwrap().id;
    let clients = security_group_id(&env, "db-clients").await;
    for (setting, shown, checked) in [
        (
            r#"["db-clients"]"#,
            "db-clients",
            format!("tenant ports: db-clients = {clients}"),
        ),
        (
            "[]",
            "default",
            "tenant ports: the project's default group (tenant_port_security_groups empty)"
                .to_owned(),
        ),
    ] {
        let extra =
            format!("security_groups = [\"mysql\"]\ntenant_port_security_groups = {setting}");
        let cloud = env.driver_with(&extra).await;
        let port = cloud
            .create_port(&port_spec(&format!("port-{shown}"), &tenant_net))
            .await
            .unwrap();
        assert_eq!(
            port_security_groups(&env, &port.id).await,
            serde_json::json!([security_group_id(&env, shown).await]),
            "{setting}"
        );
        let config = env.config(&extra, SMALL_POOL);
        let (report, _) = check_cloud::check(&config, openstack(&config)).await;
        assert!(report.passed(), "{report}");
        assert_eq!(
            lines_of(&report, "security group"),
            [
                format!(
                    "security group: ok (mysql = {})",
                    security_group_id(&env, "mysql").await
                ),
                format!("security group: ok ({checked})"),
            ],
            "{report}"
        );
    }
    // check-cloud's reason names the project's groups beside a missing one.
    for (group, why, listed) in [
        (
            "nope",
            "no security group named 'nope' is visible to user pool in project service",
            " (the project's security groups: db-clients, default, mysql, web)",
        ),
        (
            "web",
            "2 security groups are named 'web'; give its id instead",
            "",
        ),
    ] {
        let extra = format!("tenant_port_security_groups = [\"{group}\"]");
        let cloud = env.driver_with(&extra).await;
        let e = cloud
            .create_port(&port_spec("refused", &tenant_net))
            .await
            .unwrap_err();
        let setting = format!("cloud.tenant_port_security_groups \"{group}\": {why}");
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains(&setting)),
            "{e:?}"
        );
        let config = env.config(&extra, SMALL_POOL);
        let (report, _) = check_cloud::check(&config, openstack(&config)).await;
        assert!(!report.passed(), "{report}");
        assert_eq!(
            lines_of(&report, "security group"),
            [
                format!("security group: {setting}{listed}"),
                format!("security group: cloud.security_groups is unset, so the management ports get the project's default group, which admits every protocol from every port in it: {KEEP_THEM_APART}"),
            ],
            "{report}"
        );
    }
    assert!(
        env.sim.ports().iter().all(|p| p.name != "refused"),
        "{:?}",
        env.sim.ports()
    );

    let cloud = env
        .driver_with(r#"tenant_port_security_groups = ["db-clients"]"#)
        .await;
    let port = cloud
        .create_port(&port_spec("before", &tenant_net))
        .await
        .unwrap();
    assert_eq!(
        port_security_groups(&env, &port.id).await,
        serde_json::json!([clients])
    );
    cloud.delete_port(&port.id).await.unwrap();
    let replaced = env.sim.replace_security_group("db-clients");
    assert_ne!(replaced, clients);
    let port = cloud
        .create_port(&port_spec("after", &tenant_net))
        .await
        .unwrap();
    assert_eq!(
        port_security_groups(&env, &port.id).await,
        serde_json::json!([replaced])
    );
    cloud.delete_port(&port.id).await.unwrap();
    env.sim.delete_security_group("db-clients");
    let e = cloud
        .create_port(&port_spec("gone", &tenant_net))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("cloud.tenant_port_security_groups \"db-clients\": no security group named 'db-clients'")),
        "{e:?}"
    );
}

/// Every port a pool server holds is in warmpool's project (Nova's at the
/// boot, warmpool's for the tenant), so the driver asks Neutron for that
/// project's ports only. As an admin, warmpool would otherwise count
/// another project's port naming a pool server as its device among that
/// server's. The pool-server listing reads no ports at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_warmpools_own_ports_are_read_as_its_servers() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            page_limit: Some(2),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let server = settled(&cloud, &server.id).await;
    let own = server.attached_ports.clone();
    assert_eq!(own.len(), 1, "{server:?}");
    let port_pages = || {
        let calls = env.sim.call_counts();
        calls.get("find_ports_by_name").copied().unwrap_or(0)
    };
    env.sim.reset_call_counts();
    cloud.get_server(&server.id).await.unwrap();
    let pages_alone = port_pages();

    let tenant_net = cloud.network("tenant-net").await.unwrap().id;
    let faults = env.face.faults();
    for _ in 0..4 {
        faults.add_port_of_project("tenant", &tenant_net, None);
    }
    let theirs = faults.add_port_of_project("tenant", &tenant_net, Some(&server.id));
    let bound = neutron_get(&env, &format!("/v2.0/ports?device_id={}", server.id)).await;
    assert_eq!(bound["ports"].as_array().unwrap().len(), 2, "{bound}");

    env.sim.reset_call_counts();
    assert_eq!(
        cloud.get_server(&server.id).await.unwrap().attached_ports,
        own,
        "{theirs} is another project's"
    );
    assert_eq!(port_pages(), pages_alone, "pages of ports read");

    env.sim.reset_call_counts();
    let listed = cloud.list_pool_servers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(port_pages(), 0, "pages of ports the listing read");
}

/// A port name is no secret, and an admin is listed every project's ports:
/// a tenant may make a port of its own, on its own network, under the name
/// of warmpool's port for its order (`warmpool-<request_id>-<attempt>`).
/// Ports are looked up by name after a create whose answer may be lost
/// (the retry adopts what the lost create made) and by the twin watches
/// (which delete what they find): only warmpool's project's count, so no
/// tenant's port is adopted (the tenant could change it) nor deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_of_another_project_with_the_same_name_is_neither_adopted_nor_listed() {
    let env = env().await;
    let cloud = env.driver().await;
    let faults = env.face.faults();
    let network = cloud.network("tenant-net").await.unwrap();
    // Lookups a port create makes first, cached: the fault is the create's.
    cloud.network("mgmt-net").await.unwrap();
    let warm = cloud
        .create_port(&port_spec("warmpool-o0", &network.id))
        .await
        .unwrap();
    cloud.delete_port(&warm.id).await.unwrap();

    let name = "warmpool-o1-0001";
    let theirs = faults.add_named_port_of_project("tenant", name, &network.id, None);
    let listed = neutron_get(&env, &format!("/v2.0/ports?name={name}")).await;
    assert_eq!(listed["ports"].as_array().unwrap().len(), 1, "{listed}");
    assert!(cloud.find_ports_by_name(name).await.unwrap().is_empty());

    // A create refused 500 may have been done: the retry looks by name.
    faults.server_error_next(Service::Network, 1);
    let e = cloud
        .create_port(&port_spec(name, &network.id))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    let port = cloud
        .create_port(&port_spec(name, &network.id))
        .await
        .unwrap();
    assert_ne!(port.id, theirs, "the tenant's port was adopted");
    let found: Vec<String> = cloud
        .find_ports_by_name(name)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(found, [port.id.as_str()]);
    let listed = neutron_get(&env, &format!("/v2.0/ports?name={name}")).await;
    assert_eq!(listed["ports"].as_array().unwrap().len(), 2, "{listed}");
}

/// Releases order o1 (keeping its volume): Released, its `server` left
/// SOFT_DELETED to the reclaim (the simulated cloud shows it Deleted).
async fn released_left_soft_deleted(env: &Env, manager: &pool_manager::PoolManager, server: &str) {
    let released = manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    assert_eq!(
        env.sim.server(server).map(|s| s.server.status),
        Some(ServerStatus::Deleted),
        "left SOFT_DELETED to the reclaim"
    );
}

/// A cloud that only soft-deletes (Nova's `reclaim_instance_interval`),
/// reclaiming after an hour.
async fn soft_delete_env() -> Env {
    soft_delete_env_with(sim_config()).await
}

/// [`soft_delete_env`] on a simulated cloud configured as `config`.
async fn soft_delete_env_with(config: SimConfig) -> Env {
    env_with(
        config,
        HttpSettings {
            reclaim_instance_interval: Duration::from_secs(3600),
            ..HttpSettings::default()
        },
    )
    .await
}

/// On a cloud that only soft-deletes (Nova's `reclaim_instance_interval`),
/// what warmpool deletes stays SOFT_DELETED, holding its ports and
/// volumes, until the reclaim, and Nova's listing no longer shows it: the reconciler's next
/// pass still finishes those deletes (forceDelete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_a_soft_delete_cloud_keeps_are_deleted_for_good() {
    let env = soft_delete_env_with(with_mysqld()).await;
    let (running, stop) = start_reconciling_often(&env).await;
    let key = PoolKey::new("db.small", "az1");
    for _ in 0..600 {
        let status = running.manager.get_pool(&key).await.unwrap();
        if status.count(pool_manager::model::InstanceState::Ready) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = running.manager.get_pool(&key).await.unwrap();
    assert_eq!(status.count(pool_manager::model::InstanceState::Ready), 2);
    running.manager.delete_pool(&key).await.unwrap();
    let sim = env.sim.clone();
    wait_until("the soft-deleted servers to go for good", || {
        sim.servers().is_empty()
    })
    .await;
    let _ = stop.send(());
    running.served.await.unwrap().unwrap();
}

/// An ACTIVE db.small server with a tenant's volume attached, on `cloud`.
async fn a_server_holding_a_volume(cloud: &OpenStackCloud) -> (String, String) {
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    assert_eq!(
        settled(cloud, &server.id).await.status,
        ServerStatus::Active
    );
    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();
    volume_reaches(cloud, &volume.id, VolumeStatus::Available).await;
    cloud.attach_volume(&server.id, &volume.id).await.unwrap();
    volume_reaches(cloud, &volume.id, VolumeStatus::InUse).await;
    (server.id, volume.id)
}

/// Until `get_server` answers 404.
async fn server_gone(cloud: &OpenStackCloud, id: &str) {
    for _ in 0..200 {
        match cloud.get_server(id).await {
            Err(CloudError::NotFound(_)) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("server {id}: {e}"),
        }
    }
    let left = cloud.get_server(id).await.unwrap();
    panic!("server {id} is still there: {left:?}");
}

/// A server the driver saw SOFT_DELETED is force-deleted by the next
/// delete, though a listing came between: Nova's listing leaves
/// soft-deleted servers out, which says nothing of them. It goes for good
/// at once, letting go of the tenant's volume, not after the reclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_seen_soft_deleted_is_force_deleted_though_a_listing_hides_it() {
    let env = soft_delete_env().await;
    let cloud = env.driver().await;
    let (server, volume) = a_server_holding_a_volume(&cloud).await;
    cloud.delete_server(&server).await.unwrap();
    let seen = cloud.get_server(&server).await.unwrap();
    assert!(
        seen.status == ServerStatus::Deleted && !seen.deleting,
        "{seen:?}"
    );
    cloud.list_pool_servers().await.unwrap();
    cloud.delete_server(&server).await.unwrap();
    server_gone(&cloud, &server).await;
    volume_reaches(&cloud, &volume, VolumeStatus::Available).await;
}

/// A pool server warmpool deleted and the cloud only soft-deleted is still
/// in the driver's listing, SOFT_DELETED (`Deleted`), though Nova's listing
/// hides it: the reconciler finishes its delete from there. Once gone for
/// good, it is listed no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_warmpool_deleted_and_the_cloud_soft_deleted_stays_listed() {
    let env = soft_delete_env().await;
    let cloud = env.driver().await;
    let (server, volume) = a_server_holding_a_volume(&cloud).await;
    cloud.delete_server(&server).await.unwrap();
    let listed = cloud.list_pool_servers().await.unwrap();
    let shown = listed
        .iter()
        .find(|s| s.id == server)
        .expect("the soft-deleted server is listed");
    assert!(
        shown.status == ServerStatus::Deleted && !shown.deleting,
        "{shown:?}"
    );
    // As the reconciler finishes it.
    cloud.delete_server(&server).await.unwrap();
    server_gone(&cloud, &server).await;
    volume_reaches(&cloud, &volume, VolumeStatus::Available).await;
    let listed = cloud.list_pool_servers().await.unwrap();
    assert!(listed.iter().all(|s| s.id != server), "{listed:?}");
}

/// A server seen SOFT_DELETED, then restored by hand: its delete is a
/// plain one again (a forceDelete is refused for a server not
/// SOFT_DELETED), not a failure until something reads the server again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_is_deleted_again_not_refused() {
    let env = soft_delete_env().await;
    let cloud = env.driver().await;
    let (server, _) = a_server_holding_a_volume(&cloud).await;
    cloud.delete_server(&server).await.unwrap();
    assert_eq!(
        cloud.get_server(&server).await.unwrap().status,
        ServerStatus::Deleted
    );
    assert!(env.sim.restore_server(&server));
    cloud.delete_server(&server).await.unwrap();
    let seen = cloud.get_server(&server).await.unwrap();
    assert!(
        seen.status == ServerStatus::Deleted && !seen.deleting,
        "{seen:?}"
    );
}

/// A release on a soft-delete cloud answers once the server is gone for
/// good, as on any cloud: a SOFT_DELETED server still holds the tenant's
/// port (and a volume whose detach was refused) until the reclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_a_soft_delete_cloud_deletes_the_server_for_good() {
    let env = soft_delete_env_with(with_mysqld()).await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    running.manager.release("o1", Some(false)).await.unwrap();
    assert!(
        env.sim.server(&server).is_none(),
        "{:?}",
        env.sim.server(&server)
    );
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    stop_daemon(running, stop).await;
}

/// A release on a cloud that soft-deletes, whose policy refuses warmpool's
/// forceDelete and lets a project member delete no port a server is bound
/// to (Neutron's default), answers once its server is SOFT_DELETED with
/// the tenant's volume detached (README): the tenant's port, which a
/// SOFT_DELETED server keeps bound until the reclaim, and which Nova lets
/// no one detach from it then, is let go of before the delete, and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_a_cloud_refusing_force_delete_deletes_the_tenants_port() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    released_left_soft_deleted(&env, &running.manager, &server).await;
    assert!(
        env.sim.ports().iter().all(|p| p.id != port),
        "{:?}",
        env.sim.ports()
    );
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    stop_daemon(running, stop).await;
}

/// A cloud that soft-deletes, whose policy refuses warmpool's forceDelete
/// and lets a project member delete no port a server is bound to;
/// otherwise configured as `config`.
async fn member_port_soft_delete_env(config: SimConfig) -> Env {
    let env = soft_delete_env_with(SimConfig {
        member_port_policy: true,
        ..config
    })
    .await;
    env.face.faults().refuse_force_delete(true);
    env
}

/// A release whose server an operator SOFT_DELETED by hand, on a cloud
/// that refuses warmpool's forceDelete and lets a member delete no bound
/// port: Nova detaches no port from a SOFT_DELETED server, so the tenant's
/// port stays bound until Nova's reclaim, hours or days away. The release
/// answers at once (well within the cleanup budget),
/// Released, the tenant's volume detached; the port is handed to the
/// reconciler, whose first pass after the reclaim deletes it: nothing of
/// the order is left.
#[tokio::test]
async fn a_release_of_a_server_soft_deleted_by_hand_leaves_its_bound_port_to_the_reconciler() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    // The operator's delete, through a client of its own.
    env.driver().await.delete_server(&server).await.unwrap();
    let asked = tokio::time::Instant::now();
    let released = running.manager.release("o1", Some(false)).await;
    let took = asked.elapsed();
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released),
        "after {took:?}"
    );
    assert!(took < pool_manager::CLEANUP_FLOOR, "took {took:?}");
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    let bound = env.sim.ports().into_iter().find(|p| p.id == port);
    assert_eq!(
        bound.and_then(|p| p.device_id),
        Some(server.clone()),
        "bound to the SOFT_DELETED server until the reclaim"
    );
    // A pass before the reclaim costs no wait either.
    let asked = tokio::time::Instant::now();
    running.manager.reconcile().await.unwrap();
    assert!(
        asked.elapsed() < pool_manager::CLEANUP_FLOOR,
        "took {:?}",
        asked.elapsed()
    );
    assert!(env.sim.ports().iter().any(|p| p.id == port));

    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    assert!(
        env.sim.ports().iter().all(|p| p.id != port),
        "{:?}",
        env.sim.ports()
    );
    assert_eq!(tenant_ports(&env).await, Vec::<String>::new());
    stop_daemon(running, stop).await;
}

/// A port a SOFT_DELETED server keeps bound until Nova's reclaim (a member
/// pool user, the forceDelete refused) is the reconciler's to delete, and
/// the release warned of that wait once. The passes until the reclaim
/// look at the port instead of sending it a delete Neutron refuses: on the
/// testbed each 2 s pass cost a WARN line (the session's "cloud call
/// answered an error", 403) and a `status="fatal"` sample for that port,
/// 90 in 3.7 minutes, 60 an hour at the default interval. A refusal once
/// the reclaim unbinds it is warned of once, and the delete said at INFO.
#[tokio::test]
async fn passes_waiting_for_a_port_a_soft_deleted_server_keeps_are_quiet() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    let neutron_calls = |status: &str| {
        let body = running.metrics.encode();
        let series = format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"network\",status=\"{status}\"}}"
        );
        body.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    // The operator's delete, through a client of its own.
    env.driver().await.delete_server(&server).await.unwrap();
    let logs = support::Logs::capture_at(tracing::Level::DEBUG);
    let released = running.manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    // The release's refused delete: warned of, once.
    assert_eq!(
        logs.count("WARN", "the released order's port stays bound"),
        1,
        "{}",
        logs.text()
    );
    let (seen, fatal) = (logs.text().len(), neutron_calls("fatal"));
    for _ in 0..3 {
        advance_clock(Duration::from_secs(60)).await;
        running.manager.reconcile().await.unwrap();
    }
    let passes = logs.text()[seen..].to_owned();
    let warned: Vec<&str> = passes
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("WARN") && l.contains(&port))
        .collect();
    assert_eq!(warned, Vec::<&str>::new(), "{passes}");
    assert_eq!(neutron_calls("fatal"), fatal, "a refusal counted per pass");
    assert!(env.sim.ports().iter().any(|p| p.id == port));

    // Unbound by the reclaim, and still refused (a policy refusing the
    // member any port delete): warned of once, the next pass at debug.
    env.face.faults().answer_next(
        Service::Network,
        "DELETE",
        &format!("/v2.0/ports/{port}"),
        2,
        403,
        r#"{"NeutronError": {"type": "PolicyNotAuthorized", "message": "rule:delete_port is disallowed by policy", "detail": ""}}"#,
    );
    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    running.manager.reconcile().await.unwrap();
    assert!(env.sim.ports().iter().any(|p| p.id == port));
    let refused = "Neutron refuses the delete of a port no server holds any more";
    assert_eq!(logs.count("WARN", refused), 1, "{}", logs.text());
    assert_eq!(
        logs.count("DEBUG", "is refused again; the next pass asks again"),
        1,
        "{}",
        logs.text()
    );
    running.manager.reconcile().await.unwrap();
    assert!(
        env.sim.ports().iter().all(|p| p.id != port),
        "{:?}",
        env.sim.ports()
    );
    let deleted: Vec<String> = logs
        .lines_at("INFO")
        .into_iter()
        .filter(|l| l.contains(&port) && l.contains("deleted"))
        .collect();
    assert_eq!(deleted.len(), 1, "{}", logs.text());
    stop_daemon(running, stop).await;
}

/// A port can keep its `device_id` after its server is gone for good
/// (Nova's reclaim failing to clear it, an admin's force-delete while
/// Neutron was down). The passes took it for still bound: no delete sent,
/// a debug line each, for ever. Nova answering 404 for the server it
/// names, the pass sends the delete as for an unbound port, and its
/// refusal is warned of once.
#[tokio::test]
async fn a_port_naming_a_server_gone_for_good_is_sent_its_delete() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    env.driver().await.delete_server(&server).await.unwrap();
    let released = running.manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    // The reclaim leaves the port's device_id behind for a day.
    env.sim
        .faults()
        .slow_port_unbind(Duration::from_secs(24 * 3600));
    let logs = support::Logs::capture_at(tracing::Level::DEBUG);
    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    let bound = env.sim.ports().into_iter().find(|p| p.id == port);
    assert_eq!(
        bound.as_ref().and_then(|p| p.device_id.clone()),
        Some(server.clone()),
        "the port names the reclaimed server: {bound:?}"
    );
    // Neutron refuses the member the delete of a port it shows bound.
    let refused = "Neutron refuses the delete of a port no server holds any more";
    assert_eq!(logs.count("WARN", refused), 1, "{}", logs.text());
    running.manager.reconcile().await.unwrap();
    assert_eq!(logs.count("WARN", refused), 1, "{}", logs.text());
    assert_eq!(
        logs.count("DEBUG", "is refused again; the next pass asks again"),
        1,
        "{}",
        logs.text()
    );
    stop_daemon(running, stop).await;
}

/// A port a SOFT_DELETED server keeps bound, Nova failing to answer for
/// the server it names (503, an outage): each pass read that server until
/// the cleanup deadline (two minutes and more, the reconcile lock held and
/// Releases waiting behind it), then sent the delete Neutron refuses a
/// bound port anyway. One read a pass now, no delete sent while it fails,
/// warned of once with the read's error.
#[tokio::test]
async fn a_port_whose_server_nova_cannot_answer_for_waits_one_read_a_pass() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    env.driver().await.delete_server(&server).await.unwrap();
    let released = running.manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    let calls = |service: &str, status: &str| {
        let body = running.metrics.encode();
        let series = format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        );
        body.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    env.face.faults().answer_next(
        Service::Compute,
        "GET",
        &format!("/v2.1/servers/{server}"),
        1000,
        503,
        r#"{"computeFault": {"code": 503, "message": "Service Unavailable"}}"#,
    );
    let logs = support::Logs::capture_at(tracing::Level::DEBUG);
    let failing = "cannot tell whether the SOFT_DELETED server holding port";
    for pass in 1..=2 {
        let (reads, refused) = (calls("compute", "transient"), calls("network", "fatal"));
        running.manager.reconcile().await.unwrap();
        assert_eq!(
            calls("compute", "transient") - reads,
            1.0,
            "pass {pass}: the server read once: {}",
            logs.text()
        );
        assert_eq!(
            calls("network", "fatal"),
            refused,
            "pass {pass}: a delete sent: {}",
            logs.text()
        );
        assert_eq!(logs.count("WARN", failing), 1, "{}", logs.text());
    }
    assert!(env.sim.ports().iter().any(|p| p.id == port));
    stop_daemon(running, stop).await;
}

/// A release whose server an operator is deleting by hand, Nova slow to
/// finish it (task_state `deleting` for minutes): Nova refuses the
/// release's detaches for that task state (409, as a real Nova answers;
/// cloudsim answered 404 as if the server were gone), and the delete under
/// way lets go of the volume and the port. No trouble to warn of (it
/// warned "detach refused; the server's delete lets go of it (a cloud
/// that only soft-deletes ...)"): the release answers Released, the
/// volume available, the port deleted.
#[tokio::test]
async fn a_release_of_a_server_being_deleted_by_hand_warns_of_nothing() {
    let mut config = with_mysqld();
    config.latencies.delete = Duration::from_secs(600);
    let env = env_with(config, HttpSettings::default()).await;
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    let port = allocated.port_id.clone().unwrap();
    // The operator's delete, through a client of its own.
    env.driver().await.delete_server(&server).await.unwrap();
    let logs = support::Logs::capture_at(tracing::Level::DEBUG);
    let released = running.manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    // The session warns of every answer but a 404, these 409s too; what
    // the release makes of them is no warning.
    assert_eq!(logs.count("WARN", "detach refused"), 0, "{}", logs.text());
    assert_eq!(
        logs.count("DEBUG", "the server is being deleted already"),
        2,
        "the volume's and the port's detach refused 409"
    );
    assert!(env.sim.server(&server).is_none());
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    assert!(env.sim.ports().iter().all(|p| p.id != port));
    stop_daemon(running, stop).await;
}

/// A failed try whose server an operator deleted after both attaches, on
/// a cloud that soft-deletes, refuses warmpool's forceDelete and lets a
/// member delete no bound port: the verification finds it SOFT_DELETED,
/// from which Nova detaches the volume but not the port, bound to it until
/// the reclaim. The purchase goes on to the next instance at once (within
/// the cleanup budget), and the port is handed to the reconciler, whose
/// first pass after the reclaim deletes it.
#[tokio::test]
async fn a_failed_try_leaves_the_port_its_soft_deleted_server_keeps_to_the_reconciler() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let key = PoolKey::new("db.small", "az1");
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    wait_ready(&running.manager, &key, 2).await;
    let request = order(&env, "o1").await;
    let asked = tokio::time::Instant::now();
    let (buying, port, server) =
        first_try_server_deleted_by_hand(&env, &running.manager, request).await;
    let allocated = buying.await.unwrap().unwrap();
    let took = asked.elapsed();
    assert!(took < pool_manager::CLEANUP_FLOOR, "took {took:?}");
    assert_ne!(allocated.server_id.as_ref(), Some(&server));
    let bound = env.sim.ports().into_iter().find(|p| p.id == port);
    assert_eq!(
        bound.and_then(|p| p.device_id),
        Some(server.clone()),
        "bound to the SOFT_DELETED server until the reclaim"
    );

    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    assert_eq!(
        tenant_ports(&env).await,
        vec![allocated.port_id.clone().unwrap()],
        "the purchase's own port alone"
    );
    stop_daemon(running, stop).await;
}

/// A purchase whose only try fails on a server an operator deleted after
/// both attaches, on a cloud that soft-deletes, refuses warmpool's
/// forceDelete and lets a member delete no bound port, and that finds no
/// other instance (one Ready, the pool paused, fail-fast): the purchase is
/// rolled back. The try's port, bound to the SOFT_DELETED server until the
/// reclaim, carries the attempt's name, which the rollback's look for twins
/// lists: it must take that port for no twin (whose delete would wait for
/// the reclaim), or the order would stay Allocating, and every reconcile
/// pass fail its rollback again, for days. The order is gone at once, the
/// port named in a twin watch, and the first pass after the reclaim
/// deletes it.
#[tokio::test]
async fn a_rollback_after_a_failed_try_leaves_its_bound_port_to_the_reconciler() {
    use pool_manager::store::{SledStore, Store};
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let key = PoolKey::new("db.small", "az1");
    let one_ready = r#"
[[pools]]
flavor = "db.small"
availability_zone = "az1"
min_ready = 1
max_ready = 1
image = "mysql-8.0"
"#;
    let config = || reconciled_by_hand_with(&env, one_ready);
    let (running, stop) = start_daemon(config()).await.unwrap();
    wait_ready(&running.manager, &key, 1).await;
    running
        .manager
        .update_pool(&key, |s| s.paused = true)
        .await
        .unwrap();
    let mut request = order(&env, "o1").await;
    request.empty_pool = pool_manager::model::EmptyPoolPolicy::FailFast;
    let asked = tokio::time::Instant::now();
    let (buying, port, server) =
        first_try_server_deleted_by_hand(&env, &running.manager, request).await;
    let answered = buying.await.unwrap();
    let took = asked.elapsed();
    assert!(answered.is_err(), "{answered:?}");
    assert!(took < pool_manager::CLEANUP_FLOOR, "took {took:?}");
    let stored = running.manager.get_allocation("o1").await;
    assert!(
        matches!(
            stored,
            Err(pool_manager::ManagerError::AllocationNotFound(_))
        ),
        "rolled back: {stored:?}"
    );
    let bound = env.sim.ports().into_iter().find(|p| p.id == port);
    assert_eq!(
        bound.and_then(|p| p.device_id),
        Some(server.clone()),
        "bound to the SOFT_DELETED server until the reclaim"
    );
    stop_daemon(running, stop).await;
    let data = config().data_dir;
    let store = tokio::task::spawn_blocking(move || SledStore::open(&data))
        .await
        .unwrap()
        .unwrap();
    let watches = store.list_twin_watches().await.unwrap();
    assert!(
        watches.iter().any(|w| w.bound_ports.contains(&port)),
        "{watches:?}"
    );
    drop(store);

    let (running, stop) = start_daemon(config()).await.unwrap();
    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    assert_eq!(tenant_ports(&env).await, Vec::<String>::new());
    stop_daemon(running, stop).await;
}

/// As [`a_failed_try_leaves_the_port_its_soft_deleted_server_keeps_to_the_reconciler`],
/// with the first port create's answer lost (a 503; the create retried):
/// the order's name is looked at for twins after the commit and at the
/// release, and both lists the failed try's port, bound to the SOFT_DELETED
/// server until the reclaim. Neither takes it for a twin: the release
/// answers Released at once, and the first pass after the reclaim leaves
/// no port of the order.
#[tokio::test]
async fn a_release_of_a_create_in_doubt_leaves_a_failed_tries_bound_port_to_the_reconciler() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let key = PoolKey::new("db.small", "az1");
    let (running, stop) = start_daemon(reconciled_by_hand(&env)).await.unwrap();
    wait_ready(&running.manager, &key, 2).await;
    env.face.faults().answer_next(
        Service::Network,
        "POST",
        "/v2.0/ports",
        1,
        503,
        r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#,
    );
    let request = order(&env, "o1").await;
    let (buying, port, server) =
        first_try_server_deleted_by_hand(&env, &running.manager, request).await;
    let allocated = buying.await.unwrap().unwrap();
    assert!(allocated.creates_in_doubt, "{allocated:?}");
    assert_ne!(allocated.server_id.as_ref(), Some(&server));

    let asked = tokio::time::Instant::now();
    let released = running.manager.release("o1", Some(false)).await;
    let took = asked.elapsed();
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released),
        "after {took:?}"
    );
    assert!(took < pool_manager::CLEANUP_FLOOR, "took {took:?}");
    assert!(env.sim.ports().iter().any(|p| p.id == port));

    reclaimed_then_reconciled(&env, &running.manager, &server).await;
    assert_eq!(tenant_ports(&env).await, Vec::<String>::new());
    stop_daemon(running, stop).await;
}

/// A failed try's port, bound to its SOFT_DELETED server until the reclaim
/// (the cloud refuses warmpool's forceDelete and lets a member delete no
/// bound port), carries the attempt's name, as every port of the attempt
/// does. The next try's port create, left uncertain by a plain 429, looks
/// the name up before it is sent again: the held port is no port that
/// create made (it is bound, and a new port is not), so it is neither
/// adopted (the attach to the new server would be refused, the port in
/// use) nor deleted as a twin (Neutron refuses, and the create would fail
/// with it); the twin watch deletes it after the reclaim. The create makes
/// a fresh port, and a later uncertain create adopts that one.
#[tokio::test]
async fn an_uncertain_port_create_leaves_a_failed_tries_held_port_alone() {
    let env = member_port_soft_delete_env(sim_config()).await;
    let cloud = env.driver().await;
    let network = cloud.network("tenant-net").await.unwrap();
    cloud.network("mgmt-net").await.unwrap();
    let name = "warmpool-o1-18f0a1b2c3d4e5f6";
    let port = port_spec(name, &network.id);

    // The failed try: its port bound to its server, which is deleted and
    // stays SOFT_DELETED (the forceDelete refused).
    let server = cloud
        .create_server(&spec("try1", "db.small", "az1"))
        .await
        .unwrap();
    settled(&cloud, &server.id).await;
    let held = cloud.create_port(&port).await.unwrap();
    cloud.attach_port(&server.id, &held.id).await.unwrap();
    for _ in 0..200 {
        if cloud.get_port(&held.id).await.unwrap().device_id.as_deref() == Some(&server.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cloud.delete_server(&server.id).await.unwrap();
    let bound_to = |id: &str| {
        env.sim
            .ports()
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.device_id)
    };
    assert_eq!(bound_to(&held.id), Some(Some(server.id.clone())));
    assert_eq!(
        env.sim.server(&server.id).map(|s| s.server.status),
        Some(ServerStatus::Deleted),
        "left SOFT_DELETED to the reclaim"
    );

    let throttle_next_create = || {
        env.face.faults().answer_next(
            Service::Network,
            "POST",
            "/v2.0/ports",
            1,
            429,
            r#"{"NeutronError": {"type": "OverLimit", "message": "Too many requests.", "detail": ""}}"#,
        )
    };
    // The next try's create: throttled, then sent again.
    throttle_next_create();
    let e = cloud.create_port(&port).await.unwrap_err();
    assert!(matches!(e, CloudError::Throttled { .. }), "{e:?}");
    let fresh = cloud.create_port(&port).await;
    let fresh = fresh.map_err(|e| e.to_string());
    assert!(
        fresh
            .as_ref()
            .is_ok_and(|p| p.id != held.id && p.device_id.is_none()),
        "a fresh unbound port, not the held {}: {fresh:?}",
        held.id
    );
    let fresh = fresh.unwrap();
    assert_eq!(bound_to(&held.id), Some(Some(server.id.clone())));

    // Left uncertain again, with the fresh port and the held one both
    // under the name: the fresh one is adopted, the held one left alone.
    throttle_next_create();
    cloud.create_port(&port).await.unwrap_err();
    let adopted = cloud.create_port(&port).await.map_err(|e| e.to_string());
    assert_eq!(adopted.map(|p| p.id), Ok(fresh.id.clone()));
    assert_eq!(bound_to(&held.id), Some(Some(server.id.clone())));
    let mut named: Vec<String> = env
        .sim
        .ports()
        .into_iter()
        .filter(|p| p.name == name)
        .map(|p| p.id)
        .collect();
    named.sort();
    let mut expected = vec![held.id.clone(), fresh.id.clone()];
    expected.sort();
    assert_eq!(named, expected);
}

/// A purchase under way, and the port and server of its try.
type HeldPurchase = (
    tokio::task::JoinHandle<pool_manager::ManagerResult<pool_manager::model::Allocation>>,
    String,
    String,
);

/// Starts the purchase `request` on `manager` and returns once its first
/// try has both attaches done, its verification held on reading the
/// server (`get_server`, until the caller lets it go).
async fn held_at_its_verification(
    env: &Env,
    manager: &pool_manager::PoolManager,
    request: pool_manager::AllocateRequest,
) -> HeldPurchase {
    let tenant_net = env.driver().await.network("tenant-net").await.unwrap().id;
    env.sim.faults().hold_calls("get_server");
    let manager = manager.clone();
    let buying = tokio::spawn(async move { manager.allocate(request).await });
    let attached = || {
        let port = env
            .sim
            .ports()
            .into_iter()
            .find(|p| p.network_id == tenant_net && p.device_id.is_some())?;
        let server = port.device_id.clone()?;
        env.sim
            .volumes()
            .iter()
            .any(|v| v.status == VolumeStatus::InUse && v.attached_to == [server.clone()])
            .then_some((port.id, server))
    };
    wait_until("both attaches of the first try", || attached().is_some()).await;
    let (port, server) = attached().unwrap();
    (buying, port, server)
}

/// As [`held_at_its_verification`], then deletes that try's server by
/// hand, as an operator would, through a client of its own, and lets the
/// verification go on.
async fn first_try_server_deleted_by_hand(
    env: &Env,
    manager: &pool_manager::PoolManager,
    request: pool_manager::AllocateRequest,
) -> HeldPurchase {
    let (buying, port, server) = held_at_its_verification(env, manager, request).await;
    env.driver().await.delete_server(&server).await.unwrap();
    env.sim.faults().release_calls("get_server");
    (buying, port, server)
}

/// The daemon's config for `env`'s cloud, with no reconcile pass but those
/// a test runs.
fn reconciled_by_hand(env: &Env) -> Config {
    reconciled_by_hand_with(env, SMALL_POOL)
}

/// [`reconciled_by_hand`] with `pools` (TOML `[[pools]]` tables).
fn reconciled_by_hand_with(env: &Env, pools: &str) -> Config {
    Config::parse(&env.config_text("", pools).replace(
        r#"reconcile_interval = "1m""#,
        r#"reconcile_interval = "24h""#,
    ))
    .unwrap()
}

/// Moves the clock past Nova's reclaim of SOFT_DELETED `server`
/// (an hour, [`soft_delete_env`]), then runs a reconcile pass.
async fn reclaimed_then_reconciled(env: &Env, manager: &pool_manager::PoolManager, server: &str) {
    advance_clock(Duration::from_secs(3601)).await;
    assert!(env.sim.server(server).is_none(), "reclaimed");
    manager.reconcile().await.unwrap();
}

/// The ids of the ports on the tenant network.
async fn tenant_ports(env: &Env) -> Vec<String> {
    let tenant_net = env.driver().await.network("tenant-net").await.unwrap().id;
    env.sim
        .ports()
        .into_iter()
        .filter(|p| p.network_id == tenant_net)
        .map(|p| p.id)
        .collect()
}

/// A purchase interrupted after both attaches (the daemon stopped while its
/// verification was under way) is rolled back by the next start, on a cloud
/// that soft-deletes, refuses warmpool's forceDelete and lets a member
/// delete no bound port: the rollback lets go of the tenant's port before
/// it deletes the server, which would keep it bound, SOFT_DELETED, until
/// the reclaim, and the order (ALLOCATING, its Release UNAVAILABLE)
/// with it. The port is deleted and the order is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_on_a_cloud_refusing_force_delete_deletes_the_tenants_port() {
    let env = member_port_soft_delete_env(with_mysqld()).await;
    let key = PoolKey::new("db.small", "az1");
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    wait_ready(&running.manager, &key, 2).await;
    let request = order(&env, "o1").await;
    let (buying, port, server) = held_at_its_verification(&env, &running.manager, request).await;
    stop_daemon(running, stop).await;
    assert!(buying.await.unwrap().is_err(), "the purchase was cut off");
    env.sim.faults().release_calls("get_server");

    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let manager = running.manager.clone();
    wait_until_async("the order rolled back", || {
        let manager = manager.clone();
        async move {
            matches!(
                manager.get_allocation("o1").await,
                Err(pool_manager::ManagerError::AllocationNotFound(_))
            )
        }
    })
    .await;
    assert!(
        env.sim.ports().iter().all(|p| p.id != port),
        "{:?}",
        env.sim.ports()
    );
    assert_eq!(
        env.sim.server(&server).map(|s| s.server.status),
        Some(ServerStatus::Deleted),
        "left SOFT_DELETED to the reclaim"
    );
    drop(manager);
    stop_daemon(running, stop).await;
}

/// The daemon on `env`'s cloud with a reconcile pass every 300 ms.
async fn start_reconciling_often(
    env: &Env,
) -> (warmpool_server::Running, tokio::sync::oneshot::Sender<()>) {
    let config = Config::parse(&env.config_text("", SMALL_POOL).replace(
        r#"reconcile_interval = "1m""#,
        r#"reconcile_interval = "300ms""#,
    ))
    .unwrap();
    start_daemon(config).await.unwrap()
}

/// Order `request_id` from db.small in az1, a new 1 GiB volume kept on
/// release, on the tenant network.
async fn order(env: &Env, request_id: &str) -> pool_manager::AllocateRequest {
    use pool_manager::model::{
        AllocationParams, EmptyPoolPolicy, NetworkRequest, VolumeRequest, VolumeSource,
    };
    let tenant_net = env.driver().await.network("tenant-net").await.unwrap().id;
    pool_manager::AllocateRequest {
        params: AllocationParams {
            request_id: request_id.into(),
            tenant_project_id: "tenant".into(),
            pool: PoolKey::new("db.small", "az1"),
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 1,
                    volume_type: None,
                },
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: tenant_net,
                subnet_id: None,
                fixed_ip: None,
            },
            labels: BTreeMap::new(),
        },
        empty_pool: EmptyPoolPolicy::Wait,
        timeout: Some(Duration::from_secs(60)),
    }
}

/// How many forceDeletes the cloud was sent.
fn force_deletes(env: &Env) -> u64 {
    env.sim
        .call_counts()
        .get("force_delete_server")
        .copied()
        .unwrap_or(0)
}

/// A Ready pool server someone else deleted (an operator, by hand) on a
/// cloud that only soft-deletes is SOFT_DELETED, which Nova's listing
/// hides: the reconciler drops its instance and deletes the server for
/// good (forceDelete), instead of leaving it, with its ports,
/// to the reclaim an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_server_soft_deleted_by_hand_is_deleted_for_good() {
    use pool_manager::model::InstanceState;
    let env = soft_delete_env_with(with_mysqld()).await;
    let (running, stop) = start_reconciling_often(&env).await;
    let key = PoolKey::new("db.small", "az1");
    wait_ready(&running.manager, &key, 2).await;
    let instances = running.manager.list_instances(Some(&key)).await.unwrap();
    let server = instances
        .iter()
        .find(|i| i.state == InstanceState::Ready)
        .and_then(|i| i.server_id.clone())
        .unwrap();
    // The operator's delete, through a client of its own.
    env.driver().await.delete_server(&server).await.unwrap();
    // SOFT_DELETED (a plain delete is gone within 20 ms, no forceDelete
    // sent), unless a pass of the reconciler, every 300 ms, has already
    // force-deleted it: on a busy machine one came before this look.
    match env.sim.server(&server).map(|s| s.server.status) {
        Some(ServerStatus::Deleted) => {}
        None if force_deletes(&env) > 0 => {}
        other => panic!("not left SOFT_DELETED by the operator's delete: {other:?}"),
    }
    wait_until("the soft-deleted server to go for good", || {
        env.sim.server(&server).is_none()
    })
    .await;
    // By warmpool's forceDelete, not by Nova's reclaim (an hour: 36 s of
    // real time, within the wait).
    assert!(force_deletes(&env) > 0, "gone by the reclaim");
    stop_daemon(running, stop).await;
}

/// On a soft-delete cloud whose policy refuses the project forceDelete
/// (`os_compute_api:os-deferred-delete:force` admin-only), a release
/// completes once its server is SOFT_DELETED with the tenant's volume
/// detached: the server keeps its ports until Nova's reclaim, which
/// nothing warmpool may do hastens. The refused forceDelete is not sent
/// again for the next release, nor by the reconciler's passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_completes_where_the_policy_refuses_force_delete() {
    let env = soft_delete_env_with(with_mysqld()).await;
    env.face.faults().refuse_force_delete(true);
    let (running, stop) = start_reconciling_often(&env).await;
    let mut servers = Vec::new();
    for request_id in ["o1", "o2"] {
        let allocated = running
            .manager
            .allocate(order(&env, request_id).await)
            .await
            .unwrap();
        let server = allocated.server_id.clone().unwrap();
        let volume = allocated.volume_id.clone().unwrap();
        let released = running
            .manager
            .release(request_id, Some(false))
            .await
            .unwrap();
        assert_eq!(
            released.state,
            pool_manager::model::AllocationState::Released
        );
        // Left to the reclaim, the tenant's volume detached from it.
        assert_eq!(
            env.sim.server(&server).map(|s| s.server.status),
            Some(ServerStatus::Deleted)
        );
        let left = env.sim.volumes();
        let left = left.iter().find(|v| v.id == volume).unwrap();
        assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
        servers.push(server);
    }
    assert_eq!(force_deletes(&env), 1);
    // Passes of the reconciler send it no more either. A pass lists the
    // servers once, then acts on them, and passes run one after another:
    // at the second listing from here, a pass acted on all it listed.
    let listings = || {
        env.sim
            .call_counts()
            .get("list_servers_detail")
            .copied()
            .unwrap_or(0)
    };
    let before = listings();
    wait_until("a whole reconcile pass", || listings() >= before + 2).await;
    assert_eq!(force_deletes(&env), 1);
    for server in &servers {
        assert!(env.sim.server(server).is_some());
    }
    stop_daemon(running, stop).await;
}

/// A release whose server is SOFT_DELETED with the tenant's volume still
/// attached (deleted by hand before the release could detach it), on a
/// cloud whose policy refuses the project forceDelete: Nova detaches a
/// volume from a SOFT_DELETED server (not a port), so the release lets go
/// of it and completes, the server left to Nova's reclaim, the volume
/// available to attach elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_detaches_the_volume_a_soft_deleted_server_keeps() {
    let env = soft_delete_env_with(with_mysqld()).await;
    env.face.faults().refuse_force_delete(true);
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    env.driver().await.delete_server(&server).await.unwrap();
    released_left_soft_deleted(&env, &running.manager, &server).await;
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    assert_eq!(force_deletes(&env), 1);
    stop_daemon(running, stop).await;
}

/// Nova lists a volume on its server until the compute host has detached
/// it, which can take seconds: a release on a cloud that refuses the
/// forceDelete waits for the detach of the tenant's volume from its
/// SOFT_DELETED server to finish before it judges, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_waits_for_the_volume_to_detach_from_its_soft_deleted_server() {
    let mut config = with_mysqld();
    // 2 s of real time: long after the server is seen SOFT_DELETED.
    config.latencies.volume_detach = Duration::from_secs(200);
    let env = soft_delete_env_with(config).await;
    env.face.faults().refuse_force_delete(true);
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    released_left_soft_deleted(&env, &running.manager, &server).await;
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    stop_daemon(running, stop).await;
}

/// A release whose SOFT_DELETED server holds the tenant's volume, where
/// Nova refuses the forceDelete and the detach too (the server busy with a
/// task): the volume stays attached, so the release does not claim to be
/// done. It fails FAILED_PRECONDITION, naming the server, the volume and
/// the refusal, and stays under way; asked again once Nova takes the
/// detach, it completes, without sending the refused forceDelete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_volume_nova_will_not_detach_from_a_soft_deleted_server_fails_precondition()
{
    let env = soft_delete_env_with(with_mysqld()).await;
    env.face.faults().refuse_force_delete(true);
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    let volume = allocated.volume_id.clone().unwrap();
    assert!(env
        .sim
        .set_server_task_state(&server, Some("image_snapshot")));
    let e = running
        .manager
        .release("o1", Some(false))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, pool_manager::ManagerError::FailedPrecondition(_))
            && text.contains(&server)
            && text.contains(&volume)
            && text.contains("image_snapshot")
            && text.contains("os-deferred-delete:force"),
        "{e:?}"
    );
    assert_eq!(
        running.manager.get_allocation("o1").await.unwrap().state,
        pool_manager::model::AllocationState::Releasing
    );
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::InUse, "{left:?}");

    assert!(env.sim.set_server_task_state(&server, None));
    let released = running.manager.release("o1", Some(false)).await;
    assert_eq!(
        released.map(|a| a.state).map_err(|e| e.to_string()),
        Ok(pool_manager::model::AllocationState::Released)
    );
    let left = env.sim.volumes();
    let left = left.iter().find(|v| v.id == volume).unwrap();
    assert_eq!(left.status, VolumeStatus::Available, "{left:?}");
    assert_eq!(force_deletes(&env), 1);
    stop_daemon(running, stop).await;
}

/// A forceDelete that fails otherwise than by Nova's policy (a 401 after
/// the re-login, a 400) is no refusal: the server is not left to the
/// reclaim, and the next delete sends the forceDelete again, which ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_delete_failing_otherwise_than_by_policy_is_sent_again() {
    let env = soft_delete_env().await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    settled(&cloud, &server.id).await;
    cloud.delete_server(&server.id).await.unwrap();
    assert_eq!(
        cloud.get_server(&server.id).await.unwrap().status,
        ServerStatus::Deleted
    );
    // The 401 twice: the driver logs in again and sends it once more.
    for (times, status) in [(2, 401), (1, 400)] {
        env.face.faults().fail_force_delete_next(times, status);
        let e = cloud.delete_server(&server.id).await.unwrap_err();
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains(&format!("HTTP {status}"))),
            "{status}: {e:?}"
        );
        assert_eq!(
            env.sim.server(&server.id).map(|s| s.server.status),
            Some(ServerStatus::Deleted)
        );
    }
    cloud.delete_server(&server.id).await.unwrap();
    server_gone(&cloud, &server.id).await;
    assert_eq!(force_deletes(&env), 4);
}

/// A release whose forceDelete fails for a passing reason (the service
/// refusing a fresh token) is not done while its server is SOFT_DELETED,
/// holding the tenant's port: it fails and stays under way, and
/// asked again, it force-deletes the server and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_force_delete_fails_once_completes_only_when_it_is_sent_again() {
    let env = soft_delete_env_with(with_mysqld()).await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let allocated = running
        .manager
        .allocate(order(&env, "o1").await)
        .await
        .unwrap();
    let server = allocated.server_id.clone().unwrap();
    // A 401, and another after the re-login.
    env.face.faults().fail_force_delete_next(2, 401);
    let e = running
        .manager
        .release("o1", Some(false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 401"), "{e:?}");
    assert_eq!(
        running.manager.get_allocation("o1").await.unwrap().state,
        pool_manager::model::AllocationState::Releasing
    );
    assert_eq!(
        env.sim.server(&server).map(|s| s.server.status),
        Some(ServerStatus::Deleted)
    );
    let released = running.manager.release("o1", Some(false)).await.unwrap();
    assert_eq!(
        released.state,
        pool_manager::model::AllocationState::Released
    );
    assert!(
        env.sim.server(&server).is_none(),
        "{:?}",
        env.sim.server(&server)
    );
    stop_daemon(running, stop).await;
}

/// The start-up cloud check checks the pools the daemon will serve: a pool
/// the store has is checked with its stored settings (an image changed
/// through the API), not the config's, which it no longer uses; a stored
/// pool failing it is marked, not a reason to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_a_stored_pool_by_its_stored_image() {
    let env = env().await;
    let key = PoolKey::new("db.small", "az1");
    let start = |image: &str| {
        let config = env.config("", &SMALL_POOL.replace("mysql-8.0", image));
        async move {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = warmpool_server::start(config, async {
                let _ = stopped.await;
            })
            .await?;
            Ok::<_, anyhow::Error>((running, stop))
        }
    };
    let (running, stop) = start("mysql-8.0").await.unwrap();
    stop_daemon(running, stop).await;

    // The config now names an image the cloud lacks; the stored pool's is fine.
    let (running, stop) = start("mysql-9.9")
        .await
        .expect("the stored image is checked");
    assert_eq!(
        running
            .manager
            .get_pool(&key)
            .await
            .unwrap()
            .record
            .spec
            .image,
        "mysql-8.0"
    );
    stop_daemon(running, stop).await;
    // The stored pool's image becomes one the cloud lacks, as when the image
    // a pool was changed to is deleted from Glance later (through the API
    // the change itself is refused: the image is checked).
    {
        use pool_manager::store::{SledStore, Store};
        let store = SledStore::open(&env.dir.path().join("data")).unwrap();
        let mut pool = store.get_pool(&key).await.unwrap().unwrap();
        pool.spec.image = "mysql-9.9".into();
        store.put_pool(&pool).await.unwrap();
        store.flush().await.unwrap();
    }
    // It is checked by that image: warmpoold starts, and says the pool's
    // boots cannot work.
    let (running, stop) = start("mysql-8.0")
        .await
        .expect("a stored pool's stale image does not stop start-up");
    let status = running.manager.get_pool(&key).await.unwrap();
    assert!(status.health.degraded, "{:?}", status.health);
    let error = status.record.last_error.unwrap_or_default();
    assert!(error.contains("no image named 'mysql-9.9'"), "{error}");
    stop_daemon(running, stop).await;
}

/// Stops a daemon `start` returned and lets go of its store.
async fn stop_daemon(running: warmpool_server::Running, stop: tokio::sync::oneshot::Sender<()>) {
    let _ = stop.send(());
    let warmpool_server::Running {
        served, manager, ..
    } = running;
    served.await.unwrap().unwrap();
    drop(manager);
}

/// A 404 whose body is not an OpenStack error says nothing about the port
/// or volume: a proxy's or load balancer's page (a backend missing
/// mid-upgrade), or an API gateway's own JSON for a route it cannot serve
/// (Kong, APISIX). Deleting fails, to be tried again, instead of "already
/// gone", which would let warmpool forget what still exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_not_from_the_service_on_delete_is_not_a_deleted_port_or_volume() {
    let env = env().await;
    let cloud = env.driver().await;
    let network = cloud.network("tenant-net").await.unwrap();
    let port = cloud
        .create_port(&port_spec("warmpool-o1", &network.id))
        .await
        .unwrap();
    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();

    type Fault = fn(&cloudsim::http::HttpFaults, Service);
    let faults: [(&str, Fault); 2] = [
        ("a proxy's page", |f, service| f.not_found_next(service, 1)),
        ("a gateway's JSON", |f, service| {
            f.gateway_not_found_next(service, 1)
        }),
    ];
    for (what, fault) in faults {
        fault(&env.face.faults(), Service::Network);
        let err = cloud.delete_port(&port.id).await.unwrap_err();
        assert!(matches!(err, CloudError::Transient(_)), "{what}: {err:?}");
        fault(&env.face.faults(), Service::Volume);
        let err = cloud.get_volume(&volume.id).await.unwrap_err();
        assert!(matches!(err, CloudError::Transient(_)), "{what}: {err:?}");
        fault(&env.face.faults(), Service::Volume);
        let err = cloud.delete_volume(&volume.id).await.unwrap_err();
        assert!(matches!(err, CloudError::Transient(_)), "{what}: {err:?}");
        cloud
            .get_port(&port.id)
            .await
            .expect("the port still exists");
        cloud
            .get_volume(&volume.id)
            .await
            .expect("the volume still exists");
    }

    // The services' own 404s still mean gone.
    cloud.delete_port(&port.id).await.unwrap();
    cloud.delete_port(&port.id).await.unwrap();
    assert!(matches!(
        cloud.get_port(&port.id).await,
        Err(CloudError::NotFound(_))
    ));
}

/// A 404 carrying the services' own fault with webob's generic "The
/// resource could not be found." is the answer to a URL that routes
/// nowhere, not to an object that is gone: Neutron's for any path it lacks
/// (a gateway or endpoint override sending a call to the wrong service),
/// Nova's and Cinder's for a method the microversion asked lacks (bodies
/// measured on the testbed; cloudsim's Neutron face answers its unrouted
/// paths with the same body, see cloudsim/tests/http_face.rs). Deletes
/// fail with a message naming the endpoint to check, instead of counting
/// the server, volume or port deleted while it still exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_miss_on_delete_is_not_a_deleted_server_volume_or_port() {
    const NEUTRON_NO_ROUTE: &str = r#"{"NeutronError": {"type": "HTTPNotFound", "message": "The resource could not be found.", "detail": ""}}"#;
    const NO_SUCH_METHOD: &str =
        r#"{"itemNotFound": {"code": 404, "message": "The resource could not be found."}}"#;
    let (env, cloud, server) = env_with_a_server().await;
    let server = settled(&cloud, &server.id).await;
    let network = cloud.network("tenant-net").await.unwrap();
    let port = cloud
        .create_port(&port_spec("warmpool-o1", &network.id))
        .await
        .unwrap();
    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();
    let faults = env.face.faults();
    let misses = [
        (
            Service::Network,
            "DELETE",
            format!("/v2.0/ports/{}", port.id),
            NEUTRON_NO_ROUTE,
        ),
        (
            Service::Volume,
            "DELETE",
            format!("/v3/volumes/{}", volume.id),
            NO_SUCH_METHOD,
        ),
        (
            Service::Compute,
            "DELETE",
            format!("/v2.1/servers/{}", server.id),
            NEUTRON_NO_ROUTE,
        ),
        (
            Service::Compute,
            "DELETE",
            format!("/v2.1/servers/{}", server.id),
            NO_SUCH_METHOD,
        ),
        (
            Service::Compute,
            "GET",
            format!("/v2.1/servers/{}", server.id),
            NEUTRON_NO_ROUTE,
        ),
    ];
    for (service, method, path, body) in misses {
        faults.answer_next(service, method, &path, 1, 404, body);
        let answer = match (service, method) {
            (Service::Network, _) => cloud.delete_port(&port.id).await,
            (Service::Volume, _) => cloud.delete_volume(&volume.id).await,
            (_, "DELETE") => cloud.delete_server(&server.id).await,
            _ => cloud.get_server(&server.id).await.map(drop),
        };
        let err = answer.expect_err(&format!("{method} {path} answered {body}"));
        assert!(
            matches!(&err, CloudError::Fatal(m) if m.contains("endpoint")),
            "{method} {path}: {err:?}"
        );
    }
    cloud
        .get_port(&port.id)
        .await
        .expect("the port still exists");
    cloud
        .get_volume(&volume.id)
        .await
        .expect("the volume still exists");
    let still = cloud
        .get_server(&server.id)
        .await
        .expect("the server still exists");
    assert!(!still.deleting, "{still:?}");

    // The services' own answers for what they lack still mean gone.
    cloud.delete_port(&port.id).await.unwrap();
    cloud.delete_port(&port.id).await.unwrap();
    assert!(matches!(
        cloud.get_port(&port.id).await,
        Err(CloudError::NotFound(_))
    ));
}

/// A cloud that ignores the listing marker (every page the first) is caught
/// at the pages that come round again (the listing's few fresh starts
/// included), not after a thousand requests piling up copies of the same
/// page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_ignoring_the_marker_fails_the_listing_at_once() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            // The three flavors fit on one page, five servers do not.
            page_limit: Some(4),
            ignore_marker: true,
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    for name in ["a", "b", "c", "d", "e"] {
        cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
    }
    let err = cloud.list_pool_servers().await.unwrap_err();
    assert!(matches!(err, CloudError::Fatal(_)), "{err:?}");
    assert!(err.to_string().contains("page came round again"), "{err}");
}

/// A password changed in Keystone (warmpool's clouds.yaml not yet) makes
/// every call fail; they must not each try the old password again, or a
/// Keystone with lockout_failure_attempts locks the service user out, and
/// keeps it locked after the operator mends clouds.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_is_not_tried_again_by_every_call() {
    let (env, cloud, server) = env_with_a_server().await;
    env.face.faults().change_password("pool", "rotated");
    env.face.faults().revoke_all_tokens();
    let before = env.face.faults().password_logins();
    let calls = (0..20).map(|_| cloud.get_server(&server.id));
    for answer in futures::future::join_all(calls).await {
        let err = answer.unwrap_err();
        assert!(matches!(err, CloudError::Fatal(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cloud error: auth: Keystone refused the login"),
            "{err}"
        );
    }
    let tried = env.face.faults().password_logins() - before;
    assert!(tried <= 2, "{tried} password logins for 20 calls");
}

/// osauth renews a token with ten minutes or less left inside any call,
/// posting the password: once Keystone refused it, that renewal must wait
/// out the re-login pause as a re-login does, or every call sends the
/// refused password (a 120 s token is renewed at every call) and a
/// Keystone with lockout_failure_attempts locks the account. Calls during
/// the pause fail at once with the pause's message.
#[tokio::test]
async fn a_token_renewal_does_not_send_a_refused_password_during_the_pause() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().change_password("pool", "rotated");
    let before = env.face.faults().password_logins();
    for _ in 0..20 {
        let err = cloud.get_server(&server.id).await.unwrap_err();
        assert!(matches!(err, CloudError::Fatal(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cloud error: auth: Keystone refused the login"),
            "{err}"
        );
    }
    let tried = env.face.faults().password_logins() - before;
    assert!(tried <= 2, "{tried} password logins for 20 calls");
    // Past the pause the renewal posts the password once more, and its
    // refusal doubles the pause.
    advance_clock(Duration::from_secs(31)).await;
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(err.to_string().contains("refused 2 times"), "{err}");
    let again = env.face.faults().password_logins() - before - tried;
    assert_eq!(again, 1, "password logins after the pause");
}

/// Calls that arrive while a token renewal is out queue behind it: once
/// Keystone refused it, they hear its refusal, and post no password
/// themselves. Each posting the refused password in turn counted as many
/// refusals towards lockout_failure_attempts, and the pause jumped to its
/// longest ("refused 10 times in a row ... 10m").
#[tokio::test]
async fn concurrent_calls_during_a_refused_renewal_post_the_password_once() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().change_password("pool", "rotated");
    let before = env.face.faults().password_logins();
    let calls = (0..10).map(|_| cloud.get_server(&server.id));
    for answer in futures::future::join_all(calls).await {
        let err = answer.unwrap_err();
        assert!(matches!(err, CloudError::Fatal(_)), "{err:?}");
        assert!(
            err.to_string().contains("refused once in a row")
                && err.to_string().contains("for 30s"),
            "{err}"
        );
    }
    let tried = env.face.faults().password_logins() - before;
    assert!(
        tried <= 1,
        "{tried} password logins for 10 concurrent calls"
    );
}

/// A renewal Keystone takes ends the refusals in a row: a refusal days
/// later is the first of a new episode, paused 30 s, not one more of the
/// old, paused ever longer.
#[tokio::test]
async fn a_renewal_keystone_takes_resets_the_refusal_count() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().change_password("pool", "rotated");
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(err.to_string().contains("refused once"), "{err}");
    advance_clock(Duration::from_secs(31)).await;
    // The operator puts the old password back in Keystone.
    env.face.faults().change_password("pool", "poolpass");
    cloud
        .get_server(&server.id)
        .await
        .expect("the renewal past the pause logs in");
    env.face.faults().change_password("pool", "rotated-again");
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(
        err.to_string().contains("refused once in a row") && err.to_string().contains("for 30s"),
        "{err}"
    );
}

/// Calls that queued behind a re-login that failed otherwise than by a
/// refusal (Keystone slow past the request timeout; a 429 or a 5xx alike)
/// share its outcome: one token request, not one per call each waiting
/// for the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_failed_re_login_share_its_outcome() {
    let env = env().await;
    // The timeout bounds every call, the connect's login and the ten GETs
    // too: it is long enough for a busy machine to answer those, and only
    // the re-login, Keystone slowed far past it, runs out of it.
    let cloud = env.driver_with(r#"request_timeout = "5s""#).await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    env.face.faults().revoke_all_tokens();
    env.face
        .faults()
        .slow(Service::Identity, Duration::from_secs(60));
    let before = env.face.faults().token_requests();
    let calls = (0..10).map(|_| cloud.get_server(&server.id));
    for answer in futures::future::join_all(calls).await {
        let err = answer.unwrap_err();
        assert!(
            matches!(&err, CloudError::Transient(m) if m.contains("Keystone did not answer")),
            "{err:?}"
        );
    }
    let sent = env.face.faults().token_requests() - before;
    assert!(sent <= 2, "{sent} token requests for 10 calls");
    env.face.faults().slow(Service::Identity, Duration::ZERO);
    cloud
        .get_server(&server.id)
        .await
        .expect("the next call logs in");
}

/// A proxy's 408 to a token request is the proxy's timeout, as it is to
/// any other call: the login is asked again later, not "an unusable cloud
/// configuration".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_408_to_a_re_login_is_transient() {
    let (env, cloud, server) = env_with_a_server().await;
    env.face.faults().revoke_all_tokens();
    env.face.faults().answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        1,
        408,
        "<html><body><h1>408 Request Time-out</h1>\nYour browser didn't send a complete request in time.\n</body></html>",
    );
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(matches!(err, CloudError::Transient(_)), "{err:?}");
    cloud
        .get_server(&server.id)
        .await
        .expect("the next call logs in");
}

/// After a password rotation, each refused re-login lengthens the pause
/// before the password is tried again (30 s, doubling), so a call every
/// 31 s does not reach Keystone's lockout_failure_attempts (5) within
/// minutes. The clock is tokio's, moved forward between calls.
#[tokio::test]
async fn refused_re_logins_are_tried_again_ever_later() {
    let (env, cloud, server) = env_with_a_server().await;
    env.face.faults().change_password("pool", "rotated");
    env.face.faults().revoke_all_tokens();
    let before = env.face.faults().password_logins();
    // A call every 31 s for 5 minutes.
    for _ in 0..10 {
        let err = cloud.get_server(&server.id).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cloud error: auth: Keystone refused the login"),
            "{err}"
        );
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(31)).await;
        tokio::time::resume();
    }
    // Refused at 0 s (then paused 30 s), 31 s (60 s), 93 s (120 s),
    // 217 s (240 s): four.
    let tried = env.face.faults().password_logins() - before;
    assert!(tried <= 4, "{tried} password logins in 5 minutes");
}

/// The gRPC health status of `service` on warmpoold's port, asked on a
/// connection of its own (one kept open across a moved clock may have
/// been closed by a keepalive timeout); `Err` when it does not answer.
async fn health_status(port: u16, service: &str) -> Result<i32, String> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut health = HealthClient::new(channel);
    let asked = health.check(HealthCheckRequest {
        service: service.into(),
    });
    match tokio::time::timeout(Duration::from_secs(30), asked).await {
        Ok(Ok(answer)) => Ok(answer.into_inner().status),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("no answer within 30 s".into()),
    }
}

/// warmpoold starting on the config `listening_on` makes for a gRPC port
/// chosen free beforehand (for a test that asks that port before start-up
/// is done): the port, the sender that stops it, and the start-up. The
/// port is free when picked, then handed over: another process can take it
/// in between, so a start-up that cannot listen on it is tried again on
/// another, as `Prometheus::start` does (tests/prometheus.rs). warmpoold
/// has its port once its liveness service answers there. For start-ups
/// that wait (held, refused): one that ends otherwise fails the test.
async fn start_on_a_free_port(
    listening_on: impl Fn(u16) -> Config,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<warmpool_server::Running>>,
) {
    use tonic_health::pb::health_check_response::ServingStatus;
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let starting = tokio::spawn(warmpool_server::start(listening_on(port), async {
            let _ = stopped.await;
        }));
        let mut waited = 0;
        loop {
            let liveness = tokio::time::timeout(
                Duration::from_secs(5),
                health_status(port, warmpool_server::LIVENESS_SERVICE),
            )
            .await;
            if liveness == Ok(Ok(i32::from(ServingStatus::Serving))) {
                return (port, stop, starting);
            }
            if starting.is_finished() {
                match starting.await.unwrap() {
                    Err(e)
                        if attempt < ATTEMPTS
                            && format!("{e:#}")
                                .contains(&format!("cannot listen on 127.0.0.1:{port} ")) =>
                    {
                        break
                    }
                    Err(e) => panic!("warmpoold's start-up on port {port} failed: {e:#}"),
                    Ok(_) => {
                        panic!("warmpoold's start-up on port {port} ended before it was asked")
                    }
                }
            }
            waited += 1;
            assert!(
                waited < 600,
                "warmpoold's port {port} did not answer in a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A login Keystone refuses at start-up (a wrong or rotated password in
/// clouds.yaml) does not end warmpoold: restarted by its supervisor every
/// 5 s (systemd's RestartSec) or by a CrashLoopBackOff, it would have a
/// Keystone with lockout_failure_attempts lock the account within
/// minutes. It stays up, health "" NOT_SERVING and `liveness` SERVING (so
/// no probe kills it), and logs in again after the re-login pause (30 s,
/// then 60 s, ...), reading clouds.yaml again each time: once the file is
/// mended, it starts. The clock is tokio's, moved forward while it waits.
#[tokio::test]
async fn a_login_refused_at_start_up_is_tried_again_ever_later_from_clouds_yaml_read_again() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let env = env().await;
    let mended = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    let wrong = mended.replace("'poolpass'", "'wrong'");
    assert_ne!(wrong, mended);
    std::fs::write(&env.clouds_yaml, &wrong).unwrap();
    let (port, stop, starting) = start_on_a_free_port(|port| {
        let text = env.config_text("", SMALL_POOL).replacen(
            r#"listen = "127.0.0.1:0""#,
            &format!(r#"listen = "127.0.0.1:{port}""#),
            1,
        );
        Config::parse(&text).unwrap()
    })
    .await;
    let logins = || env.face.faults().password_logins();
    // Alive and starting after each refusal, not ended by it.
    let waiting = |refusals: u32| {
        let starting = &starting;
        async move {
            let statuses = (
                health_status(port, "").await,
                health_status(port, warmpool_server::LIVENESS_SERVICE).await,
            );
            if starting.is_finished() {
                panic!("warmpoold's start-up ended after {refusals} refused login(s), health {statuses:?}");
            }
            assert_eq!(
                statuses,
                (
                    Ok(i32::from(ServingStatus::NotServing)),
                    Ok(i32::from(ServingStatus::Serving))
                ),
                "\"\" and liveness while waiting out refusal {refusals}"
            );
        }
    };
    wait_until("the first login", || logins() >= 1).await;
    waiting(1).await;
    // A caller is told the credential wait and when it is tried again.
    let client = warmpool_client::Client::connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    match client.list_pools().await {
        Err(warmpool_client::ClientError::Status { code, message }) => {
            assert_eq!(code, tonic::Code::Unavailable, "{message}");
            assert!(
                message.contains("Keystone refused its cloud credentials")
                    && message.contains("reads them again and tries at"),
                "{message}"
            );
            // Told before any token is checked: no account or file names.
            assert!(
                !message.contains("user pool")
                    && !message.contains(&env.clouds_yaml.display().to_string()),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    if starting.is_finished() {
        let ended = starting.await.unwrap();
        panic!(
            "warmpoold's start-up ended after one refused login: {:#}",
            ended.err().expect("not started on a wrong password")
        );
    }

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(logins(), 1, "the password was tried again within 29 s");
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    wait_until("the second login, 30 s after the first", || logins() >= 2).await;
    waiting(2).await;

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(logins(), 2, "the second pause is 60 s, not 30");
    std::fs::write(&env.clouds_yaml, &mended).unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    let running = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("start-up ends once clouds.yaml is mended")
        .unwrap()
        .expect("warmpoold starts on the mended clouds.yaml");
    assert_eq!(logins(), 3, "one login per try");
    assert_eq!(
        health_status(port, "").await,
        Ok(i32::from(ServingStatus::Serving))
    );
    let _ = stop.send(());
    running.served.await.unwrap().unwrap();
}

/// Marks the process [`a_login_refused_at_start_up_from_a_systemd_credential_is_not_tried_again`]
/// runs itself in, under a `CREDENTIALS_DIRECTORY` of its own.
const CREDENTIAL_CHILD: &str = "WARMPOOL_TEST_CREDENTIAL_CHILD";

/// Marks the process [`a_login_refused_at_start_up_with_a_systemd_credential_secure_yaml_is_not_tried_again`]
/// runs itself in, under a `CREDENTIALS_DIRECTORY` of its own.
const SECURE_CREDENTIAL_CHILD: &str = "WARMPOOL_TEST_SECURE_CREDENTIAL_CHILD";

/// Which file the shipped unit has systemd copy under
/// `$CREDENTIALS_DIRECTORY`, for [`refused_login_from_a_copied_credential`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copied {
    /// `LoadCredential=clouds.yaml`: the whole clouds.yaml is the copy.
    CloudsYaml,
    /// `LoadCredential=secure.yaml` with `OS_CLIENT_SECURE_FILE` at the
    /// copy: clouds.yaml is read in place.
    SecureYaml,
}

/// The body of both tests that a login refused at start-up is not tried
/// again when the refused password comes from a file systemd copied at
/// start. The test named `name` runs itself again in a child process
/// whose environment alone holds `marker` (and, for a secure.yaml,
/// `OS_CLIENT_SECURE_FILE`), so no other test sees those variables.
async fn refused_login_from_a_copied_credential(name: &str, marker: &str, which: Copied) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(credentials) = std::env::var_os(marker)
        .and(std::env::var_os("CREDENTIALS_DIRECTORY"))
        .map(PathBuf::from)
    else {
        let credentials = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(marker, "1")
            .env("CREDENTIALS_DIRECTORY", credentials.path());
        if which == Copied::SecureYaml {
            child.env(
                "OS_CLIENT_SECURE_FILE",
                credentials.path().join("secure.yaml"),
            );
        }
        let child = child.output().unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        let err = String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "the child failed:\n{out}\n{err}");
        assert!(
            out.contains("1 passed"),
            "the test did not run:\n{out}\n{err}"
        );
        return;
    };
    let logs = support::Logs::capture();
    let env = env().await;
    // Only the clouds.yaml case listens on a port known beforehand, so
    // only it asks the health service while start-up waits.
    let (copy, port, stop, starting) = match which {
        Copied::CloudsYaml => {
            let copy = credentials.join("clouds.yaml");
            let wrong = std::fs::read_to_string(&env.clouds_yaml)
                .unwrap()
                .replace("'poolpass'", "'wrong'");
            std::fs::write(&copy, wrong).unwrap();
            let (port, stop, starting) = start_on_a_free_port(|port| {
                let text = env
                    .config_text("", SMALL_POOL)
                    .replacen(
                        r#"listen = "127.0.0.1:0""#,
                        &format!(r#"listen = "127.0.0.1:{port}""#),
                        1,
                    )
                    .replacen(
                        &format!("clouds_yaml = \"{}\"", env.clouds_yaml.display()),
                        &format!("clouds_yaml = \"{}\"", copy.display()),
                        1,
                    );
                assert!(text.contains(&copy.display().to_string()), "{text}");
                Config::parse(&text).unwrap()
            })
            .await;
            (copy, Some(port), stop, starting)
        }
        Copied::SecureYaml => {
            // clouds.yaml stays where it is; the refused password is the copy's.
            assert!(!env.clouds_yaml.starts_with(&credentials));
            let copy = credentials.join("secure.yaml");
            std::fs::write(
                &copy,
                "clouds:\n  cloudsim:\n    auth:\n      password: 'wrong'\n",
            )
            .unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let starting =
                tokio::spawn(warmpool_server::start(env.config("", SMALL_POOL), async {
                    let _ = stopped.await;
                }));
            (copy, None, stop, starting)
        }
    };
    let logins = || env.face.faults().password_logins();
    let waiting = || async {
        let Some(port) = port else { return };
        assert_eq!(
            (
                health_status(port, "").await,
                health_status(port, warmpool_server::LIVENESS_SERVICE).await,
            ),
            (
                Ok(i32::from(ServingStatus::NotServing)),
                Ok(i32::from(ServingStatus::Serving))
            ),
            "\"\" and liveness while waiting for a restart"
        );
        // A caller is told why warmpoold does not serve, and what brings
        // it up, not to call again shortly.
        let client = warmpool_client::Client::connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        match client.list_pools().await {
            Err(warmpool_client::ClientError::Status { code, message }) => {
                assert_eq!(code, tonic::Code::Unavailable, "{message}");
                assert!(
                    message.contains("Keystone refused its cloud credentials")
                        && message.contains("systemctl restart warmpoold")
                        && !message.contains("call again shortly"),
                    "{message}"
                );
                // Told before any token is checked: no account or file names.
                assert!(
                    !message.contains("user pool")
                        && !message.contains(&copy.display().to_string()),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    };
    wait_until("the first login", || logins() >= 1).await;
    if starting.is_finished() {
        let ended = starting.await.unwrap();
        panic!(
            "start-up ended on a refused login: {:#}",
            ended.err().expect("not started on a wrong password")
        );
    }
    waiting().await;

    tokio::time::pause();
    for _ in 0..16 {
        tokio::time::advance(Duration::from_secs(30)).await;
    }
    tokio::time::resume();
    waiting().await;
    assert!(!starting.is_finished(), "start-up ended while waiting");
    let sent_again = match which {
        Copied::CloudsYaml => "the copied password was sent again",
        Copied::SecureYaml => "the copied secure.yaml's password was sent again",
    };
    assert_eq!(logins(), 1, "{sent_again}");
    let text = logs.text();
    let said: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("Keystone") && line.contains("systemctl restart warmpoold"))
        .collect();
    assert_eq!(said.len(), 1, "{text}");
    if which == Copied::SecureYaml {
        assert!(
            said[0].contains(&copy.display().to_string()) && said[0].contains("mend the original"),
            "{text}"
        );
    }
    assert!(text.contains("does not try them again"), "{text}");

    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("start-up ends on the shutdown")
        .unwrap();
    match ended {
        Ok(_) => panic!("started on a wrong password"),
        Err(e) => assert!(e.is::<warmpool_server::StoppedDuringStartUp>(), "{e:#}"),
    }
    assert_eq!(logins(), 1);
}

/// A login Keystone refuses at start-up with a clouds.yaml systemd copied
/// at start (the shipped unit's `LoadCredential=`, under
/// `$CREDENTIALS_DIRECTORY`) is not tried again: the copy cannot change
/// until a restart, so each try would send the same refused password and
/// only bring Keystone's lockout nearer. warmpoold stays up starting
/// (health "" NOT_SERVING, `liveness` SERVING), says once what to mend and
/// that a restart is needed, and a shutdown ends it. The test runs itself
/// in a child process, whose environment alone holds the variable.
#[tokio::test]
async fn a_login_refused_at_start_up_from_a_systemd_credential_is_not_tried_again() {
    refused_login_from_a_copied_credential(
        "a_login_refused_at_start_up_from_a_systemd_credential_is_not_tried_again",
        CREDENTIAL_CHILD,
        Copied::CloudsYaml,
    )
    .await;
}

/// The unit's other hand-over: clouds.yaml read in place, the password in
/// a secure.yaml systemd copied at start (`LoadCredential=secure.yaml`,
/// `OS_CLIENT_SECURE_FILE` pointing at the copy). A refused login is not
/// tried again, as with a copied clouds.yaml: mending the original never
/// reaches the copy, so each try would send the refused password again,
/// towards Keystone's lockout. The log says which file is a copy and that a
/// restart is needed.
#[tokio::test]
async fn a_login_refused_at_start_up_with_a_systemd_credential_secure_yaml_is_not_tried_again() {
    refused_login_from_a_copied_credential(
        "a_login_refused_at_start_up_with_a_systemd_credential_secure_yaml_is_not_tried_again",
        SECURE_CREDENTIAL_CHILD,
        Copied::SecureYaml,
    )
    .await;
}

/// A shutdown (SIGTERM) while start-up waits out a refused login ends
/// it there, as one during the cloud check does, without trying the
/// password again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_start_up_waits_out_a_refused_login_ends_it() {
    let env = env().await;
    let text = std::fs::read_to_string(&env.clouds_yaml).unwrap();
    std::fs::write(&env.clouds_yaml, text.replace("'poolpass'", "'wrong'")).unwrap();
    let config = env.config("", SMALL_POOL);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let starting = tokio::spawn(warmpool_server::start(config, async {
        let _ = stopped.await;
    }));
    wait_until("the first login", || {
        env.face.faults().password_logins() >= 1
    })
    .await;
    let _ = stop.send(());
    // A guard against a hang only: the wait it ends is 30 s long.
    let ended = tokio::time::timeout(Duration::from_secs(300), starting)
        .await
        .expect("start-up did not end on the shutdown")
        .unwrap();
    let err = match ended {
        Ok(_) => panic!("started on a wrong password"),
        Err(e) => e,
    };
    assert!(err.is::<warmpool_server::StoppedDuringStartUp>(), "{err:#}");
    assert_eq!(env.face.faults().password_logins(), 1);
}

/// A Keystone failing at start-up (a 500) is an outage, not a refusal of
/// the credentials: start-up checks the cloud again after its back-off,
/// warning of a failure that may pass (not the refused credentials' error
/// and pause of 30 s or more), and starts once Keystone answers. (It ended
/// start-up at once, for the supervisor to start warmpoold again.)
#[tokio::test]
async fn a_keystone_failing_at_start_up_is_checked_again() {
    let logs = support::Logs::capture();
    let env = env().await;
    env.face.faults().answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        1,
        500,
        r#"{"error": {"code": 500, "title": "Internal Server Error", "message": "An unexpected error prevented the server from fulfilling your request."}}"#,
    );
    let config = env.config("", &SMALL_POOL.replace("min_ready = 2", "min_ready = 0"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start(config, async {
        let _ = stopped.await;
    })
    .await
    .expect("started once Keystone answered");
    assert_eq!(env.face.faults().token_requests(), 2);
    assert_eq!(
        logs.count(
            "WARN",
            "this may pass by itself: warmpoold checks the cloud again at"
        ),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("ERROR", "refused"), 0, "{}", logs.text());
    let _ = stop.send(());
    running.served.await.unwrap().unwrap();
}

/// An endpoint that streams an answer without end is cut off at
/// `MAX_ANSWER_BYTES` as a transient failure, instead of being held in
/// memory for the whole request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_off() {
    use pool_manager::openstack::session::MAX_ANSWER_BYTES;
    let (env, cloud, server) = env_with_a_server().await;
    env.face
        .faults()
        .oversized_next(Service::Compute, 1, MAX_ANSWER_BYTES + 1);
    let err = cloud.get_server(&server.id).await.unwrap_err();
    assert!(matches!(err, CloudError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("longer than 64 MiB"), "{err}");
    cloud
        .get_server(&server.id)
        .await
        .expect("the next answer is read");
}

/// A tenant's port never goes on warmpool's management network (the one
/// every pool server sits on): an Allocate naming it, by mistake or not,
/// is refused before anything is created, and says which network it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_port_on_the_management_network_is_refused() {
    let mut settings = HttpSettings::default();
    settings.networks.push(cloudsim::http::NetworkSpec::new(
        "mgmt-az2",
        "10.1.0.0/16",
        "10.1.0.1",
        false,
    ));
    let env = env_with(sim_config(), settings).await;
    let cloud = env
        .driver_with("[cloud.availability_zones.az2]\nmanagement_network = \"mgmt-az2\"\n")
        .await;
    for name in ["mgmt-net", "mgmt-az2"] {
        let network = cloud.network(name).await.unwrap();
        // Neutron takes a network id in upper case as the same network.
        for id in [network.id.clone(), network.id.to_uppercase()] {
            let e = cloud
                .create_port(&port_spec("warmpool-o1", &id))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, CloudError::Fatal(m) if m.contains(&id) && m.contains(name) && m.contains("management network")),
                "{e:?}"
            );
        }
    }
    assert!(env.sim.ports().is_empty(), "{:?}", env.sim.ports());
    let tenant = cloud.network("tenant-net").await.unwrap();
    cloud
        .create_port(&port_spec("warmpool-o1", &tenant.id))
        .await
        .unwrap();
}

/// A network of another project named as warmpool's management network
/// (Neutron lists every project's networks to an admin, which the pool user
/// must be to attach tenants' volumes; any tenant may name a network so) is
/// not warmpool's: once the cached name expires, the management network is
/// still the one of warmpool's project, so tenant ports and boots go on. A
/// tenant port on that other network is no port on the management network.
#[tokio::test]
async fn another_projects_network_named_like_the_management_network_is_not_it() {
    let mut settings = HttpSettings::default();
    let elses =
        cloudsim::http::NetworkSpec::new("someone-elses-net", "10.50.0.0/16", "10.50.0.1", false)
            .of_project("tenant-b");
    settings.networks.push(elses.clone());
    // Listeners: only then is a server's address of its network's subnet.
    let env = env_with(with_mysqld(), settings).await;
    let cloud = env.driver().await;
    let mgmt = cloud.network("mgmt-net").await.unwrap();
    let tenant = cloud.network("tenant-net").await.unwrap();
    cloud
        .create_port(&port_spec("warmpool-o1", &tenant.id))
        .await
        .expect("a tenant port");

    env.face
        .faults()
        .rename_network("someone-elses-net", "mgmt-net");
    advance_clock(Duration::from_secs(601)).await;

    cloud
        .create_port(&port_spec("warmpool-o2", &tenant.id))
        .await
        .expect("a tenant port, the management network resolved among warmpool's project's");
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .expect("a boot on warmpool's management network");
    assert_eq!(cloud.network("mgmt-net").await.unwrap(), mgmt);
    let booted = settled(&cloud, &server.id).await;
    assert_eq!(booted.status, ServerStatus::Active, "{booted:?}");
    // An address of warmpool's management network's subnet, not of the
    // namesake's (10.50.0.0/16).
    assert!(
        booted
            .mysql_addr
            .is_some_and(|a| a.ip().to_string().starts_with("127.77.")),
        "{booted:?}"
    );
    let e = cloud
        .create_port(&port_spec("warmpool-o3", &mgmt.id))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("management network")),
        "{e:?}"
    );
    cloud
        .create_port(&port_spec("warmpool-o4", &elses.id))
        .await
        .expect("the other project's network is not the management network");
}

/// A management network of another project (a provider network an admin
/// shares) beside an unshared network of a third project of the same name:
/// neither is warmpool's project's, and `shared` says nothing of whose a
/// network is (a tenant may RBAC-share its own with warmpool's project), so
/// the name is ambiguous: boots fail asking for the id rather than go on a
/// network that may be a tenant's. Given by id, the shared one is taken,
/// and it alone refuses tenant ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_projects_management_network_beside_a_namesake_is_ambiguous_by_name() {
    let mut settings = HttpSettings::default();
    let shared =
        cloudsim::http::NetworkSpec::new("mgmt-net", "127.77.0.0/16", "127.77.0.254", true)
            .of_project("admin");
    let namesake = cloudsim::http::NetworkSpec::new("mgmt-net", "10.50.0.0/16", "10.50.0.1", false)
        .of_project("tenant-b");
    // The first network is the one the face gives servers' addresses of.
    settings.networks[0] = shared.clone();
    settings.networks.push(namesake.clone());
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    let e = cloud.network("mgmt-net").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 networks are named 'mgmt-net'; give its id")),
        "{e:?}"
    );
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 networks are named 'mgmt-net'")),
        "{e:?}"
    );

    let text = env.config_text("", SMALL_POOL).replace(
        "management_network = \"mgmt-net\"",
        &format!("management_network = \"{}\"", shared.id),
    );
    let config = Config::parse(&text).unwrap();
    let cloud = OpenStackCloud::connect(openstack(&config).settings().unwrap())
        .await
        .unwrap();
    let e = cloud
        .create_port(&port_spec("warmpool-o1", &shared.id))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("management network")),
        "{e:?}"
    );
    cloud
        .create_port(&port_spec("warmpool-o2", &namesake.id))
        .await
        .expect("a tenant port beside the management network's namesake");
    cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .expect("a boot on the shared management network, given by id");
}

/// A tenant's network named like the management network and RBAC-shared
/// with warmpool's project (which any member of the tenant's project may
/// do; Neutron then shows it `shared: true`) does not outrank the real
/// management network of another project that is not shared: the name is
/// ambiguous, and no pool server boots on the tenant's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_namesake_shared_with_warmpool_does_not_outrank_another_projects_management_network(
) {
    let mut settings = HttpSettings::default();
    let infra =
        cloudsim::http::NetworkSpec::new("mgmt-net", "127.77.0.0/16", "127.77.0.254", false)
            .of_project("infra");
    let tenants = cloudsim::http::NetworkSpec::new("mgmt-net", "10.50.0.0/16", "10.50.0.1", true)
        .of_project("tenant-b");
    settings.networks[0] = infra.clone();
    settings.networks.push(tenants.clone());
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    let picked = cloud.network("mgmt-net").await;
    assert!(
        matches!(&picked, Err(CloudError::Fatal(m)) if m.contains("2 networks are named 'mgmt-net'; give its id")),
        "the tenant's network is {}, infra's {}: {picked:?}",
        tenants.id,
        infra.id
    );
    let booted = cloud.create_server(&spec("a", "db.small", "az1")).await;
    assert!(
        matches!(&booted, Err(CloudError::Fatal(m)) if m.contains("2 networks are named 'mgmt-net'")),
        "{booted:?}"
    );
    assert!(env.sim.servers().is_empty(), "{:?}", env.sim.servers());
}

/// The management network's name ambiguous from the driver's first lookup
/// (warmpoold restarted after a second network of warmpool's project took
/// the name): with no network it resolved to before, a tenant's port is
/// refused on a network of the name, which the pool servers may be on, and
/// taken anywhere else, rather than every purchase failing.
#[tokio::test]
async fn an_ambiguous_management_network_name_never_resolved_refuses_only_its_namesakes() {
    let mut settings = HttpSettings::default();
    let twin = cloudsim::http::NetworkSpec::new("twin-net", "10.50.0.0/16", "10.50.0.1", false);
    settings.networks.push(twin.clone());
    let mgmt = settings.networks[0].clone();
    let env = env_with(sim_config(), settings).await;
    env.face.faults().rename_network("twin-net", "mgmt-net");
    let cloud = env.driver().await;
    let tenant = cloudsim::http::NetworkSpec::new("tenant-net", "10.0.0.0/16", "10.0.0.1", true);
    cloud
        .create_port(&port_spec("warmpool-o1", &tenant.id))
        .await
        .expect("a tenant port on tenant-net");
    for (order, network) in [("warmpool-o2", &twin.id), ("warmpool-o3", &mgmt.id)] {
        let e = cloud
            .create_port(&port_spec(order, network))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains(network.as_str()) && m.contains("\"mgmt-net\"") && m.contains("management network")),
            "{e:?}"
        );
        // The fence's look says so too.
        let shown = cloud.get_network(network).await.unwrap();
        assert_eq!(
            shown.management.as_deref(),
            Some("one of 2 networks named as warmpool's management network \"mgmt-net\"")
        );
    }
    let shown = cloud.get_network(&tenant.id).await.unwrap();
    assert_eq!(shown.management, None);
}

/// A second network of warmpool's own project given the management
/// network's name makes the name ambiguous: boots fail, naming it, as
/// warmpool cannot tell which network its servers are to go on. A tenant's
/// port is judged against the management network last resolved instead:
/// refused there, taken anywhere else, rather than every purchase failing
/// for a name it did not give.
#[tokio::test]
async fn an_ambiguous_management_network_name_fails_no_tenant_port_elsewhere() {
    let mut settings = HttpSettings::default();
    let twin = cloudsim::http::NetworkSpec::new("twin-net", "10.50.0.0/16", "10.50.0.1", false);
    settings.networks.push(twin.clone());
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    let mgmt = cloud.network("mgmt-net").await.unwrap();
    let tenant = cloud.network("tenant-net").await.unwrap();

    env.face.faults().rename_network("twin-net", "mgmt-net");
    advance_clock(Duration::from_secs(601)).await;

    cloud
        .create_port(&port_spec("warmpool-o1", &tenant.id))
        .await
        .expect("a tenant port on its own network");
    cloud
        .create_port(&port_spec("warmpool-o2", &twin.id))
        .await
        .expect("a tenant port on the management network's twin, which no pool server is on");
    let e = cloud
        .create_port(&port_spec("warmpool-o3", &mgmt.id))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains(&mgmt.id) && m.contains("management network")),
        "{e:?}"
    );
    let e = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("2 networks are named 'mgmt-net'")),
        "{e:?}"
    );
}

/// What Cinder and Neutron refuse of a tenant's volume and port, as they
/// word it, reaches warmpool classified: an unknown volume type (404), more
/// gigabytes than the quota (413), a subnet of another network and an
/// address outside the network's subnet (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volume_and_port_requests_are_refused_as_the_cloud_refuses_them() {
    let env = env().await;
    let cloud = env.driver().await;
    let typed = NewVolumeSpec {
        volume_type: Some("ssd-gold".into()),
        ..volume_spec("warmpool-o1", 1)
    };
    let e = cloud.create_volume(&typed).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("Volume type with name ssd-gold could not be found")),
        "{e:?}"
    );
    let e = cloud
        .create_volume(&volume_spec("warmpool-o2", 4096))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::QuotaExceeded(m) if m.contains("Requested 4096G, quota is 1000G")),
        "{e:?}"
    );
    assert!(env.sim.volumes().is_empty(), "{:?}", env.sim.volumes());

    let network = cloud.network("tenant-net").await.unwrap();
    let other_subnet = NewPortSpec {
        subnet_id: Some("00000000-0000-4000-8000-0000000005b7".into()),
        ..port_spec("warmpool-o1", &network.id)
    };
    let e = cloud.create_port(&other_subnet).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("invalid subnet 00000000-0000-4000-8000-0000000005b7")),
        "{e:?}"
    );
    // tenant-net is 10.0.0.0/16.
    let outside = NewPortSpec {
        fixed_ip: Some("192.168.7.7".into()),
        ..port_spec("warmpool-o1", &network.id)
    };
    let e = cloud.create_port(&outside).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("IP address 192.168.7.7 is not a valid IP for the specified subnet")),
        "{e:?}"
    );
    assert!(env.sim.ports().is_empty(), "{:?}", env.sim.ports());
    let inside = NewPortSpec {
        fixed_ip: Some("10.0.9.9".into()),
        ..port_spec("warmpool-o1", &network.id)
    };
    cloud.create_port(&inside).await.unwrap();
}

/// Cinder's per-volume size limit (`per_volume_gigabytes`) refuses a
/// volume above it with its 413 `VolumeSizeExceedsLimit`, worded as a quota:
/// classified QuotaExceeded, and told from the quotas that fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_over_the_per_volume_limit_is_refused_as_cinder_words_it() {
    let env = env_with_quotas(Quotas {
        max_gigabytes_per_volume: Some(100),
        ..Quotas::default()
    })
    .await;
    let cloud = env.driver().await;
    let e = cloud
        .create_volume(&volume_spec("warmpool-o1", 500))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::QuotaExceeded(m)
            if m.contains("Requested volume size 500G is larger than maximum allowed limit 100G")
                && pool_manager::cloud::exceeds_per_volume_limit(m)),
        "{e:?}"
    );
    assert!(env.sim.volumes().is_empty(), "{:?}", env.sim.volumes());
    cloud
        .create_volume(&volume_spec("warmpool-o2", 100))
        .await
        .expect("a volume at the limit");
}

/// The item a page marker names can go between two pages (a server
/// deleted while the reconciler lists, a port while its name is looked
/// up): Neutron then answers 404 for the marker, Nova 400 once the row is
/// archived (both measured on the testbed). The listing starts again from
/// the first page instead of failing; a marker that keeps vanishing still
/// fails it, after a few tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_marker_deleted_between_pages_starts_the_listing_again() {
    let settings = HttpSettings {
        page_limit: Some(1),
        ..HttpSettings::default()
    };
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    for name in ["a", "b", "c"] {
        cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
    }
    let tenant = cloud.network("tenant-net").await.unwrap();
    for _ in 0..2 {
        cloud
            .create_port(&port_spec("warmpool-o", &tenant.id))
            .await
            .unwrap();
    }
    let ids = |servers: Vec<Server>| {
        let mut ids: Vec<String> = servers.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let port_ids = |ports: Vec<pool_manager::cloud::Port>| {
        let mut ids: Vec<String> = ports.into_iter().map(|p| p.id).collect();
        ids.sort();
        ids
    };
    let all = ids(cloud.list_pool_servers().await.unwrap());
    assert_eq!(all.len(), 3);
    let all_ports = port_ids(cloud.find_ports_by_name("warmpool-o").await.unwrap());
    assert_eq!(all_ports.len(), 2);

    env.face.faults().delete_next_markers(Service::Compute, 1);
    assert_eq!(ids(cloud.list_pool_servers().await.unwrap()), all);
    env.face.faults().delete_next_markers(Service::Network, 1);
    assert_eq!(
        port_ids(cloud.find_ports_by_name("warmpool-o").await.unwrap()),
        all_ports
    );
    env.face.faults().delete_next_markers(Service::Network, 100);
    let e = cloud.find_ports_by_name("warmpool-o").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("could not be found")),
        "{e:?}"
    );
    env.face.faults().clear();
}

/// Nova answers a marker naming a server still being scheduled (one of
/// its build requests) with its cells' servers from the first, so the
/// page ends with the marker's server again: seen on the testbed at
/// `[api] max_limit = 2` while pools filled, where it failed reconcile
/// passes as "the cloud ignores the marker". The listing starts again
/// from the first page instead; a cloud that answers every marker so
/// (one ignoring it) still fails it, after a few tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_answered_from_the_start_starts_the_listing_again() {
    let settings = HttpSettings {
        page_limit: Some(1),
        ..HttpSettings::default()
    };
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    for name in ["a", "b", "c"] {
        cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
    }
    let ids = |servers: Vec<Server>| {
        let mut ids: Vec<String> = servers.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let all = ids(cloud.list_pool_servers().await.unwrap());
    assert_eq!(all.len(), 3);

    env.face.faults().restart_next_pages(Service::Compute, 1);
    assert_eq!(ids(cloud.list_pool_servers().await.unwrap()), all);
    env.face.faults().restart_next_pages(Service::Compute, 100);
    let e = cloud.list_pool_servers().await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Fatal(m) if m.contains("ignores the marker")),
        "{e:?}"
    );
    env.face.faults().clear();
}

/// Nova may answer a marker it found among its build requests with its
/// cells' servers from the first, where the marker's server, moved to its
/// cell meanwhile, comes first: the page `[marker's server, an older one]`
/// does not end with a server seen before, so the listing goes on, and the
/// marker's server is listed once only (start-up adoption reads the list,
/// not a map by id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_starting_at_its_marker_lists_each_server_once() {
    let settings = HttpSettings {
        page_limit: Some(2),
        ..HttpSettings::default()
    };
    let env = env_with(sim_config(), settings).await;
    let cloud = env.driver().await;
    for name in ["a", "b", "c", "d", "e"] {
        cloud
            .create_server(&spec(name, "db.small", "az1"))
            .await
            .unwrap();
    }
    let ids = |servers: Vec<Server>| {
        let mut ids: Vec<String> = servers.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let all = ids(cloud.list_pool_servers().await.unwrap());
    assert_eq!(all.len(), 5);

    env.face.faults().include_next_markers(Service::Compute, 1);
    let listed = ids(cloud.list_pool_servers().await.unwrap());
    let mut once = listed.clone();
    once.dedup();
    assert_eq!(once, listed, "a server listed twice");
    assert_eq!(listed, all);
    env.face.faults().clear();
}

/// Starts warmpoold on `config`; the handle and its stop switch.
async fn start_daemon(
    config: Config,
) -> anyhow::Result<(warmpool_server::Running, tokio::sync::oneshot::Sender<()>)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = warmpool_server::start(config, async {
        let _ = stopped.await;
    })
    .await?;
    Ok((running, stop))
}

/// A pool of one, as an operator creates one through the API.
fn api_pool_spec() -> warmpool_proto::v1::PoolSpec {
    warmpool_proto::v1::PoolSpec {
        min_ready: 1,
        max_ready: 2,
        image: "mysql-8.0".into(),
        ..Default::default()
    }
}

/// Pools created through the API whose flavor the cloud team later
/// retires, or whose zone it closes for patching, do not stop the next
/// start: warmpoold serves the other pools (a purchase works), and each
/// stale pool reads degraded, in GetPool and in the metrics, its last
/// error naming the cause and the log the way out. At its target, each
/// boots nothing (a boot would fail as the check does): the check is made
/// again after each pause, fails, and it stays degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_pool_the_cloud_no_longer_serves_does_not_stop_start_up() {
    use warmpool_client::Client;
    let env = env_with_mysqld().await;
    let small = PoolKey::new("db.small", "az1");
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    client
        .create_pool("db.medium", "az1", api_pool_spec())
        .await
        .unwrap();
    client
        .create_pool("db.large", "az2", api_pool_spec())
        .await
        .unwrap();
    // Every pool filled and no boot in flight: a boot the old cloud took
    // that became Ready after the restart would be a good boot of the
    // stale pool, and clear its mark.
    let manager = running.manager.clone();
    let pools = [
        (small.clone(), 2),
        (PoolKey::new("db.medium", "az1"), 1),
        (PoolKey::new("db.large", "az2"), 1),
    ];
    for _ in 0..600 {
        let mut settled = true;
        for (key, ready) in &pools {
            let status = manager.get_pool(key).await.unwrap();
            settled &= status.count(pool_manager::model::InstanceState::Ready) >= *ready
                && status.count(pool_manager::model::InstanceState::Booting) == 0
                && status.count(pool_manager::model::InstanceState::Warming) == 0;
        }
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(manager);
    drop(client);
    stop_daemon(running, stop).await;

    env.sim.retire_flavor("db.medium");
    env.sim.close_zone("az2");
    // The marks are logged as the start makes them, on this thread.
    let logs = support::Logs::capture();
    let (running, stop) = start_daemon(env.config("", SMALL_POOL))
        .await
        .expect("a stale stored pool stopped start-up");
    for way_out in [
        "warmpoolctl pools delete db.medium az1",
        "warmpoolctl pools delete db.large az2",
    ] {
        assert!(logs.text().contains(way_out), "{}", logs.text());
    }
    drop(logs);
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    // The check's error: each names the flavor, and the zone.
    let medium = client.get_pool("db.medium", "az1").await.unwrap();
    assert!(medium.degraded, "{medium:?}");
    assert!(
        medium.last_error.contains("no flavor named 'db.medium'"),
        "{}",
        medium.last_error
    );
    let large = client.get_pool("db.large", "az2").await.unwrap();
    assert!(large.degraded, "{large:?}");
    assert!(large.last_error.contains("'az2'"), "{}", large.last_error);
    assert!(!client.get_pool("db.small", "az1").await.unwrap().degraded);
    // Each check made again looks the flavor up afresh (a listing of
    // Nova's flavors); a few of them, and no create.
    env.sim.reset_call_counts();
    wait_until("the stale pools checked again", || {
        env.sim
            .call_counts()
            .get("list_flavors")
            .copied()
            .unwrap_or(0)
            >= 6
    })
    .await;
    let calls = env.sim.call_counts();
    assert_eq!(calls.get("create_server"), None, "{calls:?}");
    for (flavor, az) in [("db.medium", "az1"), ("db.large", "az2")] {
        let pool = client.get_pool(flavor, az).await.unwrap();
        assert!(
            pool.consecutive_boot_failures == 0 && pool.degraded,
            "a stale pool at its target boots nothing, and stays degraded: {pool:?}"
        );
        assert!(
            pool.last_error.starts_with("start-up cloud check: "),
            "{}",
            pool.last_error
        );
    }

    let network = env.driver().await.network("tenant-net").await.unwrap();
    let allocation = client
        .allocate(support::allocate_request(
            "order-1",
            "db.small",
            "az1",
            support::new_volume(1, true),
            &network.id,
            Duration::from_secs(60),
        ))
        .await
        .expect("the pools the cloud still serves sell");
    assert!(!allocation.server_id.is_empty(), "{allocation:?}");

    let (_, _, metrics) =
        support::http_get(&format!("http://{}/metrics", running.metrics_addr)).await;
    for (flavor, az) in [("db.medium", "az1"), ("db.large", "az2")] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("warmpool_pool_degraded{")
                    && l.contains(&format!("flavor=\"{flavor}\""))
                    && l.contains(&format!("availability_zone=\"{az}\""))
                    && l.ends_with(" 1")),
            "{flavor}@{az} not degraded in:\n{metrics}"
        );
    }
    drop(client);
    stop_daemon(running, stop).await;
}

/// A pool the config file declares and the store does not have yet is the
/// operator's input: a flavor the cloud lacks still stops start-up, saying
/// it is the config's pool, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_pool_new_to_the_store_with_a_bad_flavor_stops_start_up() {
    let env = env().await;
    let pools = format!("{SMALL_POOL}{}", SMALL_POOL.replace("db.small", "db.gone"));
    let err = match start_daemon(env.config("", &pools)).await {
        Ok(_) => panic!("started with a configured pool whose flavor the cloud lacks"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no flavor named 'db.gone'"), "{err}");
    assert!(
        err.contains("db.gone@az1") && err.contains("config file"),
        "{err}"
    );
    let dir = env.dir.path().join("data");
    let store = tokio::task::spawn_blocking(move || pool_manager::store::SledStore::open(&dir))
        .await
        .unwrap()
        .unwrap();
    use pool_manager::store::Store;
    assert!(store.list_pools().await.unwrap().is_empty());
    assert!(env.sim.servers().is_empty());
}

/// A pool whose new volumes would go to a zone Cinder lacks (az2's
/// `volume_availability_zone = "nova"` here; as commonly, a Cinder of one
/// zone "nova" and a pool in a new Nova zone with no override) is refused
/// by CreatePool, naming the zone, the pool's zone and the setting, and
/// nothing is stored. Accepted, it filled, every purchase with a new volume
/// failed, and the next start refused to start at all. A Cinder that does
/// not answer refuses the pool UNAVAILABLE, as Nova and Glance do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_pool_refuses_a_zone_whose_volumes_cinder_has_no_zone_for() {
    use warmpool_client::Client;
    let env = env().await;
    let to_nova = "[cloud.availability_zones.az2]\nvolume_availability_zone = \"nova\"";
    let az2 = PoolKey::new("db.small", "az2");
    let e = env
        .driver_with(to_nova)
        .await
        .check_boot_spec(&az2, "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("Cinder zone 'nova'")),
        "{e:?}"
    );

    let (running, stop) = start_daemon(env.config(to_nova, SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let refused = support::expect_code(
        client.create_pool("db.small", "az2", api_pool_spec()).await,
        tonic::Code::FailedPrecondition,
    );
    for named in [
        "Cinder zone 'nova'",
        "its zones: az1, az2",
        "pools in az2",
        "volume_availability_zone",
    ] {
        assert!(refused.contains(named), "{named:?} not in {refused}");
    }
    support::expect_code(
        client.get_pool("db.small", "az2").await,
        tonic::Code::NotFound,
    );

    env.face.faults().server_error_next(Service::Volume, 1);
    support::expect_code(
        client
            .create_pool("db.medium", "az1", api_pool_spec())
            .await,
        tonic::Code::Unavailable,
    );
    support::expect_code(
        client.get_pool("db.medium", "az1").await,
        tonic::Code::NotFound,
    );
    client
        .create_pool("db.medium", "az1", api_pool_spec())
        .await
        .expect("az1's volumes have their Cinder zone");
    drop(client);
    stop_daemon(running, stop).await;
}

/// A Cinder zone Cinder lists as not available (every cinder-volume
/// service in it disabled or down: maintenance) is not a missing one: the
/// config names it rightly, so the refusal says it is unavailable and does
/// not send the operator to volume_availability_zone. As a Nova zone listed
/// but not available is, CreatePool refuses it (its purchases' new volumes
/// would end in `error`), and check-cloud fails its zone's pools alone (a
/// stored one is marked degraded at start-up; the others serve on). Once
/// Cinder's services are back, the pool is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cinder_zone_listed_unavailable_is_told_unavailable_not_missing() {
    use warmpool_client::Client;
    let env = env().await;
    env.sim.close_volume_zone("az2");
    let told_unavailable = |m: &str| {
        m.contains("Cinder zone 'az2'")
            && m.contains("unavailable")
            && !m.contains("does not have")
            && !m.contains("volume_availability_zone")
    };
    let az2 = PoolKey::new("db.small", "az2");
    let e = env
        .driver()
        .await
        .check_boot_spec(&az2, "mysql-8.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if told_unavailable(m)),
        "{e:?}"
    );

    let pools = format!("{SMALL_POOL}{}", SMALL_POOL.replace("az1", "az2"));
    let config = env.config("", &pools);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    assert!(!report.passed(), "{report}");
    let volumes: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Volume)
        .collect();
    assert_eq!(volumes.len(), 1, "{report}");
    assert!(told_unavailable(&volumes[0].message), "{report}");
    assert_eq!(
        volumes[0].scope.as_ref().map(|s| &s.configured),
        Some(&vec![az2.clone()]),
        "az2's pools' failure alone: {report}"
    );

    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let refused = support::expect_code(
        client.create_pool("db.small", "az2", api_pool_spec()).await,
        tonic::Code::FailedPrecondition,
    );
    assert!(told_unavailable(&refused), "{refused}");
    support::expect_code(
        client.get_pool("db.small", "az2").await,
        tonic::Code::NotFound,
    );
    env.sim.reopen_volume_zone("az2");
    client
        .create_pool("db.small", "az2", api_pool_spec())
        .await
        .expect("Cinder's az2 takes volumes again");
    drop(client);
    stop_daemon(running, stop).await;
}

/// `warmpoold check-cloud` checks the pools start-up checks: those the
/// store has too, so a pool created through the API whose flavor was
/// retired since is reported (and what start-up does about it), not "all
/// ok". While a daemon holds the store, it says so and checks the
/// configured pools, its exit status theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_checks_the_pools_the_store_has() {
    let env = env().await;
    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, env.config_text("", SMALL_POOL)).unwrap();
    let check_cloud = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args(["check-cloud", "--config"])
            .arg(&path)
            .env_remove("OS_CLOUD")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = warmpool_client::Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    client
        .create_pool("db.medium", "az1", api_pool_spec())
        .await
        .unwrap();
    env.sim.retire_flavor("db.medium");

    let (code, report) = check_cloud().await;
    assert_eq!(code, Some(0), "{report}");
    let data = env.dir.path().join("data").display().to_string();
    assert!(
        report.lines().any(|l| l.starts_with("store: ")
            && l.contains(&data)
            && l.contains("running warmpoold")
            && l.contains("configured pools")),
        "{report}"
    );
    assert!(!report.contains("db.medium"), "{report}");

    drop(client);
    stop_daemon(running, stop).await;
    let (code, report) = check_cloud().await;
    assert_eq!(code, Some(1), "{report}");
    let flavor = report
        .lines()
        .find(|l| l.starts_with("flavor: no flavor named 'db.medium'"))
        .unwrap_or_else(|| panic!("no failed db.medium flavor line:\n{report}"));
    assert!(
        flavor.contains("db.medium@az1")
            && flavor.contains("warmpoold starts")
            && flavor.contains("`warmpoolctl pools delete db.medium az1`"),
        "{report}"
    );
    assert!(
        report.contains("flavor: ok (db.small: 1 vCPU, 1024 MiB RAM)"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("store: ok (") && l.contains("db.medium@az1")),
        "{report}"
    );
}

/// `warmpoold --data-dir DIR check-cloud` checks the store in DIR, as the
/// daemon started with the same flags serves it: a config without
/// `data_dir` checked ./warmpool-data instead, found no store there,
/// skipped the stored pools and passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_checks_the_store_data_dir_names() {
    let env = env().await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = warmpool_client::Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    client
        .create_pool("db.medium", "az1", api_pool_spec())
        .await
        .unwrap();
    drop(client);
    stop_daemon(running, stop).await;
    env.sim.retire_flavor("db.medium");

    // The file names no data_dir: the flag alone says where the store is.
    let data = env.dir.path().join("data");
    let text = env
        .config_text("", SMALL_POOL)
        .replace(&format!("data_dir = \"{}\"\n", data.display()), "");
    assert!(!text.contains("data_dir"), "{text}");
    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, text).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("--data-dir")
        .arg(&data)
        .args(["check-cloud", "--config"])
        .arg(&path)
        .current_dir(elsewhere.path())
        .env_remove("OS_CLOUD")
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("flavor: no flavor named 'db.medium'")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("store: ok (")
            && l.contains(&data.display().to_string())
            && l.contains("db.medium@az1")),
        "{report}"
    );
    // Nothing was looked for, nor made, where the flag does not point.
    assert!(!elsewhere.path().join("warmpool-data").exists());
}

/// `check-cloud` compares the cloud the store serves with the configured
/// one: on the demo's store, a config of a real cloud passed every check,
/// and warmpoold then refused to start (the store serves another cloud).
/// The store's line names both and `--adopt-cloud`, and fails the report;
/// once the store serves the configured cloud it is ok, naming it; a
/// store that recorded none yet says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cloud_compares_the_cloud_the_store_serves_with_the_configured_one() {
    let env = env().await;
    let data = env.dir.path().join("data");
    let path = env.dir.path().join("warmpoold.toml");
    std::fs::write(&path, env.config_text("", SMALL_POOL)).unwrap();
    let check_cloud = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warmpoold"))
            .args(["check-cloud", "--config"])
            .arg(&path)
            .env_remove("OS_CLOUD")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let configured = format!(
        r#"OpenStack project {} in region RegionOne under the server tag "warmpool""#,
        env.face.project_id()
    );
    let store_cloud = |report: &str| {
        report
            .lines()
            .find(|l| l.starts_with("store cloud: "))
            .unwrap_or_else(|| panic!("no store cloud line:\n{report}"))
            .to_owned()
    };

    let (code, report) = check_cloud().await;
    assert_eq!(code, Some(0), "{report}");
    let line = store_cloud(&report);
    assert!(
        line.starts_with("store cloud: ok (") && line.contains("not recorded yet"),
        "{report}"
    );

    let (running, stop) = start_daemon(embedded_demo_config(&data)).await.unwrap();
    stop_daemon(running, stop).await;
    let (code, report) = check_cloud().await;
    assert_eq!(code, Some(1), "{report}");
    let line = store_cloud(&report);
    for part in [
        data.display().to_string(),
        "the embedded simulated cloud".to_owned(),
        configured.clone(),
        "--adopt-cloud".to_owned(),
    ] {
        assert!(line.contains(&part), "{part:?} not in: {report}");
    }
    assert!(!line.starts_with("store cloud: ok"), "{report}");

    let mut adopting = env.config("", SMALL_POOL);
    adopting.adopt_cloud = true;
    let (running, stop) = start_daemon(adopting).await.unwrap();
    stop_daemon(running, stop).await;
    let (code, report) = check_cloud().await;
    assert_eq!(code, Some(0), "{report}");
    let line = store_cloud(&report);
    assert!(
        line.starts_with("store cloud: ok (") && line.contains(&configured),
        "{report}"
    );
}

/// A stored pool its start-up cloud check finds unusable is degraded as a
/// pool whose boots keep failing is: a DEGRADED event, counted in
/// `warmpool_pool_degraded_episodes_total`, so that its recovery (the zone
/// open again, a boot Ready) pairs with it. The start-up mark used to be
/// silent while its recovery was counted: more recoveries than episodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_pool_degraded_at_start_up_counts_an_episode_its_recovery_ends() {
    use warmpool_client::Client;
    let env = env_with_mysqld().await;
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    client
        .create_pool("db.large", "az2", api_pool_spec())
        .await
        .unwrap();
    let large = PoolKey::new("db.large", "az2");
    let manager = running.manager.clone();
    wait_until_async("db.large@az2 filled, no boot in flight", || {
        let manager = manager.clone();
        let large = large.clone();
        async move {
            let status = manager.get_pool(&large).await.unwrap();
            status.count(pool_manager::model::InstanceState::Ready) >= 1
                && status.count(pool_manager::model::InstanceState::Booting) == 0
                && status.count(pool_manager::model::InstanceState::Warming) == 0
        }
    })
    .await;
    drop(manager);
    drop(client);
    stop_daemon(running, stop).await;

    env.sim.close_zone("az2");
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    assert!(client.get_pool("db.large", "az2").await.unwrap().degraded);
    let metrics_url = format!("http://{}/metrics", running.metrics_addr);
    let counter = |metrics: &str, name: &str| -> Option<String> {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("flavor=\"db.large\"")
                    && l.contains("availability_zone=\"az2\"")
            })
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
    };
    // The counters are the events task's, which follows the pool's health
    // (what GetPool reads) a moment later: each scrape below waits for the
    // count it is about, then looks at both.
    let counted = |name: &'static str| {
        let metrics_url = metrics_url.clone();
        async move {
            let (_, _, metrics) = support::http_get(&metrics_url).await;
            counter(&metrics, name).is_some_and(|n| n != "0")
        }
    };
    wait_until_async("an episode counted", || {
        counted("warmpool_pool_degraded_episodes_total")
    })
    .await;
    let (_, _, metrics) = support::http_get(&metrics_url).await;
    assert_eq!(
        counter(&metrics, "warmpool_pool_degraded_episodes_total").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "warmpool_pool_recoveries_total").as_deref(),
        Some("0"),
        "{metrics}"
    );

    // The zone opens again; one more instance wanted makes a boot, whose
    // Ready ends the episode.
    env.sim.reopen_zone("az2");
    client
        .update_pool(
            "db.large",
            "az2",
            warmpool_proto::v1::PoolSpec {
                min_ready: 2,
                max_ready: 2,
                ..Default::default()
            },
            ["min_ready", "max_ready"],
        )
        .await
        .unwrap();
    wait_until_async("db.large@az2 recovered", || {
        let client = client.clone();
        async move { !client.get_pool("db.large", "az2").await.unwrap().degraded }
    })
    .await;
    wait_until_async("the recovery counted", || {
        counted("warmpool_pool_recoveries_total")
    })
    .await;
    let (_, _, metrics) = support::http_get(&metrics_url).await;
    assert_eq!(
        counter(&metrics, "warmpool_pool_recoveries_total").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "warmpool_pool_degraded_episodes_total").as_deref(),
        Some("1"),
        "{metrics}"
    );
    drop(client);
    stop_daemon(running, stop).await;
}

/// Waits (up to a minute) until `done` answers true; panics naming `what`
/// if it never does.
/// Waits until `key`'s pool has `n` Ready instances.
async fn wait_ready(manager: &pool_manager::PoolManager, key: &PoolKey, n: u32) {
    wait_until_async(&format!("{n} Ready instances"), || async {
        manager
            .get_pool(key)
            .await
            .unwrap()
            .count(pool_manager::model::InstanceState::Ready)
            == n
    })
    .await;
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited a minute for {what}");
}

/// A load balancer answering 301 to an endpoint the catalog names by
/// `http://` (sending clients to `https://`): reqwest's default policy
/// followed it and turned the attach POST into a GET of the attachment
/// listing, answered 200, so the driver reported an attach that never
/// happened. Now the redirect is not followed: the call fails, naming
/// where it was sent and what to mend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_call_is_refused_naming_the_location() {
    let (env, cloud, server) = env_with_a_server().await;
    settled(&cloud, &server.id).await;
    let volume = cloud
        .create_volume(&volume_spec("warmpool-r1", 1))
        .await
        .unwrap();
    volume_reaches(&cloud, &volume.id, VolumeStatus::Available).await;
    let path = format!("/v2.1/servers/{}/os-volume_attachments", server.id);
    // The redirect leads back to the same listing, as the https twin of
    // an http endpoint would.
    let location = format!("{}{path}", env.face.service_url(Service::Compute));
    env.face
        .faults()
        .redirect_next(Service::Compute, "POST", &path, 1, 301, &location);
    let err = cloud
        .attach_volume(&server.id, &volume.id)
        .await
        .expect_err("a redirected attach attached nothing");
    assert!(
        matches!(&err, CloudError::Fatal(m) if m.contains(&location) && m.contains("301") && m.contains("clouds.yaml")),
        "{err:?}"
    );
    assert_eq!(
        cloud.get_volume(&volume.id).await.unwrap().status,
        VolumeStatus::Available
    );
}

/// A whole endpoint redirected (http to https): the first request to it is
/// osauth's version discovery, which read the redirect's body as the
/// version document and failed as a transient "error decoding response
/// body", retried forever. It names the redirect as any call's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_version_discovery_is_refused_naming_the_location() {
    let env = env().await;
    let location = format!("{}/v2.1", env.face.service_url(Service::Compute))
        .replacen("http://", "https://", 1);
    env.face
        .faults()
        .redirect_next(Service::Compute, "GET", "/v2.1", u32::MAX, 301, &location);
    let config = env.config("", SMALL_POOL);
    let err = match OpenStackCloud::connect(openstack(&config).settings().unwrap()).await {
        Ok(_) => panic!("a redirected discovery found no version"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, CloudError::Fatal(m) if m.contains(&location) && m.contains("301") && m.contains("clouds.yaml")),
        "{err:?}"
    );
}

/// The same at a service's first call after start-up: Neutron's version
/// discovery redirected fails the call naming the Location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_first_call_to_a_service_is_refused_naming_the_location() {
    let env = env().await;
    let cloud = env.driver().await;
    let location =
        format!("{}/", env.face.service_url(Service::Network)).replacen("http://", "https://", 1);
    env.face
        .faults()
        .redirect_next(Service::Network, "GET", "/", u32::MAX, 301, &location);
    let err = cloud
        .network("tenant-net")
        .await
        .expect_err("a redirected discovery found no network");
    assert!(
        matches!(&err, CloudError::Fatal(m) if m.contains(&location) && m.contains("301")),
        "{err:?}"
    );
}

/// Glance's (and Cinder's) root answers 300 Multiple Choices, its version
/// list: no redirect. A garbled discovery answer there is asked again at
/// the root on the client that follows no redirect, and the 300 it gets
/// is not read as the endpoint redirecting (a Fatal telling the operator
/// to mend a URL that is right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_answer_from_a_root_listing_versions_is_not_read_as_a_redirect() {
    let env = env().await;
    let cloud = env.driver().await;
    env.face.faults().answer_next(
        Service::Image,
        "GET",
        "/",
        1,
        200,
        "not the version document",
    );
    let err = cloud
        .image_names()
        .await
        .expect_err("a garbled discovery lists no image");
    assert!(
        !err.to_string().contains("redirect"),
        "a 300 version list read as a redirect: {err:?}"
    );
}

/// A call the service refuses whatever the token (keystonemiddleware's
/// 401 to a request no access rule of an application credential allows):
/// the first refusal logs in again and finds the fresh token refused too;
/// the calls after it do not each log in again (one login per quota read
/// of every headroom poll, each replacing the session), yet still fail
/// saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_with_a_fresh_token_does_not_log_in_each_time() {
    let env = env().await;
    let cloud = env.driver().await;
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    env.face.faults().answer_next(
        Service::Network,
        "GET",
        &details,
        u32::MAX,
        401,
        r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
    );
    let before = env.face.faults().token_requests();
    for _ in 0..5 {
        let err = cloud.port_quota().await.expect_err("the read is refused");
        assert!(
            matches!(&err, pool_manager::openstack::PortQuotaUnread::Failed(CloudError::Fatal(m))
                if m.contains("HTTP 401") && m.contains("access rules")),
            "{err:?}"
        );
    }
    let logins = env.face.faults().token_requests() - before;
    assert!(logins <= 1, "{logins} logins for 5 refused calls");
    // Other calls go on with the session.
    cloud.list_pool_servers().await.unwrap();
    assert!(env.face.faults().token_requests() - before <= 1);
}

/// Two calls each refused whatever the token: each one's pause outlives the
/// other's login. The pauses were tied to the session they were recorded
/// in, so the login for one call ended the other's pause and every call
/// logged in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_refused_with_a_fresh_token_do_not_log_in_each_time() {
    let env = env().await;
    let cloud = env.driver().await;
    let refused = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
    let details = format!("/v2.0/quotas/{}/details", env.face.project_id());
    env.face
        .faults()
        .answer_next(Service::Network, "GET", &details, u32::MAX, 401, refused);
    env.face.faults().answer_next(
        Service::Compute,
        "GET",
        "/v2.1/limits",
        u32::MAX,
        401,
        refused,
    );
    let before = env.face.faults().token_requests();
    for _ in 0..5 {
        cloud
            .port_quota()
            .await
            .expect_err("the quota read is refused");
        cloud
            .limits()
            .await
            .expect_err("the limits read is refused");
    }
    let logins = env.face.faults().token_requests() - before;
    assert!(
        logins <= 2,
        "{logins} logins for 10 refused calls of 2 kinds"
    );
}

/// warmpool asks Keystone about its own token for its project's id. For a
/// token from an application credential with access rules Keystone
/// answers that only to a caller declaring it understands access rules,
/// and 404 "Failed to validate token" to others, which stopped the daemon
/// at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_id_is_read_under_access_rules() {
    let env = env().await;
    env.face.faults().tokens_have_access_rules(true);
    let cloud = env.driver().await;
    assert_eq!(
        cloud.project_id().await.expect("the project id"),
        env.face.project_id()
    );
}

/// Keystone's own 401 to warmpool asking about its own token is told as
/// Keystone's, not blamed on a service's keystone_authtoken settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystones_401_to_the_project_id_question_is_keystones() {
    let env = env().await;
    let cloud = env.driver().await;
    env.face.faults().answer_next(
        Service::Identity,
        "GET",
        "/v3/auth/tokens",
        1,
        401,
        r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
    );
    let err = cloud.project_id().await.expect_err("Keystone refused");
    assert!(
        matches!(&err, CloudError::Fatal(m) if m.contains("Keystone refused warmpool's own token") && !m.contains("keystone_authtoken")),
        "{err:?}"
    );
    assert_eq!(cloud.project_id().await.unwrap(), env.face.project_id());
}

/// A volumev3_endpoint_override made the no-region check skip Cinder, but
/// the driver looks Cinder up as block-storage first, whose override was
/// not set: block-storage's first region in the catalog (RegionTwo) was
/// used. The override is Cinder's under either type now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volumev3_override_is_cinders_though_block_storage_is_listed() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            other_regions_host: Some("127.0.0.2".into()),
            region_order: BTreeMap::from([
                ("compute", vec!["RegionOne".to_owned()]),
                ("network", vec!["RegionOne".to_owned()]),
                ("image", vec!["RegionOne".to_owned()]),
                ("volumev3", vec!["RegionOne".to_owned()]),
                (
                    "block-storage",
                    vec!["RegionTwo".to_owned(), "RegionOne".to_owned()],
                ),
            ]),
            ..HttpSettings::default()
        },
    )
    .await;
    let text = env.face.clouds_yaml("cloudsim");
    // RegionOne's Cinder (the face's own URL).
    let volume = format!(
        "{}/volume/v3/{}",
        env.face.base_url(),
        env.face.project_id()
    );
    let text = text.replace(
        "    region_name: 'RegionOne'\n",
        &format!("    volumev3_endpoint_override: '{volume}'\n"),
    );
    std::fs::write(&env.clouds_yaml, text).unwrap();
    let config = env.config("", SMALL_POOL);
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    println!("{report}");
    assert!(
        report.passed(),
        "Cinder went to block-storage's first region, RegionTwo:\n{report}"
    );
}

/// A store an older warmpoold wrote with no region named, started with
/// `regions: [RegionOne]` (the only region the catalog has): the servers
/// are where they were, and the start was refused as another cloud's. It
/// goes on, and the store records the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_named_on_a_store_of_no_region_is_recorded_when_alone() {
    use pool_manager::cloud::CloudIdentity;
    use pool_manager::store::{SledStore, Store};
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config("", "");
    let data = config.data_dir.clone();
    store_of_no_region(&env, &data).await;
    let text = env.face.clouds_yaml("cloudsim");
    std::fs::write(
        &env.clouds_yaml,
        text.replace(
            "    region_name: 'RegionOne'\n",
            "    regions: [RegionOne]\n",
        ),
    )
    .unwrap();
    match start_daemon(config).await {
        Ok((running, stop)) => {
            stop_daemon(running, stop).await;
        }
        Err(e) => panic!("refused: {e:#}"),
    }
    // The region is recorded: later starts compare against it.
    let store = tokio::task::spawn_blocking(move || SledStore::open(&data))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.cloud_identity().await.unwrap(),
        Some(CloudIdentity::OpenStack {
            project_id: env.face.project_id().to_owned(),
            region: Some("RegionOne".into()),
            server_tag: "warmpool".into(),
        })
    );
}

/// A store that recorded no region, started with region_name on a catalog
/// whose services are in two regions: none named may have reached either,
/// so the start is refused (exit 78) saying the store recorded no region,
/// how to check where its servers are, and --adopt-cloud, which then
/// takes it; check-cloud's store line says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_no_region_on_two_regions_is_refused_saying_so() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            ..HttpSettings::default()
        },
    )
    .await;
    let mut config = env.config("", "");
    let data = config.data_dir.clone();
    store_of_no_region(&env, &data).await;
    let said = [
        "recorded with no region",
        "openstack --os-region-name RegionOne server list --tags warmpool",
        "--adopt-cloud",
    ];
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let store_line = line(&report, CheckKind::StoreCloud).join("\n");
    assert!(!report.passed(), "{report}");
    for part in said {
        assert!(store_line.contains(part), "{part} not in: {report}");
    }
    let refused = match start_daemon(config.clone()).await {
        Ok((running, stop)) => {
            stop_daemon(running, stop).await;
            panic!("started on a store of no region, on two regions");
        }
        Err(e) => e,
    };
    assert!(warmpool_server::needs_an_operator(&refused), "{refused:#}");
    let message = format!("{refused:#}");
    for part in said {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    assert!(!message.contains("never had"), "{message}");
    config.adopt_cloud = true;
    let (running, stop) = start_daemon(config).await.expect("adopted");
    stop_daemon(running, stop).await;
}

/// A driver logged in with no region_name on a catalog of one region,
/// whose face can add another (`add_region`): the catalog growing a region
/// under a running warmpool.
async fn logged_in_with_no_region() -> (Env, OpenStackCloud) {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings {
            other_regions_host: Some("127.0.0.2".into()),
            ..HttpSettings::default()
        },
    )
    .await;
    env.region_lines("");
    let cloud = env.driver().await;
    cloud.find_ports_by_name("x").await.unwrap();
    (env, cloud)
}

/// A region added to the catalog while warmpool runs with no region_name:
/// the re-login's fresh endpoint lookups could send a service there, so
/// the re-login checks the catalog as the first login did and fails for
/// good naming both regions, the old session kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_login_on_a_catalog_grown_a_region_is_fatal() {
    let (env, cloud) = logged_in_with_no_region().await;
    env.face.faults().add_region("RegionTwo");
    env.face.faults().revoke_all_tokens();
    let logins = env.face.faults().password_logins();
    let err = cloud.find_ports_by_name("x").await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Fatal(m)
            if m.contains("no region_name is set") && m.contains("RegionOne, RegionTwo")),
        "{err:?}"
    );
    assert_eq!(env.face.faults().password_logins(), logins + 1);
}

/// No region named on a catalog with Nova, Neutron and Glance in RegionOne
/// alone and Cinder in RegionTwo alone: no region_name serves them all,
/// so the refusal names none to set and points to the endpoint overrides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_with_every_service_is_not_offered_as_region_name() {
    let one = || vec!["RegionOne".to_owned()];
    let two = || vec!["RegionTwo".to_owned()];
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            other_regions_host: Some("127.0.0.2".into()),
            region_order: BTreeMap::from([
                ("compute", one()),
                ("network", one()),
                ("image", one()),
                ("volumev3", two()),
                ("block-storage", two()),
            ]),
            ..HttpSettings::default()
        },
    )
    .await;
    env.region_lines("");
    let config = env.config("", SMALL_POOL);
    let Err(e) = OpenStackCloud::connect(openstack(&config).settings().unwrap()).await else {
        panic!("connected with no region named on two regions")
    };
    let m = e.to_string();
    for said in [
        "RegionOne (compute, network, image), RegionTwo (block-storage)",
        "no region has them all",
        "block_storage_endpoint_override",
    ] {
        assert!(m.contains(said), "{said} not in: {m}");
    }
    assert!(!m.contains("one of RegionOne, RegionTwo"), "{m}");
}

/// One failed catalog read (a Keystone blip) on a store of no region, the
/// catalog having the services in RegionOne alone: the start reads it
/// again rather than refuse the store for good (exit 78, which systemd
/// does not restart) as if the catalog lacked the services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_blip_does_not_refuse_a_store_of_no_region() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config("", "");
    let data = config.data_dir.clone();
    store_of_no_region(&env, &data).await;
    env.face.faults().answer_next(
        Service::Identity,
        "GET",
        "/v3/auth/catalog",
        1,
        503,
        r#"{"error": {"code": 503, "message": "Service Unavailable", "title": "Service Unavailable"}}"#,
    );
    match start_daemon(config).await {
        Ok((running, stop)) => stop_daemon(running, stop).await,
        Err(e) => panic!(
            "refused, needs_an_operator (exit 78) = {}: {e:#}",
            warmpool_server::needs_an_operator(&e)
        ),
    }
}

/// A Keystone that refuses `GET /v3/auth/catalog` for good (a 403, a
/// gateway's 404), on a store of no region: the start failed as an outage
/// (exit 1, restarted for ever), and `--adopt-cloud`, the way past a
/// region the catalog cannot vouch for, could not get past it. Refused
/// for good, the catalog cannot tell: the store is refused as when it
/// lacks the services (exit 78), and `--adopt-cloud` adopts it unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_refused_for_good_is_a_refusal_adopt_cloud_gets_past() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let config = env.config("", "");
    let data = config.data_dir.clone();
    store_of_no_region(&env, &data).await;
    env.face.faults().answer_next(
        Service::Identity,
        "GET",
        "/v3/auth/catalog",
        1000,
        403,
        r#"{"error": {"code": 403, "message": "You are not authorized to perform the requested action: identity:get_auth_catalog.", "title": "Forbidden"}}"#,
    );
    // check-cloud says so, not that the next start records the region.
    let (report, _) = check_cloud::check(&config, openstack(&config)).await;
    let store_line = line(&report, CheckKind::StoreCloud).join("\n");
    assert!(store_line.contains("could not be read"), "{report}");
    assert!(store_line.contains("--adopt-cloud"), "{report}");
    assert!(!store_line.contains("next start"), "{report}");
    match start_daemon(config.clone()).await {
        Ok((running, stop)) => {
            stop_daemon(running, stop).await;
            panic!("started on a store whose region the catalog could not vouch for");
        }
        Err(e) => assert!(
            warmpool_server::needs_an_operator(&e),
            "not a refusal (exit 78): {e:#}"
        ),
    }
    let mut adopting = config;
    adopting.adopt_cloud = true;
    match start_daemon(adopting).await {
        Ok((running, stop)) => stop_daemon(running, stop).await,
        Err(e) => panic!(
            "--adopt-cloud refused, needs_an_operator (exit 78) = {}: {e:#}",
            warmpool_server::needs_an_operator(&e)
        ),
    }
}

/// The refusal of a re-login on a catalog grown a region is remembered:
/// the next calls refused 401 hear it without posting the password again
/// (each post counts towards Keystone's lockout_failure_attempts when
/// the password is rotated meanwhile) or reading the catalog again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_login_refused_for_a_grown_catalog_is_not_tried_again_at_once() {
    let (env, cloud) = logged_in_with_no_region().await;
    env.face.faults().add_region("RegionTwo");
    env.face.faults().revoke_all_tokens();
    let logins = env.face.faults().password_logins();
    let first = cloud.find_ports_by_name("x").await.unwrap_err();
    for _ in 0..3 {
        let again = cloud.find_ports_by_name("x").await.unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
    }
    assert_eq!(env.face.faults().password_logins(), logins + 1);
}

/// A 429 (counted in the metrics) and the calls refused without being
/// sent during Keystone's pause were each a WARN: one per call, under load
/// or for the whole pause. Throttling is warned of once an hour per
/// service, each 429 at debug; the paused calls are at debug; other
/// errors (a 500) stay warnings. And a login Keystone takes after
/// refusals says so at info.
#[tokio::test]
async fn throttled_and_paused_calls_are_no_warnings_and_keystone_taking_the_login_again_is_said() {
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    // Throttling is warned of once an hour per service, not per call,
    // and not as "an error".
    for _ in 0..3 {
        faults.throttle_next(Service::Compute, 1, Duration::from_secs(1));
        let _ = cloud.read_server(&server.id).await;
    }
    assert_eq!(
        logs.count("WARN", "the cloud throttles warmpool's calls (HTTP 429)"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.count("WARN", "cloud call answered an error"),
        0,
        "{}",
        logs.text()
    );
    faults.clear();
    faults.server_error_next(Service::Compute, 1);
    let _ = cloud.read_server(&server.id).await;
    assert!(
        logs.count("WARN", "cloud call answered a server error") >= 1,
        "a 500 stays a warning: {}",
        logs.text()
    );
    faults.clear();

    let at_pause = logs.text().len();
    faults.change_password("pool", "rotated");
    for _ in 0..5 {
        cloud.get_server(&server.id).await.unwrap_err();
    }
    let during = logs.text()[at_pause..].to_owned();
    assert!(
        !during
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("cloud call failed")),
        "{during}"
    );
    assert!(during.contains("Keystone refused"), "{during}");

    faults.change_password("pool", "poolpass");
    advance_clock(Duration::from_secs(31)).await;
    cloud.get_server(&server.id).await.unwrap();
    assert_eq!(
        logs.count(
            "INFO",
            "Keystone accepts the login again (after 1 refusals)"
        ),
        1,
        "{}",
        logs.text()
    );
    advance_clock(Duration::from_secs(3601)).await;
    faults.throttle_next(Service::Compute, 1, Duration::from_secs(1));
    let _ = cloud.read_server(&server.id).await;
    assert_eq!(
        logs.count("WARN", "the cloud throttles warmpool's calls (HTTP 429)"),
        2,
        "an hour later it is warned of again: {}",
        logs.text()
    );
}

/// The calls refused unsent during Keystone's pause are at debug, and so
/// is the call whose own token request Keystone refused (it hears the
/// pause's error): the one warning of the refusal must then say what
/// Keystone answered and that the password is not posted again for a
/// while, whether osauth's renewal or warmpool's re-login after a 401
/// was refused.
#[tokio::test]
async fn a_refused_renewal_or_re_login_is_warned_of_once_with_keystones_reason_and_the_pause() {
    let refusal_warnings = |logs: &support::Logs| {
        logs.warnings()
            .into_iter()
            .filter(|l| {
                l.contains("Keystone refused the login of")
                    && l.contains("(401)")
                    && l.contains("not tried again for 30s")
            })
            .count()
    };
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    env.face.faults().change_password("pool", "rotated");
    for _ in 0..5 {
        cloud.get_server(&server.id).await.unwrap_err();
    }
    assert_eq!(refusal_warnings(&logs), 1, "renewal: {}", logs.text());

    let (env, cloud, server) = env_with_a_server().await;
    let logs = support::Logs::capture();
    env.face.faults().change_password("pool", "rotated");
    env.face.faults().revoke_all_tokens();
    for _ in 0..5 {
        cloud.get_server(&server.id).await.unwrap_err();
    }
    assert_eq!(refusal_warnings(&logs), 1, "re-login: {}", logs.text());
}

/// An image the cloud does not have is named at CreatePool and UpdatePool
/// beside the images it does (ten at most, as check-cloud names them, and
/// as a missing flavor is), nothing stored or changed. The refusal named
/// the image alone: a misspelt or retired image meant a trip to
/// `openstack image list`, though check-cloud listed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_image_is_named_with_the_images_the_cloud_offers() {
    use warmpool_client::Client;
    let mut images: Vec<String> = ["mysql-8.0", "mysql-8.4"].map(Into::into).into();
    images.extend((1..=10).map(|n| format!("os-{n:02}")));
    let env = env_with(
        SimConfig {
            images,
            // No server is made.
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let named = |m: &str, image: &str| {
        m.contains(&format!("no image named '{image}' is visible to user pool in project service (visible images: mysql-8.0, mysql-8.4, os-01, os-02, os-03, os-04, os-05, os-06, os-07, os-08 and 2 more)"))
    };

    let e = env
        .driver()
        .await
        .check_boot_spec(&PoolKey::new("db.small", "az1"), "mysql-8.9")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if named(m, "mysql-8.9")),
        "{e:?}"
    );

    let (running, stop) = start_daemon(env.config("", "")).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let idle = warmpool_proto::v1::PoolSpec {
        min_ready: 0,
        ..api_pool_spec()
    };
    let refused = support::expect_code(
        client
            .create_pool(
                "db.small",
                "az1",
                warmpool_proto::v1::PoolSpec {
                    image: "mysql-8.9".into(),
                    ..idle.clone()
                },
            )
            .await,
        tonic::Code::FailedPrecondition,
    );
    assert!(named(&refused, "mysql-8.9"), "{refused}");
    support::expect_code(
        client.get_pool("db.small", "az1").await,
        tonic::Code::NotFound,
    );

    client.create_pool("db.small", "az1", idle).await.unwrap();
    let refused = support::expect_code(
        client
            .update_pool(
                "db.small",
                "az1",
                warmpool_proto::v1::PoolSpec {
                    image: "os-11".into(),
                    ..Default::default()
                },
                ["image"],
            )
            .await,
        tonic::Code::FailedPrecondition,
    );
    assert!(named(&refused, "os-11"), "{refused}");
    let pool = client.get_pool("db.small", "az1").await.unwrap();
    assert_eq!(pool.spec.unwrap().image, "mysql-8.0");
    assert!(env.sim.servers().is_empty());
    drop(client);
    stop_daemon(running, stop).await;
}

/// An outage of one service was a WARN per call and per retry (a Cinder
/// answering 500 for a while: dozens a minute), and nothing said when a
/// warned throttling ended. Now its first failure (a 5xx or a timeout)
/// is the one WARN, its further failures are at debug, and its first
/// answer a minute (`QUIET`) after the last failure or 429 of a warned
/// outage or 429 spell is an INFO (an answer sooner ends nothing: a
/// service failing some calls flaps); other refusals
/// (a 409) stay a WARN each: each is a problem of its own.
#[tokio::test]
async fn a_services_outage_is_warned_of_once_and_its_end_is_said() {
    let env = env().await;
    let cloud = env.driver().await;
    let volume = cloud
        .create_volume(&volume_spec("warmpool-o1", 1))
        .await
        .unwrap();
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let outage_warned = "further failures of block-storage (Cinder) are logged at debug";
    let answers_again = "block-storage (Cinder) answers again";
    // Lets the minute of quiet that ends an outage pass.
    let quiet = || async {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(61)).await;
        tokio::time::resume();
    };

    faults.server_error_next(Service::Volume, 5);
    for _ in 0..5 {
        cloud.get_volume(&volume.id).await.unwrap_err();
    }
    // Nova answering meanwhile says nothing of Cinder.
    cloud.read_server(&server.id).await.unwrap();
    assert_eq!(logs.count("WARN", outage_warned), 1, "{}", logs.text());
    assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
    assert_eq!(logs.count("INFO", answers_again), 0, "{}", logs.text());
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(logs.count("INFO", answers_again), 0, "{}", logs.text());
    quiet().await;
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(
        logs.count(
            "INFO",
            "block-storage (Cinder) answers again after 5 failed calls"
        ),
        1,
        "{}",
        logs.text()
    );
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(logs.count("INFO", answers_again), 1, "{}", logs.text());

    // A timeout begins an outage as a 5xx does.
    faults.slow(Service::Volume, Duration::from_secs(10));
    tokio::time::pause();
    for _ in 0..2 {
        let e = cloud.get_volume(&volume.id).await.unwrap_err();
        assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    }
    tokio::time::resume();
    faults.slow(Service::Volume, Duration::ZERO);
    let timed_out = logs.lines_at("WARN");
    assert_eq!(logs.count("WARN", outage_warned), 2, "{}", logs.text());
    assert!(
        timed_out.last().unwrap().contains("timed out"),
        "{timed_out:?}"
    );
    cloud.get_volume(&volume.id).await.unwrap();
    quiet().await;
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(logs.count("INFO", answers_again), 2, "{}", logs.text());

    // A warned 429 spell's end is said too.
    faults.throttle_next(Service::Volume, 2, Duration::from_secs(1));
    for _ in 0..2 {
        let e = cloud.get_volume(&volume.id).await.unwrap_err();
        assert!(matches!(e, CloudError::Throttled { .. }), "{e:?}");
    }
    assert_eq!(
        logs.count("WARN", "the cloud throttles warmpool's calls (HTTP 429)"),
        1,
        "{}",
        logs.text()
    );
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(logs.count("INFO", answers_again), 2, "{}", logs.text());
    quiet().await;
    cloud.get_volume(&volume.id).await.unwrap();
    assert_eq!(
        logs.count(
            "INFO",
            "block-storage (Cinder) answers again after 2 throttled calls"
        ),
        1,
        "{}",
        logs.text()
    );

    // Other errors stay a WARN per call.
    let warnings = logs.warnings().len();
    faults.answer_next(
        Service::Compute,
        "GET",
        &format!("/v2.1/servers/{}", server.id),
        2,
        409,
        r#"{"conflictingRequest": {"code": 409, "message": "Cannot 'get' instance while it is in task_state migrating"}}"#,
    );
    for _ in 0..2 {
        cloud.read_server(&server.id).await.unwrap_err();
    }
    let new: Vec<_> = logs.warnings().split_off(warnings);
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|l| l.contains("status=409")), "{new:?}");
    assert_eq!(logs.count("INFO", "compute (Nova) answers again"), 0);
}

/// An order's network id that cannot be one segment of a URL path (`.`,
/// `..`, one holding a `/`) is refused INVALID_ARGUMENT naming the field,
/// and Neutron is sent nothing. Checked only as a name, `..` went into
/// `GET /v2.0/networks/{id}`, whose URL join drops such a segment: the
/// call became the listing of every network, whose answer is no network,
/// a transient failure retried to the order's deadline, and billing was
/// told UNAVAILABLE, to call again for an order that can never be served.
/// The driver refuses such a segment in any call too (a server id read
/// from anywhere), as an error no retry mends, sending nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_id_that_is_no_url_segment_is_refused_sending_nothing() {
    use cloudsim::http::Service as Api;
    use warmpool_client::Client;
    let env = env().await;
    // No instance is wanted: nothing but the order would call Neutron.
    let idle_pool = r#"
[[pools]]
flavor = "db.small"
availability_zone = "az1"
min_ready = 0
max_ready = 1
image = "mysql-8.0"
"#;
    let (running, stop) = start_daemon(env.config("", idle_pool)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    for (n, network) in [".", "..", "tenant-net/..", "../ports"]
        .into_iter()
        .enumerate()
    {
        let sent = env.face.faults().requests(Api::Network);
        let refused = support::expect_code(
            client
                .allocate(support::allocate_request(
                    &format!("o{n}"),
                    "db.small",
                    "az1",
                    support::new_volume(1, true),
                    network,
                    Duration::from_secs(30),
                ))
                .await,
            tonic::Code::InvalidArgument,
        );
        assert!(refused.contains("network.network_id"), "{refused}");
        assert_eq!(
            env.face.faults().requests(Api::Network),
            sent,
            "{network:?}: {refused}"
        );
    }
    assert!(env.sim.volumes().is_empty() && env.sim.ports().is_empty());
    drop(client);
    stop_daemon(running, stop).await;

    let cloud = env.driver().await;
    for id in ["..", ".", "a/b", ""] {
        let sent = env.face.faults().requests(Api::Compute);
        let e = cloud.get_server(id).await.unwrap_err();
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains("GET /servers/") && m.contains("URL path")),
            "{id:?}: {e:?}"
        );
        assert_eq!(env.face.faults().requests(Api::Compute), sent, "{id:?}");
    }
}

/// A store in `data` that recorded this cloud's project with no region
/// (as builds before region checks did).
async fn store_of_no_region(env: &Env, data: &std::path::Path) {
    use pool_manager::store::{SledStore, Store};
    let unnamed = pool_manager::cloud::CloudIdentity::OpenStack {
        project_id: env.face.project_id().to_owned(),
        region: None,
        server_tag: "warmpool".into(),
    };
    let data = data.to_owned();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&data))
        .await
        .unwrap()
        .unwrap();
    store.record_cloud_identity(&unnamed).await.unwrap();
}

/// A Keystone outage (warmpool's token requests answered 503) was a WARN
/// per call, each call renewing its token failing; and a Keystone hanging
/// during a call's token renewal timed the call out as the called
/// service's outage, Nova then "answering again" though it had never
/// failed. Keystone's token requests are counted as the services' calls
/// are, under "identity": one WARN per outage, its end an INFO, and a
/// call stuck in its token renewal is Keystone's failure, not Nova's.
#[tokio::test]
async fn a_keystone_outage_is_warned_of_once_and_its_end_is_said() {
    // Every call renews a token with ten minutes or less left.
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = env.driver_with(r#"request_timeout = "5s""#).await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let outage_warned = "further failures of identity (Keystone) are logged at debug";
    let answers_again = "identity (Keystone) answers again";
    let quiet = || async {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(61)).await;
        tokio::time::resume();
    };

    faults.answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        5,
        503,
        r#"{"error": {"code": 503, "message": "The service is unavailable.", "title": "Service Unavailable"}}"#,
    );
    for _ in 0..5 {
        cloud.read_server(&server.id).await.unwrap_err();
    }
    assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
    assert_eq!(logs.count("WARN", outage_warned), 1, "{}", logs.text());
    cloud.read_server(&server.id).await.unwrap();
    quiet().await;
    cloud.read_server(&server.id).await.unwrap();
    assert_eq!(
        logs.count(
            "INFO",
            "identity (Keystone) answers again after 5 failed calls"
        ),
        1,
        "{}",
        logs.text()
    );

    // Keystone hanging during the calls' renewals: Keystone's outage.
    faults.slow(Service::Identity, Duration::from_secs(60));
    tokio::time::pause();
    for _ in 0..2 {
        let e = cloud.read_server(&server.id).await.unwrap_err();
        assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
    }
    tokio::time::resume();
    faults.slow(Service::Identity, Duration::ZERO);
    assert_eq!(logs.count("WARN", outage_warned), 2, "{}", logs.text());
    assert_eq!(logs.warnings().len(), 2, "{}", logs.text());
    cloud.read_server(&server.id).await.unwrap();
    quiet().await;
    cloud.read_server(&server.id).await.unwrap();
    assert_eq!(logs.count("INFO", answers_again), 2, "{}", logs.text());
    assert!(
        !logs.text().contains("compute (Nova)"),
        "Nova never failed: {}",
        logs.text()
    );
}

/// Nova's 413 rate limit (with its Retry-After) is throttling, as a 429
/// is: one WARN, not one per call. A service refusing a fresh token (401
/// after warmpool logged in again) is one WARN saying to check the
/// credentials, not a WARN per call (two for the first: the 401 before
/// the login and the one after it). Other refusals stay a WARN each.
#[tokio::test]
async fn a_413_rate_limit_and_a_fresh_tokens_401_are_warned_of_once() {
    let env = env().await;
    let cloud = env.driver().await;
    let server = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let path = format!("/v2.1/servers/{}", server.id);

    faults.answer_next(
        Service::Compute,
        "GET",
        &path,
        3,
        413,
        r#"{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "1"}}"#,
    );
    for _ in 0..3 {
        let e = cloud.read_server(&server.id).await.unwrap_err();
        assert!(matches!(e, CloudError::Throttled { .. }), "{e:?}");
    }
    assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
    assert_eq!(
        logs.count("WARN", "the cloud throttles warmpool's calls"),
        1,
        "{}",
        logs.text()
    );

    let warnings = logs.warnings().len();
    faults.answer_next(
        Service::Compute,
        "GET",
        &path,
        10,
        401,
        r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
    );
    for _ in 0..3 {
        cloud.read_server(&server.id).await.unwrap_err();
    }
    let new: Vec<_> = logs.warnings().split_off(warnings);
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("check the credentials"), "{new:?}");

    // A 413 naming a quota is a refusal, a WARN each.
    faults.clear();
    let warnings = logs.warnings().len();
    faults.answer_next(
        Service::Compute,
        "GET",
        &path,
        2,
        413,
        r#"{"overLimit": {"code": 413, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances", "retryAfter": "0"}}"#,
    );
    for _ in 0..2 {
        cloud.read_server(&server.id).await.unwrap_err();
    }
    assert_eq!(logs.warnings().len() - warnings, 2, "{}", logs.text());
}

/// A degraded pool's recheck of an image Glance lacks (the replenisher's,
/// after every pause while the pool is marked) sends Glance its one lookup.
/// The images on offer are named where a human reads the refusal
/// (CreatePool, UpdatePool), at one listing more; the recheck only counts
/// whether the check passes, and paid a whole Glance listing (paged on a
/// large cloud) each time for a message nobody read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_pools_recheck_of_a_missing_image_lists_no_images() {
    let env = env_with(
        SimConfig {
            listeners: false,
            ..sim_config()
        },
        HttpSettings::default(),
    )
    .await;
    let cloud = env.driver().await;
    let pool = PoolKey::new("db.small", "az1");
    // Glance's version discovery done: only the check's requests count.
    cloud.check_boot_spec(&pool, "mysql-8.0").await.unwrap();
    let glance = || env.face.faults().requests(Service::Image);
    // The lookup's own requests (by name, then among hidden images), as a
    // boot's miss makes them.
    let before = glance();
    assert!(cloud.check_image("mysql-9.9").await.is_err());
    let lookup = glance() - before;

    let before = glance();
    let e = cloud
        .recheck_boot_spec(&pool, "mysql-9.9")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.ends_with("no image named 'mysql-9.9' is visible to user pool in project service")),
        "{e:?}"
    );
    assert_eq!(
        glance() - before,
        lookup,
        "the recheck's Glance requests: {e}"
    );

    // CreatePool's and UpdatePool's check still names them.
    let before = glance();
    let e = cloud.check_boot_spec(&pool, "mysql-9.9").await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound(m) if m.contains("'mysql-9.9' is visible to user pool in project service (visible images: mysql-8.0")),
        "{e:?}"
    );
    assert_eq!(glance() - before, lookup + 1, "one listing more: {e}");
}

/// One call refused a fresh token (an access rule missing for it), made
/// every 2 minutes while Nova answers the others, was a WARN and an INFO
/// each time (the others' answers ended its spell): it is one WARN, and
/// its own answer, once the rule is mended, the INFO. Another server's
/// read is the same call (`GET /servers/{id}`, as an access rule names
/// it): the others here are listings.
#[tokio::test]
async fn a_call_refused_fresh_tokens_every_two_minutes_is_one_warn_and_its_answer_one_info() {
    let env = env().await;
    let cloud = env.driver().await;
    let a = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let path = format!("/v2.1/servers/{}", a.id);
    // The first call's two sends (before and after the re-login), then
    // one a round: the re-login pause outlasts the rounds.
    faults.answer_next(
        Service::Compute,
        "GET",
        &path,
        5,
        401,
        r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
    );
    let wait = |secs: u64| async move {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(secs)).await;
        tokio::time::resume();
    };
    for _ in 0..4 {
        cloud.read_server(&a.id).await.unwrap_err();
        wait(30).await;
        cloud.list_pool_servers().await.unwrap();
        wait(61).await;
        cloud.list_pool_servers().await.unwrap();
        wait(29).await;
    }
    let warns = logs.count("WARN", "refused a token Keystone had just issued");
    let refusals_end = "answers again after 4 calls refusing warmpool's fresh token";
    let infos = logs.count("INFO", "calls refusing warmpool's fresh token");
    assert_eq!((warns, infos), (1, 0), "{}", logs.text());
    cloud.read_server(&a.id).await.unwrap();
    assert_eq!(logs.count("INFO", refusals_end), 1, "{}", logs.text());
    assert_eq!(logs.count("WARN", ""), 1, "{}", logs.text());
}

/// Keystone refuses every token request (503) for the whole test; a
/// call's 401 makes warmpool log in again, which fails. The other calls'
/// cached tokens are no answer of Keystone's: its outage was said to end
/// (an INFO, then a WARN again) at each round.
#[tokio::test]
async fn cached_tokens_do_not_end_a_keystone_outage() {
    let env = env().await;
    let cloud = env.driver().await;
    let a = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let b = cloud
        .create_server(&spec("b", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    faults.answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        100,
        503,
        r#"{"error": {"code": 503, "message": "The service is unavailable.", "title": "Service Unavailable"}}"#,
    );
    faults.answer_next(
        Service::Compute,
        "GET",
        &format!("/v2.1/servers/{}", a.id),
        100,
        401,
        r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
    );
    let wait = |secs: u64| async move {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(secs)).await;
        tokio::time::resume();
    };
    for _ in 0..3 {
        cloud.read_server(&a.id).await.unwrap_err();
        cloud.read_server(&b.id).await.unwrap();
        wait(61).await;
        cloud.read_server(&b.id).await.unwrap();
        wait(60).await;
    }
    let infos = logs.count("INFO", "identity (Keystone) answers again");
    assert_eq!(
        infos,
        0,
        "Keystone answered no token request: {}",
        logs.text()
    );
    let warns = logs.count("WARN", "further failures of identity (Keystone)");
    assert_eq!(warns, 1, "one outage: {}", logs.text());
}

/// A re-login that fails for good (here on a catalog grown a region, no
/// region_name set) was logged at no level: the 401 before it is at debug,
/// and the calls only carry its error. It is one WARN, and the same
/// failure again (each re-login after its pause) is not warned of again.
#[tokio::test]
async fn a_re_login_failing_for_good_is_warned_of_once() {
    let (env, cloud) = logged_in_with_no_region().await;
    let logs = support::Logs::capture();
    env.face.faults().add_region("RegionTwo");
    env.face.faults().revoke_all_tokens();
    let logins = env.face.faults().password_logins();
    for _ in 0..3 {
        cloud.find_ports_by_name("x").await.unwrap_err();
        cloud.find_ports_by_name("x").await.unwrap_err();
        advance_clock(pool_manager::openstack::session::RELOGIN_PAUSE_MAX + Duration::from_secs(1))
            .await;
    }
    assert_eq!(
        env.face.faults().password_logins(),
        logins + 3,
        "tried again after each pause"
    );
    let warns = logs.count("WARN", "logging in again failed");
    assert_eq!(warns, 1, "{}", logs.text());
    assert!(
        logs.text().contains("RegionOne, RegionTwo"),
        "the WARN names the error: {}",
        logs.text()
    );
}

/// A lookup (the image's, a flavor's, a network's) whose token renewal
/// Keystone failed is counted under `service="identity"` alone: the
/// lookup rewrites the error's message to name what it looked up, and the
/// metrics, finding the rewritten error among no side call, counted it
/// under the called service too (a second failed call of ~0 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_failed_at_keystone_is_metered_as_keystones_alone() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(env.driver().await), metrics.clone());
    let calls = |service: &str, status: &str| -> f64 {
        let line = format!(
            "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"{status}\"}}"
        );
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str())?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    env.face.faults().server_error_next(Service::Identity, 10);
    let e = cloud
        .check_boot_image("mysql-8.0", ImageMiss::NameOffered)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("looking up image"), "{e}");
    assert_eq!(
        (calls("identity", "transient"), calls("image", "transient")),
        (1.0, 0.0),
        "(identity, image) failed: {e}"
    );
    env.face.faults().clear();
    cloud
        .check_boot_image("mysql-8.0", ImageMiss::NameOffered)
        .await
        .expect("Keystone answers");
    assert_eq!(calls("image", "ok"), 1.0);
}

/// One call refused a fresh token now and then (one of Nova's API nodes
/// with a broken keystone_authtoken), answered in between: each answer
/// ended its refusals (an INFO) and the next 401 began new ones (a WARN).
/// It is one WARN, hourly, and no INFO until it is answered a minute after
/// its last refusal.
#[tokio::test]
async fn an_intermittently_refused_call_is_one_warn() {
    let env = env().await;
    let cloud = env.driver().await;
    let a = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let path = format!("/v2.1/servers/{}", a.id);
    let body = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
    let wait = |secs: u64| async move {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(secs)).await;
        tokio::time::resume();
    };
    // Before and after the re-login: a fresh token refused.
    faults.answer_next(Service::Compute, "GET", &path, 2, 401, body);
    cloud.read_server(&a.id).await.unwrap_err();
    for _ in 0..3 {
        wait(30).await;
        cloud.read_server(&a.id).await.unwrap();
        wait(30).await;
        faults.answer_next(Service::Compute, "GET", &path, 1, 401, body);
        cloud.read_server(&a.id).await.unwrap_err();
    }
    let warns = logs.count("WARN", "refused a token Keystone had just issued");
    let infos = logs.count("INFO", "calls refusing warmpool's fresh token");
    assert_eq!((warns, infos), (1, 0), "{}", logs.text());
}

/// Keystone's outage ends (a re-login takes, right after the last
/// failure); the calls then run on that token from osauth's cache for its
/// whole lifetime. The answer within the quiet minute only began the end,
/// and cached tokens (no answer of Keystone's) never completed it: the
/// INFO waited for the next renewal, ~50 minutes. A call on that token a
/// quiet minute after the last failure says it.
#[tokio::test]
async fn a_keystone_outage_end_is_said_on_the_token_keystone_issued() {
    let env = env().await;
    let cloud = env.driver().await;
    let a = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let logs = support::Logs::capture();
    let faults = env.face.faults();
    let wait = |secs: u64| async move {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(secs)).await;
        tokio::time::resume();
    };
    faults.answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        1,
        503,
        r#"{"error": {"code": 503, "message": "The service is unavailable.", "title": "Service Unavailable"}}"#,
    );
    faults.answer_next(
        Service::Compute,
        "GET",
        &format!("/v2.1/servers/{}", a.id),
        2,
        401,
        r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
    );
    cloud.read_server(&a.id).await.unwrap_err();
    assert_eq!(
        logs.count("WARN", "further failures of identity (Keystone)"),
        1,
        "{}",
        logs.text()
    );
    // The re-login takes: Keystone answers again.
    cloud.read_server(&a.id).await.unwrap();
    for _ in 0..10 {
        wait(61).await;
        cloud.read_server(&a.id).await.unwrap();
    }
    assert_eq!(
        logs.count("INFO", "identity (Keystone) answers again"),
        1,
        "10 minutes after Keystone answered: {}",
        logs.text()
    );
}

/// A tenant port's security group lookup that fails at Keystone (the
/// password rotated, the token revoked: the re-login is refused) is
/// counted under `service="identity"` alone: the port's driver rewrites
/// the error to name the setting, and the metrics, finding it among no
/// side call, counted it under Neutron too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_group_lookup_refused_at_keystone_is_metered_as_keystones_alone() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let env = env_with_security_groups().await;
    let tenant_net = env.driver().await.network("tenant-net").await.unwrap().id;
    let metrics = Arc::new(Metrics::new());
    let driver = env
        .driver_with("tenant_port_security_groups = [\"db-clients\"]")
        .await;
    // The management network and the project are known: the group is the
    // port's first lookup.
    driver.network("mgmt-net").await.unwrap();
    let cloud = MeteredCloud::new(Arc::new(driver), metrics.clone());
    env.face.faults().change_password("pool", "rotated");
    env.face.faults().revoke_all_tokens();
    let e = cloud
        .create_port(&port_spec("refused", &tenant_net))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("cloud.tenant_port_security_groups"),
        "{e}"
    );
    let counted: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("warmpool_cloud_request_duration_seconds_count{"))
        .map(str::to_owned)
        .collect();
    let failed = |service: &str| {
        counted.iter().any(|l| {
            l.contains(&format!("service=\"{service}\""))
                && !l.contains("status=\"ok\"")
                && !l.ends_with(" 0")
        })
    };
    assert_eq!(
        (failed("identity"), failed("network")),
        (true, false),
        "{e}: {counted:#?}"
    );
}

/// A quota poll whose token renewal Keystone throttles: the daemon's
/// metrics wrapper passes the driver's Keystone side call on to the
/// manager's collector, which tells the gate a Keystone 429 from Nova's
/// (a Nova pause in every zone and a halved window, otherwise).
#[tokio::test]
async fn a_metered_quota_polls_keystone_429_is_passed_on_as_keystones() {
    use warmpool_server::metrics::{MeteredCloud, Metrics};
    let env = env_with(
        sim_config(),
        HttpSettings {
            token_lifetime: Duration::from_secs(120),
            ..HttpSettings::default()
        },
    )
    .await;
    let cloud = MeteredCloud::new(Arc::new(env.driver().await), Arc::new(Metrics::new()));
    env.face
        .faults()
        .throttle_next(Service::Identity, 1, Duration::from_secs(30));
    let (result, side_calls) =
        pool_manager::cloud::collecting_side_calls(cloud.boot_headroom("db.small")).await;
    let error = result.expect_err("Keystone throttled the renewal");
    assert!(
        side_calls.iter().any(
            |side| side.service == pool_manager::events::CloudService::Identity
                && side.error.as_ref() == Some(&error)
        ),
        "passed on: {side_calls:?} ({error})"
    );
}

/// Nova's `fault.message` of an ERROR server (a stack trace, or a broken
/// cloud's anything) is cut as a service's own fault message is: kept
/// whole, it went into the error, a WARN per failed boot, the instance's
/// and the pool's `last_error` in the store, and every pool listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_server_fault_is_cut_by_the_driver() {
    let env = env().await;
    let cloud = env.driver().await;
    env.sim.faults().error_next_boots(1, "F".repeat(64 << 10));
    let created = cloud
        .create_server(&spec("a", "db.small", "az1"))
        .await
        .unwrap();
    let fault = settled(&cloud, &created.id).await.fault.expect("the fault");
    assert!(
        fault.len() < 400 && fault.ends_with(" more characters)"),
        "Server::fault over HTTP is {} bytes",
        fault.len()
    );
}

/// A pool whose boots fail with a huge fault lists with the fault cut,
/// over a real socket: ListPools answered OUT_OF_RANGE to every client
/// once a pool's `last_error` passed 4 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_boots_fail_with_a_huge_fault_lists_it_cut() {
    use warmpool_client::Client;
    let env = env().await;
    env.sim
        .faults()
        .error_next_boots(u64::MAX, "F".repeat(64 << 10));
    let (running, stop) = start_daemon(env.config("", SMALL_POOL)).await.unwrap();
    let client = Client::connect(&format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let mut last_error = String::new();
    for _ in 0..300 {
        last_error = client.list_pools().await.unwrap()[0].last_error.clone();
        if !last_error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last_error.contains("FFF... (") && last_error.len() < 1000,
        "{} bytes: {}",
        last_error.len(),
        &last_error[..last_error.len().min(200)]
    );
    drop(client);
    stop_daemon(running, stop).await;
}
