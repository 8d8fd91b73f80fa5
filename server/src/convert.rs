//! Conversions between warmpool.v1 messages and pool-manager's model, and the
//! one place where core errors become gRPC statuses.

// tonic::Status is large by design and these run once per call, not in a hot loop.
#![allow(clippy::result_large_err)]

use pool_manager::model::{
    Allocation, AllocationParams, AllocationState, EmptyPoolPolicy, Instance, InstanceState,
    NetworkRequest, PoolKey, PoolSpec, Target, VolumeRequest, VolumeSource,
};
use pool_manager::{AllocateRequest, ManagerError, PoolStatus};
use std::time::{Duration, SystemTime};
use tonic::{Code, Status};
use warmpool_proto::v1 as api;

/// Maps a core error to the status a caller can act on.
pub fn status(error: ManagerError) -> Status {
    use pool_manager::cloud::CloudError;
    let message = error.to_string();
    let code = match &error {
        ManagerError::InvalidArgument { .. } => Code::InvalidArgument,
        ManagerError::PoolNotFound(_) | ManagerError::AllocationNotFound(_) => Code::NotFound,
        ManagerError::PoolExists(_) => Code::AlreadyExists,
        ManagerError::FailedPrecondition(_) => Code::FailedPrecondition,
        ManagerError::ResourceExhausted(_) => Code::ResourceExhausted,
        ManagerError::Aborted(_) => Code::Aborted,
        // Quota is a resource the operator must raise; the rest is the cloud failing us.
        ManagerError::Cloud(CloudError::QuotaExceeded(_)) => Code::ResourceExhausted,
        ManagerError::Cloud(CloudError::Conflict(_)) => Code::FailedPrecondition,
        ManagerError::Cloud(_) => Code::Unavailable,
        ManagerError::Store(_) => Code::Internal,
        ManagerError::ShuttingDown => Code::Unavailable,
    };
    if code == Code::Internal {
        tracing::error!(error = %message, "internal error");
    }
    Status::new(code, message)
}

fn invalid(field: &str, message: &str) -> Status {
    Status::invalid_argument(format!("invalid {field}: {message}"))
}

fn optional(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

pub fn duration_from_proto(field: &str, d: &prost_types::Duration) -> Result<Duration, Status> {
    Duration::try_from(*d).map_err(|_| invalid(field, "must be a non-negative duration"))
}

pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub fn pool_key(flavor: &str, availability_zone: &str) -> Result<PoolKey, Status> {
    if flavor.is_empty() {
        return Err(invalid("flavor", "is required"));
    }
    if availability_zone.is_empty() {
        return Err(invalid("availability_zone", "is required"));
    }
    Ok(PoolKey::new(flavor, availability_zone))
}

pub fn allocate_request(req: api::AllocateRequest) -> Result<AllocateRequest, Status> {
    let volume = req.volume.ok_or_else(|| invalid("volume", "is required"))?;
    let source = match volume.source {
        Some(api::volume_spec::Source::ExistingVolumeId(id)) => {
            VolumeSource::Existing { volume_id: id }
        }
        Some(api::volume_spec::Source::NewVolume(new)) => VolumeSource::New {
            size_gib: new.size_gib,
            volume_type: optional(&new.volume_type),
        },
        None => return Err(invalid("volume", "set existing_volume_id or new_volume")),
    };
    let network = req
        .network
        .ok_or_else(|| invalid("network", "is required"))?;
    let empty_pool = match api::EmptyPoolPolicy::try_from(req.empty_pool_policy) {
        Ok(api::EmptyPoolPolicy::Unspecified | api::EmptyPoolPolicy::Wait) => EmptyPoolPolicy::Wait,
        Ok(api::EmptyPoolPolicy::FailFast) => EmptyPoolPolicy::FailFast,
        Ok(api::EmptyPoolPolicy::ColdBoot) => EmptyPoolPolicy::ColdBoot,
        Err(_) => {
            return Err(invalid(
                "empty_pool_policy",
                &format!("unknown value {}", req.empty_pool_policy),
            ))
        }
    };
    let timeout = req
        .timeout
        .as_ref()
        .map(|d| duration_from_proto("timeout", d))
        .transpose()?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(invalid("timeout", "must be positive"));
    }
    Ok(AllocateRequest {
        params: AllocationParams {
            request_id: req.request_id,
            tenant_project_id: req.tenant_project_id,
            pool: PoolKey::new(req.flavor, req.availability_zone),
            volume: VolumeRequest {
                source,
                delete_on_release: volume.delete_on_release,
            },
            network: NetworkRequest {
                network_id: network.network_id,
                subnet_id: optional(&network.subnet_id),
                fixed_ip: optional(&network.fixed_ip),
            },
            labels: req.labels.into_iter().collect(),
        },
        empty_pool,
        timeout,
    })
}

pub fn allocation(a: Allocation) -> api::Allocation {
    let state = match a.state {
        AllocationState::Allocating => api::AllocationState::Allocating,
        AllocationState::Allocated => api::AllocationState::Allocated,
        AllocationState::Releasing => api::AllocationState::Releasing,
        AllocationState::Released => api::AllocationState::Released,
    };
    let t = &a.timings;
    api::Allocation {
        request_id: a.params.request_id,
        tenant_project_id: a.params.tenant_project_id,
        flavor: a.params.pool.flavor,
        availability_zone: a.params.pool.availability_zone,
        state: state as i32,
        warm_hit: a.warm_hit,
        instance_id: a.instance_id.unwrap_or_default(),
        server_id: a.server_id.unwrap_or_default(),
        volume_id: a.volume_id.unwrap_or_default(),
        port_id: a.port_id.unwrap_or_default(),
        ip_address: a.ip_address.unwrap_or_default(),
        timings: Some(api::StepTimings {
            claim: Some(duration_to_proto(t.claim)),
            volume: Some(duration_to_proto(t.volume)),
            port: Some(duration_to_proto(t.port)),
            verify: Some(duration_to_proto(t.verify)),
            total: Some(duration_to_proto(t.total)),
            wait: Some(duration_to_proto(t.wait)),
        }),
        created_at: Some(timestamp(a.created_at)),
        labels: a.params.labels.into_iter().collect(),
    }
}

pub fn pool_spec_to_proto(spec: &PoolSpec) -> api::PoolSpec {
    api::PoolSpec {
        min_ready: spec.min_ready,
        max_ready: spec.max_ready,
        // warmpool.v1 has no field for `auto` yet: an auto pool shows 0
        // ("min_ready"); its computed target is `Pool.effective_target`.
        target: match spec.target {
            Target::Fixed(n) => n,
            Target::Auto => 0,
        },
        image: spec.image.clone(),
        boot_timeout: Some(duration_to_proto(spec.boot_timeout)),
        max_age: spec.max_age.map(duration_to_proto),
        paused: spec.paused,
    }
}

/// Default boot timeout for pools created through the API without one.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub fn pool_spec_from_proto(spec: api::PoolSpec) -> Result<PoolSpec, Status> {
    Ok(PoolSpec {
        min_ready: spec.min_ready,
        max_ready: spec.max_ready,
        target: Target::Fixed(spec.target),
        image: spec.image,
        boot_timeout: spec
            .boot_timeout
            .as_ref()
            .map(|d| duration_from_proto("spec.boot_timeout", d))
            .transpose()?
            .unwrap_or(DEFAULT_BOOT_TIMEOUT),
        max_age: spec
            .max_age
            .as_ref()
            .map(|d| duration_from_proto("spec.max_age", d))
            .transpose()?
            .filter(|d| !d.is_zero()),
        paused: spec.paused,
    })
}

/// Applies the fields named in `paths` from `from` to `spec`.
pub fn apply_mask(spec: &mut PoolSpec, from: &PoolSpec, paths: &[String]) -> Result<(), Status> {
    if paths.is_empty() {
        return Err(invalid("update_mask", "name at least one PoolSpec field"));
    }
    for path in paths {
        match path.strip_prefix("spec.").unwrap_or(path) {
            "min_ready" => spec.min_ready = from.min_ready,
            "max_ready" => spec.max_ready = from.max_ready,
            "target" => spec.target = from.target,
            "image" => spec.image = from.image.clone(),
            "boot_timeout" => spec.boot_timeout = from.boot_timeout,
            "max_age" => spec.max_age = from.max_age,
            "paused" => spec.paused = from.paused,
            other => {
                return Err(invalid(
                    "update_mask",
                    &format!("unknown field {other:?}; use min_ready, max_ready, target, image, boot_timeout, max_age, paused"),
                ))
            }
        }
    }
    Ok(())
}

pub fn pool(status: PoolStatus) -> api::Pool {
    let count = |s| status.count(s);
    let r = &status.record;
    api::Pool {
        flavor: r.key.flavor.clone(),
        availability_zone: r.key.availability_zone.clone(),
        spec: Some(pool_spec_to_proto(&r.spec)),
        effective_target: status.effective_target,
        counts: Some(api::PoolCounts {
            booting: count(InstanceState::Booting),
            warming: count(InstanceState::Warming),
            ready: count(InstanceState::Ready),
            claimed: count(InstanceState::Claimed),
            allocated: count(InstanceState::Allocated),
            releasing: count(InstanceState::Releasing),
            failed: count(InstanceState::Failed),
            deleting: count(InstanceState::Deleting),
        }),
        draining: r.draining,
        allocations_warm: r.allocations_warm,
        allocations_cold: r.allocations_cold,
        allocations_failed: r.allocations_failed,
        last_error: r.last_error.clone().unwrap_or_default(),
    }
}

pub fn instance(i: Instance) -> api::Instance {
    let state = match i.state {
        InstanceState::Booting => api::InstanceState::Booting,
        InstanceState::Warming => api::InstanceState::Warming,
        InstanceState::Ready => api::InstanceState::Ready,
        InstanceState::Claimed => api::InstanceState::Claimed,
        InstanceState::Allocated => api::InstanceState::Allocated,
        InstanceState::Releasing => api::InstanceState::Releasing,
        InstanceState::Failed => api::InstanceState::Failed,
        InstanceState::Deleting => api::InstanceState::Deleting,
    };
    api::Instance {
        id: i.id,
        flavor: i.pool.flavor,
        availability_zone: i.pool.availability_zone,
        server_id: i.server_id.unwrap_or_default(),
        state: state as i32,
        created_at: Some(timestamp(i.created_at)),
        ready_at: i.ready_at.map(timestamp),
        attempts: i.attempts,
        last_error: i.last_error.unwrap_or_default(),
        request_id: i.request_id.unwrap_or_default(),
    }
}
