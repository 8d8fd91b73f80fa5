//! Nova's JSON as warmpool reads it: servers, flavors, `/limits`, and the
//! server-create body. Pure functions, so they are tested on real bodies.
//!
//! Own serde types rather than the `openstack` crate's models: those have
//! no tags, and their closed status enums fail a whole object on a status
//! string they do not know.

use crate::cloud::{
    mentions_quota, BootHeadroom, QuotaLeft, Server, ServerStatus, PORTS_PER_SERVER,
};
use crate::text::{cut, MAX_CLOUD_MESSAGE_CHARS};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Deserialize)]
pub struct ServerBody {
    pub server: NovaServer,
}

#[derive(Debug, Deserialize)]
pub struct ServersBody {
    pub servers: Vec<NovaServer>,
    #[serde(default)]
    pub servers_links: Option<Vec<Link>>,
}

/// A listing's page link, as Nova (`servers_links`, `flavors_links`) and
/// Neutron (`ports_links`) and Cinder (`volumes_links`) give it.
#[derive(Debug, Deserialize)]
pub struct Link {
    #[serde(default)]
    pub rel: String,
}

/// Whether a listing's links say there is a next page.
pub fn has_next(links: Option<&[Link]>) -> bool {
    links.is_some_and(|links| links.iter().any(|l| l.rel == "next"))
}

#[derive(Debug, Deserialize)]
pub struct NovaServer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub addresses: Option<BTreeMap<String, Vec<NovaAddress>>>,
    #[serde(default)]
    pub fault: Option<NovaFault>,
    #[serde(rename = "os-extended-volumes:volumes_attached", default)]
    pub volumes_attached: Option<Vec<IdOnly>>,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
    #[serde(default)]
    pub locked: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct NovaAddress {
    pub addr: String,
    #[serde(default)]
    pub version: Option<u8>,
    #[serde(rename = "OS-EXT-IPS:type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NovaFault {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

/// Where a server's mysqld is reached.
#[derive(Clone, Debug)]
pub struct AddressRule<'a> {
    /// Name of the management network (Nova keys `addresses` by name).
    pub network_name: &'a str,
    pub mysql_port: u16,
    /// Test clouds whose servers run no mysqld: probe this instead.
    pub probe_override: Option<SocketAddr>,
}

pub fn server_status(status: &str) -> ServerStatus {
    match status {
        "BUILD" | "REBUILD" => ServerStatus::Build,
        "ACTIVE" => ServerStatus::Active,
        "ERROR" => ServerStatus::Error,
        "DELETED" | "SOFT_DELETED" => ServerStatus::Deleted,
        "SHUTOFF" => ServerStatus::Stopped,
        "SHELVED" | "SHELVED_OFFLOADED" => ServerStatus::Shelved,
        "PAUSED" => ServerStatus::Paused,
        "SUSPENDED" => ServerStatus::Suspended,
        "RESCUE" => ServerStatus::Rescued,
        _ => ServerStatus::Other,
    }
}

/// The fixed IPv4 (else IPv6) address on the management network.
fn management_ip(addresses: &BTreeMap<String, Vec<NovaAddress>>, network: &str) -> Option<IpAddr> {
    let on_net = addresses.get(network)?;
    let fixed = |a: &&NovaAddress| matches!(a.kind.as_deref(), None | Some("fixed"));
    let parsed = |a: &NovaAddress| a.addr.parse::<IpAddr>().ok();
    on_net
        .iter()
        .filter(fixed)
        .filter(|a| a.version != Some(6))
        .find_map(parsed)
        .or_else(|| on_net.iter().filter(fixed).find_map(parsed))
}

/// Nova's fault message for a scheduling failure is "No valid host was
/// found"; the exception name (`NoValidHost`) is only in the admin-only
/// details, so it is added when the message alone shows it.
fn fault_text(fault: &NovaFault) -> Option<String> {
    let message = fault.message.clone().unwrap_or_default();
    let details = fault.details.clone().unwrap_or_default();
    if message.is_empty() && details.is_empty() {
        return None;
    }
    let no_valid_host =
        message.to_ascii_lowercase().contains("no valid host") || details.contains("NoValidHost");
    let quota = mentions_quota(&message);
    // Cut after NoValidHost and a quota refusal (which the replenisher
    // reads in the fault) are looked for in all of it, as a service's own
    // fault message is: the text is the cloud's, unbounded.
    let message = cut(&message, MAX_CLOUD_MESSAGE_CHARS);
    Some(if no_valid_host && !message.contains("NoValidHost") {
        format!("NoValidHost: {message}")
    } else if quota && !mentions_quota(&message) {
        format!("Quota exceeded: {message}")
    } else {
        message
    })
}

/// warmpool's view of a Nova server. `attached_ports` is left to the caller
/// (Nova's server body does not list ports): `get_server` fills it from
/// Neutron, the pool-server listing leaves it empty.
pub fn to_server(s: NovaServer, rule: &AddressRule<'_>) -> Server {
    let task_state = s.task_state.clone().filter(|t| !t.is_empty());
    // A soft delete (a cloud with reclaim_instance_interval) is a delete
    // too: the server ends SOFT_DELETED, never back in service. And a
    // server shown DELETED (task_state null), as Nova shows one for a
    // moment once its delete is done and before it answers 404, is going:
    // only SOFT_DELETED is `Deleted` and not `deleting`, what the manager
    // takes for a soft-deleted server (a forceDelete to send, a port that
    // stays bound until the reclaim).
    let deleting = matches!(task_state.as_deref(), Some("deleting" | "soft-deleting"))
        || s.status.as_deref() == Some("DELETED");
    let status = server_status(s.status.as_deref().unwrap_or_default());
    let mysql_addr = match rule.probe_override {
        Some(addr) => Some(addr),
        None => s
            .addresses
            .as_ref()
            .and_then(|a| management_ip(a, rule.network_name))
            .map(|ip| SocketAddr::new(ip, rule.mysql_port)),
    };
    Server {
        name: s.name.unwrap_or_default(),
        status,
        availability_zone: s.availability_zone.unwrap_or_default(),
        metadata: s.metadata.unwrap_or_default(),
        mysql_addr: if status == ServerStatus::Active {
            mysql_addr
        } else {
            None
        },
        fault: s.fault.as_ref().and_then(fault_text),
        attached_volumes: s
            .volumes_attached
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.id)
            .collect(),
        attached_ports: Vec::new(),
        deleting,
        busy: task_state.filter(|_| !deleting),
        locked: s.locked.unwrap_or(false),
        id: s.id,
    }
}

#[derive(Debug, Deserialize)]
pub struct FlavorsBody {
    pub flavors: Vec<Flavor>,
    #[serde(default)]
    pub flavors_links: Option<Vec<Link>>,
}

/// A Nova flavor: what `/limits` headroom is computed with.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u64,
    /// MiB.
    pub ram: u64,
    /// From microversion 2.61, when Nova's policy
    /// (`os_compute_api:os-flavor-extra-specs:index`) shows them to
    /// warmpool's user; `None` below 2.61 or when the policy hides them.
    #[serde(default, deserialize_with = "extra_specs")]
    pub extra_specs: Option<BTreeMap<String, String>>,
}

/// `GET /flavors/{id}/os-extra_specs`: a flavor's extra specs below
/// microversion 2.61.
#[derive(Debug, Deserialize)]
pub struct ExtraSpecsBody {
    #[serde(deserialize_with = "extra_specs")]
    pub extra_specs: Option<BTreeMap<String, String>>,
}

/// Extra specs with any JSON value taken as text: Nova stores strings,
/// but a value of another kind (a proxy's rewrite, a future Nova) must
/// not make the flavor listing, and so every boot, unreadable.
fn extra_specs<'de, D>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let specs: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
    Ok(specs.map(|specs| {
        specs
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()
    }))
}

#[derive(Debug, Deserialize)]
pub struct LimitsBody {
    pub limits: LimitsInner,
}

#[derive(Debug, Deserialize)]
pub struct LimitsInner {
    pub absolute: AbsoluteLimits,
}

/// Nova's absolute limits; -1 means unlimited.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AbsoluteLimits {
    #[serde(default = "unlimited")]
    pub max_total_instances: i64,
    #[serde(default)]
    pub total_instances_used: i64,
    #[serde(default = "unlimited")]
    pub max_total_cores: i64,
    #[serde(default)]
    pub total_cores_used: i64,
    #[serde(rename = "maxTotalRAMSize", default = "unlimited")]
    pub max_total_ram_size: i64,
    #[serde(rename = "totalRAMUsed", default)]
    pub total_ram_used: i64,
}

fn unlimited() -> i64 {
    -1
}

/// One quota, for messages: "cores: 18 of 20 used".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaUse {
    pub resource: &'static str,
    pub used: i64,
    /// -1: unlimited.
    pub max: i64,
}

impl QuotaUse {
    /// What is left of it; 0 when unlimited is not what is meant (check
    /// `max` first). A negative use is garbage: it must not add to the room.
    pub fn free(&self) -> u64 {
        self.max.saturating_sub(self.used.max(0)).max(0) as u64
    }

    /// What its numbers count in, for messages: " MiB" for RAM.
    pub fn unit(&self) -> &'static str {
        if self.resource == "ram" {
            " MiB"
        } else {
            ""
        }
    }
}

impl AbsoluteLimits {
    pub fn quotas(&self) -> [QuotaUse; 3] {
        [
            QuotaUse {
                resource: "instances",
                used: self.total_instances_used,
                max: self.max_total_instances,
            },
            QuotaUse {
                resource: "cores",
                used: self.total_cores_used,
                max: self.max_total_cores,
            },
            QuotaUse {
                resource: "ram",
                used: self.total_ram_used,
                max: self.max_total_ram_size,
            },
        ]
    }

    /// How many more servers of `flavor` fit, and which quota binds: of
    /// these and, when known, the project's Neutron `ports`.
    pub fn headroom(&self, flavor: &Flavor, ports: Option<&QuotaUse>) -> BootHeadroom {
        let per_server = [1, flavor.vcpus, flavor.ram];
        let mut best: Option<(u64, String)> = None;
        let mut quotas = Vec::new();
        let compute = self.quotas();
        let limited = compute
            .iter()
            .zip(per_server)
            .chain(ports.map(|p| (p, PORTS_PER_SERVER)));
        for (quota, need) in limited {
            if quota.max < 0 {
                continue;
            }
            let unit = quota.unit();
            if need > quota.max as u64 {
                return BootHeadroom::beyond_quota(format!(
                    "{}: one {} server needs {need}{unit}, the quota is {}{unit}",
                    quota.resource, flavor.name, quota.max
                ));
            }
            let free = quota.free();
            let fits = free.checked_div(need).unwrap_or(u64::MAX);
            quotas.push(QuotaLeft::new(quota.resource, free, need));
            if !matches!(&best, Some((n, _)) if fits >= *n) {
                best = Some((
                    fits,
                    format!(
                        "{}: {}{unit} of {}{unit} used",
                        quota.resource, quota.used, quota.max
                    ),
                ));
            }
        }
        match best {
            None => BootHeadroom::UNLIMITED,
            Some((servers, limited_by)) => {
                BootHeadroom::room(servers, limited_by).with_quotas(quotas)
            }
        }
    }
}

/// `GET /os-keypairs/{name}`.
#[derive(Debug, Deserialize)]
pub struct KeypairBody {
    pub keypair: Keypair,
}

/// A key pair of the user warmpool logs in as.
#[derive(Clone, Debug, Deserialize)]
pub struct Keypair {
    pub name: String,
}

/// Everything `POST /servers` gets.
#[derive(Clone, Debug)]
pub struct CreateServer<'a> {
    pub name: &'a str,
    pub flavor_id: &'a str,
    pub image_id: &'a str,
    pub network_id: &'a str,
    pub availability_zone: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    /// Empty when Nova is older than 2.52 (tags are then set afterwards).
    pub tags: &'a [String],
    pub security_groups: &'a [String],
    pub key_name: Option<&'a str>,
}

pub fn create_body(c: &CreateServer<'_>) -> serde_json::Value {
    let mut server = serde_json::json!({
        "name": c.name,
        "flavorRef": c.flavor_id,
        "imageRef": c.image_id,
        "networks": [{"uuid": c.network_id}],
        "availability_zone": c.availability_zone,
        "metadata": c.metadata,
    });
    if !c.tags.is_empty() {
        server["tags"] = serde_json::json!(c.tags);
    }
    if !c.security_groups.is_empty() {
        server["security_groups"] = c
            .security_groups
            .iter()
            .map(|name| serde_json::json!({ "name": name }))
            .collect();
    }
    if let Some(key) = c.key_name {
        server["key_name"] = serde_json::json!(key);
    }
    serde_json::json!({ "server": server })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A server as Nova 2.79 shows it to a member (fields trimmed).
    const ACTIVE: &str = r#"{"server": {"id": "a4d9add2-ef0a-4928-b1b8-6525fdb81913", "name": "warmpool-i1",
        "status": "ACTIVE", "OS-EXT-AZ:availability_zone": "az1",
        "metadata": {"warmpool.pool": "db.small@az1", "warmpool.instance": "i1"},
        "tags": ["warmpool"],
        "addresses": {"service-net": [{"version": 4, "addr": "10.30.0.12", "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}],
                      "tenant-net": [{"version": 4, "addr": "10.20.0.5", "OS-EXT-IPS:type": "fixed"}]},
        "os-extended-volumes:volumes_attached": [{"id": "6d164150-4c0f-447a-896d-a825918714cd", "delete_on_termination": false}],
        "OS-EXT-STS:task_state": null}}"#;
    const NO_VALID_HOST: &str = r#"{"server": {"id": "s2", "name": "warmpool-i2", "status": "ERROR",
        "OS-EXT-AZ:availability_zone": "", "metadata": {}, "addresses": {},
        "fault": {"code": 500, "created": "2026-11-25T08:19:19Z", "message": "No valid host was found. There are not enough hosts available."}}}"#;

    fn rule(probe_override: Option<SocketAddr>) -> AddressRule<'static> {
        AddressRule {
            network_name: "service-net",
            mysql_port: 3306,
            probe_override,
        }
    }

    #[test]
    fn an_active_server_has_its_management_address() {
        let body: ServerBody = serde_json::from_str(ACTIVE).unwrap();
        let s = to_server(body.server, &rule(None));
        assert_eq!(s.status, ServerStatus::Active);
        assert_eq!(s.availability_zone, "az1");
        assert_eq!(s.mysql_addr, Some("10.30.0.12:3306".parse().unwrap()));
        assert_eq!(s.metadata["warmpool.instance"], "i1");
        assert_eq!(
            s.attached_volumes,
            vec!["6d164150-4c0f-447a-896d-a825918714cd"]
        );
        assert_eq!(s.fault, None);
    }

    /// The ACTIVE server, Nova busy with `task_state` on it.
    fn active_in_task(task_state: &str) -> Server {
        let json = ACTIVE.replace(
            r#""OS-EXT-STS:task_state": null"#,
            &format!(r#""OS-EXT-STS:task_state": "{task_state}""#),
        );
        let body: ServerBody = serde_json::from_str(&json).unwrap();
        to_server(body.server, &rule(None))
    }

    #[test]
    fn a_server_nova_is_deleting_is_going() {
        let s = active_in_task("deleting");
        assert_eq!(s.status, ServerStatus::Active);
        assert!(s.deleting && s.is_going() && !s.is_usable());

        let body: ServerBody = serde_json::from_str(ACTIVE).unwrap();
        let s = to_server(body.server, &rule(None));
        assert!(!s.deleting && !s.is_going() && s.is_usable());
        assert!(s.takes_an_attach_now());
    }

    /// A soft delete (Nova's `reclaim_instance_interval`) shows ACTIVE with
    /// task_state `soft-deleting` until the server is SOFT_DELETED: going,
    /// not supply.
    #[test]
    fn a_server_nova_is_soft_deleting_is_going() {
        let s = active_in_task("soft-deleting");
        assert!(s.deleting && s.is_going() && !s.is_usable(), "{s:?}");
        assert_eq!(s.busy, None);
    }

    /// The ACTIVE server shown in `status` with no task_state.
    fn shown(status: &str) -> Server {
        let json = ACTIVE.replace(r#""status": "ACTIVE""#, &format!(r#""status": "{status}""#));
        let body: ServerBody = serde_json::from_str(&json).unwrap();
        to_server(body.server, &rule(None))
    }

    /// Nova shows a server it has just deleted DELETED, task_state null,
    /// for a moment before it answers 404 (measured on the testbed): its
    /// delete is done, and it is going, not SOFT_DELETED, which the manager
    /// reads as `Deleted` and not `deleting` (a forceDelete to send, a port
    /// left bound until the reclaim). Only SOFT_DELETED reads so.
    #[test]
    fn a_server_shown_deleted_is_going_not_soft_deleted() {
        let s = shown("DELETED");
        assert_eq!(s.status, ServerStatus::Deleted);
        assert!(s.deleting && s.is_going() && !s.is_usable(), "{s:?}");

        let s = shown("SOFT_DELETED");
        assert_eq!(s.status, ServerStatus::Deleted);
        assert!(!s.deleting && s.is_going(), "{s:?}");
    }

    /// Nova shows most tasks (a snapshot, a power-off) as ACTIVE with a
    /// task_state, and refuses an attach meanwhile: busy, but neither
    /// going nor unusable (the task ends by itself).
    #[test]
    fn a_server_busy_with_a_task_takes_no_attach_but_is_not_going() {
        let s = active_in_task("image_snapshot");
        assert_eq!(s.busy.as_deref(), Some("image_snapshot"));
        assert!(!s.deleting && !s.is_going() && s.is_usable());
        assert!(!s.takes_an_attach_now());
    }

    #[test]
    fn the_probe_override_replaces_every_address() {
        let body: ServerBody = serde_json::from_str(ACTIVE).unwrap();
        let s = to_server(body.server, &rule(Some("127.0.0.1:13306".parse().unwrap())));
        assert_eq!(s.mysql_addr, Some("127.0.0.1:13306".parse().unwrap()));
    }

    #[test]
    fn no_valid_host_is_named_in_the_fault() {
        let body: ServerBody = serde_json::from_str(NO_VALID_HOST).unwrap();
        let s = to_server(body.server, &rule(None));
        assert_eq!(s.status, ServerStatus::Error);
        assert_eq!(s.mysql_addr, None);
        let fault = s.fault.unwrap();
        assert!(
            fault.contains("NoValidHost") && fault.contains("No valid host was found"),
            "{fault}"
        );
    }

    /// A failed server's fault is the cloud's text, bounded by nothing but
    /// the answer's size: cut as a service's own fault message is, after
    /// NoValidHost is looked for in all of it.
    #[test]
    fn a_huge_server_fault_is_cut() {
        let huge = format!("{} No valid host was found.", "ü".repeat(1 << 20));
        let body = NO_VALID_HOST.replace(
            "No valid host was found. There are not enough hosts available.",
            &huge,
        );
        let body: ServerBody = serde_json::from_str(&body).unwrap();
        let fault = to_server(body.server, &rule(None)).fault.unwrap();
        assert!(fault.starts_with("NoValidHost: üüü"), "{}", &fault[..40]);
        assert!(
            fault.chars().count() < 400,
            "{} characters",
            fault.chars().count()
        );
        assert!(fault.ends_with(" more characters)"), "{fault}");
    }

    /// A quota refusal said only past the cut (Nova's quota recheck after
    /// a long preamble) is still told in the cut fault, which the
    /// replenisher reads to pause for quota instead of counting a failure.
    #[test]
    fn a_huge_faults_late_quota_refusal_survives_the_cut() {
        let huge = format!(
            "{} Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
            "x".repeat(1 << 16)
        );
        let body = NO_VALID_HOST.replace(
            "No valid host was found. There are not enough hosts available.",
            &huge,
        );
        let body: ServerBody = serde_json::from_str(&body).unwrap();
        let fault = to_server(body.server, &rule(None)).fault.unwrap();
        assert!(mentions_quota(&fault), "{fault}");
        assert!(fault.chars().count() < 400, "{}", fault.chars().count());
    }

    #[test]
    fn unknown_statuses_and_missing_fields_do_not_fail_the_server() {
        let body: ServerBody = serde_json::from_str(
            r#"{"server": {"id": "x", "status": "UNKNOWN", "addresses": null, "metadata": null}}"#,
        )
        .unwrap();
        let s = to_server(body.server, &rule(None));
        assert_eq!(s.status, ServerStatus::Other);
        assert!(s.metadata.is_empty() && s.mysql_addr.is_none());
        assert!(serde_json::from_str::<ServerBody>(r#"{"server": {"name": "no id"}}"#).is_err());
    }

    /// SHUTOFF, SHELVED, PAUSED, SUSPENDED and RESCUE are told apart from
    /// the statuses of a task under way (REBOOT, MIGRATING: busy, not
    /// broken), and `locked` read.
    #[test]
    fn stopped_shelved_and_locked_servers_are_read_as_such() {
        let shown = |status: &str, task: &str, locked: bool| {
            let json = ACTIVE
                .replace(r#""status": "ACTIVE""#, &format!(r#""status": "{status}""#))
                .replace(
                    r#""OS-EXT-STS:task_state": null"#,
                    &format!(r#""OS-EXT-STS:task_state": {task}, "locked": {locked}"#),
                );
            let body: ServerBody = serde_json::from_str(&json).unwrap();
            to_server(body.server, &rule(None))
        };
        assert_eq!(
            shown("SHUTOFF", "null", false).status,
            ServerStatus::Stopped
        );
        assert_eq!(
            shown("SHELVED", "null", false).status,
            ServerStatus::Shelved
        );
        let offloaded = shown("SHELVED_OFFLOADED", "null", false);
        assert_eq!(offloaded.status, ServerStatus::Shelved);
        for (status, read) in [
            ("PAUSED", ServerStatus::Paused),
            ("SUSPENDED", ServerStatus::Suspended),
            ("RESCUE", ServerStatus::Rescued),
        ] {
            assert_eq!(shown(status, "null", false).status, read, "{status}");
        }
        let rebooting = shown("REBOOT", r#""rebooting""#, false);
        assert_eq!(rebooting.status, ServerStatus::Other);
        assert_eq!(rebooting.busy.as_deref(), Some("rebooting"));
        let locked = shown("ACTIVE", "null", true);
        assert!(locked.locked && locked.is_usable() && !locked.takes_an_attach_now());
        assert!(!shown("ACTIVE", "null", false).locked);
    }

    /// A flavor's extra specs come from 2.61 (absent below, or hidden by
    /// Nova's policy); a value that is no string is read as text rather
    /// than failing the whole listing.
    #[test]
    fn flavor_extra_specs_are_read_leniently() {
        let body: FlavorsBody = serde_json::from_str(
            r#"{"flavors": [
                {"id": "1", "name": "a", "vcpus": 1, "ram": 1024},
                {"id": "2", "name": "b", "vcpus": 1, "ram": 1024, "extra_specs": null},
                {"id": "3", "name": "c", "vcpus": 1, "ram": 1024,
                 "extra_specs": {"quota:disk_total_iops_sec": 6400, "hw:cpu_policy": "shared"}}
            ]}"#,
        )
        .unwrap();
        let specs: Vec<_> = body.flavors.iter().map(|f| f.extra_specs.clone()).collect();
        assert_eq!(specs[0], None);
        assert_eq!(specs[1], None);
        let c = specs[2].as_ref().unwrap();
        assert_eq!(c["quota:disk_total_iops_sec"], "6400");
        assert_eq!(c["hw:cpu_policy"], "shared");
        let own: ExtraSpecsBody =
            serde_json::from_str(r#"{"extra_specs": {"quota:disk_read_iops_sec": "500"}}"#)
                .unwrap();
        assert_eq!(own.extra_specs.unwrap()["quota:disk_read_iops_sec"], "500");
    }

    #[test]
    fn headroom_names_the_binding_quota() {
        // From the smoke output: 2 servers up, cores 20, instances 10.
        let limits: LimitsBody = serde_json::from_str(
            r#"{"limits": {"rate": [], "absolute": {"maxTotalInstances": 10, "totalInstancesUsed": 2, "maxTotalCores": 20, "totalCoresUsed": 2, "maxTotalRAMSize": 102400, "totalRAMUsed": 2048, "maxServerMeta": 128}}}"#,
        )
        .unwrap();
        let small = Flavor {
            id: "1".into(),
            name: "db.small".into(),
            vcpus: 1,
            ram: 1024,
            extra_specs: None,
        };
        let large = Flavor {
            id: "2".into(),
            name: "db.large".into(),
            vcpus: 4,
            ram: 8192,
            extra_specs: None,
        };
        let huge = Flavor {
            id: "3".into(),
            name: "db.huge".into(),
            vcpus: 64,
            ram: 1024,
            extra_specs: None,
        };
        let a = &limits.limits.absolute;
        // What is left of each quota and one server's share of it: the
        // gate takes a boot of one flavor from the others' headroom by it.
        let left = |cores, ram| {
            vec![
                QuotaLeft::new("instances", 8, 1),
                QuotaLeft::new("cores", 18, cores),
                QuotaLeft::new("ram", 100352, ram),
            ]
        };
        assert_eq!(
            a.headroom(&small, None),
            BootHeadroom::room(8, "instances: 2 of 10 used".into()).with_quotas(left(1, 1024))
        );
        assert_eq!(
            a.headroom(&large, None),
            BootHeadroom::room(4, "cores: 2 of 20 used".into()).with_quotas(left(4, 8192))
        );
        // One server needs more than the whole quota: no use waiting for room.
        assert_eq!(
            a.headroom(&huge, None),
            BootHeadroom::beyond_quota(
                "cores: one db.huge server needs 64, the quota is 20".into()
            )
        );
        // A flavor that fits an empty project but not the room left now is
        // only full.
        let full = AbsoluteLimits {
            total_cores_used: 18,
            ..a.clone()
        };
        let room = full.headroom(&large, None);
        assert_eq!(
            (room.servers, room.limited_by.as_deref()),
            (Some(0), Some("cores: 18 of 20 used"))
        );
        let unlimited = AbsoluteLimits {
            max_total_instances: -1,
            max_total_cores: -1,
            max_total_ram_size: -1,
            ..AbsoluteLimits::default()
        };
        assert_eq!(unlimited.headroom(&small, None), BootHeadroom::UNLIMITED);
        // A garbled answer (a negative use, extreme numbers) reads as what
        // the max alone allows, without overflowing.
        let garbled = AbsoluteLimits {
            max_total_instances: i64::MAX,
            total_instances_used: i64::MIN,
            max_total_cores: -1,
            max_total_ram_size: -1,
            ..AbsoluteLimits::default()
        };
        assert_eq!(
            garbled.headroom(&small, None).servers,
            Some(i64::MAX as u64)
        );
        let cores = |used, max| QuotaUse {
            resource: "cores",
            used,
            max,
        };
        assert_eq!(cores(-5, 20).free(), 20);
        assert_eq!(cores(i64::MIN, 20).free(), 20);
        assert_eq!(cores(25, 20).free(), 0);
        assert_eq!(cores(i64::MAX, i64::MIN).free(), 0);
    }

    #[test]
    fn the_create_body_carries_everything_warmpool_needs() {
        let metadata = BTreeMap::from([("warmpool.pool".to_owned(), "db.small@az1".to_owned())]);
        let tags = vec!["warmpool".to_owned()];
        let groups = vec!["mysql".to_owned()];
        let body = create_body(&CreateServer {
            name: "warmpool-i1",
            flavor_id: "f1",
            image_id: "img",
            network_id: "net",
            availability_zone: "az1",
            metadata: &metadata,
            tags: &tags,
            security_groups: &groups,
            key_name: Some("ops"),
        });
        assert_eq!(
            body,
            serde_json::json!({"server": {
                "name": "warmpool-i1", "flavorRef": "f1", "imageRef": "img",
                "networks": [{"uuid": "net"}], "availability_zone": "az1",
                "metadata": {"warmpool.pool": "db.small@az1"}, "tags": ["warmpool"],
                "security_groups": [{"name": "mysql"}], "key_name": "ops"
            }})
        );
    }
}
