//! `/v1/orgs/{orgId}/workflows/{workflowId}/runs…`: create (insert + enqueue, or 503 with no row left
//! behind), list, get, the run's events, and their live stream (Server-Sent Events).

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::live::{Chunk, EventStream};
use super::model::{Event, EventView, RunView};
use super::{RunError, Runs};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::extract::{authenticate, resolve_org};
use crate::domain::common::ids::{RunId, WorkflowId};
use crate::domain::common::page::{self, Page};
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
    )
    .route(
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events/stream",
        web::get().to(stream),
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
            RunError::TooManyStreams => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_STREAMS",
                    "Too many live event streams, try again later",
                );
                e.retry_after = Some(5);
                e
            }
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

/// `GET …/runs/{runId}/events/stream`: the events as Server-Sent Events, each with `id:` = the paged
/// API's cursor of that event and `data:` = the event object; then `event: end` with the run's status,
/// and the stream closes. `Last-Event-ID` (or `?cursor=`) resumes after that event. Same access as the
/// paged route.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events/stream",
    operation_id = "streamRunEvents", tag = "runs",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("workflowId" = Uuid, Path, description = "The workflow"),
        ("runId" = Uuid, Path, description = "The run"),
        ("cursor" = Option<String>, Query, description = "Resume after this event (as `Last-Event-ID`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "Server-Sent Events: `id:` the event's cursor, `data:` the event object; `event: end` with the run's status ends it"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 429, description = "`TOO_MANY_STREAMS`", body = ErrorBody),
    )
)]
async fn stream(runs: web::Data<Runs>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&req).await?;
    let page = Page::parse(req.query_string(), 200, 500)?;
    let last = match req.headers().get("last-event-id") {
        Some(v) => page::decode(v.to_str().unwrap_or_default())?,
        None => page.after,
    };
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let workflow = workflow_id(&req)?;
    let run = run_id(&req)?;
    let stream = runs.stream(&ctx, workflow, run, last).await?;
    let body = futures_util::stream::unfold(stream, |mut s: EventStream| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(sse(&chunk)), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // Proxies that buffer responses (nginx) pass this one through as it comes.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// One chunk in the event-stream format. Event JSON is compact (one line), so one `data:` line each.
fn sse(chunk: &Chunk) -> Bytes {
    let mut out = String::new();
    match chunk {
        Chunk::Events(events) => {
            for e in events {
                out.push_str(&sse_event(e));
            }
        }
        Chunk::Heartbeat => out.push_str(": keepalive\n\n"),
        Chunk::End(status) => {
            out.push_str("event: end\ndata: ");
            out.push_str(&json!({ "status": status }).to_string());
            out.push_str("\n\n");
        }
    }
    Bytes::from(out)
}

fn sse_event(e: &Event) -> String {
    let id = page::encode(e.created_at, e.id.uuid());
    let data = serde_json::to_string(&EventView::from(e)).unwrap_or_else(|_| "{}".into());
    format!("id: {id}\ndata: {data}\n\n")
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
