//! The API description on the wire, without knowing any route: the error responses operations share (each
//! the envelope of [`super::error::Envelope`]), and the two routes that serve a document built once at
//! start (`GET /v1/openapi.json`) and its viewer (`GET /docs`). The api role assembles the document itself
//! (`roles::openapi`).
//!
//! The viewer is Swagger UI, pinned and loaded by the browser from jsDelivr with Subresource Integrity:
//! nothing is downloaded at build time and nothing is vendored into the binary; a browser without internet
//! access gets an empty page, while the JSON document stays complete and can be opened in any local viewer.

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToResponse};

use super::ApiError;

/// The schema name of the error envelope (`#/components/schemas/Error`).
pub const ENVELOPE_SCHEMA: &str = "Error";

/// The envelope as a response body in `#[utoipa::path]` (`body = ErrorBody`), for an error whose
/// description is the route's own; otherwise `response = NotFound` etc. name the shared ones.
pub type ErrorBody = super::error::Envelope<'static>;

fn envelope_response(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut res = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ENVELOPE_SCHEMA)))
            .build(),
    );
    if retry_after {
        res = res.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(u64::schema())
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    res.build().into()
}

macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $description:literal $(, $retry:ident)?;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), envelope_response($description, error_responses!(@retry $($retry)?)))
                }
            }
        )+

        /// Every shared error response, for the document's `components.responses`.
        pub fn error_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as ToResponse>::response()),+]
        }
    };
    (@retry retry_after) => { true };
    (@retry) => { false };
}

error_responses! {
    /// 400: a malformed or invalid request (`details` names the fields), or a bad `X-Org-Id`.
    BadRequest = "Invalid request: `BAD_REQUEST` with `details.fieldErrors`, a framework code such as `FST_ERR_CTP_INVALID_JSON_BODY`, `ORG_CONTEXT_REQUIRED` or `INVALID_ORG_CONTEXT`, or a route's own code";
    /// 401: no valid credential.
    Unauthorized = "Not authenticated (`UNAUTHORIZED`), or the route's credential was refused";
    /// 403: authenticated, but not allowed.
    Forbidden = "Not a member of the organization (`ORG_ACCESS_DENIED`), or the role may not do this (`FORBIDDEN`)";
    /// 404.
    NotFound = "No such resource (`NOT_FOUND` or the route's own code)";
    /// 409.
    Conflict = "Conflicts with the current state (`CONFLICT` or the route's own code)";
    /// 413.
    PayloadTooLarge = "The body is larger than the route accepts (`FST_ERR_CTP_BODY_TOO_LARGE`, `PAYLOAD_TOO_LARGE`)";
    /// 415.
    UnsupportedMediaType = "The body's content type is not accepted (`FST_ERR_CTP_INVALID_MEDIA_TYPE`, `UNSUPPORTED_MEDIA_TYPE`)";
    /// 429, with `Retry-After`.
    TooManyRequests = "Too many attempts (`RATE_LIMITED`)", retry_after;
    /// 500: the cause is logged, never returned.
    InternalError = "Unexpected failure (`INTERNAL_ERROR`)";
    /// 503, with `Retry-After` when it is worth retrying.
    ServiceUnavailable = "PostgreSQL, Redis or a required setting is unavailable (`SERVICE_UNAVAILABLE` or the route's own code, e.g. `QUEUE_UNAVAILABLE`)", retry_after;
}

/// `{ok: true}`, the answer of routes that have nothing else to say.
#[derive(utoipa::ToSchema)]
pub struct OkBody {
    pub ok: bool,
}

/// Swagger UI, pinned; the hashes are those of the files in the npm package `swagger-ui-dist@5.35.0`,
/// which jsDelivr serves unchanged. To upgrade: `npm pack swagger-ui-dist@<v>` and
/// `openssl dgst -sha384 -binary <file> | base64` for both files.
const VIEWER_CSS: &str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0/swagger-ui.css";
const VIEWER_CSS_SRI: &str =
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I";
const VIEWER_JS: &str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0/swagger-ui-bundle.js";
const VIEWER_JS_SRI: &str =
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9";
/// The page's one inline script, allowed by its hash (no `'unsafe-inline'`). The document's URL is
/// relative, so the page also works behind a reverse proxy that mounts the API under a prefix.
const VIEWER_INIT: &str = "window.onload = function () { window.ui = SwaggerUIBundle({ url: 'v1/openapi.json', dom_id: '#ui', deepLinking: true, validatorUrl: null }); };";

/// The document and the viewer page, rendered once at start and shared by every worker.
#[derive(Debug, Clone)]
pub struct Published {
    json: Bytes,
    etag: String,
    page: Bytes,
    csp: String,
}

impl Published {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_vec(doc)?;
        let etag = format!("\"{}\"", hex::encode(Sha256::digest(&json)));
        let page = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n<title>Vespid API</title>\n\
             <link rel=\"stylesheet\" href=\"{VIEWER_CSS}\" integrity=\"{VIEWER_CSS_SRI}\" crossorigin=\"anonymous\">\n\
             </head>\n<body>\n<div id=\"ui\"></div>\n\
             <noscript>The viewer needs JavaScript; the document itself is at <a href=\"v1/openapi.json\">/v1/openapi.json</a>.</noscript>\n\
             <script src=\"{VIEWER_JS}\" integrity=\"{VIEWER_JS_SRI}\" crossorigin=\"anonymous\"></script>\n\
             <script>{VIEWER_INIT}</script>\n</body>\n</html>\n"
        );
        let init_hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(VIEWER_INIT));
        // Swagger UI styles elements inline and draws icons as data: SVGs; it fetches only this origin.
        let csp = format!(
            "default-src 'none'; script-src https://cdn.jsdelivr.net 'sha256-{init_hash}'; \
             style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data:; font-src data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        Ok(Self {
            json: Bytes::from(json),
            etag,
            page: Bytes::from(page),
            csp,
        })
    }

    /// The document as served.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        })
}

/// The document is put into app data by the api role; without it the wiring is broken.
fn missing() -> ApiError {
    ApiError::internal_from(Missing)
}

#[derive(Debug, thiserror::Error)]
#[error("the OpenAPI document is not registered with the HTTP server")]
struct Missing;

/// The OpenAPI 3.1 document of this API, as JSON.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "meta",
    responses(
        (status = 200, description = "This document (`ETag`, `Cache-Control: public`)", content_type = "application/json", body = Object),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    )
)]
pub async fn openapi_json(
    req: HttpRequest,
    published: Option<web::Data<Published>>,
) -> Result<HttpResponse, ApiError> {
    let published = published.ok_or_else(missing)?;
    let unchanged = not_modified(&req, &published.etag);
    let mut res = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::ETAG, published.etag.clone()));
    if unchanged {
        return Ok(res.finish());
    }
    Ok(res
        .content_type("application/json")
        .body(published.json.clone()))
}

/// An interactive viewer (Swagger UI) of the document.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getApiViewer",
    tag = "meta",
    responses(
        (status = 200, description = "An HTML page that renders `/v1/openapi.json`", content_type = "text/html", body = String),
    )
)]
pub async fn docs(published: Option<web::Data<Published>>) -> Result<HttpResponse, ApiError> {
    let published = published.ok_or_else(missing)?;
    let mut res = HttpResponse::Ok();
    if let Ok(csp) = HeaderValue::from_str(&published.csp) {
        res.insert_header((header::CONTENT_SECURITY_POLICY, csp));
    }
    Ok(res
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("text/html; charset=utf-8")
        .body(published.page.clone()))
}
