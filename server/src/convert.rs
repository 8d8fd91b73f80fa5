//! Conversions between warmpool.v1 messages and pool-manager's model, and the
//! one place where core errors become gRPC statuses.

// tonic::Status is large by design and these run once per call, not in a hot loop.
#![allow(clippy::result_large_err)]

use pool_manager::events::{Event, EventKind};
use pool_manager::gate::{GateStatus, Hold};
use pool_manager::model::{
    Allocation, AllocationParams, AllocationState, EmptyPoolPolicy, Instance, InstanceState,
    NetworkRequest, PoolKey, PoolSpec, Target, VolumeRequest, VolumeSource,
};
use pool_manager::schedule::Window;
use pool_manager::sizing::{Backoff, IopsLimitSource, LeadSource, PlanReason};
use pool_manager::text;
use pool_manager::{AllocateRequest, ManagerError, PoolStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
        ManagerError::FailedPrecondition(_)
        | ManagerError::UnknownServers { .. }
        | ManagerError::CloudChanged { .. } => Code::FailedPrecondition,
        ManagerError::ResourceExhausted(_) => Code::ResourceExhausted,
        ManagerError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        ManagerError::Aborted(_) => Code::Aborted,
        // What gRPC clients retry with backoff (ABORTED means a reused order id here).
        ManagerError::TryAgain(_) => Code::Unavailable,
        // Quota is a resource the operator must raise; the rest is the cloud failing us.
        ManagerError::Cloud(CloudError::QuotaExceeded(_)) => Code::ResourceExhausted,
        ManagerError::Cloud(CloudError::Conflict(_)) => Code::FailedPrecondition,
        // Refused for a reason asking again does not change (warmpool's
        // credentials, a request the cloud calls bad or forbidden, two
        // images of one name): someone must mend it first.
        ManagerError::Cloud(
            CloudError::Fatal(_) | CloudError::LeftToReclaim(_) | CloudError::PolicyRefused(_),
        ) => Code::FailedPrecondition,
        ManagerError::Cloud(_) => Code::Unavailable,
        ManagerError::Store(_) | ManagerError::Internal(_) => Code::Internal,
        ManagerError::ShuttingDown { .. } => Code::Unavailable,
    };
    if code == Code::Internal {
        tracing::error!(error = %message, "internal error");
    }
    Status::new(code, bounded(message))
}

/// The longest status message sent, in bytes. Messages echo what the caller
/// sent (a window, a mask path, an address); one of many kilobytes would
/// not fit the header a client accepts (hyper: 16 KiB), and the caller
/// would get a protocol error in place of the answer.
pub const MAX_STATUS_MESSAGE: usize = 1024;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let mut cut = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [cut]");
    }
    message
}

fn invalid(field: &str, message: &str) -> Status {
    Status::invalid_argument(bounded(format!("invalid {field}: {message}")))
}

fn optional(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Read by hand rather than with prost-types' `TryFrom`, which negates the
/// seconds of a negative duration and so panics (debug builds) on
/// `i64::MIN`. Each field's upper bound is checked where it is used.
pub fn duration_from_proto(field: &str, d: &prost_types::Duration) -> Result<Duration, Status> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid(field, "must be a non-negative duration"));
    }
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| invalid(field, "nanos must be 0 to 999999999"))?;
    Ok(Duration::new(d.seconds.unsigned_abs(), nanos))
}

pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub fn pool_key(flavor: &str, availability_zone: &str) -> Result<PoolKey, Status> {
    let key = PoolKey::new(flavor, availability_zone);
    key.validate()
        .map_err(|(field, message)| invalid(field, &message))?;
    Ok(key)
}

pub fn allocate_request(req: api::AllocateRequest) -> Result<AllocateRequest, Status> {
    let pool = PoolKey::new(req.flavor, req.availability_zone);
    pool_manager::validate_order(&req.request_id, &req.tenant_project_id, &pool).map_err(status)?;
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
    // The deadline is an Instant: an absurd timeout would overflow it, and no
    // caller waits longer than a cold boot takes.
    if let Some(t) = timeout.filter(|t| *t > MAX_ALLOCATE_TIMEOUT) {
        return Err(invalid(
            "timeout",
            &format!(
                "{} is too long; at most {}",
                humantime::format_duration(t),
                humantime::format_duration(MAX_ALLOCATE_TIMEOUT)
            ),
        ));
    }
    Ok(AllocateRequest {
        params: AllocationParams {
            request_id: req.request_id,
            tenant_project_id: req.tenant_project_id,
            pool,
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

/// `release_error`: why the latest try to finish its release failed
/// (`PoolManager::release_error`), shown only while it is `Releasing`.
pub fn allocation(a: Allocation, release_error: Option<String>) -> api::Allocation {
    let state = match a.state {
        AllocationState::Allocating => api::AllocationState::Allocating,
        AllocationState::Allocated => api::AllocationState::Allocated,
        AllocationState::Releasing => api::AllocationState::Releasing,
        AllocationState::Released => api::AllocationState::Released,
    };
    let last_error = match a.state {
        AllocationState::Releasing => release_error.unwrap_or_default(),
        _ => String::new(),
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
        released_at: a.released_at.map(timestamp),
        // The release's decision once made; until then the Allocate's.
        delete_volume_on_release: Some(
            a.delete_volume_on_release
                .unwrap_or(a.params.volume.delete_on_release),
        ),
        last_error,
    }
}

pub fn pool_spec_to_proto(spec: &PoolSpec) -> api::PoolSpec {
    let (target_mode, target) = match spec.target {
        Target::Fixed(n) => (api::TargetMode::Fixed, n),
        // The computed target is `Pool.effective_target` / `Pool.sizing`.
        Target::Auto => (api::TargetMode::Auto, 0),
    };
    api::PoolSpec {
        min_ready: spec.min_ready,
        max_ready: spec.max_ready,
        target,
        image: spec.image.clone(),
        boot_timeout: Some(duration_to_proto(spec.boot_timeout)),
        max_age: spec.max_age.map(duration_to_proto),
        paused: spec.paused,
        target_mode: target_mode.into(),
        windows: spec.windows.iter().map(ToString::to_string).collect(),
        iops_limit: spec.iops_limit,
        volume_iops_limit: spec.volume_iops_limit,
    }
}

/// The longest an Allocate may be asked to wait.
pub const MAX_ALLOCATE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Default boot timeout for pools created through the API without one.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub fn pool_spec_from_proto(spec: api::PoolSpec) -> Result<PoolSpec, Status> {
    let target = match api::TargetMode::try_from(spec.target_mode) {
        // UNSPECIFIED: a client that predates target_mode means a fixed target.
        Ok(api::TargetMode::Unspecified | api::TargetMode::Fixed) => Target::Fixed(spec.target),
        Ok(api::TargetMode::Auto) => Target::Auto,
        Err(_) => {
            return Err(invalid(
                "spec.target_mode",
                &format!(
                    "unknown value {}; use TARGET_MODE_FIXED or TARGET_MODE_AUTO",
                    spec.target_mode
                ),
            ))
        }
    };
    Ok(PoolSpec {
        min_ready: spec.min_ready,
        max_ready: spec.max_ready,
        target,
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
        windows: spec
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                w.parse::<Window>()
                    .map_err(|e| invalid(&format!("spec.windows[{i}]"), &e.to_string()))
            })
            .collect::<Result<_, _>>()?,
        iops_limit: positive("spec.iops_limit", spec.iops_limit)?,
        volume_iops_limit: positive("spec.volume_iops_limit", spec.volume_iops_limit)?,
    })
}

/// An IOPS limit of 0 would mean "never boots"; unset means "not limited".
fn positive(field: &str, value: Option<u32>) -> Result<Option<u32>, Status> {
    match value {
        Some(0) => Err(invalid(
            field,
            "0 IOPS is not a limit; leave the field unset for an unlimited disk",
        )),
        other => Ok(other),
    }
}

/// The fields of a pool's spec an UpdatePool mask names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpecField {
    MinReady,
    MaxReady,
    // One setting on the wire as two fields: the mode and the number.
    Target,
    Image,
    BootTimeout,
    MaxAge,
    Paused,
    Windows,
    IopsLimit,
    VolumeIopsLimit,
}

impl SpecField {
    fn from_path(path: &str) -> Option<Self> {
        Some(match path.strip_prefix("spec.").unwrap_or(path) {
            "min_ready" => Self::MinReady,
            "max_ready" => Self::MaxReady,
            "target" | "target_mode" => Self::Target,
            "image" => Self::Image,
            "boot_timeout" => Self::BootTimeout,
            "max_age" => Self::MaxAge,
            "paused" => Self::Paused,
            "windows" => Self::Windows,
            "iops_limit" => Self::IopsLimit,
            "volume_iops_limit" => Self::VolumeIopsLimit,
            _ => return None,
        })
    }

    fn copy_proto(self, from: &api::PoolSpec, to: &mut api::PoolSpec) {
        match self {
            Self::MinReady => to.min_ready = from.min_ready,
            Self::MaxReady => to.max_ready = from.max_ready,
            Self::Target => {
                to.target = from.target;
                to.target_mode = from.target_mode;
            }
            Self::Image => to.image.clone_from(&from.image),
            Self::BootTimeout => to.boot_timeout = from.boot_timeout,
            Self::MaxAge => to.max_age = from.max_age,
            Self::Paused => to.paused = from.paused,
            Self::Windows => to.windows.clone_from(&from.windows),
            Self::IopsLimit => to.iops_limit = from.iops_limit,
            Self::VolumeIopsLimit => to.volume_iops_limit = from.volume_iops_limit,
        }
    }

    fn apply(self, spec: &mut PoolSpec, from: &PoolSpec) {
        match self {
            Self::MinReady => spec.min_ready = from.min_ready,
            Self::MaxReady => spec.max_ready = from.max_ready,
            Self::Target => spec.target = from.target,
            Self::Image => spec.image.clone_from(&from.image),
            Self::BootTimeout => spec.boot_timeout = from.boot_timeout,
            Self::MaxAge => spec.max_age = from.max_age,
            Self::Paused => spec.paused = from.paused,
            Self::Windows => spec.windows.clone_from(&from.windows),
            Self::IopsLimit => spec.iops_limit = from.iops_limit,
            Self::VolumeIopsLimit => spec.volume_iops_limit = from.volume_iops_limit,
        }
    }
}

/// An UpdatePool's change: the masked fields, read and checked.
#[derive(Clone, Debug)]
pub struct SpecUpdate {
    fields: Vec<SpecField>,
    from: PoolSpec,
}

impl SpecUpdate {
    /// Reads the fields of `spec` that `paths` name. The others are not
    /// read at all: a caller may send a partly filled or stale spec, and
    /// must not be refused over a field it did not ask to change.
    pub fn from_proto(spec: &api::PoolSpec, paths: &[String]) -> Result<Self, Status> {
        if paths.is_empty() {
            return Err(invalid("update_mask", "name at least one PoolSpec field"));
        }
        let fields = paths
            .iter()
            .map(|path| {
                SpecField::from_path(path).ok_or_else(|| {
                    invalid(
                        "update_mask",
                        &format!("unknown field {path:?}; use min_ready, max_ready, target (or target_mode), image, boot_timeout, max_age, paused, windows, iops_limit, volume_iops_limit"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The fields left at their defaults read without fault, and are
        // not applied.
        let mut masked = api::PoolSpec::default();
        for field in &fields {
            field.copy_proto(spec, &mut masked);
        }
        Ok(Self {
            fields,
            from: pool_spec_from_proto(masked)?,
        })
    }

    /// Sets the masked fields of `spec`; leaves the others as they are.
    pub fn apply(&self, spec: &mut PoolSpec) {
        for field in &self.fields {
            field.apply(spec, &self.from);
        }
    }
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
        allocations_exhausted: Some(r.allocations_exhausted),
        allocations_waited: Some(r.allocations_waited),
        // Capped when written; a store written before that was may hold
        // one long enough to fail every listing.
        last_error: text::capped(r.last_error.clone().unwrap_or_default()),
        last_error_at: r.last_error_at.map(timestamp),
        sizing: Some(sizing(&status)),
        consecutive_boot_failures: status.health.consecutive_boot_failures,
        degraded: status.health.degraded,
    }
}

/// The computed target and its inputs.
fn sizing(status: &PoolStatus) -> api::SizingStatus {
    let s = &status.sizing;
    let lead_time_source = match s.lead.source {
        LeadSource::Prior => api::LeadTimeSource::Prior,
        LeadSource::Observed => api::LeadTimeSource::Observed,
        LeadSource::InFlight => api::LeadTimeSource::InFlight,
    };
    let (plan_reason, plan_boots) = s.last_plan.map_or((String::new(), 0), |p| {
        (p.reason.as_str().to_string(), p.boots_now)
    });
    // On the wall clock, as the gate's pause: the plan's is a tokio instant.
    let backoff_until = match s.last_plan.map(|p| p.reason) {
        Some(PlanReason::Backoff(Backoff::Paused { until })) => until
            .checked_duration_since(tokio::time::Instant::now())
            .map(|left| timestamp(SystemTime::now() + left)),
        _ => None,
    };
    // On the wall clock too; a read is in the past.
    let quota_read_at = s.quota.read_at.map(|at| {
        let ago = tokio::time::Instant::now().saturating_duration_since(at);
        timestamp(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH))
    });
    api::SizingStatus {
        auto: s.auto,
        target: s.target,
        demand_short_per_second: finite(s.demand.short),
        demand_long_per_second: finite(s.demand.long),
        demand_forecast_per_second: finite(s.demand.forecast),
        demand_in_lead_time: finite(s.demand_in_lead),
        lead_time_p50: Some(duration_to_proto(s.lead.p50)),
        lead_time_p90: Some(duration_to_proto(s.lead.p90)),
        lead_time_source: lead_time_source.into(),
        lead_time_samples: u32::try_from(s.lead.samples).unwrap_or(u32::MAX),
        service_level: finite(status.service_level),
        z: finite(s.z),
        gate: Some(gate(&s.gate)),
        plan_reason,
        plan_boots,
        boots_in_flight: status.count(InstanceState::Booting)
            + status.count(InstanceState::Warming),
        window_min: s.window_min,
        quota_headroom: s.quota.left,
        quota_limited_by: s.quota.limited_by.clone().unwrap_or_default(),
        beyond_quota: s.quota.beyond_quota,
        backoff_until,
        quota_error: s.quota.failing.clone().unwrap_or_default(),
        quota_ports_unknown: s.quota.ports_unknown.clone().unwrap_or_default(),
        quota_read_at,
        lead_time_prior: Some(duration_to_proto(s.prior)),
        prior_iops_limit: s.prior_iops_limit.map(|(iops, _)| iops),
        prior_iops_limit_source: match s.prior_iops_limit {
            Some((_, IopsLimitSource::Pool)) => "pool",
            Some((_, IopsLimitSource::CloudFlavor)) => "cloud_flavor",
            None => "",
        }
        .to_owned(),
        prior_iops_limit_unknown: s.prior_iops_unknown.clone().unwrap_or_default(),
    }
}

/// NaN or infinite rates would mean a bug upstream; show 0 rather than
/// sending values a JSON client cannot represent.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// The throttle gate. Its holds are tokio instants; the wire gets the time
/// left and the wall-clock time it ends.
fn gate(g: &GateStatus) -> api::ThrottleGate {
    let (state, until, service) = match (g.enabled, g.hold) {
        (false, _) => (api::ThrottleState::Disabled, None, None),
        (true, None) => (api::ThrottleState::Open, None, None),
        (true, Some(Hold::Throttled { until, service })) => {
            (api::ThrottleState::Throttled, Some(until), Some(service))
        }
        (true, Some(Hold::Quota { until })) => (api::ThrottleState::QuotaPaused, Some(until), None),
    };
    let remaining = until.map(|u| u.saturating_duration_since(tokio::time::Instant::now()));
    api::ThrottleGate {
        state: state.into(),
        paused_until: remaining.map(|r| timestamp(SystemTime::now() + r)),
        pause_remaining: remaining.map(duration_to_proto),
        window: g.window.map(finite),
        in_flight: g.in_flight,
        gated_in_flight: g.gated_in_flight,
        baseline: g.baseline.map(duration_to_proto),
        latency_ratio: g.latency_ratio.map_or(0.0, finite),
        throttled_responses: g.throttled,
        window_decreases: g.decreases,
        quota_refusals: g.quota_refusals,
        throttled_service: service.map_or_else(String::new, |s| s.as_str().to_owned()),
    }
}

/// A manager event as `WatchPools` shows it; `None` for routine events
/// (boots, allocations, releases), which show as changed counts instead.
pub fn pool_event(event: &Event) -> Option<api::PoolEvent> {
    let message = event.kind.describe()?;
    let mut out = api::PoolEvent {
        message,
        at: Some(timestamp(event.at)),
        flavor: event
            .pool
            .as_ref()
            .map(|p| p.flavor.clone())
            .unwrap_or_default(),
        availability_zone: event
            .pool
            .as_ref()
            .map(|p| p.availability_zone.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let kind = match &event.kind {
        EventKind::Boot { .. } | EventKind::Allocation { .. } | EventKind::Released => return None,
        EventKind::Exhausted => api::PoolEventKind::Exhausted,
        EventKind::SettingsChanged { .. } => api::PoolEventKind::SettingsChanged,
        EventKind::LeakDeleted { .. } => api::PoolEventKind::LeakDeleted,
        EventKind::Degraded { cause, .. } => {
            out.cause = cause.as_str().to_owned();
            api::PoolEventKind::Degraded
        }
        EventKind::Recovered { .. } => api::PoolEventKind::Recovered,
        EventKind::Throttled { service, pause } => {
            out.service = service.map(|s| s.as_str().to_string()).unwrap_or_default();
            out.pause = Some(duration_to_proto(*pause));
            api::PoolEventKind::Throttled
        }
        EventKind::VolumeStuck { .. } => api::PoolEventKind::VolumeStuck,
    };
    out.kind = kind.into();
    Some(out)
}

/// The event of a pool's last `WatchPools` message: it is gone.
pub fn pool_deleted_event(key: &PoolKey, at: SystemTime) -> api::PoolEvent {
    api::PoolEvent {
        kind: api::PoolEventKind::Deleted.into(),
        message: "pool deleted: drained, and its record removed".into(),
        at: Some(timestamp(at)),
        flavor: key.flavor.clone(),
        availability_zone: key.availability_zone.clone(),
        ..Default::default()
    }
}

/// The event telling a `WatchPools` reader that it fell behind and lost
/// `missed` events.
pub fn events_missed_event(missed: u64, at: SystemTime) -> api::PoolEvent {
    api::PoolEvent {
        kind: api::PoolEventKind::EventsMissed.into(),
        message: format!(
            "this stream fell behind: up to {missed} events were not delivered; \
             the pool states that follow are current"
        ),
        at: Some(timestamp(at)),
        ..Default::default()
    }
}

/// `ListInstances` answers at most this many instances at once.
pub const MAX_INSTANCES_PAGE: usize = 1000;

/// Where a `ListInstances` page ended: the place of its last instance in
/// the order `PoolManager::list_instances` gives, and the pool the listing
/// was of (none: every pool). The token is this, as JSON, in hex: opaque
/// to clients, and safe in any transport.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageEnd {
    pool: PoolKey,
    created_at: SystemTime,
    id: String,
    #[serde(default)]
    listing: Option<PoolKey>,
}

impl PageEnd {
    fn of(i: &Instance, listing: Option<&PoolKey>) -> Self {
        Self {
            pool: i.pool.clone(),
            created_at: i.created_at,
            id: i.id.clone(),
            listing: listing.cloned(),
        }
    }

    fn is_before(&self, i: &Instance) -> bool {
        (&self.pool, self.created_at, &self.id) < (&i.pool, i.created_at, &i.id)
    }

    fn token(&self) -> String {
        let json = serde_json::to_vec(self).expect("a page end serializes");
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_token(token: &str) -> Option<Self> {
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// One page of `instances` (in the manager's order, of the pool `listing`
/// or of every pool) as `ListInstances` answers it.
pub fn instances_page(
    instances: Vec<Instance>,
    listing: Option<&PoolKey>,
    page_size: i32,
    page_token: &str,
) -> Result<api::ListInstancesResponse, Status> {
    let size = match usize::try_from(page_size) {
        Ok(0) => MAX_INSTANCES_PAGE,
        Ok(n) => n.min(MAX_INSTANCES_PAGE),
        Err(_) => return Err(invalid("page_size", "must not be negative")),
    };
    let after = match page_token {
        "" => None,
        token => Some(PageEnd::from_token(token).ok_or_else(|| {
            invalid(
                "page_token",
                "not one this server gave out; leave it empty to start from the first instance",
            )
        })?),
    };
    // A token continues the listing that gave it out: under another pool
    // filter it would skip instances, or all of them.
    if let Some(end) = after.as_ref().filter(|end| end.listing.as_ref() != listing) {
        let of =
            |key: Option<&PoolKey>| key.map_or("every pool".to_owned(), |k| format!("pool {k}"));
        return Err(invalid(
            "page_token",
            &format!(
                "it continues a listing of {}, not of {}; leave it empty to start this one",
                of(end.listing.as_ref()),
                of(listing)
            ),
        ));
    }
    let mut rest = instances
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|end| end.is_before(i)))
        .peekable();
    let page: Vec<Instance> = rest.by_ref().take(size).collect();
    let next_page_token = match (rest.peek(), page.last()) {
        (Some(_), Some(last)) => PageEnd::of(last, listing).token(),
        _ => String::new(),
    };
    Ok(api::ListInstancesResponse {
        instances: page.into_iter().map(instance).collect(),
        next_page_token,
    })
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
        last_error: text::capped(i.last_error.unwrap_or_default()),
        request_id: i.request_id.unwrap_or_default(),
        image: i.image.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_manager::cloud::CloudError;

    /// A cloud error's message says what the cloud did, whatever code it
    /// maps to: a quota or a conflict is not "unavailable".
    #[test]
    fn cloud_errors_say_what_the_cloud_did() {
        for (error, code, says) in [
            (
                CloudError::QuotaExceeded("instances: 10 of 10 used".into()),
                Code::ResourceExhausted,
                "cloud quota exceeded: instances: 10 of 10 used",
            ),
            (
                CloudError::Conflict("volume is in use".into()),
                Code::FailedPrecondition,
                "the cloud refused the call in the object's current state: volume is in use",
            ),
            (
                CloudError::Transient("503 Service Unavailable".into()),
                Code::Unavailable,
                "transient cloud error: 503 Service Unavailable",
            ),
            (
                CloudError::NotFound("server abc".into()),
                Code::Unavailable,
                "cloud object not found: server abc",
            ),
            (
                CloudError::Fatal("2 images are named 'mysql'; give its id instead".into()),
                Code::FailedPrecondition,
                "cloud error: 2 images are named 'mysql'; give its id instead",
            ),
        ] {
            let status = status(ManagerError::Cloud(error));
            assert_eq!((status.code(), status.message()), (code, says));
        }
    }

    /// A call that another on the same order holds up is UNAVAILABLE, which
    /// gRPC clients retry; ABORTED here means an order id reused with other
    /// parameters, which a retry does not mend.
    #[test]
    fn a_call_held_up_by_another_is_retryable() {
        let status = status(ManagerError::TryAgain(
            "allocation o-1 is still in progress; retry later".into(),
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("retry later"));
    }

    /// A purchase whose timeout passed while the pool had an instance for
    /// it (its volume still being made) is DEADLINE_EXCEEDED: billing's
    /// retry of RESOURCE_EXHAUSTED reads a shallow pool, which it was not.
    #[test]
    fn a_purchase_out_of_time_with_an_instance_there_is_deadline_exceeded() {
        let status = status(ManagerError::DeadlineExceeded(
            "the purchase's timeout (200ms) passed; ask again with a longer timeout".into(),
        ));
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("longer timeout"));
    }

    /// A pool whose boots failed shows its plan held back by the backoff,
    /// and when the pause ends, on the wall clock.
    #[tokio::test(start_paused = true)]
    async fn get_pool_shows_a_backoff_after_failed_boots_and_its_end() {
        use pool_manager::model::PoolSpec;
        use std::sync::Arc;
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::deterministic());
        sim.faults().error_next_boots(1000, "NoValidHost");
        let manager = pool_manager::PoolManager::new(
            Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            Arc::new(sim.probe()),
            pool_manager::ManagerSettings::default(),
        );
        manager.start().await.unwrap();
        let key = PoolKey::new("db.small", "az1");
        let spec = PoolSpec {
            min_ready: 2,
            max_ready: 4,
            target: Default::default(),
            image: "mysql-8.0".into(),
            boot_timeout: Duration::from_secs(600),
            max_age: None,
            paused: false,
            windows: Vec::new(),
            iops_limit: None,
            volume_iops_limit: None,
        };
        manager.create_pool(key.clone(), spec).await.unwrap();
        let mut shown = None;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pool = pool(manager.get_pool(&key).await.unwrap());
            let sizing = pool.sizing.unwrap();
            if let Some(until) = sizing.backoff_until {
                shown = Some((sizing.plan_reason, until, SystemTime::now()));
                break;
            }
        }
        let (reason, until, at) = shown.expect("a backoff shown within 10 min");
        assert_eq!(reason, "backoff");
        let left = SystemTime::try_from(until).unwrap().duration_since(at);
        assert!(
            left.as_ref()
                .is_ok_and(|left| *left <= Duration::from_secs(300)),
            "{left:?}"
        );
        manager.shutdown().await.unwrap();
    }

    /// The quota's read time is unset until the flavor's limits are read
    /// (a paused pool reads none), then the read's time on the wall clock.
    #[tokio::test(start_paused = true)]
    async fn get_pool_shows_when_the_quota_was_read() {
        use pool_manager::model::PoolSpec;
        use std::sync::Arc;
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::deterministic());
        let manager = pool_manager::PoolManager::new(
            Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            Arc::new(sim.probe()),
            pool_manager::ManagerSettings::default(),
        );
        manager.start().await.unwrap();
        let key = PoolKey::new("db.small", "az1");
        let spec = PoolSpec {
            min_ready: 2,
            max_ready: 4,
            target: Default::default(),
            image: "mysql-8.0".into(),
            boot_timeout: Duration::from_secs(600),
            max_age: None,
            paused: true,
            windows: Vec::new(),
            iops_limit: None,
            volume_iops_limit: None,
        };
        manager.create_pool(key.clone(), spec).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let sizing = pool(manager.get_pool(&key).await.unwrap()).sizing.unwrap();
        assert_eq!(sizing.quota_read_at, None, "{sizing:?}");
        assert_eq!(sizing.quota_headroom, None, "{sizing:?}");

        let unpaused = SystemTime::now();
        manager
            .update_pool(&key, |s| s.paused = false)
            .await
            .unwrap();
        let mut shown = None;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sizing = pool(manager.get_pool(&key).await.unwrap()).sizing.unwrap();
            if let Some(at) = sizing.quota_read_at {
                shown = Some((at, sizing, SystemTime::now()));
                break;
            }
        }
        let (at, sizing, asked) = shown.expect("the quota read within 10 min");
        assert!(sizing.quota_headroom.is_some(), "{sizing:?}");
        let at = SystemTime::try_from(at).unwrap();
        // The wall clock runs on while the paused tokio clock jumps: the
        // read's time lies between the unpause and the answer, give or
        // take the test's own seconds of sleep.
        assert!(at <= asked, "{at:?} after {asked:?}");
        assert!(
            at + Duration::from_secs(5) >= unpaused,
            "{at:?} long before {unpaused:?}"
        );
        manager.shutdown().await.unwrap();
    }

    /// A path named twice, or the target by both its names, sets the field
    /// to the value sent.
    #[test]
    fn a_mask_path_given_twice_still_sets_the_value_sent() {
        let sent = api::PoolSpec {
            windows: vec!["Sat 10:00-12:00 min 2".into()],
            target: 3,
            target_mode: api::TargetMode::Fixed.into(),
            ..Default::default()
        };
        let paths = ["windows", "spec.windows", "target", "target_mode"].map(String::from);
        let update = SpecUpdate::from_proto(&sent, &paths).unwrap();
        let mut spec = pool_spec_from_proto(api::PoolSpec {
            image: "mysql-8.0".into(),
            target_mode: api::TargetMode::Auto.into(),
            ..Default::default()
        })
        .unwrap();
        update.apply(&mut spec);
        assert_eq!(spec.windows.len(), 1, "{:?}", spec.windows);
        assert!(matches!(spec.target, Target::Fixed(3)), "{:?}", spec.target);
    }
}
