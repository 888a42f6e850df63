//! `/v1/orgs/{orgId}/workflows/{workflowId}/runs…`: create (insert + enqueue, or 503 with no row left
//! behind), list, get, and the run's events.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde_json::{json, Value};

use super::intake::{CreateError, CreateRun};
use super::model::{EventView, RunView};
use super::store;
use crate::app::state::AppState;
use crate::domain::auth::extract::AuthUser;
use crate::domain::orgs::{self, OrgCtx};
use crate::domain::workflows::cursor::{self, Page};
use crate::platform::db;
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

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    // Auth first, then the body (before org context, as the original), then the org.
    AuthUser::extract(&req).await?;
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
    let ctx = orgs::context::resolve(&req).await?;
    let workflow_id = path_uuid(&req, "workflowId", not_found)?;
    let (org, user) = (ctx.org_id, ctx.user.user_id);
    let created = state
        .runs
        .create(CreateRun {
            org,
            user,
            workflow: workflow_id,
            input,
            max_attempts: state.config.workflows.retry_attempts,
        })
        .await;
    let route = route_of(&req);
    let run = match created {
        Ok(run) => run,
        Err(CreateError::NotFound) => return Err(not_found()),
        Err(CreateError::NotPublished) => {
            return Err(ApiError::conflict("Workflow is not published"))
        }
        Err(CreateError::Api(e)) => return Err(e),
        Err(CreateError::QueueUnavailable { run_id, reason }) => {
            tracing::error!(event = "queue_unavailable", userId = %user, orgId = %org, workflowId = %workflow_id, runId = %run_id,
                requestId = %request_id(&req), path = %route, method = %req.method(), error = %reason, "run queue unavailable");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_UNAVAILABLE",
                "Workflow queue is unavailable",
            ));
        }
    };
    tracing::info!(event = "workflow_run_enqueued", userId = %user, orgId = %org, workflowId = %workflow_id, runId = %run.id,
        requestId = %request_id(&req), path = %route, method = %req.method(), "run enqueued");
    Ok(HttpResponse::Created().json(json!({ "run": RunView::from(&run) })))
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    AuthUser::extract(&req).await?;
    let page = Page::parse(req.query_string(), 50, 200)?;
    let ctx = orgs::context::resolve(&req).await?;
    let workflow_id = path_uuid(&req, "workflowId", not_found)?;
    let runs = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::workflow_state(c, workflow_id)
                .await?
                .ok_or_else(not_found)?;
            Ok::<_, ApiError>(store::list_runs(c, workflow_id, page.after, page.limit).await?)
        }
        .scope_boxed()
    })
    .await?;
    let next = cursor::next_cursor(&runs, |r| (r.created_at, r.id));
    let views: Vec<RunView> = runs.iter().map(RunView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "runs": views, "nextCursor": next })))
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    let workflow_id = path_uuid(&req, "workflowId", not_found)?;
    let run_id = path_uuid(&req, "runId", not_found)?;
    let run = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::get_run_of(c, workflow_id, run_id)
                .await
                .map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(json!({ "run": RunView::from(&run) })))
}

async fn events(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    AuthUser::extract(&req).await?;
    let page = Page::parse(req.query_string(), 200, 500)?;
    let ctx = orgs::context::resolve(&req).await?;
    let workflow_id = path_uuid(&req, "workflowId", not_found)?;
    let run_id = path_uuid(&req, "runId", not_found)?;
    let events = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::get_run_of(c, workflow_id, run_id)
                .await?
                .ok_or_else(not_found)?;
            // The cursor names the last event seen; events are ordered by insertion (`seq`).
            let after = match page.after {
                Some((_, id)) => store::event_seq(c, run_id, id).await?,
                None => None,
            };
            Ok::<_, ApiError>(store::list_events(c, run_id, after, page.limit).await?)
        }
        .scope_boxed()
    })
    .await?;
    let next = cursor::next_cursor(&events, |e| (e.created_at, e.id));
    let views: Vec<EventView> = events.iter().map(EventView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": views, "nextCursor": next })))
}
