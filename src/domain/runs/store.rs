//! Queries for runs and run events (always under the run's org context), plus the reaper's index.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::model::{Event, NewEvent, Run};
use crate::platform::db::schema::{
    workflow_run_events as ev, workflow_runs as wr, workflows as wf,
};

/// `(status, dsl)` of a workflow in the org.
pub async fn workflow_state(
    c: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<(String, Value)>> {
    wf::table
        .find(id)
        .select((wf::status, wf::dsl_doc))
        .first(c)
        .await
        .optional()
}

pub struct NewRun {
    pub id: Uuid,
    pub org: Uuid,
    pub workflow: Uuid,
    pub requested_by: Uuid,
    pub input: Option<Value>,
    pub max_attempts: i32,
}

pub async fn insert_run(c: &mut AsyncPgConnection, r: NewRun) -> QueryResult<Run> {
    diesel::insert_into(wr::table)
        .values((
            wr::id.eq(r.id),
            wr::organization_id.eq(r.org),
            wr::workflow_id.eq(r.workflow),
            wr::trigger_type.eq("manual"),
            wr::status.eq("queued"),
            wr::requested_by_user_id.eq(r.requested_by),
            wr::input.eq(r.input),
            wr::max_attempts.eq(r.max_attempts),
        ))
        .returning(Run::as_returning())
        .get_result(c)
        .await
}

/// Removes a run that never started (the enqueue failed right after the insert).
pub async fn delete_fresh_run(c: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::status.eq("queued"))
            .filter(wr::attempt_count.eq(0)),
    )
    .execute(c)
    .await
}

pub async fn get_run(c: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Run>> {
    wr::table
        .find(id)
        .select(Run::as_select())
        .first(c)
        .await
        .optional()
}

pub async fn get_run_of(
    c: &mut AsyncPgConnection,
    workflow: Uuid,
    id: Uuid,
) -> QueryResult<Option<Run>> {
    wr::table
        .filter(wr::id.eq(id))
        .filter(wr::workflow_id.eq(workflow))
        .select(Run::as_select())
        .first(c)
        .await
        .optional()
}

/// Newest first; `after` = the last row of the previous page.
pub async fn list_runs(
    c: &mut AsyncPgConnection,
    workflow: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> QueryResult<Vec<Run>> {
    let mut q = wr::table
        .filter(wr::workflow_id.eq(workflow))
        .select(Run::as_select())
        .order((wr::created_at.desc(), wr::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some((ts, id)) = after {
        q = q.filter(
            wr::created_at
                .lt(ts)
                .or(wr::created_at.eq(ts).and(wr::id.lt(id))),
        );
    }
    q.load(c).await
}

/// In insertion order; `after_seq` = the last event of the previous page.
pub async fn list_events(
    c: &mut AsyncPgConnection,
    run: Uuid,
    after_seq: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Event>> {
    let mut q = ev::table
        .filter(ev::run_id.eq(run))
        .select(Event::as_select())
        .order(ev::seq.asc())
        .limit(limit)
        .into_boxed();
    if let Some(seq) = after_seq {
        q = q.filter(ev::seq.gt(seq));
    }
    q.load(c).await
}

/// The position of an event of this run (for cursors); `None` if unknown.
pub async fn event_seq(c: &mut AsyncPgConnection, run: Uuid, id: Uuid) -> QueryResult<Option<i64>> {
    ev::table
        .filter(ev::run_id.eq(run))
        .filter(ev::id.eq(id))
        .select(ev::seq)
        .first(c)
        .await
        .optional()
}

pub async fn append_events(c: &mut AsyncPgConnection, events: &[NewEvent]) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    diesel::insert_into(ev::table)
        .values(events)
        .execute(c)
        .await
        .map(|_| ())
}

pub async fn status_for_update(c: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Run>> {
    wr::table
        .find(id)
        .select(Run::as_select())
        .for_update()
        .first(c)
        .await
        .optional()
}

fn lease_until(secs: u64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(secs as i64)
}

/// Starts a new attempt of a queued run under this worker's lease.
pub async fn start_attempt(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    lease_secs: u64,
) -> QueryResult<Run> {
    let now = Utc::now();
    diesel::update(wr::table.find(id))
        .set((
            wr::status.eq("running"),
            wr::attempt_count.eq(wr::attempt_count + 1),
            wr::started_at.eq(Some(now)),
            wr::error.eq(None::<String>),
            wr::next_attempt_at.eq(None::<DateTime<Utc>>),
            wr::finished_at.eq(None::<DateTime<Utc>>),
            wr::lease_owner.eq(Some(worker)),
            wr::lease_expires_at.eq(Some(lease_until(lease_secs))),
        ))
        .returning(Run::as_returning())
        .get_result(c)
        .await
}

/// Takes over a running run whose previous worker's lease expired (same attempt).
pub async fn take_over(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    lease_secs: u64,
) -> QueryResult<Run> {
    diesel::update(wr::table.find(id))
        .set((
            wr::lease_owner.eq(Some(worker)),
            wr::lease_expires_at.eq(Some(lease_until(lease_secs))),
        ))
        .returning(Run::as_returning())
        .get_result(c)
        .await
}

/// Renews the lease; `false` when this worker no longer holds the run.
pub async fn renew_lease(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    lease_secs: u64,
) -> QueryResult<bool> {
    let n = diesel::update(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::status.eq("running"))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set(wr::lease_expires_at.eq(Some(lease_until(lease_secs))))
    .execute(c)
    .await?;
    Ok(n == 1)
}

/// Saves progress; `false` when the lease was lost (another worker took over).
pub async fn checkpoint(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    output: &Value,
    cursor: i32,
) -> QueryResult<bool> {
    let n = diesel::update(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::status.eq("running"))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set((
        wr::output.eq(Some(output)),
        wr::cursor_node_index.eq(cursor),
    ))
    .execute(c)
    .await?;
    Ok(n == 1)
}

pub async fn finish(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: Option<&str>,
    status: &str,
    output: Option<&Value>,
    error: Option<&str>,
) -> QueryResult<bool> {
    let mut target = wr::table.filter(wr::id.eq(id)).into_boxed();
    if let Some(w) = worker {
        target = target.filter(wr::lease_owner.eq(w));
    }
    let n = diesel::update(wr::table.filter(wr::id.eq_any(target.select(wr::id))))
        .set((
            wr::status.eq(status),
            wr::output.eq(output),
            wr::error.eq(error),
            wr::next_attempt_at.eq(None::<DateTime<Utc>>),
            wr::finished_at.eq(Some(Utc::now())),
            wr::lease_owner.eq(None::<String>),
            wr::lease_expires_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(c)
        .await?;
    Ok(n == 1)
}

pub async fn schedule_retry(
    c: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    output: &Value,
    error: &str,
    next_at: DateTime<Utc>,
) -> QueryResult<bool> {
    let n = diesel::update(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set((
        wr::status.eq("queued"),
        wr::output.eq(Some(output)),
        wr::error.eq(Some(error)),
        wr::next_attempt_at.eq(Some(next_at)),
        wr::finished_at.eq(None::<DateTime<Utc>>),
        wr::lease_owner.eq(None::<String>),
        wr::lease_expires_at.eq(None::<DateTime<Utc>>),
    ))
    .execute(c)
    .await?;
    Ok(n == 1)
}

/// Gives the run back (graceful shutdown): still `running`, lease expired now, so any worker resumes it.
pub async fn release(c: &mut AsyncPgConnection, id: Uuid, worker: &str) -> QueryResult<()> {
    diesel::update(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set((
        wr::lease_owner.eq(None::<String>),
        wr::lease_expires_at.eq(Some(Utc::now())),
    ))
    .execute(c)
    .await
    .map(|_| ())
}

#[derive(QueryableByName)]
pub struct Stranded {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub run_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organization_id: Uuid,
}

/// Runs needing re-delivery across orgs (ids only), through the definer function.
pub async fn stranded(
    c: &mut AsyncPgConnection,
    stale_before: DateTime<Utc>,
    limit: i32,
) -> QueryResult<Vec<Stranded>> {
    diesel::sql_query("SELECT run_id, organization_id FROM app.stranded_runs($1, $2)")
        .bind::<diesel::sql_types::Timestamptz, _>(stale_before)
        .bind::<diesel::sql_types::Integer, _>(limit)
        .load(c)
        .await
}
