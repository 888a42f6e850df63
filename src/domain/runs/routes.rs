//! `/v1/orgs/{orgId}/workflows/{workflowId}/runs…`: create (insert + enqueue, or 503 with no row left
//! behind), list, get, and the run's events.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::model::{EventView, RunView};
use super::{RunError, Runs};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::extract::{authenticate, resolve_org};
use crate::domain::common::ids::{RunId, WorkflowId};
use crate::domain::common::page::Page;
use crate::platform::http::openapi::{BadRequest, ErrorBody, NotFound};
use crate::platform::http::{path_uuid, request_id, route_of, ApiError, JsonBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        web::post().to(create),
    )
    .route(
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        web::get().to(list),
    )
    .route(
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}",
        web::get().to(get),
    )
    .route(
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events",
        web::get().to(events),
    );
}

fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::NotFound => not_found(),
            RunError::WorkflowNotPublished => ApiError::conflict("Workflow is not published"),
            e @ RunError::QueueUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_UNAVAILABLE",
                "Workflow queue is unavailable",
            )
            .with_cause(e),
            e @ RunError::IntakeStopped => ApiError::unavailable().with_cause(e),
            RunError::Db(e) => e.into(),
        }
    }
}

fn workflow_id(req: &HttpRequest) -> Result<WorkflowId, ApiError> {
    path_uuid(req, "workflowId", not_found).map(WorkflowId::from)
}

fn run_id(req: &HttpRequest) -> Result<RunId, ApiError> {
    path_uuid(req, "runId", not_found).map(RunId::from)
}

/// Starts a run of a published workflow: inserted `queued` and enqueued, or 503 with nothing left behind.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/workflows/{workflowId}/runs", operation_id = "createRun", tag = "runs",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)")),
    request_body(content = Option<CreateRunRequest>, description = "Optional; `input` becomes the run's input"),
    responses(
        (status = 201, description = "Queued", body = RunBody),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, description = "Workflow is not published", body = ErrorBody),
        (status = 503, description = "`QUEUE_UNAVAILABLE` (no run is left behind), or the database is unavailable", body = ErrorBody),
    )
)]
async fn create(
    runs: web::Data<Runs>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    // Auth first, then the body (before org context, as the original), then the org.
    authenticate(&req).await?;
    let input = match body.0 {
        Value::Null => None,
        Value::Object(mut m) => m.remove("input").filter(|v| !v.is_null()),
        _ => {
            return Err(
                ApiError::bad_request("Invalid run payload").with_details(json!({
                    "formErrors": ["Expected object"], "fieldErrors": {}
                })),
            )
        }
    };
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let workflow = workflow_id(&req)?;
    let (org, user) = (ctx.org_id, ctx.user.user_id);
    let route = route_of(&req);
    let run = match runs.create(&ctx, workflow, input).await {
        Ok(run) => run,
        Err(e) => {
            if let RunError::QueueUnavailable { run_id, reason } = &e {
                tracing::error!(event = "queue_unavailable", userId = %user, orgId = %org, workflowId = %workflow, runId = %run_id,
                    requestId = %request_id(&req), path = %route, method = %req.method(), error = %reason, "run queue unavailable");
            }
            return Err(e.into());
        }
    };
    tracing::info!(event = "workflow_run_enqueued", userId = %user, orgId = %org, workflowId = %workflow, runId = %run.id,
        requestId = %request_id(&req), path = %route, method = %req.method(), "run enqueued");
    Ok(HttpResponse::Created().json(json!({ "run": RunView::from(&run) })))
}

/// The workflow's runs, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}/runs", operation_id = "listRuns", tag = "runs",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses(
        (status = 200, description = "A page of runs", body = RunList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn list(runs: web::Data<Runs>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&req).await?;
    let page = Page::parse(req.query_string(), 50, 200)?;
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let workflow = workflow_id(&req)?;
    let (list, next) = runs.list(&ctx, workflow, page).await?;
    let views: Vec<RunView> = list.iter().map(RunView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "runs": views, "nextCursor": next })))
}

/// One run.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}", operation_id = "getRun", tag = "runs",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)"), ("runId" = Uuid, Path, description = "The run")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, response = NotFound),
    )
)]
async fn get(
    runs: web::Data<Runs>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let workflow = workflow_id(&req)?;
    let run = run_id(&req)?;
    let run = runs.get(&ctx, workflow, run).await?;
    Ok(HttpResponse::Ok().json(json!({ "run": RunView::from(&run) })))
}

/// The run's events in order, a page at a time.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events", operation_id = "listRunEvents", tag = "runs",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)"), ("runId" = Uuid, Path, description = "The run"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 200)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses(
        (status = 200, description = "A page of events", body = RunEventList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn events(runs: web::Data<Runs>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&req).await?;
    let page = Page::parse(req.query_string(), 200, 500)?;
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let workflow = workflow_id(&req)?;
    let run = run_id(&req)?;
    let (list, next) = runs.events(&ctx, workflow, run, page).await?;
    let views: Vec<EventView> = list.iter().map(EventView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": views, "nextCursor": next })))
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST …/runs`.
#[derive(utoipa::ToSchema)]
pub struct CreateRunRequest {
    /// The run's input, any JSON.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

#[derive(utoipa::ToSchema)]
pub struct RunBody {
    pub run: RunView,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEventList {
    pub events: Vec<EventView>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}
