//! Workflow service functions: each owns one tenant transaction and answers in spec terms (404, 409).

use actix_web::http::StatusCode;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::cursor::{Page, Position};
use super::dsl::{DslError, WorkflowDsl};
use super::model::{DraftChanges, NewWorkflow, WorkflowRow, STATUS_DRAFT};
use super::store;
use crate::app::state::AppState;
use crate::domain::orgs::OrgCtx;
use crate::platform::db;
use crate::platform::http::ApiError;

/// Attempts at picking the next free revision when clones race.
const CLONE_ATTEMPTS: usize = 3;

pub fn not_found() -> ApiError {
    ApiError::not_found("Workflow not found")
}

/// A DSL failure as the spec's 400: schema messages under `fieldErrors.dsl`; a v3 graph constraint with
/// its own `code` and `details.issues` (spec 1.7).
pub fn dsl_error(e: DslError) -> ApiError {
    match e {
        DslError::Invalid(messages) => ApiError::bad_request("Invalid workflow payload")
            .with_details(json!({ "formErrors": [], "fieldErrors": { "dsl": messages } })),
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

/// The row `id` of the caller's org, if any (drafts and published alike).
pub async fn find_in_org(
    state: &AppState,
    ctx: &OrgCtx,
    id: Uuid,
) -> Result<Option<WorkflowRow>, ApiError> {
    let org = ctx.org_id;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move { store::find(c, org, id).await.map_err(ApiError::from) }.scope_boxed()
    })
    .await
}

/// Revision 1 of a new family, as a draft.
pub async fn create(
    state: &AppState,
    ctx: &OrgCtx,
    name: String,
    doc: WorkflowDsl,
) -> Result<WorkflowRow, ApiError> {
    let (org, user, id) = (ctx.org_id, ctx.user.user_id, Uuid::new_v4());
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            let new = NewWorkflow {
                id,
                organization_id: org,
                family_id: id,
                revision: 1,
                source_workflow_id: None,
                name: &name,
                status: STATUS_DRAFT,
                version: 1,
                dsl_doc: &doc.normalized,
                editor_state: None,
                created_by_user_id: user,
            };
            store::insert(c, &new).await.map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await
}

/// The org's rows, newest first, and the cursor of the last one.
pub async fn list(
    state: &AppState,
    ctx: &OrgCtx,
    page: Page,
) -> Result<(Vec<WorkflowRow>, Option<String>), ApiError> {
    let org = ctx.org_id;
    let rows = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::list(c, org, page.limit, page.after)
                .await
                .map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await?;
    let next = super::cursor::next_cursor(&rows, |r: &WorkflowRow| -> Position {
        (r.created_at, r.id)
    });
    Ok((rows, next))
}

pub async fn revisions(
    state: &AppState,
    ctx: &OrgCtx,
    id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<WorkflowRow>, ApiError> {
    // A malformed id names no row: like an unknown one, it has no revisions.
    let Some(id) = id else {
        return Ok(Vec::new());
    };
    let org = ctx.org_id;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::revisions(c, org, id, limit)
                .await
                .map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await
}

/// A validated draft update. The DSL's graph-constraint failure, if any, is answered only after the row
/// was found to be a draft (spec order).
pub struct DraftUpdate {
    pub name: Option<String>,
    pub dsl: Option<Result<WorkflowDsl, DslError>>,
    pub editor_state: Option<Value>,
}

pub async fn update_draft(
    state: &AppState,
    ctx: &OrgCtx,
    id: Uuid,
    update: DraftUpdate,
) -> Result<WorkflowRow, ApiError> {
    let org = ctx.org_id;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            let row = store::find(c, org, id).await?.ok_or_else(not_found)?;
            if !row.is_draft() {
                return Err(ApiError::conflict("Only draft workflows can be updated"));
            }
            let dsl = match update.dsl {
                None => None,
                Some(Ok(doc)) => Some(doc.normalized),
                Some(Err(e)) => return Err(dsl_error(e)),
            };
            let changes = DraftChanges {
                name: update.name,
                dsl,
                editor_state: update
                    .editor_state
                    .map(|v| if v.is_null() { None } else { Some(v) }),
            };
            // Guarded by `status = 'draft'`: a publish that won the race leaves nothing to update.
            store::update_draft(c, org, id, &changes)
                .await?
                .ok_or_else(|| ApiError::conflict("Only draft workflows can be updated"))
        }
        .scope_boxed()
    })
    .await
}

pub async fn publish(state: &AppState, ctx: &OrgCtx, id: Uuid) -> Result<WorkflowRow, ApiError> {
    let org = ctx.org_id;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move { store::publish(c, org, id).await?.ok_or_else(not_found) }.scope_boxed()
    })
    .await
}

/// Clones a published row into the family's next draft revision.
pub async fn clone_draft(
    state: &AppState,
    ctx: &OrgCtx,
    source_id: Uuid,
) -> Result<WorkflowRow, ApiError> {
    let (org, user) = (ctx.org_id, ctx.user.user_id);
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            let source = store::find(c, org, source_id)
                .await?
                .ok_or_else(not_found)?;
            if !source.is_published() {
                return Err(ApiError::conflict(
                    "Only published workflows can be cloned into a draft",
                ));
            }
            let id = Uuid::new_v4();
            for _ in 0..CLONE_ATTEMPTS {
                let next = store::max_revision(c, org, source.family_id)
                    .await?
                    .unwrap_or(0)
                    + 1;
                let new = NewWorkflow {
                    id,
                    organization_id: org,
                    family_id: source.family_id,
                    revision: next,
                    source_workflow_id: Some(source.id),
                    name: &source.name,
                    status: STATUS_DRAFT,
                    version: 1,
                    dsl_doc: &source.dsl_doc,
                    editor_state: source.editor_state.as_ref(),
                    created_by_user_id: user,
                };
                // A concurrent clone took `next`: the next statement sees its row and picks again.
                match store::insert_revision(c, &new).await {
                    Ok(Some(row)) => return Ok(row),
                    Ok(None) => continue,
                    Err(e) => return Err(insert_failed(e)),
                }
            }
            Err(ApiError::conflict("Could not create a new draft revision"))
        }
        .scope_boxed()
    })
    .await
}

fn insert_failed(e: DieselError) -> ApiError {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::CheckViolation,
            _,
        ) => ApiError::conflict("Could not create a new draft revision"),
        other => ApiError::from(other),
    }
}
