//! The in-process face: `pool_manager::cloud::Cloud` for [`SimCloud`].
//!
//! Each call passes the API gate (counts, faults, rate limit), sleeps where
//! the real API is synchronous (port create), then applies one model
//! operation under the lock and answers (or, under
//! `Faults::hang_after_calls_take_effect`, hangs without answering). Asynchronous work (boot, attach, delete) only
//! records completion times; `get_*` calls observe it.

use crate::mysql;
use crate::sim::SimCloud;
use async_trait::async_trait;
use pool_manager::cloud::{
    BootHeadroom, Cloud, CloudError, CloudIdentity, CloudResult, FlavorIops, ImageMiss, Network,
    NetworkShare, NewPortSpec, NewVolumeSpec, Port, Server, ServerSpec, Volume,
};
use pool_manager::model::PoolKey;
use std::collections::BTreeMap;
use tokio::time::Instant;

#[async_trait]
impl Cloud for SimCloud {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let call = self.admit("create_server").await?;
        // Reserve the port before taking the lock: binding is a syscall.
        let socket = self.reserve_socket();
        let addr = match &socket {
            Some(s) => Some(
                s.local_addr()
                    .map_err(|e| CloudError::Transient(format!("simulated mysqld port: {e}")))?,
            ),
            None => None,
        };
        let now = Instant::now();
        let created = {
            let mut model = self.inner.lock_at(now);
            let created = model.create_server(spec, now, addr);
            if let (Ok((server, ready_at)), Some(socket)) = (&created, socket) {
                let guard =
                    mysql::spawn_listener(socket, *ready_at, self.inner.mysql_version.clone());
                model.set_listener(&server.id, guard);
            }
            created
        };
        call.answer(created.map(|(server, _)| server)).await
    }

    /// The simulated cloud has one set of zones for servers and volumes.
    fn volume_zone_for(&self, server_az: &str) -> String {
        server_az.to_owned()
    }

    fn boot_image(&self, pool_image: &str) -> String {
        pool_image.to_owned()
    }

    /// Behind the HTTP face the OpenStack driver tells its own: a
    /// project's.
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        Ok(CloudIdentity::Embedded)
    }

    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        Ok(false)
    }

    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        let call = self.admit("boot_headroom").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).boot_headroom(flavor);
        call.answer(answer).await
    }

    /// A look at the configuration, as a driver's cached lookups are: not
    /// an API call (no rate limit, no fault, not counted).
    async fn check_boot_placement(&self, pool: &PoolKey) -> CloudResult<()> {
        self.lock().check_boot_placement(pool)
    }

    /// A look at the configuration, as [`Cloud::check_boot_placement`]
    /// (the driver's is cached with the flavor): no API call.
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        self.lock().flavor_disk_iops(flavor)
    }

    /// A look at the configuration, as [`Cloud::check_boot_placement`]:
    /// a missing image is named beside those on offer either way, the
    /// model having them in hand.
    async fn check_boot_image(&self, image: &str, _: ImageMiss) -> CloudResult<()> {
        self.lock().check_boot_image(image)
    }

    /// A look at the configuration, as [`Cloud::check_boot_placement`].
    async fn check_volume_zone(&self, pool: &PoolKey) -> CloudResult<()> {
        let zone = self.volume_zone_for(&pool.availability_zone);
        self.lock().check_volume_zone(&zone)
    }

    /// With its ports: the simulated cloud tells them in one call, as it
    /// counts, limits and faults it.
    async fn read_server(&self, server_id: &str) -> CloudResult<Server> {
        let call = self.admit("get_server").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).get_server(server_id, now);
        call.answer(answer).await
    }

    /// What [`Cloud::read_server`] told, looked at again: no API call (no
    /// rate limit, no fault, not counted), as that one call answers both.
    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>> {
        let now = Instant::now();
        let server = self.inner.lock_at(now).get_server(server_id, now)?;
        Ok(server.attached_ports)
    }

    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        let call = self.admit("list_pool_servers").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).list_pool_servers(now);
        call.answer(Ok(answer)).await
    }

    async fn delete_server(&self, server_id: &str) -> CloudResult<()> {
        let call = self.admit("delete_server").await?;
        let now = Instant::now();
        self.inner.lock_at(now).delete_server(server_id, now);
        call.answer(Ok(())).await
    }

    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        let call = self.admit("create_volume").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).create_volume(spec, now);
        call.answer(answer).await
    }

    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume> {
        let call = self.admit("get_volume").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).get_volume(volume_id, now);
        call.answer(answer).await
    }

    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        let call = self.admit("find_volumes_by_name").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).find_volumes_by_name(name, now);
        call.answer(Ok(answer)).await
    }

    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        let call = self.admit("set_volume_metadata").await?;
        let now = Instant::now();
        let answer = self
            .inner
            .lock_at(now)
            .set_volume_metadata(volume_id, metadata, now);
        call.answer(answer).await
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        let call = self.admit("delete_volume").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).delete_volume(volume_id, now);
        call.answer(answer).await
    }

    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        let call = self.admit("attach_volume").await?;
        let now = Instant::now();
        let answer = self
            .inner
            .lock_at(now)
            .attach_volume(server_id, volume_id, now);
        call.answer(answer).await
    }

    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        let call = self.admit("detach_volume").await?;
        let now = Instant::now();
        let answer = self
            .inner
            .lock_at(now)
            .detach_volume(server_id, volume_id, now);
        call.answer(answer).await
    }

    /// A look at the configuration, as [`Cloud::check_boot_placement`]:
    /// the networks are the configuration's, and a purchase's look at its
    /// network takes none of the faults a test injects for its calls.
    async fn get_network(&self, network_id: &str) -> CloudResult<Network> {
        self.lock().network(network_id)
    }

    /// A look at the configuration, as [`Cloud::get_network`].
    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>> {
        self.lock().network_shares(network_id)
    }

    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        let call = self.admit("create_port").await?;
        let base = self.inner.lock_at(Instant::now()).cfg.latencies.port_create;
        self.take(base).await;
        let now = Instant::now();
        let answer = {
            let mut model = self.inner.lock_at(now);
            // The driver's reading of Neutron's 403 for a port create.
            match model.port_create_refusal(spec) {
                Some(refused) => Err(CloudError::PolicyRefused(refused)),
                None => model.create_port(spec, now),
            }
        };
        call.answer(answer).await
    }

    async fn get_port(&self, port_id: &str) -> CloudResult<Port> {
        let call = self.admit("get_port").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).get_port(port_id, now);
        call.answer(answer).await
    }

    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        let call = self.admit("find_ports_by_name").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).find_ports_by_name(name, now);
        call.answer(Ok(answer)).await
    }

    async fn delete_port(&self, port_id: &str) -> CloudResult<()> {
        let call = self.admit("delete_port").await?;
        let now = Instant::now();
        let answer = {
            let mut model = self.inner.lock_at(now);
            // The driver's reading of Neutron's 403.
            match model.port_delete_refusal(port_id, now) {
                Some(refused) => Err(CloudError::Fatal(refused)),
                None => {
                    model.delete_port(port_id);
                    Ok(())
                }
            }
        };
        call.answer(answer).await
    }

    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        let call = self.admit("attach_port").await?;
        let now = Instant::now();
        let answer = self
            .inner
            .lock_at(now)
            .attach_port(server_id, port_id, now)
            .map(|_done| ());
        call.answer(answer).await
    }

    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        let call = self.admit("detach_port").await?;
        let now = Instant::now();
        let answer = self.inner.lock_at(now).detach_port(server_id, port_id, now);
        call.answer(answer).await
    }
}
