//! HTTP request metrics (recorded by the edge middleware, by route template so label cardinality stays
//! bounded) and the `/metrics` endpoint with its access rule.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use subtle::ConstantTimeEq;

use super::{Metrics, MetricsError, CONTENT_TYPE, LATENCY_BUCKETS};
use crate::platform::secret::Secret;

pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub(super) fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to the response head, by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    /// Records one answered request. `route` is the template (`/v1/orgs/{orgId}`) or `<unmatched>`,
    /// never the raw path; it is labelled as the spec writes routes (`/v1/orgs/:orgId`).
    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let route = route_label(route);
        let route = route.as_str();
        let method = method_label(method);
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }
}

/// `/v1/orgs/{orgId}/x/{tail:.*}` → `/v1/orgs/:orgId/x/:tail`: braces inside label values are legal but
/// need escaping in PromQL regexes and trip some text-format parsers; the colon form is how the API
/// spec names routes.
fn route_label(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_param = false;
    let mut in_regex = false;
    for ch in template.chars() {
        match (ch, in_param) {
            ('{', false) => {
                in_param = true;
                out.push(':');
            }
            ('}', true) => {
                in_param = false;
                in_regex = false;
            }
            (':', true) => in_regex = true,
            (c, true) if !in_regex => out.push(c),
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// Standard methods by name; anything else (a client may send any token) is one label.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Who may scrape `/metrics` on a listener.
#[derive(Clone)]
pub struct MetricsAccess {
    /// `METRICS_TOKEN`: when set, every listener asks for `Authorization: Bearer <token>`.
    pub token: Secret,
    /// A listener of its own (`METRICS_ADDR`, meant for a private network) answers without a token when
    /// none is set; the public API and gateway listeners never do (their `/metrics` is 404 then).
    pub dedicated: bool,
}

impl MetricsAccess {
    fn allows(&self, req: &HttpRequest) -> Result<(), StatusCode> {
        if self.token.is_empty() {
            return if self.dedicated {
                Ok(())
            } else {
                Err(StatusCode::NOT_FOUND)
            };
        }
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(self.token.expose().as_bytes())) {
            Ok(())
        } else {
            Err(StatusCode::UNAUTHORIZED)
        }
    }
}

/// Adds `GET /metrics` to a listener's app. `metrics` must also be app data (the edge records into it).
pub fn configure(access: MetricsAccess) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let access = Arc::new(access);
    move |cfg: &mut web::ServiceConfig| {
        let access = access.clone();
        cfg.route(
            "/metrics",
            web::get().to(move |req: HttpRequest, m: web::Data<Metrics>| {
                let access = access.clone();
                async move { scrape(&req, &m, &access).await }
            }),
        );
    }
}

async fn scrape(
    req: &HttpRequest,
    metrics: &Metrics,
    access: &MetricsAccess,
) -> Result<HttpResponse, crate::platform::http::ApiError> {
    use crate::platform::http::ApiError;
    match access.allows(req) {
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .insert_header(("cache-control", "no-store"))
            .body(metrics.render().await)),
        Err(StatusCode::UNAUTHORIZED) => Err(ApiError::unauthorized("Unauthorized")),
        Err(_) => Err(ApiError::not_found("Not Found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn route_labels_use_the_colon_form() {
        assert_eq!(
            route_label("/v1/orgs/{orgId}/workflows/{workflowId}"),
            "/v1/orgs/:orgId/workflows/:workflowId"
        );
        assert_eq!(route_label("/files/{tail:.*}"), "/files/:tail");
        assert_eq!(route_label("<unmatched>"), "<unmatched>");
    }

    #[test]
    fn public_listeners_need_the_token_and_hide_metrics_without_one() {
        let public = |token: &str| MetricsAccess {
            token: Secret::new(token),
            dedicated: false,
        };
        let req = TestRequest::default().to_http_request();
        assert_eq!(public("").allows(&req), Err(StatusCode::NOT_FOUND));
        assert_eq!(public("s3cret").allows(&req), Err(StatusCode::UNAUTHORIZED));
        let bearer = |t: &str| {
            TestRequest::default()
                .insert_header(("authorization", format!("Bearer {t}")))
                .to_http_request()
        };
        assert_eq!(
            public("s3cret").allows(&bearer("s3cre")),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(public("s3cret").allows(&bearer("s3cret")), Ok(()));
        let dedicated = MetricsAccess {
            token: Secret::new(""),
            dedicated: true,
        };
        assert_eq!(dedicated.allows(&req), Ok(()));
    }

    /// The per-request cost of recording (an upper bound: debug build). `cargo test --lib
    /// observe_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn observe_cost() {
        let registry = Registry::new();
        let m = HttpMetrics::register(&registry).unwrap();
        let routes = [
            "/v1/orgs/{orgId}/settings",
            "/v1/orgs/{orgId}/secrets",
            "/healthz",
        ];
        let n = 300_000;
        let started = std::time::Instant::now();
        for i in 0..n {
            let route = routes[i % routes.len()];
            m.observe(route, &Method::GET, StatusCode::OK, 0.0004);
        }
        let ns = started.elapsed().as_nanos() / n as u128;
        println!("observe: {ns} ns per request");
    }
}
