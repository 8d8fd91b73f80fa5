//! Neutron's and Glance's JSON as warmpool reads it: ports, networks,
//! security groups, images.

use super::error::parse_fault;
use super::nova::QuotaUse;
use super::session::Reply;
use crate::cloud::{self, NewPortSpec, Port, PORTS};
use serde::Deserialize;

/// Whether `reply` is ML2's refusal of a port create naming security groups
/// on a network without port security (`port_security_enabled = false`,
/// which its ports take): 400 `PortSecurityAndIPRequiredForSecurityGroups`.
/// Told by Neutron's error type, not its English text.
pub fn refused_for_want_of_port_security(reply: &Reply) -> bool {
    reply.status == 400
        && parse_fault(&reply.body).name.as_deref()
            == Some("PortSecurityAndIPRequiredForSecurityGroups")
}

/// `GET /v2.0/quotas/{project_id}/details` (the quota_details extension).
#[derive(Debug, Deserialize)]
pub struct QuotaDetailsBody {
    pub quota: QuotaDetails,
}

#[derive(Debug, Deserialize)]
pub struct QuotaDetails {
    #[serde(default)]
    pub port: Option<QuotaDetail>,
}

/// One resource's quota; a `limit` of -1 is none.
#[derive(Debug, Deserialize)]
pub struct QuotaDetail {
    pub limit: i64,
    #[serde(default)]
    pub used: i64,
    #[serde(default)]
    pub reserved: i64,
}

impl QuotaDetails {
    /// The port quota, as Nova's quotas are read: what is reserved (a
    /// create under way) is as good as used.
    pub fn ports(&self) -> Option<QuotaUse> {
        self.port.as_ref().map(|p| QuotaUse {
            resource: PORTS,
            used: p.used.max(0).saturating_add(p.reserved.max(0)),
            max: p.limit,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct PortBody {
    pub port: NeutronPort,
}

#[derive(Debug, Deserialize)]
pub struct PortsBody {
    pub ports: Vec<NeutronPort>,
    #[serde(default)]
    pub ports_links: Option<Vec<super::nova::Link>>,
}

#[derive(Debug, Deserialize)]
pub struct NeutronPort {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// Its owner: warmpool reads only its own project's ports.
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub fixed_ips: Option<Vec<FixedIp>>,
    /// `immediate`, `deferred` or `none` (the ip_allocation extension).
    #[serde(default)]
    pub ip_allocation: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FixedIp {
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// warmpool's view of a Neutron port. Its `ip_address` prefers IPv4:
/// Neutron lists a port's addresses ordered as strings, so on a dual-stack
/// network its IPv6 SLAAC address may come first (`2001:db8::...` before
/// `203.0.113.7`); [`Port::address_for`] picks the one a request asked for.
pub fn to_port(p: NeutronPort) -> Port {
    let fixed_ips: Vec<cloud::FixedIp> = p
        .fixed_ips
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| {
            Some(cloud::FixedIp {
                ip_address: f.ip_address?,
                subnet_id: f.subnet_id,
            })
        })
        .collect();
    Port {
        name: p.name.unwrap_or_default(),
        network_id: p.network_id.unwrap_or_default(),
        // Neutron reports an unbound port's device as "".
        device_id: p.device_id.filter(|d| !d.is_empty()),
        ip_address: cloud::preferred_address(&fixed_ips),
        fixed_ips,
        address_deferred: p.ip_allocation.as_deref() == Some("deferred"),
        id: p.id,
    }
}

/// `POST /v2.0/ports`. The port belongs to the session's project: a member
/// may not create in another one, so `project_id` is not sent. The tenant
/// cannot change the groups of a port of warmpool's project, so it gets
/// `security_groups` (ids) now; none sends none (an empty list would leave
/// the port without any group), and Neutron gives the project's default
/// (on a network with port security).
pub fn create_port_body(spec: &NewPortSpec, security_groups: &[String]) -> serde_json::Value {
    let mut port = serde_json::json!({ "network_id": spec.network_id, "name": spec.name });
    if !security_groups.is_empty() {
        port["security_groups"] = serde_json::json!(security_groups);
    }
    if spec.subnet_id.is_some() || spec.fixed_ip.is_some() {
        let mut fixed = serde_json::Map::new();
        if let Some(subnet) = &spec.subnet_id {
            fixed.insert("subnet_id".into(), serde_json::json!(subnet));
        }
        if let Some(ip) = &spec.fixed_ip {
            fixed.insert("ip_address".into(), serde_json::json!(ip));
        }
        port["fixed_ips"] = serde_json::json!([fixed]);
    }
    serde_json::json!({ "port": port })
}

/// A network, an image or a security group: what a name resolves to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Named {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// Neutron's owner of the object (Glance calls it `owner`, unread).
    #[serde(default)]
    pub project_id: Option<String>,
    /// A network's `port_security_enabled` (`None`: not said, as without
    /// the port-security extension, where Nova takes it as on).
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// A network's subnets (ids); `None`: not said.
    #[serde(default)]
    pub subnets: Option<Vec<String>>,
    /// A network's `shared`: shared with every project, or (Neutron RBAC)
    /// with the one asking; `None`: not said. The tenant network's fence
    /// reads it; the management network's lookup does not rank by it.
    #[serde(default)]
    pub shared: Option<bool>,
    /// A security group's rules, as Neutron shows them with the group;
    /// `None`: not said.
    #[serde(default)]
    pub security_group_rules: Option<Vec<SecurityGroupRule>>,
}

/// A rule of a security group: what it admits (`ingress`) or lets out.
/// A rule without a remote admits from every address of its ethertype.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SecurityGroupRule {
    #[serde(default)]
    pub direction: Option<String>,
    /// `IPv4` or `IPv6`.
    #[serde(default)]
    pub ethertype: Option<String>,
    /// A name (`tcp`) or a number (`6`); `None`: every protocol.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `None`: every port.
    #[serde(default)]
    pub port_range_min: Option<u16>,
    #[serde(default)]
    pub port_range_max: Option<u16>,
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// Every port in that group (the rule's own group too) is admitted.
    #[serde(default)]
    pub remote_group_id: Option<String>,
}

/// A page of `GET /v2.0/subnets?network_id=`, its `cidr`s.
#[derive(Debug, Deserialize)]
pub struct SubnetsBody {
    pub subnets: Vec<SubnetCidr>,
    #[serde(default)]
    pub subnets_links: Option<Vec<super::nova::Link>>,
}

#[derive(Debug, Deserialize)]
pub struct SubnetCidr {
    pub id: String,
    #[serde(default)]
    pub cidr: Option<String>,
}

/// A page of `GET /v2.0/networks`; Neutron links the next as it does for
/// ports.
#[derive(Debug, Deserialize)]
pub struct NetworksBody {
    pub networks: Vec<Named>,
    #[serde(default)]
    pub networks_links: Option<Vec<super::nova::Link>>,
}

#[derive(Debug, Deserialize)]
pub struct NetworkBody {
    pub network: Named,
}

/// `network` as the tenant network's fence judges it, its owner told
/// from warmpool's own project `own` (Neutron's ids are lower-case hex).
/// Neutron shows every network's owner; an answer without one is none
/// of Neutron's.
pub fn to_network(network: Named, own: &str) -> Result<cloud::Network, String> {
    let Some(project) = network.project_id else {
        return Err(format!(
            "network {}: Neutron's answer names no project_id",
            network.id
        ));
    };
    Ok(cloud::Network {
        owner: if project.eq_ignore_ascii_case(own) {
            cloud::NetworkOwner::Warmpool
        } else {
            cloud::NetworkOwner::Project(project)
        },
        shared: network.shared == Some(true),
        id: network.id,
        // The driver's own judgement, from its settings, not Neutron's.
        management: None,
    })
}

/// A page of `GET /v2.0/rbac-policies`.
#[derive(Debug, Deserialize)]
pub struct RbacPoliciesBody {
    pub rbac_policies: Vec<RbacPolicy>,
    #[serde(default)]
    pub rbac_policies_links: Option<Vec<super::nova::Link>>,
}

/// One of Neutron's RBAC policies: `action` on object `object_id` granted
/// to project `target_tenant` (`*`: every project).
#[derive(Debug, Deserialize)]
pub struct RbacPolicy {
    pub id: String,
    #[serde(default)]
    pub object_type: Option<String>,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub target_tenant: Option<String>,
}

/// Whom `policies` share network `network_id` with (`access_as_shared`),
/// warmpool's own project `own` told from others. Looked at again here,
/// whatever the listing's filters: a proxy dropping the query string
/// lists every policy.
pub fn network_shares(
    policies: Vec<RbacPolicy>,
    network_id: &str,
    own: &str,
) -> Vec<cloud::NetworkShare> {
    policies
        .into_iter()
        .filter(|p| {
            p.object_type.as_deref() == Some("network")
                && p.action.as_deref() == Some("access_as_shared")
                && p.object_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(network_id))
        })
        .filter_map(|p| p.target_tenant)
        .map(|target| match target.as_str() {
            "*" => cloud::NetworkShare::EveryProject,
            t if t.eq_ignore_ascii_case(own) => cloud::NetworkShare::Warmpool,
            _ => cloud::NetworkShare::Project(target),
        })
        .collect()
}

/// A page of `GET /v2.0/security-groups`.
#[derive(Debug, Deserialize)]
pub struct SecurityGroupsBody {
    pub security_groups: Vec<Named>,
    #[serde(default)]
    pub security_groups_links: Option<Vec<super::nova::Link>>,
}

/// A page of `GET /v2/images`; Glance links the next with a bare `next`
/// (a path carrying the page's last id as `marker`), absent on the last.
#[derive(Debug, Deserialize)]
pub struct ImagesBody {
    pub images: Vec<Named>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Whether `s` looks like an OpenStack UUID (36 chars, dashes), in which
/// case it is looked up by id first.
pub fn looks_like_id(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port quota read from the quota_details extension binds at two
    /// ports a server (its own, the tenant's when sold); what Neutron
    /// reserves for creates under way is as good as used.
    #[test]
    fn the_port_quota_binds_at_two_ports_a_server() {
        let body: QuotaDetailsBody = serde_json::from_str(
            r#"{"quota": {"network": {"used": 1, "limit": 100, "reserved": 0},
                "port": {"used": 7, "limit": 10, "reserved": 1},
                "subnetpool": {"used": 0, "limit": -1, "reserved": 0}}}"#,
        )
        .unwrap();
        let ports = body.quota.ports().unwrap();
        let limits = super::super::nova::AbsoluteLimits {
            max_total_instances: 10,
            total_instances_used: 4,
            max_total_cores: -1,
            max_total_ram_size: -1,
            ..Default::default()
        };
        let small = super::super::nova::Flavor {
            id: "1".into(),
            name: "db.small".into(),
            vcpus: 1,
            ram: 1024,
            extra_specs: None,
        };
        use crate::cloud::{BootHeadroom, QuotaLeft};
        assert_eq!(
            limits.headroom(&small, Some(&ports)),
            BootHeadroom::room(1, "ports: 8 of 10 used".into()).with_quotas(vec![
                QuotaLeft::new("instances", 6, 1),
                QuotaLeft::new("ports", 2, 2)
            ])
        );
        // A port quota of one: no server fits it, sold.
        let one = QuotaUse {
            max: 1,
            used: 0,
            ..ports.clone()
        };
        assert!(limits.headroom(&small, Some(&one)).beyond_quota);
        // Unlimited: compute's alone.
        let none: QuotaDetailsBody =
            serde_json::from_str(r#"{"quota": {"port": {"used": 7, "limit": -1, "reserved": 0}}}"#)
                .unwrap();
        assert_eq!(
            limits.headroom(&small, none.quota.ports().as_ref()),
            limits.headroom(&small, None)
        );
    }

    #[test]
    fn a_bound_port_has_device_and_address() {
        let body: PortBody = serde_json::from_str(
            r#"{"port": {"id": "b275d0c8-bebe-4da7-b94a-2ace4a8a7e97", "name": "warmpool-o1", "network_id": "80b5c2ba-2320-4bd0-9414-13f21adec6a8",
                "device_id": "a4d9add2-ef0a-4928-b1b8-6525fdb81913", "device_owner": "compute:az1", "status": "ACTIVE",
                "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.20.0.5"}]}}"#,
        )
        .unwrap();
        let p = to_port(body.port);
        assert_eq!(
            p.device_id.as_deref(),
            Some("a4d9add2-ef0a-4928-b1b8-6525fdb81913")
        );
        assert_eq!(p.ip_address.as_deref(), Some("10.20.0.5"));
        let body: PortBody =
            serde_json::from_str(r#"{"port": {"id": "p", "device_id": "", "fixed_ips": []}}"#)
                .unwrap();
        let p = to_port(body.port);
        assert_eq!((p.device_id, p.ip_address), (None, None));
        assert!(
            !p.address_deferred,
            "no ip_allocation: the address is not coming"
        );
    }

    /// Neutron lists a dual-stack port's addresses ordered as strings, its
    /// SLAAC one (added whatever was asked) first here: the port's address
    /// is the one asked for, else its IPv4 one.
    #[test]
    fn a_dual_stack_ports_address_is_the_one_asked_for() {
        let body: PortBody = serde_json::from_str(
            r#"{"port": {"id": "p", "fixed_ips": [
                {"subnet_id": "v6", "ip_address": "2001:db8::f816:3eff:fe01:203"},
                {"subnet_id": "v6-stateful", "ip_address": "2001:db8:2::9"},
                {"subnet_id": "V4", "ip_address": "203.0.113.7"}]}}"#,
        )
        .unwrap();
        let p = to_port(body.port);
        assert_eq!(p.ip_address.as_deref(), Some("203.0.113.7"));
        let cases = [
            (None, None, "203.0.113.7"),
            (Some("v4"), None, "203.0.113.7"),
            (Some("v6-stateful"), None, "2001:db8:2::9"),
            (
                Some("v6-stateful"),
                Some("2001:DB8:2:0::9"),
                "2001:db8:2::9",
            ),
            (Some("v4"), Some("203.0.113.7"), "203.0.113.7"),
            // One the port lacks (an IPv4-only listing) leaves its own.
            (Some("other"), Some("198.51.100.1"), "203.0.113.7"),
        ];
        for (subnet, fixed, expected) in cases {
            assert_eq!(
                p.address_for(subnet, fixed).as_deref(),
                Some(expected),
                "{subnet:?} {fixed:?}"
            );
        }
        let body: PortBody = serde_json::from_str(
            r#"{"port": {"id": "p", "fixed_ips": [{"subnet_id": "v6", "ip_address": "2001:db8::1"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            to_port(body.port).ip_address.as_deref(),
            Some("2001:db8::1")
        );
    }

    #[test]
    fn only_a_deferred_port_gets_its_address_later() {
        for (allocation, deferred) in [("deferred", true), ("immediate", false), ("none", false)] {
            let body: PortBody = serde_json::from_str(&format!(
                r#"{{"port": {{"id": "p", "fixed_ips": [], "ip_allocation": "{allocation}"}}}}"#
            ))
            .unwrap();
            assert_eq!(
                to_port(body.port).address_deferred,
                deferred,
                "{allocation}"
            );
        }
    }

    #[test]
    fn the_port_body_sends_no_project() {
        let spec = NewPortSpec {
            name: "warmpool-o1".into(),
            network_id: "net".into(),
            subnet_id: None,
            fixed_ip: Some("10.20.0.9".into()),
        };
        assert_eq!(
            create_port_body(&spec, &[]),
            serde_json::json!({"port": {"network_id": "net", "name": "warmpool-o1", "fixed_ips": [{"ip_address": "10.20.0.9"}]}})
        );
    }

    /// The tenant's port lives in warmpool's project, where the tenant
    /// cannot change its groups: it is created with the configured ones
    /// (ids, as Neutron takes them). None configured sends none, and
    /// Neutron gives the project's default group (an empty list would
    /// give the port no group at all).
    #[test]
    fn the_port_body_names_its_security_groups_when_given() {
        let spec = NewPortSpec {
            name: "warmpool-o1".into(),
            network_id: "net".into(),
            subnet_id: None,
            fixed_ip: None,
        };
        let groups = ["sg-1".to_owned(), "sg-2".to_owned()];
        assert_eq!(
            create_port_body(&spec, &groups),
            serde_json::json!({"port": {"network_id": "net", "name": "warmpool-o1", "security_groups": ["sg-1", "sg-2"]}})
        );
        assert_eq!(
            create_port_body(&spec, &[]),
            serde_json::json!({"port": {"network_id": "net", "name": "warmpool-o1"}})
        );
    }

    /// ML2's answer to a port naming groups on a network without port
    /// security is told by its type; another 400 (a malformed group id) or
    /// a proxy's page with the same words is not it.
    #[test]
    fn a_refusal_for_want_of_port_security_is_told_by_its_type() {
        let reply = |status, body: &str| Reply {
            status,
            retry_after: None,
            body: body.to_owned(),
        };
        let refused = r#"{"NeutronError": {"type": "PortSecurityAndIPRequiredForSecurityGroups", "message": "Port security must be enabled and port must have an IP address in order to use security groups.", "detail": ""}}"#;
        assert!(refused_for_want_of_port_security(&reply(400, refused)));
        let invalid = r#"{"NeutronError": {"type": "InvalidInput", "message": "Invalid input for operation: 'mysql' is not an integer or uuid.", "detail": ""}}"#;
        assert!(!refused_for_want_of_port_security(&reply(400, invalid)));
        assert!(!refused_for_want_of_port_security(&reply(
            400,
            "Port security must be enabled and port must have an IP address in order to use security groups."
        )));
        assert!(!refused_for_want_of_port_security(&reply(409, refused)));
    }

    #[test]
    fn ids_are_told_from_names() {
        assert!(looks_like_id("40a1fc95-a78b-49e4-9132-17b61ac3cf9b"));
        assert!(!looks_like_id("service-net"));
        assert!(!looks_like_id("40a1fc95-a78b-49e4-9132-17b61ac3cf9bx"));
    }

    /// A network's owner and RBAC shares as Neutron shows them to an admin
    /// of warmpool's project (`own`): policies of other objects or actions
    /// (a proxy dropping the listing's filters) are no share of it.
    #[test]
    fn a_networks_owner_and_shares_are_told_from_warmpools_project() {
        let own = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        let body: NetworkBody = serde_json::from_str(
            r#"{"network": {"id": "n1", "name": "b-net", "shared": true,
                "project_id": "ffee", "tenant_id": "ffee", "router:external": false}}"#,
        )
        .unwrap();
        let network = to_network(body.network, own).unwrap();
        assert_eq!(network.owner, cloud::NetworkOwner::Project("ffee".into()));
        assert!(network.shared);
        let mine: Named = serde_json::from_value(serde_json::json!(
            {"id": "n2", "project_id": own.to_ascii_uppercase()}
        ))
        .unwrap();
        let mine = to_network(mine, own).unwrap();
        assert_eq!(
            (mine.owner, mine.shared),
            (cloud::NetworkOwner::Warmpool, false)
        );
        let ownerless: Named = serde_json::from_value(serde_json::json!({"id": "n3"})).unwrap();
        assert!(to_network(ownerless, own).is_err());

        let body: RbacPoliciesBody = serde_json::from_str(&format!(
            r#"{{"rbac_policies": [
                {{"id": "p1", "object_type": "network", "object_id": "N1", "action": "access_as_shared", "target_tenant": "*"}},
                {{"id": "p2", "object_type": "network", "object_id": "n1", "action": "access_as_shared", "target_tenant": "{own}"}},
                {{"id": "p3", "object_type": "network", "object_id": "n1", "action": "access_as_shared", "target_tenant": "aabb"}},
                {{"id": "p4", "object_type": "network", "object_id": "n1", "action": "access_as_external", "target_tenant": "ccdd"}},
                {{"id": "p5", "object_type": "network", "object_id": "n9", "action": "access_as_shared", "target_tenant": "eeff"}},
                {{"id": "p6", "object_type": "qos_policy", "object_id": "n1", "action": "access_as_shared", "target_tenant": "1122"}}
            ]}}"#
        ))
        .unwrap();
        assert_eq!(
            network_shares(body.rbac_policies, "n1", own),
            [
                cloud::NetworkShare::EveryProject,
                cloud::NetworkShare::Warmpool,
                cloud::NetworkShare::Project("aabb".into()),
            ]
        );
    }
}
