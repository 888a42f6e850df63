//! The worker: claims runs from the work queue (tenants in turn) up to the configured concurrency, hands each
//! to the engine, and sweeps for runs that lost their queue entry or their worker. On shutdown it stops
//! claiming, lets in-flight runs reach a node boundary, and hands them back.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::engine::{Delivery, Engine, EngineError};
use super::executors::ExecDeps;
use super::store;
use crate::app::state::AppState;
use crate::platform::db::{self, DbError};
use crate::platform::queue::WorkQueue;

pub fn queue(state: &AppState) -> WorkQueue {
    WorkQueue::new(&state.redis, &state.config.workflows.queue_name)
}

/// Shared HTTP client for node executors: no automatic redirects (each hop is checked by the executor).
pub fn exec_deps(state: &AppState) -> ExecDeps {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent("vespid-worker")
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    ExecDeps {
        config: state.config.clone(),
        db: state.db.clone(),
        secrets: state.secrets.clone(),
        http,
    }
}

pub fn engine(state: &AppState) -> Engine {
    Engine {
        deps: exec_deps(state),
        queue: queue(state),
        worker_id: format!("{}-{}", hostname(), Uuid::new_v4().simple()),
        state: state.clone(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// Batches claimed and started at once per worker. Each holds one database connection from its claim to
/// its commit; a few let PostgreSQL and the worker overlap without crowding the pool.
const CLAIMERS: usize = 4;

/// Starts the worker; it runs until `stop` turns true, then drains within the grace period.
///
/// Each claim takes up to `claim_batch` runs of the next org in turn (bounded by free concurrency slots),
/// and the engine starts them together (see [`Engine::start_batch`]): under load one commit serves the whole
/// batch; when idle a batch is a single run and nothing waits to fill it.
pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let engine = Arc::new(engine(&state));
        let concurrency = state.config.workflows.concurrency;
        let batch_max = state.config.workflows.claim_batch.max(1);
        let lease = Duration::from_secs(state.config.workflows.lease_secs);
        tracing::info!(event = "workflow_worker_ready", queueName = %state.config.workflows.queue_name, concurrency, claimBatch = batch_max, "worker ready");
        let sweeper = spawn_sweeper(state.clone(), engine.queue.clone(), stop.clone());
        let slots = Arc::new(Semaphore::new(concurrency));
        let claimers = Arc::new(Semaphore::new(CLAIMERS));
        let mut blocking = None;
        loop {
            if *stop.borrow() {
                break;
            }
            // Waiting for a free claimer and slot must not outlast a stop: a batch claimed after the stop
            // would only be handed back.
            let mut stopped = stop.clone();
            let acquired = tokio::select! {
                a = acquire(&claimers, &slots) => a,
                _ = stopped.wait_for(|s| *s) => None,
            };
            let Some((claimer, first)) = acquired else {
                break;
            };
            let mut held = vec![first];
            while held.len() < batch_max {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            match engine.queue.claim_many(lease, held.len()).await {
                Ok(Some((org, runs))) => {
                    held.truncate(runs.len());
                    let (engine, stop) = (engine.clone(), stop.clone());
                    tokio::spawn(async move {
                        deliver(&engine, org, runs, held, claimer, &stop).await;
                    });
                }
                Ok(None) => {
                    drop((held, claimer));
                    if blocking.is_none() {
                        blocking = engine.queue.blocking_client().await.ok();
                    }
                    match &blocking {
                        Some(client) => {
                            let mut stop = stop.clone();
                            tokio::select! {
                                r = engine.queue.wait(client, Duration::from_millis(500)) => {
                                    if r.is_err() { tokio::time::sleep(Duration::from_millis(200)).await; }
                                }
                                // A dropped sender means the owner is gone: stop as well.
                                changed = stop.changed() => { if changed.is_err() { break; } }
                            }
                        }
                        None => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                Err(e) => {
                    drop((held, claimer));
                    tracing::error!(event = "worker_runtime_error", error = %e, "cannot claim from the queue");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        // Drain: in-flight runs stop at their next node boundary and hand themselves back.
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        let _ = tokio::time::timeout(grace, slots.acquire_many(concurrency as u32)).await;
        sweeper.abort();
        if let Some(c) = blocking {
            let _ = fred::interfaces::ClientLike::quit(&c).await;
        }
        tracing::info!("worker stopped");
    })
}

/// One claim's runs: start them as a batch, settle what ended, then let the rest go on (each keeping one
/// concurrency slot; the others are freed as soon as the batch commits).
async fn deliver(
    engine: &Engine,
    org: Uuid,
    runs: Vec<Uuid>,
    mut slots: Vec<OwnedSemaphorePermit>,
    claimer: OwnedSemaphorePermit,
    stop: &watch::Receiver<bool>,
) {
    let batch = engine.start_batch(org, &runs, stop).await;
    drop(claimer);
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            // Infrastructure trouble (database down…): leave the leases to expire; the queue re-delivers.
            tracing::error!(event = "worker_runtime_error", error = %e, org_id = %org, runs = runs.len(), "run batch failed");
            return;
        }
    };
    let settled: Vec<(Uuid, Result<Delivery, EngineError>)> = batch
        .settled
        .iter()
        .map(|(id, d)| (*id, Ok(d.clone())))
        .collect();
    settle(&engine.queue, org, settled).await;
    slots.truncate(batch.remaining());
    // Each remaining run is settled, and its slot freed, as soon as it is done.
    let mut rest = engine.finish_batch(batch, stop);
    while let Some(outcome) = rest.next().await {
        settle(&engine.queue, org, vec![outcome]).await;
        slots.pop();
    }
}

/// A claimer, then a first concurrency slot; `None` once the semaphores are closed.
async fn acquire(
    claimers: &Arc<Semaphore>,
    slots: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let claimer = claimers.clone().acquire_owned().await.ok()?;
    let slot = slots.clone().acquire_owned().await.ok()?;
    Some((claimer, slot))
}

/// Updates the queue after deliveries, according to what happened: finished or not ours → acknowledged;
/// a retry or a not-yet-due run → delivered again at its time; handed back → ready again at once; an
/// infrastructure error → left in flight, so its lease expires and it is delivered again.
async fn settle(q: &WorkQueue, org: Uuid, outcomes: Vec<(Uuid, Result<Delivery, EngineError>)>) {
    let mut done = Vec::with_capacity(outcomes.len());
    let mut later = Vec::new();
    for (run, outcome) in outcomes {
        match outcome {
            Ok(d) => {
                done.push(run);
                match d {
                    Delivery::NotYetDue(at) | Delivery::RetryScheduled(at) => {
                        later.push((run, Some(at)))
                    }
                    Delivery::Released => later.push((run, None)),
                    _ => {}
                }
            }
            Err(e) => {
                tracing::error!(event = "worker_runtime_error", error = %e, run_id = %run, "run delivery failed");
            }
        }
    }
    let mut result = q.ack_many(org, &done).await;
    for (run, at) in later {
        let r = match at {
            Some(at) => q.enqueue_at(org, run, at).await,
            None => q.enqueue(org, run).await.map(|_| ()),
        };
        result = result.and(r);
    }
    if let Err(e) = result {
        tracing::warn!(error = %e, org_id = %org, "queue update after delivery failed; the sweeper will repair it");
    }
}

/// Periodically: promote due retries and expired leases in Redis, and re-enqueue runs that PostgreSQL says
/// need work but that have no queue entry (lost between insert and enqueue, or a Redis that lost data).
fn spawn_sweeper(
    state: AppState,
    queue: WorkQueue,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(state.config.workflows.reaper_interval_ms.max(50));
        let stale = chrono::Duration::seconds(state.config.workflows.stale_queued_secs as i64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = queue.promote().await {
                tracing::warn!(error = %e, "queue promotion failed");
                continue;
            }
            let before = Utc::now() - stale;
            let found = async {
                let mut c = db::conn(&state.db).await?;
                store::stranded(&mut c, before, 500)
                    .await
                    .map_err(DbError::from)
            }
            .await;
            match found {
                Ok(runs) => {
                    for r in runs {
                        if matches!(queue.contains(r.organization_id, r.run_id).await, Ok(false)) {
                            tracing::info!(run_id = %r.run_id, org_id = %r.organization_id, "re-enqueueing stranded run");
                            let _ = queue.enqueue(r.organization_id, r.run_id).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stranded-run sweep failed"),
            }
        }
    })
}
