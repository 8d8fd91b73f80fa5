//! [`MeteredCloud`]: the daemon's cloud, timed. Every call's latency goes to
//! `warmpool_cloud_request_duration_seconds{service, status}`; throttled
//! answers and the Retry-After they carry are counted too. A call that
//! asks two services and reports each part (a headroom poll's port-quota
//! read, `BootHeadroom::calls`; a server read's management network lookup,
//! a `SideCall`) is counted as one call of each. A call that failed at
//! Keystone (its token renewal, or the login again after a 401: a
//! `SideCall` of `CloudService::Identity`) is counted as Keystone's, under
//! `identity`, and not under its service.

use super::Metrics;
use async_trait::async_trait;
use pool_manager::cloud::{
    collecting_side_calls, failed_at_keystone, BootHeadroom, Cloud, CloudIdentity, CloudResult,
    FlavorIops, ImageMiss, Network, NetworkShare, NewPortSpec, NewVolumeSpec, Port, Server,
    ServerSpec, SideCall, Volume,
};
use pool_manager::events::CloudService;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Nova: servers and their volume and interface attachments.
const COMPUTE: &str = "compute";
/// Cinder: volumes.
const VOLUME: &str = "volume";
/// Neutron: ports.
const NETWORK: &str = "network";
/// Glance: images.
const IMAGE: &str = "image";
/// Keystone: a token request inside another service's call that failed.
const IDENTITY: &str = "identity";
/// The `service` label values.
pub(super) const SERVICES: [&str; 5] = [COMPUTE, VOLUME, NETWORK, IMAGE, IDENTITY];

/// Wraps a [`Cloud`], recording each call in [`Metrics`].
pub struct MeteredCloud {
    inner: Arc<dyn Cloud>,
    metrics: Arc<Metrics>,
}

impl MeteredCloud {
    pub fn new(inner: Arc<dyn Cloud>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// `call`, counted under `service`; the side calls it made to other
    /// services under theirs, with their own outcome, and not in its time.
    async fn timed<T>(
        &self,
        service: &'static str,
        call: impl Future<Output = CloudResult<T>>,
    ) -> CloudResult<T> {
        let started = Instant::now();
        let (result, side_calls) = collecting_side_calls(call).await;
        let took = self.observe_side_calls(&side_calls, started.elapsed());
        if !failed_at_keystone(&side_calls, result.as_ref().err()) {
            self.metrics
                .observe_cloud(service, result.as_ref().err(), took);
        }
        result
    }

    /// Counts `side_calls` under their services, but for those failed at
    /// Keystone, counted as Keystone's alone; what is left of `took`, the
    /// whole call's time, without theirs.
    fn observe_side_calls(&self, side_calls: &[SideCall], mut took: Duration) -> Duration {
        for side in side_calls {
            let keystones = side.service == CloudService::Identity;
            // A lookup that failed at Keystone holds Keystone's time.
            let within = keystones
                && side_calls.iter().any(|other| {
                    other.service != CloudService::Identity && other.error == side.error
                });
            if !within {
                took = took.saturating_sub(side.took);
            }
            if keystones || !failed_at_keystone(side_calls, side.error.as_ref()) {
                self.metrics
                    .observe_cloud(side.service.as_str(), side.error.as_ref(), side.took);
            }
        }
        took
    }
}

#[async_trait]
impl Cloud for MeteredCloud {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        self.timed(COMPUTE, self.inner.create_server(spec)).await
    }
    async fn read_server(&self, server_id: &str) -> CloudResult<Server> {
        self.timed(COMPUTE, self.inner.read_server(server_id)).await
    }
    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>> {
        self.timed(NETWORK, self.inner.ports_bound_to(server_id))
            .await
    }
    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        self.timed(COMPUTE, self.inner.list_pool_servers()).await
    }
    async fn delete_server(&self, server_id: &str) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.delete_server(server_id))
            .await
    }

    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        self.timed(VOLUME, self.inner.create_volume(spec)).await
    }
    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume> {
        self.timed(VOLUME, self.inner.get_volume(volume_id)).await
    }
    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        self.timed(VOLUME, self.inner.find_volumes_by_name(name))
            .await
    }
    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.timed(VOLUME, self.inner.set_volume_metadata(volume_id, metadata))
            .await
    }
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.timed(VOLUME, self.inner.delete_volume(volume_id))
            .await
    }
    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.attach_volume(server_id, volume_id))
            .await
    }
    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.detach_volume(server_id, volume_id))
            .await
    }

    async fn get_network(&self, network_id: &str) -> CloudResult<Network> {
        self.timed(NETWORK, self.inner.get_network(network_id))
            .await
    }
    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>> {
        self.timed(NETWORK, self.inner.network_shares(network_id))
            .await
    }
    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        self.timed(NETWORK, self.inner.create_port(spec)).await
    }
    async fn get_port(&self, port_id: &str) -> CloudResult<Port> {
        self.timed(NETWORK, self.inner.get_port(port_id)).await
    }
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        self.timed(NETWORK, self.inner.find_ports_by_name(name))
            .await
    }
    async fn delete_port(&self, port_id: &str) -> CloudResult<()> {
        self.timed(NETWORK, self.inner.delete_port(port_id)).await
    }
    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.attach_port(server_id, port_id))
            .await
    }
    fn volume_zone_for(&self, server_az: &str) -> String {
        self.inner.volume_zone_for(server_az)
    }
    fn boot_image(&self, pool_image: &str) -> String {
        self.inner.boot_image(pool_image)
    }
    /// Not timed: Keystone's answer, asked once.
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        self.inner.cloud_identity().await
    }
    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        self.inner.services_in_named_region_alone().await
    }
    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        let started = Instant::now();
        let (result, side_calls) = collecting_side_calls(self.inner.boot_headroom(flavor)).await;
        let took = self.observe_side_calls(&side_calls, started.elapsed());
        // The port-quota read beside the limits is Neutron's call, with an
        // outcome of its own (the poll does without it): counted as such,
        // and not in the time of Nova's.
        match result.as_ref().ok().and_then(|h| h.calls.as_ref()) {
            Some(calls) => {
                self.metrics.observe_cloud(COMPUTE, None, calls.compute);
                if !failed_at_keystone(&side_calls, calls.network_error.as_ref()) {
                    self.metrics.observe_cloud(
                        NETWORK,
                        calls.network_error.as_ref(),
                        calls.network,
                    );
                }
            }
            None if failed_at_keystone(&side_calls, result.as_ref().err()) => {}
            None => {
                self.metrics
                    .observe_cloud(COMPUTE, result.as_ref().err(), took);
            }
        }
        result
    }
    async fn check_boot_placement(&self, pool: &pool_manager::model::PoolKey) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.check_boot_placement(pool))
            .await
    }
    /// Counted as the calls the driver sends for it (its side calls: a
    /// flavor listing, Nova's extra specs), not as one of its own: the
    /// replenisher's read every 10 minutes per flavor is mostly answered
    /// from the driver's cache, in ~0 ms, which would pull compute's
    /// latency down and its count up. The embedded cloud sends none.
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        let (result, side_calls) = collecting_side_calls(self.inner.flavor_disk_iops(flavor)).await;
        self.observe_side_calls(&side_calls, Duration::ZERO);
        result
    }
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        self.timed(IMAGE, self.inner.check_boot_image(image, miss))
            .await
    }
    async fn check_volume_zone(&self, pool: &pool_manager::model::PoolKey) -> CloudResult<()> {
        self.timed(VOLUME, self.inner.check_volume_zone(pool)).await
    }
    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.timed(COMPUTE, self.inner.detach_port(server_id, port_id))
            .await
    }
}
