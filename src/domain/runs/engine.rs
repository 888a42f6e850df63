//! Executes one delivery of a run: claim it in PostgreSQL (the truth), run its nodes from where it stands,
//! checkpoint after every node in the same transaction as the node's event, and end it (succeeded, retry
//! scheduled, or failed). A delivery of a run that is finished, blocked or held by a live lease does nothing,
//! so duplicate deliveries are harmless.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncPgConnection;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::executors::{self, ExecCtx, ExecDeps, Outcome};
use super::model::{summarize, NewEvent, Run};
use super::store;
use crate::app::state::AppState;
use crate::domain::orgs;
use crate::domain::workflows::dsl::{self, EdgeKind, Graph, Node, Plan};
use crate::platform::db::{self, DbError, OpenTx, TenantCtx};
use crate::platform::queue::WorkQueue;

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
}

pub struct Engine {
    pub state: AppState,
    pub deps: ExecDeps,
    pub queue: WorkQueue,
    pub worker_id: String,
}

/// The mutable picture of one run while it executes.
struct Progress {
    run: Run,
    steps: Vec<Value>,
    runtime: Option<Value>,
    /// Events of pure nodes not yet committed; they go out with the next commit (see [`is_pure`]).
    pending: Vec<NewEvent>,
    /// The resume cursor to store with the next commit.
    cursor: i32,
    /// The claim's transaction, still open: pure nodes run under it and the first commit closes it, so a
    /// run of pure nodes costs one commit from claim to finish.
    open: Option<OpenTx>,
}

impl Progress {
    fn succeeded_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s["status"] == "succeeded")
            .count()
    }

    fn step_of(&self, node_id: &str) -> Option<&Value> {
        self.steps.iter().find(|s| s["nodeId"] == node_id)
    }

    fn output(&self, status: &str, failed_node: Option<&str>) -> Value {
        let mut out = json!({
            "status": status,
            "steps": self.steps,
            "output": { "completedNodeCount": self.succeeded_count(), "failedNodeId": failed_node },
        });
        if let (Some(rt), Some(obj)) = (&self.runtime, out.as_object_mut()) {
            obj.insert("runtime".into(), rt.clone());
        }
        out
    }
}

fn event(run: &Run, kind: &'static str, level: &'static str, node: Option<&Node>) -> NewEvent {
    NewEvent {
        organization_id: run.organization_id,
        workflow_id: run.workflow_id,
        run_id: run.id,
        attempt_count: run.attempt_count,
        event_type: kind,
        node_id: node.map(|n| n.id.clone()),
        node_type: node.map(|n| n.node_type.clone()),
        level,
        message: None,
        payload: None,
    }
}

enum Decided {
    Take(Box<Run>, Value, bool),
    Done(Delivery),
}

enum Claimed {
    /// The run, its DSL, whether this resumes a dead worker's attempt, and the claim's open transaction.
    Run(Box<Run>, Value, bool, OpenTx),
    Done(Delivery),
}

impl Engine {
    fn lease_secs(&self) -> u64 {
        self.state.config.workflows.lease_secs
    }

    async fn tx<'a, R, F>(&self, org: Uuid, f: F) -> Result<R, EngineError>
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
        db::tenant_tx(&self.state.db, TenantCtx::org(org), f).await
    }

    /// Handles one delivery of `run_id`.
    pub async fn process(
        &self,
        org: Uuid,
        run_id: Uuid,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, EngineError> {
        let span = tracing::info_span!("run", run_id = %run_id, org_id = %org);
        self.process_in_span(org, run_id, stop)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        org: Uuid,
        run_id: Uuid,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, EngineError> {
        // Read before the claim: once the claim's transaction is open this task holds a pooled connection,
        // and asking the pool for a second one could deadlock a fully busy worker.
        let settings = orgs::stored_settings(&self.state, org)
            .await
            .map_err(|e| EngineError::Settings(e.to_string()))?;
        let claimed = self.claim(org, run_id).await?;
        let (run, dsl_doc, resumed, open) = match claimed {
            Claimed::Run(run, dsl, resumed, open) => (*run, dsl, resumed, open),
            Claimed::Done(d) => return Ok(d),
        };
        let ids = (
            run.id,
            run.workflow_id,
            run.organization_id,
            run.attempt_count,
        );
        if resumed {
            tracing::info!(event = "workflow_run_resumed", runId = %ids.0, workflowId = %ids.1, orgId = %ids.2,
                attemptCount = ids.3, cursorNodeIndex = run.cursor_node_index, "run resumed");
        } else {
            tracing::info!(event = "workflow_run_started", runId = %ids.0, workflowId = %ids.1, orgId = %ids.2,
                attemptCount = ids.3, "run started");
        }
        let mut progress = Progress {
            steps: run
                .output
                .as_ref()
                .and_then(|o| o.get("steps"))
                .and_then(Value::as_array)
                .map(|steps| {
                    steps
                        .iter()
                        .filter(|s| s["status"] == "succeeded")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            runtime: run.output.as_ref().and_then(|o| o.get("runtime")).cloned(),
            pending: Vec::new(),
            cursor: run.cursor_node_index,
            open: Some(open),
            run,
        };

        // The lease is renewed while we work; losing it means another worker owns the run now.
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = self.spawn_heartbeat(org, run_id, lost.clone());
        let result = match dsl::parse(&dsl_doc) {
            Err(e) => {
                self.fail(&mut progress, None, e.code().to_string(), false)
                    .await
            }
            Ok(parsed) => match parsed.plan {
                Plan::Sequence(nodes) => {
                    self.run_sequence(&mut progress, &nodes, &settings, stop, &lost)
                        .await
                }
                Plan::Graph(graph) => {
                    self.run_graph(&mut progress, &graph, &settings, stop, &lost)
                        .await
                }
            },
        };
        let _ = heartbeat.send(true);
        result
    }

    /// Renews the lease until told to stop. It is stopped by message, never aborted: aborting it in the
    /// middle of its transaction would hand a half-used connection back to the pool.
    fn spawn_heartbeat(&self, org: Uuid, run: Uuid, lost: Arc<AtomicBool>) -> watch::Sender<bool> {
        let (done_tx, mut done) = watch::channel(false);
        let (db, queue, worker, secs) = (
            self.state.db.clone(),
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
                        let _ = queue.heartbeat(org, run, Duration::from_secs(secs)).await;
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
    async fn claim(&self, org: Uuid, run_id: Uuid) -> Result<Claimed, EngineError> {
        let mut tx = OpenTx::begin(&self.state.db, TenantCtx::org(org)).await?;
        let decided = self.claim_in(tx.conn(), org, run_id).await?;
        match decided {
            Decided::Take(run, dsl_doc, resumed) => Ok(Claimed::Run(run, dsl_doc, resumed, tx)),
            Decided::Done(Delivery::Failed) => {
                tx.commit().await?;
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
        org: Uuid,
        run_id: Uuid,
    ) -> Result<Decided, EngineError> {
        let (worker, lease) = (self.worker_id.clone(), self.lease_secs());
        let Some(run) = store::status_for_update(c, run_id).await? else {
            tracing::warn!(event = "workflow_run_orphaned", reasonCode = "RUN_NOT_FOUND", runId = %run_id, orgId = %org, "run not found");
            return Ok(Decided::Done(Delivery::Skipped));
        };
        let now = Utc::now();
        match run.status.as_str() {
            "queued" => {
                if let Some(at) = run.next_attempt_at.filter(|at| *at > now) {
                    return Ok(Decided::Done(Delivery::NotYetDue(at.timestamp_millis())));
                }
            }
            "running"
                if run.blocked_request_id.is_none()
                    && run.lease_expires_at.is_none_or(|t| t <= now) => {}
            _ => return Ok(Decided::Done(Delivery::Skipped)),
        }
        let Some((wf_status, dsl_doc)) = store::workflow_state(c, run.workflow_id).await? else {
            tracing::warn!(event = "workflow_run_orphaned", reasonCode = "WORKFLOW_NOT_FOUND", runId = %run_id, workflowId = %run.workflow_id, orgId = %org, "workflow not found");
            return Ok(Decided::Done(Delivery::Skipped));
        };
        if run.status == "queued" {
            if wf_status != "published" {
                store::finish(
                    c,
                    run_id,
                    None,
                    "failed",
                    run.output.as_ref(),
                    Some("WORKFLOW_NOT_PUBLISHED"),
                )
                .await?;
                let mut e = event(&run, "run_failed", "error", None);
                e.message = Some("WORKFLOW_NOT_PUBLISHED".into());
                e.payload = Some(json!({"reasonCode": "WORKFLOW_NOT_PUBLISHED"}));
                store::append_events(c, &[e]).await?;
                tracing::error!(event = "workflow_run_failed", reasonCode = "WORKFLOW_NOT_PUBLISHED", runId = %run_id, workflowId = %run.workflow_id, orgId = %org, "run failed");
                return Ok(Decided::Done(Delivery::Failed));
            }
            let started = store::start_attempt(c, run_id, &worker, lease).await?;
            let mut e = event(&started, "run_started", "info", None);
            e.payload = Some(
                json!({"runId": run_id, "workflowId": started.workflow_id, "orgId": org, "attemptCount": started.attempt_count}),
            );
            store::append_events(c, &[e]).await?;
            Ok(Decided::Take(Box::new(started), dsl_doc, false))
        } else {
            // The previous worker died: same attempt, from the last checkpoint.
            let taken = store::take_over(c, run_id, &worker, lease).await?;
            Ok(Decided::Take(Box::new(taken), dsl_doc, true))
        }
    }

    /// Commits `f`'s writes: inside the claim's still-open transaction when there is one, else in a new one.
    async fn commit_in<'a, R, F>(
        &self,
        open: &mut Option<OpenTx>,
        org: Uuid,
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
        match open.take() {
            Some(mut tx) => {
                let r = f(tx.conn()).await?;
                tx.commit().await?;
                Ok(r)
            }
            None => self.tx(org, f).await,
        }
    }

    /// Runs a node through its executor (or inline for v3 condition/join via `inline`).
    async fn exec(&self, p: &Progress, node: &Node, settings: &Value) -> Outcome {
        let input = p.run.input.clone().unwrap_or(Value::Null);
        let ctx = ExecCtx {
            org_id: p.run.organization_id,
            workflow_id: p.run.workflow_id,
            run_id: p.run.id,
            attempt: p.run.attempt_count,
            requested_by: p.run.requested_by_user_id,
            node,
            run_input: &input,
            steps: &p.steps,
            settings,
        };
        executors::execute(&self.deps, &ctx).await
    }

    /// Commits the progress so far (steps, cursor) with the pending events. `false` = lease lost.
    async fn flush(&self, p: &mut Progress) -> Result<bool, EngineError> {
        let events = std::mem::take(&mut p.pending);
        let snapshot = p.output("succeeded", None);
        let (run_id, worker, cursor) = (p.run.id, self.worker_id.clone(), p.cursor);
        self.commit_in(&mut p.open, p.run.organization_id, |c| {
            async move {
                if !store::checkpoint(c, run_id, &worker, &snapshot, cursor).await? {
                    return Ok(false);
                }
                store::append_events(c, &events).await?;
                Ok(true)
            }
            .scope_boxed()
        })
        .await
    }

    /// A node is about to run. Before a node with effects outside the run, its start (and everything
    /// pending) is committed, so that a re-execution after a crash is visible in the events.
    async fn node_started(&self, p: &mut Progress, node: &Node) -> Result<bool, EngineError> {
        p.pending
            .push(event(&p.run, "node_started", "info", Some(node)));
        if is_pure(node) {
            return Ok(true);
        }
        self.flush(p).await
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
        let max = self.state.config.workflows.event_payload_max_chars;
        let mut e = event(&p.run, "node_succeeded", "info", Some(node));
        e.payload = summarize(&output, max);
        p.pending.push(e);
        p.steps.push(json!({"nodeId": node.id, "nodeType": node.node_type, "status": "succeeded", "output": output}));
        p.cursor = cursor;
        if is_pure(node) {
            return Ok(true);
        }
        self.flush(p).await
    }

    async fn run_sequence(
        &self,
        p: &mut Progress,
        nodes: &[Node],
        settings: &Value,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Delivery, EngineError> {
        for (index, node) in nodes.iter().enumerate() {
            if p.step_of(&node.id).is_some() {
                continue; // succeeded in an earlier attempt or before a crash: never again
            }
            if let Some(d) = self.interrupted(p, stop, lost).await? {
                return Ok(d);
            }
            if !self.node_started(p, node).await? {
                return Ok(Delivery::LeaseLost);
            }
            match self.exec(p, node, settings).await {
                Outcome::Succeeded(out) => {
                    if !self.node_succeeded(p, node, out, index as i32 + 1).await? {
                        return Ok(Delivery::LeaseLost);
                    }
                }
                Outcome::Failed {
                    error,
                    output,
                    retryable,
                } => {
                    return self.node_failed(p, node, error, output, retryable).await;
                }
            }
        }
        self.succeed(p).await
    }

    async fn run_graph(
        &self,
        p: &mut Progress,
        graph: &Graph,
        settings: &Value,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Delivery, EngineError> {
        let input = p.run.input.clone().unwrap_or(Value::Null);
        loop {
            let ready = ready_nodes(graph, &p.steps);
            p.runtime = Some(graph_runtime(p.runtime.take(), graph, &p.steps, &ready));
            let Some(key) = ready.first() else { break };
            let Some(node) = graph.nodes.get(key) else {
                break;
            };
            if let Some(d) = self.interrupted(p, stop, lost).await? {
                return Ok(d);
            }
            if !self.node_started(p, node).await? {
                return Ok(Delivery::LeaseLost);
            }
            let outcome = match node.node_type.as_str() {
                "condition" => {
                    match executors::condition::evaluate_condition(node.config.as_ref(), &input) {
                        Ok(out) => Outcome::Succeeded(out),
                        Err(code) => Outcome::fail(code, false),
                    }
                }
                "parallel.join" => Outcome::Succeeded(join_output(graph, &node.id, &p.steps)),
                _ => self.exec(p, node, settings).await,
            };
            match outcome {
                Outcome::Succeeded(out) => {
                    if !self.node_succeeded(p, node, out, 0).await? {
                        return Ok(Delivery::LeaseLost);
                    }
                }
                Outcome::Failed {
                    error,
                    output,
                    retryable,
                } => {
                    return self.node_failed(p, node, error, output, retryable).await;
                }
            }
        }
        // Nodes without a step were skipped: say why, once each (capped), then succeed.
        let max = self.state.config.workflows.event_payload_max_chars;
        let mut skipped = serde_json::Map::new();
        let mut events = Vec::new();
        for (key, node) in &graph.nodes {
            if p.step_of(key).is_some() {
                continue;
            }
            let info = skip_reason(graph, key, &p.steps);
            if events.len() < 500 {
                let mut e = event(&p.run, "node_skipped", "info", Some(node));
                e.payload = summarize(&info, max);
                events.push(e);
            }
            skipped.insert(key.clone(), info);
        }
        if let Some(Value::Object(rt)) = p.runtime.as_mut() {
            if let Some(Value::Object(g)) = rt.get_mut("graphV3") {
                g.insert("skipped".into(), Value::Object(skipped));
            }
        }
        p.pending.extend(events);
        self.succeed(p).await
    }

    /// Between nodes: stop when the lease is gone or the process is shutting down (handing the run back).
    async fn interrupted(
        &self,
        p: &mut Progress,
        stop: &watch::Receiver<bool>,
        lost: &AtomicBool,
    ) -> Result<Option<Delivery>, EngineError> {
        if lost.load(Ordering::SeqCst) {
            return Ok(Some(Delivery::LeaseLost));
        }
        if *stop.borrow() {
            // Keep what pure nodes did, then hand the run back.
            if !p.pending.is_empty() && !self.flush(p).await? {
                return Ok(Some(Delivery::LeaseLost));
            }
            let (run_id, worker) = (p.run.id, self.worker_id.clone());
            self.commit_in(&mut p.open, p.run.organization_id, |c| {
                async move { Ok(store::release(c, run_id, &worker).await?) }.scope_boxed()
            })
            .await?;
            return Ok(Some(Delivery::Released));
        }
        Ok(None)
    }

    async fn succeed(&self, p: &mut Progress) -> Result<Delivery, EngineError> {
        let output = p.output("succeeded", None);
        let mut e = event(&p.run, "run_succeeded", "info", None);
        e.payload = Some(json!({"completedNodeCount": p.succeeded_count()}));
        let mut events = std::mem::take(&mut p.pending);
        events.push(e);
        let (run_id, worker) = (p.run.id, self.worker_id.clone());
        let done = self
            .commit_in(&mut p.open, p.run.organization_id, |c| {
                async move {
                    if !store::finish(c, run_id, Some(&worker), "succeeded", Some(&output), None)
                        .await?
                    {
                        return Ok(false);
                    }
                    store::append_events(c, &events).await?;
                    Ok(true)
                }
                .scope_boxed()
            })
            .await?;
        if !done {
            return Ok(Delivery::LeaseLost);
        }
        let r = &p.run;
        tracing::info!(event = "workflow_run_succeeded", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id, attemptCount = r.attempt_count, "run succeeded");
        Ok(Delivery::Succeeded)
    }

    async fn node_failed(
        &self,
        p: &mut Progress,
        node: &Node,
        error: String,
        output: Option<Value>,
        retryable: bool,
    ) -> Result<Delivery, EngineError> {
        let max = self.state.config.workflows.event_payload_max_chars;
        let mut step = json!({"nodeId": node.id, "nodeType": node.node_type, "status": "failed", "error": error});
        if let Some(out) = &output {
            step["output"] = out.clone();
        }
        p.steps.push(step);
        let mut e = event(&p.run, "node_failed", "error", Some(node));
        e.message = Some(error.clone());
        e.payload = output.as_ref().and_then(|o| summarize(o, max));
        let mut events = std::mem::take(&mut p.pending);
        events.push(e);
        self.end_attempt(p, Some(node.id.clone()), error, retryable, events)
            .await
    }

    /// Run-level failure without a node (e.g. the stored DSL no longer parses).
    async fn fail(
        &self,
        p: &mut Progress,
        node: Option<String>,
        error: String,
        retryable: bool,
    ) -> Result<Delivery, EngineError> {
        let events = std::mem::take(&mut p.pending);
        self.end_attempt(p, node, error, retryable, events).await
    }

    /// Retry with backoff while attempts remain and the error is transient; otherwise fail the run.
    async fn end_attempt(
        &self,
        p: &mut Progress,
        failed_node: Option<String>,
        error: String,
        retryable: bool,
        mut events: Vec<NewEvent>,
    ) -> Result<Delivery, EngineError> {
        let run = &p.run;
        let output = p.output("failed", failed_node.as_deref());
        let payload = json!({"attemptCount": run.attempt_count, "maxAttempts": run.max_attempts, "error": error});
        let retry = retryable && run.attempt_count < run.max_attempts;
        let (run_id, org, worker) = (run.id, run.organization_id, self.worker_id.clone());
        let mut e = event(
            run,
            if retry { "run_retried" } else { "run_failed" },
            if retry { "warn" } else { "error" },
            None,
        );
        e.message = Some(error.clone());
        e.payload = Some(payload);
        events.push(e);
        let due = Utc::now()
            + backoff(
                self.state.config.workflows.retry_backoff_ms,
                run.attempt_count,
            );
        let err = error.clone();
        let applied = self
            .commit_in(&mut p.open, org, |c| {
                async move {
                    let ok = if retry {
                        store::schedule_retry(c, run_id, &worker, &output, &err, due).await?
                    } else {
                        store::finish(
                            c,
                            run_id,
                            Some(&worker),
                            "failed",
                            Some(&output),
                            Some(&err),
                        )
                        .await?
                    };
                    if ok {
                        store::append_events(c, &events).await?;
                    }
                    Ok(ok)
                }
                .scope_boxed()
            })
            .await?;
        if !applied {
            return Ok(Delivery::LeaseLost);
        }
        let r = &p.run;
        if retry {
            tracing::warn!(event = "workflow_run_retried", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id,
                attemptCount = r.attempt_count, maxAttempts = r.max_attempts, error = %error, "run will be retried");
            Ok(Delivery::RetryScheduled(due.timestamp_millis()))
        } else {
            tracing::error!(event = "workflow_run_failed", runId = %r.id, workflowId = %r.workflow_id, orgId = %r.organization_id,
                attemptCount = r.attempt_count, maxAttempts = r.max_attempts, error = %error, "run failed");
            Ok(Delivery::Failed)
        }
    }
}

/// Nodes whose execution has no effect outside the run (stubs and inline evaluations): they need no
/// commit of their own. Everything else (HTTP calls, connector actions, …) is committed around.
fn is_pure(node: &Node) -> bool {
    match node.node_type.as_str() {
        "http.request" => node.config.is_none(),
        "agent.execute" => !dsl::is_remote(node),
        "condition" | "parallel.join" => true,
        _ => false,
    }
}

/// Exponential backoff from `base_ms` (attempt 1 → base), with ±20 % jitter so retries do not align.
pub fn backoff(base_ms: u64, attempt: i32) -> chrono::Duration {
    let exp = (attempt.max(1) - 1).min(10) as u32;
    let ms = base_ms.saturating_mul(1u64 << exp) as f64;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    chrono::Duration::milliseconds((ms * jitter) as i64)
}

fn step_output<'a>(steps: &'a [Value], id: &str) -> Option<&'a Value> {
    steps.iter().find(|s| s["nodeId"] == id)
}

/// Why an edge is (not) satisfied: `OK`, `UPSTREAM_NOT_SUCCEEDED`, `CONDITION_RESULT_MISSING`, `CONDITION_NOT_MET`.
fn edge_reason(steps: &[Value], from: &str, kind: EdgeKind) -> &'static str {
    let Some(step) = step_output(steps, from).filter(|s| s["status"] == "succeeded") else {
        return "UPSTREAM_NOT_SUCCEEDED";
    };
    let want = match kind {
        EdgeKind::Always => return "OK",
        EdgeKind::CondTrue => true,
        EdgeKind::CondFalse => false,
    };
    match step["output"]["result"].as_bool() {
        None => "CONDITION_RESULT_MISSING",
        Some(r) if r == want => "OK",
        Some(_) => "CONDITION_NOT_MET",
    }
}

fn kind_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Always => "always",
        EdgeKind::CondTrue => "cond_true",
        EdgeKind::CondFalse => "cond_false",
    }
}

/// Ready = no step yet and every incoming edge satisfied; in key order (deterministic).
fn ready_nodes(graph: &Graph, steps: &[Value]) -> Vec<String> {
    let done: HashSet<&str> = steps.iter().filter_map(|s| s["nodeId"].as_str()).collect();
    graph
        .nodes
        .keys()
        .filter(|k| !done.contains(k.as_str()))
        .filter(|k| {
            graph
                .edges
                .iter()
                .filter(|e| &e.to == *k)
                .all(|e| edge_reason(steps, &e.from, e.kind) == "OK")
        })
        .cloned()
        .collect()
}

fn join_output(graph: &Graph, id: &str, steps: &[Value]) -> Value {
    let incoming: Vec<&str> = graph
        .edges
        .iter()
        .filter(|e| e.to == id)
        .map(|e| e.from.as_str())
        .collect();
    let satisfied = graph
        .edges
        .iter()
        .filter(|e| e.to == id && edge_reason(steps, &e.from, e.kind) == "OK")
        .count();
    json!({"joined": true, "requiredIncoming": incoming.len(), "satisfiedIncoming": satisfied, "incomingFrom": incoming})
}

fn skip_reason(graph: &Graph, id: &str, steps: &[Value]) -> Value {
    let incoming: Vec<_> = graph.edges.iter().filter(|e| e.to == id).collect();
    let reached = incoming
        .iter()
        .any(|e| step_output(steps, &e.from).is_some());
    let blockers: Vec<Value> = incoming
        .iter()
        .filter_map(|e| {
            let reason = edge_reason(steps, &e.from, e.kind);
            (reason != "OK")
                .then(|| json!({"from": e.from, "kind": kind_name(e.kind), "reasonCode": reason}))
        })
        .collect();
    json!({
        "reasonCode": if reached { "DEPENDENCIES_NOT_SATISFIED" } else { "NOT_REACHED" },
        "blockers": blockers,
    })
}

/// `runtime.graphV3`: what completed, what is ready, condition results and join states.
fn graph_runtime(
    previous: Option<Value>,
    graph: &Graph,
    steps: &[Value],
    ready: &[String],
) -> Value {
    let mut conditions = BTreeMap::new();
    let mut joins = BTreeMap::new();
    for (key, node) in &graph.nodes {
        match node.node_type.as_str() {
            "condition" => {
                if let Some(s) = step_output(steps, key) {
                    let explain = &s["output"]["explain"];
                    conditions.insert(key.clone(), json!({
                        "result": s["output"]["result"], "path": explain["path"], "op": explain["op"], "expected": explain["expected"],
                    }));
                }
            }
            "parallel.join" => {
                let incoming: Vec<Value> = graph
                    .edges
                    .iter()
                    .filter(|e| &e.to == key)
                    .map(|e| {
                        let reason = edge_reason(steps, &e.from, e.kind);
                        json!({"from": e.from, "kind": kind_name(e.kind), "satisfied": reason == "OK", "reasonCode": reason})
                    })
                    .collect();
                let satisfied = incoming.iter().filter(|i| i["satisfied"] == true).count();
                joins.insert(key.clone(), json!({"requiredIncoming": incoming.len(), "satisfiedIncoming": satisfied, "incoming": incoming}));
            }
            _ => {}
        }
    }
    let completed: Vec<&str> = steps.iter().filter_map(|s| s["nodeId"].as_str()).collect();
    let mut rt = match previous {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    rt.insert(
        "graphV3".into(),
        json!({"completedNodeIds": completed, "readyNodeIds": ready, "conditions": conditions, "joins": joins}),
    );
    Value::Object(rt)
}
