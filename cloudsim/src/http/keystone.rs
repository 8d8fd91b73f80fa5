//! Keystone v3 under `/identity`: version discovery, password
//! authentication scoped to the one project (`POST /v3/auth/tokens`, 201 with
//! `X-Subject-Token` and a catalog pointing at the other services), token
//! validation and revocation, and the token's catalog on its own (`GET
//! /v3/auth/catalog`). Owns the catalog's shape.

use super::{iso_micros, parse_body, stable_hex, ApiError, FaceState, Service, TokenRec};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const S: Service = Service::Identity;

pub(super) fn routes(state: Arc<FaceState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v3", get(v3))
        .route("/v3/", get(v3))
        .route("/v3/auth/tokens", get(validate).post(issue).delete(revoke))
        .route("/v3/auth/catalog", get(auth_catalog))
        .with_state(state)
}

fn v3_doc(state: &FaceState) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/v3/", state.url(S))}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

/// Keystone's root answers 300 Multiple Choices with `versions.values`.
async fn root(State(state): State<Arc<FaceState>>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [v3_doc(&state)]}})),
    )
        .into_response()
}

async fn v3(State(state): State<Arc<FaceState>>) -> Json<Value> {
    Json(json!({"version": v3_doc(&state)}))
}

/// Keystone names itself with `/v3` in its own 401s (keystonemiddleware,
/// in front of the other services, without).
fn unauthorized(state: &FaceState) -> ApiError {
    ApiError::unauthorized(S, &format!("{}/v3", state.url(S)))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn lock_changed(state: &FaceState) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    // A few map operations: recover from poison.
    state
        .changed_passwords
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `POST /v3/auth/tokens`: password auth, optionally scoped to the project
/// (by name and domain, or by id). Anything wrong with the credentials is
/// Keystone's 401; a body that is not an auth request is its 400.
async fn issue(State(state): State<Arc<FaceState>>, body: Bytes) -> Result<Response, ApiError> {
    let req = parse_body(S, &body)?;
    let identity = req
        .get("auth")
        .and_then(|a| a.get("identity"))
        .ok_or_else(|| {
            ApiError::bad_request(S, "'identity' is a required property\n\nFailed validating 'required' in schema['properties']['auth']")
        })?;
    let methods: Vec<&str> = identity
        .get("methods")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !methods.contains(&"password") {
        // Token and application-credential auth are not simulated.
        return Err(unauthorized(&state));
    }
    let user = identity
        .get("password")
        .and_then(|p| p.get("user"))
        .ok_or_else(|| ApiError::bad_request(S, "'user' is a required property"))?;
    let password = user
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(S, "'password' is a required property"))?;
    let s = &state.settings;
    let known = s.users.iter().find(|u| {
        let by_name = user.get("name").and_then(Value::as_str) == Some(u.name.as_str())
            && (str_at(user, &["domain", "name"]) == Some(s.domain_name.as_str())
                || str_at(user, &["domain", "id"]) == Some(state.domain_id.as_str()));
        let by_id = user.get("id").and_then(Value::as_str) == Some(state.user_id(&u.name).as_str());
        by_name || by_id
    });
    state
        .password_logins
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let current_password = |name: &str, configured: &str| {
        lock_changed(&state)
            .get(name)
            .cloned()
            .unwrap_or_else(|| configured.to_owned())
    };
    let Some(known) = known.filter(|u| current_password(&u.name, &u.password) == password) else {
        return Err(unauthorized(&state));
    };
    let scope = req.get("auth").and_then(|a| a.get("scope"));
    let scoped = match scope.and_then(|s| s.get("project")) {
        Some(project) => {
            let by_name = project.get("name").and_then(Value::as_str)
                == Some(s.project_name.as_str())
                && (str_at(project, &["domain", "name"]) == Some(s.domain_name.as_str())
                    || str_at(project, &["domain", "id"]) == Some(state.domain_id.as_str()));
            let by_id =
                project.get("id").and_then(Value::as_str) == Some(state.project_id.as_str());
            if !(by_name || by_id) {
                return Err(unauthorized(&state));
            }
            true
        }
        // Domain and system scopes are not simulated.
        None if scope.is_some() => return Err(unauthorized(&state)),
        // No user has a default project (Keystone's fallback for a login
        // without a scope): the token is unscoped, with no catalog.
        None => false,
    };
    let (id, rec) = state.issue_token(&known.name, scoped);
    let mut resp = (StatusCode::CREATED, Json(token_body(&state, &rec))).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

fn token_body(state: &FaceState, rec: &TokenRec) -> Value {
    let s = &state.settings;
    let domain = json!({"id": state.domain_id, "name": s.domain_name});
    let mut token = json!({
        "methods": ["password"],
        "user": {
            "domain": domain,
            "id": state.user_id(&rec.user),
            "name": rec.user,
            "password_expires_at": null,
        },
        "audit_ids": [rec.audit_id],
        "expires_at": iso_micros(state.wall(rec.expires_at), true),
        "issued_at": iso_micros(state.wall(rec.issued_at), true),
    });
    if rec.scoped {
        token["project"] =
            json!({"domain": domain, "id": state.project_id, "name": s.project_name});
        token["is_domain"] = json!(false);
        token["roles"] = json!([
            {"id": stable_hex("role", "member"), "name": "member"},
            {"id": stable_hex("role", "reader"), "name": "reader"},
        ]);
        token["catalog"] = catalog(state);
    }
    json!({"token": token})
}

/// The catalog. Cinder is registered as each of
/// `HttpSettings::cinder_catalog_types`: by default twice, as `volumev3`
/// (what clients of the last decade look up) and `block-storage` (what
/// osauth looks up), with the project id in the URL like a real deployment.
/// Each service has an endpoint of each of `HttpSettings::interfaces` in
/// `HttpSettings::region` and then in each of `other_regions` (for a type
/// of `region_order`, in the regions it lists), those of other regions at
/// `other_regions_host` when one is set; those of `regionless_endpoints`
/// have none of any region.
fn catalog(state: &FaceState) -> Value {
    let s = &state.settings;
    let volume = format!("{}/v3/{}", state.url(Service::Volume), state.project_id);
    let cinder = s
        .cinder_catalog_types
        .iter()
        .map(|kind| (*kind, "cinder", volume.clone()));
    let entries: Vec<(&str, &str, String)> = [
        (
            "identity",
            "keystone",
            format!("{}/v3/", state.url(Service::Identity)),
        ),
        (
            "compute",
            "nova",
            format!("{}/v2.1", state.url(Service::Compute)),
        ),
        ("network", "neutron", state.url(Service::Network)),
        ("image", "glance", state.url(Service::Image)),
    ]
    .into_iter()
    .chain(cinder)
    .collect();
    let served: Vec<&str> = entries.iter().map(|(kind, _, _)| *kind).collect();
    let others: Vec<(&str, &str, String)> = s
        .regionless_endpoints
        .iter()
        .filter(|kind| !served.contains(kind))
        .map(|kind| (*kind, *kind, format!("{}/{kind}", state.base_url)))
        .collect();
    let entries: Vec<(&str, &str, String)> = entries.into_iter().chain(others).collect();
    let added = state
        .added_regions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let regions: Vec<&String> = std::iter::once(&s.region)
        .chain(&s.other_regions)
        .chain(&added)
        .collect();
    // The other regions' URLs: the face's, on `other_regions_host`.
    let elsewhere = |url: &str| match (&s.other_regions_host, state.base_url.rsplit_once(':')) {
        (Some(host), Some((_, port))) => {
            url.replacen(&state.base_url, &format!("http://{host}:{port}"), 1)
        }
        _ => url.to_owned(),
    };
    Value::Array(
        entries
            .iter()
            .map(|(kind, name, url)| {
                let regions: Vec<&String> = match s.region_order.get(kind) {
                    Some(order) => order.iter().collect(),
                    None => regions.clone(),
                };
                let endpoints: Vec<Value> = regions
                    .iter()
                    .flat_map(|region| {
                        s.interfaces
                            .iter()
                            .map(move |interface| (region, interface))
                    })
                    .map(|(region, interface)| {
                        let id = stable_hex("endpoint", &format!("{kind} {region} {interface}"));
                        let url = if **region == s.region {
                            url.clone()
                        } else {
                            elsewhere(url)
                        };
                        let region = (!s.regionless_endpoints.contains(kind)).then_some(region);
                        json!({
                            "id": id,
                            "interface": interface,
                            "region": region,
                            "region_id": region,
                            "url": url,
                        })
                    })
                    .collect();
                json!({
                    "endpoints": endpoints,
                    "id": stable_hex("service", kind),
                    "type": kind,
                    "name": name,
                })
            })
            .collect(),
    )
}

/// `GET /v3/auth/catalog`: the catalog of the caller's token (none for
/// an unscoped one), as Keystone answers it.
async fn auth_catalog(
    State(state): State<Arc<FaceState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let rec = header(&headers, "x-auth-token")
        .and_then(|t| state.valid_token(t))
        .ok_or_else(|| unauthorized(&state))?;
    let catalog = if rec.scoped {
        catalog(&state)
    } else {
        json!([])
    };
    Ok(Json(json!({
        "catalog": catalog,
        "links": {
            "self": format!("{}/v3/auth/catalog", state.url(S)),
            "previous": null,
            "next": null,
        },
    })))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The caller's own token must be valid; then the subject token is looked up.
fn subject(state: &FaceState, headers: &HeaderMap) -> Result<String, ApiError> {
    if header(headers, "x-auth-token")
        .and_then(|t| state.valid_token(t))
        .is_none()
    {
        return Err(unauthorized(state));
    }
    header(headers, "x-subject-token")
        .map(str::to_string)
        .ok_or_else(|| ApiError::not_found(S, "Could not find token: ."))
}

/// `GET /v3/auth/tokens`: validates `X-Subject-Token`.
async fn validate(
    State(state): State<Arc<FaceState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let subject = subject(&state, &headers)?;
    let rec = state
        .valid_token(&subject)
        .ok_or_else(|| ApiError::not_found(S, format!("Could not find token: {subject}.")))?;
    let enforces_access_rules = header(&headers, "openstack-identity-access-rules")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .is_some_and(|version| version >= 1.0);
    if state
        .tokens_have_access_rules
        .load(std::sync::atomic::Ordering::SeqCst)
        && !enforces_access_rules
    {
        return Err(ApiError::not_found(S, "Failed to validate token"));
    }
    let mut resp = Json(token_body(&state, &rec)).into_response();
    if let Ok(v) = HeaderValue::from_str(&subject) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

/// `DELETE /v3/auth/tokens`: revokes `X-Subject-Token`.
async fn revoke(
    State(state): State<Arc<FaceState>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let subject = subject(&state, &headers)?;
    if state.revoke_token(&subject) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            S,
            format!("Could not find token: {subject}."),
        ))
    }
}
