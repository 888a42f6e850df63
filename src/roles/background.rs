//! Roles whose modules land in later work (worker, continuation, gateway): they start, say so, and idle
//! until shutdown, so deployments can already be laid out by role.

use tokio::task::JoinHandle;

use super::Role;
use crate::app::state::AppState;

pub fn spawn(role: Role, _state: AppState) -> JoinHandle<()> {
    tracing::info!(
        role = role.name(),
        "role started; it has nothing to do yet in this version"
    );
    tokio::spawn(std::future::pending::<()>())
}
