//! The continuation role (workflows spec 6.2-6.4): runs blocked on a remote node resume without holding
//! a worker slot. Resume is pushed: the gateway pushes each finished dispatch (`remote.apply`) and the
//! run is re-enqueued at once. A periodic sweep over blocked runs is the fallback: it applies a stored
//! result whose push was lost, fails a run past its blocked timeout with `NODE_EXECUTION_TIMEOUT`, and
//! dispatches again a block that a crash kept from being sent.
//!
//! Every path applies through one compare-and-set on `blocked_request_id`, so of a racing push, sweep
//! and timeout exactly one takes effect, and its event is written in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use fred::interfaces::{ClientLike, KeysInterface, ListInterface};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::WorkflowsConfig;
use super::live::LiveEvents;
use super::model::{summarize, EventKind, Level, NewEvent};
use super::store;
use crate::domain::common::ids::{OrgId, RunId};
use crate::domain::gateway::dispatch::RemoteApply;
use crate::domain::gateway::results;
use crate::domain::workflows::dsl::NodeType;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};
use crate::platform::queue::WorkQueue;
use crate::platform::redis::Redis;

/// What the continuation is built from.
pub struct ContinuationParts {
    pub config: Arc<WorkflowsConfig>,
    pub db: PgPool,
    pub redis: Redis,
    pub queue: WorkQueue,
    pub live: Arc<LiveEvents>,
}

pub struct Continuation {
    config: Arc<WorkflowsConfig>,
    db: PgPool,
    redis: Redis,
    queue: WorkQueue,
    live: Arc<LiveEvents>,
}

/// What became of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The block was cleared and the run re-enqueued.
    Resumed,
    /// The run no longer waits on that request (already applied, timed out, or gone).
    Stale,
}

impl Continuation {
    pub fn new(parts: ContinuationParts) -> Self {
        Self {
            config: parts.config,
            db: parts.db,
            redis: parts.redis,
            queue: parts.queue,
            live: parts.live,
        }
    }

    /// Applies `result` to the run blocked on `request_id`: the block is cleared and the result stored
    /// for the resumed attempt (whose resume pass records the node's success or failure, retrying as
    /// any node failure), then the run is enqueued. `result = None` clears the block to dispatch again.
    pub async fn apply(
        &self,
        org: OrgId,
        run: RunId,
        request_id: &str,
        result: Option<&Value>,
    ) -> Result<Applied, DbError> {
        let max = self.config.event_payload_max_chars;
        let applied = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let Some(u) = store::unblock(c, run, request_id, result).await? else {
                    return Ok::<_, DbError>(false);
                };
                if let Some(result) = result {
                    let status = result.get("status").cloned().unwrap_or(Value::Null);
                    let mut payload = serde_json::Map::new();
                    payload.insert("requestId".into(), json!(request_id));
                    payload.insert("status".into(), status);
                    if let Some(e) = result.get("error") {
                        payload.insert("error".into(), e.clone());
                    }
                    if let Some(out) = result.get("output").and_then(|o| summarize(o, max)) {
                        payload.insert("output".into(), out);
                    }
                    let payload = Value::Object(payload);
                    let event = NewEvent {
                        organization_id: org,
                        workflow_id: u.workflow_id,
                        run_id: run,
                        attempt_count: u.attempt_count,
                        event_type: EventKind::RemoteResultReceived,
                        node_id: u.node_id,
                        node_type: u.node_type.as_deref().and_then(NodeType::parse),
                        level: Level::Info,
                        message: None,
                        payload: Some(payload),
                    };
                    store::append_events(c, &[event]).await?;
                }
                Ok(true)
            }
            .scope_boxed()
        })
        .await?;
        if !applied {
            return Ok(Applied::Stale);
        }
        if result.is_some() {
            self.live.notify([run]);
        }
        // A failed enqueue leaves the run running without a lease: the worker's sweep re-enqueues it.
        if let Err(e) = self.queue.enqueue(org.uuid(), run.uuid()).await {
            tracing::warn!(run_id = %run, org_id = %org, error = %e, "resumed run not enqueued; the sweep will");
        }
        Ok(Applied::Resumed)
    }

    /// Applies one pushed message.
    async fn on_push(&self, text: &str) {
        let msg: RemoteApply = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable continuation message dropped");
                return;
            }
        };
        let result = match serde_json::to_value(&msg.result) {
            Ok(v) => v,
            Err(_) => return,
        };
        let (org, run) = (OrgId::from(msg.organization_id), RunId::from(msg.run_id));
        match self.apply(org, run, &msg.request_id, Some(&result)).await {
            Ok(applied) => {
                tracing::info!(event = "workflow_remote_result_applied", runId = %run, orgId = %org, requestId = %msg.request_id, ?applied, "remote result");
            }
            // The stored result stays: the sweep applies it once the database is back.
            Err(e) => {
                tracing::warn!(run_id = %run, error = %e, "remote result not applied yet")
            }
        }
    }

    /// One pass over blocked runs: stored results whose push was lost, timeouts, unsent dispatches.
    pub async fn sweep(&self) -> Result<(), DbError> {
        let blocked = {
            let mut c = db::conn(&self.db).await?;
            store::blocked_runs(&mut c, 1000).await?
        };
        let now = Utc::now();
        let redispatch_after =
            chrono::Duration::milliseconds(self.config.redispatch_after_ms as i64);
        for b in blocked {
            let (org, run) = (b.organization_id, b.run_id);
            let state = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
                async move { store::block_state(c, run).await.map_err(DbError::from) }.scope_boxed()
            })
            .await?;
            let Some(store::BlockState {
                request_id: Some(request_id),
                blocked_at,
                timeout_at,
            }) = state
            else {
                continue;
            };
            let stored: Option<String> = self
                .redis
                .client
                .get(self.redis.key(&results::result_key(&request_id)))
                .await
                .unwrap_or(None);
            if let Some(result) = stored.and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
                self.apply(org, run, &request_id, Some(&result)).await?;
                continue;
            }
            if timeout_at.is_some_and(|t| t <= now) {
                tracing::warn!(run_id = %run, request_id = %request_id, "remote node timed out");
                let timeout = json!({"status": "failed", "error": "NODE_EXECUTION_TIMEOUT"});
                self.apply(org, run, &request_id, Some(&timeout)).await?;
                continue;
            }
            if blocked_at.is_some_and(|t| t + redispatch_after <= now) {
                let running: Result<i64, _> = self
                    .redis
                    .client
                    .exists(self.redis.key(&results::inflight_key(&request_id)))
                    .await;
                if matches!(running, Ok(0)) {
                    // Recorded but never sent (or the gateway lost it): the resumed attempt sends it again.
                    tracing::warn!(run_id = %run, request_id = %request_id, "blocked run without a dispatch; dispatching again");
                    self.apply(org, run, &request_id, None).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts the push consumer and the sweep; both stop when `stop` turns true.
    pub fn spawn(self: Arc<Self>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let sweeper = Arc::clone(&self);
        let mut sweep_stop = stop.clone();
        let every = Duration::from_millis(self.config.continuation_poll_ms.max(50));
        let sweep = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = sweep_stop.changed() => return,
                }
                if let Err(e) = sweeper.sweep().await {
                    tracing::warn!(error = %e, "continuation sweep failed");
                }
            }
        });
        tokio::spawn(async move {
            tracing::info!(event = "continuation_ready", "continuation ready");
            self.consume(stop).await;
            sweep.abort();
            tracing::info!("continuation stopped");
        })
    }

    /// Pops pushed results (a blocking pop on a connection of its own) until stopped.
    async fn consume(&self, mut stop: watch::Receiver<bool>) {
        let key = self.redis.key(results::CONTINUATIONS);
        let mut blocking = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if blocking.is_none() {
                let c = self.redis.client.clone_new();
                c.connect();
                match c.wait_for_connect().await {
                    Ok(()) => blocking = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "continuation cannot reach Redis; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => return,
                        }
                        continue;
                    }
                }
            }
            let Some(client) = &blocking else { continue };
            let popped: Result<Option<(String, String)>, _> = tokio::select! {
                r = client.brpop(&key, 1.0) => r,
                _ = stop.changed() => return,
            };
            match popped {
                Ok(Some((_, text))) => self.on_push(&text).await,
                Ok(None) => {}
                Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => {}
                Err(e) => {
                    tracing::warn!(error = %e, "continuation pop failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
