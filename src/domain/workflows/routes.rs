//! `/v1/orgs/{orgId}/workflows…` (spec 2.4, 2.5; runs and events live with the runs domain). Each
//! handler checks in the spec's order: the first failing check answers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use super::cursor::{self, Page};
use super::dsl::{self, DslError, WorkflowDsl};
use super::model::{WorkflowRow, WorkflowView};
use super::service::{self, DraftUpdate};
use crate::app::state::AppState;
use crate::domain::auth::extract::AuthUser;
use crate::domain::orgs::model::Role;
use crate::domain::orgs::{self, OrgCtx};
use crate::platform::http::{path_uuid, ApiError, Form, JsonBody};

const ROLE_MESSAGE: &str = "Role is not allowed to manage workflows";
const LIST_DEFAULT: i64 = 50;
const LIST_MAX: i64 = 200;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/workflows", web::post().to(create))
        .route("/v1/orgs/{orgId}/workflows", web::get().to(list))
        .route(
            "/v1/orgs/{orgId}/workflows/{workflowId}",
            web::get().to(get),
        )
        .route(
            "/v1/orgs/{orgId}/workflows/{workflowId}",
            web::put().to(update),
        )
        .route(
            "/v1/orgs/{orgId}/workflows/{workflowId}/publish",
            web::post().to(publish),
        )
        .route(
            "/v1/orgs/{orgId}/workflows/{workflowId}/drafts",
            web::post().to(clone_draft),
        )
        .route(
            "/v1/orgs/{orgId}/workflows/{workflowId}/revisions",
            web::get().to(revisions),
        );
}

/// A non-UUID id names no row: 404 like an unknown one (Improve; the original answered 500).
fn workflow_id(req: &HttpRequest) -> Result<Uuid, ApiError> {
    path_uuid(req, "workflowId", service::not_found)
}

fn one(row: &WorkflowRow) -> Value {
    json!({ "workflow": row.view() })
}

fn many(rows: &[WorkflowRow]) -> Vec<WorkflowView> {
    rows.iter().map(WorkflowRow::view).collect()
}

/// The `dsl` field: schema failures are recorded on the form (they join the other field errors); a graph
/// constraint failure is returned for the caller to answer at its place in the check order.
fn dsl_field(
    f: &mut Form<'_>,
    body: &Value,
    required: bool,
) -> Option<Result<WorkflowDsl, DslError>> {
    if !body.is_object() {
        return None;
    }
    let Some(doc) = body.get("dsl") else {
        if required {
            f.invalid().field("dsl", "Required");
        }
        return None;
    };
    match dsl::parse(doc) {
        Err(DslError::Invalid(messages)) => {
            for m in messages {
                f.invalid().field("dsl", m);
            }
            None
        }
        parsed => Some(parsed),
    }
}

async fn create(
    state: web::Data<AppState>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, ROLE_MESSAGE)?;
    let mut f = Form::new(&body.0);
    let name = f.string("name", 2, 120);
    let doc = dsl_field(&mut f, &body.0, true);
    f.finish("Invalid workflow payload")?;
    let (Some(name), Some(doc)) = (name, doc) else {
        return Err(ApiError::bad_request("Invalid workflow payload"));
    };
    let doc = doc.map_err(service::dsl_error)?;
    let row = service::create(&state, &ctx, name, doc).await?;
    Ok(HttpResponse::Created().json(one(&row)))
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    _user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    // The query is validated before the org context (spec 2.5).
    let page = Page::parse(req.query_string(), LIST_DEFAULT, LIST_MAX)?;
    let ctx = orgs::context::resolve(&req).await?;
    let (rows, next) = service::list(&state, &ctx, page).await?;
    Ok(HttpResponse::Ok().json(json!({ "workflows": many(&rows), "nextCursor": next })))
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    let id = workflow_id(&req)?;
    let row = service::find_in_org(&state, &ctx, id)
        .await?
        .ok_or_else(service::not_found)?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, ROLE_MESSAGE)?;
    let mut f = Form::new(&body.0);
    f.reject_unknown(&["name", "dsl", "editorState"]);
    let name = f.opt_string("name", 2, 120);
    let doc = dsl_field(&mut f, &body.0, false);
    let editor_state = body.0.get("editorState").cloned();
    f.finish("Invalid workflow update payload")?;
    let id = workflow_id(&req)?;
    let update = DraftUpdate {
        name,
        dsl: doc,
        editor_state,
    };
    let row = service::update_draft(&state, &ctx, id, update).await?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

/// The body is ignored, but still parsed as the framework would (malformed JSON is a 400).
async fn publish(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
    _body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, ROLE_MESSAGE)?;
    let id = workflow_id(&req)?;
    let row = service::publish(&state, &ctx, id).await?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

async fn clone_draft(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
    _body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, ROLE_MESSAGE)?;
    let id = workflow_id(&req)?;
    let row = service::clone_draft(&state, &ctx, id).await?;
    Ok(HttpResponse::Created().json(one(&row)))
}

async fn revisions(
    state: web::Data<AppState>,
    req: HttpRequest,
    _user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let query = cursor::query_map(req.query_string(), &["limit"])?;
    let limit = cursor::parse_limit(&query, LIST_DEFAULT, LIST_MAX)?;
    let ctx = orgs::context::resolve(&req).await?;
    let id = req
        .match_info()
        .get("workflowId")
        .and_then(crate::platform::http::parse_uuid);
    let rows = service::revisions(&state, &ctx, id, limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "workflows": many(&rows) })))
}
