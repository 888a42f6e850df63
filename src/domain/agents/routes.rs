//! `/v1/orgs/{orgId}/agents…` and `/v1/orgs/{orgId}/executors…` (owner/admin only), and the
//! unauthenticated `/v1/agents/pair` (`/v1/executors/pair`) where a pairing token is traded for an
//! executor token.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::model::{self, PairRequest, MAX_LABELS, MAX_LABEL_CHARS};
use super::{AgentError, Agents};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::ExecutorId;
use crate::domain::common::time::iso;
use crate::platform::http::client_ip::client_ip;
use crate::platform::http::{path_uuid, ApiError, Form, JsonBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/agents", web::get().to(list))
        .route("/v1/orgs/{orgId}/executors", web::get().to(list))
        .route(
            "/v1/orgs/{orgId}/agents/pairing-tokens",
            web::post().to(issue_pairing_token),
        )
        .route(
            "/v1/orgs/{orgId}/executors/pairing-tokens",
            web::post().to(issue_pairing_token),
        )
        .route(
            "/v1/orgs/{orgId}/agents/{agentId}/revoke",
            web::post().to(revoke),
        )
        .route(
            "/v1/orgs/{orgId}/executors/{executorId}/revoke",
            web::post().to(revoke),
        )
        .route(
            "/v1/orgs/{orgId}/executors/{executorId}/labels",
            web::put().to(set_labels),
        )
        .route(
            "/v1/orgs/{orgId}/agents/{agentId}/tags",
            web::put().to(set_tags),
        )
        .route("/v1/agents/pair", web::post().to(pair))
        .route("/v1/executors/pair", web::post().to(pair));
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "AGENT_NOT_FOUND", "Agent not found")
}

fn pairing_invalid(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "PAIRING_TOKEN_INVALID", message)
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::NotFound => not_found(),
            AgentError::PairingTokenMalformed => pairing_invalid("Pairing token is malformed"),
            AgentError::PairingTokenInvalid => pairing_invalid("Pairing token is invalid"),
            AgentError::PairingTokenUsed => pairing_invalid("Pairing token has already been used"),
            AgentError::PairingTokenExpired => ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAIRING_TOKEN_EXPIRED",
                "Pairing token is expired",
            ),
            AgentError::Throttled { retry_after_secs } => ApiError::rate_limited(retry_after_secs),
            AgentError::Db(e) => e.into(),
        }
    }
}

/// The executor id of the path (`{executorId}` or its `{agentId}` alias); not a UUID is not found.
fn executor_id(req: &HttpRequest) -> Result<ExecutorId, ApiError> {
    let name = if req.match_info().get("executorId").is_some() {
        "executorId"
    } else {
        "agentId"
    };
    path_uuid(req, name, not_found).map(ExecutorId::from)
}

async fn list(agents: web::Data<Agents>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let executors = agents.list(&ctx).await?;
    Ok(HttpResponse::Ok().json(json!({ "executors": executors })))
}

/// The body is optional (the original ignored it); `{labels?: string[]}` chooses the routing labels
/// the executor gets when the token is used.
async fn issue_pairing_token(
    agents: web::Data<Agents>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let labels = match &body.0 {
        Value::Object(_) => {
            let mut f = Form::new(&body.0);
            let labels = f.opt_string_list("labels", MAX_LABELS, 1, MAX_LABEL_CHARS);
            f.finish("Invalid pairing token payload")?;
            labels.unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let issued = agents
        .issue_pairing_token(&ctx, model::normalize_labels(labels))
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "token": issued.token,
        "expiresAt": iso(issued.expires_at),
    })))
}

async fn revoke(
    agents: web::Data<Agents>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = executor_id(&req)?;
    agents.revoke(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

async fn set_labels(
    agents: web::Data<Agents>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    labels_of(agents, req, ctx, &body.0).await
}

/// The legacy alias: `{tags}` stands for `{labels}`; anything but an array counts as no tags.
async fn set_tags(
    agents: web::Data<Agents>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let tags = match body.0.get("tags") {
        Some(Value::Array(items)) => Value::Array(items.clone()),
        _ => Value::Array(Vec::new()),
    };
    labels_of(agents, req, ctx, &json!({ "labels": tags })).await
}

async fn labels_of(
    agents: web::Data<Agents>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: &Value,
) -> Result<HttpResponse, ApiError> {
    let mut f = Form::new(body);
    let labels = f.string_list("labels", MAX_LABELS, 1, MAX_LABEL_CHARS);
    f.finish("Invalid labels payload")?;
    let labels = labels.ok_or_else(|| ApiError::bad_request("Invalid labels payload"))?;
    let id = executor_id(&req)?;
    let labels = agents
        .set_labels(&ctx, id, model::normalize_labels(labels))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true, "executor": { "id": id, "labels": labels } })))
}

/// Unauthenticated: the pairing token is the credential. The body is checked before the token.
async fn pair(
    agents: web::Data<Agents>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut f = Form::new(&body.0);
    let pairing_token = f.string("pairingToken", 1, usize::MAX);
    let name = f.string("name", 1, 120);
    let _agent_version = f.string("agentVersion", 1, 60);
    let capabilities = f.opt_object("capabilities").cloned().map(Value::Object);
    f.finish("Invalid agent pairing payload")?;
    let (Some(pairing_token), Some(name)) = (pairing_token, name) else {
        return Err(ApiError::bad_request("Invalid agent pairing payload"));
    };
    let paired = agents
        .pair(
            PairRequest {
                pairing_token,
                name,
                capabilities,
            },
            client_ip(&req),
        )
        .await?;
    Ok(HttpResponse::Created().json(paired))
}
