//! Glance v2 under `/image`, read-only: the model's images (by name in the
//! model) with stable UUIDs, listed with `?name=` or shown by id, so a driver
//! can resolve an image name to the UUID Nova requires; after them, images
//! only Glance has (`HttpFaults::upload_image`), in any status. The list
//! pages as Glance's does: newest first, `limit_param_default` (25) images
//! at a time unless `limit` asks for others (at most `api_limit_max`,
//! 1000), after the `marker`'s image, with a `next` while a page is full.

use super::{iso_seconds, require_token, ApiError, FaceState, Service};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

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

/// Glance's `limit_param_default`: a list without `limit` gives this many.
const LIMIT_DEFAULT: usize = 25;
/// Glance's `api_limit_max`: a larger `limit` gives this many.
const LIMIT_MAX: usize = 1000;

/// An image as Glance shows it.
struct Image {
    id: String,
    name: String,
    status: String,
    created: Instant,
}

fn image_json(state: &FaceState, image: &Image) -> Value {
    let Image {
        id,
        name,
        status,
        created,
    } = image;
    let created = iso_seconds(state.wall(*created));
    let mut image = json!({
        "id": id,
        "name": name,
        "status": status,
        "visibility": state.image_visibility(name),
        "protected": false,
        "os_hidden": state.image_hidden(name),
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

/// Every image Glance shows, oldest first: the model's (there from the
/// start), then each upload, each later than the one before.
fn images(state: &FaceState) -> Vec<Image> {
    let model = state.sim.config().images.into_iter().map(|name| Image {
        id: state.image_id(&name),
        name,
        status: "active".to_owned(),
        created: state.epoch.0,
    });
    let uploaded = state.uploaded_images().into_iter().map(|i| Image {
        id: i.id,
        name: i.name,
        status: i.status,
        created: i.created,
    });
    model.chain(uploaded).collect()
}

async fn list_images(
    State(state): State<Arc<FaceState>>,
    q: Option<Query<Vec<(String, String)>>>,
) -> Result<Json<Value>, ApiError> {
    let q = q.map(|Query(v)| v).unwrap_or_default();
    // Without a visibility asked for, Glance lists every image the project
    // may use but community ones (Ocata's community images spec).
    let visibility = q
        .iter()
        .find(|(k, _)| k == "visibility")
        .map(|(_, v)| v.as_str());
    let visible = |image: &Image| match (visibility, state.image_visibility(&image.name)) {
        (Some("all"), _) => true,
        (Some(asked), has) => asked == has,
        (None, has) => has != "community",
    };
    // Hidden images are listed only when asked for (`os_hidden=true`), and
    // then alone.
    let hidden_asked = q.iter().any(|(k, v)| k == "os_hidden" && v == "true");
    let listed = |image: &Image| visible(image) && state.image_hidden(&image.name) == hidden_asked;
    // Glance sorts by created_at, newest first, unless asked otherwise.
    let list: Vec<Value> = images(&state)
        .iter()
        .rev()
        .filter(|image| listed(image))
        .filter(|image| {
            q.iter().all(|(k, v)| match k.as_str() {
                "name" => image.name == *v,
                "id" => image.id == *v,
                _ => true,
            })
        })
        .map(|image| image_json(&state, image))
        .collect();
    let ignore_marker = state.settings.ignore_marker;
    let (list, next_marker) = super::cut_page(
        list,
        &q,
        ignore_marker,
        Some(LIMIT_DEFAULT),
        Some(LIMIT_MAX),
    )
    .map_err(|e| match e {
        super::PageError::BadLimit(m) => ApiError::bad_request(G, m),
        // Glance looks the marker up as an image, and answers its absence
        // with a 400 in the image's own words.
        super::PageError::UnknownMarker(id) => {
            ApiError::bad_request(G, format!("No image found with ID {id}"))
        }
    })?;
    // `first` is the request without its marker, `next` the request with
    // the page's last image as the marker, as Glance's serializer builds them.
    let link = |marker: Option<&str>| {
        let mut query: Vec<(&str, &str)> = q
            .iter()
            .filter(|(k, _)| k != "marker")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        query.extend(marker.map(|m| ("marker", m)));
        if query.is_empty() {
            return "/v2/images".to_owned();
        }
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        format!("/v2/images?{encoded}")
    };
    let mut body = json!({"images": list, "schema": "/v2/schemas/images", "first": link(None)});
    if let Some(marker) = next_marker {
        body["next"] = json!(link(Some(&marker)));
    }
    Ok(Json(body))
}

async fn show_image(
    State(state): State<Arc<FaceState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    images(&state)
        .iter()
        .find(|image| image.id == id)
        .map(|image| Json(image_json(&state, image)))
        .ok_or_else(|| ApiError::not_found(G, format!("No image found with ID {id}")))
}
