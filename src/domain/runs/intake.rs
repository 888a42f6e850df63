//! Run creation with group commit. Create requests go to one task per process; whatever arrived while the
//! previous batches were committing is taken together, and the requests of one org and user share one
//! transaction (a status read, one multi-row insert, one commit) and one Redis call that enqueues them all.
//! An idle server handles a lone request at once, so nothing waits for a batch to fill; under load the
//! cost of a commit and of the round trips is paid per batch instead of per run.
//!
//! The transaction runs on the intake's task, not the request's: a client that disconnects mid-way cannot
//! cancel it halfway. Its run is created and enqueued as if it had waited for the answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::scoped_futures::ScopedFutureExt;
use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::error::RunError;
use super::model::{Run, RunStatus, TriggerType};
use super::store::{self, NewRun};
use crate::domain::common::ids::{OrgId, RunId, UserId, WorkflowId};
use crate::domain::workflows::model::WorkflowStatus;
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::queue::WorkQueue;

/// Requests waiting beyond this make senders wait (back-pressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 4096;
/// At most this many requests per batch.
const BATCH_MAX: usize = 256;
/// Batches committing at once; while all are busy, new requests gather into the next batch.
const IN_FLIGHT: usize = 4;

pub struct CreateRun {
    pub org: OrgId,
    pub user: UserId,
    pub workflow: WorkflowId,
    pub input: Option<Value>,
    pub max_attempts: i32,
}

struct Request {
    run: CreateRun,
    reply: oneshot::Sender<Result<Run, RunError>>,
}

/// The handle the API holds; cloning shares the one intake task.
#[derive(Clone)]
pub struct RunIntake {
    tx: mpsc::Sender<Request>,
}

impl RunIntake {
    /// Starts the intake task (it ends when the last handle is dropped).
    pub fn spawn(db: PgPool, queue: WorkQueue, enqueue_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(intake_loop(
            rx,
            Arc::new(Shared {
                db,
                queue,
                enqueue_timeout,
            }),
        ));
        Self { tx }
    }

    /// Creates a queued run and enqueues it; answers once both are done (or neither is).
    pub async fn create(&self, run: CreateRun) -> Result<Run, RunError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { run, reply })
            .await
            .map_err(|_| RunError::IntakeStopped)?;
        answer.await.map_err(|_| RunError::IntakeStopped)?
    }
}

struct Shared {
    db: PgPool,
    queue: WorkQueue,
    enqueue_timeout: Duration,
}

async fn intake_loop(mut rx: mpsc::Receiver<Request>, shared: Arc<Shared>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot before gathering: requests arriving meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut groups: HashMap<(OrgId, UserId), Vec<Request>> = HashMap::new();
        for r in batch {
            groups.entry((r.run.org, r.run.user)).or_default().push(r);
        }
        tokio::spawn(commit_groups(shared.clone(), groups, permit));
    }
}

/// The groups of one batch, concurrently: a slow group must not delay the others. The in-flight permit
/// bounds database work only: it is released once every group has committed, before the Redis calls, so
/// batches arriving while Redis times out still commit and answer within their own enqueue timeout.
async fn commit_groups(
    shared: Arc<Shared>,
    groups: HashMap<(OrgId, UserId), Vec<Request>>,
    permit: OwnedSemaphorePermit,
) {
    let shared = &shared;
    let committed: Vec<Committed> = join_all(
        groups
            .into_iter()
            .map(|((org, user), requests)| commit_group(shared, org, user, requests)),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    drop(permit);
    join_all(committed.into_iter().map(|c| enqueue_and_answer(shared, c))).await;
}

/// Runs committed for one org and user, waiting to be enqueued and answered.
struct Committed {
    org: OrgId,
    user: UserId,
    replies: Vec<oneshot::Sender<Result<Run, RunError>>>,
    outcome: Vec<Result<RunId, RunError>>,
    inserted: Vec<Run>,
}

/// One org and user: check the workflows, insert the runs, commit. Requests that failed are answered here.
/// If the shared transaction fails for a reason other than an unreachable database (say a workflow deleted
/// between the check and the insert), each request is tried again on its own, so one bad row fails only
/// itself.
async fn commit_group(
    shared: &Shared,
    org: OrgId,
    user: UserId,
    requests: Vec<Request>,
) -> Vec<Committed> {
    let (runs, replies): (Vec<CreateRun>, Vec<_>) =
        requests.into_iter().map(|r| (r.run, r.reply)).unzip();
    let committed = |replies, (outcome, inserted)| Committed {
        org,
        user,
        replies,
        outcome,
        inserted,
    };
    match insert_group(shared, org, user, &runs).await {
        Ok(done) => vec![committed(replies, done)],
        Err(e) if runs.len() == 1 || e.is_unavailable() => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            Vec::new()
        }
        Err(_) => {
            let mut out = Vec::new();
            for (run, reply) in runs.into_iter().zip(replies) {
                match insert_group(shared, org, user, &[run]).await {
                    Ok(done) => out.push(committed(vec![reply], done)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            out
        }
    }
}

/// The group's transaction: which requests may run (404/409 per request) and the inserted rows.
async fn insert_group(
    shared: &Shared,
    org: OrgId,
    user: UserId,
    runs: &[CreateRun],
) -> Result<(Vec<Result<RunId, RunError>>, Vec<Run>), RunError> {
    db::tenant_tx(&shared.db, TenantCtx::user_org(user, org), |c| {
        async move {
            let mut workflows: Vec<WorkflowId> = runs.iter().map(|r| r.workflow).collect();
            workflows.sort_unstable();
            workflows.dedup();
            let statuses: HashMap<WorkflowId, WorkflowStatus> =
                store::workflow_statuses(c, &workflows)
                    .await?
                    .into_iter()
                    .collect();
            let mut rows = Vec::with_capacity(runs.len());
            let mut outcome: Vec<Result<RunId, RunError>> = Vec::with_capacity(runs.len());
            for r in runs {
                outcome.push(match statuses.get(&r.workflow) {
                    None => Err(RunError::NotFound),
                    Some(WorkflowStatus::Published) => {
                        // Time-ordered ids: new runs land at the right edge of the primary key (and their
                        // events next to each other in the events index) instead of on random pages.
                        let id = RunId::time_ordered();
                        rows.push(NewRun {
                            id,
                            organization_id: org,
                            workflow_id: r.workflow,
                            trigger_type: TriggerType::Manual,
                            status: RunStatus::Queued,
                            requested_by_user_id: user,
                            input: r.input.as_ref(),
                            max_attempts: r.max_attempts,
                        });
                        Ok(id)
                    }
                    Some(WorkflowStatus::Draft) => Err(RunError::WorkflowNotPublished),
                });
            }
            let inserted = store::insert_runs(c, &rows).await?;
            Ok::<_, RunError>((outcome, inserted))
        }
        .scope_boxed()
    })
    .await
}

/// After the commit: enqueue the inserted runs in one call, then answer each request (or take the rows
/// back and answer 503 when Redis does not take them in time).
async fn enqueue_and_answer(shared: &Shared, committed: Committed) {
    let Committed {
        org,
        user,
        replies,
        outcome,
        inserted,
    } = committed;
    let ctx = TenantCtx::user_org(user, org);
    let ids: Vec<RunId> = inserted.iter().map(|r| r.id).collect();
    let queued: Vec<uuid::Uuid> = ids.iter().map(|id| id.uuid()).collect();
    let enqueued = tokio::time::timeout(
        shared.enqueue_timeout,
        shared.queue.enqueue_many(org.uuid(), &queued),
    )
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    if let Err(reason) = enqueued {
        // Take the rows back, so no run is left that nothing will pick up (the sweeper would, but the
        // clients are told 503).
        let removed = db::tenant_tx(&shared.db, ctx, |c| {
            async move {
                store::delete_fresh_runs(c, &ids)
                    .await
                    .map_err(RunError::from)
            }
            .scope_boxed()
        })
        .await;
        if let Err(e) = removed {
            tracing::error!(error = ?e, org_id = %org, "could not remove runs after a failed enqueue; the sweeper will deliver them");
        }
        for (reply, o) in replies.into_iter().zip(outcome) {
            let answer = o.and_then(|run_id| {
                Err(RunError::QueueUnavailable {
                    run_id,
                    reason: reason.clone(),
                })
            });
            let _ = reply.send(answer);
        }
        return;
    }
    let mut by_id: HashMap<RunId, Run> = inserted.into_iter().map(|r| (r.id, r)).collect();
    for (reply, o) in replies.into_iter().zip(outcome) {
        // Every id in `outcome` was inserted by the same statement, so the row is there.
        let answer = o.and_then(|id| by_id.remove(&id).ok_or(RunError::NotFound));
        let _ = reply.send(answer);
    }
}
