//! Error responses shaped like each real service's, and the one mapping from
//! the model's [`CloudError`] to them.
//!
//! Bodies (copied from a real Nova 34 / Cinder 29 / Neutron 29 / Keystone 30,
//! see `shared/testbed/smoke-output-example.txt`):
//! - Nova and Cinder: `{"<fault>": {"code": N, "message": "..."}}`, where the
//!   fault name follows the status (`badRequest`, `itemNotFound`, ...), plus
//!   `"retryAfter"` on 413/429;
//! - Neutron: `{"NeutronError": {"type": "PortNotFound", "message": "...", "detail": ""}}`;
//! - Keystone and keystonemiddleware (every service's 401):
//!   `{"error": {"code": 401, "message": "...", "title": "Unauthorized"}}`;
//! - Glance: webob's HTML pages (as do Nova and Cinder for unrouted URLs).

use super::Service;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pool_manager::cloud::CloudError;
use serde_json::json;
use std::time::Duration;

/// An error answer of one service. Built by handlers, rendered by
/// [`IntoResponse`] in that service's shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service:?} {status}: {message}")]
pub struct ApiError {
    pub service: Service,
    pub status: StatusCode,
    pub message: String,
    /// Neutron's error `type` (e.g. `PortNotFound`); other services ignore it.
    pub neutron_type: &'static str,
    /// Seconds for the `Retry-After` header and the `retryAfter` field.
    pub retry_after: Option<u64>,
    /// Keystone's `WWW-Authenticate` realm for 401s.
    pub www_authenticate: Option<String>,
}

impl ApiError {
    pub fn new(service: Service, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            service,
            status,
            message: message.into(),
            neutron_type: neutron_type_for(status),
            retry_after: None,
            www_authenticate: None,
        }
    }

    pub fn bad_request(service: Service, message: impl Into<String>) -> Self {
        Self::new(service, StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(service: Service, message: impl Into<String>) -> Self {
        Self::new(service, StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(service: Service, message: impl Into<String>) -> Self {
        Self::new(service, StatusCode::CONFLICT, message)
    }

    /// Neutron's error type, e.g. `NetworkNotFound`.
    pub fn typed(mut self, neutron_type: &'static str) -> Self {
        self.neutron_type = neutron_type;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// keystonemiddleware's answer to a missing, unknown, expired or revoked
    /// token (Keystone itself answers a wrong password the same way).
    pub fn unauthorized(service: Service, auth_base: &str) -> Self {
        let mut e = Self::new(
            service,
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
        e.www_authenticate = Some(format!("Keystone uri=\"{auth_base}\""));
        e
    }

    /// A body the service could not parse as JSON, in each service's words
    /// (none of them says more than that).
    pub fn malformed_body(service: Service) -> Self {
        let message = match service {
            Service::Network => "Body contains invalid data",
            Service::Identity => "Expecting to find valid JSON in request body. The server could not comply with the request since it is either malformed or otherwise incorrect. The client is assumed to be in error.",
            _ => "Malformed request body",
        };
        Self::bad_request(service, message)
    }

    /// Maps a model error to what `service` answers for it. Call sites with a
    /// case-specific real answer (e.g. Nova's 400 for an attached volume)
    /// build that one themselves before falling back here.
    pub fn from_cloud(service: Service, err: CloudError) -> Self {
        match err {
            // Rate limiters answer 429 with a Retry-After in whole seconds,
            // rounded up so a client that honours it is never early.
            CloudError::Throttled {
                retry_after,
                message,
                unavailable: false,
            } => {
                let mut e = Self::new(service, StatusCode::TOO_MANY_REQUESTS, message)
                    .typed("TooManyRequests");
                e.retry_after = Some(retry_after.map(ceil_secs).unwrap_or(0));
                e
            }
            // Maintenance: a 503 that names when to come back (at least a
            // second: a zero one names no wait, and reads as a 5xx).
            CloudError::Throttled {
                retry_after,
                message,
                unavailable: true,
            } => Self::new(service, StatusCode::SERVICE_UNAVAILABLE, message)
                .retry_after(retry_after.map(ceil_secs).unwrap_or(1).max(1)),
            // Each service has its own quota status: Nova 403 forbidden,
            // Cinder 413 overLimit (with retryAfter "0"), Neutron 409 OverQuota.
            CloudError::QuotaExceeded(message) => match service {
                Service::Compute => Self::new(service, StatusCode::FORBIDDEN, message),
                Service::Volume => {
                    Self::new(service, StatusCode::PAYLOAD_TOO_LARGE, message).retry_after(0)
                }
                Service::Network => {
                    Self::new(service, StatusCode::CONFLICT, message).typed("OverQuota")
                }
                _ => Self::new(service, StatusCode::FORBIDDEN, message),
            },
            CloudError::NotFound(message) => Self::not_found(service, message),
            CloudError::Conflict(message) => Self::conflict(service, message),
            CloudError::Transient(message) => {
                Self::new(service, StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            CloudError::Fatal(message) => Self::bad_request(service, message),
            // Nova's answer to a forceDelete its policy refuses, and any
            // service's to a call its policy refuses.
            CloudError::LeftToReclaim(message) | CloudError::PolicyRefused(message) => {
                Self::new(service, StatusCode::FORBIDDEN, message)
            }
        }
    }
}

/// webob's HTML error page: what Glance sends for its errors, and Nova and
/// Cinder for URLs they do not route.
pub fn webob_page(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let html = format!(
        "<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {message}<br /><br />\n\n\n\n </body>\n</html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        html,
    )
        .into_response()
}

/// Whole seconds, rounded up (`Duration::MAX` saturates at u64::MAX).
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s.saturating_add(1)
    } else {
        s
    }
}

/// Nova's and Cinder's fault name per status (nova/api/openstack/wsgi.py `Fault`).
pub fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn neutron_type_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "HTTPBadRequest",
        401 => "HTTPUnauthorized",
        404 => "HTTPNotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "HTTPInternalServerError",
    }
}

fn keystone_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        let mut resp = match self.service {
            Service::Compute | Service::Volume => {
                let mut inner = json!({"code": code, "message": self.message});
                if let Some(s) = self.retry_after {
                    inner["retryAfter"] = json!(s.to_string());
                }
                let mut body = serde_json::Map::new();
                // keystonemiddleware, not Nova, answers 401s.
                if code == 401 {
                    body.insert(
                        "error".into(),
                        json!({"code": 401, "message": self.message, "title": "Unauthorized"}),
                    );
                } else {
                    body.insert(fault_name(self.status).into(), inner);
                }
                (self.status, axum::Json(serde_json::Value::Object(body))).into_response()
            }
            Service::Network => {
                let body = if code == 401 {
                    json!({"error": {"code": 401, "message": self.message, "title": "Unauthorized"}})
                } else {
                    json!({"NeutronError": {
                        "type": self.neutron_type,
                        "message": self.message,
                        "detail": "",
                    }})
                };
                (self.status, axum::Json(body)).into_response()
            }
            Service::Identity => {
                let body = json!({"error": {
                    "code": code,
                    "message": self.message,
                    "title": keystone_title(self.status),
                }});
                (self.status, axum::Json(body)).into_response()
            }
            Service::Image => {
                if code == 401 {
                    let body = json!({"error": {"code": 401, "message": self.message, "title": "Unauthorized"}});
                    (self.status, axum::Json(body)).into_response()
                } else {
                    webob_page(self.status, &self.message)
                }
            }
        };
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(realm) = self.www_authenticate {
            if let Ok(v) = HeaderValue::from_str(&realm) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_secs(u64::MAX)), u64::MAX);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }
}
