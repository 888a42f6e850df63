//! `/v1/orgs/{orgId}/workflows…` (spec 2.4, 2.5; runs and events live with the runs domain). Each
//! handler checks in the spec's order: the first failing check answers.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::dsl::{self, DslError, WorkflowDsl};
use super::model::{WorkflowRow, WorkflowView};
use super::{DraftUpdate, WorkflowError, Workflows};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::extract::{resolve_org, AuthUser};
use crate::domain::common::ids::WorkflowId;
use crate::domain::common::page::{self, Page};
use crate::platform::http::openapi::{BadRequest, ErrorBody};
use crate::platform::http::{parse_uuid, path_uuid, ApiError, Form, JsonBody};

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

fn not_found() -> ApiError {
    ApiError::not_found("Workflow not found")
}

/// A DSL failure as the spec's 400: schema messages under `fieldErrors.dsl`; a v3 graph constraint with
/// its own `code` and `details.issues` (spec 1.7).
pub fn dsl_error(e: DslError) -> ApiError {
    match e {
        DslError::Invalid(messages) => ApiError::bad_request("Invalid workflow payload")
            .with_details(json!({ "formErrors": [], "fieldErrors": { "dsl": messages } })),
        DslError::TooLarge { limit, max, actual } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "WORKFLOW_TOO_LARGE",
            format!("Workflow exceeds the limit of {max} {limit} ({actual})"),
        )
        .with_details(json!({ "limit": limit, "max": max, "actual": actual })),
        DslError::Graph {
            code,
            message,
            node_id,
            edge_id,
        } => {
            let mut issue = json!({ "code": code, "message": message });
            if let Some(obj) = issue.as_object_mut() {
                if let Some(n) = node_id {
                    obj.insert("nodeId".into(), Value::String(n));
                }
                if let Some(e) = edge_id {
                    obj.insert("edgeId".into(), Value::String(e));
                }
            }
            ApiError::new(StatusCode::BAD_REQUEST, code, message)
                .with_details(json!({ "issues": [issue] }))
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::NotFound => not_found(),
            WorkflowError::NotDraft => ApiError::conflict("Only draft workflows can be updated"),
            WorkflowError::NotPublished => {
                ApiError::conflict("Only published workflows can be cloned into a draft")
            }
            WorkflowError::RevisionConflict => {
                ApiError::conflict("Could not create a new draft revision")
            }
            WorkflowError::Dsl(e) => dsl_error(e),
            WorkflowError::Db(e) => e.into(),
        }
    }
}

/// A non-UUID id names no row: 404 like an unknown one (Improve; the original answered 500).
fn workflow_id(req: &HttpRequest) -> Result<WorkflowId, ApiError> {
    path_uuid(req, "workflowId", not_found).map(WorkflowId::from)
}

fn one(row: &WorkflowRow) -> Value {
    json!({ "workflow": row.view() })
}

fn many(rows: &[WorkflowRow]) -> Vec<WorkflowView> {
    rows.iter().map(WorkflowRow::view).collect()
}

/// The body's `dsl`, parsed (size limits first) on the blocking pool: a large document must not hold
/// an HTTP worker thread. `None` when the body has no `dsl`.
async fn parse_dsl(
    workflows: &Workflows,
    body: &Value,
) -> Result<Option<Result<WorkflowDsl, DslError>>, ApiError> {
    let Some(doc) = body.as_object().and_then(|o| o.get("dsl")).cloned() else {
        return Ok(None);
    };
    let limits = workflows.limits();
    web::block(move || dsl::parse_within(&doc, &limits))
        .await
        .map(Some)
        .map_err(ApiError::internal_from)
}

/// The `dsl` field: schema failures are recorded on the form (they join the other field errors); a size
/// or graph constraint failure is returned for the caller to answer at its place in the check order.
fn dsl_field(
    f: &mut Form<'_>,
    body: &Value,
    parsed: Option<Result<WorkflowDsl, DslError>>,
    required: bool,
) -> Option<Result<WorkflowDsl, DslError>> {
    if !body.is_object() {
        return None;
    }
    let Some(parsed) = parsed else {
        if required {
            f.invalid().field("dsl", "Required");
        }
        return None;
    };
    match parsed {
        Err(DslError::Invalid(messages)) => {
            for m in messages {
                f.invalid().field("dsl", m);
            }
            None
        }
        parsed => Some(parsed),
    }
}

/// Creates a workflow as a draft (owner/admin). The DSL is validated (size limits, schema, graph).
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/workflows", operation_id = "createWorkflow", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body = CreateWorkflowRequest,
    responses(
        (status = 201, description = "Created", body = WorkflowBody),
        (status = 400, description = "Invalid payload, `WORKFLOW_TOO_LARGE`, or a graph constraint's code with `details.issues`", body = ErrorBody),
    )
)]
async fn create(
    workflows: web::Data<Workflows>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    let name = f.string("name", 2, 120);
    let parsed = parse_dsl(&workflows, &body.0).await?;
    let doc = dsl_field(&mut f, &body.0, parsed, true);
    f.finish("Invalid workflow payload")?;
    let (Some(name), Some(doc)) = (name, doc) else {
        return Err(ApiError::bad_request("Invalid workflow payload"));
    };
    let doc = doc.map_err(dsl_error)?;
    let row = workflows.create(&ctx, name, doc).await?;
    Ok(HttpResponse::Created().json(one(&row)))
}

/// The org's workflows, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows", operation_id = "listWorkflows", tag = "workflows",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of workflows", body = WorkflowList),
        (status = 400, response = BadRequest),
    )
)]
async fn list(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    _user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    // The query is validated before the org context (spec 2.5).
    let page = Page::parse(req.query_string(), LIST_DEFAULT, LIST_MAX)?;
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let (rows, next) = workflows.list(&ctx, page).await?;
    Ok(HttpResponse::Ok().json(json!({ "workflows": many(&rows), "nextCursor": next })))
}

/// One workflow revision.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}", operation_id = "getWorkflow", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)")),
    responses(
        (status = 200, description = "The workflow", body = WorkflowBody),
        (status = 404, description = "Workflow not found", body = ErrorBody),
    )
)]
async fn get(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = workflow_id(&req)?;
    let row = workflows.get(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

/// Updates a draft (owner/admin); unknown keys are a 400.
#[utoipa::path(
    put, path = "/v1/orgs/{orgId}/workflows/{workflowId}", operation_id = "updateWorkflow", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)")),
    request_body = UpdateWorkflowRequest,
    responses(
        (status = 200, description = "Updated", body = WorkflowBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "Workflow not found", body = ErrorBody),
        (status = 409, description = "Only drafts can be updated", body = ErrorBody),
    )
)]
async fn update(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    f.reject_unknown(&["name", "dsl", "editorState"]);
    let name = f.opt_string("name", 2, 120);
    let parsed = parse_dsl(&workflows, &body.0).await?;
    let doc = dsl_field(&mut f, &body.0, parsed, false);
    let editor_state = body.0.get("editorState").cloned();
    f.finish("Invalid workflow update payload")?;
    let id = workflow_id(&req)?;
    let update = DraftUpdate {
        name,
        dsl: doc,
        editor_state,
    };
    let row = workflows.update_draft(&ctx, id, update).await?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

/// The body is ignored, but still parsed as the framework would (malformed JSON is a 400).
/// Publishes a draft (owner/admin): it becomes immutable and runnable. The body is ignored.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/workflows/{workflowId}/publish", operation_id = "publishWorkflow", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)")),
    request_body(content = Option<Object>, description = "Ignored"),
    responses(
        (status = 200, description = "Published", body = WorkflowBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "Workflow not found", body = ErrorBody),
    )
)]
async fn publish(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    ctx: OrgCtx,
    _body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = workflow_id(&req)?;
    let row = workflows.publish(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(one(&row)))
}

/// Clones a published revision into the next draft revision (owner/admin). The body is ignored.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/workflows/{workflowId}/drafts", operation_id = "createWorkflowDraft", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)")),
    request_body(content = Option<Object>, description = "Ignored"),
    responses(
        (status = 201, description = "The new draft", body = WorkflowBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "Workflow not found", body = ErrorBody),
        (status = 409, description = "Not published, or the revision could not be created", body = ErrorBody),
    )
)]
async fn clone_draft(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    ctx: OrgCtx,
    _body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = workflow_id(&req)?;
    let row = workflows.clone_draft(&ctx, id).await?;
    Ok(HttpResponse::Created().json(one(&row)))
}

/// Every revision of the workflow's family, newest first.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/workflows/{workflowId}/revisions", operation_id = "listWorkflowRevisions", tag = "workflows",
    params(("orgId" = Uuid, Path, description = "The organization"), ("workflowId" = Uuid, Path, description = "The workflow (revision)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "The revisions", body = WorkflowRevisions),
        (status = 400, response = BadRequest),
    )
)]
async fn revisions(
    workflows: web::Data<Workflows>,
    req: HttpRequest,
    _user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let query = page::query_map(req.query_string(), &["limit"])?;
    let limit = page::parse_limit(&query, LIST_DEFAULT, LIST_MAX)?;
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let id = req
        .match_info()
        .get("workflowId")
        .and_then(parse_uuid)
        .map(WorkflowId::from);
    let rows = workflows.revisions(&ctx, id, limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "workflows": many(&rows) })))
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/orgs/{orgId}/workflows`.
#[derive(utoipa::ToSchema)]
pub struct CreateWorkflowRequest {
    #[schema(min_length = 2, max_length = 120)]
    pub name: String,
    /// The workflow DSL (v2 or v3; see the workflows spec).
    #[schema(value_type = Object)]
    pub dsl: Value,
}

/// `PUT /v1/orgs/{orgId}/workflows/{workflowId}`: any of the fields.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWorkflowRequest {
    #[schema(min_length = 2, max_length = 120)]
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub dsl: Option<Value>,
    /// The editor's state, stored as given; `null` clears it.
    #[schema(value_type = Option<Object>)]
    pub editor_state: Option<Value>,
}

#[derive(utoipa::ToSchema)]
pub struct WorkflowBody {
    pub workflow: WorkflowView,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
pub struct WorkflowRevisions {
    pub workflows: Vec<WorkflowView>,
}
