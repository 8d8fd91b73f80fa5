//! Cinder v3 under `/volume`: version discovery, microversions
//! (`OpenStack-API-Version: volume 3.x`, echoed), volumes (create, show,
//! list with `?name=`, paged as `page_limit` says, delete, metadata set), `/limits` and `/os-availability-zone`. Routes answer with the
//! project id in the path (the catalog's) and, from microversion 3.67
//! (Yoga) on, without it, as osauth sends them (it uses the version
//! document's `self` link, which has none); an older Cinder has no such
//! route and answers webob's 404 page.

use super::{iso_micros, parse_body, parse_version, require_token, ApiError, FaceState, Service};
use crate::model::VolumeDetail;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pool_manager::cloud::{CloudError, NewVolumeSpec, VolumeStatus};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

const V: Service = Service::Volume;

type Params = Path<HashMap<String, String>>;
type Q = Option<Query<Vec<(String, String)>>>;

/// The first microversion whose Cinder routes its API without the project
/// id in the path too.
const PROJECT_ID_OPTIONAL: (u16, u16) = (3, 67);

pub(super) fn routes(state: Arc<FaceState>) -> Router {
    let api = |project_in_path: bool| {
        let router = Router::new()
            .route("/volumes", get(list_volumes).post(create_volume))
            .route("/volumes/detail", get(list_volumes_detail))
            .route(
                "/volumes/:volume_id",
                get(show_volume).delete(delete_volume),
            )
            .route(
                "/volumes/:volume_id/metadata",
                axum::routing::post(create_volume_metadata),
            )
            .route("/limits", get(limits))
            .route("/os-availability-zone", get(availability_zones))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                microversion,
            ));
        // Routing comes after keystonemiddleware and before the
        // microversion is read, as in Cinder.
        let router = if project_in_path {
            router
        } else {
            router.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                project_id_required,
            ))
        };
        router
            .layer(axum::middleware::from_fn_with_state(
                (state.clone(), V),
                require_token,
            ))
            .with_state(state.clone())
    };
    // As on a real Cinder: `/v3/` needs a token, `/v3` redirects there.
    let discovery = Router::new()
        .route("/v3/", get(v3))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            microversion,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), V),
            require_token,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/", get(root))
        .route("/v3", get(redirect_v3))
        // The catalog URL itself is not a version document: osauth then
        // tries its parent, `/v3` (redirected to `/v3/`), as with Cinder.
        .route("/v3/:project_id", get(not_a_version))
        .with_state(state.clone())
        .merge(discovery)
        .nest("/v3", api(false))
        .nest("/v3/:project_id", api(true))
}

/// A route without the project id below [`PROJECT_ID_OPTIONAL`]: none
/// there, as on a Cinder before Yoga.
async fn project_id_required(
    State(state): State<Arc<FaceState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.settings.cinder_max_version < PROJECT_ID_OPTIONAL {
        return super::errors::webob_page(
            StatusCode::NOT_FOUND,
            "The resource could not be found.",
        );
    }
    next.run(request).await
}

fn v3_doc(state: &FaceState) -> Value {
    let (a, b) = state.settings.cinder_max_version;
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": format!("{a}.{b}"),
        "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{}/v3/", state.url(V))},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// Cinder's root answers 300 Multiple Choices, without authentication.
async fn root(State(state): State<Arc<FaceState>>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        [
            ("openstack-api-version", "volume 3.0"),
            ("vary", "OpenStack-API-Version"),
        ],
        Json(json!({"versions": [v3_doc(&state)]})),
    )
        .into_response()
}

async fn redirect_v3(State(state): State<Arc<FaceState>>) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, format!("{}/v3/", state.url(V))),
            (header::CONTENT_TYPE, "text/plain; charset=utf8".to_string()),
        ],
    )
        .into_response()
}

async fn v3(State(state): State<Arc<FaceState>>) -> Json<Value> {
    Json(json!({"versions": [v3_doc(&state)]}))
}

async fn not_a_version() -> Response {
    super::errors::webob_page(StatusCode::NOT_FOUND, "The resource could not be found.")
}

/// The microversion, echoed in `OpenStack-API-Version` as Cinder does.
async fn microversion(
    State(state): State<Arc<FaceState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let requested = request
        .headers()
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let mut it = item.split_whitespace();
            match (it.next(), it.next()) {
                (Some(svc), Some(ver)) if svc.eq_ignore_ascii_case("volume") => {
                    Some(ver.to_string())
                }
                _ => None,
            }
        });
    let max = state.settings.cinder_max_version;
    let mv = match requested.as_deref() {
        None => (3, 0),
        Some(s) if s.eq_ignore_ascii_case("latest") => max,
        Some(s) => match parse_version(s) {
            None => {
                return ApiError::bad_request(
                    V,
                    format!("API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."),
                )
                .into_response()
            }
            Some(v) if v < (3, 0) || v > max => {
                return ApiError::new(
                    V,
                    StatusCode::NOT_ACCEPTABLE,
                    format!(
                        "Version {s} is not supported by the API. Minimum is 3.0 and maximum is {}.{}.",
                        max.0, max.1
                    ),
                )
                .into_response()
            }
            Some(v) => v,
        },
    };
    request.extensions_mut().insert(Mv(mv));
    let mut resp = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&format!("volume {}.{}", mv.0, mv.1)) {
        resp.headers_mut().insert("openstack-api-version", v);
    }
    resp.headers_mut()
        .insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    resp
}

/// A request naming another project than the token's is refused.
/// The start of a project-scoped call: the project in the path (if any)
/// is ours, and the call passes the simulated cloud's gate (its faults,
/// rate limit and call count) as `call`.
async fn admit(
    state: &FaceState,
    p: &HashMap<String, String>,
    call: &'static str,
) -> Result<(), ApiError> {
    check_project(state, p)?;
    state
        .sim
        .gate(call)
        .await
        .map_err(|e| ApiError::from_cloud(V, e))
}

fn check_project(state: &FaceState, p: &HashMap<String, String>) -> Result<(), ApiError> {
    match p.get("project_id") {
        Some(id) if *id != state.project_id => {
            Err(ApiError::bad_request(V, "Malformed request url"))
        }
        _ => Ok(()),
    }
}

fn volume_not_found(id: &str) -> ApiError {
    ApiError::not_found(V, format!("Volume {id} could not be found."))
}

pub(crate) fn status_name(s: &VolumeStatus) -> &str {
    match s {
        VolumeStatus::Creating => "creating",
        VolumeStatus::Available => "available",
        VolumeStatus::Attaching => "attaching",
        VolumeStatus::InUse => "in-use",
        VolumeStatus::Detaching => "detaching",
        VolumeStatus::Error => "error",
        VolumeStatus::Other(o) => o,
    }
}

/// The request's microversion.
#[derive(Clone, Copy, Debug)]
struct Mv((u16, u16));

/// How one request sees volumes: its microversion, and whether its URL
/// carried the project id (links then carry it too, as Cinder's do).
#[derive(Clone, Copy)]
struct View<'a> {
    mv: (u16, u16),
    project: Option<&'a str>,
}

fn view<'a>(mv: Mv, p: &'a HashMap<String, String>) -> View<'a> {
    View {
        mv: mv.0,
        project: p.get("project_id").map(String::as_str),
    }
}

fn links(state: &FaceState, v: View<'_>, id: &str) -> Value {
    let project = v.project.map(|p| format!("/{p}")).unwrap_or_default();
    json!([
        {"rel": "self", "href": format!("{}/v3{project}/volumes/{id}", state.url(V))},
        {"rel": "bookmark", "href": format!("{}{project}/volumes/{id}", state.url(V))},
    ])
}

fn volume_json(
    state: &FaceState,
    model: &crate::model::Model,
    d: &VolumeDetail,
    view: View<'_>,
) -> Value {
    let now = Instant::now();
    let v = &d.volume;
    let created = iso_micros(state.wall(d.created_at), false);
    let volume_type = v
        .volume_type
        .as_deref()
        .unwrap_or(crate::model::DEFAULT_VOLUME_TYPE);
    let attachments: Vec<Value> = v
        .attached_to
        .iter()
        .map(|server| {
            let device = model
                .server_detail(server, now)
                .map(|s| super::nova::device_name(&s, &v.id))
                .unwrap_or_else(|| "/dev/vdb".to_string());
            let attachment_id = super::stable_uuid("attachment", &format!("{server}/{}", v.id));
            json!({
                "server_id": server,
                "attachment_id": attachment_id,
                "attached_at": created,
                "host_name": null,
                "volume_id": v.id,
                "device": device,
                "id": v.id,
            })
        })
        .collect();
    let mut body = json!({
        "id": v.id,
        "name": v.name,
        "status": status_name(&v.status),
        "size": v.size_gib,
        "availability_zone": v.availability_zone,
        "created_at": created,
        "updated_at": created,
        "attachments": attachments,
        "bootable": "false",
        "encrypted": false,
        "description": null,
        "volume_type": volume_type,
        "snapshot_id": null,
        "source_volid": null,
        "metadata": v.metadata,
        "links": links(state, view, &v.id),
        "user_id": state.settings.users.first().map(|u| state.user_id(&u.name)).unwrap_or_default(),
        // Cinder's default policy shows it to a reader of the project.
        "os-vol-tenant-attr:tenant_id": d.project_id.as_deref().unwrap_or(&state.project_id),
        "multiattach": v.multiattach,
        "replication_status": null,
        "consistencygroup_id": null,
    });
    // Fields later microversions add (as a member sees them).
    let extra: [((u16, u16), &str, Value); 5] = [
        ((3, 13), "group_id", Value::Null),
        (
            (3, 48),
            "service_uuid",
            json!(super::stable_uuid("cinder-volume", "cloudsim")),
        ),
        ((3, 48), "shared_targets", json!(false)),
        (
            (3, 63),
            "volume_type_id",
            json!(super::stable_uuid("volume-type", volume_type)),
        ),
        ((3, 65), "consumes_quota", json!(true)),
    ];
    for (since, key, value) in extra {
        if view.mv >= since {
            body[key] = value;
        }
    }
    body
}

/// `POST /volumes`: 202 with the volume in `creating`.
async fn create_volume(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(p): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_project(&state, &p)?;
    let req = parse_body(V, &body)?;
    let Some(vol) = req.get("volume").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(
            V,
            "Invalid input for field/attribute volume. 'volume' is a required property",
        ));
    };
    let size = match vol.get("size") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .filter(|n| *n >= 1)
    .ok_or_else(|| {
        ApiError::bad_request(
            V,
            format!(
                "Invalid input for field/attribute size. Value: {}. Must be a positive integer (as a number or a string of digits).",
                vol.get("size").unwrap_or(&Value::Null)
            ),
        )
    })?;
    let text = |field: &str| -> Result<Option<String>, ApiError> {
        match vol.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::bad_request(
                V,
                format!("Invalid input for field/attribute {field}. Value: {other}. {other} is not of type 'string'"),
            )),
        }
    };
    let name = text("name")?.unwrap_or_default();
    let volume_type = text("volume_type")?;
    let metadata = metadata(vol.get("metadata"))?;
    let cfg = state.sim.config();
    let az = match text("availability_zone")? {
        Some(az) if !cfg.availability_zones.iter().any(|a| a.name == az) => {
            return Err(ApiError::bad_request(
                V,
                format!("Availability zone '{az}' is invalid."),
            ))
        }
        Some(az) => az,
        None => cfg
            .availability_zones
            .first()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
    };
    state
        .sim
        .gate("create_volume")
        .await
        .map_err(|e| ApiError::from_cloud(V, e))?;
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    let created = model
        .create_volume(
            &NewVolumeSpec {
                name,
                size_gib: size,
                volume_type,
                availability_zone: az,
                metadata,
            },
            now,
        )
        .map_err(|e| ApiError::from_cloud(V, e))?;
    let d = model
        .volume_detail(&created.id, now)
        .ok_or_else(|| volume_not_found(&created.id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"volume": volume_json(&state, &model, &d, view(mv, &p))})),
    )
        .into_response())
}

/// A create's `metadata`, as Cinder's schema takes it: absent or null, or
/// an object of strings, keys of 1 to 255 of `a-zA-Z0-9-_:. /`, values
/// of at most 255 characters.
fn metadata(given: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let refused = |why: String| {
        ApiError::bad_request(
            V,
            format!("Invalid input for field/attribute metadata. {why}"),
        )
    };
    let entries = match given {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => entries,
        Some(other) => {
            return Err(refused(format!(
                "Value: {other}. {other} is not of type 'object', 'null'"
            )))
        }
    };
    let key_ok = |k: &str| {
        (1..=255).contains(&k.chars().count())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:. /".contains(c))
    };
    let mut metadata = BTreeMap::new();
    for (key, value) in entries {
        match value {
            Value::String(v) if key_ok(key) && v.chars().count() <= 255 => {
                metadata.insert(key.clone(), v.clone());
            }
            _ => {
                return Err(refused(format!(
                    "Value: {}. Additional properties are not allowed or {key:?} is not a string of at most 255 characters",
                    Value::Object(entries.clone())
                )))
            }
        }
    }
    Ok(metadata)
}

async fn show_volume(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(p): Params,
) -> Result<Json<Value>, ApiError> {
    admit(&state, &p, "get_volume").await?;
    let id = p.get("volume_id").cloned().unwrap_or_default();
    let now = Instant::now();
    let model = state.sim.inner.lock_at(now);
    let d = model
        .volume_detail(&id, now)
        .ok_or_else(|| volume_not_found(&id))?;
    Ok(Json(
        json!({"volume": volume_json(&state, &model, &d, view(mv, &p))}),
    ))
}

/// `POST /volumes/{id}/metadata`: the keys given are set, the volume's
/// others kept; 200 with the volume's metadata as it is now, as Cinder
/// answers.
async fn create_volume_metadata(
    State(state): State<Arc<FaceState>>,
    Path(p): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_project(&state, &p)?;
    let req = parse_body(V, &body)?;
    let given = match req.get("metadata") {
        Some(m @ Value::Object(_)) => metadata(Some(m))?,
        _ => {
            return Err(ApiError::bad_request(
                V,
                "Invalid input for field/attribute metadata. 'metadata' is a required property",
            ))
        }
    };
    admit(&state, &p, "set_volume_metadata").await?;
    let id = p.get("volume_id").cloned().unwrap_or_default();
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    if model.volume_detail(&id, now).is_none() {
        return Err(volume_not_found(&id));
    }
    // Cinder checks the policy once it has found the volume.
    if state.volume_metadata_writes_refused.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            V,
            StatusCode::FORBIDDEN,
            "Policy doesn't allow volume:create_volume_metadata to be performed.",
        ));
    }
    model
        .set_volume_metadata(&id, &given, now)
        .map_err(|e| match e {
            CloudError::NotFound(_) => volume_not_found(&id),
            e => ApiError::from_cloud(V, e),
        })?;
    let d = model
        .volume_detail(&id, now)
        .ok_or_else(|| volume_not_found(&id))?;
    Ok(Json(json!({ "metadata": d.volume.metadata })))
}

fn filtered(model: &crate::model::Model, q: &[(String, String)]) -> Vec<VolumeDetail> {
    let mut list: Vec<VolumeDetail> = model
        .volume_details(Instant::now())
        .into_iter()
        .filter(|d| {
            q.iter().all(|(k, v)| match k.as_str() {
                "name" => d.volume.name == *v,
                "status" => status_name(&d.volume.status) == v,
                _ => true,
            })
        })
        .collect();
    // Cinder lists newest first.
    list.reverse();
    list
}

async fn list_volumes(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(p): Params,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    admit(&state, &p, "find_volumes_by_name").await?;
    let q = q.map(|Query(v)| v).unwrap_or_default();
    let model = state.sim.inner.lock_at(Instant::now());
    let list: Vec<Value> = filtered(&model, &q)
        .iter()
        .map(|d| json!({"id": d.volume.id, "name": d.volume.name, "links": links(&state, view(mv, &p), &d.volume.id)}))
        .collect();
    paged(&state, list, &q, view(mv, &p), "volumes")
}

async fn list_volumes_detail(
    State(state): State<Arc<FaceState>>,
    Extension(mv): Extension<Mv>,
    Path(p): Params,
    q: Q,
) -> Result<Json<Value>, ApiError> {
    admit(&state, &p, "find_volumes_by_name").await?;
    let q = q.map(|Query(v)| v).unwrap_or_default();
    let model = state.sim.inner.lock_at(Instant::now());
    let list: Vec<Value> = filtered(&model, &q)
        .iter()
        .map(|d| volume_json(&state, &model, d, view(mv, &p)))
        .collect();
    paged(&state, list, &q, view(mv, &p), "volumes/detail")
}

/// A page of a volume listing, linked to the next as Cinder links it
/// (`volumes_links`, past `osapi_max_limit`: here `page_limit`). Cinder
/// answers an unknown marker 404, as for a missing volume.
fn paged(
    state: &FaceState,
    items: Vec<Value>,
    q: &[(String, String)],
    v: View<'_>,
    path: &str,
) -> Result<Json<Value>, ApiError> {
    let project = v.project.map(|p| format!("/{p}")).unwrap_or_default();
    let url = format!("{}/v3{project}/{path}", state.url(V));
    let (items, next) = super::page(items, q, &state.settings, &url).map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::bad_request(V, m),
        super::PageError::UnknownMarker(id) => {
            ApiError::not_found(V, format!("Marker {id} could not be found."))
        }
    })?;
    Ok(Json(match next {
        Some(links) => json!({"volumes": items, "volumes_links": links}),
        None => json!({ "volumes": items }),
    }))
}

/// Cinder's refusal to delete a volume that is attached or busy.
const DELETE_REFUSED: &str = "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.";

/// `DELETE /volumes/{id}`: 202; the volume is `deleting`, then 404.
async fn delete_volume(
    State(state): State<Arc<FaceState>>,
    Path(p): Params,
) -> Result<StatusCode, ApiError> {
    admit(&state, &p, "delete_volume").await?;
    let id = p.get("volume_id").cloned().unwrap_or_default();
    let now = Instant::now();
    let mut model = state.sim.inner.lock_at(now);
    if model.volume_detail(&id, now).is_none() {
        return Err(volume_not_found(&id));
    }
    model.delete_volume(&id, now).map_err(|e| match e {
        CloudError::Conflict(_) => ApiError::bad_request(V, DELETE_REFUSED),
        e => ApiError::from_cloud(V, e),
    })?;
    Ok(StatusCode::ACCEPTED)
}

/// Cinder's zones: the cloud's availability zones (cloudsim names them
/// like Nova's), a closed one not available.
async fn availability_zones(
    State(state): State<Arc<FaceState>>,
    Path(p): Params,
) -> Result<Json<Value>, ApiError> {
    admit(&state, &p, "volume_zones").await?;
    let cfg = state.sim.config();
    let zones: Vec<Value> = cfg
        .availability_zones
        .iter()
        .map(|az| {
            let available = !cfg.closed_volume_zones.contains(&az.name);
            json!({"zoneName": az.name, "zoneState": {"available": available}})
        })
        .collect();
    Ok(Json(json!({ "availabilityZoneInfo": zones })))
}

async fn limits(
    State(state): State<Arc<FaceState>>,
    Path(p): Params,
) -> Result<Json<Value>, ApiError> {
    admit(&state, &p, "volume_limits").await?;
    let model = state.sim.inner.lock_at(Instant::now());
    let (volumes, gigabytes) = model.volume_usage();
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "totalSnapshotsUsed": 0,
        "maxTotalBackups": 10,
        "maxTotalVolumeGigabytes": model.cfg.quotas.max_gigabytes,
        "maxTotalSnapshots": 10,
        "maxTotalBackupGigabytes": 1000,
        "totalBackupGigabytesUsed": 0,
        "maxTotalVolumes": model.cfg.quotas.max_volumes,
        "totalVolumesUsed": volumes,
        "totalBackupsUsed": 0,
        "totalGigabytesUsed": gigabytes,
    }}})))
}
