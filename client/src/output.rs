//! Value formatting shared by both output modes, and the JSON views.
//!
//! prost types do not derive serde, so `--output json` goes through the small
//! view structs below. Their shape follows the proto messages (same snake_case
//! field names), with three deliberate differences that make the output
//! pleasant for scripts: enums are their names ("READY", not 3), durations
//! are humantime strings ("1m 30s"), timestamps are RFC 3339. Absent
//! messages are `null`; maps are sorted by key so the output is stable.
//!
//! Top-level shapes: list commands print `{"pools": [...]}` /
//! `{"instances": [...]}` like the List responses; `allocate`, `get` and
//! `release` all print the Allocation object itself (so `jq .state` works
//! on any of them); pool commands print the Pool object; `watch` prints one
//! PoolStatus (`{"pool": {...}, "at": "..."}`) per line.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use warmpool_client::api;

// ---- scalar formatting -------------------------------------------------------

/// An enum's wire name without its type prefix: "READY" rather than
/// "INSTANCE_STATE_READY". Proto style prefixes values with the enum name to
/// avoid C++ scoping clashes; that prefix is noise to an operator.
/// Unknown numbers (a newer server) are shown, not hidden.
fn enum_name(known: Option<&'static str>, prefix: &str, value: i32) -> String {
    match known {
        Some(name) => name.strip_prefix(prefix).unwrap_or(name).to_owned(),
        None => format!("UNKNOWN({value})"),
    }
}

pub fn allocation_state(value: i32) -> String {
    let known = api::AllocationState::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "ALLOCATION_STATE_", value)
}

pub fn instance_state(value: i32) -> String {
    let known = api::InstanceState::try_from(value).ok();
    enum_name(known.map(|s| s.as_str_name()), "INSTANCE_STATE_", value)
}

/// A protobuf duration as humantime, exactly ("1s 234ms 567us").
/// Negative durations are invalid on this API but are still shown honestly.
pub fn duration_exact(d: &prost_types::Duration) -> String {
    match Duration::try_from(*d) {
        Ok(d) => humantime::format_duration(d).to_string(),
        Err(_) => {
            let abs = Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs());
            format!("-{}", humantime::format_duration(abs))
        }
    }
}

/// A duration for tables: whole milliseconds are plenty for a person
/// ("1s 234ms"); only sub-millisecond values keep their precision so they do
/// not all read as "0s".
pub fn duration_short(d: &prost_types::Duration) -> String {
    let mut d = *d;
    if d.seconds != 0 || d.nanos.abs() >= 1_000_000 {
        d.nanos -= d.nanos % 1_000_000;
    }
    duration_exact(&d)
}

fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*ts).ok()
}

/// A timestamp as RFC 3339 with milliseconds (JSON), or with seconds (tables).
pub fn timestamp(ts: &prost_types::Timestamp, millis: bool) -> String {
    match system_time(ts) {
        Some(t) if millis => humantime::format_rfc3339_millis(t).to_string(),
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("{}s{}ns", ts.seconds, ts.nanos),
    }
}

/// The name operators use for a pool.
pub fn pool_name(flavor: &str, availability_zone: &str) -> String {
    format!("{flavor}@{availability_zone}")
}

/// One word for what the pool manager does with a pool.
pub fn pool_status(pool: &api::Pool) -> &'static str {
    if pool.draining {
        "draining"
    } else if pool.spec.as_ref().is_some_and(|s| s.paused) {
        "paused"
    } else {
        "active"
    }
}

// ---- JSON views --------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct PoolSpecView<'a> {
    min_ready: u32,
    max_ready: u32,
    target: u32,
    image: &'a str,
    boot_timeout: Option<String>,
    max_age: Option<String>,
    paused: bool,
}

impl<'a> From<&'a api::PoolSpec> for PoolSpecView<'a> {
    fn from(s: &'a api::PoolSpec) -> Self {
        PoolSpecView {
            min_ready: s.min_ready,
            max_ready: s.max_ready,
            target: s.target,
            image: &s.image,
            boot_timeout: s.boot_timeout.as_ref().map(duration_exact),
            max_age: s.max_age.as_ref().map(duration_exact),
            paused: s.paused,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolCountsView {
    booting: u32,
    warming: u32,
    ready: u32,
    claimed: u32,
    allocated: u32,
    releasing: u32,
    failed: u32,
    deleting: u32,
}

impl From<&api::PoolCounts> for PoolCountsView {
    fn from(c: &api::PoolCounts) -> Self {
        PoolCountsView {
            booting: c.booting,
            warming: c.warming,
            ready: c.ready,
            claimed: c.claimed,
            allocated: c.allocated,
            releasing: c.releasing,
            failed: c.failed,
            deleting: c.deleting,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolView<'a> {
    flavor: &'a str,
    availability_zone: &'a str,
    spec: Option<PoolSpecView<'a>>,
    effective_target: u32,
    counts: Option<PoolCountsView>,
    draining: bool,
    allocations_warm: u64,
    allocations_cold: u64,
    allocations_failed: u64,
    last_error: &'a str,
}

impl<'a> From<&'a api::Pool> for PoolView<'a> {
    fn from(p: &'a api::Pool) -> Self {
        PoolView {
            flavor: &p.flavor,
            availability_zone: &p.availability_zone,
            spec: p.spec.as_ref().map(Into::into),
            effective_target: p.effective_target,
            counts: p.counts.as_ref().map(Into::into),
            draining: p.draining,
            allocations_warm: p.allocations_warm,
            allocations_cold: p.allocations_cold,
            allocations_failed: p.allocations_failed,
            last_error: &p.last_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TimingsView {
    claim: Option<String>,
    volume: Option<String>,
    port: Option<String>,
    verify: Option<String>,
    wait: Option<String>,
    total: Option<String>,
}

impl From<&api::StepTimings> for TimingsView {
    fn from(t: &api::StepTimings) -> Self {
        let f = |d: &Option<prost_types::Duration>| d.as_ref().map(duration_exact);
        TimingsView {
            claim: f(&t.claim),
            volume: f(&t.volume),
            port: f(&t.port),
            verify: f(&t.verify),
            wait: f(&t.wait),
            total: f(&t.total),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AllocationView<'a> {
    request_id: &'a str,
    tenant_project_id: &'a str,
    flavor: &'a str,
    availability_zone: &'a str,
    state: String,
    warm_hit: bool,
    instance_id: &'a str,
    server_id: &'a str,
    volume_id: &'a str,
    port_id: &'a str,
    ip_address: &'a str,
    timings: Option<TimingsView>,
    created_at: Option<String>,
    labels: BTreeMap<&'a str, &'a str>,
}

impl<'a> From<&'a api::Allocation> for AllocationView<'a> {
    fn from(a: &'a api::Allocation) -> Self {
        AllocationView {
            request_id: &a.request_id,
            tenant_project_id: &a.tenant_project_id,
            flavor: &a.flavor,
            availability_zone: &a.availability_zone,
            state: allocation_state(a.state),
            warm_hit: a.warm_hit,
            instance_id: &a.instance_id,
            server_id: &a.server_id,
            volume_id: &a.volume_id,
            port_id: &a.port_id,
            ip_address: &a.ip_address,
            timings: a.timings.as_ref().map(Into::into),
            created_at: a.created_at.as_ref().map(|t| timestamp(t, true)),
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InstanceView<'a> {
    id: &'a str,
    flavor: &'a str,
    availability_zone: &'a str,
    server_id: &'a str,
    state: String,
    created_at: Option<String>,
    ready_at: Option<String>,
    attempts: u32,
    last_error: &'a str,
    request_id: &'a str,
}

impl<'a> From<&'a api::Instance> for InstanceView<'a> {
    fn from(i: &'a api::Instance) -> Self {
        InstanceView {
            id: &i.id,
            flavor: &i.flavor,
            availability_zone: &i.availability_zone,
            server_id: &i.server_id,
            state: instance_state(i.state),
            created_at: i.created_at.as_ref().map(|t| timestamp(t, true)),
            ready_at: i.ready_at.as_ref().map(|t| timestamp(t, true)),
            attempts: i.attempts,
            last_error: &i.last_error,
            request_id: &i.request_id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolStatusView<'a> {
    pool: Option<PoolView<'a>>,
    at: Option<String>,
}

impl<'a> From<&'a api::PoolStatus> for PoolStatusView<'a> {
    fn from(s: &'a api::PoolStatus) -> Self {
        PoolStatusView {
            pool: s.pool.as_ref().map(Into::into),
            at: s.at.as_ref().map(|t| timestamp(t, true)),
        }
    }
}

pub fn pools_json(pools: &[api::Pool]) -> Value {
    let views: Vec<PoolView> = pools.iter().map(Into::into).collect();
    json!({ "pools": views })
}

pub fn instances_json(instances: &[api::Instance]) -> Value {
    let views: Vec<InstanceView> = instances.iter().map(Into::into).collect();
    json!({ "instances": views })
}

/// Serializes any view. The views hold only strings, numbers, options and
/// string maps, so this cannot fail.
pub fn to_json(view: impl Serialize) -> Value {
    serde_json::to_value(view).expect("views serialize to JSON")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn d(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    pub(crate) fn sample_pools() -> Vec<api::Pool> {
        vec![
            api::Pool {
                flavor: "m1.large".into(),
                availability_zone: "az1".into(),
                spec: Some(api::PoolSpec {
                    min_ready: 2,
                    max_ready: 5,
                    target: 0,
                    image: "mysql-8.0".into(),
                    boot_timeout: d(600, 0),
                    max_age: d(86_400, 0),
                    paused: false,
                }),
                effective_target: 2,
                counts: Some(api::PoolCounts {
                    booting: 1,
                    warming: 0,
                    ready: 2,
                    allocated: 7,
                    ..Default::default()
                }),
                draining: false,
                allocations_warm: 12,
                allocations_cold: 1,
                allocations_failed: 0,
                last_error: String::new(),
            },
            api::Pool {
                flavor: "m1.xlarge".into(),
                availability_zone: "az2".into(),
                spec: Some(api::PoolSpec {
                    min_ready: 1,
                    max_ready: 3,
                    target: 3,
                    image: "mysql-8.4".into(),
                    paused: true,
                    ..Default::default()
                }),
                effective_target: 3,
                counts: Some(api::PoolCounts {
                    warming: 3,
                    failed: 1,
                    ..Default::default()
                }),
                draining: false,
                allocations_warm: 0,
                allocations_cold: 0,
                allocations_failed: 4,
                last_error: "boot timed out\nafter 10m".into(),
            },
        ]
    }

    pub(crate) fn sample_allocation() -> api::Allocation {
        api::Allocation {
            request_id: "order-42".into(),
            tenant_project_id: "tenant-a".into(),
            flavor: "m1.large".into(),
            availability_zone: "az1".into(),
            state: api::AllocationState::Allocated.into(),
            warm_hit: true,
            instance_id: "inst-1".into(),
            server_id: "srv-1".into(),
            volume_id: "vol-1".into(),
            port_id: "port-1".into(),
            ip_address: "10.0.0.5".into(),
            timings: Some(api::StepTimings {
                claim: d(0, 3_000_000),
                volume: d(1, 250_000_000),
                port: d(0, 400_000_000),
                verify: d(0, 80_500_000),
                total: d(1, 733_500_000),
                wait: None,
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_764_000_000,
                nanos: 123_000_000,
            }),
            labels: [("tier", "gold"), ("app", "billing")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn enum_names_drop_the_type_prefix() {
        assert_eq!(
            allocation_state(api::AllocationState::Allocated.into()),
            "ALLOCATED"
        );
        assert_eq!(instance_state(api::InstanceState::Ready.into()), "READY");
        assert_eq!(instance_state(0), "UNSPECIFIED");
        assert_eq!(instance_state(99), "UNKNOWN(99)");
    }

    #[test]
    fn durations() {
        let p = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(duration_exact(&p(90, 0)), "1m 30s");
        assert_eq!(duration_exact(&p(1, 234_567_000)), "1s 234ms 567us");
        assert_eq!(duration_short(&p(1, 234_567_000)), "1s 234ms");
        assert_eq!(duration_short(&p(0, 450_000)), "450us");
        assert_eq!(duration_short(&p(0, 0)), "0s");
        assert_eq!(duration_exact(&p(-2, 0)), "-2s");
    }

    #[test]
    fn pool_json_shape() {
        let pools = sample_pools();
        let v = pools_json(&pools);
        let first = &v["pools"][0];
        assert_eq!(first["flavor"], "m1.large");
        assert_eq!(first["availability_zone"], "az1");
        assert_eq!(first["spec"]["boot_timeout"], "10m");
        assert_eq!(first["spec"]["max_age"], "1day");
        assert_eq!(first["counts"]["ready"], 2);
        assert_eq!(first["allocations_warm"], 12);
        assert_eq!(first["last_error"], "");
        // Unset durations are null, not "0s": the server's default applies.
        assert_eq!(v["pools"][1]["spec"]["boot_timeout"], Value::Null);
        assert_eq!(v["pools"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn allocation_json_shape() {
        let alloc = sample_allocation();
        let v = to_json(AllocationView::from(&alloc));
        assert_eq!(v["state"], "ALLOCATED");
        assert_eq!(v["warm_hit"], true);
        assert_eq!(v["timings"]["volume"], "1s 250ms");
        assert_eq!(v["timings"]["wait"], Value::Null);
        assert_eq!(v["created_at"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["labels"], json!({"app": "billing", "tier": "gold"}));
        // Sorted labels make the text stable across runs (HashMap order is not).
        let text = serde_json::to_string(&v["labels"]).unwrap();
        assert_eq!(text, r#"{"app":"billing","tier":"gold"}"#);
    }

    #[test]
    fn instance_and_status_json_shape() {
        let inst = api::Instance {
            id: "inst-9".into(),
            state: api::InstanceState::Warming.into(),
            attempts: 2,
            ..Default::default()
        };
        let v = instances_json(std::slice::from_ref(&inst));
        assert_eq!(v["instances"][0]["state"], "WARMING");
        assert_eq!(v["instances"][0]["ready_at"], Value::Null);
        assert_eq!(v["instances"][0]["attempts"], 2);

        let status = api::PoolStatus {
            pool: Some(sample_pools().remove(0)),
            at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
        };
        let v = to_json(PoolStatusView::from(&status));
        assert_eq!(v["pool"]["flavor"], "m1.large");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
    }
}
