//! `/v1/orgs/{orgId}/agents…` and `/v1/orgs/{orgId}/executors…` (owner/admin only), and the
//! unauthenticated `/v1/agents/pair` (`/v1/executors/pair`) where a pairing token is traded for an
//! executor token.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::model::{self, ExecutorView, PairRequest, Paired, MAX_LABELS, MAX_LABEL_CHARS};
use super::{AgentError, Agents};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::ExecutorId;
use crate::domain::common::time::iso;
use crate::platform::http::client_ip::client_ip;
use crate::platform::http::openapi::{BadRequest, ErrorBody};
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

/// The org's executors (owner/admin). Also served at `/v1/orgs/{orgId}/executors`.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/agents", operation_id = "listAgents", tag = "executors",
    params(("orgId" = Uuid, Path, description = "The organization")),
    responses((status = 200, description = "The executors", body = ExecutorList))
)]
async fn list(agents: web::Data<Agents>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let executors = agents.list(&ctx).await?;
    Ok(HttpResponse::Ok().json(json!({ "executors": executors })))
}

/// The body is optional (the original ignored it); `{labels?: string[]}` chooses the routing labels
/// the executor gets when the token is used.
/// A single-use pairing token, valid for 15 minutes (owner/admin). Also served at
/// `/v1/orgs/{orgId}/executors/pairing-tokens`.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/agents/pairing-tokens", operation_id = "createAgentPairingToken", tag = "executors",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body(content = Option<PairingTokenRequest>, description = "Optional"),
    responses(
        (status = 201, description = "The token, shown once", body = PairingToken),
        (status = 400, response = BadRequest),
    )
)]
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

/// Revokes an executor at once (owner/admin). Also served at
/// `/v1/orgs/{orgId}/executors/{executorId}/revoke`.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/agents/{agentId}/revoke", operation_id = "revokeAgent", tag = "executors",
    params(("orgId" = Uuid, Path, description = "The organization"), ("agentId" = Uuid, Path, description = "The executor")),
    responses(
        (status = 200, description = "Revoked", body = crate::platform::http::openapi::OkBody),
        (status = 404, description = "`AGENT_NOT_FOUND`", body = ErrorBody),
    )
)]
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

/// Sets an executor's routing labels (owner/admin).
#[utoipa::path(
    put, path = "/v1/orgs/{orgId}/executors/{executorId}/labels", operation_id = "setExecutorLabels", tag = "executors",
    params(("orgId" = Uuid, Path, description = "The organization"), ("executorId" = Uuid, Path, description = "The executor")),
    request_body = LabelsRequest,
    responses(
        (status = 200, description = "The labels now in force", body = LabelsBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "`AGENT_NOT_FOUND`", body = ErrorBody),
    )
)]
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
/// The legacy form of the labels route: `{tags}` stands for `{labels}` (owner/admin).
#[utoipa::path(
    put, path = "/v1/orgs/{orgId}/agents/{agentId}/tags", operation_id = "setAgentTags", tag = "executors",
    params(("orgId" = Uuid, Path, description = "The organization"), ("agentId" = Uuid, Path, description = "The executor")),
    request_body = TagsRequest,
    responses(
        (status = 200, description = "The labels now in force", body = LabelsBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "`AGENT_NOT_FOUND`", body = ErrorBody),
    )
)]
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
/// Trades a pairing token for the executor's id and token (shown once). Unauthenticated: the pairing
/// token is the credential. Also served at `/v1/executors/pair`.
#[utoipa::path(
    post, path = "/v1/agents/pair", operation_id = "pairAgent", tag = "executors",
    request_body = PairAgentRequest,
    responses(
        (status = 201, description = "Paired", body = Paired),
        (status = 400, description = "Invalid payload, or `PAIRING_TOKEN_EXPIRED`", body = ErrorBody),
        (status = 401, description = "`PAIRING_TOKEN_INVALID`", body = ErrorBody),
        (status = 429, description = "Too many failed pairings from this client", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
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

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

#[derive(utoipa::ToSchema)]
pub struct ExecutorList {
    pub executors: Vec<ExecutorView>,
}

/// `POST …/pairing-tokens`.
#[derive(utoipa::ToSchema)]
pub struct PairingTokenRequest {
    /// The routing labels the executor gets when the token is used.
    pub labels: Option<Vec<String>>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingToken {
    pub token: String,
    pub expires_at: String,
}

/// `PUT …/executors/{executorId}/labels`.
#[derive(utoipa::ToSchema)]
pub struct LabelsRequest {
    pub labels: Vec<String>,
}

/// `PUT …/agents/{agentId}/tags`.
#[derive(utoipa::ToSchema)]
pub struct TagsRequest {
    pub tags: Vec<String>,
}

#[derive(utoipa::ToSchema)]
pub struct LabelsBody {
    pub ok: bool,
    pub executor: ExecutorLabels,
}

#[derive(utoipa::ToSchema)]
pub struct ExecutorLabels {
    pub id: ExecutorId,
    pub labels: Vec<String>,
}

/// `POST /v1/agents/pair`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairAgentRequest {
    pub pairing_token: String,
    #[schema(min_length = 1, max_length = 120)]
    pub name: String,
    #[schema(min_length = 1, max_length = 60)]
    pub agent_version: String,
    /// What the agent reports about itself (`labels`, …).
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Value>,
}
