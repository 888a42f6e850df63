//! Queries for runs and run events (always under the run's org context), plus the reaper's index.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::Value;

use super::model::{Event, NewEvent, Run, RunStatus, Step, TriggerType};
use crate::domain::common::ids::{EventId, OrgId, RunId, UserId, WorkflowId};
use crate::domain::workflows::model::WorkflowStatus;
use crate::platform::db::schema::{
    workflow_run_events as ev, workflow_run_steps as rs, workflow_runs as wr, workflows as wf,
};

/// `(status, version, dsl)` of a workflow in the org.
pub async fn workflow_state(
    c: &mut AsyncPgConnection,
    id: WorkflowId,
) -> QueryResult<Option<(WorkflowStatus, i32, Value)>> {
    wf::table
        .find(id)
        .select((wf::status, wf::version, wf::dsl_doc))
        .first(c)
        .await
        .optional()
}

/// `status` of each of these workflows found in the org.
pub async fn workflow_statuses(
    c: &mut AsyncPgConnection,
    ids: &[WorkflowId],
) -> QueryResult<Vec<(WorkflowId, WorkflowStatus)>> {
    wf::table
        .filter(wf::id.eq_any(ids))
        .select((wf::id, wf::status))
        .load(c)
        .await
}

/// A run to create (queued, manual trigger).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = wr)]
pub struct NewRun<'a> {
    pub id: RunId,
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub trigger_type: TriggerType,
    pub status: RunStatus,
    pub requested_by_user_id: UserId,
    pub input: Option<&'a Value>,
    pub max_attempts: i32,
}

/// Inserts the runs in one statement.
pub async fn insert_runs(c: &mut AsyncPgConnection, runs: &[NewRun<'_>]) -> QueryResult<Vec<Run>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    diesel::insert_into(wr::table)
        .values(runs)
        .returning(Run::as_returning())
        .get_results(c)
        .await
}

/// Removes runs that never started (their enqueue failed right after the insert).
pub async fn delete_fresh_runs(c: &mut AsyncPgConnection, ids: &[RunId]) -> QueryResult<usize> {
    diesel::delete(
        wr::table
            .filter(wr::id.eq_any(ids))
            .filter(wr::status.eq(RunStatus::Queued))
            .filter(wr::attempt_count.eq(0)),
    )
    .execute(c)
    .await
}

pub async fn get_run(c: &mut AsyncPgConnection, id: RunId) -> QueryResult<Option<Run>> {
    wr::table
        .find(id)
        .select(Run::as_select())
        .first(c)
        .await
        .optional()
}

pub async fn get_run_of(
    c: &mut AsyncPgConnection,
    workflow: WorkflowId,
    id: RunId,
) -> QueryResult<Option<Run>> {
    wr::table
        .filter(wr::id.eq(id))
        .filter(wr::workflow_id.eq(workflow))
        .select(Run::as_select())
        .first(c)
        .await
        .optional()
}

/// Only the status of a run of `workflow` (what a live event stream checks on every read).
pub async fn run_status(
    c: &mut AsyncPgConnection,
    workflow: WorkflowId,
    id: RunId,
) -> QueryResult<Option<RunStatus>> {
    wr::table
        .filter(wr::id.eq(id))
        .filter(wr::workflow_id.eq(workflow))
        .select(wr::status)
        .first(c)
        .await
        .optional()
}

/// Newest first; `after` = the last row of the previous page.
pub async fn list_runs(
    c: &mut AsyncPgConnection,
    workflow: WorkflowId,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
) -> QueryResult<Vec<Run>> {
    let mut q = wr::table
        .filter(wr::workflow_id.eq(workflow))
        .select(Run::as_select())
        .order((wr::created_at.desc(), wr::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some((ts, id)) = after {
        let id = RunId::from(id);
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
    run: RunId,
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
pub async fn event_seq(
    c: &mut AsyncPgConnection,
    run: RunId,
    id: EventId,
) -> QueryResult<Option<i64>> {
    ev::table
        .filter(ev::run_id.eq(run))
        .filter(ev::id.eq(id))
        .select(ev::seq)
        .first(c)
        .await
        .optional()
}

/// Appends events in order. Chunked: each event binds 10 parameters and a statement takes at most 65,535.
pub async fn append_events(c: &mut AsyncPgConnection, events: &[NewEvent]) -> QueryResult<()> {
    for chunk in events.chunks(1000) {
        diesel::insert_into(ev::table)
            .values(chunk)
            .execute(c)
            .await?;
    }
    Ok(())
}

pub async fn status_for_update(c: &mut AsyncPgConnection, id: RunId) -> QueryResult<Option<Run>> {
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
    id: RunId,
    worker: &str,
    lease_secs: u64,
) -> QueryResult<Run> {
    let now = Utc::now();
    diesel::update(wr::table.find(id))
        .set((
            wr::status.eq(RunStatus::Running),
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
    id: RunId,
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
    id: RunId,
    worker: &str,
    lease_secs: u64,
) -> QueryResult<bool> {
    let n = diesel::update(
        wr::table
            .filter(wr::id.eq(id))
            .filter(wr::status.eq(RunStatus::Running))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set(wr::lease_expires_at.eq(Some(lease_until(lease_secs))))
    .execute(c)
    .await?;
    Ok(n == 1)
}

pub async fn finish(
    c: &mut AsyncPgConnection,
    id: RunId,
    worker: Option<&str>,
    status: RunStatus,
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

/// Gives the run back (graceful shutdown): still `running`, lease expired now, so any worker resumes it.
pub async fn release(c: &mut AsyncPgConnection, id: RunId, worker: &str) -> QueryResult<()> {
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
    pub run_id: RunId,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organization_id: OrgId,
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

/// A run started by [`claim_batch`], with its workflow's version and DSL.
#[derive(QueryableByName)]
pub struct ClaimedRun {
    #[diesel(embed)]
    pub run: Run,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub version: i32,
    #[diesel(sql_type = Jsonb)]
    pub dsl: Value,
}

/// Starts a new attempt of every run among `ids` that is queued, due and whose workflow is published, in
/// one statement that also appends their `run_started` events. Ids it leaves out need the single path
/// (resumption, not yet due, unpublished, gone, or held by a concurrent delivery).
pub async fn claim_batch(
    c: &mut AsyncPgConnection,
    ids: &[RunId],
    worker: &str,
    lease_secs: u64,
) -> QueryResult<Vec<ClaimedRun>> {
    let now = Utc::now();
    diesel::sql_query(
        "WITH started AS ( \
           UPDATE workflow_runs AS r SET status = 'running', attempt_count = r.attempt_count + 1, \
             started_at = $3, error = NULL, next_attempt_at = NULL, finished_at = NULL, \
             lease_owner = $2, lease_expires_at = $4 \
           FROM workflows AS w \
           WHERE r.id = ANY($1) AND r.status = 'queued' \
             AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= $3) \
             AND w.id = r.workflow_id AND w.status = 'published' \
           RETURNING r.id, r.organization_id, r.workflow_id, r.trigger_type, r.status, r.attempt_count, \
             r.max_attempts, r.next_attempt_at, r.cursor_node_index, r.blocked_request_id, r.lease_owner, \
             r.lease_expires_at, r.requested_by_user_id, r.input, r.output, r.error, r.created_at, \
             r.started_at, r.finished_at, w.version, w.dsl \
         ), ev AS ( \
           INSERT INTO workflow_run_events (organization_id, workflow_id, run_id, attempt_count, event_type, level, payload) \
           SELECT organization_id, workflow_id, id, attempt_count, 'run_started', 'info', \
             jsonb_build_object('runId', id, 'workflowId', workflow_id, 'orgId', organization_id, 'attemptCount', attempt_count) \
           FROM started \
         ) \
         SELECT * FROM started",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Text, _>(worker)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(lease_until(lease_secs))
    .load(c)
    .await
}

/// One run's new state: a checkpoint (still `running` under the lease) or the end of its attempt
/// (`succeeded`, `failed`, or `queued` again for a retry; the lease is released).
#[derive(Debug, Serialize)]
pub struct RunWrite {
    id: RunId,
    status: RunStatus,
    /// `None`: the stored output stays (a checkpoint that appends step rows instead).
    output: Option<Value>,
    /// Steps written as rows with this write (only when `output` is not written).
    #[serde(skip)]
    steps: Vec<NewStepRow>,
    /// The run's step rows are redundant once this write's full output is stored: delete them.
    #[serde(skip)]
    clear_rows: bool,
    error: Option<String>,
    cursor: Option<i32>,
    next_attempt_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl RunWrite {
    pub fn checkpoint(
        id: RunId,
        output: Option<Value>,
        cursor: i32,
        steps: Vec<NewStepRow>,
    ) -> Self {
        Self {
            id,
            status: RunStatus::Running,
            output,
            steps,
            clear_rows: false,
            error: None,
            cursor: Some(cursor),
            next_attempt_at: None,
            finished_at: None,
        }
    }

    /// Deletes the run's step rows with this write (it carries the full output).
    pub fn clearing_rows(mut self, clear: bool) -> Self {
        self.clear_rows = clear;
        self
    }

    pub fn ended(
        id: RunId,
        status: RunStatus,
        output: Value,
        error: Option<String>,
        next_attempt_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            id,
            status,
            output: Some(output),
            steps: Vec::new(),
            clear_rows: false,
            error,
            cursor: None,
            next_attempt_at,
            finished_at,
        }
    }
}

/// [`apply_writes`], then the events of the runs actually written (one statement each); returns the ids
/// written. Events of a run whose lease was lost are dropped with its write.
pub async fn write_runs(
    c: &mut AsyncPgConnection,
    worker: &str,
    lease_secs: u64,
    writes: &[RunWrite],
    mut events: Vec<NewEvent>,
) -> QueryResult<std::collections::HashSet<RunId>> {
    let applied: std::collections::HashSet<RunId> = apply_writes(c, worker, lease_secs, writes)
        .await?
        .into_iter()
        .collect();
    events.retain(|e| applied.contains(&e.run_id));
    append_events(c, &events).await?;
    let steps: Vec<&NewStepRow> = writes
        .iter()
        .filter(|w| applied.contains(&w.id))
        .flat_map(|w| &w.steps)
        .collect();
    let cleared: Vec<RunId> = writes
        .iter()
        .filter(|w| w.clear_rows && applied.contains(&w.id))
        .map(|w| w.id)
        .collect();
    if !cleared.is_empty() {
        diesel::delete(rs::table.filter(rs::run_id.eq_any(&cleared)))
            .execute(c)
            .await?;
    }
    for chunk in steps.chunks(1000) {
        diesel::insert_into(rs::table)
            .values(chunk.iter().copied().cloned().collect::<Vec<_>>())
            .execute(c)
            .await?;
    }
    Ok(applied)
}

/// A step recorded by a checkpoint.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = rs)]
pub struct NewStepRow {
    pub organization_id: OrgId,
    pub run_id: RunId,
    pub node_id: String,
    pub step: Value,
}

/// The steps checkpoints of `run` recorded as rows, oldest first (unreadable ones skipped: only the
/// engine writes them).
pub async fn step_rows(c: &mut AsyncPgConnection, run: RunId) -> QueryResult<Vec<Step>> {
    let rows: Vec<Value> = rs::table
        .filter(rs::run_id.eq(run))
        .order(rs::id.asc())
        .select(rs::step)
        .load(c)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|v| <Step as serde::Deserialize>::deserialize(v).ok())
        .collect())
}

/// Events `run` wrote in `attempt`.
pub async fn attempt_events(
    c: &mut AsyncPgConnection,
    run: RunId,
    attempt: i32,
) -> QueryResult<i64> {
    ev::table
        .filter(ev::run_id.eq(run))
        .filter(ev::attempt_count.eq(attempt))
        .count()
        .get_result(c)
        .await
}

#[derive(QueryableByName)]
struct AppliedId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: RunId,
}

/// Applies the writes in one statement, each only if `worker` still holds that run's lease; returns the
/// ids written (a missing id means another worker took the run over). A checkpoint renews the lease for
/// `lease_secs` (progress is proof of life, and a batched run may have waited on its batch-mates); an end
/// releases it.
async fn apply_writes(
    c: &mut AsyncPgConnection,
    worker: &str,
    lease_secs: u64,
    writes: &[RunWrite],
) -> QueryResult<Vec<RunId>> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    // Serialized straight to text (cast in SQL): no intermediate copy of every run's output.
    let rows = serde_json::to_string(writes)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let applied: Vec<AppliedId> = diesel::sql_query(
        "UPDATE workflow_runs AS r SET status = x.status, output = coalesce(x.output, r.output), error = x.error, \
           cursor_node_index = coalesce(x.cursor, r.cursor_node_index), \
           next_attempt_at = x.next_attempt_at, finished_at = x.finished_at, \
           lease_owner = CASE WHEN x.status = 'running' THEN r.lease_owner END, \
           lease_expires_at = CASE WHEN x.status = 'running' THEN $3 END, \
           blocked_request_id = NULL, blocked_node_id = NULL, blocked_node_type = NULL, blocked_kind = NULL, \
           blocked_at = NULL, blocked_timeout_at = NULL, remote_result = NULL \
         FROM jsonb_to_recordset($2::jsonb) AS x(id uuid, status text, output jsonb, error text, cursor integer, \
           next_attempt_at timestamptz, finished_at timestamptz) \
         WHERE r.id = x.id AND r.lease_owner = $1 \
         RETURNING r.id",
    )
    .bind::<Text, _>(worker)
    .bind::<Text, _>(rows)
    .bind::<Timestamptz, _>(lease_until(lease_secs))
    .load(c)
    .await?;
    Ok(applied.into_iter().map(|a| a.id).collect())
}

/// A run about to wait on a remote node: its progress, and the block (workflows spec 6.1), written
/// before the dispatch is sent.
pub struct Blocking<'a> {
    pub id: RunId,
    pub output: Value,
    pub cursor: i32,
    pub request_id: &'a str,
    pub node_id: &'a str,
    pub node_type: &'a str,
    pub kind: &'a str,
    pub timeout_at: DateTime<Utc>,
    /// The run's step rows are redundant with this output: delete them.
    pub clear_rows: bool,
}

/// Records the block (lease-checked, the lease renewed so the dispatch that follows is covered) with
/// its events; `false` when this worker no longer holds the run.
pub async fn block_run(
    c: &mut AsyncPgConnection,
    worker: &str,
    lease_secs: u64,
    b: &Blocking<'_>,
    events: &[NewEvent],
) -> QueryResult<bool> {
    let n = diesel::update(
        wr::table
            .filter(wr::id.eq(b.id))
            .filter(wr::lease_owner.eq(worker)),
    )
    .set((
        wr::output.eq(Some(&b.output)),
        wr::cursor_node_index.eq(b.cursor),
        wr::blocked_request_id.eq(Some(b.request_id)),
        wr::blocked_node_id.eq(Some(b.node_id)),
        wr::blocked_node_type.eq(Some(b.node_type)),
        wr::blocked_kind.eq(Some(b.kind)),
        wr::blocked_at.eq(Some(Utc::now())),
        wr::blocked_timeout_at.eq(Some(b.timeout_at)),
        wr::remote_result.eq(None::<Value>),
        wr::lease_expires_at.eq(Some(lease_until(lease_secs))),
    ))
    .execute(c)
    .await?;
    if n != 1 {
        return Ok(false);
    }
    if b.clear_rows {
        diesel::delete(rs::table.filter(rs::run_id.eq(b.id)))
            .execute(c)
            .await?;
    }
    append_events(c, events).await?;
    Ok(true)
}

/// The result a resumed attempt starts with (written by the continuation as it cleared the block).
pub async fn remote_result(c: &mut AsyncPgConnection, id: RunId) -> QueryResult<Option<Value>> {
    wr::table
        .find(id)
        .select(wr::remote_result)
        .first::<Option<Value>>(c)
        .await
        .optional()
        .map(Option::flatten)
}

/// Where a blocked run stands (for the continuation's sweep).
#[derive(Debug, Queryable)]
pub struct BlockState {
    pub request_id: Option<String>,
    pub blocked_at: Option<DateTime<Utc>>,
    pub timeout_at: Option<DateTime<Utc>>,
}

pub async fn block_state(c: &mut AsyncPgConnection, id: RunId) -> QueryResult<Option<BlockState>> {
    wr::table
        .find(id)
        .filter(wr::status.eq(RunStatus::Running))
        .select((
            wr::blocked_request_id,
            wr::blocked_at,
            wr::blocked_timeout_at,
        ))
        .first::<BlockState>(c)
        .await
        .optional()
}

/// The workflow of run `id` if it is still blocked on `request_id`.
pub async fn blocked_on(
    c: &mut AsyncPgConnection,
    id: RunId,
    request_id: &str,
) -> QueryResult<Option<WorkflowId>> {
    wr::table
        .find(id)
        .filter(wr::status.eq(RunStatus::Running))
        .filter(wr::blocked_request_id.eq(request_id))
        .select(wr::workflow_id)
        .first(c)
        .await
        .optional()
}

/// The run a block was cleared from, with the block's node.
#[derive(Debug, QueryableByName)]
pub struct Unblocked {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub workflow_id: WorkflowId,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempt_count: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub node_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub node_type: Option<String>,
}

/// Clears the block of `id` if it still waits on `request_id` (compare-and-set: of a racing push, poll
/// and timeout only one applies), storing `result` for the resumed attempt as
/// `{requestId, nodeId, result}` (`None`: dispatch again) and releasing the lease so the next delivery
/// takes the run over.
pub async fn unblock(
    c: &mut AsyncPgConnection,
    id: RunId,
    request_id: &str,
    result: Option<&Value>,
) -> QueryResult<Option<Unblocked>> {
    let rows: Vec<Unblocked> = diesel::sql_query(
        "UPDATE workflow_runs AS r SET blocked_request_id = NULL, blocked_node_id = NULL, \
           blocked_node_type = NULL, blocked_kind = NULL, blocked_at = NULL, blocked_timeout_at = NULL, \
           remote_result = CASE WHEN $3::jsonb IS NULL THEN NULL \
             ELSE jsonb_build_object('requestId', $2::text, 'nodeId', old.blocked_node_id, 'result', $3::jsonb) END, \
           lease_owner = NULL, lease_expires_at = NULL \
         FROM (SELECT id, blocked_node_id, blocked_node_type FROM workflow_runs WHERE id = $1 FOR UPDATE) AS old \
         WHERE r.id = old.id AND r.status = 'running' AND r.blocked_request_id = $2 \
         RETURNING r.workflow_id, r.attempt_count, old.blocked_node_id AS node_id, old.blocked_node_type AS node_type",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(request_id)
    .bind::<diesel::sql_types::Nullable<Jsonb>, _>(result)
    .load(c)
    .await?;
    Ok(rows.into_iter().next())
}

/// Blocked runs across orgs (ids only), through the definer function.
pub async fn blocked_runs(c: &mut AsyncPgConnection, limit: i32) -> QueryResult<Vec<Stranded>> {
    diesel::sql_query("SELECT run_id, organization_id FROM app.blocked_runs($1)")
        .bind::<diesel::sql_types::Integer, _>(limit)
        .load(c)
        .await
}
