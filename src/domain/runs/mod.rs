//! Runs: creation and reading (the [`Runs`] service), the worker engine on the Redis work queue, node
//! executors and run events.

pub mod config;
pub mod continuation;
pub mod engine;
pub mod error;
pub mod executors;
pub mod intake;
pub mod live;
pub mod metrics;
pub mod model;
pub mod remote;
pub mod routes;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::scoped_futures::ScopedFutureExt;
use serde_json::Value;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::{EventId, OrgId, RunId, WorkflowId};
use crate::domain::common::page::{next_cursor, Page, Position};
use crate::domain::workflows::dsl::spec::NodeType;
use crate::platform::db::TenantCtx;
use crate::platform::db::{self, PgPool};
use crate::platform::queue::WorkQueue;
pub use error::RunError;
use intake::{CreateRun, RunIntake};
use live::{EventStream, LiveEvents};
use model::{Event, EventKind, Level, NewEvent, Run};

/// What the runs service is built from.
pub struct RunsParts {
    pub db: PgPool,
    pub queue: WorkQueue,
    /// How long run creation waits for Redis before answering 503.
    pub enqueue_timeout: Duration,
    /// Attempts a new run gets.
    pub retry_attempts: i32,
    /// Live event streams.
    pub live: Arc<LiveEvents>,
}

pub struct Runs {
    db: PgPool,
    intake: RunIntake,
    retry_attempts: i32,
    live: Arc<LiveEvents>,
}

impl Runs {
    /// Builds the service and starts its intake task (group commit; see [`intake`]).
    pub fn new(parts: RunsParts) -> Self {
        Self {
            intake: RunIntake::spawn(parts.db.clone(), parts.queue, parts.enqueue_timeout),
            db: parts.db,
            retry_attempts: parts.retry_attempts,
            live: parts.live,
        }
    }

    /// Wakes this instance's live event streams on the announcements of every instance (the api role).
    pub fn listen(&self) {
        self.live.listen();
    }

    /// Creates a queued run of a published workflow and enqueues it; answers once both are done (or
    /// neither is).
    pub async fn create(
        &self,
        ctx: &OrgCtx,
        workflow: WorkflowId,
        input: Option<Value>,
    ) -> Result<Run, RunError> {
        self.intake
            .create(CreateRun {
                org: ctx.org_id,
                user: ctx.user.user_id,
                workflow,
                input,
                max_attempts: self.retry_attempts,
            })
            .await
    }

    /// The workflow's runs, newest first, and the cursor of the last one.
    pub async fn list(
        &self,
        ctx: &OrgCtx,
        workflow: WorkflowId,
        page: Page,
    ) -> Result<(Vec<Run>, Option<String>), RunError> {
        let runs = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::workflow_state(c, workflow)
                    .await?
                    .ok_or(RunError::NotFound)?;
                Ok::<_, RunError>(store::list_runs(c, workflow, page.after, page.limit).await?)
            }
            .scope_boxed()
        })
        .await?;
        let next = next_cursor(&runs, |r| (r.created_at, r.id.uuid()));
        Ok((runs, next))
    }

    pub async fn get(
        &self,
        ctx: &OrgCtx,
        workflow: WorkflowId,
        run: RunId,
    ) -> Result<Run, RunError> {
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::get_run_of(c, workflow, run)
                    .await
                    .map_err(RunError::from)
            }
            .scope_boxed()
        })
        .await?
        .ok_or(RunError::NotFound)
    }

    /// The run's events in order, after the cursor's event, and the cursor of the last one.
    pub async fn events(
        &self,
        ctx: &OrgCtx,
        workflow: WorkflowId,
        run: RunId,
        page: Page,
    ) -> Result<(Vec<Event>, Option<String>), RunError> {
        let events = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::get_run_of(c, workflow, run)
                    .await?
                    .ok_or(RunError::NotFound)?;
                // The cursor names the last event seen; events are ordered by insertion (`seq`).
                let after = match page.after {
                    Some((_, id)) => store::event_seq(c, run, EventId::from(id)).await?,
                    None => None,
                };
                Ok::<_, RunError>(store::list_events(c, run, after, page.limit).await?)
            }
            .scope_boxed()
        })
        .await?;
        let next = next_cursor(&events, |e| (e.created_at, e.id.uuid()));
        Ok((events, next))
    }

    /// Appends progress events of a node that runs elsewhere (an `agent.run` node's tool calls, written
    /// by the brain while the run is blocked on it), and wakes the run's live streams. Nothing is
    /// written for a run that no longer waits on `request_id` (a stale brain after a timeout or retry).
    pub async fn record_remote_progress(
        &self,
        org: OrgId,
        run: RunId,
        request_id: &str,
        attempt: i32,
        node_id: &str,
        events: Vec<(EventKind, Level, Value)>,
    ) -> Result<bool, RunError> {
        let node_id = node_id.to_string();
        let request_id = request_id.to_string();
        let written = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let Some(workflow_id) = store::blocked_on(c, run, &request_id).await? else {
                    return Ok::<_, RunError>(false);
                };
                let rows: Vec<NewEvent> = events
                    .into_iter()
                    .map(|(kind, level, payload)| NewEvent {
                        organization_id: org,
                        workflow_id,
                        run_id: run,
                        attempt_count: attempt,
                        event_type: kind,
                        node_id: Some(node_id.clone()),
                        node_type: Some(NodeType::AgentRun),
                        level,
                        message: None,
                        payload: Some(payload),
                    })
                    .collect();
                store::append_events(c, &rows).await?;
                Ok(true)
            }
            .scope_boxed()
        })
        .await?;
        if written {
            self.live.notify([run]);
        }
        Ok(written)
    }

    /// A live stream of the run's events after the cursor's event (all of them without one), until the
    /// run ends. 404 for an unknown run, as the paged events.
    pub async fn stream(
        &self,
        ctx: &OrgCtx,
        workflow: WorkflowId,
        run: RunId,
        after: Option<Position>,
    ) -> Result<EventStream, RunError> {
        let after = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::run_status(c, workflow, run)
                    .await?
                    .ok_or(RunError::NotFound)?;
                Ok::<_, RunError>(match after {
                    Some((_, id)) => store::event_seq(c, run, EventId::from(id)).await?,
                    None => None,
                })
            }
            .scope_boxed()
        })
        .await?;
        EventStream::open(
            &self.live,
            self.db.clone(),
            ctx.tenant(),
            (ctx.org_id, workflow, run),
            after,
        )
    }
}
