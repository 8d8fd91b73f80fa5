//! Nova v2.1 under `/compute`: version discovery, microversions
//! (`X-OpenStack-Nova-API-Version` and `OpenStack-API-Version: compute X`,
//! 2.1 to `HttpSettings::nova_max_version`), servers (create, show, list
//! with `?name=` and, from 2.26, `?tags=`, delete, tags), flavors, `/limits`,
//! key pairs (show), volume attachments (200 with a body after the reserve
//! below 2.101; from 2.101 202 with none, a missing or attached volume
//! still refused first, the reserve after
//! `HttpSettings::attach_reserve_delay`) and interface attachments
//! (synchronous, as in real Nova).
//!
//! Where real Nova's answer to a case differs from the generic mapping in
//! [`super::errors`], the handler builds it here (e.g. attaching an attached
//! volume is Nova's 400 "Invalid volume: ... already attached ...").

use super::{
    iso_micros, iso_seconds, lock, mac_for, parse_body, parse_version, require_token, stable_hex,
    stable_uuid, ApiError, FaceState, Service,
};
use crate::model::{Model, ServerDetail, ServerExtras};
use crate::mysql;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pool_manager::cloud::{CloudError, ServerSpec, ServerStatus};
use pool_manager::model::PoolKey;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

const C: Service = Service::Compute;

/// The microversion of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mv(pub u16, pub u16);

impl Mv {
    fn at_least(self, major: u16, minor: u16) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

type Q = Option<Query<Vec<(String, String)>>>;

pub(super) fn routes(state: Arc<FaceState>) -> Router {
    let api = Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/detail", get(list_servers_detail))
        .route("/servers/:id", get(show_server).delete(delete_server))
        .route("/servers/:id/action", axum::routing::post(server_action))
        .route("/servers/:id/metadata", get(server_metadata))
        .route("/servers/:id/tags", get(list_tags))
        .route("/servers/:id/tags/:tag", get(check_tag).put(put_tag))
        .route(
            "/servers/:id/os-volume_attachments",
            get(list_volume_attachments).post(attach_volume),
        )
        .route(
            "/servers/:id/os-volume_attachments/:volume_id",
            get(show_volume_attachment).delete(detach_volume),
        )
        .route(
            "/servers/:id/os-interface",
            get(list_interfaces).post(attach_interface),
        )
        .route(
            "/servers/:id/os-interface/:port_id",
            get(show_interface).delete(detach_interface),
        )
        .route("/flavors", get(list_flavors))
        .route("/flavors/detail", get(list_flavors_detail))
        .route("/flavors/:id", get(show_flavor))
        .route("/flavors/:id/os-extra_specs", get(flavor_extra_specs))
        .route("/limits", get(limits))
        .route("/os-availability-zone", get(availability_zones))
        .route("/os-keypairs/:name", get(show_keypair))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            microversion,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), C),
            require_token,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/", get(root))
        .route("/v2.1", get(version))
        .route("/v2.1/", get(version))
        .with_state(state)
        .nest("/v2.1", api)
}

fn v21_doc(state: &FaceState) -> Value {
    let (a, b) = state.settings.nova_max_version;
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": format!("{a}.{b}"),
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": format!("{}/v2.1/", state.url(C))},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

/// Only v2.1 is listed: the face does not serve the legacy v2.0 API.
async fn root(State(state): State<Arc<FaceState>>) -> Json<Value> {
    Json(json!({"versions": [v21_doc(&state)]}))
}

async fn version(State(state): State<Arc<FaceState>>) -> Json<Value> {
    Json(json!({"version": v21_doc(&state)}))
}

/// Parses the requested microversion, refuses what Nova refuses, and names
/// the version served in the response headers, as Nova does.
async fn microversion(
    State(state): State<Arc<FaceState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let new_style = headers
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let mut it = item.split_whitespace();
            match (it.next(), it.next()) {
                (Some(svc), Some(ver)) if svc.eq_ignore_ascii_case("compute") => {
                    Some(ver.to_string())
                }
                _ => None,
            }
        });
    let requested = new_style.or_else(|| {
        headers
            .get("x-openstack-nova-api-version")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    });
    let max = state.settings.nova_max_version;
    let mv = match requested.as_deref() {
        None => Mv(2, 1),
        Some(s) if s.eq_ignore_ascii_case("latest") => Mv(max.0, max.1),
        Some(s) => match parse_version(s) {
            None => {
                return ApiError::bad_request(
                    C,
                    format!(
                        "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
                    ),
                )
                .into_response()
            }
            Some(v) if v < (2, 1) || v > max => {
                return ApiError::new(
                    C,
                    StatusCode::NOT_ACCEPTABLE,
                    format!(
                        "Version {s} is not supported by the API. Minimum is 2.1 and maximum is {}.{}.",
                        max.0, max.1
                    ),
                )
                .into_response()
            }
            Some((a, b)) => Mv(a, b),
        },
    };
    request.extensions_mut().insert(mv);
    let mut resp = next.run(request).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("compute {}.{}", mv.0, mv.1)) {
        h.insert("openstack-api-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}.{}", mv.0, mv.1)) {
        h.insert("x-openstack-nova-api-version", v);
    }
    h.insert(
        "vary",
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    resp
}

fn instance_not_found(id: &str) -> ApiError {
    ApiError::not_found(C, format!("Instance {id} could not be found."))
}

fn invalid_input(field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::bad_request(
        C,
        format!("Invalid input for field/attribute {field}. Value: {value}. {detail}"),
    )
}

fn versioned_not_found() -> ApiError {
    ApiError::not_found(C, "The resource could not be found.")
}

fn query_pairs(q: Q) -> Vec<(String, String)> {
    q.map(|Query(v)| v).unwrap_or_default()
}

/// Nova's tag rule: 1 to 60 characters, no `/` or `,`.
fn valid_tag(tag: &str) -> bool {
    (1..=60).contains(&tag.chars().count()) && !tag.contains('/') && !tag.contains(',')
}

fn link(state: &FaceState, path: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{}/v2.1/{path}", state.url(C))},
        {"rel": "bookmark", "href": format!("{}/{path}", state.url(C))},
    ])
}

fn network_name(state: &FaceState, id: &str) -> String {
    state
        .settings
        .networks
        .iter()
        .find(|n| n.id == id)
        .map(|n| state.network_name(n))
        .unwrap_or_else(|| id.to_string())
}

fn status_name(s: ServerStatus) -> &'static str {
    match s {
        ServerStatus::Build => "BUILD",
        ServerStatus::Active => "ACTIVE",
        ServerStatus::Error => "ERROR",
        ServerStatus::Deleted => "DELETED",
        ServerStatus::Stopped => "SHUTOFF",
        ServerStatus::Shelved => "SHELVED_OFFLOADED",
        ServerStatus::Paused => "PAUSED",
        ServerStatus::Suspended => "SUSPENDED",
        ServerStatus::Rescued => "RESCUE",
        ServerStatus::Other => "UNKNOWN",
    }
}

/// The status Nova shows: the boot's, or SOFT_DELETED.
fn shown_status(d: &ServerDetail) -> &'static str {
    match d.soft_deleted {
        true => "SOFT_DELETED",
        false => status_name(d.boot_status),
    }
}

/// Whether Nova shows a server's `fault` at `status`: only at ERROR and
/// DELETED (`_fault_statuses` in Nova's `views/servers.py`): Nova keeps a
/// server's faults recorded after a reset or rebuild has it ACTIVE again.
/// The model gives a fault to ERROR servers alone today.
fn fault_shown(status: &str) -> bool {
    matches!(status, "ERROR" | "DELETED")
}

/// `/dev/vdb`, `/dev/vdc`, ... by position among the server's mappings.
pub(crate) fn device_name(d: &ServerDetail, volume_id: &str) -> String {
    let i = d
        .volume_mappings
        .iter()
        .position(|v| v == volume_id)
        .unwrap_or(d.volume_mappings.len());
    let letter = (b'b' + (i as u8).min(24)) as char;
    format!("/dev/vd{letter}")
}

/// A server as `GET /servers/{id}` shows it at microversion `mv`.
fn server_json(state: &FaceState, model: &Model, d: &ServerDetail, mv: Mv) -> Value {
    let now = Instant::now();
    let s = &d.server;
    let primary = d
        .networks
        .first()
        .cloned()
        .or_else(|| state.settings.networks.first().map(|n| n.id.clone()))
        .unwrap_or_default();
    let mut addresses = Map::new();
    let mut push = |network_id: &str, ip: String, mac_of: &str| {
        if let Some(list) = addresses
            .entry(network_name(state, network_id))
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            list.push(json!({
                "version": 4,
                "addr": ip,
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": mac_for(mac_of),
            }));
        }
    };
    // A server that failed scheduling never got a network.
    if d.boot_status != ServerStatus::Error {
        push(&primary, d.addr.ip().to_string(), &s.id);
        for p in &d.ports {
            if let Some(ip) = &p.ip_address {
                push(&p.network_id, ip.clone(), &p.id);
            }
        }
    }
    let flavor = model.cfg.flavor_spec_even_retired(&d.flavor);
    let flavor_json = match (&flavor, mv.at_least(2, 47)) {
        (Some(f), true) => {
            let mut v = json!({
                "vcpus": f.vcpus, "ram": f.ram_mb, "disk": f.disk_gb,
                "ephemeral": 0, "swap": 0, "original_name": f.name,
            });
            // Nova shows them only where its policy shows a flavor's.
            if !model.cfg.flavor_extra_specs_hidden {
                v["extra_specs"] = json!(f.extra_specs);
            }
            v
        }
        (Some(f), false) => json!({"id": f.id, "links": link(state, &format!("flavors/{}", f.id))}),
        (None, _) => json!({}),
    };
    let (vm_state, power_state) = match d.boot_status {
        _ if d.soft_deleted => ("soft-delete", 4),
        ServerStatus::Active => ("active", 1),
        ServerStatus::Error => ("error", 0),
        _ => ("building", 0),
    };
    let task_state = if d.deleting {
        json!("deleting")
    } else if let Some(task) = &s.busy {
        json!(task)
    } else if d.boot_status == ServerStatus::Build {
        json!("spawning")
    } else {
        Value::Null
    };
    let created = state.wall(d.created_at);
    let launched = d.active_at.filter(|t| now >= *t);
    let updated = launched.map(|t| state.wall(t)).unwrap_or(created);
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "status": shown_status(d),
        "tenant_id": state.project_id,
        "user_id": state.settings.users.first().map(|u| state.user_id(&u.name)).unwrap_or_default(),
        "metadata": s.metadata,
        "hostId": if d.host.is_some() { stable_uuid("host", d.host.as_deref().unwrap_or_default()).replace('-', "") } else { String::new() },
        "image": {"id": state.image_id(&d.image), "links": [{"rel": "bookmark", "href": format!("{}/images/{}", state.url(C), state.image_id(&d.image))}]},
        "flavor": flavor_json,
        "created": iso_seconds(created),
        "updated": iso_seconds(updated),
        "addresses": addresses,
        "accessIPv4": "",
        "accessIPv6": "",
        "links": link(state, &format!("servers/{}", s.id)),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        // A boot that failed scheduling never reached a zone's host.
        "OS-EXT-AZ:availability_zone": if d.host.is_some() { s.availability_zone.as_str() } else { "" },
        "config_drive": "",
        "key_name": null,
        "OS-SRV-USG:launched_at": launched.map(|t| iso_micros(state.wall(t), false)),
        "OS-SRV-USG:terminated_at": null,
        "security_groups": [{"name": "default"}],
        "OS-EXT-STS:task_state": task_state,
        "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached": d.volume_mappings.iter()
            .map(|v| json!({"id": v, "delete_on_termination": false}))
            .collect::<Vec<_>>(),
    });
    if let Some(fault) = s.fault.as_ref().filter(|_| fault_shown(shown_status(d))) {
        // Nova's NoValidHost text; other injected faults show as given.
        let message = if fault == "NoValidHost" {
            "No valid host was found. There are not enough hosts available.".to_string()
        } else {
            fault.clone()
        };
        v["fault"] = json!({"code": 500, "created": iso_seconds(updated), "message": message});
    }
    if mv.at_least(2, 9) {
        v["locked"] = json!(false);
    }
    if mv.at_least(2, 19) {
        v["description"] = Value::Null;
    }
    if mv.at_least(2, 26) {
        v["tags"] = json!(d.tags);
    }
    if mv.at_least(2, 63) {
        v["trusted_image_certificates"] = Value::Null;
    }
    if mv.at_least(2, 71) {
        v["server_groups"] = json!([]);
    }
    if mv.at_least(2, 73) {
        v["locked_reason"] = Value::Null;
    }
    if mv.at_least(2, 90) {
        v["OS-EXT-SRV-ATTR:hostname"] = json!(s.name);
    }
    if mv.at_least(2, 96) {
        v["pinned_availability_zone"] = json!(s.availability_zone);
    }
    if mv.at_least(2, 98) {
        v["image"]["properties"] = json!({});
    }
    if mv.at_least(2, 100) {
        v["scheduler_hints"] = json!({});
    }
    v
}

fn str_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid_input(
            field,
            other,
            &format!("{other} is not of type 'string'"),
        )),
    }
}

/// A boot's `security_groups` (names or ids), each looked up as Nova's API
/// does before it accepts the boot (`_check_requested_secgroups`): among
/// the project's groups, by id or by name; `default` is not looked up. One
/// it does not find is a 400 (`SecurityGroupNotFound`), a name two groups
/// share a 409 (`NoUniqueMatch`, in neutronclient's words).
fn requested_security_groups(
    state: &FaceState,
    server: &Map<String, Value>,
) -> Result<Vec<String>, ApiError> {
    let list = match server.get("security_groups") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(invalid_input(
                "security_groups",
                other,
                &format!("{other} is not of type 'array'"),
            ))
        }
    };
    let groups = super::neutron::security_groups(state);
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| g["project_id"] == state.project_id.as_str())
        .collect();
    let mut names = Vec::new();
    for item in list {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            return Err(invalid_input(
                "security_groups",
                item,
                "'name' is a required property",
            ));
        };
        names.push(name.to_owned());
        if name == "default" {
            continue;
        }
        let by_id = ours.iter().any(|g| {
            g["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(name))
        });
        match ours.iter().filter(|g| g["name"] == name).count() {
            0 if !by_id => {
                return Err(ApiError::bad_request(
                    C,
                    format!("Security group {name} not found."),
                ))
            }
            n if n > 1 => {
                return Err(ApiError::conflict(
                    C,
                    format!("Multiple security_group matches found for name '{name}', use an ID to be more specific."),
                ))
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Nova's `SecurityGroupCannotBeApplied`, met on the compute host when it
/// makes the server's ports (`_create_ports_for_instance`): a network with
/// port security and no subnet takes no group at all, and one without port
/// security none that was asked for (a lone `default` is dropped before).
/// The boot was accepted; the server ends in ERROR with this fault.
fn groups_cannot_be_applied(
    state: &FaceState,
    networks: &[String],
    security_groups: &[String],
) -> Option<String> {
    let asked = !security_groups.is_empty() && security_groups != ["default"];
    let refused = networks.iter().any(|id| {
        state
            .settings
            .networks
            .iter()
            .find(|n| &n.id == id)
            .is_some_and(|n| match n.port_security_enabled {
                true => !super::neutron::has_subnet(state, n),
                false => asked,
            })
    });
    refused.then(|| {
        "Network requires port_security_enabled and subnet associated in order to apply security groups.".to_owned()
    })
}

/// `POST /servers`.
async fn create_server(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = parse_body(C, &body)?;
    let Some(server) = req.get("server").and_then(Value::as_object) else {
        return Err(invalid_input(
            "server",
            &req,
            "'server' is a required property",
        ));
    };
    let name = str_field(server, "name")?
        .filter(|n| !n.trim().is_empty() && n.chars().count() <= 255)
        .ok_or_else(|| {
            invalid_input(
                "name",
                server.get("name").unwrap_or(&Value::Null),
                "'name' is a required property of 1 to 255 characters",
            )
        })?
        .to_string();
    let cfg = state.sim.config();
    let flavor_ref = match server.get("flavorRef") {
        Some(Value::String(s)) => s.rsplit('/').next().unwrap_or_default().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        other => {
            return Err(invalid_input(
                "flavorRef",
                other.unwrap_or(&Value::Null),
                "'flavorRef' is a required property",
            ))
        }
    };
    let flavor = cfg
        .flavor_specs()
        .into_iter()
        .find(|f| f.id == flavor_ref)
        .ok_or_else(|| {
            ApiError::bad_request(C, format!("Flavor {flavor_ref} could not be found."))
        })?;
    let image_ref = str_field(server, "imageRef")?
        .map(|s| s.rsplit('/').next().unwrap_or_default().to_string())
        .ok_or_else(|| {
            // Boot-from-volume is not simulated.
            invalid_input(
                "imageRef",
                &Value::Null,
                "'imageRef' is a required property",
            )
        })?;
    if uuid::Uuid::parse_str(&image_ref).is_err() {
        // Real Nova checks the format before looking anything up, so an image
        // *name* is a 400 even when an image of that name exists.
        return Err(ApiError::bad_request(
            C,
            format!(
                "Invalid input for field/attribute imageRef. Value: {image_ref}. '{image_ref}' is not valid under any of the given schemas"
            ),
        ));
    }
    let image = cfg
        .images
        .iter()
        .find(|i| state.image_id(i) == image_ref)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(C, "Can not find requested image"))?;
    let networks = match server.get("networks") {
        None if mv.at_least(2, 37) => {
            return Err(invalid_input(
                "server",
                &Value::Object(server.clone()),
                "'networks' is a required property",
            ))
        }
        None | Some(Value::String(_)) => {
            // "auto"/"none" (2.37+) or nothing: the first network.
            state
                .settings
                .networks
                .first()
                .map(|n| n.id.clone())
                .into_iter()
                .collect()
        }
        Some(Value::Array(list)) => {
            let mut ids = Vec::new();
            for item in list {
                let Some(id) = item.get("uuid").and_then(Value::as_str) else {
                    return Err(invalid_input(
                        "networks",
                        item,
                        "only networks given by 'uuid' are simulated",
                    ));
                };
                if !state.settings.networks.iter().any(|n| n.id == id) {
                    return Err(ApiError::bad_request(
                        C,
                        format!("Network {id} could not be found."),
                    ));
                }
                ids.push(id.to_string());
            }
            ids
        }
        Some(other) => {
            return Err(invalid_input(
                "networks",
                other,
                &format!("{other} is not of type 'array', 'string'"),
            ))
        }
    };
    let az = match str_field(server, "availability_zone")? {
        Some(az) if !cfg.zone_takes_servers(az) => {
            return Err(ApiError::bad_request(
                C,
                "The requested availability zone is not available",
            ))
        }
        Some(az) => az.to_string(),
        // Nova's default_schedule_zone stand-in: the first zone.
        None => cfg
            .availability_zones
            .first()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
    };
    let mut metadata = std::collections::BTreeMap::new();
    match server.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(invalid_input(
                        &format!("metadata/{k}"),
                        v,
                        &format!("{v} is not of type 'string'"),
                    ));
                };
                if k.is_empty() || k.len() > 255 || v.len() > 255 {
                    return Err(invalid_input(
                        "metadata",
                        &Value::Object(m.clone()),
                        "keys and values must be 1 to 255 characters",
                    ));
                }
                metadata.insert(k.clone(), v.to_string());
            }
        }
        Some(other) => {
            return Err(invalid_input(
                "metadata",
                other,
                &format!("{other} is not of type 'object'"),
            ))
        }
    }
    let mut tags = BTreeSet::new();
    match server.get("tags") {
        None => {}
        Some(_) if !mv.at_least(2, 52) => {
            return Err(invalid_input(
                "server",
                &Value::Object(server.clone()),
                "Additional properties are not allowed ('tags' was unexpected)",
            ))
        }
        Some(Value::Array(list)) => {
            for t in list {
                match t.as_str() {
                    Some(t) if valid_tag(t) => {
                        tags.insert(t.to_string());
                    }
                    _ => {
                        return Err(invalid_input(
                            "tags",
                            t,
                            "a tag is 1 to 60 characters without '/' or ','",
                        ))
                    }
                }
            }
            if tags.len() > 50 {
                return Err(invalid_input("tags", &json!(tags), "at most 50 tags"));
            }
        }
        Some(other) => {
            return Err(invalid_input(
                "tags",
                other,
                &format!("{other} is not of type 'array'"),
            ))
        }
    }

    // Nova looks the key pair up among the caller's user's before it boots.
    match server.get("key_name") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if state.sim.config().key_pairs.contains(name) => {}
        Some(_) => return Err(ApiError::bad_request(C, "Invalid key_name provided.")),
    }
    let security_groups = requested_security_groups(&state, server)?;
    let network_fault = groups_cannot_be_applied(&state, &networks, &security_groups);
    state
        .sim
        .gate("create_server")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    // The server's own loopback address; its mysqld will greet there.
    let socket = if state.sim.inner.listeners {
        Some(state.reserve_mysql_socket().map_err(|e| {
            // Nova's 500 tells the client only that the create failed;
            // whoever runs cloudsim must learn why.
            tracing::warn!(
                mysql_port = state.settings.mysql_port,
                "cloudsim: a server create failed: cannot reserve a loopback address for its simulated mysqld ({e}); is the port taken on every address (a local MySQL)? Restart cloudsim with another --mysql-port"
            );
            ApiError::new(
                C,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cloudsim: cannot reserve a loopback address for simulated mysqld: {e}"),
            )
        })?)
    } else {
        None
    };
    let addr = match &socket {
        Some(s) => Some(s.local_addr().map_err(|e| {
            ApiError::new(
                C,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cloudsim: {e}"),
            )
        })?),
        None => None,
    };
    let spec = ServerSpec {
        name,
        pool: PoolKey::new(flavor.name.clone(), az),
        image,
        metadata,
    };
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    let (created, ready_at) = model
        .create_server_ext(
            &spec,
            ServerExtras {
                tags,
                networks,
                network_fault,
            },
            now,
            addr,
        )
        .map_err(|e| ApiError::from_cloud(C, e))?;
    if let Some(socket) = socket {
        let guard = mysql::spawn_listener(socket, ready_at, state.sim.inner.mysql_version.clone());
        model.set_listener(&created.id, guard);
    }
    drop(model);
    let body = json!({"server": {
        "id": created.id,
        "links": link(&state, &format!("servers/{}", created.id)),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": if security_groups.is_empty() {
            json!([{"name": "default"}])
        } else {
            json!(security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>())
        },
        "adminPass": uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
    }});
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v2.1/servers/{}", state.url(C), created.id)) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

async fn show_server(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("get_server")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    Ok(Json(json!({"server": server_json(&state, &model, &d, mv)})))
}

/// The servers a list call returns: `?name=` (a regular expression searched
/// for in the name, as Nova's database's REGEXP does: a client wanting a
/// literal name escapes it), `?status=`, and from 2.26 `?tags=` (all of),
/// `?tags-any=`, `?not-tags=`; below 2.26 tag filters are ignored, as Nova
/// ignores unknown filters for non-admin users. Newest first.
fn filtered(model: &Model, q: &[(String, String)], mv: Mv) -> Result<Vec<ServerDetail>, ApiError> {
    let now = Instant::now();
    let split = |v: &str| -> Vec<String> { v.split(',').map(str::to_string).collect() };
    let names = q
        .iter()
        .filter(|(k, _)| k == "name")
        .map(|(_, v)| {
            // Nova's database fails such a query (a 500); a 400 tells the
            // test that sent it what it got wrong.
            regex::Regex::new(v)
                .map_err(|e| ApiError::bad_request(C, format!("Invalid name filter {v:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut list: Vec<ServerDetail> = model
        .server_details(now)
        .into_iter()
        // Nova's listing asks its database for servers not deleted, and a
        // SOFT_DELETED one counts as deleted there: a non-admin never sees
        // it listed, whatever the filters, only by its id.
        .filter(|d| !d.soft_deleted)
        .filter(|d| {
            q.iter().all(|(k, v)| match k.as_str() {
                "name" => names.iter().all(|re| re.is_match(&d.server.name)),
                "status" => shown_status(d).eq_ignore_ascii_case(v),
                "tags" if mv.at_least(2, 26) => split(v).iter().all(|t| d.tags.contains(t)),
                "tags-any" if mv.at_least(2, 26) => split(v).iter().any(|t| d.tags.contains(t)),
                "not-tags" if mv.at_least(2, 26) => !split(v).iter().all(|t| d.tags.contains(t)),
                _ => true,
            })
        })
        .collect();
    list.reverse();
    Ok(list)
}

async fn list_servers(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_servers")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let q = query_pairs(q);
    let model = state.sim.inner.lock_at(Instant::now());
    let servers: Vec<Value> = filtered(&model, &q, mv)?
        .iter()
        .map(|d| {
            json!({
                "id": d.server.id,
                "name": d.server.name,
                "links": link(&state, &format!("servers/{}", d.server.id)),
            })
        })
        .collect();
    paged(&state, servers, &q, "servers", "servers")
}

/// A page of a listing (`collection`: servers, flavors), linked to the
/// next as Nova links it (`<collection>_links`).
fn paged(
    state: &FaceState,
    items: Vec<Value>,
    q: &[(String, String)],
    path: &str,
    collection: &str,
) -> Result<Json<Value>, ApiError> {
    let url = format!("{}/{path}", state.url(super::Service::Compute));
    let (items, next) = super::page(items, q, &state.settings, &url).map_err(|e| {
        let message = match e {
            super::PageError::BadLimit(m) => m,
            super::PageError::UnknownMarker(id) => format!("marker [{id}] not found"),
        };
        ApiError::new(C, StatusCode::BAD_REQUEST, message)
    })?;
    let mut body = serde_json::Map::new();
    body.insert(collection.to_owned(), Value::Array(items));
    if let Some(links) = next {
        body.insert(format!("{collection}_links"), links);
    }
    Ok(Json(Value::Object(body)))
}

async fn list_servers_detail(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_servers_detail")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let q = query_pairs(q);
    let model = state.sim.inner.lock_at(Instant::now());
    let servers: Vec<Value> = filtered(&model, &q, mv)?
        .iter()
        .map(|d| server_json(&state, &model, d, mv))
        .collect();
    paged(&state, servers, &q, "servers/detail", "servers")
}

async fn delete_server(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .sim
        .gate("delete_server")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    let Some(d) = model.server_detail(&id, now) else {
        return Err(instance_not_found(&id));
    };
    let reclaim = state.settings.reclaim_instance_interval;
    // Nova soft-deletes only a server that was ever ACTIVE.
    let launched = d.active_at.is_some_and(|t| now >= t);
    if !reclaim.is_zero() && launched {
        model.soft_delete_server(&id, now, reclaim);
    } else {
        model.delete_server(&id, now);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /servers/{id}/action`: `forceDelete` (202), which deletes a
/// SOFT_DELETED server for good (403 while `HttpFaults::refuse_force_delete`
/// says the policy refuses it), and `restore` (202), which brings one back;
/// no other action is simulated.
async fn server_action(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let body: Value = serde_json::from_slice(&body).map_err(|_| ApiError::malformed_body(C))?;
    let action = body
        .as_object()
        .and_then(|o| o.keys().next())
        .cloned()
        .unwrap_or_default();
    let method = match action.as_str() {
        "forceDelete" => "force_delete_server",
        "restore" => "restore_server",
        _ => {
            return Err(ApiError::bad_request(
                C,
                format!("There is no such action: {action}"),
            ))
        }
    };
    let (mut model, now) = live_server(&state, method, &action, &id).await?;
    // A passing failure (HttpFaults::fail_force_delete_next).
    if action == "forceDelete" {
        if let Some(status) = lock(&state.force_delete_failures).pop_front() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return Err(if status == StatusCode::UNAUTHORIZED {
                ApiError::unauthorized(C, &format!("{}/v3", state.url(Service::Identity)))
            } else {
                ApiError::new(
                    C,
                    status,
                    "forceDelete failed (HttpFaults::fail_force_delete_next)",
                )
            });
        }
    }
    // Nova checks the action's policy once it has found the server.
    if action == "forceDelete" && state.force_delete_refused.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            C,
            StatusCode::FORBIDDEN,
            "Policy doesn't allow os_compute_api:os-deferred-delete:force to be performed.",
        ));
    }
    match action.as_str() {
        "forceDelete" => model.force_delete_server(&id, now),
        _ => model.restore_server(&id, now),
    }
    .map_err(|e| ApiError::from_cloud(C, e))?;
    Ok(StatusCode::ACCEPTED)
}

/// Lets `method` through the API gate, then locks the model with server
/// `id` live: the start of every call on a server's attachments and
/// actions. The guard is held across no await.
///
/// A server gone is Nova's 404; one being deleted (task_state `deleting`,
/// until its delete is done) is still found, and refused for its task
/// state: Nova's 409 `Cannot '<action>' instance <id> while it is in
/// task_state deleting` (`check_instance_state`), measured on a real Nova
/// for detach_volume, detach_interface and attach_volume. `action` is the
/// name Nova's API gives the call in that message.
async fn live_server<'a>(
    state: &'a FaceState,
    method: &'static str,
    action: &str,
    id: &str,
) -> Result<(std::sync::MutexGuard<'a, Model>, Instant), ApiError> {
    state
        .sim
        .gate(method)
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    match model.server_detail(id, now) {
        None => Err(instance_not_found(id)),
        Some(d) if d.deleting => Err(ApiError::conflict(
            C,
            format!("Cannot '{action}' instance {id} while it is in task_state deleting"),
        )),
        Some(_) => Ok((model, now)),
    }
}

async fn server_metadata(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("get_server")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    Ok(Json(json!({"metadata": d.server.metadata})))
}

async fn list_tags(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !mv.at_least(2, 26) {
        return Err(versioned_not_found());
    }
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    Ok(Json(json!({"tags": d.tags})))
}

async fn check_tag(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !mv.at_least(2, 26) {
        return Err(versioned_not_found());
    }
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    if d.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            C,
            format!("Tag {tag} could not be found."),
        ))
    }
}

/// `PUT /servers/{id}/tags/{tag}` (2.26+): 201 when added, 204 when present.
async fn put_tag(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !mv.at_least(2, 26) {
        return Err(versioned_not_found());
    }
    if !valid_tag(&tag) {
        return Err(ApiError::bad_request(C, format!("Tag '{tag}' is invalid.")));
    }
    state
        .sim
        .gate("tag_server")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    let Some(detail) = model.server_detail(&id, now) else {
        return Err(instance_not_found(&id));
    };
    // Nova tags only a server in vm_state active, paused, suspended or
    // stopped (`_check_instance_in_valid_state`): not one still building.
    if detail.server.status != ServerStatus::Active {
        return Err(ApiError::conflict(
            C,
            format!(
                "Cannot 'update tag' instance {id} while it is in vm_state {}",
                match detail.server.status {
                    ServerStatus::Build => "building",
                    ServerStatus::Error => "error",
                    _ => "deleted",
                }
            ),
        ));
    }
    let added = model
        .add_server_tag(&id, &tag)
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v2.1/servers/{id}/tags/{tag}", state.url(C)))
    {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

fn attachment_json(d: &ServerDetail, volume_id: &str, mv: Mv) -> Value {
    let mut v = json!({
        "device": device_name(d, volume_id),
        "id": volume_id,
        "serverId": d.server.id,
        "volumeId": volume_id,
    });
    if mv.at_least(2, 70) {
        v["tag"] = Value::Null;
    }
    if mv.at_least(2, 79) {
        v["delete_on_termination"] = json!(false);
    }
    if mv.at_least(2, 89) {
        v["attachment_id"] = json!(stable_uuid(
            "attachment",
            &format!("{}/{volume_id}", d.server.id)
        ));
        v["bdm_uuid"] = json!(stable_uuid("bdm", &format!("{}/{volume_id}", d.server.id)));
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
        }
    }
    v
}

/// `POST /servers/{id}/os-volume_attachments`. Below 2.101: the volume
/// checked and reserved (`attaching`, turning `in-use` later, seen through
/// Cinder), then 200 with the attachment. From 2.101: the server checked,
/// and the volume as far as the testbed measured at 2.104
/// (deploy/testbed/smoke-output-example.txt: a missing volume 404, one
/// attached to another server 400, both before any answer), then 202 with
/// an empty body; the reserve comes `attach_reserve_delay` later, and what
/// it refuses (unmeasured on a real Nova: a volume not `available` for
/// another reason, of another zone) reaches no caller.
async fn attach_volume(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = parse_body(C, &body)?;
    let volume_id = req
        .get("volumeAttachment")
        .and_then(|a| a.get("volumeId"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid_input(
                "volumeAttachment",
                &req,
                "'volumeId' is a required property",
            )
        })?
        .to_string();
    let (mut model, now) = live_server(&state, "attach_volume", "attach_volume", &id).await?;
    if mv.at_least(2, 101) {
        model
            .accept_volume_attach(&id, now)
            .map_err(|e| ApiError::from_cloud(C, e))?;
        refuse_volume(&model, &volume_id, now)?;
        let delay = state.settings.attach_reserve_delay;
        if delay.is_zero() {
            reserve_volume_attach(&mut model, &id, &volume_id, now);
        } else {
            drop(model);
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let now = Instant::now();
                let mut model = state.sim.inner.lock_at(now);
                reserve_volume_attach(&mut model, &id, &volume_id, now);
            });
        }
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    refuse_volume(&model, &volume_id, now)?;
    model
        .attach_volume(&id, &volume_id, now)
        .map_err(|e| match e {
            // Cinder refusing the volume for its status is Nova's 400 (the
            // zone refusal is `Fatal`, a 400 already).
            CloudError::Conflict(m) if m.starts_with("Invalid volume") => {
                ApiError::bad_request(C, m)
            }
            e => ApiError::from_cloud(C, e),
        })?;
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    Ok(Json(json!({"volumeAttachment": attachment_json(&d, &volume_id, mv)})).into_response())
}

/// Nova's refusal of an attach for its volume: missing, or attached to
/// another server.
fn refuse_volume(model: &Model, volume_id: &str, now: Instant) -> Result<(), ApiError> {
    if model.get_volume(volume_id, now).is_err() {
        return Err(ApiError::not_found(
            C,
            format!("Volume {volume_id} could not be found."),
        ));
    }
    if let Some(other) = model.volume_server(volume_id, now) {
        return Err(ApiError::bad_request(
            C,
            format!("Invalid volume: volume {volume_id} is already attached to instances: {other}"),
        ));
    }
    Ok(())
}

/// The reserve of an attach Nova answered 202 (2.101+): what it refuses
/// (the checks before the 202 passed) is recorded on the server's instance
/// actions only, never answered.
fn reserve_volume_attach(model: &mut Model, server_id: &str, volume_id: &str, now: Instant) {
    if let Err(e) = model.reserve_volume_attach(server_id, volume_id, now) {
        tracing::debug!(server_id, volume_id, error = %e, "volume attach refused at reserve");
    }
}

async fn list_volume_attachments(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_volume_attachments")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    let list: Vec<Value> = d
        .volume_mappings
        .iter()
        .map(|v| attachment_json(&d, v, mv))
        .collect();
    Ok(Json(json!({"volumeAttachments": list})))
}

fn not_attached(id: &str, volume_id: &str) -> ApiError {
    ApiError::not_found(
        C,
        format!("Instance {id} is not attached to volume {volume_id}"),
    )
}

async fn show_volume_attachment(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    if !d.volume_mappings.contains(&volume_id) {
        return Err(not_attached(&id, &volume_id));
    }
    Ok(Json(
        json!({"volumeAttachment": attachment_json(&d, &volume_id, mv)}),
    ))
}

/// `DELETE /servers/{id}/os-volume_attachments/{volume_id}`: 202; the
/// volume is `detaching`, then `available`.
async fn detach_volume(
    State(state): State<Arc<FaceState>>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (mut model, now) = live_server(&state, "detach_volume", "detach_volume", &id).await?;
    if model.get_volume(&volume_id, now).is_err() {
        return Err(ApiError::not_found(
            C,
            format!("Volume {volume_id} could not be found."),
        ));
    }
    if model.volume_listed_on(&volume_id, now).as_deref() != Some(id.as_str()) {
        return Err(not_attached(&id, &volume_id));
    }
    if model.volume_server(&volume_id, now).as_deref() != Some(id.as_str()) {
        // Detaching already: Nova still has its mapping, and Cinder's
        // begin_detaching refuses a volume that is not in-use.
        return Err(ApiError::bad_request(C, crate::model::DETACH_NOT_IN_USE));
    }
    model
        .detach_volume(&id, &volume_id, now)
        .map_err(|e| match e {
            CloudError::Conflict(m) if m == crate::model::DETACH_NOT_IN_USE => {
                ApiError::bad_request(C, m)
            }
            e => ApiError::from_cloud(C, e),
        })?;
    Ok(StatusCode::ACCEPTED)
}

fn interface_json(state: &FaceState, p: &pool_manager::cloud::Port, mv: Mv) -> Value {
    let mut v = json!({
        "net_id": p.network_id,
        "port_id": p.id,
        "mac_addr": mac_for(&p.id),
        "port_state": "ACTIVE",
        "fixed_ips": super::fixed_ips(state, &p.network_id, &p.id, p.ip_address.as_deref()),
    });
    if mv.at_least(2, 70) {
        v["tag"] = Value::Null;
    }
    v
}

/// `POST /servers/{id}/os-interface` with a `port_id`: synchronous like real
/// Nova, answering 200 once the port is bound (`device_id` set).
async fn attach_interface(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = parse_body(C, &body)?;
    let Some(port_id) = req
        .get("interfaceAttachment")
        .and_then(|a| a.get("port_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        // Nova would create a port for a bare net_id; not simulated.
        return Err(invalid_input(
            "interfaceAttachment",
            &req,
            "cloudsim simulates attaching an existing 'port_id' only",
        ));
    };
    let done = {
        let (mut model, now) = live_server(&state, "attach_port", "attach_interface", &id).await?;
        if model.get_port(&port_id, now).is_err() {
            return Err(ApiError::not_found(
                C,
                format!("Port id {port_id} could not be found."),
            ));
        }
        model
            .attach_port(&id, &port_id, now)
            .map_err(|e| ApiError::from_cloud(C, e))?
    };
    tokio::time::sleep_until(done).await;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let port = model
        .get_port(&port_id, now)
        .map_err(|_| ApiError::not_found(C, format!("Port id {port_id} could not be found.")))?;
    Ok(Json(
        json!({"interfaceAttachment": interface_json(&state, &port, mv)}),
    ))
}

async fn list_interfaces(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_interfaces")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    let list: Vec<Value> = d
        .ports
        .iter()
        .map(|p| interface_json(&state, p, mv))
        .collect();
    Ok(Json(json!({"interfaceAttachments": list})))
}

async fn show_interface(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path((id, port_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .server_detail(&id, now)
        .ok_or_else(|| instance_not_found(&id))?;
    let port =
        d.ports.iter().find(|p| p.id == port_id).ok_or_else(|| {
            ApiError::not_found(C, format!("Port id {port_id} could not be found."))
        })?;
    Ok(Json(
        json!({"interfaceAttachment": interface_json(&state, port, mv)}),
    ))
}

/// `DELETE /servers/{id}/os-interface/{port_id}`: 202; `device_id` clears later.
async fn detach_interface(
    State(state): State<Arc<FaceState>>,
    Path((id, port_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (mut model, now) = live_server(&state, "detach_port", "detach_interface", &id).await?;
    let bound_here = model
        .port_detail(&port_id, now)
        .is_some_and(|p| p.target.as_deref() == Some(id.as_str()));
    if !bound_here {
        return Err(ApiError::not_found(
            C,
            format!("Port id {port_id} could not be found."),
        ));
    }
    model
        .detach_port(&id, &port_id, now)
        .map_err(|e| ApiError::from_cloud(C, e))?;
    Ok(StatusCode::ACCEPTED)
}

/// A flavor as Nova shows it; `specs_shown`: whether Nova's policy shows
/// its extra specs to the caller (from 2.61 a detail carries them then,
/// and leaves them out otherwise).
fn flavor_json(
    state: &FaceState,
    f: &crate::config::FlavorSpec,
    mv: Mv,
    detail: bool,
    specs_shown: bool,
) -> Value {
    let mut v = json!({
        "id": f.id,
        "name": f.name,
        "links": link(state, &format!("flavors/{}", f.id)),
    });
    if mv.at_least(2, 55) {
        v["description"] = Value::Null;
    }
    if detail {
        v["ram"] = json!(f.ram_mb);
        v["disk"] = json!(f.disk_gb);
        v["vcpus"] = json!(f.vcpus);
        v["swap"] = if mv.at_least(2, 75) {
            json!(0)
        } else {
            json!("")
        };
        v["OS-FLV-EXT-DATA:ephemeral"] = json!(0);
        v["OS-FLV-DISABLED:disabled"] = json!(false);
        v["os-flavor-access:is_public"] = json!(true);
        v["rxtx_factor"] = json!(1.0);
        if mv.at_least(2, 61) && specs_shown {
            v["extra_specs"] = json!(f.extra_specs);
        }
    }
    v
}

async fn list_flavors(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_flavors")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let config = state.sim.config();
    let shown = !config.flavor_extra_specs_hidden;
    let list: Vec<Value> = config
        .flavor_specs()
        .iter()
        .map(|f| flavor_json(&state, f, mv, false, shown))
        .collect();
    paged(&state, list, &query_pairs(q), "flavors", "flavors")
}

async fn list_flavors_detail(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("list_flavors")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let config = state.sim.config();
    let shown = !config.flavor_extra_specs_hidden;
    let list: Vec<Value> = config
        .flavor_specs()
        .iter()
        .map(|f| flavor_json(&state, f, mv, true, shown))
        .collect();
    paged(&state, list, &query_pairs(q), "flavors/detail", "flavors")
}

async fn show_flavor(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("get_flavor")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let config = state.sim.config();
    let f = config
        .flavor_specs()
        .into_iter()
        .find(|f| f.id == id)
        .ok_or_else(|| ApiError::not_found(C, format!("Flavor {id} could not be found.")))?;
    let shown = !config.flavor_extra_specs_hidden;
    Ok(Json(
        json!({"flavor": flavor_json(&state, &f, mv, true, shown)}),
    ))
}

/// `GET /flavors/{id}/os-extra_specs`: refused 403 while the policy hides
/// extra specs (`SimConfig::flavor_extra_specs_hidden`), as Nova's
/// `os_compute_api:os-flavor-extra-specs:index` refuses them.
async fn flavor_extra_specs(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("get_flavor_extra_specs")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let config = state.sim.config();
    if config.flavor_extra_specs_hidden {
        return Err(ApiError::new(
            C,
            StatusCode::FORBIDDEN,
            "Policy doesn't allow os_compute_api:os-flavor-extra-specs:index to be performed.",
        ));
    }
    let f = config
        .flavor_specs()
        .into_iter()
        .find(|f| f.id == id)
        .ok_or_else(|| ApiError::not_found(C, format!("Flavor {id} could not be found.")))?;
    Ok(Json(json!({"extra_specs": f.extra_specs})))
}

/// `GET /os-keypairs/{name}`: a key pair of the caller's user
/// (`SimConfig::key_pairs`; every user of the face has the same).
async fn show_keypair(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = state
        .settings
        .users
        .first()
        .map(|u| state.user_id(&u.name))
        .unwrap_or_default();
    let index = state
        .sim
        .config()
        .key_pairs
        .iter()
        .position(|k| *k == name)
        .ok_or_else(|| {
            ApiError::not_found(C, format!("Keypair {name} not found for user {user_id}"))
        })?;
    let hex = stable_hex("keypair", &name);
    let fingerprint: Vec<&str> = (0..16).map(|i| &hex[2 * i..2 * i + 2]).collect();
    let mut keypair = json!({
        "id": index + 1,
        "name": name,
        "user_id": user_id,
        "public_key": format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{hex} {name}"),
        "fingerprint": fingerprint.join(":"),
        "created_at": iso_micros(state.wall(state.epoch.0), false),
        "updated_at": null,
        "deleted": false,
        "deleted_at": null,
    });
    if mv.at_least(2, 2) {
        keypair["type"] = json!("ssh");
    }
    Ok(Json(json!({ "keypair": keypair })))
}

fn limit(v: Option<u64>) -> Value {
    v.map_or(json!(-1), |n| json!(n))
}

/// `GET /limits`: the project's compute quotas and usage; -1 is unlimited.
/// Security-group, floating-IP and personality limits disappear at 2.36/2.57
/// as in Nova.
async fn limits(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
) -> Result<Json<Value>, ApiError> {
    state
        .sim
        .gate("boot_headroom")
        .await
        .map_err(|e| ApiError::from_cloud(C, e))?;
    let model = state.sim.inner.lock_at(Instant::now());
    let usage = model.compute_usage();
    let cfg = &model.cfg;
    let mut absolute = json!({
        "maxServerMeta": 128,
        "maxTotalInstances": cfg.quotas.max_instances,
        "totalServerGroupsUsed": 0,
        "maxImageMeta": 128,
        "maxTotalKeypairs": 100,
        "maxServerGroups": 10,
        "totalCoresUsed": usage.cores,
        "totalRAMUsed": usage.ram_mb,
        "totalInstancesUsed": usage.instances,
        "maxTotalCores": limit(cfg.max_cores),
        "maxServerGroupMembers": 10,
        "maxTotalRAMSize": limit(cfg.max_ram_mb),
    });
    if !mv.at_least(2, 36) {
        absolute["maxSecurityGroupRules"] = json!(20);
        absolute["maxSecurityGroups"] = json!(10);
        absolute["totalFloatingIpsUsed"] = json!(0);
        absolute["maxTotalFloatingIps"] = json!(10);
        absolute["totalSecurityGroupsUsed"] = json!(0);
    }
    if !mv.at_least(2, 57) {
        absolute["maxPersonality"] = json!(5);
        absolute["maxPersonalitySize"] = json!(10240);
    }
    Ok(Json(json!({"limits": {"rate": [], "absolute": absolute}})))
}

async fn availability_zones(State(state): State<Arc<FaceState>>) -> Json<Value> {
    let cfg = state.sim.config();
    let zones: Vec<Value> = cfg
        .availability_zones
        .iter()
        .map(|a| {
            let available = cfg.zone_takes_servers(&a.name);
            json!({"zoneName": a.name, "zoneState": {"available": available}, "hosts": null})
        })
        .collect();
    Json(json!({"availabilityZoneInfo": zones}))
}
