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

use super::config::WorkflowsConfig;
use super::engine::{Delivery, Engine, EngineError, Plans};
use super::executors::ExecDeps;
use super::live::LiveEvents;
use super::metrics::RunMetrics;
use super::remote::RemoteDispatch;
use super::store;
use crate::domain::common::ids::{OrgId, RunId};
use crate::domain::orgs::Orgs;
use crate::domain::secrets::Secrets;
use crate::platform::db::{self, DbError, PgPool};
use crate::platform::queue::WorkQueue;

/// What a worker is built from.
pub struct WorkerParts {
    pub config: Arc<WorkflowsConfig>,
    /// How long in-flight runs get to reach a node boundary on shutdown.
    pub shutdown_grace: Duration,
    pub db: PgPool,
    pub queue: WorkQueue,
    pub orgs: Arc<Orgs>,
    pub secrets: Arc<Secrets>,
    /// Where remote nodes are dispatched.
    pub remote: Arc<dyn RemoteDispatch>,
    pub metrics: Arc<RunMetrics>,
    pub live: Arc<LiveEvents>,
}

/// The HTTP client of node executors: no automatic redirects (each hop is checked by the executor)
/// and a connect timeout. Without these safety settings the worker must not start.
pub fn executor_http() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent("vespid-worker")
        .build()
}

pub fn engine(parts: &WorkerParts, http: reqwest::Client) -> Engine {
    Engine {
        config: parts.config.clone(),
        plans: Plans::default(),
        db: parts.db.clone(),
        orgs: parts.orgs.clone(),
        deps: ExecDeps {
            config: parts.config.clone(),
            secrets: parts.secrets.clone(),
            http,
        },
        queue: parts.queue.clone(),
        worker_id: format!("{}-{}", hostname(), Uuid::new_v4().simple()),
        remote: parts.remote.clone(),
        metrics: parts.metrics.clone(),
        live: parts.live.clone(),
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
pub fn spawn(parts: WorkerParts, stop: watch::Receiver<bool>) -> reqwest::Result<JoinHandle<()>> {
    let engine = Arc::new(engine(&parts, executor_http()?));
    Ok(tokio::spawn(async move {
        let config = parts.config.clone();
        let concurrency = config.concurrency;
        let batch_max = config.claim_batch.max(1);
        let lease = Duration::from_secs(config.lease_secs);
        tracing::info!(event = "workflow_worker_ready", queueName = %config.queue_name, concurrency, claimBatch = batch_max, "worker ready");
        let sweeper = spawn_sweeper(&parts, engine.queue.clone(), stop.clone());
        let slots = Arc::new(Semaphore::new(concurrency));
        parts.metrics.track_slots(&slots, concurrency);
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
                    let org = OrgId::from(org);
                    let runs: Vec<RunId> = runs.into_iter().map(RunId::from).collect();
                    held.truncate(runs.len());
                    let (engine, stop) = (engine.clone(), stop.clone());
                    tokio::spawn(async move {
                        deliver(&engine, org, runs, held, claimer, &stop).await;
                    });
                }
                Ok(None) => {
                    drop((held, claimer));
                    if blocking.is_none() {
                        blocking = match engine.queue.blocking_client().await {
                            Ok(c) => Some(c),
                            Err(e) => {
                                tracing::warn!(error = %e, "no blocking Redis client; polling for work every 200 ms");
                                None
                            }
                        };
                    }
                    match &blocking {
                        Some(client) => {
                            let mut stop = stop.clone();
                            tokio::select! {
                                r = engine.queue.wait(client, Duration::from_millis(500)) => {
                                    if let Err(e) = r {
                                        tracing::warn!(error = %e, "waiting for work failed; polling");
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                    }
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
        let _ = tokio::time::timeout(parts.shutdown_grace, slots.acquire_many(concurrency as u32))
            .await;
        sweeper.abort();
        if let Some(c) = blocking {
            let _ = fred::interfaces::ClientLike::quit(&c).await;
        }
        tracing::info!("worker stopped");
    }))
}

/// One claim's runs: start them as a batch, settle what ended, then let the rest go on (each keeping one
/// concurrency slot; the others are freed as soon as the batch commits).
async fn deliver(
    engine: &Engine,
    org: OrgId,
    runs: Vec<RunId>,
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
    let settled: Vec<(RunId, Result<Delivery, EngineError>)> = batch
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
async fn settle(q: &WorkQueue, org: OrgId, outcomes: Vec<(RunId, Result<Delivery, EngineError>)>) {
    let org_key = org.uuid();
    let mut done = Vec::with_capacity(outcomes.len());
    let mut later = Vec::new();
    for (run, outcome) in outcomes {
        match outcome {
            Ok(d) => {
                done.push(run.uuid());
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
    let mut result = q.ack_many(org_key, &done).await;
    for (run, at) in later {
        let r = match at {
            Some(at) => q.enqueue_at(org_key, run.uuid(), at).await,
            None => q.enqueue(org_key, run.uuid()).await.map(|_| ()),
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
    parts: &WorkerParts,
    queue: WorkQueue,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let db = parts.db.clone();
    let every = Duration::from_millis(parts.config.reaper_interval_ms.max(50));
    let stale = chrono::Duration::seconds(parts.config.stale_queued_secs as i64);
    tokio::spawn(async move {
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
                let mut c = db::conn(&db).await?;
                store::stranded(&mut c, before, 500)
                    .await
                    .map_err(DbError::from)
            }
            .await;
            match found {
                Ok(runs) => {
                    for r in runs {
                        let (org, run) = (r.organization_id.uuid(), r.run_id.uuid());
                        match queue.contains(org, run).await {
                            Ok(false) => {
                                tracing::info!(run_id = %r.run_id, org_id = %r.organization_id, "re-enqueueing stranded run");
                                if let Err(e) = queue.enqueue(org, run).await {
                                    tracing::warn!(error = %e, run_id = %r.run_id, org_id = %r.organization_id, "stranded run not re-enqueued");
                                }
                            }
                            Ok(true) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, run_id = %r.run_id, "stranded-run check failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stranded-run sweep failed"),
            }
        }
    })
}
