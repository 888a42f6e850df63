//! Executes deliveries of runs: claim the run in PostgreSQL (the truth), run its nodes from where it stands,
//! and end the attempt (succeeded, retry scheduled, or failed). A delivery of a run that is finished, not
//! yet due or held by a live lease does nothing, so duplicate deliveries are harmless.
//!
//! Two ways in:
//! - [`Engine::start_batch`] then [`Engine::finish_batch`], the worker's path. Queued, due runs of one org
//!   are started by one statement (committed at once); their pure nodes run in memory; then one statement
//!   writes every run's end (or its checkpoint before a node with effects), one more appends the events,
//!   and one commit covers the lot. Under load two commits serve the whole batch instead of two per run.
//!   Runs that reached a node with effects continue on their own afterwards; ids the claim did not start
//!   (a dead worker's run, a retry not yet due, an unpublished workflow, a duplicate delivery) take the
//!   single path.
//! - [`Engine::process`], one run with every case: resumption after a crash, not-yet-due, unpublished.
//!
//! Either way a node with effects (an HTTP call, a connector action) is committed around: its
//! `node_started` is durable before it runs and its result is durable before the next node, so it never
//! runs twice unseen. Pure nodes (stubs, conditions, joins) ride along with the next commit.

mod graph;
mod plans;
mod progress;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncPgConnection;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;

use super::config::WorkflowsConfig;
use super::executors::{self, Block, ExecCtx, ExecDeps, Outcome};
use super::live::LiveEvents;
use super::metrics::{self as run_metrics, RunMetrics};
use super::model::{summarize, EventKind, Level, NewEvent, Run, RunStatus, Step, StepStatus};
use super::remote::{DispatchBody, RemoteDispatch};
use super::store::{self, RunWrite};
use crate::domain::common::ids::{OrgId, RunId};
use crate::domain::orgs::Orgs;
use crate::domain::workflows::dsl::{Graph, Node, NodeSpec, Plan};
use crate::domain::workflows::model::WorkflowStatus;
use crate::platform::db::{self, DbError, OpenTx, PgPool, TenantCtx};
use crate::platform::queue::WorkQueue;
pub use graph::GraphIndex;
use plans::Executable;
pub use plans::Plans;
use progress::{event, json_len, End, EndKind, Ended, Progress, Start};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("org settings unavailable: {0}")]
    Settings(String),
}

impl From<diesel::result::Error> for EngineError {
    fn from(e: diesel::result::Error) -> Self {
        EngineError::Db(e.into())
    }
}

/// What happened to one delivery (for the worker loop and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Succeeded,
    Failed,
    /// A retry is stored for this time (Unix ms); the queue delivers it then.
    RetryScheduled(i64),
    /// Nothing to do: finished, blocked, held by another worker, or gone.
    Skipped,
    /// Delivered before its retry time: put back for later.
    NotYetDue(i64),
    /// The lease was lost mid-way (another worker took over): stopped writing.
    LeaseLost,
    /// Handed back on shutdown.
    Released,
    /// Waiting on a remote node: the dispatch is recorded and sent; the result resumes the run.
    Blocked,
}

pub struct Engine {
    pub config: Arc<WorkflowsConfig>,
    /// Workflows parsed for execution (see [`plans`]).
    pub plans: Plans,
    pub db: PgPool,
    /// Org settings (cached) for every run.
    pub orgs: Arc<Orgs>,
    pub deps: ExecDeps,
    pub queue: WorkQueue,
    pub worker_id: String,
    /// Where remote nodes are dispatched (the gateway in this process, or over HTTP).
    pub remote: Arc<dyn RemoteDispatch>,
    pub metrics: Arc<RunMetrics>,
    /// Told of every commit that wrote a run's events (live event streams).
    pub live: Arc<LiveEvents>,
}

/// Where a stretch of execution stopped.
enum Halt {
    /// The attempt is over; this is what to write.
    End(End),
    /// A batched run reached a node with effects: it continues alone once the batch is committed.
    Yield,
    /// Already settled (lease lost, handed back on shutdown).
    Settled(Delivery),
}

/// What [`Engine::node_started`] lets the run do next.
enum Next {
    Run,
    Yield,
    LeaseLost,
}

/// A batch after its commit: runs already settled, and the work left (see [`Engine::finish_batch`]).
pub struct Batch {
    pub org: OrgId,
    pub settled: Vec<(RunId, Delivery)>,
    /// Runs that stopped before a node with effects.
    yielded: Vec<Progress>,
    /// Ids the batch statement did not start: they take the single path.
    leftovers: Vec<RunId>,
    settings: Value,
}

impl Batch {
    /// Runs still to be worked on by [`Engine::finish_batch`].
    pub fn remaining(&self) -> usize {
        self.yielded.len() + self.leftovers.len()
    }
}

enum Claimed {
    /// Where the run starts (with the claim's open transaction) and whether this resumes a dead
    /// worker's attempt.
    Run(Box<Start>, bool),
    Done(Delivery),
}

enum Decided {
    Take(Box<Start>, bool),
    Done(Delivery),
}

impl Engine {
    fn lease_secs(&self) -> u64 {
        self.config.lease_secs
    }

    async fn tx<'a, R, F>(&self, org: OrgId, f: F) -> Result<R, EngineError>
    where
        F: for<'r> FnOnce(
                &'r mut AsyncPgConnection,
            ) -> diesel_async::scoped_futures::ScopedBoxFuture<
                'a,
                'r,
                Result<R, EngineError>,
            > + Send
            + 'a,
        R: Send + 'a,
    {
        db::tenant_tx(&self.db, TenantCtx::org(org), f).await
    }

    async fn settings(&self, org: OrgId) -> Result<Value, EngineError> {
        // Read before any claim: once a claim's transaction is open this task holds a pooled connection,
        // and asking the pool for a second one could deadlock a fully busy worker.
        self.orgs
            .stored_settings(org)
            .await
            .map_err(|e| EngineError::Settings(e.to_string()))
    }

    /// Starts the queued, due runs among `ids` (all of `org`) in one statement, runs their pure nodes, and
    /// commits every end and checkpoint together. On error the runs keep their claim (or were never
    /// claimed): the leases expire and the runs are delivered again, resuming where they stood.
    pub async fn start_batch(
        &self,
        org: OrgId,
        ids: &[RunId],
        stop: &watch::Receiver<bool>,
    ) -> Result<Batch, EngineError> {
        let span = tracing::info_span!("run_batch", org_id = %org, runs = ids.len());
        self.start_batch_in_span(org, ids, stop)
            .instrument(span)
            .await
    }

    async fn start_batch_in_span(
        &self,
        org: OrgId,
        ids: &[RunId],
        stop: &watch::Receiver<bool>,
    ) -> Result<Batch, EngineError> {
        let settings = self.settings(org).await?;
        // The claim commits on its own. Updating the rows again in the transaction that claimed them would
        // make PostgreSQL re-check the runs' foreign keys (a row it wrote itself), share-locking the org, the
        // workflow and the user row once per run; a second short transaction costs one round trip per batch.
        let (worker, lease) = (self.worker_id.as_str(), self.lease_secs());
        let claimed = self
            .tx(org, |c| {
                async move { Ok(store::claim_batch(c, ids, worker, lease).await?) }.scope_boxed()
            })
            .await?;
        let taken: HashSet<RunId> = claimed.iter().map(|r| r.run.id).collect();
        self.live.notify(taken.iter().copied());
        let mut batch = Batch {
            org,
            settled: Vec::new(),
            yielded: Vec::new(),
            leftovers: ids
                .iter()
                .filter(|id| !taken.contains(id))
                .copied()
                .collect(),
            settings,
        };
        let never_lost = AtomicBool::new(false);
        let (mut writes, mut events, mut ended) = (Vec::new(), Vec::new(), Vec::new());
        for row in claimed {
            let plan = self.plans.get(row.run.workflow_id, row.version, &row.dsl);
            log_started(&row.run, false);
            self.metrics.started(&row.run);
            let mut p = Progress::new(Start {
                run: row.run,
                plan,
                rows: Vec::new(),
                // `run_started`, appended by the claim.
                events: 1,
                open: None,
                batched: true,
                remote: None,
            });
            match self
                .drive(&mut p, &batch.settings, stop, &never_lost)
                .await?
            {
                Halt::End(end) => {
                    let Ended {
                        write,
                        events: evs,
                        kind,
                        error,
                    } = end.split(p.run.id);
                    writes.push(write);
                    events.extend(evs);
                    ended.push((p.run, kind, error));
                }
                Halt::Yield => {
                    writes.push(p.checkpoint());
                    events.append(&mut p.pending);
                    batch.yielded.push(p);
                }
                Halt::Settled(d) => batch.settled.push((p.run.id, d)),
            }
        }
        let applied: HashSet<RunId> = if writes.is_empty() {
            HashSet::new()
        } else {
            self.tx(org, |c| {
                async move { Ok(store::write_runs(c, worker, lease, &writes, events).await?) }
                    .scope_boxed()
            })
            .await?
        };
        self.live.notify(applied.iter().copied());
        // A run not written lost its lease to another worker in between (only possible after a long stall).
        for (run, kind, error) in ended {
            let delivery = if applied.contains(&run.id) {
                self.ended(&run, kind, error.as_deref())
            } else {
                Delivery::LeaseLost
            };
            batch.settled.push((run.id, delivery));
        }
        batch.yielded.retain(|p| {
            let kept = applied.contains(&p.run.id);
            if !kept {
                batch.settled.push((p.run.id, Delivery::LeaseLost));
            }
            kept
        });
        Ok(batch)
    }

    /// Runs what the batch left, each as it goes: runs that stopped before a node with effects go on alone
    /// (with their own lease heartbeat), and ids the claim did not start take the single path. The worker
    /// settles every run (and frees its slot) as soon as that run is done, not when the slowest one is.
    pub fn finish_batch<'a>(
        &'a self,
        batch: Batch,
        stop: &'a watch::Receiver<bool>,
    ) -> FuturesUnordered<BoxFuture<'a, (RunId, Result<Delivery, EngineError>)>> {
        let Batch {
            org,
            yielded,
            leftovers,
            settings,
            ..
        } = batch;
        let settings = Arc::new(settings);
        let runs = FuturesUnordered::new();
        for mut p in yielded {
            let settings = settings.clone();
            runs.push(
                async move {
                    let id = p.run.id;
                    // The queue's lease dates from the claim; refresh it before the run goes on alone (the
                    // batch's write already renewed the one in PostgreSQL).
                    let lease = Duration::from_secs(self.lease_secs());
                    if let Err(e) = self.queue.heartbeat(org.uuid(), id.uuid(), lease).await {
                        tracing::warn!(error = %e, run_id = %id, "queue lease refresh failed");
                    }
                    let span = tracing::info_span!("run", run_id = %id, org_id = %org);
                    let done = self
                        .run_alone(&mut p, &settings, stop)
                        .instrument(span)
                        .await;
                    (id, done)
                }
                .boxed(),
            );
        }
        // Shutting down: ids the claim did not start were not touched in PostgreSQL; hand them straight back.
        let stopping = *stop.borrow();
        for id in leftovers {
            runs.push(
                async move {
                    if stopping {
                        return (id, Ok(Delivery::Released));
                    }
                    (id, self.process(org, id, stop).await)
                }
                .boxed(),
            );
        }
        runs
    }

    /// Handles one delivery of `run_id`.
    pub async fn process(
        &self,
        org: OrgId,
        run_id: RunId,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, EngineError> {
        let span = tracing::info_span!("run", run_id = %run_id, org_id = %org);
        self.process_in_span(org, run_id, stop)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        org: OrgId,
        run_id: RunId,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, EngineError> {
        let settings = self.settings(org).await?;
        let (start, resumed) = match self.claim(org, run_id).await? {
            Claimed::Run(start, resumed) => (*start, resumed),
            Claimed::Done(d) => return Ok(d),
        };
        log_started(&start.run, resumed);
        if !resumed {
            self.metrics.started(&start.run);
        }
        let mut p = Progress::new(start);
        self.run_alone(&mut p, &settings, stop).await
    }

    /// Runs `p` to the end of its attempt on its own: with a lease heartbeat, committing around nodes with
    /// effects, then writing the end.
    async fn run_alone(
        &self,
        p: &mut Progress,
        settings: &Value,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, EngineError> {
        p.batched = false;
        // The lease is renewed while we work; losing it means another worker owns the run now.
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = self.spawn_heartbeat(p.run.organization_id, p.run.id, lost.clone());
        let result = async {
            // Not batched, so the run never yields; the loop only makes that a non-issue for the types.
            loop {
                match self.drive(p, settings, stop, &lost).await? {
                    Halt::End(end) => return self.write_end(p, end).await,
                    Halt::Settled(d) => return Ok(d),
                    Halt::Yield => continue,
                }
            }
        }
        .await;
        let _ = heartbeat.send(true);
        result
    }

    /// Runs the plan's nodes from where the run stands.
    async fn drive(
        &self,
        p: &mut Progress,
        settings: &Value,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Halt, EngineError> {
        let plan = p.plan.clone();
        match &*plan {
            Err(code) => Ok(Halt::End(self.fail(p, None, code.clone(), false))),
            Ok(Executable {
                plan: Plan::Sequence(nodes),
                ..
            }) => self.run_sequence(p, nodes, settings, stop, lost).await,
            Ok(Executable {
                plan: Plan::Graph(graph),
                graph: Some(index),
            }) => self.run_graph(p, graph, index, settings, stop, lost).await,
            Ok(Executable {
                plan: Plan::Graph(_),
                graph: None,
            }) => Ok(Halt::End(self.fail(
                p,
                None,
                "INVALID_WORKFLOW_DSL".into(),
                false,
            ))),
        }
    }

    /// Writes the end of a run that runs alone (lease checked) and logs it.
    async fn write_end(&self, p: &mut Progress, end: End) -> Result<Delivery, EngineError> {
        let Ended {
            write,
            events,
            kind,
            error,
        } = end.split(p.run.id);
        let applied = self.commit_write(p, write, events).await?;
        if !applied {
            return Ok(Delivery::LeaseLost);
        }
        Ok(self.ended(&p.run, kind, error.as_deref()))
    }

    /// Logs a committed end and says what it means for the queue.
    fn ended(&self, r: &Run, kind: EndKind, error: Option<&str>) -> Delivery {
        let error = error.unwrap_or_default();
        self.metrics.ended(
            r,
            match kind {
                EndKind::Succeeded => run_metrics::Outcome::Succeeded,
                EndKind::Retry(_) => run_metrics::Outcome::Retried,
                EndKind::Failed => run_metrics::Outcome::Failed,
            },
        );
        match kind {
            EndKind::Succeeded => {
                tracing::info!(event = "workflow_run_succeeded", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id,
                    attemptCount = r.attempt_count, "run succeeded");
                Delivery::Succeeded
            }
            EndKind::Retry(due) => {
                tracing::warn!(event = "workflow_run_retried", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id,
                    attemptCount = r.attempt_count, maxAttempts = r.max_attempts, error = %error, "run will be retried");
                Delivery::RetryScheduled(due.timestamp_millis())
            }
            EndKind::Failed => {
                tracing::error!(event = "workflow_run_failed", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id,
                    attemptCount = r.attempt_count, maxAttempts = r.max_attempts, error = %error, "run failed");
                Delivery::Failed
            }
        }
    }

    /// Renews the lease until told to stop. It is stopped by message, never aborted: aborting it in the
    /// middle of its transaction would hand a half-used connection back to the pool.
    fn spawn_heartbeat(
        &self,
        org: OrgId,
        run: RunId,
        lost: Arc<AtomicBool>,
    ) -> watch::Sender<bool> {
        let (done_tx, mut done) = watch::channel(false);
        let (db, queue, worker, secs) = (
            self.db.clone(),
            self.queue.clone(),
            self.worker_id.clone(),
            self.lease_secs(),
        );
        tokio::spawn(async move {
            let every = Duration::from_millis((secs * 1000 / 3).max(500));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = done.changed() => return,
                }
                let w = worker.clone();
                let renewed = db::tenant_tx(&db, TenantCtx::org(org), |c| {
                    async move {
                        store::renew_lease(c, run, &w, secs)
                            .await
                            .map_err(DbError::from)
                    }
                    .scope_boxed()
                })
                .await;
                match renewed {
                    Ok(true) => {
                        if let Err(e) = queue
                            .heartbeat(org.uuid(), run.uuid(), Duration::from_secs(secs))
                            .await
                        {
                            tracing::warn!(error = %e, run_id = %run, "queue lease refresh failed");
                        }
                    }
                    Ok(false) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // Database unreachable: keep trying; the lease may lapse and another worker resume.
                    Err(e) => tracing::warn!(error = %e, run_id = %run, "lease renewal failed"),
                }
            }
        });
        done_tx
    }

    /// Locks the run and decides what this delivery does. The transaction stays open when the run is taken
    /// (see [`Progress::open`]); otherwise it is committed (a recorded failure) or rolled back (nothing to do).
    async fn claim(&self, org: OrgId, run_id: RunId) -> Result<Claimed, EngineError> {
        let mut tx = OpenTx::begin(&self.db, TenantCtx::org(org)).await?;
        let decided = match self.claim_in(tx.conn(), org, run_id).await {
            Ok(d) => d,
            Err(e) => {
                tx.rollback().await;
                return Err(e);
            }
        };
        match decided {
            Decided::Take(mut start, resumed) => {
                start.open = Some(tx);
                Ok(Claimed::Run(start, resumed))
            }
            Decided::Done(Delivery::Failed) => {
                tx.commit().await?;
                self.live.notify([run_id]);
                Ok(Claimed::Done(Delivery::Failed))
            }
            Decided::Done(other) => {
                tx.rollback().await;
                Ok(Claimed::Done(other))
            }
        }
    }

    async fn claim_in(
        &self,
        c: &mut AsyncPgConnection,
        org: OrgId,
        run_id: RunId,
    ) -> Result<Decided, EngineError> {
        let (worker, lease) = (self.worker_id.clone(), self.lease_secs());
        let Some(run) = store::status_for_update(c, run_id).await? else {
            tracing::warn!(event = "workflow_run_orphaned", reasonCode = "RUN_NOT_FOUND", runId = %run_id, orgId = %org, "run not found");
            return Ok(Decided::Done(Delivery::Skipped));
        };
        let now = Utc::now();
        match run.status {
            RunStatus::Queued => {
                if let Some(at) = run.next_attempt_at.filter(|at| *at > now) {
                    return Ok(Decided::Done(Delivery::NotYetDue(at.timestamp_millis())));
                }
            }
            RunStatus::Running
                if run.blocked_request_id.is_none()
                    && run.lease_expires_at.is_none_or(|t| t <= now) => {}
            _ => return Ok(Decided::Done(Delivery::Skipped)),
        }
        let Some((wf_status, version, dsl_doc)) = store::workflow_state(c, run.workflow_id).await?
        else {
            tracing::warn!(event = "workflow_run_orphaned", reasonCode = "WORKFLOW_NOT_FOUND", runId = %run_id, workflowId = %run.workflow_id, orgId = %org, "workflow not found");
            return Ok(Decided::Done(Delivery::Skipped));
        };
        if run.status == RunStatus::Queued {
            if wf_status != WorkflowStatus::Published {
                store::finish(
                    c,
                    run_id,
                    None,
                    RunStatus::Failed,
                    run.output.as_ref(),
                    Some("WORKFLOW_NOT_PUBLISHED"),
                )
                .await?;
                let mut e = event(&run, EventKind::RunFailed, Level::Error, None);
                e.message = Some("WORKFLOW_NOT_PUBLISHED".into());
                e.payload = Some(json!({"reasonCode": "WORKFLOW_NOT_PUBLISHED"}));
                store::append_events(c, &[e]).await?;
                tracing::error!(event = "workflow_run_failed", reasonCode = "WORKFLOW_NOT_PUBLISHED", runId = %run_id, workflowId = %run.workflow_id, orgId = %org, "run failed");
                return Ok(Decided::Done(Delivery::Failed));
            }
            let started = store::start_attempt(c, run_id, &worker, lease).await?;
            let mut e = event(&started, EventKind::RunStarted, Level::Info, None);
            e.payload = Some(
                json!({"runId": run_id, "workflowId": started.workflow_id, "orgId": org, "attemptCount": started.attempt_count}),
            );
            store::append_events(c, &[e]).await?;
            let plan = self.plans.get(started.workflow_id, version, &dsl_doc);
            Ok(Decided::Take(
                Box::new(Start {
                    run: started,
                    plan,
                    rows: Vec::new(),
                    events: 1,
                    open: None,
                    batched: false,
                    remote: None,
                }),
                false,
            ))
        } else {
            // The previous worker died: same attempt, from the last checkpoint and the step rows since.
            let taken = store::take_over(c, run_id, &worker, lease).await?;
            let rows = store::step_rows(c, run_id).await?;
            let events = store::attempt_events(c, run_id, taken.attempt_count).await?;
            // Resumed after a remote node's result landed: the result is consumed by that node.
            let remote = store::remote_result(c, run_id).await?;
            let plan = self.plans.get(taken.workflow_id, version, &dsl_doc);
            Ok(Decided::Take(
                Box::new(Start {
                    run: taken,
                    plan,
                    rows,
                    events: usize::try_from(events).unwrap_or(usize::MAX),
                    open: None,
                    batched: false,
                    remote,
                }),
                true,
            ))
        }
    }

    /// Commits `f`'s writes: inside the claim's still-open transaction when there is one, else in a new one.
    /// Either way the run's new events (if any) are announced to live streams once committed.
    async fn commit_in<'a, R, F>(
        &self,
        open: &mut Option<OpenTx>,
        (org, run): (OrgId, RunId),
        f: F,
    ) -> Result<R, EngineError>
    where
        F: for<'r> FnOnce(
                &'r mut AsyncPgConnection,
            ) -> diesel_async::scoped_futures::ScopedBoxFuture<
                'a,
                'r,
                Result<R, EngineError>,
            > + Send
            + 'a,
        R: Send + 'a,
    {
        let committed = match open.take() {
            Some(mut tx) => match f(tx.conn()).await {
                Ok(r) => {
                    tx.commit().await?;
                    Ok(r)
                }
                Err(e) => {
                    tx.rollback().await;
                    Err(e)
                }
            },
            None => self.tx(org, f).await,
        };
        if committed.is_ok() {
            self.live.notify([run]);
        }
        committed
    }

    /// Runs a node through its executor (or inline for v3 condition/join via `inline`).
    async fn exec(&self, p: &Progress, node: &Node, settings: &Value) -> Outcome {
        let input = p.run.input.as_ref().unwrap_or(&Value::Null);
        let ctx = ExecCtx {
            org_id: p.run.organization_id,
            workflow_id: p.run.workflow_id,
            run_id: p.run.id,
            attempt: p.run.attempt_count,
            requested_by: p.run.requested_by_user_id,
            node,
            run_input: input,
            steps: p.steps.as_slice(),
            settings,
        };
        executors::execute(&self.deps, &ctx).await
    }

    /// Commits the progress so far (steps, cursor) with the pending events. `false` = lease lost.
    async fn flush(&self, p: &mut Progress) -> Result<bool, EngineError> {
        let events = std::mem::take(&mut p.pending);
        let write = p.checkpoint();
        self.commit_write(p, write, events).await
    }

    /// Commits one run's write with its events (in the claim's open transaction if there is one).
    /// `false` = lease lost: nothing was written.
    async fn commit_write(
        &self,
        p: &mut Progress,
        write: RunWrite,
        events: Vec<NewEvent>,
    ) -> Result<bool, EngineError> {
        let (worker, lease) = (self.worker_id.clone(), self.lease_secs());
        self.commit_in(&mut p.open, (p.run.organization_id, p.run.id), |c| {
            async move {
                let applied = store::write_runs(c, &worker, lease, &[write], events).await?;
                Ok(!applied.is_empty())
            }
            .scope_boxed()
        })
        .await
    }

    /// A node is about to run. Before a node with effects outside the run, its start (and everything
    /// pending) is committed, so that a re-execution after a crash is visible in the events; a batched run
    /// stops here instead and goes on alone after the batch's commit.
    async fn node_started(&self, p: &mut Progress, node: &Node) -> Result<Next, EngineError> {
        if !is_pure(node) && p.batched {
            return Ok(Next::Yield);
        }
        let e = p.event(EventKind::NodeStarted, Level::Info, Some(node));
        p.push_event(e);
        // A remote node has no effect until its dispatch is sent, and the block is committed (with this
        // event) before that: no commit of its own here.
        if is_pure(node) || node.is_remote() {
            return Ok(Next::Run);
        }
        Ok(if self.flush(p).await? {
            Next::Run
        } else {
            Next::LeaseLost
        })
    }

    /// Records a succeeded node. A node with effects is checkpointed at once (it must never run twice);
    /// a pure node's result rides along with the next commit: re-running it after a crash changes nothing.
    async fn node_succeeded(
        &self,
        p: &mut Progress,
        node: &Node,
        output: Value,
        cursor: i32,
    ) -> Result<bool, EngineError> {
        let max = self.config.event_payload_max_chars;
        let mut e = p.event(EventKind::NodeSucceeded, Level::Info, Some(node));
        e.payload = summarize(&output, max);
        p.push_event(e);
        p.record_success(Step {
            node_id: node.id.clone(),
            node_type: node.node_type(),
            status: StepStatus::Succeeded,
            output: Some(output),
            error: None,
        });
        p.cursor = cursor;
        // A remote node's result stays stored on the run until the next write, which carries this step:
        // a crash before it replays the same result, so it needs no commit of its own either.
        if is_pure(node) || node.is_remote() {
            return Ok(true);
        }
        self.flush(p).await
    }

    /// Before a node starts: an attempt that has written `run_max_events` events ends here, before the
    /// node has any effect.
    fn out_of_events(&self, p: &mut Progress) -> Option<Halt> {
        (p.events >= self.config.run_max_events)
            .then(|| Halt::End(self.fail(p, None, "RUN_EVENT_LIMIT_EXCEEDED".into(), false)))
    }

    /// The outcome of a node, unless its output would take the run's outputs past
    /// `run_output_max_bytes`: then the node ran (its step says so), but its output is dropped and the
    /// run fails.
    fn within_output_cap(&self, p: &Progress, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Succeeded(out) => {
                let bytes = json_len(&out);
                if p.steps.output_bytes() + bytes > self.config.run_output_max_bytes {
                    Outcome::Failed {
                        error: "RUN_OUTPUT_LIMIT_EXCEEDED".into(),
                        output: Some(
                            json!({"executed": true, "outputDropped": true, "outputBytes": bytes}),
                        ),
                        retryable: false,
                    }
                } else {
                    Outcome::Succeeded(out)
                }
            }
            other => other,
        }
    }

    async fn run_sequence(
        &self,
        p: &mut Progress,
        nodes: &[Node],
        settings: &Value,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Halt, EngineError> {
        for (index, node) in nodes.iter().enumerate() {
            if p.steps.get(&node.id).is_some() {
                continue; // succeeded in an earlier attempt or before a crash: never again
            }
            if let Some(d) = self.interrupted(p, stop, lost).await? {
                return Ok(Halt::Settled(d));
            }
            if let Some(end) = self.out_of_events(p) {
                return Ok(end);
            }
            // The resume pass of a remote node (spec 5.4): its result, not a second dispatch.
            let outcome = match p.take_remote(&node.id) {
                Some(outcome) => outcome,
                None => {
                    match self.node_started(p, node).await? {
                        Next::Run => {}
                        Next::Yield => return Ok(Halt::Yield),
                        Next::LeaseLost => return Ok(Halt::Settled(Delivery::LeaseLost)),
                    }
                    self.exec(p, node, settings).await
                }
            };
            match self.within_output_cap(p, outcome) {
                Outcome::Blocked(block) => {
                    // v2 re-enters the blocked node itself on resume.
                    let cursor = i32::try_from(index).unwrap_or(i32::MAX);
                    return self.blocked(p, node, cursor, block).await;
                }
                Outcome::Succeeded(out) => {
                    let cursor = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    if !self.node_succeeded(p, node, out, cursor).await? {
                        return Ok(Halt::Settled(Delivery::LeaseLost));
                    }
                }
                Outcome::Failed {
                    error,
                    output,
                    retryable,
                } => {
                    return Ok(Halt::End(
                        self.node_failed(p, node, error, output, retryable),
                    ));
                }
            }
        }
        Ok(Halt::End(self.succeed(p)))
    }

    async fn run_graph(
        &self,
        p: &mut Progress,
        graph: &Graph,
        index: &GraphIndex,
        settings: &Value,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Halt, EngineError> {
        while let Some(key) = p.graph.as_mut().and_then(|g| g.next()) {
            let Some(node) = graph.nodes.get(&key) else {
                continue;
            };
            if let Some(d) = self.interrupted(p, stop, lost).await? {
                return Ok(Halt::Settled(d));
            }
            if let Some(end) = self.out_of_events(p) {
                return Ok(end);
            }
            if let Some(outcome) = p.take_remote(&node.id) {
                if let Some(end) = self.graph_outcome(p, node, outcome).await? {
                    return Ok(end);
                }
                continue;
            }
            match self.node_started(p, node).await? {
                Next::Run => {}
                Next::Yield => {
                    // Not run yet: it is the first to run when the run goes on alone.
                    if let Some(g) = p.graph.as_mut() {
                        g.put_back(key);
                    }
                    return Ok(Halt::Yield);
                }
                Next::LeaseLost => return Ok(Halt::Settled(Delivery::LeaseLost)),
            }
            let outcome = match &node.spec {
                NodeSpec::Condition(cfg) => {
                    let input = p.run.input.as_ref().unwrap_or(&Value::Null);
                    match executors::condition::evaluate(cfg.as_ref(), input) {
                        Ok(out) => Outcome::Succeeded(out),
                        Err(code) => Outcome::fail(code, false),
                    }
                }
                NodeSpec::ParallelJoin(_) => {
                    Outcome::Succeeded(graph::join_output(graph, index, &node.id, &p.steps))
                }
                _ => self.exec(p, node, settings).await,
            };
            if let Outcome::Blocked(block) = outcome {
                return self.blocked(p, node, 0, block).await;
            }
            if let Some(end) = self.graph_outcome(p, node, outcome).await? {
                return Ok(end);
            }
        }
        // Nodes without a step were skipped: say why, once each (capped), then succeed.
        let max = self.config.event_payload_max_chars;
        let mut skipped = serde_json::Map::new();
        let mut events = Vec::new();
        for (key, node) in &graph.nodes {
            if p.steps.get(key).is_some() {
                continue;
            }
            let info = graph::skip_reason(graph, index, key, &p.steps);
            if events.len() < 500 {
                let mut e = p.event(EventKind::NodeSkipped, Level::Info, Some(node));
                e.payload = summarize(&info, max);
                events.push(e);
            }
            skipped.insert(key.clone(), info);
        }
        for e in events {
            p.push_event(e);
        }
        Ok(Halt::End(self.succeed_graph(p, skipped)))
    }

    /// Records a v3 node's outcome; `Some` when the run stops there.
    async fn graph_outcome(
        &self,
        p: &mut Progress,
        node: &Node,
        outcome: Outcome,
    ) -> Result<Option<Halt>, EngineError> {
        match self.within_output_cap(p, outcome) {
            Outcome::Succeeded(out) => {
                if !self.node_succeeded(p, node, out, 0).await? {
                    return Ok(Some(Halt::Settled(Delivery::LeaseLost)));
                }
                Ok(None)
            }
            Outcome::Failed {
                error,
                output,
                retryable,
            } => Ok(Some(Halt::End(
                self.node_failed(p, node, error, output, retryable),
            ))),
            // A resume pass never blocks again; a block reaching here is a result read as one.
            Outcome::Blocked(_) => Ok(Some(Halt::End(self.node_failed(
                p,
                node,
                "REMOTE_RESULT_INVALID".into(),
                None,
                false,
            )))),
        }
    }

    /// A node runs elsewhere (workflows spec 6.1): record the block first (request id, timeout, the
    /// progress so far, `node_dispatched`), then send the dispatch; the run's worker slot is free from
    /// here on. A crash between the two leaves a recorded block without a dispatch, which the
    /// continuation's sweep sends again; a dispatch refused outright ends the attempt as a run error.
    async fn blocked(
        &self,
        p: &mut Progress,
        node: &Node,
        cursor: i32,
        block: Block,
    ) -> Result<Halt, EngineError> {
        let timeout_ms = block
            .timeout_ms
            .unwrap_or(self.config.node_exec_timeout_ms)
            .clamp(1000, 600_000);
        let body = DispatchBody {
            organization_id: p.run.organization_id,
            requested_by_user_id: p.run.requested_by_user_id,
            run_id: p.run.id,
            workflow_id: p.run.workflow_id,
            node_id: node.id.clone(),
            node_type: node.node_type().as_str().to_string(),
            attempt_count: p.run.attempt_count,
            kind: block.kind.as_str().to_string(),
            payload: block.payload,
            executor_selector: block.selector,
            secret: block.secret,
            timeout_ms,
        };
        let request_id = body.request_id();
        let mut e = p.event(EventKind::NodeDispatched, Level::Info, Some(node));
        e.payload = Some(json!({"requestId": request_id, "kind": block.kind}));
        p.push_event(e);
        p.cursor = cursor;
        let output = p.output(StepStatus::Succeeded, None);
        let events = std::mem::take(&mut p.pending);
        let node_type = node.node_type();
        let write = store::Blocking {
            id: p.run.id,
            output,
            cursor,
            request_id: &request_id,
            node_id: &node.id,
            node_type: node_type.as_str(),
            kind: block.kind.as_str(),
            timeout_at: Utc::now() + chrono::Duration::milliseconds(timeout_ms as i64),
            clear_rows: p.take_rows_to_clear(),
        };
        let (worker, lease) = (self.worker_id.clone(), self.lease_secs());
        let write = &write;
        let recorded = self
            .commit_in(&mut p.open, (p.run.organization_id, p.run.id), |c| {
                async move { Ok(store::block_run(c, &worker, lease, write, &events).await?) }
                    .scope_boxed()
            })
            .await?;
        if !recorded {
            return Ok(Halt::Settled(Delivery::LeaseLost));
        }
        match self.remote.dispatch(&body).await {
            Ok(()) => {
                tracing::info!(event = "workflow_node_dispatched", runId = %p.run.id, orgId = %p.run.organization_id,
                    nodeId = %node.id, requestId = %request_id, kind = %block.kind, timeoutMs = timeout_ms, "node dispatched");
                Ok(Halt::Settled(Delivery::Blocked))
            }
            Err(e) => {
                tracing::warn!(runId = %p.run.id, nodeId = %node.id, requestId = %request_id, error = %e, "dispatch refused");
                Ok(Halt::End(self.fail(
                    p,
                    Some(node.id.clone()),
                    e.code(),
                    true,
                )))
            }
        }
    }

    /// Between nodes: stop when the lease is gone or the process is shutting down (handing the run back).
    /// A batched run is not interrupted: it only runs pure nodes, and the batch commits in moments.
    async fn interrupted(
        &self,
        p: &mut Progress,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Option<Delivery>, EngineError> {
        if p.batched {
            return Ok(None);
        }
        if lost.load(Ordering::SeqCst) {
            return Ok(Some(Delivery::LeaseLost));
        }
        if *stop.borrow() {
            // Keep what pure nodes did, then hand the run back.
            if !p.pending.is_empty() && !self.flush(p).await? {
                return Ok(Some(Delivery::LeaseLost));
            }
            let (run_id, worker) = (p.run.id, self.worker_id.clone());
            self.commit_in(&mut p.open, (p.run.organization_id, p.run.id), |c| {
                async move { Ok(store::release(c, run_id, &worker).await?) }.scope_boxed()
            })
            .await?;
            return Ok(Some(Delivery::Released));
        }
        Ok(None)
    }

    fn succeed(&self, p: &mut Progress) -> End {
        let mut e = p.event(EventKind::RunSucceeded, Level::Info, None);
        e.payload = Some(json!({"completedNodeCount": p.steps.succeeded_count()}));
        let mut events = std::mem::take(&mut p.pending);
        events.push(e);
        End {
            kind: EndKind::Succeeded,
            error: None,
            output: p.output(StepStatus::Succeeded, None),
            events,
            clear_rows: p.take_rows_to_clear(),
        }
    }

    /// A v3 success: the final snapshot says why each node without a step was skipped.
    fn succeed_graph(&self, p: &mut Progress, skipped: serde_json::Map<String, Value>) -> End {
        let mut end = self.succeed(p);
        if let Some(Value::Object(rt)) = end.output.get_mut("runtime") {
            if let Some(Value::Object(g)) = rt.get_mut("graphV3") {
                g.insert("skipped".into(), Value::Object(skipped));
            }
        }
        end
    }

    fn node_failed(
        &self,
        p: &mut Progress,
        node: &Node,
        error: String,
        output: Option<Value>,
        retryable: bool,
    ) -> End {
        let max = self.config.event_payload_max_chars;
        p.steps.push(Step {
            node_id: node.id.clone(),
            node_type: node.node_type(),
            status: StepStatus::Failed,
            output: output.clone(),
            error: Some(error.clone()),
        });
        let mut e = p.event(EventKind::NodeFailed, Level::Error, Some(node));
        e.message = Some(error.clone());
        e.payload = output.as_ref().and_then(|o| summarize(o, max));
        let mut events = std::mem::take(&mut p.pending);
        events.push(e);
        self.end_attempt(p, Some(node.id.clone()), error, retryable, events)
    }

    /// Run-level failure without a node (e.g. the stored DSL no longer parses).
    fn fail(&self, p: &mut Progress, node: Option<String>, error: String, retryable: bool) -> End {
        let events = std::mem::take(&mut p.pending);
        self.end_attempt(p, node, error, retryable, events)
    }

    /// Retry with backoff while attempts remain and the error is transient; otherwise fail the run.
    fn end_attempt(
        &self,
        p: &mut Progress,
        failed_node: Option<String>,
        error: String,
        retryable: bool,
        mut events: Vec<NewEvent>,
    ) -> End {
        let run = &p.run;
        let retry = retryable && run.attempt_count < run.max_attempts;
        let mut e = event(
            run,
            if retry {
                EventKind::RunRetried
            } else {
                EventKind::RunFailed
            },
            if retry { Level::Warn } else { Level::Error },
            None,
        );
        e.message = Some(error.clone());
        e.payload = Some(
            json!({"attemptCount": run.attempt_count, "maxAttempts": run.max_attempts, "error": error}),
        );
        events.push(e);
        let kind = if retry {
            let base = self.config.retry_backoff_ms;
            EndKind::Retry(Utc::now() + backoff(base, run.attempt_count))
        } else {
            EndKind::Failed
        };
        End {
            kind,
            output: p.output(StepStatus::Failed, failed_node.as_deref()),
            error: Some(error),
            events,
            clear_rows: p.take_rows_to_clear(),
        }
    }
}

fn log_started(run: &Run, resumed: bool) {
    if resumed {
        tracing::info!(event = "workflow_run_resumed", runId = %run.id, workflowId = %run.workflow_id, orgId = %run.organization_id,
            attemptCount = run.attempt_count, cursorNodeIndex = run.cursor_node_index, "run resumed");
    } else {
        tracing::info!(event = "workflow_run_started", runId = %run.id, workflowId = %run.workflow_id, orgId = %run.organization_id,
            attemptCount = run.attempt_count, "run started");
    }
}

/// Nodes whose execution has no effect outside the run (stubs and inline evaluations): they need no
/// commit of their own. Everything else (HTTP calls, connector actions, …) is committed around.
fn is_pure(node: &Node) -> bool {
    match &node.spec {
        NodeSpec::HttpRequest(config) => config.is_none(),
        NodeSpec::AgentExecute(_) => !node.is_remote(),
        NodeSpec::Condition(_) | NodeSpec::ParallelJoin(_) => true,
        NodeSpec::AgentRun(_) | NodeSpec::ConnectorAction(_) | NodeSpec::GithubIssueCreate(_) => {
            false
        }
    }
}

/// Exponential backoff from `base_ms` (attempt 1 → base), with ±20 % jitter so retries do not align.
pub fn backoff(base_ms: u64, attempt: i32) -> chrono::Duration {
    let exp = (attempt.max(1) - 1).min(10) as u32;
    let ms = base_ms.saturating_mul(1u64 << exp) as f64;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    chrono::Duration::milliseconds((ms * jitter) as i64)
}
