//! HTTP plumbing shared by every route: the error envelope, body parsing, the edge middleware (request id,
//! span, CORS, headers that extractors ask for, request metrics when a registry is app data) and small path
//! helpers.

pub mod body;
pub mod client_ip;
pub mod error;
pub mod openapi;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use tracing::Instrument;
use uuid::Uuid;

pub use crate::platform::validation::{parse_uuid, Invalid};

/// `HttpServer::on_connect` hook: turns Nagle's algorithm off on every accepted connection. Streams of
/// small frames (WebSocket events and deltas, SSE) otherwise wait for the peer's delayed ACK (40 ms on
/// Linux) whenever a frame follows another still unacknowledged: exactly the live updates we promise.
pub fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    }
}
pub use body::{Form, JsonBody};
pub use error::ApiError;

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// The request id: `req-<n>` as in the original, unique within the process.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Headers that extractors decided to send back (a re-minted access token, org-context warnings).
#[derive(Debug, Default, Clone)]
pub struct ResponseHints {
    pub access_token: Option<String>,
    pub org_warnings: Vec<&'static str>,
}

/// Allowed CORS origin, put into app data once.
#[derive(Debug, Clone)]
pub struct CorsOrigin(pub String);

pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// The `X-Org-Id` header as one string. Repeated headers are joined with `,` (as the original saw them),
/// which makes them malformed rather than silently using the first value; non-ASCII is malformed too.
pub fn org_header(req: &HttpRequest) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all("x-org-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Records a hint for the response; used by extractors that run inside handlers.
pub fn hint(req: &HttpRequest, f: impl FnOnce(&mut ResponseHints)) {
    let mut ext = req.extensions_mut();
    match ext.get_mut::<ResponseHints>() {
        Some(h) => f(h),
        None => {
            let mut h = ResponseHints::default();
            f(&mut h);
            ext.insert(h);
        }
    }
}

/// The route template (`/v1/orgs/{orgId}/…`), never the raw path: raw paths carry tokens and codes.
pub fn route_of(req: &HttpRequest) -> String {
    req.match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_string())
}

/// Parses a UUID path segment; `on_error` is the route's own not-found or bad-request answer.
pub fn path_uuid(
    req: &HttpRequest,
    name: &str,
    on_error: impl FnOnce() -> ApiError,
) -> Result<Uuid, ApiError> {
    req.match_info()
        .get(name)
        .and_then(parse_uuid)
        .ok_or_else(on_error)
}

/// Edge middleware: request id and span, CORS for the one allowed origin, response hints, access log.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let rid = format!("req-{}", REQUEST_SEQ.fetch_add(1, Ordering::Relaxed));
    req.extensions_mut().insert(RequestId(rid.clone()));
    let allowed = req
        .app_data::<actix_web::web::Data<CorsOrigin>>()
        .map(|o| o.0.clone());
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cors_ok = matches!((&origin, &allowed), (Some(o), Some(a)) if o == a);

    // CORS preflight for the allowed origin answers here; others fall through to routing (404/405).
    if req.method() == Method::OPTIONS
        && cors_ok
        && req.headers().contains_key("access-control-request-method")
    {
        let mut res = HttpResponse::NoContent();
        res.insert_header((
            "access-control-allow-origin",
            origin.clone().unwrap_or_default(),
        ))
        .insert_header(("access-control-allow-credentials", "true"))
        .insert_header((
            "access-control-allow-methods",
            "GET,HEAD,PUT,PATCH,POST,DELETE",
        ))
        .insert_header(("vary", "Origin"));
        if let Some(h) = req.headers().get("access-control-request-headers") {
            res.insert_header(("access-control-allow-headers", h.clone()));
        }
        return Ok(req.into_response(res.finish()).map_into_right_body());
    }

    let http_method = req.method().clone();
    let method = http_method.to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %rid,
        method = %method,
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
        org_id = tracing::field::Empty,
    );
    let mut res = next.call(req).instrument(span.clone()).await?;

    let hints = res.request().extensions().get::<ResponseHints>().cloned();
    let route = route_of(res.request());
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if cors_ok {
        if let Some(Ok(v)) = origin.as_deref().map(HeaderValue::from_str) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    if let Some(h) = hints {
        if let Some(Ok(v)) = h.access_token.as_deref().map(HeaderValue::from_str) {
            headers.insert(HeaderName::from_static("x-access-token"), v);
        }
        if !h.org_warnings.is_empty() {
            let mut codes: Vec<&str> = Vec::new();
            for w in &h.org_warnings {
                if !codes.contains(w) {
                    codes.push(w);
                }
            }
            if let Ok(v) = HeaderValue::from_str(&codes.join(",")) {
                headers.insert(HeaderName::from_static("x-org-context-warning"), v);
            }
        }
    }
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(m) = res
        .request()
        .app_data::<actix_web::web::Data<crate::platform::metrics::Metrics>>()
    {
        m.http.observe(&route, &http_method, status, elapsed);
    }
    let duration_ms = elapsed * 1000.0;
    span.record("route", route.as_str());
    let cause = status
        .is_server_error()
        .then(|| error::cause_of(res.response()))
        .flatten();
    span.in_scope(|| {
        if status.is_server_error() {
            // The one log line of a server error, with its cause (never sent to the client).
            tracing::error!(
                status = status.as_u16(),
                duration_ms,
                cause = cause.as_deref(),
                "request failed"
            );
        } else {
            tracing::debug!(status = status.as_u16(), duration_ms, "request");
        }
    });
    Ok(res.map_into_left_body())
}

/// Unknown routes: the envelope, not the framework's shape (spec Improve).
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "Not Found",
    ))
}

/// Query-string failures as the envelope.
pub fn query_config(message: &'static str) -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(move |_, _| ApiError::bad_request(message).into())
}
