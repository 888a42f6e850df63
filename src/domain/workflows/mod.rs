//! Workflows: the DSL, revisioned workflow rows and their REST endpoints. The service owns one tenant
//! transaction per call and answers in domain terms ([`WorkflowError`]).

pub mod dsl;
pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use crate::domain::audit::{self, Action, Entry};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde_json::Value;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::WorkflowId;
use crate::domain::common::page::{next_cursor, Page, Position};
use crate::platform::db::{self, PgPool};
use dsl::{DslError, Limits, WorkflowDsl};
pub use error::WorkflowError;
use model::{DraftChanges, NewWorkflow, WorkflowRow, WorkflowStatus};

/// Attempts at picking the next free revision when clones race.
const CLONE_ATTEMPTS: usize = 3;

/// A validated draft update. The DSL's graph-constraint failure, if any, is answered only after the row
/// was found to be a draft (spec order).
pub struct DraftUpdate {
    pub name: Option<String>,
    pub dsl: Option<Result<WorkflowDsl, DslError>>,
    pub editor_state: Option<Value>,
}

pub struct Workflows {
    db: PgPool,
    limits: Limits,
}

impl Workflows {
    /// `limits` bound the documents this service accepts.
    pub fn new(db: PgPool, limits: Limits) -> Self {
        Self { db, limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The row `id` of the caller's org (drafts and published alike).
    pub async fn get(&self, ctx: &OrgCtx, id: WorkflowId) -> Result<WorkflowRow, WorkflowError> {
        let org = ctx.org_id;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { store::find(c, org, id).await.map_err(WorkflowError::from) }.scope_boxed()
        })
        .await?
        .ok_or(WorkflowError::NotFound)
    }

    /// Revision 1 of a new family, as a draft.
    pub async fn create(
        &self,
        ctx: &OrgCtx,
        name: String,
        doc: WorkflowDsl,
    ) -> Result<WorkflowRow, WorkflowError> {
        let (org, user, id) = (ctx.org_id, ctx.user.user_id, WorkflowId::random());
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let new = NewWorkflow {
                    id,
                    organization_id: org,
                    family_id: id,
                    revision: 1,
                    source_workflow_id: None,
                    name: &name,
                    status: WorkflowStatus::Draft,
                    version: 1,
                    dsl_doc: &doc.normalized,
                    editor_state: None,
                    created_by_user_id: user,
                };
                store::insert(c, &new).await.map_err(WorkflowError::from)
            }
            .scope_boxed()
        })
        .await
    }

    /// The org's rows, newest first, and the cursor of the last one.
    pub async fn list(
        &self,
        ctx: &OrgCtx,
        page: Page,
    ) -> Result<(Vec<WorkflowRow>, Option<String>), WorkflowError> {
        let org = ctx.org_id;
        let rows = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::list(c, org, page.limit, page.after)
                    .await
                    .map_err(WorkflowError::from)
            }
            .scope_boxed()
        })
        .await?;
        let next = next_cursor(&rows, |r: &WorkflowRow| -> Position {
            (r.created_at, r.id.uuid())
        });
        Ok((rows, next))
    }

    /// Every revision of the family of row `id`; a malformed id (`None`) names no row and has none.
    pub async fn revisions(
        &self,
        ctx: &OrgCtx,
        id: Option<WorkflowId>,
        limit: i64,
    ) -> Result<Vec<WorkflowRow>, WorkflowError> {
        let Some(id) = id else {
            return Ok(Vec::new());
        };
        let org = ctx.org_id;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::revisions(c, org, id, limit)
                    .await
                    .map_err(WorkflowError::from)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn update_draft(
        &self,
        ctx: &OrgCtx,
        id: WorkflowId,
        update: DraftUpdate,
    ) -> Result<WorkflowRow, WorkflowError> {
        let org = ctx.org_id;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let row = store::find(c, org, id)
                    .await?
                    .ok_or(WorkflowError::NotFound)?;
                if !row.is_draft() {
                    return Err(WorkflowError::NotDraft);
                }
                let dsl = match update.dsl {
                    None => None,
                    Some(Ok(doc)) => Some(doc.normalized),
                    Some(Err(e)) => return Err(WorkflowError::Dsl(e)),
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
                    .ok_or(WorkflowError::NotDraft)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn publish(
        &self,
        ctx: &OrgCtx,
        id: WorkflowId,
    ) -> Result<WorkflowRow, WorkflowError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let row = store::publish(c, org, id)
                    .await?
                    .ok_or(WorkflowError::NotFound)?;
                let entry = Entry::by(user, org, Action::WorkflowPublish, "workflow")
                    .target(id)
                    .details(serde_json::json!({
                        "name": row.name, "familyId": row.family_id, "revision": row.revision
                    }));
                audit::record(c, &entry).await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }

    /// Clones a published row into the family's next draft revision.
    pub async fn clone_draft(
        &self,
        ctx: &OrgCtx,
        source_id: WorkflowId,
    ) -> Result<WorkflowRow, WorkflowError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let source = store::find(c, org, source_id)
                    .await?
                    .ok_or(WorkflowError::NotFound)?;
                if !source.is_published() {
                    return Err(WorkflowError::NotPublished);
                }
                let id = WorkflowId::random();
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
                        status: WorkflowStatus::Draft,
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
                Err(WorkflowError::RevisionConflict)
            }
            .scope_boxed()
        })
        .await
    }
}

fn insert_failed(e: DieselError) -> WorkflowError {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::CheckViolation,
            _,
        ) => WorkflowError::RevisionConflict,
        other => other.into(),
    }
}
