//! Neutron v2.0 under `/network`: version discovery, the configured networks
//! and their subnets (the project's, or another's as an admin sees them:
//! `NetworkSpec::other_project`), the networks' RBAC `access_as_shared`
//! policies (every one, as an admin sees them), security groups (`SimConfig::security_groups`), ports
//! (create, naming security groups or not, show, list with `?name=`/
//! `?device_id=`/`?network_id=`/`?project_id=`, delete; other projects'
//! ports too, as an admin sees them) and the project's quota details.
//! Errors are `{"NeutronError": {...}}`.

use super::{
    iso_seconds, mac_for, parse_body, require_token, stable_hex, stable_uuid, ApiError, FaceState,
    NetworkSpec, Service, SlaacSubnet,
};
use crate::model::PortDetail;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pool_manager::cloud::{CloudError, NewPortSpec};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

const N: Service = Service::Network;

type Q = Option<Query<Vec<(String, String)>>>;

pub(super) fn routes(state: Arc<FaceState>) -> Router {
    let api = Router::new()
        .route("/networks", get(list_networks))
        .route("/networks/:id", get(show_network))
        .route("/rbac-policies", get(list_rbac_policies))
        .route("/subnets", get(list_subnets))
        .route("/subnets/:id", get(show_subnet))
        .route("/security-groups", get(list_security_groups))
        .route("/security-groups/:id", get(show_security_group))
        .route("/ports", get(list_ports).post(create_port))
        .route(
            "/ports/:id",
            get(show_port).put(update_port).delete(delete_port),
        )
        .route("/quotas/:project_id/details", get(quota_details))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), N),
            require_token,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/", get(root))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .with_state(state)
        .nest("/v2.0", api)
}

async fn root(State(state): State<Arc<FaceState>>) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{}/v2.0/", state.url(N))}],
    }]}))
}

async fn resources(State(state): State<Arc<FaceState>>) -> Json<Value> {
    let r = |name: &str, collection: &str| {
        json!({"name": name, "collection": collection,
               "links": [{"rel": "self", "href": format!("{}/v2.0/{collection}", state.url(N))}]})
    };
    Json(json!({"resources": [
        r("network", "networks"), r("subnet", "subnets"), r("port", "ports"),
        r("security_group", "security-groups"), r("rbac_policy", "rbac-policies"),
    ]}))
}

fn query(q: Q) -> Vec<(String, String)> {
    q.map(|Query(v)| v).unwrap_or_default()
}

/// Neutron filters: every given field must match (a repeated field matches any).
fn matches(obj: &Value, q: &[(String, String)]) -> bool {
    let mut fields: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
    fields.sort_unstable();
    fields.dedup();
    fields.iter().all(|field| {
        if *field == "fields" || *field == "limit" || *field == "marker" {
            return true;
        }
        let actual = match obj.get(*field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return false,
        };
        q.iter().any(|(k, v)| k == field && *v == actual)
    })
}

/// A network the cloud was configured without a subnet for
/// (`SimConfig::networks_without_subnet`) lists none, and its ports get no address.
pub(super) fn has_subnet(state: &FaceState, n: &NetworkSpec) -> bool {
    !state.sim.config().networks_without_subnet.contains(&n.id)
}

fn network_json(state: &FaceState, n: &NetworkSpec) -> Value {
    let created = iso_seconds(state.wall(state_epoch(state)));
    let subnets: Vec<&str> = if has_subnet(state, n) {
        std::iter::once(n.subnet_id.as_str())
            .chain(n.slaac_subnet.as_ref().map(|s| s.id.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": n.id,
        "name": state.network_name(n),
        "status": "ACTIVE",
        "subnets": subnets,
        "admin_state_up": true,
        // Worked out for the project asking, as Neutron does.
        "shared": n.shared || n.shared_with.iter().any(|p| super::project_id_of(p) == state.project_id),
        "tenant_id": n.project_id(&state.project_id),
        "project_id": n.project_id(&state.project_id),
        "router:external": false,
        "mtu": 1450,
        "port_security_enabled": n.port_security_enabled,
        "availability_zone_hints": [],
        "availability_zones": [],
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
        "l2_adjacency": true,
        "description": "",
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "revision_number": 1,
    })
}

/// Networks exist from the face's start.
fn state_epoch(state: &FaceState) -> Instant {
    state.epoch.0
}

fn subnet_json(state: &FaceState, n: &NetworkSpec) -> Value {
    let created = iso_seconds(state.wall(state_epoch(state)));
    json!({
        "id": n.subnet_id,
        "name": format!("{}-subnet", n.name),
        "network_id": n.id,
        "tenant_id": n.project_id(&state.project_id),
        "project_id": n.project_id(&state.project_id),
        "ip_version": 4,
        "cidr": n.cidr,
        "gateway_ip": n.gateway_ip,
        "enable_dhcp": true,
        "allocation_pools": [],
        "dns_nameservers": [],
        "host_routes": [],
        "ipv6_ra_mode": null,
        "ipv6_address_mode": null,
        "subnetpool_id": null,
        "service_types": [],
        "description": "",
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "revision_number": 0,
    })
}

async fn list_networks(State(state): State<Arc<FaceState>>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query(q);
    let list: Vec<Value> = state
        .settings
        .networks
        .iter()
        .map(|n| network_json(&state, n))
        .filter(|n| matches(n, &q))
        .collect();
    let url = format!("{}/v2.0/networks", state.url(N));
    let (list, next) = super::page(list, &q, &state.settings, &url).map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::new(N, StatusCode::BAD_REQUEST, m),
        // Neutron looks the marker up as the listed resource, as for ports.
        super::PageError::UnknownMarker(id) => network_not_found(&id),
    })?;
    Ok(Json(match next {
        Some(links) => json!({"networks": list, "networks_links": links}),
        None => json!({"networks": list}),
    }))
}

async fn show_network(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // The database compares the path's id without case, as for a port's
    // network_id; the network answers under its stored id.
    let n = state
        .settings
        .networks
        .iter()
        .find(|n| n.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| network_not_found(&id))?;
    Ok(Json(json!({"network": network_json(&state, n)})))
}

/// Every network's `access_as_shared` policies: one of target `*` for a
/// `shared` network, one for each project of its `shared_with`.
fn rbac_policies(state: &FaceState) -> Vec<Value> {
    let mut policies = Vec::new();
    for n in &state.settings.networks {
        let owner = n.project_id(&state.project_id);
        let targets = n
            .shared
            .then(|| "*".to_string())
            .into_iter()
            .chain(n.shared_with.iter().map(|p| super::project_id_of(p)));
        for target in targets {
            policies.push(json!({
                "id": stable_uuid("rbac-policy", &format!("{}/{target}", n.id)),
                "object_type": "network",
                "object_id": n.id,
                "action": "access_as_shared",
                "target_tenant": target,
                "project_id": owner,
                "tenant_id": owner,
            }));
        }
    }
    policies
}

async fn list_rbac_policies(
    State(state): State<Arc<FaceState>>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    let q = query(q);
    let list: Vec<Value> = rbac_policies(&state)
        .into_iter()
        .filter(|p| matches(p, &q))
        .collect();
    let url = format!("{}/v2.0/rbac-policies", state.url(N));
    let (list, next) = super::page(list, &q, &state.settings, &url).map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::new(N, StatusCode::BAD_REQUEST, m),
        super::PageError::UnknownMarker(id) => {
            ApiError::not_found(N, format!("RBAC policy on object {id} could not be found."))
                .typed("RbacPolicyNotFound")
        }
    })?;
    Ok(Json(match next {
        Some(links) => json!({"rbac_policies": list, "rbac_policies_links": links}),
        None => json!({"rbac_policies": list}),
    }))
}

fn network_not_found(id: &str) -> ApiError {
    ApiError::not_found(N, format!("Network {id} could not be found.")).typed("NetworkNotFound")
}

/// A dual-stack network's IPv6 SLAAC subnet, as Neutron shows it.
fn slaac_subnet_json(state: &FaceState, n: &NetworkSpec, slaac: &SlaacSubnet) -> Value {
    let mut v = subnet_json(state, n);
    let gateway = slaac
        .cidr
        .parse::<ipnet::Ipv6Net>()
        .map(|net| std::net::Ipv6Addr::from(u128::from(net.network()) + 1).to_string())
        .unwrap_or_default();
    v["id"] = json!(slaac.id);
    v["name"] = json!(format!("{}-subnet-v6", n.name));
    v["ip_version"] = json!(6);
    v["cidr"] = json!(slaac.cidr);
    v["gateway_ip"] = json!(gateway);
    v["ipv6_ra_mode"] = json!("slaac");
    v["ipv6_address_mode"] = json!("slaac");
    v
}

/// Every subnet the face serves, IPv4 ones first.
fn all_subnets(state: &FaceState) -> Vec<Value> {
    let served = || {
        state
            .settings
            .networks
            .iter()
            .filter(|n| has_subnet(state, n))
    };
    served()
        .map(|n| subnet_json(state, n))
        .chain(served().filter_map(|n| {
            n.slaac_subnet
                .as_ref()
                .map(|s| slaac_subnet_json(state, n, s))
        }))
        .collect()
}

async fn list_subnets(State(state): State<Arc<FaceState>>, q: Q) -> Json<Value> {
    let q = query(q);
    let list: Vec<Value> = all_subnets(&state)
        .into_iter()
        .filter(|n| matches(n, &q))
        .collect();
    Json(json!({"subnets": list}))
}

async fn show_subnet(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let subnet = all_subnets(&state)
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .ok_or_else(|| {
            ApiError::not_found(N, format!("Subnet {id} could not be found."))
                .typed("SubnetNotFound")
        })?;
    Ok(Json(json!({ "subnet": subnet })))
}

/// The security groups (`SimConfig::security_groups`). A project's first
/// group of a name has an id of its name alone (the `default` group's is the
/// one every port lists), a repeat one of its place in the list too.
pub(super) fn security_groups(state: &FaceState) -> Vec<Value> {
    let groups = state.sim.config().security_groups;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let project_id = match &g.other_project {
                None => state.project_id.clone(),
                Some(other) => stable_hex("project", other),
            };
            let repeated = groups[..i]
                .iter()
                .any(|e| e.name == g.name && e.other_project == g.other_project);
            let id =
                g.id.clone()
                    .unwrap_or_else(|| match (&g.other_project, repeated) {
                        (None, false) => stable_uuid("security-group", &g.name),
                        _ => stable_uuid("security-group", &format!("{project_id}/{}/{i}", g.name)),
                    });
            json!({
                "id": id,
                "name": g.name,
                "description": if g.name == "default" { "Default security group" } else { "" },
                "tenant_id": project_id,
                "project_id": project_id,
                "security_group_rules": g.rules,
                "stateful": true,
                "shared": false,
                "tags": [],
                "revision_number": 1,
            })
        })
        .collect()
}

/// `GET /security-groups`, with Neutron's filters (`?name=`,
/// `?project_id=`) and pages.
async fn list_security_groups(
    State(state): State<Arc<FaceState>>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    let q = query(q);
    let list: Vec<Value> = security_groups(&state)
        .into_iter()
        .filter(|g| matches(g, &q))
        .collect();
    let url = format!("{}/v2.0/security-groups", state.url(N));
    let (list, next) = super::page(list, &q, &state.settings, &url).map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::new(N, StatusCode::BAD_REQUEST, m),
        super::PageError::UnknownMarker(id) => security_group_not_found(&id),
    })?;
    Ok(Json(match next {
        Some(links) => json!({"security_groups": list, "security_groups_links": links}),
        None => json!({"security_groups": list}),
    }))
}

/// `GET /security-groups/{id}`.
async fn show_security_group(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let group = security_groups(&state)
        .into_iter()
        .find(|g| {
            g["id"]
                .as_str()
                .is_some_and(|g| g.eq_ignore_ascii_case(&id))
        })
        .ok_or_else(|| security_group_not_found(&id))?;
    Ok(Json(json!({ "security_group": group })))
}

fn security_group_not_found(id: &str) -> ApiError {
    ApiError::not_found(N, format!("Security group {id} does not exist"))
        .typed("SecurityGroupNotFound")
}

fn port_json(state: &FaceState, d: &PortDetail) -> Value {
    let p = &d.port;
    let network = state
        .settings
        .networks
        .iter()
        .find(|n| n.id == p.network_id);
    let port_security = network.is_none_or(|n| n.port_security_enabled);
    // A port created naming no group has the project's default one, if
    // its network has port security; none without.
    let default_groups = if port_security {
        vec![stable_uuid("security-group", "default")]
    } else {
        Vec::new()
    };
    let created = iso_seconds(state.wall(d.created_at));
    let bound = p.device_id.is_some();
    let now = Instant::now();
    let az = p
        .device_id
        .as_ref()
        .and_then(|s| state.sim.inner.lock_at(now).server_detail(s, now))
        .map(|s| s.server.availability_zone);
    json!({
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "tenant_id": state.project_id,
        "project_id": state.project_id,
        "mac_address": mac_for(&p.id),
        "admin_state_up": true,
        "status": if bound { "ACTIVE" } else { "DOWN" },
        "device_id": p.device_id.clone().unwrap_or_default(),
        "device_owner": az.map(|az| format!("compute:{az}")).unwrap_or_default(),
        "fixed_ips": super::fixed_ips(state, &p.network_id, &p.id, p.ip_address.as_deref()),
        "ip_allocation": if p.ip_address.is_some() { "immediate" } else { "none" },
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "security_groups": d.security_groups.clone().unwrap_or(default_groups),
        "description": "",
        "binding:vnic_type": "normal",
        "port_security_enabled": port_security,
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "revision_number": if bound { 3 } else { 1 },
    })
}

/// A port of project `project_id` named `name` on `network_id`, bound to
/// `device_id` if given: not one of the model's
/// (`HttpFaults::add_port_of_project`).
pub(super) fn port_of_project(
    state: &FaceState,
    id: &str,
    project_id: &str,
    name: &str,
    network_id: &str,
    device_id: Option<&str>,
) -> Value {
    let created = iso_seconds(state.wall(Instant::now()));
    json!({
        "id": id,
        "name": name,
        "network_id": network_id,
        "tenant_id": project_id,
        "project_id": project_id,
        "mac_address": mac_for(id),
        "admin_state_up": true,
        "status": if device_id.is_some() { "ACTIVE" } else { "DOWN" },
        "device_id": device_id.unwrap_or_default(),
        "device_owner": if device_id.is_some() { "compute:nova" } else { "" },
        "fixed_ips": [],
        "ip_allocation": "none",
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "security_groups": [],
        "description": "",
        "binding:vnic_type": "normal",
        "port_security_enabled": true,
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "revision_number": 1,
    })
}

/// Another project's port (`HttpFaults::add_port_of_project`) of id `id`.
fn port_of_another_project(state: &FaceState, id: &str) -> Option<Value> {
    super::lock(&state.other_projects_ports)
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
}

fn port_not_found(id: &str) -> ApiError {
    ApiError::not_found(N, format!("Port {id} could not be found.")).typed("PortNotFound")
}

/// `POST /ports`: synchronous (Neutron answers once the port exists), 201.
async fn create_port(
    State(state): State<Arc<FaceState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = parse_body(N, &body)?;
    let Some(port) = req.get("port").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(
            N,
            "Unable to find 'port' in request body",
        ));
    };
    let network_id = port
        .get("network_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(
                N,
                "Failed to parse request. Required attribute 'network_id' not specified",
            )
        })?
        .to_string();
    // Neutron's database compares ids without case (MySQL's collation), so
    // an id in upper case names the same network.
    let Some(network) = state
        .settings
        .networks
        .iter()
        .find(|n| n.id.eq_ignore_ascii_case(&network_id))
    else {
        return Err(network_not_found(&network_id));
    };
    let network_id = network.id.clone();
    let name = match port.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(
                N,
                format!("Invalid input for name. Reason: '{other}' is not a valid string."),
            ))
        }
    };
    let first_ip = port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .and_then(|l| l.first());
    let fixed_ip = first_ip
        .and_then(|f| f.get("ip_address"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(ip) = &fixed_ip {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(ApiError::bad_request(
                N,
                format!("Invalid input for fixed_ips. Reason: '{ip}' is not a valid IP address."),
            ));
        }
    }
    let subnet_id = first_ip
        .and_then(|f| f.get("subnet_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(slaac) = network
        .slaac_subnet
        .as_ref()
        .filter(|s| subnet_id.as_deref() == Some(s.id.as_str()))
    {
        return Err(ApiError::bad_request(
            N,
            format!("cloudsim: a port on the IPv6 SLAAC subnet {} alone (no IPv4 address) is not simulated; name the IPv4 subnet {} or none", slaac.id, network.subnet_id),
        ));
    }
    let security_groups = match port.get("security_groups") {
        None | Some(Value::Null) => None,
        Some(given) => Some(port_security_groups(&state, given)?),
    };
    state
        .sim
        .gate("create_port")
        .await
        .map_err(|e| ApiError::from_cloud(N, e))?;
    // Neutron's policy, as a project member meets it: an address on
    // another project's network is for its owner or an admin, whatever
    // the address (refused before the plugin looks at it).
    if state.sim.config().member_port_policy && network.other_project.is_some() {
        let entries = port.get("fixed_ips").and_then(Value::as_array);
        let keys = entries
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|entry| entry.keys())
            .map(String::as_str)
            .filter(|k| matches!(*k, "ip_address" | "subnet_id"));
        let sets_an_address = entries
            .into_iter()
            .flatten()
            .any(|entry| entry.get("ip_address").is_some());
        if sets_an_address {
            return Err(ApiError::new(
                N,
                StatusCode::FORBIDDEN,
                crate::model::fixed_ips_refusal(keys),
            )
            .typed("PolicyNotAuthorized"));
        }
    }
    // ML2 refuses groups on a port without port security (which it takes
    // from its network), after the request reached it: counted as a call.
    if !network.port_security_enabled && security_groups.as_ref().is_some_and(|g| !g.is_empty()) {
        return Err(ApiError::bad_request(
            N,
            "Port security must be enabled and port must have an IP address in order to use security groups.",
        )
        .typed("PortSecurityAndIPRequiredForSecurityGroups"));
    }
    let base = state.sim.config().latencies.port_create;
    state.sim.take(base).await;
    let now = Instant::now();
    let created = state
        .sim
        .inner
        .lock_at(now)
        .create_port_in_groups(
            &NewPortSpec {
                name,
                network_id: network_id.clone(),
                subnet_id,
                fixed_ip,
            },
            security_groups,
            now,
        )
        .map_err(|e| match e {
            CloudError::Conflict(m) if m.starts_with("IP address") => {
                ApiError::conflict(N, m).typed("IpAddressAlreadyAllocated")
            }
            CloudError::NotFound(m) if m.starts_with("Network") => {
                ApiError::not_found(N, m).typed("NetworkNotFound")
            }
            CloudError::Fatal(m) if m.starts_with("IP address") => {
                ApiError::bad_request(N, m).typed("InvalidIpForSubnet")
            }
            CloudError::Fatal(m) if m.starts_with("Invalid input") => {
                ApiError::bad_request(N, m).typed("InvalidInput")
            }
            CloudError::Conflict(m) if m.starts_with("No more IP addresses") => {
                ApiError::conflict(N, m).typed("IpAddressGenerationFailure")
            }
            e => ApiError::from_cloud(N, e),
        })?;
    let d = state
        .sim
        .inner
        .lock_at(now)
        .port_detail(&created.id, now)
        .ok_or_else(|| port_not_found(&created.id))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"port": port_json(&state, &d)})),
    )
        .into_response())
}

/// The ids of a port create's `security_groups`, as Neutron checks them:
/// each must look like a UUID (400), and name a group of the project (404;
/// another project's is not the caller's to give). An empty list is kept:
/// the port has no group.
fn port_security_groups(state: &FaceState, given: &Value) -> Result<Vec<String>, ApiError> {
    let invalid = |what: &str| {
        ApiError::bad_request(
            N,
            format!("Invalid input for operation: '{what}' is not an integer or uuid."),
        )
        .typed("InvalidInput")
    };
    let Some(given) = given.as_array() else {
        return Err(invalid(&given.to_string()));
    };
    let known = security_groups(state);
    given
        .iter()
        .map(|g| {
            let Some(g) = g.as_str().filter(|g| uuid::Uuid::parse_str(g).is_ok()) else {
                return Err(invalid(g.as_str().unwrap_or(&g.to_string())));
            };
            known
                .iter()
                .find(|k| {
                    k["project_id"] == state.project_id.as_str()
                        && k["id"]
                            .as_str()
                            .is_some_and(|id| id.eq_ignore_ascii_case(g))
                })
                .and_then(|k| k["id"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| security_group_not_found(g))
        })
        .collect()
}

async fn show_port(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("get_port")
        .await
        .map_err(|e| ApiError::from_cloud(N, e))?;
    let now = Instant::now();
    let d = state.sim.inner.lock_at(now).port_detail(&id, now);
    let port = match d {
        Some(d) => port_json(&state, &d),
        None => port_of_another_project(&state, &id).ok_or_else(|| port_not_found(&id))?,
    };
    Ok(Json(json!({ "port": port })))
}

async fn list_ports(State(state): State<Arc<FaceState>>, q: Q) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("find_ports_by_name")
        .await
        .map_err(|e| ApiError::from_cloud(N, e))?;
    let q = query(q);
    let now = Instant::now();
    let ports = state.sim.inner.lock_at(now).port_details(now);
    let others = super::lock(&state.other_projects_ports).clone();
    let list: Vec<Value> = ports
        .iter()
        .map(|d| port_json(&state, d))
        .chain(others)
        .filter(|p| matches(p, &q))
        .collect();
    let url = format!("{}/v2.0/ports", state.url(N));
    let (list, next) = super::page(list, &q, &state.settings, &url).map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::new(N, StatusCode::BAD_REQUEST, m),
        // Neutron looks the marker up as a port (measured on the testbed).
        super::PageError::UnknownMarker(id) => port_not_found(&id),
    })?;
    Ok(Json(match next {
        Some(links) => json!({"ports": list, "ports_links": links}),
        None => json!({"ports": list}),
    }))
}

/// `PUT /ports/{id}`: the name can change. Binding belongs to Nova
/// (`os-interface`), so a `device_id` change is refused as not simulated.
/// (Neutron's PortInUse is not raised on any call warmpool makes: a real
/// Neutron 29 accepts a new `device_id` on a bound port, and an in-use port
/// given to Nova is Nova's 409 "Port X is still in use.".)
async fn update_port(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = parse_body(N, &body)?;
    let Some(update) = req.get("port").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(
            N,
            "Unable to find 'port' in request body",
        ));
    };
    for key in update.keys() {
        match key.as_str() {
            "name" | "device_id" | "description" | "admin_state_up" => {}
            "id" | "network_id" | "tenant_id" | "project_id" | "mac_address" | "status" => {
                return Err(ApiError::bad_request(
                    N,
                    format!("Cannot update read-only attribute {key}"),
                ))
            }
            other => {
                return Err(ApiError::bad_request(
                    N,
                    format!("Unrecognized attribute(s) '{other}'"),
                ))
            }
        }
    }
    if let Some(device) = update.get("device_id").filter(|d| !d.is_string()) {
        return Err(ApiError::bad_request(
            N,
            format!("Invalid input for device_id. Reason: '{device}' is not a valid string."),
        ));
    }
    state
        .sim
        .gate("update_port")
        .await
        .map_err(|e| ApiError::from_cloud(N, e))?;
    let now = Instant::now();
    {
        let mut model = state.sim.inner.lock_at(now);
        let current = model
            .port_detail(&id, now)
            .ok_or_else(|| port_not_found(&id))?;
        if let Some(device) = update.get("device_id") {
            let device = device.as_str().unwrap_or_default();
            if Some(device) != current.port.device_id.as_deref().or(Some("")) {
                // Real Neutron accepts this (and Nova does not notice);
                // binding belongs to Nova's os-interface here.
                return Err(ApiError::bad_request(
                    N,
                    "cloudsim: changing device_id through Neutron is not simulated; attach ports with Nova os-interface",
                ));
            }
        }
        match update.get("name") {
            None => {}
            Some(Value::String(name)) => model
                .rename_port(&id, name)
                .map_err(|_| port_not_found(&id))?,
            Some(other) => {
                return Err(ApiError::bad_request(
                    N,
                    format!("Invalid input for name. Reason: '{other}' is not a valid string."),
                ))
            }
        }
    }
    let d = state
        .sim
        .inner
        .lock_at(now)
        .port_detail(&id, now)
        .ok_or_else(|| port_not_found(&id))?;
    Ok(Json(json!({"port": port_json(&state, &d)})))
}

/// `DELETE /ports/{id}`: 204; a bound port is deleted too (the server loses
/// the interface), as in Neutron.
async fn delete_port(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .sim
        .gate("delete_port")
        .await
        .map_err(|e| ApiError::from_cloud(N, e))?;
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    if model.port_detail(&id, now).is_none() {
        return Err(port_not_found(&id));
    }
    if let Some(refused) = model.port_delete_refusal(&id, now) {
        return Err(ApiError::new(N, StatusCode::FORBIDDEN, refused).typed("PolicyNotAuthorized"));
    }
    model.delete_port(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /quotas/{project_id}/details` (the quota_details extension): each
/// resource's limit (-1: none), use and reservations. Every port counts,
/// those Nova made for its servers too.
async fn quota_details(
    State(state): State<Arc<FaceState>>,
    Path(project_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.quota_details_refused.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            N,
            StatusCode::FORBIDDEN,
            "rule:get_quota is disallowed by policy",
        )
        .typed("PolicyNotAuthorized"));
    }
    let model = state.sim.inner.lock_at(Instant::now());
    let used_ports = if project_id == state.project_id {
        model.port_count()
    } else {
        0
    };
    let q = |used: usize, limit: i64| json!({"used": used, "limit": limit, "reserved": 0});
    let port_limit = if model.cfg.quotas.max_ports == crate::Quotas::UNLIMITED {
        -1
    } else {
        i64::try_from(model.cfg.quotas.max_ports).unwrap_or(i64::MAX)
    };
    Ok(Json(json!({"quota": {
        "network": q(0, 100),
        "subnet": q(0, 100),
        "port": q(used_ports, port_limit),
        "router": q(0, 10),
        "floatingip": q(0, 50),
        "security_group": q(1, 10),
        "security_group_rule": q(0, 100),
        "rbac_policy": q(0, 10),
        "subnetpool": q(0, -1),
    }})))
}
