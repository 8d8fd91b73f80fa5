//! Turning an OpenStack answer into a [`CloudError`] class.
//!
//! osauth's own error hides the HTTP status, the fault name, Neutron's error
//! type and `Retry-After`, so every call is sent unchecked and classified
//! here from status, headers and body. The rules come from bodies measured on
//! a real Nova/Cinder/Neutron (`shared/openstack-notes.md`, the testbed's
//! smoke output); the unit tests below replay those bodies.

use super::session::{Call, Reply};
use crate::cloud::{mentions_quota, CloudError};
use crate::text::{cut, MAX_CLOUD_MESSAGE_CHARS};
use std::time::Duration;

/// Which API answered: the same status means different things per service
/// (Cinder's 413 is a quota or a rate limit, Neutron's 409 may be a quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Compute,
    BlockStorage,
    Network,
    Image,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Compute => "compute",
            Service::BlockStorage => "block-storage",
            Service::Network => "network",
            Service::Image => "image",
        }
    }

    /// The OpenStack project that serves it, for messages.
    pub fn project(self) -> &'static str {
        match self {
            Service::Compute => "Nova",
            Service::BlockStorage => "Cinder",
            Service::Network => "Neutron",
            Service::Image => "Glance",
        }
    }
}

/// The parts of an error body that matter for classification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Nova/Cinder: the top-level key (`badRequest`, `overLimit`,
    /// `conflictingRequest`); Neutron: `type` (`OverQuota`, `PortNotFound`).
    pub name: Option<String>,
    pub message: String,
    /// Nova/Cinder `retryAfter` in the body (a string of seconds).
    pub retry_after: Option<Duration>,
    /// The body is an OpenStack fault (one key wrapping an object with a
    /// `message`), as every Nova, Cinder, Neutron and Keystone error is; a
    /// proxy's page or an API gateway's own JSON is not.
    pub from_service: bool,
}

/// Reads a fault body of any of the shapes OpenStack services send:
/// `{"<fault>": {"code", "message", "retryAfter"?}}` (Nova, Cinder),
/// `{"NeutronError": {"type", "message", "detail"}}` (Neutron),
/// `{"error": {"code", "title", "message"}}` (Keystone middleware's 401).
/// Never fails: any other body (a proxy's page, a gateway's own JSON such
/// as Kong's `{"message": ..}`) is no fault, its text the message.
pub fn parse_fault(body: &str) -> Fault {
    let not_a_fault = || Fault {
        name: None,
        message: cut(body.trim(), MAX_CLOUD_MESSAGE_CHARS),
        retry_after: None,
        from_service: false,
    };
    let Ok(serde_json::Value::Object(root)) = serde_json::from_str::<serde_json::Value>(body)
    else {
        return not_a_fault();
    };
    // Gateways in front of the APIs answer in JSON too (Kong `{"message"}`,
    // APISIX `{"error_msg"}`, `{}`): only the services' own wrapping tells
    // a 404 about the object from one about the route.
    let mut entries = root.iter();
    let (Some((key, inner)), None) = (entries.next(), entries.next()) else {
        return not_a_fault();
    };
    let Some(message) = inner.get("message").and_then(|m| m.as_str()) else {
        return not_a_fault();
    };
    // A service's own message is bounded by nothing but the answer's size
    // (64 MiB): it goes into the error, the logs, the events and a failed
    // boot's last_error in the store. What classification looks for opens
    // the services' wordings ("Quota exceeded for", "Invalid volume: ..").
    let message = cut(message, MAX_CLOUD_MESSAGE_CHARS);
    let name = if key == "NeutronError" {
        inner
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    } else {
        Some(key.clone())
    };
    let retry_after = inner.get("retryAfter").and_then(|r| match r {
        serde_json::Value::String(s) => seconds(s),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(s) => Some(Duration::from_secs(s)),
            // Fractions round up, so a client honouring them is never
            // early; `as` saturates a number past u64.
            None => n
                .as_f64()
                .filter(|f| *f >= 0.0)
                .map(|f| Duration::from_secs(f.ceil() as u64)),
        },
        _ => None,
    });
    Fault {
        name,
        message,
        retry_after,
        from_service: true,
    }
}

/// `Retry-After` in seconds, as OpenStack services send it, or as an HTTP
/// date, as a proxy or rate limiter in front of them may (the time until
/// then; none for a date past). The value is the cloud's, unbounded: how
/// long to honour it is the caller's policy (`cloud::MAX_RETRY_AFTER`).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?;
    seconds(value).or_else(|| {
        let at = httpdate::parse_http_date(value.trim()).ok()?;
        Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    })
}

/// A Retry-After that names a wait: zero (Cinder's `"retryAfter": "0"`,
/// a token bucket at its boundary, a date gone by) names none, and is
/// dropped so that the caller's growing backoff applies, as to a throttle
/// without Retry-After, instead of a retry every moment until its deadline.
fn named_wait(after: Option<Duration>) -> Option<Duration> {
    after.filter(|after| !after.is_zero())
}

/// Whole seconds. More than u64 holds saturates: a cloud asking for an
/// absurdly long pause asks for a long one, not for none.
fn seconds(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX)))
}

/// webob's `HTTPNotFound` explanation, which no service the driver calls
/// gives for an object it lacks: those name it ("Instance X could not be
/// found.", "Volume X could not be found.", Neutron's `PortNotFound`,
/// "Instance X is not attached to volume Y"; the bare NotFound of Nova
/// and Cinder says "Resource could not be found.").
const NO_ROUTE_MESSAGE: &str = "The resource could not be found.";

/// Whether a 404's fault is the services' answer to a URL they route
/// nowhere rather than to a missing object: Neutron answers any path it
/// lacks `{"NeutronError": {"type": "HTTPNotFound", "message": "The
/// resource could not be found."}}` (and so hides an object its policy
/// keeps from the caller), Nova and Cinder `{"itemNotFound": {"code": 404,
/// "message": "The resource could not be found."}}` for a method the
/// microversion asked lacks (their other unrouted paths get webob's page,
/// no fault). A call with a wrong `*_endpoint_override`, or forwarded by a
/// gateway to the wrong service, gets these.
fn routes_nowhere(fault: &Fault) -> bool {
    fault.from_service && fault.message.trim() == NO_ROUTE_MESSAGE
}

/// Classifies a non-2xx answer. `what` names the call for the message
/// ("POST /servers"). A 401 reaching this point came after a re-auth:
/// Keystone took the credentials and issued a token, and the service
/// refused that token (it cannot validate it: its keystone_authtoken, the
/// credentials' access rules, Keystone replication). Fatal, the request's
/// fault: as transient, an Allocate would discard one warm instance after
/// another for it, and every retry would log in again. A login Keystone
/// refused is reported before this, as such.
pub fn classify(
    service: Service,
    what: &str,
    status: u16,
    retry_after_header: Option<&str>,
    body: &str,
) -> CloudError {
    let fault = parse_fault(body);
    let name = fault.name.as_deref().unwrap_or_default();
    let message = if fault.message.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: {} (HTTP {status})", fault.message)
    };
    let lower = fault.message.to_ascii_lowercase();
    match status {
        401 => CloudError::Fatal(format!(
            "{what}: the service refused a token Keystone had just issued (HTTP 401): check the service's keystone_authtoken settings, the credentials' access rules, or Keystone's replication"
        )),
        // Nova reports quota as 403 `forbidden` "Quota exceeded for cores: ..."
        // (on unified limits, "Project .. is over a limit for [..]").
        403 if mentions_quota(&fault.message) => CloudError::QuotaExceeded(message),
        // Nova, Cinder and Neutron say "not found" in their own fault. A
        // 404 without one comes from something in front of them (a proxy's
        // page, a gateway's JSON for a route it lacks, a backend missing
        // mid-upgrade) and says nothing about the object: read as "gone", a
        // delete would forget a port or volume that still exists. Glance's
        // own 404s are HTML pages: only the request tells (`classify_reply`).
        404 if service != Service::Image && !fault.from_service => CloudError::Transient(
            format!("{message}, not from the service (no OpenStack error in the answer: a proxy or gateway?)"),
        ),
        // The service's own fault, but naming no object: see
        // `routes_nowhere`. Fatal, not Transient: asking again changes
        // nothing until the endpoint, catalog or gateway is mended, so a
        // call's retries would only repeat it until their deadline and
        // report it as an outage that passes by itself. Fatal still keeps
        // the object: a failed delete leaves the instance (or watch) that
        // names it, and each reconcile pass asks again; an attach so
        // answered ends the purchase's try as the request's fault, where a
        // NotFound or Transient would discard one warm instance after
        // another for it.
        404 if routes_nowhere(&fault) => CloudError::Fatal(format!(
            "{message}: an OpenStack API's answer to a URL it has no route for{}, which names no object and so says nothing of this one: check that the {} endpoint warmpool uses (the service catalog's, or {}_endpoint_override in clouds.yaml) and any gateway in front of it lead to {}",
            if fault.name.as_deref() == Some("HTTPNotFound") {
                " (or Neutron's for an object its policy hides from warmpool's user)"
            } else {
                ""
            },
            service.name(),
            service.name().replace('-', "_"),
            service.project(),
        )),
        404 => CloudError::NotFound(message),
        409 if service == Service::Network && name == "OverQuota" => {
            CloudError::QuotaExceeded(message)
        }
        409 if mentions_quota(&fault.message) => CloudError::QuotaExceeded(message),
        409 => CloudError::Conflict(message),
        // Cinder's quota answer is a 413 `overLimit` with retryAfter "0"; only
        // the message tells it from a rate limit. Older Nova did the same. A
        // 429 is a rate limit however a gateway words it ("Quota limit
        // exceeded").
        413 if mentions_quota(&fault.message) => CloudError::QuotaExceeded(message),
        413 | 429 => CloudError::Throttled {
            retry_after: named_wait(parse_retry_after(retry_after_header))
                .or(named_wait(fault.retry_after)),
            message,
            unavailable: false,
        },
        // Nova: "Invalid volume: volume X is already attached to instances: A";
        // Cinder: "Volume status must be available ..." (in use). Only the text
        // tells these state conflicts from a malformed request.
        400 if lower.contains("already attached")
            || lower.contains("status must be")
            || lower.contains("is still in use")
            || lower.contains("task_state") =>
        {
            CloudError::Conflict(message)
        }
        // Unavailable, and saying until when (maintenance, an overloaded
        // proxy): waited out as asked, as a 429 is.
        // A zero wait (or a date gone by) names none: the caller's growing
        // backoff applies instead.
        503 if named_wait(parse_retry_after(retry_after_header)).is_some() => {
            CloudError::Throttled {
                retry_after: named_wait(parse_retry_after(retry_after_header)),
                message,
                unavailable: true,
            }
        }
        // A proxy's request timeout (haproxy's `timeout http-request`):
        // the call may have gone through behind it, as after a 504, so it
        // is asked again (and a create is left uncertain), not refused.
        408 => CloudError::Transient(message),
        // Nova's notImplemented (a feature this cloud's driver lacks), an
        // HTTP version refused: asking again changes nothing.
        501 | 505 => CloudError::Fatal(message),
        s if s >= 500 => CloudError::Transient(message),
        _ => CloudError::Fatal(message),
    }
}

/// Classifies a non-2xx `reply` to `call`: [`classify`], and what only the
/// request tells. Glance's own 404s are pages, as a proxy's are, so the
/// body cannot tell them apart; but Glance answers 404 only for an image
/// it lacks (`GET /v2/images/{id}`), while its listing (`GET
/// /v2/images?name=`) is answered 200 with whatever matches, nothing
/// included. A 404 to the listing comes from something in front of Glance
/// and says nothing of the image: as "no such image" it would refuse the
/// pool and fail its boots for good.
pub fn classify_reply(call: &Call, reply: &Reply) -> CloudError {
    let what = call.describe();
    let error = classify(
        call.service,
        &what,
        reply.status,
        reply.retry_after.as_deref(),
        &reply.body,
    );
    let names_an_image = call.path.len() > 1;
    match error {
        CloudError::NotFound(message) if call.service == Service::Image && !names_an_image => {
            CloudError::Transient(format!(
                "{message}, not from Glance (which never answers its image listing 404): a proxy or gateway?"
            ))
        }
        error => error,
    }
}

/// Classifies a failure osauth reports itself: transport errors, timeouts,
/// version discovery and the token request. The status is not public, so
/// only the kind is used.
pub fn classify_osauth(what: &str, e: &osauth::Error) -> CloudError {
    use osauth::ErrorKind as K;
    let message = format!("{what}: {}", osauth_text(e));
    // Version discovery behind a rate limiter is throttled like any call,
    // but osauth folds 413/429 into InvalidInput: the status decides. So
    // does a proxy's 408 (its request timeout), transient as in
    // `classify`: nothing in the request is wrong. osauth's word for the
    // kind ("Input value(s) are invalid or missing") would blame the
    // request, so these say the status instead.
    match osauth_status(e) {
        Some(s @ (413 | 429)) => {
            return CloudError::Throttled {
                retry_after: None,
                message: osauth_answer(what, e, s),
                unavailable: false,
            }
        }
        Some(408) => return CloudError::Transient(osauth_answer(what, e, 408)),
        Some(s) if s >= 500 => return CloudError::Transient(osauth_answer(what, e, s)),
        _ => {}
    }
    match e.kind() {
        K::AuthenticationFailed => CloudError::Fatal(format!(
            "{what}: Keystone rejected warmpool's credentials (401): {}",
            osauth_text(e)
        )),
        // What osauth itself fails on is the token request, the catalog or
        // version discovery, never the resource a call names: a 404 there
        // must not read as "that server is gone" (a delete would count it
        // done), nor a 409 as the resource's conflict.
        K::AccessDenied | K::ResourceNotFound | K::Conflict => CloudError::Fatal(message),
        K::EndpointNotFound
        | K::InvalidConfig
        | K::IncompatibleApiVersion
        | K::InvalidInput
        | K::OperationFailed => CloudError::Fatal(message),
        // Protocol, decoding, 5xx, transport and anything newer: worth a retry.
        _ => CloudError::Transient(message),
    }
}

/// osauth's failure `e` for an answer of HTTP `status`, as [`classify`]
/// words an answer: the service's message (osauth keeps a fault's
/// `message`, or the whole page), cut, and the status.
fn osauth_answer(what: &str, e: &osauth::Error, status: u16) -> String {
    let text = e.to_string();
    let said = text.strip_prefix(&osauth_kind(e)).unwrap_or(&text).trim();
    format!(
        "{what}: {} (HTTP {status})",
        cut(said, MAX_CLOUD_MESSAGE_CHARS)
    )
}

/// osauth's text of `e`, its kind and what the cloud said, the latter cut
/// as a service's fault message is: osauth keeps the whole page of a
/// Keystone or version-discovery answer it refuses (a 401, 403, 404, 409).
fn osauth_text(e: &osauth::Error) -> String {
    let text = e.to_string();
    let kind = osauth_kind(e);
    match text.strip_prefix(&kind) {
        Some(said) => format!("{kind}{}", cut(said, MAX_CLOUD_MESSAGE_CHARS)),
        None => cut(&text, MAX_CLOUD_MESSAGE_CHARS),
    }
}

/// How osauth's text of `e` begins: its kind's description.
fn osauth_kind(e: &osauth::Error) -> String {
    format!("{}: ", e.kind().description())
}

/// `e` and its causes, "error sending request for url (..): client error
/// (Connect): invalid peer certificate: UnknownIssuer": reqwest's own
/// message names neither what the TLS library refused nor why.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(e) = cause {
        let next = e.to_string();
        // Some layers repeat their source's message in their own.
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = e.source();
    }
    text
}

/// The HTTP status an osauth error carries. osauth 0.5.0 (pinned with `=`)
/// stores it without a getter; its derived Debug shows it as
/// `status: Some(429)`, which is the only way to read it.
pub fn osauth_status(e: &osauth::Error) -> Option<u16> {
    let debug = format!("{e:?}");
    let rest = debug.split("status: Some(").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Service::*;

    /// A proxy or rate limiter in front of the APIs may send Retry-After as
    /// an HTTP date (RFC 9110 allows both forms): it is the time until
    /// then, none for a date past.
    #[test]
    fn retry_after_as_a_date_is_the_time_until_it() {
        let in_30s =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let wait = parse_retry_after(Some(&in_30s)).expect("a date is a Retry-After");
        assert!(
            (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(Some("next tuesday")), None);
    }

    /// A proxy in front of the APIs that times a request out answers 408:
    /// the call may have been carried out behind it, so it is asked again
    /// like a 504, not refused for good.
    #[test]
    fn a_proxys_request_timeout_is_transient() {
        let e = classify(
            Compute,
            "POST /servers",
            408,
            None,
            "<html><body><h1>408 Request Time-out</h1></body></html>",
        );
        assert!(e.is_retryable(), "{e:?}");
        assert!(e.to_string().contains("HTTP 408"), "{e}");
    }

    /// A gateway's rate limit may word itself "quota" ("Quota limit
    /// exceeded"), with a Retry-After: a 429 is a throttle whatever its
    /// text (quota refusals come as 403 or 413).
    #[test]
    fn a_429_is_a_throttle_whatever_its_text() {
        let e = classify(
            Compute,
            "GET /servers",
            429,
            Some("2"),
            "Quota limit exceeded",
        );
        assert!(
            matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
            "{e:?}"
        );
    }

    /// 501 (Nova's notImplemented: a feature this cloud's driver lacks) and
    /// 505 do not change by asking again.
    #[test]
    fn not_implemented_is_fatal() {
        let body = r#"{"notImplemented": {"code": 501, "message": "Network driver does not support this function."}}"#;
        for status in [501, 505] {
            let e = classify(Compute, "POST /servers/x/os-interface", status, None, body);
            assert!(matches!(e, CloudError::Fatal(_)), "{status}: {e:?}");
        }
    }

    /// A 503 with `Retry-After: 0` (or a date gone by) names no wait: it is
    /// a transient failure on the caller's growing backoff, not a throttle
    /// answered again ten times a second.
    #[test]
    fn a_503_with_a_zero_retry_after_is_transient() {
        for value in ["0", "Thu, 01 Jan 1970 00:00:00 GMT"] {
            let e = classify(Compute, "GET /servers", 503, Some(value), "");
            assert!(matches!(e, CloudError::Transient(_)), "{value}: {e:?}");
        }
    }

    /// A 503 that says when to come back (maintenance, an overloaded
    /// proxy) is waited out as asked, as a 429 is; without it, it is a
    /// transient failure retried on the caller's backoff.
    #[test]
    fn a_503_with_retry_after_is_waited_out() {
        match classify(Compute, "GET /servers", 503, Some("120"), "") {
            CloudError::Throttled {
                retry_after,
                unavailable,
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(120)));
                // Unlike a 429's, what sent it may have begun the request.
                assert!(unavailable);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(Compute, "GET /servers", 503, None, ""),
            CloudError::Transient(_)
        ));
    }

    // Bodies verbatim from the testbed's smoke output and openstack-notes.md.
    const ALREADY_ATTACHED: &str = r#"{"badRequest": {"code": 400, "message": "Invalid volume: volume 6d164150-4c0f-447a-896d-a825918714cd is already attached to instances: a4d9add2-ef0a-4928-b1b8-6525fdb81913"}}"#;
    const PORT_IN_USE: &str = r#"{"conflictingRequest": {"code": 409, "message": "Port b275d0c8-bebe-4da7-b94a-2ace4a8a7e97 is still in use."}}"#;
    const CORES_QUOTA: &str = r#"{"forbidden": {"code": 403, "message": "Quota exceeded for cores: Requested 64, but already used 2 of 20 cores"}}"#;
    const INSTANCES_QUOTA: &str = r#"{"forbidden": {"code": 403, "message": "Quota exceeded for cores, instances: Requested 20, 20, but already used 2, 2 of 20, 10 cores, instances"}}"#;
    const GIGABYTES_QUOTA: &str = r#"{"overLimit": {"code": 413, "message": "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 500G, quota is 100G and 1G has been consumed.", "retryAfter": "0"}}"#;
    const UNKNOWN_AZ: &str = r#"{"badRequest": {"code": 400, "message": "The requested availability zone is not available"}}"#;
    const SERVER_MISSING: &str = r#"{"itemNotFound": {"code": 404, "message": "Instance 00000000-0000-0000-0000-000000000000 could not be found."}}"#;
    const PORT_MISSING: &str = r#"{"NeutronError": {"type": "PortNotFound", "message": "Port 00000000-0000-0000-0000-000000000000 could not be found.", "detail": ""}}"#;
    const VOLUME_MISSING: &str = r#"{"itemNotFound": {"code": 404, "message": "Volume 00000000-0000-0000-0000-000000000000 could not be found."}}"#;
    const NOT_ATTACHED: &str = r#"{"itemNotFound": {"code": 404, "message": "Instance c5709905-63fc-4919-9c32-336f88e20d56 is not attached to volume 6d164150-4c0f-447a-896d-a825918714cd"}}"#;
    const DELETE_IN_USE: &str = r#"{"badRequest": {"code": 400, "message": "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer."}}"#;
    const NEUTRON_OVER_QUOTA: &str = r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#;
    const RATE_LIMITED: &str = r#"{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "7"}}"#;
    const TASK_STATE: &str = r#"{"conflictingRequest": {"code": 409, "message": "Cannot 'attach_volume' instance 7c0b8a14-6a0e-4f4e-9a57-0a0e3f4c2d11 while it is in task_state spawning"}}"#;
    // webob's HTTPNotFound explanation, in the services' own fault: Neutron's
    // answer to any path it routes nowhere (GET /v2.0/servers/{id}, DELETE
    // /v2.0/v2.0/ports/{id} on the testbed), and Nova's and Cinder's to a
    // method the microversion asked lacks (GET /v2.1/os-volumes/{id} at
    // 2.79, GET /v2.1/servers/{id}/tags at 2.1, GET /v3/attachments/{id}
    // at 3.0).
    const NEUTRON_NO_ROUTE: &str = r#"{"NeutronError": {"type": "HTTPNotFound", "message": "The resource could not be found.", "detail": ""}}"#;
    const NO_SUCH_METHOD: &str =
        r#"{"itemNotFound": {"code": 404, "message": "The resource could not be found."}}"#;
    const UNAUTHORIZED: &str = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;

    #[test]
    fn fault_bodies_of_every_shape_are_read() {
        let f = parse_fault(GIGABYTES_QUOTA);
        assert_eq!(f.name.as_deref(), Some("overLimit"));
        assert!(f.message.starts_with("VolumeSizeExceedsAvailableQuota"));
        assert_eq!(f.retry_after, Some(Duration::ZERO));
        let f = parse_fault(PORT_MISSING);
        assert_eq!(f.name.as_deref(), Some("PortNotFound"));
        assert!(f.message.contains("could not be found"));
        let f = parse_fault(UNAUTHORIZED);
        assert_eq!(f.name.as_deref(), Some("error"));
        assert!(f.message.contains("requires authentication"));
        let f = parse_fault("<html>502 Bad Gateway</html>");
        assert_eq!(f.name, None);
        assert_eq!(f.message, "<html>502 Bad Gateway</html>");
        assert_eq!(parse_fault("").message, "");
        assert_eq!(parse_fault("[1,2]").name, None);
        assert_eq!(parse_fault(r#"{"a": 1}"#).name, None);
        for body in [
            ALREADY_ATTACHED,
            PORT_IN_USE,
            CORES_QUOTA,
            INSTANCES_QUOTA,
            GIGABYTES_QUOTA,
            UNKNOWN_AZ,
            SERVER_MISSING,
            PORT_MISSING,
            NOT_ATTACHED,
            DELETE_IN_USE,
            NEUTRON_OVER_QUOTA,
            RATE_LIMITED,
            TASK_STATE,
            UNAUTHORIZED,
        ] {
            assert!(parse_fault(body).from_service, "{body}");
        }
    }

    #[test]
    fn nova_quota_is_quota_exceeded() {
        for body in [CORES_QUOTA, INSTANCES_QUOTA] {
            let e = classify(Compute, "POST /servers", 403, None, body);
            assert!(
                matches!(&e, CloudError::QuotaExceeded(m) if m.contains("cores")),
                "{e:?}"
            );
        }
        // A 403 that is not about quota is a policy refusal.
        let e = classify(
            Compute,
            "POST /servers",
            403,
            None,
            r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."}}"#,
        );
        assert!(matches!(e, CloudError::Fatal(_)), "{e:?}");
        // Quotas Nova names without the word: a boot whose port Neutron's
        // quota refuses (PortLimitExceeded), and its other LimitExceeded
        // messages.
        for message in [
            "Maximum number of ports exceeded",
            "Maximum number of key pairs exceeded",
        ] {
            let body = format!(r#"{{"forbidden": {{"code": 403, "message": "{message}"}}}}"#);
            let e = classify(Compute, "POST /servers", 403, None, &body);
            assert!(matches!(e, CloudError::QuotaExceeded(_)), "{e:?}");
        }
    }

    /// Nova with `[quota] driver = nova.quota.UnifiedLimitsDriver`
    /// (recommended since 2023.2) refuses a boot over a Keystone limit
    /// with oslo.limit's ProjectOverLimit text (nova/limit/placement.py
    /// raises TooManyInstances(str(e)), a 403), which never says "quota".
    #[test]
    fn nova_unified_limits_refusal_is_quota_exceeded() {
        for resource in ["servers", "class:VCPU", "class:MEMORY_MB", "class:DISK_GB"] {
            let body = format!(
                r#"{{"forbidden": {{"code": 403, "message": "Project d2b2a5f4c1e94f7e8a0b6c3d9e1f2a3b is over a limit for [Resource {resource} is over limit of 2 due to current usage 2 and delta 1]"}}}}"#
            );
            let e = classify(Compute, "POST /servers", 403, None, &body);
            assert!(
                matches!(&e, CloudError::QuotaExceeded(m) if m.contains(resource)),
                "{resource}: {e:?}"
            );
        }
    }

    #[test]
    fn cinder_413_is_quota_or_throttle_by_its_message() {
        // The per-volume size limit (VolumeSizeExceedsLimit) is a quota,
        // not a rate limit to wait out.
        let e = classify(
            BlockStorage,
            "POST /volumes",
            413,
            Some("0"),
            r#"{"overLimit": {"code": 413, "message": "Requested volume size 500G is larger than maximum allowed limit 100G.", "retryAfter": "0"}}"#,
        );
        assert!(matches!(e, CloudError::QuotaExceeded(_)), "{e:?}");
        let e = classify(
            BlockStorage,
            "POST /volumes",
            413,
            Some("0"),
            GIGABYTES_QUOTA,
        );
        assert!(
            matches!(&e, CloudError::QuotaExceeded(m) if m.contains("gigabytes")),
            "{e:?}"
        );
        let e = classify(BlockStorage, "POST /volumes", 413, None, RATE_LIMITED);
        assert_eq!(
            e,
            CloudError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                message: "POST /volumes: This request was rate-limited. (HTTP 413)".into(),
                unavailable: false,
            }
        );
    }

    #[test]
    fn throttles_prefer_the_retry_after_header() {
        let e = classify(Compute, "GET /servers/x", 429, Some("3"), RATE_LIMITED);
        assert!(
            matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let e = classify(Network, "POST /v2.0/ports", 429, None, "Too Many Requests");
        assert!(
            matches!(
                e,
                CloudError::Throttled {
                    retry_after: None,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// A "Retry-After: 0" (Cinder's overLimit sends it, so does a token
    /// bucket at its boundary) or a date gone by names no wait: the
    /// throttle carries none, and the caller's growing backoff applies.
    /// A wait the body names is still taken.
    #[test]
    fn a_zero_retry_after_names_no_wait() {
        const ZERO_IN_BODY: &str = r#"{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "0"}}"#;
        for (header, body) in [
            (Some("0"), "Too Many Requests"),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), "Too Many Requests"),
            (None, ZERO_IN_BODY),
            (Some("0"), ZERO_IN_BODY),
        ] {
            for status in [413, 429] {
                let e = classify(BlockStorage, "POST /volumes", status, header, body);
                assert!(
                    matches!(
                        e,
                        CloudError::Throttled {
                            retry_after: None,
                            ..
                        }
                    ),
                    "{status} {header:?} {body}: {e:?}"
                );
            }
        }
        let e = classify(Compute, "GET /servers/x", 429, Some("0"), RATE_LIMITED);
        assert!(
            matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
            "{e:?}"
        );
    }

    /// A service's fault message is cut as any other body is, on a
    /// character boundary and saying how much was cut: it goes into the
    /// error, the logs, the events, and a failed boot's `last_error` in
    /// the store.
    #[test]
    fn a_huge_fault_message_is_cut() {
        let huge = format!("Invalid input: {}", "ü".repeat(1 << 20));
        let body = serde_json::json!({"badRequest": {"code": 400, "message": huge}}).to_string();
        let fault = parse_fault(&body);
        assert!(fault.from_service);
        assert!(
            fault.message.starts_with("Invalid input: üüü"),
            "{}",
            &fault.message[..40]
        );
        assert!(
            fault.message.chars().count() < 400,
            "{} characters",
            fault.message.chars().count()
        );
        assert!(
            fault.message.chars().count() <= 300 && fault.message.ends_with(" more characters)"),
            "{}",
            fault.message
        );
        let e = classify(Compute, "POST /servers", 400, None, &body);
        assert!(e.to_string().len() < 1000, "{} bytes", e.to_string().len());
        // A short message is kept whole.
        assert_eq!(
            parse_fault(UNKNOWN_AZ).message,
            "The requested availability zone is not available"
        );
    }

    #[test]
    fn absurd_retry_afters_saturate_without_panicking() {
        let forever = Duration::from_secs(u64::MAX);
        for header in [
            "18446744073709551615",
            "18446744073709551616",
            "9".repeat(400).as_str(),
        ] {
            assert_eq!(parse_retry_after(Some(header)), Some(forever), "{header}");
        }
        for header in ["-1", "", " ", "1.5", "+3"] {
            assert_eq!(parse_retry_after(Some(header)), None, "{header:?}");
        }
        let body = |value: &str| {
            parse_fault(&format!(
                r#"{{"overLimit": {{"code": 413, "message": "This request was rate-limited.", "retryAfter": {value}}}}}"#
            ))
            .retry_after
        };
        for value in [
            r#""18446744073709551615""#,
            r#""99999999999999999999999999""#,
            "18446744073709551615",
            "99999999999999999999999999",
            "1e300",
        ] {
            assert_eq!(body(value), Some(forever), "{value}");
        }
        assert_eq!(body("2.5"), Some(Duration::from_secs(3)));
        for value in ["-1", "-1e300", r#""-1""#, "null", "[]"] {
            assert_eq!(body(value), None, "{value}");
        }
        let e = classify(Compute, "GET /x", 429, Some(&"9".repeat(40)), RATE_LIMITED);
        assert!(
            matches!(e, CloudError::Throttled { retry_after: Some(d), .. } if d == forever),
            "{e:?}"
        );
    }

    #[test]
    fn neutron_over_quota_is_quota_exceeded() {
        let e = classify(Network, "POST /v2.0/ports", 409, None, NEUTRON_OVER_QUOTA);
        assert!(matches!(e, CloudError::QuotaExceeded(_)), "{e:?}");
    }

    #[test]
    fn state_conflicts_are_conflicts() {
        for (status, body) in [
            (400, ALREADY_ATTACHED),
            (409, PORT_IN_USE),
            (409, TASK_STATE),
            (400, DELETE_IN_USE),
        ] {
            let e = classify(Compute, "POST /x", status, None, body);
            assert!(
                matches!(e, CloudError::Conflict(_)),
                "{status} {body}: {e:?}"
            );
        }
    }

    #[test]
    fn missing_objects_are_not_found() {
        for (service, body) in [
            (Compute, SERVER_MISSING),
            (Compute, NOT_ATTACHED),
            (BlockStorage, VOLUME_MISSING),
            (Network, PORT_MISSING),
        ] {
            let e = classify(service, "GET /x", 404, None, body);
            assert!(matches!(e, CloudError::NotFound(_)), "{e:?}");
        }
    }

    /// What each service answers, for an object it lacks, to the calls the
    /// driver makes: each names the object (measured on the testbed's Nova
    /// 34.0.0, Cinder 29.0.0 and Neutron 29.0.0; the two marked "source"
    /// read from those releases' code). None is the generic route answer,
    /// so each is still the object's absence.
    #[test]
    fn every_missing_object_answer_is_not_found() {
        for (service, call, body) in [
            // GET, DELETE /servers/{id}, POST .../action (forceDelete),
            // POST/DELETE .../os-volume_attachments, .../os-interface.
            (Compute, "DELETE /servers/x", SERVER_MISSING),
            // Source: nova/api/openstack/compute/servers.py, a server
            // gone between the delete's look-up and its delete.
            (
                Compute,
                "DELETE /servers/x",
                r#"{"itemNotFound": {"code": 404, "message": "Instance could not be found"}}"#,
            ),
            (
                Compute,
                "DELETE /servers/x/os-volume_attachments/v",
                NOT_ATTACHED,
            ),
            (
                Compute,
                "POST /servers/x/os-volume_attachments",
                VOLUME_MISSING,
            ),
            (
                Compute,
                "POST /servers/x/os-interface",
                r#"{"itemNotFound": {"code": 404, "message": "Port id 00000000-0000-0000-0000-000000000000 could not be found."}}"#,
            ),
            (
                Compute,
                "GET /os-keypairs/k",
                r#"{"itemNotFound": {"code": 404, "message": "Keypair nosuchkey not found for user ab4d2e1144c94cc4936a6a95effce5a6"}}"#,
            ),
            (
                Compute,
                "GET /flavors/f",
                r#"{"itemNotFound": {"code": 404, "message": "Flavor 00000000-0000-0000-0000-000000000000 could not be found."}}"#,
            ),
            // The tags API (2.26+; the driver only sets and filters tags)
            // names the tag it lacks, and the server.
            (
                Compute,
                "GET /servers/x/tags/t",
                r#"{"itemNotFound": {"code": 404, "message": "Server 11889a78-a1ae-4a16-8a6f-8b195481c800 has no tag 'nosuchtag'"}}"#,
            ),
            (
                Compute,
                "GET /servers/x/tags/t",
                r#"{"itemNotFound": {"code": 404, "message": "Instance 00000000-0000-0000-0000-000000000000 has no mapping to a cell."}}"#,
            ),
            // Source: nova/exception.py and cinder/exception.py, the base
            // NotFound (no "The"), raised for an object of no named kind.
            (
                BlockStorage,
                "GET /volumes/v",
                r#"{"itemNotFound": {"code": 404, "message": "Resource could not be found."}}"#,
            ),
            (BlockStorage, "DELETE /volumes/v", VOLUME_MISSING),
            (
                BlockStorage,
                "GET /attachments/a",
                r#"{"itemNotFound": {"code": 404, "message": "Volume attachment could not be found with filter: attachment_id = 00000000-0000-0000-0000-000000000000."}}"#,
            ),
            (Network, "DELETE /v2.0/ports/p", PORT_MISSING),
            (
                Network,
                "GET /v2.0/networks/n",
                r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network 00000000-0000-0000-0000-000000000000 could not be found.", "detail": ""}}"#,
            ),
            (
                Network,
                "GET /v2.0/security-groups/g",
                r#"{"NeutronError": {"type": "SecurityGroupNotFound", "message": "Security group 00000000-0000-0000-0000-000000000000 does not exist", "detail": ""}}"#,
            ),
        ] {
            let e = classify(service, call, 404, None, body);
            assert!(matches!(e, CloudError::NotFound(_)), "{call} {body}: {e:?}");
        }
    }

    /// A 404 with the services' own fault but webob's generic "The
    /// resource could not be found." names no object: it is the answer to
    /// a URL that routes nowhere (Neutron's for any path it lacks; Nova's
    /// and Cinder's for a method the microversion asked lacks), or
    /// Neutron's for an object its policy hides. Sent by a wrong
    /// `*_endpoint_override`, a catalog entry or gateway pointing one
    /// service's calls at another, it says nothing of the server, volume
    /// or port: read as "gone", a delete would be counted done and the
    /// object leak. It is Fatal, telling the operator where to look.
    #[test]
    fn a_route_miss_is_not_the_objects_absence() {
        for (service, call, body) in [
            (Network, "DELETE /v2.0/ports/p", NEUTRON_NO_ROUTE),
            (Network, "GET /v2.0/ports/p", NEUTRON_NO_ROUTE),
            // A gateway sending Nova's or Cinder's calls to Neutron.
            (Compute, "DELETE /servers/x", NEUTRON_NO_ROUTE),
            (Compute, "GET /servers/x", NEUTRON_NO_ROUTE),
            (BlockStorage, "DELETE /volumes/v", NEUTRON_NO_ROUTE),
            (Compute, "DELETE /servers/x", NO_SUCH_METHOD),
            (
                Compute,
                "POST /servers/x/os-volume_attachments",
                NO_SUCH_METHOD,
            ),
            (Compute, "DELETE /servers/x/os-interface/p", NO_SUCH_METHOD),
            (BlockStorage, "DELETE /volumes/v", NO_SUCH_METHOD),
            (BlockStorage, "GET /volumes/v", NO_SUCH_METHOD),
        ] {
            let e = classify(service, call, 404, None, body);
            assert!(
                matches!(&e, CloudError::Fatal(m) if m.contains("endpoint") && m.contains(call)),
                "{service:?} {call} {body}: {e:?}"
            );
            assert!(!e.is_retryable(), "{e:?}");
        }
        // The message names the setting of the service the call was for.
        let e = classify(Compute, "DELETE /servers/x", 404, None, NEUTRON_NO_ROUTE);
        let m = e.to_string();
        assert!(
            m.contains("compute_endpoint_override") && m.contains("lead to Nova"),
            "{m}"
        );
        assert!(m.contains("policy hides"), "{m}");
        let m = classify(BlockStorage, "DELETE /volumes/v", 404, None, NO_SUCH_METHOD).to_string();
        assert!(
            m.contains("block_storage_endpoint_override") && m.contains("lead to Cinder"),
            "{m}"
        );
        assert!(!m.contains("policy hides"), "{m}");
        // The services' other answers with that text are not 404s.
        let e = classify(Compute, "GET /x", 400, None, NO_SUCH_METHOD);
        assert!(matches!(e, CloudError::Fatal(_)), "{e:?}");
    }

    /// An API gateway in front of Nova, Cinder or Neutron answers a route it
    /// cannot serve with its own JSON (Kong, APISIX, an empty object): that
    /// says nothing about the server, volume or port, which a delete would
    /// otherwise count as gone while it still exists.
    #[test]
    fn a_gateways_own_json_404_is_not_the_services() {
        for body in [
            r#"{"message":"no Route matched with those values"}"#,
            r#"{"error_msg":"404 Route Not Found"}"#,
            "{}",
            r#"{"message": "Not Found", "type": "PortNotFound"}"#,
            r#"{"error": "not found"}"#,
            r#"{"itemNotFound": {"code": 404}}"#,
            r#"{"itemNotFound": {"code": 404, "message": "gone"}, "status": 404}"#,
        ] {
            assert!(!parse_fault(body).from_service, "{body}");
            for service in [Compute, BlockStorage, Network] {
                let e = classify(service, "DELETE /x", 404, None, body);
                assert!(
                    matches!(&e, CloudError::Transient(m) if m.contains("not from the service")),
                    "{service:?} {body}: {e:?}"
                );
            }
        }
        // What the gateway said is kept for the operator.
        let e = classify(
            Network,
            "DELETE /v2.0/ports/p",
            404,
            None,
            r#"{"message":"no Route matched with those values"}"#,
        );
        assert!(e.to_string().contains("no Route matched"), "{e}");
        // Glance's own 404s are pages: still the image's absence.
        assert!(matches!(
            classify(Image, "GET /v2/images/x", 404, None, "{}"),
            CloudError::NotFound(_)
        ));
    }

    /// Glance answers 404 for an image it lacks, never for its listing:
    /// a 404 page there is a proxy's.
    #[test]
    fn a_404_to_glances_listing_is_not_glances() {
        let page = Reply {
            status: 404,
            retry_after: None,
            body: "<html><body><h1>404 Not Found</h1></body></html>".into(),
        };
        let get = |path: &[&str]| Call::new(Image, reqwest::Method::GET, path.iter().copied());
        let e = classify_reply(&get(&["images"]).query("name", "mysql"), &page);
        assert!(
            matches!(&e, CloudError::Transient(m) if m.contains("not from Glance")),
            "{e:?}"
        );
        let e = classify_reply(&get(&["images", "x"]), &page);
        assert!(matches!(e, CloudError::NotFound(_)), "{e:?}");
    }

    #[test]
    fn server_errors_and_garbage_are_transient_other_4xx_fatal() {
        for (status, body) in [
            (
                500,
                r#"{"computeFault": {"code": 500, "message": "Unexpected API Error."}}"#,
            ),
            (503, "<html>Service Unavailable</html>"),
            (502, ""),
        ] {
            let e = classify(Compute, "GET /x", status, None, body);
            assert!(matches!(e, CloudError::Transient(_)), "{e:?}");
        }
        let e = classify(Compute, "POST /servers", 400, None, UNKNOWN_AZ);
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains("availability zone is not available")),
            "{e:?}"
        );
    }

    #[test]
    fn a_401_after_reauth_is_the_services_not_the_credentials() {
        let e = classify(Compute, "GET /servers/x", 401, None, UNAUTHORIZED);
        assert!(
            matches!(&e, CloudError::Fatal(m) if m.contains("refused a token Keystone had just issued")),
            "{e:?}"
        );
    }

    #[test]
    fn osauth_failures_are_classified_by_kind() {
        let e = osauth::Error::new(osauth::ErrorKind::ProtocolError, "connection refused");
        assert!(matches!(
            classify_osauth("GET /limits", &e),
            CloudError::Transient(_)
        ));
        let e = osauth::Error::new(osauth::ErrorKind::AuthenticationFailed, "bad password");
        assert!(
            matches!(classify_osauth("auth", &e), CloudError::Fatal(m) if m.contains("credentials"))
        );
        let throttled = osauth::Error::new(osauth::ErrorKind::InvalidInput, "rate-limited")
            .with_status(reqwest::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(osauth_status(&throttled), Some(429));
        // osauth words a 429 as any 4xx: not the request's fault.
        assert_eq!(
            classify_osauth("GET /volumes", &throttled),
            CloudError::Throttled {
                retry_after: None,
                message: "GET /volumes: rate-limited (HTTP 429)".into(),
                unavailable: false,
            }
        );
        // A proxy's request timeout in front of Keystone or the version
        // document, as in front of any call.
        let timed_out = osauth::Error::new(osauth::ErrorKind::InvalidInput, "408 Request Time-out")
            .with_status(reqwest::StatusCode::REQUEST_TIMEOUT);
        assert!(matches!(
            classify_osauth("auth", &timed_out),
            CloudError::Transient(_)
        ));
        let bad = osauth::Error::new(osauth::ErrorKind::InvalidInput, "bad")
            .with_status(reqwest::StatusCode::BAD_REQUEST);
        assert!(matches!(
            classify_osauth("GET /", &bad),
            CloudError::Fatal(_)
        ));
        let e = osauth::Error::new(osauth::ErrorKind::ResourceNotFound, "no such version")
            .with_status(reqwest::StatusCode::NOT_FOUND);
        assert!(matches!(
            classify_osauth("compute version discovery", &e),
            CloudError::Fatal(_)
        ));
        let e = osauth::Error::new(osauth::ErrorKind::EndpointNotFound, "no block-storage");
        assert!(matches!(
            classify_osauth("GET /volumes", &e),
            CloudError::Fatal(_)
        ));
    }

    /// What osauth reports itself (the token request, version discovery,
    /// the catalog) keeps the whole page of a 401/403/404/409 as its
    /// message: cut as a service's own fault is, whatever the kind.
    #[test]
    fn osauth_failures_are_cut_as_service_faults_are() {
        let page = "P".repeat(1 << 20);
        for kind in [
            osauth::ErrorKind::AuthenticationFailed,
            osauth::ErrorKind::AccessDenied,
            osauth::ErrorKind::ResourceNotFound,
            osauth::ErrorKind::Conflict,
            osauth::ErrorKind::ProtocolError,
            osauth::ErrorKind::InvalidInput,
        ] {
            let e = osauth::Error::new(kind, page.clone());
            let message = classify_osauth("POST /v3/auth/tokens", &e).to_string();
            assert!(message.len() < 1000, "{kind:?}: {} bytes", message.len());
            assert!(message.contains("PPP... ("), "{kind:?}: {message}");
        }
    }
}
