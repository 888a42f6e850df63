//! Background roles: the worker runs workflow runs; the continuation resumes runs whose remote node
//! answered (pushed by the gateway, with a sweep as the fallback).

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::role::Role;
use crate::app::state::AppState;
use crate::domain::runs;
use crate::domain::runs::continuation::Continuation;
use crate::domain::triggers::scheduler;

pub fn spawn(
    role: Role,
    state: AppState,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, BackgroundError> {
    Ok(match role {
        Role::Worker => {
            runs::worker::spawn(state.worker_parts(), stop).map_err(BackgroundError::WorkerHttp)?
        }
        Role::Continuation => {
            // The cron scheduler lives with the continuation: both are the background work that
            // starts or resumes runs without a request, and any number of instances may run them.
            let scheduler = scheduler::spawn(state.triggers.clone(), stop.clone());
            let retention = state.audit.clone().spawn_retention(stop.clone());
            let continuation =
                std::sync::Arc::new(Continuation::new(state.continuation_parts())).spawn(stop);
            tokio::spawn(async move {
                let _ = tokio::join!(scheduler, continuation, retention);
            })
        }
        other => {
            tracing::info!(
                role = other.name(),
                "role started; it has nothing to do yet in this version"
            );
            let mut stop = stop;
            tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The worker's HTTP client (no automatic redirects, connect timeout) could not be built: the worker
    /// does not start with a less safe one.
    #[error("cannot build the worker's HTTP client: {0}")]
    WorkerHttp(reqwest::Error),
}
