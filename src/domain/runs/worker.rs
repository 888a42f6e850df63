//! The worker: claims runs from the work queue (tenants in turn) up to the configured concurrency, hands each
//! to the engine, and sweeps for runs that lost their queue entry or their worker. On shutdown it stops
//! claiming, lets in-flight runs reach a node boundary, and hands them back.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::engine::{Delivery, Engine};
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

/// Starts the worker; it runs until `stop` turns true, then drains within the grace period.
pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let engine = Arc::new(engine(&state));
        let pool_cap = state.config.database.pool_size.saturating_sub(2).max(1);
        let mut concurrency = state.config.workflows.concurrency;
        if concurrency > pool_cap {
            tracing::warn!(
                configured = concurrency,
                used = pool_cap,
                "worker concurrency capped below the database pool size"
            );
            concurrency = pool_cap;
        }
        let lease = Duration::from_secs(state.config.workflows.lease_secs);
        tracing::info!(event = "workflow_worker_ready", queueName = %state.config.workflows.queue_name, concurrency, "worker ready");
        let sweeper = spawn_sweeper(state.clone(), engine.queue.clone(), stop.clone());
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut blocking = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            match engine.queue.claim(lease).await {
                Ok(Some((org, run))) => {
                    let (engine, stop) = (engine.clone(), stop.clone());
                    tokio::spawn(async move {
                        handle(&engine, org, run, &stop).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
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
                    drop(permit);
                    tracing::error!(event = "worker_runtime_error", error = %e, "cannot claim from the queue");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        // Drain: in-flight runs stop at their next node boundary and hand themselves back.
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        let _ = tokio::time::timeout(grace, permits.acquire_many(concurrency as u32)).await;
        sweeper.abort();
        if let Some(c) = blocking {
            let _ = fred::interfaces::ClientLike::quit(&c).await;
        }
        tracing::info!("worker stopped");
    })
}

/// One delivery: process, then settle the queue entry according to what happened.
pub async fn handle(engine: &Engine, org: Uuid, run: Uuid, stop: &watch::Receiver<bool>) {
    let outcome = engine.process(org, run, stop).await;
    let q = &engine.queue;
    let settled = match &outcome {
        Ok(Delivery::NotYetDue(at)) => {
            let _ = q.ack(org, run).await;
            q.enqueue_at(org, run, *at).await
        }
        Ok(Delivery::RetryScheduled(at)) => {
            let _ = q.ack(org, run).await;
            q.enqueue_at(org, run, *at).await
        }
        Ok(Delivery::Released) => {
            let _ = q.ack(org, run).await;
            q.enqueue(org, run).await.map(|_| ())
        }
        Ok(_) => q.ack(org, run).await,
        Err(e) => {
            // Infrastructure trouble (database down…): leave the lease to expire; the sweeper re-delivers.
            tracing::error!(event = "worker_runtime_error", error = %e, run_id = %run, "run delivery failed");
            Ok(())
        }
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, run_id = %run, "queue update after delivery failed; the sweeper will repair it");
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
