//! Time to ready of one purchase: a warm hit (claim a Ready instance, attach
//! the tenant's volume and port) against a Trove-style cold create (boot,
//! wait for mysqld, then attach), on an unthrottled and an IOPS-throttled
//! cloud (`base_cloud`: lead time x5 when throttled).
//!
//! Purchases are 10 minutes apart so none waits for another: this measures
//! the purchase path, not the pool's depth.

use crate::demand::{base_cloud, small, AZ};
use crate::memstore::MemStore;
use crate::replay::quantile;
use cloudsim::SimCloud;
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, InstanceState, NetworkRequest, PoolSpec, Target,
    VolumeRequest, VolumeSource,
};
use pool_manager::{AllocateRequest, ManagerSettings, PoolManager};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Warm,
    Cold,
}

#[derive(Clone, Debug)]
pub struct Measured {
    pub path: Path,
    pub throttled: bool,
    /// The tenant's volume exists already (attach only) or is created.
    pub existing_volume: bool,
    pub times: Vec<Duration>,
}

impl Measured {
    /// `None` if nothing was measured.
    pub fn p(&self, q: f64) -> Option<Duration> {
        quantile(&self.times, q)
    }
}

pub fn measure(
    path: Path,
    throttled: bool,
    existing_volume: bool,
    purchases: usize,
    seed: u64,
) -> Measured {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let times = runtime.block_on(async move {
        let mut config = base_cloud(seed);
        config.iops_throttled = throttled;
        let sim = SimCloud::new(config);
        let manager = PoolManager::new(
            Arc::new(MemStore::default()),
            sim.clone(),
            Arc::new(sim.probe()),
            ManagerSettings {
                poll_interval: Duration::from_secs(2),
                reconcile_interval: Duration::from_secs(3600),
                instance_id_seed: Some(seed),
                ..ManagerSettings::default()
            },
        );
        manager.start().await.expect("manager starts");
        let depth = match path {
            Path::Warm => 2,
            Path::Cold => 0,
        };
        manager
            .create_pool(
                small(),
                PoolSpec {
                    min_ready: depth,
                    max_ready: depth.max(1),
                    target: Target::Fixed(depth),
                    image: "mysql-8.0".into(),
                    boot_timeout: Duration::from_secs(3600),
                    max_age: None,
                    paused: false,
                    windows: Vec::new(),
                    iops_limit: None,
                    volume_iops_limit: None,
                },
            )
            .await
            .expect("pool created");
        let mut times = Vec::new();
        for i in 0..purchases {
            // Let the pool refill (a throttled boot takes about 5 minutes).
            loop {
                let status = manager.get_pool(&small()).await.expect("pool");
                if status.count(InstanceState::Ready) >= depth {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let source = if existing_volume {
                VolumeSource::Existing {
                    volume_id: sim.create_volume_for_test("tenant", AZ, 20),
                }
            } else {
                VolumeSource::New {
                    size_gib: 20,
                    volume_type: None,
                }
            };
            let id = format!("t{i}");
            let request = AllocateRequest {
                params: AllocationParams {
                    request_id: id.clone(),
                    tenant_project_id: "tenant".into(),
                    pool: small(),
                    volume: VolumeRequest {
                        source,
                        delete_on_release: true,
                    },
                    network: NetworkRequest {
                        network_id: "tenant-net".into(),
                        subnet_id: None,
                        fixed_ip: None,
                    },
                    labels: BTreeMap::new(),
                },
                empty_pool: EmptyPoolPolicy::ColdBoot,
                timeout: Some(Duration::from_secs(3600)),
            };
            let started = Instant::now();
            let allocation = manager.allocate(request).await.expect("purchase");
            times.push(started.elapsed());
            assert_eq!(allocation.warm_hit, path == Path::Warm, "purchase {i}");
            tokio::time::sleep(Duration::from_secs(60)).await;
            manager.release(&id, None).await.expect("release");
            tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        }
        let _ = manager.shutdown().await;
        times
    });
    Measured {
        path,
        throttled,
        existing_volume,
        times,
    }
}
