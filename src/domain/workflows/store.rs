//! Queries for `workflows`, run inside a tenant transaction (RLS) and filtered by org explicitly as well.

use diesel::dsl::{now, sql};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::model::{DraftChanges, NewWorkflow, WorkflowRow, WorkflowStatus};
use crate::domain::common::ids::{OrgId, WorkflowId};
use crate::domain::common::page::Position;
use crate::platform::db::schema::workflows as wf;

pub async fn find(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: WorkflowId,
) -> QueryResult<Option<WorkflowRow>> {
    wf::table
        .filter(wf::organization_id.eq(org))
        .filter(wf::id.eq(id))
        .select(WorkflowRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewWorkflow<'_>,
) -> QueryResult<WorkflowRow> {
    diesel::insert_into(wf::table)
        .values(new)
        .returning(WorkflowRow::as_returning())
        .get_result(conn)
        .await
}

/// Inserts unless `(org, family, revision)` is taken (`None`): the caller picks the next revision again.
pub async fn insert_revision(
    conn: &mut AsyncPgConnection,
    new: &NewWorkflow<'_>,
) -> QueryResult<Option<WorkflowRow>> {
    diesel::insert_into(wf::table)
        .values(new)
        .on_conflict((wf::organization_id, wf::family_id, wf::revision))
        .do_nothing()
        .returning(WorkflowRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn max_revision(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    family: WorkflowId,
) -> QueryResult<Option<i32>> {
    wf::table
        .filter(wf::organization_id.eq(org))
        .filter(wf::family_id.eq(family))
        .select(diesel::dsl::max(wf::revision))
        .first(conn)
        .await
}

/// One page of the org's rows, newest first, strictly after `after` in that order.
pub async fn list(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    limit: i64,
    after: Option<Position>,
) -> QueryResult<Vec<WorkflowRow>> {
    let mut q = wf::table
        .filter(wf::organization_id.eq(org))
        .select(WorkflowRow::as_select())
        .order((wf::created_at.desc(), wf::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some((t, id)) = after {
        // A row-value comparison: one index range scan on (organization_id, created_at DESC, id DESC).
        q = q.filter(
            sql::<Bool>("(workflows.created_at, workflows.id) < (")
                .bind::<Timestamptz, _>(t)
                .sql(", ")
                .bind::<SqlUuid, _>(id)
                .sql(")"),
        );
    }
    q.load(conn).await
}

/// Every revision in the family of row `id` (none when `id` is unknown), newest revision first.
pub async fn revisions(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: WorkflowId,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    let family: Option<WorkflowId> = wf::table
        .filter(wf::organization_id.eq(org))
        .filter(wf::id.eq(id))
        .select(wf::family_id)
        .first(conn)
        .await
        .optional()?;
    let Some(family) = family else {
        return Ok(Vec::new());
    };
    wf::table
        .filter(wf::organization_id.eq(org))
        .filter(wf::family_id.eq(family))
        .select(WorkflowRow::as_select())
        .order((wf::revision.desc(), wf::created_at.desc(), wf::id.desc()))
        .limit(limit)
        .load(conn)
        .await
}

/// Applies `changes` to a draft, bumping `version`. `None` when the row is not (or no longer) a draft.
pub async fn update_draft(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: WorkflowId,
    changes: &DraftChanges,
) -> QueryResult<Option<WorkflowRow>> {
    #[derive(AsChangeset)]
    #[diesel(table_name = wf)]
    struct Set<'a> {
        name: Option<&'a str>,
        dsl_doc: Option<&'a serde_json::Value>,
        editor_state: Option<Option<&'a serde_json::Value>>,
    }
    let set = Set {
        name: changes.name.as_deref(),
        dsl_doc: changes.dsl.as_ref(),
        editor_state: changes.editor_state.as_ref().map(Option::as_ref),
    };
    diesel::update(
        wf::table
            .filter(wf::organization_id.eq(org))
            .filter(wf::id.eq(id))
            .filter(wf::status.eq(WorkflowStatus::Draft)),
    )
    .set((wf::version.eq(wf::version + 1), wf::updated_at.eq(now), set))
    .returning(WorkflowRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Marks the row published (again): `version` +1, `publishedAt` and `updatedAt` now.
pub async fn publish(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: WorkflowId,
) -> QueryResult<Option<WorkflowRow>> {
    diesel::update(
        wf::table
            .filter(wf::organization_id.eq(org))
            .filter(wf::id.eq(id)),
    )
    .set((
        wf::status.eq(WorkflowStatus::Published),
        wf::version.eq(wf::version + 1),
        wf::published_at.eq(now),
        wf::updated_at.eq(now),
    ))
    .returning(WorkflowRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}
