//! Glance v2 under `/image`, read-only: the model's images (by name in the
//! model) with stable UUIDs, listed with `?name=` or shown by id, so a driver
//! can resolve an image name to the UUID Nova requires; after them, images
//! only Glance has (`HttpFaults::upload_image`), in any status.

use super::{iso_seconds, require_token, ApiError, FaceState, Service};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

const G: Service = Service::Image;

pub(super) fn routes(state: Arc<FaceState>) -> Router {
    let api = Router::new()
        .route("/images", get(list_images))
        .route("/images/:id", get(show_image))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), G),
            require_token,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/", get(root))
        .with_state(state)
        .nest("/v2", api)
}

/// Glance's root answers 300 Multiple Choices.
async fn root(State(state): State<Arc<FaceState>>) -> Response {
    let v = |id: &str, status: &str| {
        json!({"id": id, "status": status,
               "links": [{"rel": "self", "href": format!("{}/v2/", state.url(G))}]})
    };
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [v("v2.17", "CURRENT"), v("v2.16", "SUPPORTED")]})),
    )
        .into_response()
}

fn image_json(state: &FaceState, id: &str, name: &str, status: &str) -> Value {
    let created = iso_seconds(state.wall(state.epoch.0));
    let mut image = json!({
        "id": id,
        "name": name,
        "status": status,
        "visibility": "public",
        "protected": false,
        "os_hidden": false,
        "container_format": "bare",
        "disk_format": "qcow2",
        "size": 1_073_741_824u64,
        "virtual_size": null,
        "min_disk": 0,
        "min_ram": 0,
        "checksum": null,
        "os_hash_algo": null,
        "os_hash_value": null,
        "owner": state.project_id,
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "self": format!("/v2/images/{id}"),
        "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    for (key, value) in &state.settings.image_properties {
        image[key] = json!(value);
    }
    image
}

/// Every image Glance shows: (id, name, status).
fn images(state: &FaceState) -> Vec<(String, String, String)> {
    let model = state
        .sim
        .config()
        .images
        .into_iter()
        .map(|name| (state.image_id(&name), name, "active".to_owned()));
    let uploaded = state
        .uploaded_images()
        .into_iter()
        .map(|i| (i.id, i.name, i.status));
    model.chain(uploaded).collect()
}

async fn list_images(
    State(state): State<Arc<FaceState>>,
    q: Option<Query<Vec<(String, String)>>>,
) -> Json<Value> {
    let q = q.map(|Query(v)| v).unwrap_or_default();
    let list: Vec<Value> = images(&state)
        .iter()
        .filter(|(id, name, _)| {
            q.iter().all(|(k, v)| match k.as_str() {
                "name" => name == v,
                "id" => id == v,
                _ => true,
            })
        })
        .map(|(id, name, status)| image_json(&state, id, name, status))
        .collect();
    Json(json!({"images": list, "schema": "/v2/schemas/images", "first": "/v2/images"}))
}

async fn show_image(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    images(&state)
        .iter()
        .find(|(image, _, _)| *image == id)
        .map(|(id, name, status)| Json(image_json(&state, id, name, status)))
        .ok_or_else(|| ApiError::not_found(G, format!("No image found with ID {id}")))
}
