//! A `Cloud` that forwards to cloudsim and counts the 429/413 answers, which
//! the simulator's per-method call counts do not separate out.

use async_trait::async_trait;
use cloudsim::SimCloud;
use pool_manager::cloud::{
    BootHeadroom, Cloud, CloudError, CloudIdentity, CloudResult, FlavorIops, ImageMiss, Network,
    NetworkShare, NewPortSpec, NewVolumeSpec, Port, Server, ServerSpec, Volume,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct CountingCloud {
    pub sim: Arc<SimCloud>,
    throttled: AtomicU64,
    servers_created: AtomicU64,
}

impl CountingCloud {
    pub fn new(sim: Arc<SimCloud>) -> Self {
        Self {
            sim,
            throttled: AtomicU64::new(0),
            servers_created: AtomicU64::new(0),
        }
    }

    /// Servers the cloud accepted to boot (pool refills and cold purchases).
    pub fn servers_created(&self) -> u64 {
        self.servers_created.load(Ordering::Relaxed)
    }

    /// 429/413 answers so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Counts a 429 and rounds its Retry-After up to whole seconds, as the
    /// HTTP header carries it (cloudsim's token bucket names the exact
    /// instant of the next token, which no real API does).
    fn count<T>(&self, result: CloudResult<T>) -> CloudResult<T> {
        match result {
            Err(CloudError::Throttled {
                retry_after,
                message,
                unavailable,
            }) => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Err(CloudError::Throttled {
                    retry_after: retry_after
                        .map(|d| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64)),
                    message,
                    unavailable,
                })
            }
            other => other,
        }
    }
}

#[async_trait]
impl Cloud for CountingCloud {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let result = self.count(self.sim.create_server(spec).await);
        if result.is_ok() {
            self.servers_created.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
    async fn read_server(&self, server_id: &str) -> CloudResult<Server> {
        self.count(self.sim.read_server(server_id).await)
    }
    /// Not counted, and never throttled: the simulator tells a server's
    /// ports in its `read_server` call, counted there, so this is no API
    /// call of its own (a real cloud's Neutron listing is: see
    /// docs/benchmarks.md, "API calls").
    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>> {
        self.sim.ports_bound_to(server_id).await
    }
    fn volume_zone_for(&self, server_az: &str) -> String {
        self.sim.volume_zone_for(server_az)
    }
    fn boot_image(&self, pool_image: &str) -> String {
        self.sim.boot_image(pool_image)
    }
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        self.sim.cloud_identity().await
    }
    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        self.sim.services_in_named_region_alone().await
    }
    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        self.count(self.sim.boot_headroom(flavor).await)
    }
    /// Not counted: the simulator answers it from its configuration, as a
    /// driver's cached flavor lookups do (no API call).
    async fn check_boot_placement(&self, pool: &pool_manager::model::PoolKey) -> CloudResult<()> {
        self.sim.check_boot_placement(pool).await
    }
    /// Not counted, as [`Cloud::check_boot_placement`].
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        self.sim.flavor_disk_iops(flavor).await
    }
    /// Not counted, as [`Cloud::check_boot_placement`].
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        self.sim.check_boot_image(image, miss).await
    }
    /// Not counted, as [`Cloud::check_boot_placement`].
    async fn check_volume_zone(&self, pool: &pool_manager::model::PoolKey) -> CloudResult<()> {
        self.sim.check_volume_zone(pool).await
    }
    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        self.count(self.sim.list_pool_servers().await)
    }
    async fn delete_server(&self, server_id: &str) -> CloudResult<()> {
        self.count(self.sim.delete_server(server_id).await)
    }
    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        self.count(self.sim.create_volume(spec).await)
    }
    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume> {
        self.count(self.sim.get_volume(volume_id).await)
    }
    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        self.count(self.sim.find_volumes_by_name(name).await)
    }
    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.count(self.sim.set_volume_metadata(volume_id, metadata).await)
    }
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.count(self.sim.delete_volume(volume_id).await)
    }
    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        self.count(self.sim.attach_volume(server_id, volume_id).await)
    }
    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        self.count(self.sim.detach_volume(server_id, volume_id).await)
    }
    async fn get_network(&self, network_id: &str) -> CloudResult<Network> {
        self.count(self.sim.get_network(network_id).await)
    }
    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>> {
        self.count(self.sim.network_shares(network_id).await)
    }
    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        self.count(self.sim.create_port(spec).await)
    }
    async fn get_port(&self, port_id: &str) -> CloudResult<Port> {
        self.count(self.sim.get_port(port_id).await)
    }
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        self.count(self.sim.find_ports_by_name(name).await)
    }
    async fn delete_port(&self, port_id: &str) -> CloudResult<()> {
        self.count(self.sim.delete_port(port_id).await)
    }
    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.count(self.sim.attach_port(server_id, port_id).await)
    }
    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.count(self.sim.detach_port(server_id, port_id).await)
    }
}
