//! A pool manager over the in-process cloudsim, on tokio's paused clock.
#![allow(dead_code)]

use cloudsim::{SimCloud, SimConfig};
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, InstanceState, NetworkRequest, PoolKey, PoolSpec,
    VolumeRequest, VolumeSource,
};
use pool_manager::store::{SledStore, Store};
use pool_manager::{AllocateRequest, ManagerSettings, PoolManager};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn settings() -> ManagerSettings {
    ManagerSettings {
        poll_interval: Duration::from_secs(1),
        replenish_interval: Duration::from_secs(2),
        // Tests run reconcile passes themselves.
        reconcile_interval: Duration::from_secs(24 * 3600),
        max_concurrent_boots: 16,
        retry_backoff: Duration::from_millis(200),
        ..ManagerSettings::default()
    }
}

pub fn pool() -> PoolKey {
    PoolKey::new("db.small", "az1")
}

pub fn spec(target: u32) -> PoolSpec {
    PoolSpec {
        min_ready: target,
        max_ready: target.max(1) * 4,
        target: Default::default(),
        image: "mysql-8.0".into(),
        boot_timeout: Duration::from_secs(15 * 60),
        max_age: None,
        paused: false,
        windows: Vec::new(),
        iops_limit: None,
        volume_iops_limit: None,
    }
}

/// `target = auto` between 1 and 50.
pub fn auto_spec() -> PoolSpec {
    PoolSpec {
        target: pool_manager::model::Target::Auto,
        max_ready: 50,
        ..spec(1)
    }
}

pub fn sim() -> Arc<SimCloud> {
    SimCloud::new(SimConfig {
        quotas: cloudsim::Quotas {
            max_instances: 1000,
            max_volumes: 1000,
            max_ports: 1000,
        },
        ..SimConfig::deterministic()
    })
}

pub fn manager_on(sim: &Arc<SimCloud>, store: Arc<dyn Store>) -> PoolManager {
    PoolManager::new(store, sim.clone(), Arc::new(sim.probe()), settings())
}

/// A started manager with one pool at `target`, all Ready.
pub async fn started(sim: &Arc<SimCloud>, store: Arc<dyn Store>, target: u32) -> PoolManager {
    let manager = manager_on(sim, store);
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(target)).await.unwrap();
    wait_ready(&manager, target).await;
    manager
}

pub fn temp_store() -> Arc<dyn Store> {
    Arc::new(SledStore::temporary().unwrap())
}

pub fn open_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(dir).unwrap())
}

/// Waits (in simulated time) until the pool has `n` Ready instances.
pub async fn wait_ready(manager: &PoolManager, n: u32) {
    for _ in 0..3600 {
        let status = manager.get_pool(&pool()).await.unwrap();
        if status.count(InstanceState::Ready) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "pool never reached {n} ready: {:?}",
        manager.get_pool(&pool()).await.unwrap()
    );
}

pub fn request(id: &str, volume: VolumeSource, policy: EmptyPoolPolicy) -> AllocateRequest {
    AllocateRequest {
        params: AllocationParams {
            request_id: id.into(),
            tenant_project_id: "tenant-a".into(),
            pool: pool(),
            volume: VolumeRequest {
                source: volume,
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: "tenant-net".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: BTreeMap::from([("order".into(), id.into())]),
        },
        empty_pool: policy,
        timeout: Some(Duration::from_secs(120)),
    }
}

/// `n` purchases (cold-booted on a miss), each released at once, `gap` apart.
pub async fn purchases_every(manager: &PoolManager, n: usize, gap: Duration) {
    for i in 0..n {
        let id = format!("d{i}");
        manager
            .allocate(request(&id, new_volume(), EmptyPoolPolicy::ColdBoot))
            .await
            .unwrap();
        manager.release(&id, Some(true)).await.unwrap();
        tokio::time::sleep(gap).await;
    }
}

pub fn new_volume() -> VolumeSource {
    VolumeSource::New {
        size_gib: 20,
        volume_type: None,
    }
}

/// What must hold whenever the manager is at rest: no instance in two
/// allocations, no server the store does not know, no allocation without its
/// instance, nothing of a rolled-back allocation left in the cloud.
pub async fn assert_consistent(sim: &Arc<SimCloud>, manager: &PoolManager) {
    use pool_manager::model::{resource_name, AllocationState};
    use std::collections::{HashMap, HashSet};

    let instances = manager.list_instances(None).await.unwrap();
    let mut holder: HashMap<&str, &str> = HashMap::new();
    for instance in &instances {
        if let Some(request) = instance.request_id.as_deref() {
            if instance.state.is_tenant_touched() {
                let previous = holder.insert(request, instance.id.as_str());
                assert!(
                    previous.is_none(),
                    "request {request} holds two instances: {instances:#?}"
                );
            }
        }
    }
    let known: HashSet<&str> = instances
        .iter()
        .filter_map(|i| i.server_id.as_deref())
        .collect();
    for server in sim.servers() {
        assert!(
            known.contains(server.server.id.as_str()),
            "server {} is unknown to the store",
            server.server.id
        );
    }
    let live: HashSet<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    for instance in &instances {
        if let Some(server) = &instance.server_id {
            assert!(
                live.contains(server),
                "instance {} names a missing server",
                instance.id
            );
        }
    }
    for allocation in manager.list_allocations().await.unwrap() {
        let request = allocation.params.request_id.as_str();
        let name = resource_name(request);
        match allocation.state {
            AllocationState::Allocated => {
                let instance = holder
                    .get(request)
                    .unwrap_or_else(|| panic!("allocation {request} has no instance"));
                assert_eq!(allocation.instance_id.as_deref(), Some(*instance));
                let server = sim
                    .server(allocation.server_id.as_deref().unwrap())
                    .unwrap();
                assert!(server
                    .server
                    .attached_volumes
                    .contains(allocation.volume_id.as_ref().unwrap()));
                assert!(server
                    .server
                    .attached_ports
                    .contains(allocation.port_id.as_ref().unwrap()));
            }
            AllocationState::Released => {
                assert!(
                    !holder.contains_key(request),
                    "released allocation {request} still holds an instance"
                );
                assert!(
                    sim.ports().iter().all(|p| p.name != name),
                    "port of released {request} left"
                );
            }
            state => panic!("allocation {request} left in {state:?} at rest"),
        }
    }
    // Rolled-back requests leave no port or created volume behind.
    let allocations: HashSet<String> = manager
        .list_allocations()
        .await
        .unwrap()
        .into_iter()
        .map(|a| resource_name(&a.params.request_id))
        .collect();
    for port in sim.ports() {
        assert!(allocations.contains(&port.name), "orphan port {port:?}");
    }
    for volume in sim.volumes() {
        if volume.name.starts_with("warmpool-") {
            assert!(
                allocations.contains(&volume.name),
                "orphan volume {volume:?}"
            );
        }
    }
}
