//! Prometheus metrics on their own listen address (`/metrics`, OpenMetrics
//! text), fed three ways:
//!
//! - pool gauges (instances by state, the target and its inputs, the throttle
//!   gate, boot health) are read from [`PoolManager::list_pools`] at scrape
//!   time, so they are never stale; instances by state from
//!   [`PoolManager::instance_counts`], which also counts a deleted pool's
//!   instances tenants still hold; the cloud calls waiting out a
//!   Retry-After now from [`PoolManager::paused_cloud_calls`] (the events
//!   report a pause only once it is over); the servers the last reconcile
//!   pass left alone from [`PoolManager::servers_left_alone`];
//! - counters and histograms of allocations, boots, leaks, exhaustion, health
//!   verdicts and Retry-After pauses are driven by the manager's event
//!   broadcast ([`PoolManager::events`]). The manager logs the events and
//!   judges a pool degraded or recovered; this task only counts;
//! - cloud API latency and throttled answers are measured by
//!   [`MeteredCloud`], a wrapper around the daemon's [`Cloud`](pool_manager::cloud::Cloud);
//! - the store's size on disk is read every [`STORE_SIZE_EVERY`] by a task
//!   of its own ([`Metrics::watch_store_size`]), not at scrape time: it
//!   reads the disk's metadata, and a sick disk must not hold up a scrape.
//!
//! Every label is bounded: pool labels (flavor, availability zone) by the
//! number of pools (and of deleted pools with instances left), the others
//! by fixed enumerations.

mod cloud;

pub use cloud::MeteredCloud;

use pool_manager::cloud::CloudError;
use pool_manager::events::{AllocationOutcome, BootOutcome, CloudService, Event, EventKind};
use pool_manager::gate::Hold;
use pool_manager::model::{InstanceState, PoolKey};
use pool_manager::sizing::PlanReason;
use pool_manager::{state_name, LeftAlone, ManagerResult, PoolManager};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The Content-Type of what `/metrics` serves.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the store's size on disk is read for `warmpool_store_size_bytes`.
/// It grows by megabytes a day: a minute is fresh enough for an alert.
pub const STORE_SIZE_EVERY: Duration = Duration::from_secs(60);

/// The `service` label of a Retry-After pause whose call the manager could
/// not attribute to a service.
const UNKNOWN_SERVICE: &str = "unknown";

const ALLOCATION_OUTCOMES: [AllocationOutcome; 7] = [
    AllocationOutcome::Warm,
    AllocationOutcome::Cold,
    AllocationOutcome::Waited,
    AllocationOutcome::Exhausted,
    AllocationOutcome::PreconditionFailed,
    AllocationOutcome::CloudError,
    AllocationOutcome::Failed,
];

const BOOT_OUTCOMES: [BootOutcome; 6] = [
    BootOutcome::Ready,
    BootOutcome::Quota,
    BootOutcome::RateLimited,
    BootOutcome::NoValidHost,
    BootOutcome::Timeout,
    BootOutcome::Failed,
];

/// The `outcome` label of `warmpool_allocations_total`.
pub fn allocation_outcome_name(outcome: AllocationOutcome) -> &'static str {
    match outcome {
        AllocationOutcome::Warm => "warm",
        AllocationOutcome::Cold => "cold",
        AllocationOutcome::Waited => "waited",
        AllocationOutcome::Exhausted => "exhausted",
        AllocationOutcome::PreconditionFailed => "precondition_failed",
        AllocationOutcome::CloudError => "cloud_error",
        AllocationOutcome::Failed => "failed",
    }
}

/// The `result` label of `warmpool_boots_total`.
pub fn boot_outcome_name(outcome: BootOutcome) -> &'static str {
    outcome.as_str()
}

/// The `status` label of the cloud metrics.
pub fn cloud_status_name(error: Option<&CloudError>) -> &'static str {
    match error {
        None => "ok",
        Some(CloudError::Throttled { .. }) => "throttled",
        Some(CloudError::QuotaExceeded(_)) => "quota_exceeded",
        Some(CloudError::Conflict(_)) => "conflict",
        Some(CloudError::NotFound(_)) => "not_found",
        Some(CloudError::Transient(_)) => "transient",
        // A refusal for good too, counted as before it had its own class.
        Some(
            CloudError::Fatal(_) | CloudError::LeftToReclaim(_) | CloudError::PolicyRefused(_),
        ) => "fatal",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    flavor: String,
    availability_zone: String,
}

impl PoolLabels {
    /// Events not tied to a pool (a leaked server of an unknown pool) get
    /// empty pool labels, which Prometheus treats as absent.
    fn of(pool: Option<&PoolKey>) -> Self {
        Self {
            flavor: pool.map(|p| p.flavor.clone()).unwrap_or_default(),
            availability_zone: pool
                .map(|p| p.availability_zone.clone())
                .unwrap_or_default(),
        }
    }

    fn with<V>(&self, value: V) -> PoolAnd<V> {
        PoolAnd {
            flavor: self.flavor.clone(),
            availability_zone: self.availability_zone.clone(),
            value,
        }
    }
}

/// Pool labels plus one more; the extra label's name is the field's.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct PoolAnd<V> {
    flavor: String,
    availability_zone: String,
    value: V,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    flavor: String,
    availability_zone: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    flavor: String,
    availability_zone: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    flavor: String,
    availability_zone: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    flavor: String,
    availability_zone: String,
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    flavor: String,
    availability_zone: String,
    window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    flavor: String,
    availability_zone: String,
    quantile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    flavor: String,
    availability_zone: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudLabels {
    service: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeftAloneLabels {
    /// unknown_sold or set_aside (`LeftAlone::as_str`).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    /// `[tls] cert_file`: one series, of the certificate served.
    cert_file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    method: &'static str,
    /// unauthenticated or permission_denied.
    reason: &'static str,
}

impl From<PoolAnd<&'static str>> for StateLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            state: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for OutcomeLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            outcome: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for ResultLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            result: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for WindowLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            window: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for QuantileLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            quantile: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for ReasonLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            reason: l.value,
        }
    }
}
impl From<PoolAnd<&'static str>> for PathLabels {
    fn from(l: PoolAnd<&'static str>) -> Self {
        Self {
            flavor: l.flavor,
            availability_zone: l.availability_zone,
            path: l.value,
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Warm allocations take milliseconds on the embedded cloud and seconds on
/// a real one; cold boots take minutes, and an Allocate may wait for one up
/// to `MAX_ALLOCATE_TIMEOUT` (an hour; a cold boot's own timeout defaults
/// to 30 minutes). The top finite bound is that hour: histogram_quantile
/// answers a quantile in +Inf with the top finite bound, which would show
/// every slow cold purchase, the ones the dashboard's Allocate latency
/// panel is for, at that bound.
const ALLOCATE_BUCKETS: [f64; 21] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

fn allocate_histogram() -> Histogram {
    Histogram::new(ALLOCATE_BUCKETS)
}

/// The embedded cloud's scaled boots at the low end, IOPS-throttled
/// real-cloud boots (12+ minutes) and slower at the top. The top finite
/// bound is the longest boot timeout (`MAX_BOOT_TIMEOUT`, a day):
/// histogram_quantile answers a quantile in +Inf with the top finite
/// bound, which would cap a slow cloud's p90 and keep
/// WarmpoolBootLeadTimeHigh (p90 above twice its weekly p90) from firing.
/// Above 30 minutes each bound at most doubles the last, so a doubling of
/// the p90 still shows; that costs 7 more series per pool.
const LEAD_TIME_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 420.0, 600.0,
    900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
];

fn lead_time_histogram() -> Histogram {
    Histogram::new(LEAD_TIME_BUCKETS)
}

/// OpenStack's APIs answer in milliseconds to seconds, but a call waits up
/// to `cloud.request_timeout` for each request it sends, and that may be
/// set to `MAX_OPENSTACK_REQUEST_TIMEOUT` (10 minutes). The top finite
/// bound is that timeout: histogram_quantile answers a quantile in +Inf
/// with the top finite bound, which would show a cloud answering in
/// minutes flat at that bound on the dashboard's cloud latency panel.
const CLOUD_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

fn cloud_histogram() -> Histogram {
    Histogram::new(CLOUD_BUCKETS)
}

/// Every metric warmpoold exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pool_instances: Family<StateLabels, Gauge>,
    pool_effective_target: Family<PoolLabels, Gauge>,
    pool_min_ready: Family<PoolLabels, Gauge>,
    pool_max_ready: Family<PoolLabels, Gauge>,
    pool_window_min: Family<PoolLabels, Gauge>,
    pool_paused: Family<PoolLabels, Gauge>,
    pool_draining: Family<PoolLabels, Gauge>,
    pool_boot_failure_streak: Family<PoolLabels, Gauge>,
    pool_degraded: Family<PoolLabels, Gauge>,
    pool_target_auto: Family<PoolLabels, Gauge>,
    pool_demand: Family<WindowLabels, FloatGauge>,
    pool_demand_in_lead: Family<PoolLabels, FloatGauge>,
    pool_lead_time: Family<QuantileLabels, FloatGauge>,
    pool_lead_time_samples: Family<PoolLabels, Gauge>,
    pool_service_level_z: Family<PoolLabels, FloatGauge>,
    pool_gate_window: Family<PoolLabels, FloatGauge>,
    pool_gate_in_flight: Family<PoolLabels, Gauge>,
    pool_gate_hold: Family<ReasonLabels, Gauge>,
    pool_quota_headroom: Family<PoolLabels, Gauge>,
    pool_beyond_quota: Family<PoolLabels, Gauge>,
    allocations: Family<OutcomeLabels, Counter>,
    allocate_duration: HistogramFamily<PathLabels>,
    boots: Family<ResultLabels, Counter>,
    boot_lead_time: HistogramFamily<PoolLabels>,
    exhausted: Family<PoolLabels, Counter>,
    leaks_deleted: Family<PoolLabels, Counter>,
    settings_changes: Family<PoolLabels, Counter>,
    releases: Family<PoolLabels, Counter>,
    degraded: Family<PoolLabels, Counter>,
    recovered: Family<PoolLabels, Counter>,
    events_lagged: Counter,
    cloud_request_duration: HistogramFamily<CloudLabels>,
    cloud_throttled: Family<ServiceLabels, Counter>,
    retry_pauses: Family<ServiceLabels, Counter>,
    retry_pause_seconds: Family<ServiceLabels, Counter<f64, AtomicU64>>,
    cloud_calls_paused: Family<ServiceLabels, Gauge>,
    api_calls_refused: Family<RefusedLabels, Counter>,
    tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    config_reload_successful: Gauge,
    config_reload_success_time: FloatGauge,
    volumes_stuck: Gauge,
    servers_left_alone: Family<LeftAloneLabels, Gauge>,
    store_size: Gauge,
    watch_streams: Gauge,
    /// One scrape at a time refreshes the gauges and encodes, so a scrape
    /// never sees another's half-refreshed gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warmpool");
        let m = Metrics {
            registry: Registry::default(),
            pool_instances: Family::default(),
            pool_effective_target: Family::default(),
            pool_min_ready: Family::default(),
            pool_max_ready: Family::default(),
            pool_window_min: Family::default(),
            pool_paused: Family::default(),
            pool_draining: Family::default(),
            pool_boot_failure_streak: Family::default(),
            pool_degraded: Family::default(),
            pool_target_auto: Family::default(),
            pool_demand: Family::default(),
            pool_demand_in_lead: Family::default(),
            pool_lead_time: Family::default(),
            pool_lead_time_samples: Family::default(),
            pool_service_level_z: Family::default(),
            pool_gate_window: Family::default(),
            pool_gate_in_flight: Family::default(),
            pool_gate_hold: Family::default(),
            pool_quota_headroom: Family::default(),
            pool_beyond_quota: Family::default(),
            allocations: Family::default(),
            allocate_duration: Family::new_with_constructor(allocate_histogram),
            boots: Family::default(),
            boot_lead_time: Family::new_with_constructor(lead_time_histogram),
            exhausted: Family::default(),
            leaks_deleted: Family::default(),
            settings_changes: Family::default(),
            releases: Family::default(),
            degraded: Family::default(),
            recovered: Family::default(),
            events_lagged: Counter::default(),
            cloud_request_duration: Family::new_with_constructor(cloud_histogram),
            cloud_throttled: Family::default(),
            retry_pauses: Family::default(),
            retry_pause_seconds: Family::default(),
            cloud_calls_paused: Family::default(),
            api_calls_refused: Family::default(),
            tls_certificate_expiry: Family::default(),
            config_reload_successful: Gauge::default(),
            config_reload_success_time: FloatGauge::default(),
            volumes_stuck: Gauge::default(),
            servers_left_alone: Family::default(),
            store_size: Gauge::default(),
            watch_streams: Gauge::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        registry.register(
            "pool_instances",
            "Instances of a pool by state (booting, warming, ready, claimed, allocated, releasing, failed, deleting); a deleted pool's until its last instance is gone",
            m.pool_instances.clone(),
        );
        registry.register(
            "pool_effective_target",
            "Unclaimed instances (booting + warming + ready) the replenisher keeps: the target (fixed, or computed for target = auto) clamped to [floor, max_ready], the floor being min_ready or, while an operator window raises it, pool_window_min; 0 while the pool is draining",
            m.pool_effective_target.clone(),
        );
        registry.register(
            "pool_min_ready",
            "The pool's configured min_ready: the target's floor, unless an open operator window raises it (pool_window_min)",
            m.pool_min_ready.clone(),
        );
        registry.register(
            "pool_max_ready",
            "The pool's configured max_ready: the target's ceiling",
            m.pool_max_ready.clone(),
        );
        registry.register(
            "pool_window_min",
            "The min of the operator window open now, when it raises min_ready: the target's floor then; 0 when no open window raises it (as GetPool's sizing.window_min, unset then)",
            m.pool_window_min.clone(),
        );
        registry.register(
            "pool_paused",
            "1 when the pool is paused (boots nothing, still hands out what it has)",
            m.pool_paused.clone(),
        );
        registry.register(
            "pool_draining",
            "1 when the pool is being deleted",
            m.pool_draining.clone(),
        );
        registry.register(
            "pool_consecutive_boot_failures",
            "Boots that failed in a row since the pool's last Ready boot; the pool is degraded at 3",
            m.pool_boot_failure_streak.clone(),
        );
        registry.register(
            "pool_degraded",
            "1 while the pool is degraded (3 or more boots failed in a row, until a boot succeeds; or its start-up cloud check failed, until the check passes again and, for a management network, a boot succeeds after it)",
            m.pool_degraded.clone(),
        );
        registry.register(
            "pool_target_auto",
            "1 when the pool's target is computed (target = auto), 0 when fixed",
            m.pool_target_auto.clone(),
        );
        registry.register(
            "pool_demand_per_second",
            "Allocations per second, by window: short and long EWMA, and the forecast the target is sized for (the larger of the two, held for a cooldown when it falls); long also sets the boots kept in flight past the gate's window (long x lead time p50)",
            m.pool_demand.clone(),
        );
        registry.register(
            "pool_demand_in_lead_time",
            "D: allocations expected during one boot lead time (forecast x lead time p90); the auto target is ceil(D + z*sqrt(D))",
            m.pool_demand_in_lead.clone(),
        );
        registry.register_with_unit(
            "pool_lead_time_estimate",
            "Boot lead time sizing uses, by quantile: 0.9 sizes the target (D = forecast x p90), 0.5 sets how many boots may run at once past the gate's window; recent boots, or the prior before any (p90: before 3)",
            Unit::Seconds,
            m.pool_lead_time.clone(),
        );
        registry.register(
            "pool_lead_time_samples",
            "Completed boots behind the lead-time estimate (0: the prior, the configured one stretched for the flavor's disk IOPS limit and the pool's volume_iops_limit if any)",
            m.pool_lead_time_samples.clone(),
        );
        registry.register(
            "pool_service_level_z",
            "z of the service level the auto target is sized for (0.995 -> 2.576)",
            m.pool_service_level_z.clone(),
        );
        registry.register(
            "pool_gate_window",
            "The throttle gate's AIMD window on builds (boot request until ACTIVE) in flight in the pool's availability zone: fractional as it grows, the zone admits its floor (8.75 admits 8); no series while the gate is disabled (gate = false)",
            m.pool_gate_window.clone(),
        );
        registry.register(
            "pool_gate_in_flight",
            "Builds (boot request until ACTIVE) in flight in the pool's availability zone, purchases included",
            m.pool_gate_in_flight.clone(),
        );
        registry.register(
            "pool_gate_hold",
            "1 while this pool's new boots wait, by reason: throttled (its availability zone's Retry-After pause, each pool's ending at its own jittered time: HTTP 429, a 413 that is not a quota, a 503 naming one) or quota (the project's: a pause after a quota refusal, or no room for a server of the pool's flavor by the last poll); 0 for a draining pool, which boots nothing",
            m.pool_gate_hold.clone(),
        );
        registry.register(
            "pool_quota_headroom",
            "Servers of the pool's flavor the project's quota leaves for refills: the last poll of the cloud's limits (Nova's compute quotas, Neutron's ports: two a server, its own and the tenant's it takes when sold, the ports each unsold server will yet take kept, two for a booting one) less what the boots started since hold and what purchases waiting for quota are kept, each by its own flavor's cores, RAM and instances (absent while unlimited, not read, or its last poll failed)",
            m.pool_quota_headroom.clone(),
        );
        registry.register(
            "pool_beyond_quota",
            "1 when one server of the pool's flavor needs more than the project's whole quota: nothing of it boots until the quota is raised",
            m.pool_beyond_quota.clone(),
        );
        registry.register(
            "allocations",
            "Allocate calls by outcome: warm (found an instance Ready), cold (booted its own), waited (waited for an instance to become Ready), exhausted (refused for want of an instance), precondition_failed, cloud_error, failed; the hit rate the pools are sized for is warm / (warm + cold + waited + exhausted), over calls: an order refused and asked again with its request id counts each call",
            m.allocations.clone(),
        );
        registry.register_with_unit(
            "allocate_duration",
            "Latency of successful Allocate calls, by path (warm: a pool instance found Ready; waited: a pool instance waited for; cold: a dedicated boot)",
            Unit::Seconds,
            m.allocate_duration.clone(),
        );
        registry.register(
            "boots",
            "Pool boots by result: ready, quota, rate_limited, no_valid_host, timeout, failed",
            m.boots.clone(),
        );
        registry.register_with_unit(
            "boot_lead_time",
            "Time from a boot request to the instance being Ready (successful boots only)",
            Unit::Seconds,
            m.boot_lead_time.clone(),
        );
        registry.register(
            "pool_exhausted",
            "Allocate calls that found no Ready instance they could claim (none, or only ones they found silent at their claim), once a call whether then refused, cold-booted or served after waiting; also a call whose timeout passed while its volume and port were made, the pool having no Ready instance then",
            m.exhausted.clone(),
        );
        registry.register(
            "leaks_deleted",
            "Cloud servers the reconciler deleted because the store did not know them (empty pool labels: unknown pool)",
            m.leaks_deleted.clone(),
        );
        registry.register(
            "pool_settings_changes",
            "Operator changes of a pool's settings",
            m.settings_changes.clone(),
        );
        registry.register("releases", "Allocations released", m.releases.clone());
        registry.register(
            "pool_degraded_episodes",
            "Times the pool became degraded (3 boots failed in a row, or its start-up cloud check failed)",
            m.degraded.clone(),
        );
        registry.register(
            "pool_recoveries",
            "Times a degraded pool recovered (a boot reached Ready, or its start-up cloud check passed again)",
            m.recovered.clone(),
        );
        registry.register(
            "metrics_events_lagged",
            "Manager events the metrics task missed because it fell behind (event-driven counters undercount by this much)",
            m.events_lagged.clone(),
        );
        registry.register_with_unit(
            "cloud_request_duration",
            "Latency of cloud API calls by service (compute, volume, network, image; identity for a call that failed at its Keystone token request, counted there and not under the service it went to) and status (ok or the error class)",
            Unit::Seconds,
            m.cloud_request_duration.clone(),
        );
        registry.register(
            "cloud_throttled",
            "Cloud API calls answered with a throttling error (HTTP 429, a 413 that is not a quota, a 503 with a Retry-After), by service",
            m.cloud_throttled.clone(),
        );
        registry.register(
            "retry_pauses",
            "Pauses warmpool took before retrying a throttled cloud call (honouring Retry-After), by service",
            m.retry_pauses.clone(),
        );
        registry.register_with_unit(
            "retry_pause",
            "Time warmpool paused before retrying throttled cloud calls, summed, by service",
            Unit::Seconds,
            m.retry_pause_seconds.clone(),
        );
        registry.register(
            "cloud_calls_paused",
            "Cloud calls waiting out the cloud's Retry-After (HTTP 429, 413 or 503) now, by service; counted from the start of each pause, which the retry_pause counters count only once it is over",
            m.cloud_calls_paused.clone(),
        );
        registry.register(
            "api_calls_refused",
            "warmpool.v1 calls refused for their bearer token (api_tokens), by method and reason: unauthenticated (no token, a malformed one, or one not in api_tokens), permission_denied (the token's role may not)",
            m.api_calls_refused.clone(),
        );
        registry.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "The notAfter of the TLS certificate served ([tls] cert_file), as a Unix time: clients refuse it from then on; no series without [tls] (or when its dates cannot be read)",
            Unit::Seconds,
            m.tls_certificate_expiry.clone(),
        );
        // Named and meant as Prometheus' own pair, so that a rule written
        // for one reads the other.
        registry.register(
            "config_last_reload_successful",
            "1 when the last config reload (SIGHUP, `systemctl reload warmpoold`) was taken, or none was asked since the start; 0 when it was refused, which changed nothing (the tokens and TLS in force stay): warmpoold's log says why (\"SIGHUP: reload refused\")",
            m.config_reload_successful.clone(),
        );
        registry.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the config in force was read: the last reload taken, or the start; a Unix time",
            Unit::Seconds,
            m.config_reload_success_time.clone(),
        );
        registry.register(
            "volumes_stuck_error_attaching",
            "Volumes warmpool was to delete that Cinder refuses to until a cloud admin resets them (openstack volume set --state available ID), not deleted yet: new volumes rolled-back purchases left error_attaching (the order is refused until then), and volumes of rolled-back or released orders, or twins of creates whose answer was lost, whose delete Cinder's backend failed (error_deleting); each holds Cinder quota, warmpool's own project's for every volume warmpool created",
            m.volumes_stuck.clone(),
        );
        registry.register(
            "servers_left_alone",
            "Pool servers the last reconcile pass left alone, each waiting for an operator, by reason: unknown_sold (no record names it and a tenant's volume is attached: a sold database whose order's record was lost, a store wiped or restored from an old copy; billing cannot release it), set_aside (its instance's or its order's record was set aside as unreadable by `warmpoold store set-aside`, until a warmpoold that reads it starts)",
            m.servers_left_alone.clone(),
        );
        registry.register_with_unit(
            "store_size",
            "The bytes the store takes on disk (data_dir) as sled counts them, the garbage of records rewritten or deleted that its compaction has not reclaimed yet included; read every minute, 0 until the first reading. Alert well before the data dir's volume is full: a full disk stops warmpoold. README's \"How big the store grows\" says what to expect, and what keep_released does to it",
            Unit::Bytes,
            m.store_size.clone(),
        );
        registry.register(
            "watch_streams",
            "WatchPools streams open now, of the 256 warmpoold serves at once (more are refused RESOURCE_EXHAUSTED); a stream whose messages wait 2 minutes in its buffer with none taken is ended, freeing its place",
            m.watch_streams.clone(),
        );
        for why in LeftAlone::ALL {
            touch(
                &m.servers_left_alone,
                &LeftAloneLabels {
                    reason: why.as_str(),
                },
            );
        }
        // Throttling is rare: create its series at zero, so they are there
        // (and `rate()` sees the first one) before it happens.
        for service in cloud::SERVICES {
            touch(&m.cloud_throttled, &ServiceLabels { service });
        }
        for service in CloudService::ALL
            .into_iter()
            .chain([CloudService::Identity])
            .map(CloudService::as_str)
            .chain([UNKNOWN_SERVICE])
        {
            touch(&m.retry_pauses, &ServiceLabels { service });
            touch(&m.retry_pause_seconds, &ServiceLabels { service });
            touch(&m.cloud_calls_paused, &ServiceLabels { service });
        }
        // Refusals too: an alert or a panel on them sees 0, not "no data",
        // until the first one.
        for method in crate::access::Method::ALL {
            for reason in ["unauthenticated", "permission_denied"] {
                touch(
                    &m.api_calls_refused,
                    &RefusedLabels {
                        method: method.name(),
                        reason,
                    },
                );
            }
        }
        // Pools' series are created as the pools are seen; leaks of no pool
        // the store knows (a store lost) have none to be created with.
        touch(&m.leaks_deleted, &PoolLabels::of(None));
        Metrics { registry, ..m }
    }

    /// Exports the notAfter (a Unix time) of the TLS certificate served
    /// from `cert_file` ([`crate::tls::watch_expiry`]).
    pub fn set_tls_certificate_expiry(&self, cert_file: &str, not_after: i64) {
        self.tls_certificate_expiry
            .get_or_create(&CertificateLabels {
                cert_file: cert_file.to_owned(),
            })
            .set(not_after);
    }

    /// The config file read `at` was put in force: at start, or by a
    /// reload.
    pub fn config_taken(&self, at: std::time::SystemTime) {
        let since_epoch = at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.config_reload_success_time.set(since_epoch);
        self.config_reload_successful.set(1);
    }

    /// A reload was refused: the config taken last stays in force.
    pub fn config_reload_refused(&self) {
        self.config_reload_successful.set(0);
    }

    /// The `warmpool_watch_streams` gauge, which the WatchPools service
    /// counts its open streams in.
    pub fn watch_streams(&self) -> Gauge {
        self.watch_streams.clone()
    }

    /// Drops `cert_file`'s series: no longer served, or its dates unread.
    pub fn forget_tls_certificate_expiry(&self, cert_file: &str) {
        self.tls_certificate_expiry.remove(&CertificateLabels {
            cert_file: cert_file.to_owned(),
        });
    }

    /// Updates the event-driven metrics. The manager has logged the event.
    /// Counts a warmpool.v1 call refused with `refusal` (UNAUTHENTICATED or
    /// PERMISSION_DENIED).
    pub fn api_call_refused(&self, method: crate::access::Method, refusal: tonic::Code) {
        let reason = match refusal {
            tonic::Code::PermissionDenied => "permission_denied",
            _ => "unauthenticated",
        };
        self.api_calls_refused
            .get_or_create(&RefusedLabels {
                method: method.name(),
                reason,
            })
            .inc();
    }

    pub fn record(&self, event: &Event) {
        let pool = PoolLabels::of(event.pool.as_ref());
        match &event.kind {
            EventKind::Boot { outcome, lead_time } => {
                self.boots
                    .get_or_create(&pool.with(boot_outcome_name(*outcome)).into())
                    .inc();
                if let (BootOutcome::Ready, Some(lead_time)) = (outcome, lead_time) {
                    self.boot_lead_time
                        .get_or_create(&pool)
                        .observe(lead_time.as_secs_f64());
                }
            }
            EventKind::Allocation {
                outcome, latency, ..
            } => {
                let outcome_name = allocation_outcome_name(*outcome);
                self.allocations
                    .get_or_create(&pool.with(outcome_name).into())
                    .inc();
                // By how the purchase was served: a wait for an instance
                // to become Ready must not be in the warm path's latency.
                if matches!(
                    outcome,
                    AllocationOutcome::Warm | AllocationOutcome::Waited | AllocationOutcome::Cold
                ) {
                    self.allocate_duration
                        .get_or_create(&pool.with(outcome_name).into())
                        .observe(latency.as_secs_f64());
                }
            }
            EventKind::Exhausted => {
                self.exhausted.get_or_create(&pool).inc();
            }
            EventKind::SettingsChanged { .. } => {
                self.settings_changes.get_or_create(&pool).inc();
            }
            EventKind::LeakDeleted { .. } => {
                self.leaks_deleted.get_or_create(&pool).inc();
            }
            EventKind::Released => {
                self.releases.get_or_create(&pool).inc();
            }
            EventKind::Degraded { .. } => {
                self.degraded.get_or_create(&pool).inc();
            }
            EventKind::Recovered { .. } => {
                self.recovered.get_or_create(&pool).inc();
            }
            EventKind::Throttled { service, pause } => {
                let labels = ServiceLabels {
                    service: service.map_or(UNKNOWN_SERVICE, CloudService::as_str),
                };
                self.retry_pauses.get_or_create(&labels).inc();
                self.retry_pause_seconds
                    .get_or_create(&labels)
                    .inc_by(pause.as_secs_f64());
            }
            // Counted from the store at each scrape, which a restart or a
            // lagging receiver does not lose.
            EventKind::VolumeStuck { .. } => {}
        }
    }

    /// Records one cloud call's latency and status (see [`MeteredCloud`]).
    pub fn observe_cloud(
        &self,
        service: &'static str,
        error: Option<&CloudError>,
        latency: Duration,
    ) {
        let status = cloud_status_name(error);
        self.cloud_request_duration
            .get_or_create(&CloudLabels { service, status })
            .observe(latency.as_secs_f64());
        // What the cloud asked for is not what warmpool waited: the pauses
        // actually taken are counted from the manager's events.
        if let Some(CloudError::Throttled { .. }) = error {
            self.cloud_throttled
                .get_or_create(&ServiceLabels { service })
                .inc();
        }
    }

    /// Consumes events until the manager goes away; a lagging receiver logs
    /// and counts what it missed and carries on.
    pub async fn run_events(&self, mut events: broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(event) => self.record(&event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.events_lagged.inc_by(missed);
                    tracing::warn!(
                        missed,
                        "metrics fell behind the manager's events; counters undercount"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Reads the store's size on disk into `warmpool_store_size_bytes`, now
    /// and every [`STORE_SIZE_EVERY`], until aborted. A reading that fails
    /// keeps the last one (and is logged at debug: a disk that fails fails
    /// the store's writes too, which stops warmpoold with the reason).
    pub async fn watch_store_size(&self, manager: PoolManager) {
        loop {
            self.read_store_size(&manager).await;
            tokio::time::sleep(STORE_SIZE_EVERY).await;
        }
    }

    /// One reading of [`Metrics::watch_store_size`].
    async fn read_store_size(&self, manager: &PoolManager) {
        match manager.store_size_on_disk().await {
            Ok(Some(bytes)) => {
                self.store_size
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the store's size on disk"),
        }
    }

    /// Sets the pool gauges and the calls paused from the manager's current
    /// view, and creates every pool's counters at zero so the first
    /// increment shows in `rate()`.
    async fn refresh(&self, manager: &PoolManager) -> ManagerResult<()> {
        for (service, paused) in manager.paused_cloud_calls() {
            let service = service.map_or(UNKNOWN_SERVICE, CloudService::as_str);
            self.cloud_calls_paused
                .get_or_create(&ServiceLabels { service })
                .set(i64::try_from(paused).unwrap_or(i64::MAX));
        }
        let pools = manager.list_pools().await?;
        // A deleted pool's record goes once it is drained, while its tenants'
        // instances stay until released: they are counted until then, or
        // `sum by (state)` would lose VMs that still exist and cost money.
        // A pool that exists shows every state even with no instance.
        let mut instance_counts = manager.instance_counts().await?;
        let stuck = manager.stuck_volumes().await?.len();
        self.volumes_stuck
            .set(i64::try_from(stuck).unwrap_or(i64::MAX));
        for (why, servers) in manager.servers_left_alone() {
            self.servers_left_alone
                .get_or_create(&LeftAloneLabels {
                    reason: why.as_str(),
                })
                .set(i64::try_from(servers).unwrap_or(i64::MAX));
        }
        for status in &pools {
            instance_counts
                .entry(status.record.key.clone())
                .or_default();
        }
        for family in [
            &self.pool_effective_target,
            &self.pool_min_ready,
            &self.pool_max_ready,
            &self.pool_window_min,
            &self.pool_paused,
            &self.pool_draining,
            &self.pool_boot_failure_streak,
            &self.pool_degraded,
            &self.pool_target_auto,
            &self.pool_lead_time_samples,
            &self.pool_gate_in_flight,
            &self.pool_quota_headroom,
            &self.pool_beyond_quota,
        ] {
            family.clear();
        }
        for family in [
            &self.pool_demand_in_lead,
            &self.pool_service_level_z,
            &self.pool_gate_window,
        ] {
            family.clear();
        }
        self.pool_instances.clear();
        self.pool_demand.clear();
        self.pool_lead_time.clear();
        self.pool_gate_hold.clear();
        for (key, counts) in &instance_counts {
            let pool = PoolLabels::of(Some(key));
            for state in InstanceState::ALL {
                self.pool_instances
                    .get_or_create(&pool.with(state_name(state)).into())
                    .set(i64::from(counts.get(&state).copied().unwrap_or(0)));
            }
        }
        // The other gauges describe a pool's settings and sizing: a deleted
        // pool has none.
        for status in pools {
            let pool = PoolLabels::of(Some(&status.record.key));
            let spec = &status.record.spec;
            for (family, value) in [
                (&self.pool_effective_target, status.effective_target),
                (&self.pool_min_ready, spec.min_ready),
                (&self.pool_max_ready, spec.max_ready),
                (&self.pool_window_min, status.sizing.window_min.unwrap_or(0)),
                (&self.pool_paused, u32::from(spec.paused)),
                (&self.pool_draining, u32::from(status.record.draining)),
                (
                    &self.pool_boot_failure_streak,
                    status.health.consecutive_boot_failures,
                ),
                (&self.pool_degraded, u32::from(status.health.degraded)),
                (&self.pool_target_auto, u32::from(status.sizing.auto)),
                (
                    &self.pool_lead_time_samples,
                    u32::try_from(status.sizing.lead.samples).unwrap_or(u32::MAX),
                ),
                (&self.pool_gate_in_flight, status.sizing.gate.in_flight),
                (
                    &self.pool_beyond_quota,
                    u32::from(status.sizing.quota.beyond_quota),
                ),
            ] {
                family.get_or_create(&pool).set(i64::from(value));
            }
            if let Some(left) = status.sizing.quota.left {
                self.pool_quota_headroom
                    .get_or_create(&pool)
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
            }
            let sizing = &status.sizing;
            for (family, value) in [
                (&self.pool_demand_in_lead, Some(sizing.demand_in_lead)),
                (&self.pool_service_level_z, Some(sizing.z)),
                (&self.pool_gate_window, sizing.gate.window),
            ] {
                if let Some(value) = value {
                    family.get_or_create(&pool).set(value);
                }
            }
            for (window, value) in [
                ("short", sizing.demand.short),
                ("long", sizing.demand.long),
                ("forecast", sizing.demand.forecast),
            ] {
                self.pool_demand
                    .get_or_create(&pool.with(window).into())
                    .set(value);
            }
            for (quantile, value) in [("0.5", sizing.lead.p50), ("0.9", sizing.lead.p90)] {
                self.pool_lead_time
                    .get_or_create(&pool.with(quantile).into())
                    .set(value.as_secs_f64());
            }
            // The zone's gate holds back boots (a draining pool shows none).
            let hold = sizing.gate.hold;
            for (reason, held) in [
                ("throttled", matches!(hold, Some(Hold::Throttled { .. }))),
                // A pause after a refusal, or headroom read as none.
                (
                    "quota",
                    matches!(hold, Some(Hold::Quota { .. }))
                        || sizing
                            .last_plan
                            .is_some_and(|p| p.reason == PlanReason::Quota),
                ),
            ] {
                self.pool_gate_hold
                    .get_or_create(&pool.with(reason).into())
                    .set(i64::from(held));
            }
            for outcome in ALLOCATION_OUTCOMES {
                touch(
                    &self.allocations,
                    &pool.with(allocation_outcome_name(outcome)).into(),
                );
            }
            for path in ["warm", "waited", "cold"] {
                touch(&self.allocate_duration, &pool.with(path).into());
            }
            for outcome in BOOT_OUTCOMES {
                touch(&self.boots, &pool.with(boot_outcome_name(outcome)).into());
            }
            touch(&self.boot_lead_time, &pool);
            for family in [
                &self.exhausted,
                &self.leaks_deleted,
                &self.settings_changes,
                &self.releases,
                &self.degraded,
                &self.recovered,
            ] {
                touch(family, &pool);
            }
        }
        Ok(())
    }

    /// The `/metrics` body: gauges refreshed from `manager`, then everything
    /// encoded in the OpenMetrics text format.
    pub async fn render(&self, manager: &PoolManager) -> ManagerResult<String> {
        let _one_at_a_time = self.scrape.lock().await;
        self.refresh(manager).await?;
        Ok(self.encode())
    }

    /// Encodes the metrics as they are, without refreshing the gauges.
    pub fn encode(&self) -> String {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)
            .expect("writing to a String cannot fail");
        body
    }
}

/// Creates the series `labels` of `family` (at zero) if it does not exist.
fn touch<L, M, C>(family: &Family<L, M, C>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(labels));
}

/// How long a connection to the metrics port may take to send a request's
/// headers, counted from when it is accepted or its previous response went
/// out; one that has not is closed (a kept-alive connection left idle too:
/// the next scrape opens another). A scrape sends them at once, so this
/// ends only sockets left silent or fed a byte at a time (a slowloris),
/// which would otherwise hold a descriptor and a task for good and, many
/// of them, leave none to accept with. As long as the gRPC port's time for
/// the HTTP/2 preface ([`crate::listener::PREFACE_TIMEOUT`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` (HTTP/1.1) until `shutdown` resolves,
/// then waits for the requests under way. Accepting goes on through
/// errors as the gRPC port's does ([`crate::listener::accept`]).
pub async fn serve(
    metrics: Arc<Metrics>,
    manager: PoolManager,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    type AppState = (Arc<Metrics>, PoolManager);

    async fn scrape(State((metrics, manager)): State<AppState>) -> Response {
        match metrics.render(&manager).await {
            Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read pools for /metrics");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read pools: {e}\n"),
                )
                    .into_response()
            }
        }
    }

    async fn index() -> &'static str {
        "warmpoold: metrics at /metrics\n"
    }

    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(index))
        .with_state((metrics, manager));
    // Not axum::serve: it gives hyper no timer, and without one hyper's
    // header read timeout never runs.
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some((socket, peer)) = crate::listener::accept(&listener, &mut shutdown).await {
        let connection =
            http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Debug only: every silent socket's timeout ends here.
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
    // Closes the port before the wait for the requests under way.
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            connections = open,
            "metrics port closed; waiting for the requests under way on {} still open (an idle one closes at once)",
            crate::shutdown::count(open, "connection"),
        );
    }
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            pool: Some(PoolKey::new("db.small", "az1")),
            kind,
            at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    /// The value of the sample `name{labels}` in `body`.
    fn sample(body: &str, name_and_labels: &str) -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {name_and_labels} in\n{body}"))
            .parse()
            .unwrap()
    }

    /// An order `request_id` of `key` with a new 20 GiB volume, failing fast
    /// on an empty pool.
    fn new_volume_order(
        request_id: &str,
        key: PoolKey,
        timeout: Duration,
    ) -> pool_manager::AllocateRequest {
        use pool_manager::model::{
            AllocationParams, EmptyPoolPolicy, NetworkRequest, VolumeRequest, VolumeSource,
        };
        pool_manager::AllocateRequest {
            params: AllocationParams {
                request_id: request_id.into(),
                tenant_project_id: "tenant-a".into(),
                pool: key,
                volume: VolumeRequest {
                    source: VolumeSource::New {
                        size_gib: 20,
                        volume_type: None,
                    },
                    delete_on_release: false,
                },
                network: NetworkRequest {
                    network_id: "tenant-net".into(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: Default::default(),
            },
            empty_pool: EmptyPoolPolicy::FailFast,
            timeout: Some(timeout),
        }
    }

    /// A started manager on `config`'s cloud with a db.small pool in az1
    /// of `ready` instances (min and max), its spec, and its key.
    async fn started_with_pool(
        config: cloudsim::SimConfig,
        ready: u32,
    ) -> (
        std::sync::Arc<cloudsim::SimCloud>,
        PoolManager,
        PoolKey,
        pool_manager::model::PoolSpec,
    ) {
        started_with_pool_and(config, ready, pool_manager::ManagerSettings::default()).await
    }

    /// [`started_with_pool`], the manager on `settings`.
    async fn started_with_pool_and(
        config: cloudsim::SimConfig,
        ready: u32,
        settings: pool_manager::ManagerSettings,
    ) -> (
        std::sync::Arc<cloudsim::SimCloud>,
        PoolManager,
        PoolKey,
        pool_manager::model::PoolSpec,
    ) {
        let sim = cloudsim::SimCloud::new(config);
        let manager = PoolManager::new(
            std::sync::Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            std::sync::Arc::new(sim.probe()),
            settings,
        );
        manager.start().await.unwrap();
        let key = PoolKey::new("db.small", "az1");
        let spec = pool_manager::model::PoolSpec {
            min_ready: ready,
            max_ready: ready,
            target: Default::default(),
            image: "mysql-8.0".into(),
            boot_timeout: Duration::from_secs(600),
            max_age: None,
            paused: false,
            windows: Vec::new(),
            iops_limit: None,
            volume_iops_limit: None,
        };
        manager
            .create_pool(key.clone(), spec.clone())
            .await
            .unwrap();
        (sim, manager, key, spec)
    }

    /// The store's size on disk is exported, and followed as it grows: a
    /// full data dir stops warmpoold, and its growth (sled's garbage, the
    /// orders kept) is what an alert watches.
    #[tokio::test(start_paused = true)]
    async fn the_store_size_gauge_follows_the_store_on_disk() {
        use pool_manager::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(pool_manager::store::SledStore::open(dir.path()).unwrap());
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::deterministic());
        let manager = PoolManager::new(
            store.clone(),
            sim.clone(),
            std::sync::Arc::new(sim.probe()),
            pool_manager::ManagerSettings::default(),
        );
        // A new sled store may still be 0 bytes on disk (its flusher thread
        // writes in the background): a pool flushed first makes it non-empty.
        let learned = |orders| pool_manager::sizing::LearnedSizing {
            saved_at: std::time::SystemTime::UNIX_EPOCH,
            demand_short: 0.0,
            demand_long: 0.0,
            demand_held: 0.0,
            held_for: None,
            allocations: 1000,
            leads: Vec::new(),
            orders,
        };
        let first_key = PoolKey::new("db.first", "az1");
        store
            .put_learned_sizing(&first_key, &learned(Vec::new()))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let on_disk = store.size_on_disk().await.unwrap().unwrap();
        assert!(on_disk > 0, "a flushed pool is on disk");
        let metrics = std::sync::Arc::new(Metrics::new());
        let size = || sample(&metrics.encode(), "warmpool_store_size_bytes");
        assert_eq!(size(), 0.0, "not read yet");
        let watch = tokio::spawn({
            let metrics = metrics.clone();
            let manager = manager.clone();
            async move { metrics.watch_store_size(manager).await }
        });
        // The reading runs on the blocking pool: the paused clock may move
        // on in the instant between its end and the watcher's wake-up, so
        // the test waits for the reading, not for a fixed time.
        let read_by = |bar: f64| {
            let size = &size;
            async move {
                let deadline = tokio::time::Instant::now() + STORE_SIZE_EVERY / 2;
                while size() <= bar && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                size()
            }
        };
        let first = read_by(0.0).await;
        // Not equal to `on_disk`: sled's flusher may have written since.
        assert!(first >= on_disk as f64, "read at once: {first} < {on_disk}");

        // Some megabytes of records, of a thousand order ids each.
        let orders = (0..1000)
            .map(|i| pool_manager::sizing::LearnedOrder {
                request_id: format!("order-{i:040}"),
                asked_before: Duration::from_secs(i),
            })
            .collect();
        let learned = learned(orders);
        for pool in 0..100 {
            let key = PoolKey::new(format!("db.{pool}"), "az1");
            store.put_learned_sizing(&key, &learned).await.unwrap();
        }
        store.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(size(), first, "read once a minute, not at every write");
        tokio::time::sleep(STORE_SIZE_EVERY - Duration::from_secs(1)).await;
        let next = read_by(first + 1e6).await;
        assert!(next > first + 1e6, "{next} after {first}");
        watch.abort();
    }

    /// A pool its project's quota leaves no room for shows in the quota
    /// hold gauge (not only a pause after a refusal: the headroom poll
    /// keeps refusals from happening at all).
    #[tokio::test(start_paused = true)]
    async fn a_pool_quota_leaves_no_room_for_is_held_for_quota() {
        use pool_manager::model::PoolSpec;
        let mut config = cloudsim::SimConfig {
            quotas: cloudsim::Quotas {
                max_instances: 2,
                ..Default::default()
            },
            max_cores: Some(20),
            ..cloudsim::SimConfig::deterministic()
        };
        // One server of it needs more cores than the whole quota.
        config.flavors.push("db.huge".into());
        config
            .flavor_sizes
            .push(cloudsim::FlavorSize::new("db.huge", 64, 1024, 10));
        let (_sim, manager, _, spec) = started_with_pool(config, 4).await;
        let huge = PoolSpec {
            min_ready: 1,
            max_ready: 1,
            ..spec
        };
        manager
            .create_pool(PoolKey::new("db.huge", "az1"), huge)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(300)).await;
        let m = Metrics::new();
        let body = m.render(&manager).await.unwrap();
        let held = |reason: &str| {
            sample(
                &body,
                &format!("warmpool_pool_gate_hold{{flavor=\"db.small\",availability_zone=\"az1\",reason=\"{reason}\"}}"),
            )
        };
        assert_eq!(held("quota"), 1.0, "{body}");
        assert_eq!(held("throttled"), 0.0);
        let of_pool = |name: &str, flavor: &str| {
            sample(
                &body,
                &format!("{name}{{flavor=\"{flavor}\",availability_zone=\"az1\"}}"),
            )
        };
        assert_eq!(
            of_pool("warmpool_pool_quota_headroom", "db.small"),
            0.0,
            "{body}"
        );
        assert_eq!(of_pool("warmpool_pool_beyond_quota", "db.small"), 0.0);
        assert_eq!(
            of_pool("warmpool_pool_beyond_quota", "db.huge"),
            1.0,
            "{body}"
        );
        manager.shutdown().await.unwrap();
    }

    /// A quota hold is the pool's, not its zone's: the project's quota
    /// leaves room for a server of one flavor and none for another's, and
    /// of two pools of one zone only the second is held. Its HELP says so
    /// (it said new boots "of the pool's availability zone" wait, and the
    /// dashboard plotted it per zone).
    #[tokio::test(start_paused = true)]
    async fn a_quota_hold_is_the_pools_not_its_zones() {
        use pool_manager::model::PoolSpec;
        // Two db.small (1 core each) fit in 5 cores; then a db.large (4) not.
        let config = cloudsim::SimConfig {
            max_cores: Some(5),
            ..cloudsim::SimConfig::deterministic()
        };
        let (_sim, manager, _, spec) = started_with_pool(config, 2).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        let large = PoolSpec {
            min_ready: 1,
            max_ready: 1,
            ..spec
        };
        manager
            .create_pool(PoolKey::new("db.large", "az1"), large)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        let body = Metrics::new().render(&manager).await.unwrap();
        let held = |flavor: &str| {
            sample(
                &body,
                &format!("warmpool_pool_gate_hold{{flavor=\"{flavor}\",availability_zone=\"az1\",reason=\"quota\"}}"),
            )
        };
        assert_eq!((held("db.small"), held("db.large")), (0.0, 1.0), "{body}");
        let hold = help(&body, "warmpool_pool_gate_hold");
        assert!(
            hold.starts_with("1 while this pool's new boots wait"),
            "{hold}"
        );
        assert!(
            !hold.contains("boots of the pool's availability zone"),
            "{hold}"
        );
        manager.shutdown().await.unwrap();
    }

    /// A pool being deleted boots nothing: it works toward no target, and
    /// neither its last plan (here "quota") nor its zone's gate holds it
    /// back, in GetPool and in the metrics alike, while it drains.
    #[tokio::test(start_paused = true)]
    async fn a_draining_pool_has_no_target_plan_or_hold() {
        let config = cloudsim::SimConfig {
            quotas: cloudsim::Quotas {
                max_instances: 2,
                ..Default::default()
            },
            ..cloudsim::SimConfig::deterministic()
        };
        let (_sim, manager, key, _) = started_with_pool(config, 3).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        let before = manager.get_pool(&key).await.unwrap();
        assert_eq!(before.effective_target, 3);
        assert_eq!(
            before.sizing.last_plan.map(|p| p.reason),
            Some(PlanReason::Quota),
            "{before:?}"
        );

        let answered = manager.delete_pool(&key).await.unwrap();
        let got = manager.get_pool(&key).await.unwrap();
        for status in [&answered, &got] {
            assert!(status.record.draining);
            assert_eq!(status.effective_target, 0, "{status:?}");
            assert_eq!(status.sizing.target, 0, "{status:?}");
            assert_eq!(status.sizing.last_plan, None, "{status:?}");
            assert_eq!(status.sizing.gate.hold, None, "{status:?}");
        }
        let body = Metrics::new().render(&manager).await.unwrap();
        let of_pool = |name: &str| {
            sample(
                &body,
                &format!("{name}{{flavor=\"db.small\",availability_zone=\"az1\"}}"),
            )
        };
        assert_eq!(of_pool("warmpool_pool_draining"), 1.0, "{body}");
        assert_eq!(of_pool("warmpool_pool_effective_target"), 0.0, "{body}");
        for reason in ["quota", "throttled"] {
            let held = sample(
                &body,
                &format!("warmpool_pool_gate_hold{{flavor=\"db.small\",availability_zone=\"az1\",reason=\"{reason}\"}}"),
            );
            assert_eq!(held, 0.0, "{reason}: {body}");
        }
        manager.shutdown().await.unwrap();
    }

    /// An open operator window raising min_ready shows in the metrics as
    /// GetPool's window_min does: the effective target it explains, 0 once
    /// the window closes.
    #[tokio::test(start_paused = true)]
    async fn an_open_window_exports_the_floor_it_raises() {
        let mut settings = pool_manager::ManagerSettings::default();
        // Monday 2024-01-01 08:50 UTC, moving with the paused clock.
        settings.sizing.wall_clock_start = Some(pool_manager::schedule::unix(
            1_704_067_200 + 8 * 3600 + 50 * 60,
        ));
        let (_sim, manager, key, _) =
            started_with_pool_and(cloudsim::SimConfig::deterministic(), 1, settings).await;
        manager
            .update_pool(&key, |spec| {
                spec.max_ready = 20;
                spec.windows = vec!["Mon-Fri 09:00-10:00 min 6".parse().unwrap()];
            })
            .await
            .unwrap();
        let scrape = || async {
            let body = Metrics::new().render(&manager).await.unwrap();
            let of_pool = |name: &str| {
                sample(
                    &body,
                    &format!("{name}{{flavor=\"db.small\",availability_zone=\"az1\"}}"),
                )
            };
            (
                of_pool("warmpool_pool_min_ready"),
                of_pool("warmpool_pool_window_min"),
                of_pool("warmpool_pool_effective_target"),
            )
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(scrape().await, (1.0, 0.0, 1.0));
        // 09:05: the window is open.
        tokio::time::sleep(Duration::from_secs(14 * 60)).await;
        let open = manager.get_pool(&key).await.unwrap();
        assert_eq!(open.sizing.window_min, Some(6));
        assert_eq!(scrape().await, (1.0, 6.0, 6.0));
        // 10:05: closed again.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(scrape().await, (1.0, 0.0, 1.0));
        manager.shutdown().await.unwrap();
    }

    /// With the gate off nothing limits boots to a window: the window
    /// gauge has no series for the pool, rather than the unused initial 8.
    #[tokio::test(start_paused = true)]
    async fn a_disabled_gate_exports_no_window() {
        let window_of = |body: &str| {
            body.lines()
                .find_map(|line| {
                    line.strip_prefix(
                        "warmpool_pool_gate_window{flavor=\"db.small\",availability_zone=\"az1\"} ",
                    )
                })
                .map(|v| v.parse::<f64>().unwrap())
        };
        for (gate, expected) in [
            (pool_manager::gate::GateSettings::default(), Some(8.0)),
            (pool_manager::gate::GateSettings::disabled(), None),
        ] {
            let settings = pool_manager::ManagerSettings {
                gate,
                ..Default::default()
            };
            let (_sim, manager, _, _) =
                started_with_pool_and(cloudsim::SimConfig::deterministic(), 1, settings).await;
            let body = Metrics::new().render(&manager).await.unwrap();
            assert_eq!(window_of(&body), expected, "{body}");
            manager.shutdown().await.unwrap();
        }
    }

    /// A new volume a rolled-back purchase left stuck `error_attaching`
    /// holds warmpool's volume quota and refuses its order until a cloud
    /// admin resets it: it is counted from the store at each scrape (so
    /// after a restart too) until the reconciler has deleted it.
    #[tokio::test(start_paused = true)]
    async fn a_volume_stuck_error_attaching_is_counted_until_deleted() {
        let (sim, manager, key, _) =
            started_with_pool(cloudsim::SimConfig::deterministic(), 1).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        let m = Metrics::new();
        let stuck = |body: &str| sample(body, "warmpool_volumes_stuck_error_attaching");
        assert_eq!(stuck(&m.render(&manager).await.unwrap()), 0.0);

        sim.faults().error_next_volume_attach(1, false);
        let order = new_volume_order("o-stuck", key, Duration::from_secs(3600));
        manager.allocate(order).await.unwrap_err();
        manager.reconcile().await.unwrap();
        let body = m.render(&manager).await.unwrap();
        assert_eq!(stuck(&body), 1.0, "{body}");

        let volume = manager.stuck_volumes().await.unwrap().remove(0);
        assert!(sim.reset_error_attaching(&volume));
        manager.reconcile().await.unwrap();
        assert_eq!(stuck(&m.render(&manager).await.unwrap()), 0.0);
        manager.shutdown().await.unwrap();
    }

    /// A sold server no record names (its order's record lost: a store
    /// wiped, or restored from an old copy) is left alone by every
    /// reconcile pass, which used only to log it: the gauge shows it from
    /// the last pass, and drops once it is gone.
    #[tokio::test(start_paused = true)]
    async fn a_sold_server_the_store_does_not_know_is_counted_as_left_alone() {
        use pool_manager::cloud::Cloud;
        let (sim, manager, key, _) =
            started_with_pool(cloudsim::SimConfig::deterministic(), 1).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        let order = new_volume_order("o-lost", key, Duration::from_secs(600));
        let sold = manager.allocate(order).await.unwrap();
        manager.shutdown().await.unwrap();
        drop(manager);

        // The store is lost: a new, empty one, started as one meant to be
        // new (warmpoold's --delete-unknown-servers).
        let manager = PoolManager::new(
            std::sync::Arc::new(pool_manager::store::SledStore::temporary().unwrap()),
            sim.clone(),
            std::sync::Arc::new(sim.probe()),
            pool_manager::ManagerSettings {
                delete_unknown_servers: true,
                ..Default::default()
            },
        );
        manager.start().await.unwrap();
        let m = Metrics::new();
        let left_alone = |body: &str, reason: &str| {
            sample(
                body,
                &format!(r#"warmpool_servers_left_alone{{reason="{reason}"}}"#),
            )
        };
        let body = m.render(&manager).await.unwrap();
        assert_eq!(left_alone(&body, "unknown_sold"), 1.0, "{body}");
        assert_eq!(left_alone(&body, "set_aside"), 0.0);
        assert!(body.contains("# TYPE warmpool_servers_left_alone gauge"));

        // Deleted by hand once its tenant is settled.
        sim.delete_server(&sold.server_id.unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        manager.reconcile().await.unwrap();
        let body = m.render(&manager).await.unwrap();
        assert_eq!(left_alone(&body, "unknown_sold"), 0.0, "{body}");
        manager.shutdown().await.unwrap();
    }

    #[test]
    fn events_move_the_counters_and_histograms() {
        let m = Metrics::new();
        m.record(&event(EventKind::Allocation {
            request_id: "order-1".into(),
            outcome: AllocationOutcome::Warm,
            latency: Duration::from_millis(20),
        }));
        m.record(&event(EventKind::Allocation {
            request_id: "order-1".into(),
            outcome: AllocationOutcome::Exhausted,
            latency: Duration::from_millis(1),
        }));
        // Served after a wait for an instance to become Ready: its wait is
        // not in the warm path's latency.
        m.record(&event(EventKind::Allocation {
            request_id: "order-2".into(),
            outcome: AllocationOutcome::Waited,
            latency: Duration::from_secs(90),
        }));
        m.record(&event(EventKind::Exhausted));
        m.record(&event(EventKind::Boot {
            outcome: BootOutcome::Ready,
            lead_time: Some(Duration::from_secs(3)),
        }));
        // Resumed after a restart: a boot, but no lead time.
        m.record(&event(EventKind::Boot {
            outcome: BootOutcome::Ready,
            lead_time: None,
        }));
        m.record(&Event {
            pool: None,
            kind: EventKind::LeakDeleted {
                server_id: "srv-1".into(),
            },
            at: std::time::SystemTime::UNIX_EPOCH,
        });
        let body = m.encode();
        let pool = r#"flavor="db.small",availability_zone="az1""#;
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocations_total{{{pool},outcome=\"warm\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocations_total{{{pool},outcome=\"exhausted\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocate_duration_seconds_count{{{pool},path=\"warm\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocate_duration_seconds_sum{{{pool},path=\"warm\"}}")
            ),
            0.02
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocations_total{{{pool},outcome=\"waited\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_allocate_duration_seconds_sum{{{pool},path=\"waited\"}}")
            ),
            90.0
        );
        assert_eq!(
            sample(&body, &format!("warmpool_pool_exhausted_total{{{pool}}}")),
            1.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_boots_total{{{pool},result=\"ready\"}}")
            ),
            2.0
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_boot_lead_time_seconds_bucket{{le=\"5.0\",{pool}}}")
            ),
            1.0,
            "3 s falls in the 5 s bucket"
        );
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_boot_lead_time_seconds_count{{{pool}}}")
            ),
            1.0,
            "the resumed boot is no lead-time sample"
        );

        assert_eq!(
            sample(
                &body,
                r#"warmpool_leaks_deleted_total{flavor="",availability_zone=""}"#
            ),
            1.0
        );
        // A doc line and a type for every family.
        assert!(body.contains("# HELP warmpool_allocations Allocate calls by outcome"));
        assert!(body.contains("# TYPE warmpool_boot_lead_time_seconds histogram"));
        assert!(body.ends_with("# EOF\n"));
    }

    #[test]
    fn verdicts_and_pauses_taken_are_counted() {
        let m = Metrics::new();
        m.record(&event(EventKind::Degraded {
            cause: pool_manager::events::DegradedCause::Boots(BootOutcome::NoValidHost),
            consecutive_failures: 3,
            last_error: None,
        }));
        m.record(&event(EventKind::Recovered {
            after_failures: 3,
            checked: false,
        }));
        for service in [
            Some(CloudService::Compute),
            Some(CloudService::Compute),
            None,
        ] {
            m.record(&Event {
                pool: None,
                kind: EventKind::Throttled {
                    service,
                    pause: Duration::from_millis(1500),
                },
                at: std::time::SystemTime::UNIX_EPOCH,
            });
        }
        let body = m.encode();
        let pool = r#"flavor="db.small",availability_zone="az1""#;
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_pool_degraded_episodes_total{{{pool}}}")
            ),
            1.0
        );
        assert_eq!(
            sample(&body, &format!("warmpool_pool_recoveries_total{{{pool}}}")),
            1.0
        );
        assert_eq!(
            sample(&body, r#"warmpool_retry_pauses_total{service="compute"}"#),
            2.0
        );
        assert_eq!(
            sample(
                &body,
                r#"warmpool_retry_pause_seconds_total{service="compute"}"#
            ),
            3.0
        );
        assert_eq!(
            sample(&body, r#"warmpool_retry_pauses_total{service="unknown"}"#),
            1.0
        );
        // Created at zero before any pause.
        assert_eq!(
            sample(&body, r#"warmpool_retry_pauses_total{service="volume"}"#),
            0.0
        );
        assert!(body.contains("# HELP warmpool_retry_pause_seconds Time warmpool paused"));
    }

    /// The `# HELP` text of the family `name` in `body`.
    fn help<'a>(body: &'a str, name: &str) -> &'a str {
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("no HELP for {name} in\n{body}"))
    }

    /// A family's HELP text is all an operator reading /metrics or
    /// Grafana's tooltip sees: it names every cause the family counts. A
    /// pool that fails its start-up cloud check is degraded without a
    /// failed boot, a 503 naming a Retry-After is waited out (and holds
    /// the pool's boots) as a 429 is, a call that failed at Keystone is
    /// counted under identity, and an unauthenticated call may carry a
    /// token, a malformed one or one this daemon does not know. A pool is counted exhausted by every
    /// call that found no Ready instance it could claim, served after all
    /// or not, and by one whose timeout passed while its volume was made.
    #[test]
    fn help_texts_name_every_cause_their_families_count() {
        let m = Metrics::new();
        m.record(&event(EventKind::Degraded {
            cause: pool_manager::events::DegradedCause::CloudCheck {
                problem: "flavor db.small is gone".into(),
            },
            consecutive_failures: 0,
            last_error: None,
        }));
        m.record(&event(EventKind::Exhausted));
        // Set at scrape time from the manager's view.
        let pool_labels = PoolLabels {
            flavor: "db.small".into(),
            availability_zone: "az1".into(),
        };
        m.pool_gate_hold
            .get_or_create(&pool_labels.with("throttled").into())
            .set(1);
        m.observe_cloud(
            "volume",
            Some(&CloudError::Throttled {
                retry_after: Some(Duration::from_secs(30)),
                message: "Service Unavailable".into(),
                unavailable: true,
            }),
            Duration::from_millis(5),
        );
        let body = m.encode();
        let pool = r#"flavor="db.small",availability_zone="az1""#;
        assert_eq!(
            sample(
                &body,
                &format!("warmpool_pool_degraded_episodes_total{{{pool}}}")
            ),
            1.0
        );
        let episodes = help(&body, "warmpool_pool_degraded_episodes");
        assert!(episodes.contains("cloud check"), "{episodes}");
        assert_eq!(
            sample(&body, r#"warmpool_cloud_throttled_total{service="volume"}"#),
            1.0
        );
        for name in ["warmpool_cloud_throttled", "warmpool_cloud_calls_paused"] {
            let text = help(&body, name);
            assert!(text.contains("503"), "{name}: {text}");
        }
        let refused = help(&body, "warmpool_api_calls_refused");
        for cause in ["no token", "malformed", "not in api_tokens"] {
            assert!(refused.contains(cause), "{cause}: {refused}");
        }
        let exhausted = help(&body, "warmpool_pool_exhausted");
        for cause in [
            "could claim",
            "once a call",
            "refused",
            "cold-booted",
            "after waiting",
            "timeout passed",
        ] {
            assert!(exhausted.contains(cause), "{cause}: {exhausted}");
        }
        // The pool's gate holds its boots for a 503 naming a Retry-After
        // too: the cloud answered CloudError::Throttled.
        let hold = help(&body, "warmpool_pool_gate_hold");
        assert!(hold.contains("503"), "{hold}");
        // Every service a cloud call is counted under, Keystone's too.
        let latency = help(&body, "warmpool_cloud_request_duration_seconds");
        for service in cloud::SERVICES {
            assert!(latency.contains(service), "{service}: {latency}");
        }
    }

    /// histogram_quantile answers a quantile that falls in +Inf with the
    /// top finite bound: were that below the longest boot timeout, the
    /// lead-time p90 of a slow cloud would stop there, and
    /// WarmpoolBootLeadTimeHigh could not fire.
    #[test]
    fn the_lead_time_buckets_reach_the_longest_boot_timeout() {
        let top = LEAD_TIME_BUCKETS[LEAD_TIME_BUCKETS.len() - 1];
        assert!(
            top >= pool_manager::model::MAX_BOOT_TIMEOUT.as_secs_f64(),
            "top finite lead-time bucket {top} s"
        );
        assert!(LEAD_TIME_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    /// A cold purchase may wait up to MAX_ALLOCATE_TIMEOUT for its boot. One
    /// that took 25 minutes must be counted in a finite bucket, or
    /// histogram_quantile reports it as the top finite bound and the
    /// dashboard's slow cold purchases all read the same.
    #[test]
    fn a_slow_cold_allocation_lands_below_the_inf_bucket() {
        let m = Metrics::new();
        m.record(&event(EventKind::Allocation {
            request_id: "order-1".into(),
            outcome: AllocationOutcome::Cold,
            latency: Duration::from_secs(1500),
        }));
        let body = m.encode();
        let cold = r#"flavor="db.small",availability_zone="az1",path="cold""#;
        let buckets: Vec<(f64, f64)> = body
            .lines()
            .filter_map(|line| line.strip_prefix("warmpool_allocate_duration_seconds_bucket{"))
            .filter_map(|rest| {
                let (labels, value) = rest.split_once("} ")?;
                let le = labels.strip_prefix("le=\"")?.split_once("\",")?;
                (le.1 == cold && le.0 != "+Inf")
                    .then(|| (le.0.parse().unwrap(), value.parse().unwrap()))
            })
            .collect();
        let (top, count) = buckets
            .iter()
            .copied()
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        assert_eq!(
            count, 1.0,
            "1500 s fell in +Inf: the top finite bucket is {top} s\n{body}"
        );
        assert!(
            top >= crate::convert::MAX_ALLOCATE_TIMEOUT.as_secs_f64(),
            "top finite Allocate bucket {top} s is below MAX_ALLOCATE_TIMEOUT"
        );
    }

    /// A cloud call waits up to `cloud.request_timeout` for each request it
    /// sends, which may be set to MAX_OPENSTACK_REQUEST_TIMEOUT. A call that
    /// waited that long must be counted in a finite bucket, or
    /// histogram_quantile reports it as the top finite bound and the
    /// dashboard's "Cloud API latency (p95)" reads flat there, however
    /// slow the cloud.
    #[test]
    fn a_cloud_call_as_long_as_the_longest_request_timeout_lands_below_the_inf_bucket() {
        let m = Metrics::new();
        let longest = crate::config::MAX_OPENSTACK_REQUEST_TIMEOUT;
        m.observe_cloud("compute", None, longest);
        let body = m.encode();
        let series = r#"service="compute",status="ok""#;
        let buckets: Vec<(f64, f64)> = body
            .lines()
            .filter_map(|line| line.strip_prefix("warmpool_cloud_request_duration_seconds_bucket{"))
            .filter_map(|rest| {
                let (labels, value) = rest.split_once("} ")?;
                let (le, labels) = labels.strip_prefix("le=\"")?.split_once("\",")?;
                (labels == series && le != "+Inf")
                    .then(|| (le.parse().unwrap(), value.parse().unwrap()))
            })
            .collect();
        assert!(!buckets.is_empty(), "no buckets of {series}\n{body}");
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{buckets:?}");
        let (top, count) = buckets[buckets.len() - 1];
        assert_eq!(
            count, 1.0,
            "a {longest:?} cloud call fell in +Inf: the top finite bucket is {top} s\n{body}"
        );
        assert!(
            top >= longest.as_secs_f64(),
            "top finite cloud-latency bucket {top} s is below MAX_OPENSTACK_REQUEST_TIMEOUT"
        );
    }

    /// The series of events with no pool or no service are there at zero
    /// from the start, as the known ones are: `increase()` over a series
    /// born at its first event misses that event, and a store that was lost
    /// (the leaks WarmpoolLeakRateHigh is for) knows no pool.
    #[test]
    fn the_series_of_unknown_pools_and_services_start_at_zero() {
        let body = Metrics::new().encode();
        for name_and_labels in [
            r#"warmpool_leaks_deleted_total{flavor="",availability_zone=""}"#,
            r#"warmpool_retry_pauses_total{service="unknown"}"#,
            r#"warmpool_retry_pause_seconds_total{service="unknown"}"#,
            r#"warmpool_cloud_calls_paused{service="unknown"}"#,
        ] {
            assert_eq!(sample(&body, name_and_labels), 0.0, "{name_and_labels}");
        }
    }

    /// A call waiting out the cloud's Retry-After is counted at each scrape
    /// while it waits, not only once its pause is over (up to an hour
    /// later, when the pause seconds are counted): every service's series
    /// is there at zero before, and again after.
    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_out_a_retry_after_is_counted_at_each_scrape() {
        let (sim, manager, key, _) =
            started_with_pool(cloudsim::SimConfig::deterministic(), 1).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        // Nothing boots behind the test's back to meet the 429 instead.
        manager
            .update_pool(&key, |spec| spec.paused = true)
            .await
            .unwrap();
        let m = Metrics::new();
        let services = ["compute", "volume", "network", "image", "unknown"];
        let paused = |body: &str, service: &str| {
            sample(
                body,
                &format!(r#"warmpool_cloud_calls_paused{{service="{service}"}}"#),
            )
        };
        let body = m.render(&manager).await.unwrap();
        for service in services {
            assert_eq!(paused(&body, service), 0.0, "{service}");
        }
        assert!(body.contains("# TYPE warmpool_cloud_calls_paused gauge"));

        sim.faults().api_errors_next(
            1,
            CloudError::Throttled {
                retry_after: Some(pool_manager::cloud::MAX_RETRY_AFTER),
                message: "Rate limit exceeded".into(),
                unavailable: false,
            },
        );
        let order = new_volume_order("o-paused", key, Duration::from_secs(3 * 3600));
        let purchase = tokio::spawn({
            let manager = manager.clone();
            async move { manager.allocate(order).await }
        });
        // The purchase's first calls (its volume and port, made together)
        // meet the 429 within seconds; the pause lasts an hour.
        let mut by_service = Vec::new();
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let body = m.render(&manager).await.unwrap();
            by_service = services.map(|s| (s, paused(&body, s))).to_vec();
            if by_service.iter().any(|(_, n)| *n > 0.0) {
                break;
            }
        }
        let total: f64 = by_service.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 1.0, "{by_service:?}");
        assert!(
            by_service
                .iter()
                .any(|&(s, n)| n == 1.0 && (s == "volume" || s == "network")),
            "{by_service:?}"
        );

        purchase.await.unwrap().unwrap();
        let body = m.render(&manager).await.unwrap();
        for service in services {
            assert_eq!(paused(&body, service), 0.0, "{service}");
        }
        manager.shutdown().await.unwrap();
    }

    #[test]
    fn throttled_cloud_answers_are_counted_but_not_as_pauses() {
        let m = Metrics::new();
        m.observe_cloud(
            "compute",
            Some(&CloudError::Throttled {
                retry_after: Some(Duration::from_secs(2)),
                message: "slow down".into(),
                unavailable: false,
            }),
            Duration::from_millis(5),
        );
        m.observe_cloud("compute", None, Duration::from_millis(5));
        let body = m.encode();
        assert_eq!(
            sample(
                &body,
                r#"warmpool_cloud_throttled_total{service="compute"}"#
            ),
            1.0
        );
        // The pause is counted when the manager takes it, not when asked.
        assert_eq!(
            sample(
                &body,
                r#"warmpool_retry_pause_seconds_total{service="compute"}"#
            ),
            0.0
        );
        assert_eq!(
            sample(
                &body,
                r#"warmpool_cloud_request_duration_seconds_count{service="compute",status="ok"}"#
            ),
            1.0
        );
    }

    /// A pool's boot spec is checked with Nova (its flavor and zone),
    /// Cinder (its volumes' zone) and Glance (its image): each part is
    /// timed under its own service, the Glance lookup as `image`, not the
    /// whole as one compute call. The `image` series are there from the
    /// start, as the others are.
    #[tokio::test]
    async fn a_boot_spec_check_times_the_image_lookup_under_image() {
        use pool_manager::cloud::Cloud;
        let m = std::sync::Arc::new(Metrics::new());
        let body = m.encode();
        assert_eq!(
            sample(&body, r#"warmpool_cloud_throttled_total{service="image"}"#),
            0.0
        );
        let sim = cloudsim::SimCloud::new(cloudsim::SimConfig::default());
        let cloud = MeteredCloud::new(sim, m.clone());
        cloud
            .check_boot_spec(&PoolKey::new("db.small", "az1"), "mysql-8.0")
            .await
            .unwrap();
        let body = m.encode();
        for service in ["compute", "volume", "image"] {
            assert_eq!(
                sample(
                    &body,
                    &format!(
                        "warmpool_cloud_request_duration_seconds_count{{service=\"{service}\",status=\"ok\"}}"
                    )
                ),
                1.0,
                "{service}"
            );
        }
    }

    #[tokio::test]
    async fn a_lagging_event_task_counts_what_it_missed_and_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        // Five events into a channel of two: the receiver lags by three.
        for _ in 0..5 {
            tx.send(event(EventKind::Released)).unwrap();
        }
        drop(tx);
        let m = Metrics::new();
        m.run_events(rx).await; // returns once the channel is closed
        let body = m.encode();
        assert_eq!(sample(&body, "warmpool_metrics_events_lagged_total"), 3.0);
        assert_eq!(
            sample(
                &body,
                r#"warmpool_releases_total{flavor="db.small",availability_zone="az1"}"#
            ),
            2.0
        );
    }
}
