//! Keeps each pool at its target: one replenisher task per pool counts the
//! supply (booting + warming + ready), starts boots for the deficit, and
//! drains the pool when it is deleted. A boot task drives one instance from
//! `Booting` to `Ready`, or to `Deleting` and gone.

use crate::cloud::{CloudError, ServerSpec, ServerStatus, META_INSTANCE, META_POOL};
use crate::error::{ManagerError, ManagerResult};
use crate::events::{BootOutcome, EventKind};
use crate::manager::Shared;
use crate::model::{Instance, InstanceState, PoolKey, PoolRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// Why a boot did not produce a Ready instance.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cloud refused the boot: {0}")]
    Cloud(#[from] CloudError),
    #[error("server went to ERROR: {0}")]
    ServerError(String),
    #[error("not ready within the boot timeout: {0}")]
    Timeout(String),
    /// Someone else (a drain, the reconciler) took the instance over.
    #[error("instance was taken over while booting")]
    Superseded,
    #[error(transparent)]
    Manager(#[from] Box<ManagerError>),
}

impl From<ManagerError> for BootError {
    fn from(e: ManagerError) -> Self {
        Self::Manager(Box::new(e))
    }
}

/// The outcome to report for a finished boot; `None` when it was taken over.
fn boot_outcome(result: &Result<Instance, BootError>) -> Option<BootOutcome> {
    Some(match result {
        Ok(_) => BootOutcome::Ready,
        Err(BootError::Superseded) => return None,
        Err(BootError::Cloud(CloudError::QuotaExceeded(_))) => BootOutcome::Quota,
        Err(BootError::Cloud(CloudError::Throttled { .. })) => BootOutcome::RateLimited,
        Err(BootError::ServerError(fault)) if fault.contains("NoValidHost") => {
            BootOutcome::NoValidHost
        }
        Err(BootError::Timeout(_)) => BootOutcome::Timeout,
        Err(_) => BootOutcome::Failed,
    })
}

impl Shared {
    pub(crate) fn start_replenisher(self: &Arc<Self>, pool: PoolKey) {
        let shared = self.clone();
        self.spawn(async move {
            if let Err(e) = shared.replenish_loop(&pool).await {
                tracing::error!(%pool, error = %e, "replenisher stopped");
            }
        });
    }

    async fn replenish_loop(self: &Arc<Self>, key: &PoolKey) -> ManagerResult<()> {
        let mut generation = self.generation.subscribe();
        loop {
            let Some(pool) = self.store.get_pool(key).await? else {
                return Ok(());
            };
            if pool.draining {
                if self.drain_step(&pool).await? {
                    tracing::info!(pool = %key, "pool drained and deleted");
                    return Ok(());
                }
            } else if !pool.spec.paused {
                self.replenish_step(&pool).await?;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.replenish_interval) => {}
                _ = generation.changed() => {}
            }
        }
    }

    /// Starts boots for the pool's deficit, within the concurrency limit.
    async fn replenish_step(self: &Arc<Self>, pool: &PoolRecord) -> ManagerResult<()> {
        let instances = self.store.list_instances().await?;
        let supply: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.pool == pool.key && i.counts_as_supply())
            .collect();
        let booting = supply
            .iter()
            .filter(|i| i.state != InstanceState::Ready)
            .count() as u32;
        let deficit = pool
            .spec
            .effective_target()
            .saturating_sub(supply.len() as u32);
        let room = self.settings.max_concurrent_boots.saturating_sub(booting);
        for _ in 0..deficit.min(room) {
            let instance = self.record_new_instance(pool, None).await?;
            let shared = self.clone();
            self.spawn(async move {
                let _ = shared.drive_boot(instance).await;
            });
        }
        Ok(())
    }

    /// Deletes the pool's unclaimed instances; true once none is left and the
    /// pool record is gone.
    async fn drain_step(self: &Arc<Self>, pool: &PoolRecord) -> ManagerResult<bool> {
        let instances = self.store.list_instances().await?;
        let mut left = 0;
        for instance in instances.iter().filter(|i| i.pool == pool.key) {
            if instance.counts_as_supply() {
                self.discard_instance(&instance.id, "pool drained").await?;
            } else if !instance.state.is_tenant_touched() {
                left += 1;
            }
        }
        if left == 0 {
            let _guard = self.pool_lock.lock().await;
            self.store.delete_pool(&pool.key).await?;
            self.store.flush().await?;
            self.changed();
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a new `Booting` instance; the record exists before the server.
    pub(crate) async fn record_new_instance(
        &self,
        pool: &PoolRecord,
        reserved_for: Option<String>,
    ) -> ManagerResult<Instance> {
        let instance = Instance {
            id: uuid::Uuid::new_v4().to_string(),
            pool: pool.key.clone(),
            server_id: None,
            state: InstanceState::Booting,
            created_at: SystemTime::now(),
            ready_at: None,
            attempts: 1,
            last_error: None,
            request_id: reserved_for,
            mysql_addr: None,
        };
        self.store.cas_instance(None, Some(&instance)).await?;
        self.store.flush().await?;
        self.changed();
        Ok(instance)
    }

    /// Drives one instance to `Ready`; on failure discards it and returns why.
    pub(crate) async fn drive_boot(
        self: &Arc<Self>,
        instance: Instance,
    ) -> Result<Instance, BootError> {
        if !self
            .driving
            .lock()
            .expect("driving lock")
            .insert(instance.id.clone())
        {
            return Err(BootError::Superseded);
        }
        let started = Instant::now();
        let result = self.boot_to_ready(&instance).await;
        if let Some(outcome) = boot_outcome(&result) {
            self.emit(
                Some(&instance.pool),
                EventKind::Boot {
                    outcome,
                    lead_time: started.elapsed(),
                },
            );
        }
        self.driving
            .lock()
            .expect("driving lock")
            .remove(&instance.id);
        match result {
            Ok(ready) => Ok(ready),
            Err(BootError::Superseded) => Err(BootError::Superseded),
            Err(e) => {
                tracing::warn!(pool = %instance.pool, instance = %instance.id, error = %e, "boot failed");
                let message = e.to_string();
                let _ = self
                    .update_pool(&instance.pool, |p| p.last_error = Some(message.clone()))
                    .await;
                if let Err(discard) = self.discard_instance(&instance.id, &message).await {
                    tracing::warn!(instance = %instance.id, error = %discard, "discard failed; reconciler will retry");
                }
                Err(e)
            }
        }
    }

    async fn boot_to_ready(&self, instance: &Instance) -> Result<Instance, BootError> {
        let pool = self.pool(&instance.pool).await?;
        let deadline = Instant::now() + pool.spec.boot_timeout;
        let mut instance = instance.clone();

        if instance.server_id.is_none() {
            let spec = ServerSpec {
                name: format!("warmpool-{}", instance.id),
                pool: instance.pool.clone(),
                image: pool.spec.image.clone(),
                metadata: BTreeMap::from([
                    (META_POOL.to_string(), instance.pool.to_string()),
                    (META_INSTANCE.to_string(), instance.id.clone()),
                ]),
            };
            let server = self
                .retry(deadline, || self.cloud.create_server(&spec))
                .await?;
            let recorded = self
                .update_instance(&instance.id, |current| {
                    (current.state == InstanceState::Booting).then(|| {
                        let mut next = current.clone();
                        next.server_id = Some(server.id.clone());
                        Some(next)
                    })
                })
                .await?;
            match recorded {
                Some(next) => instance = next,
                None => {
                    // Drained while the create was in flight: the server is ours to delete.
                    let _ = self.cloud.delete_server(&server.id).await;
                    return Err(BootError::Superseded);
                }
            }
        }
        let server_id = instance.server_id.clone().expect("set above");

        if instance.state == InstanceState::Booting {
            let mysql_addr = loop {
                let server = self
                    .retry(deadline, || self.cloud.get_server(&server_id))
                    .await?;
                match server.status {
                    ServerStatus::Active => break server.mysql_addr,
                    ServerStatus::Error => {
                        return Err(BootError::ServerError(
                            server.fault.unwrap_or_else(|| "no fault given".into()),
                        ))
                    }
                    ServerStatus::Deleted => {
                        return Err(BootError::ServerError("server was deleted".into()))
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    return Err(BootError::Timeout("server never became ACTIVE".into()));
                }
                tokio::time::sleep(self.settings.poll_interval).await;
            };
            instance = self
                .transition(&instance, InstanceState::Booting, |next| {
                    next.state = InstanceState::Warming;
                    next.mysql_addr = mysql_addr;
                })
                .await?;
        }

        let Some(addr) = instance.mysql_addr else {
            return Err(BootError::ServerError(
                "server has no address to probe".into(),
            ));
        };
        let mut last_probe_error;
        loop {
            match self.probe.probe(addr).await {
                Ok(version) => {
                    tracing::debug!(instance = %instance.id, %version, "mysqld answered");
                    break;
                }
                Err(e) => last_probe_error = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(BootError::Timeout(format!(
                    "mysqld never answered: {last_probe_error}"
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        let ready = self
            .transition(&instance, InstanceState::Warming, |next| {
                next.state = InstanceState::Ready;
                next.ready_at = Some(SystemTime::now());
            })
            .await?;
        tracing::info!(pool = %ready.pool, instance = %ready.id, "instance ready");
        Ok(ready)
    }

    /// Moves the instance on from `from`, or reports that someone else moved it.
    async fn transition(
        &self,
        instance: &Instance,
        from: InstanceState,
        change: impl Fn(&mut Instance),
    ) -> Result<Instance, BootError> {
        self.update_instance(&instance.id, |current| {
            (current.state == from).then(|| {
                let mut next = current.clone();
                change(&mut next);
                Some(next)
            })
        })
        .await?
        .ok_or(BootError::Superseded)
    }

    /// Takes an instance out of service for good: `Deleting` is recorded
    /// first, then the server is deleted, then the record goes.
    pub(crate) async fn discard_instance(&self, id: &str, reason: &str) -> ManagerResult<()> {
        let deleting = self
            .update_instance(id, |current| {
                (current.state != InstanceState::Deleting).then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Deleting;
                    next.last_error = Some(reason.to_string());
                    Some(next)
                })
            })
            .await?;
        let Some(deleting) = deleting.or(self.store.get_instance(id).await?) else {
            return Ok(());
        };
        self.store.flush().await?;
        self.finish_delete(&deleting).await
    }

    /// Deletes the server of a `Deleting` (or `Releasing`) instance and its record.
    pub(crate) async fn finish_delete(&self, instance: &Instance) -> ManagerResult<()> {
        if let Some(server_id) = &instance.server_id {
            let deadline = Instant::now() + self.settings.poll_interval * 30;
            self.retry(deadline, || self.cloud.delete_server(server_id))
                .await?;
        }
        self.update_instance(&instance.id, |_| Some(None)).await?;
        Ok(())
    }
}
