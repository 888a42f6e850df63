//! `POST /v1/hooks/{workflowId}`: a webhook delivery. No bearer token and no org header: the caller
//! proves it knows the workflow's trigger token (see [`super::signature`]). Answers 202 `{run}` for a
//! new run, 200 `{run}` with `Idempotent-Replayed: true` for a retry of a delivery that already started
//! one; 404 for an unknown id or a workflow without a webhook trigger (the same answer, so ids cannot be
//! probed), 401 with the refusal's code, 409 `WEBHOOK_REPLAYED`, 413, 415, 429 with `Retry-After`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

use super::signature::Proof;
use super::{BodyKind, Delivery, TriggerError, Triggers};
use crate::domain::common::ids::WorkflowId;
use crate::domain::runs::model::RunView;
use crate::platform::http::body::{BodyConfig, DEFAULT_READ_TIMEOUT};
use crate::platform::http::openapi::{
    BadRequest, ErrorBody, PayloadTooLarge, UnsupportedMediaType,
};
use crate::platform::http::ApiError;

pub const SIGNATURE_HEADER: &str = "x-vespid-signature";
pub const TOKEN_HEADER: &str = "x-vespid-webhook-token";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/hooks/{workflowId}", web::post().to(deliver));
}

fn not_found() -> ApiError {
    ApiError::not_found("Workflow not found")
}

impl From<TriggerError> for ApiError {
    fn from(e: TriggerError) -> Self {
        match e {
            TriggerError::NotFound => not_found(),
            TriggerError::Refused(r) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                r.to_string(),
                "The webhook signature or token is missing, stale or wrong",
            ),
            TriggerError::Replayed => ApiError::new(
                StatusCode::CONFLICT,
                "WEBHOOK_REPLAYED",
                "This signed delivery was already received",
            ),
            TriggerError::RateLimited { retry_after_secs } => {
                ApiError::rate_limited(retry_after_secs)
            }
            TriggerError::BadBody(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
            }
            TriggerError::UnsupportedMediaType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Send application/json or application/x-www-form-urlencoded",
            ),
            TriggerError::BadIdempotencyKey => ApiError::bad_request(e.to_string()),
            e @ TriggerError::Redis(_) => ApiError::unavailable().with_cause(e),
            TriggerError::Db(e) => e.into(),
        }
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("The webhook body is larger than {max} bytes"),
    )
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn body_kind(req: &HttpRequest, empty: bool) -> Result<BodyKind, TriggerError> {
    if empty {
        return Ok(BodyKind::Empty);
    }
    let ct = header_str(req, header::CONTENT_TYPE.as_str()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match ct.as_deref() {
        // No type: JSON is what webhook senders almost always send.
        None | Some("application/json") => Ok(BodyKind::Json),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyKind::Json),
        Some("application/x-www-form-urlencoded") => Ok(BodyKind::Form),
        Some(_) => Err(TriggerError::UnsupportedMediaType),
    }
}

async fn read_capped(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = header_str(req, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: usize| n > max) {
        return Err(too_large(max));
    }
    let timeout = req
        .app_data::<web::Data<BodyConfig>>()
        .map_or(DEFAULT_READ_TIMEOUT, |c| c.read_timeout);
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::bad_request("The request body could not be read"))?;
            if body.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "The request body was not received in time",
        )
    })?
}

/// A webhook delivery: starts a run of the published workflow with its body as input. Proven by
/// `X-Vespid-Signature` (HMAC over timestamp and body; replays refused) or the bare
/// `X-Vespid-Webhook-Token`.
#[utoipa::path(
    post, path = "/v1/hooks/{workflowId}", operation_id = "deliverWebhook", tag = "webhooks",
    params(
        ("workflowId" = Uuid, Path, description = "The workflow (any revision of the family with a webhook trigger)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries of the same delivery start one run"),
    ),
    security(("webhookSignature" = []), ("webhookToken" = [])),
    request_body(
        description = "The run's input (size-capped); empty is allowed",
        content(
            (Object = "application/json"),
            (Object = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 202, description = "A new run", body = DeliveredRun),
        (status = 200, description = "A retry of a delivery that already started a run (`Idempotent-Replayed: true`)", body = DeliveredRun,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, response = BadRequest),
        (status = 401, description = "The signature or token is missing, stale or wrong", body = ErrorBody),
        (status = 404, description = "Unknown workflow, or no webhook trigger", body = ErrorBody),
        (status = 409, description = "`WEBHOOK_REPLAYED`", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, description = "The workflow's rate limit", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn deliver(
    req: HttpRequest,
    payload: web::Payload,
    triggers: web::Data<Triggers>,
) -> Result<HttpResponse, ApiError> {
    // Any non-UUID id is simply unknown.
    let workflow = req
        .match_info()
        .get("workflowId")
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(WorkflowId::from)
        .ok_or_else(not_found)?;
    let max = triggers.config().webhook_max_bytes;
    let body = read_capped(&req, payload, max).await?;
    let kind = body_kind(&req, body.is_empty())?;
    let proof = match (
        header_str(&req, SIGNATURE_HEADER),
        header_str(&req, TOKEN_HEADER),
    ) {
        (Some(sig), _) => Proof::Signature(sig),
        (None, Some(token)) => Proof::Token(token),
        (None, None) => Proof::None,
    };
    let delivered = triggers
        .deliver(Delivery {
            workflow,
            proof,
            body: &body,
            kind,
            idempotency_key: header_str(&req, "idempotency-key"),
        })
        .await?;
    let view = json!({ "run": RunView::from(&delivered.run) });
    Ok(if delivered.replayed {
        HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(view)
    } else {
        HttpResponse::Accepted().json(view)
    })
}

/// The run a delivery started (or, replayed, had started).
#[derive(utoipa::ToSchema)]
pub struct DeliveredRun {
    pub run: RunView,
}
