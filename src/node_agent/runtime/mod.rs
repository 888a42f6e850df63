//! Runs one `invoke_tool_v2` and says how it went (spec gateway §3.4): a shell task in a sandbox
//! (`agent.execute`) or a connector call (`connector.action`). Every path ends in a `tool_result_v2`,
//! failures included, so the gateway never has to wait out its timeout for an answer we could give.
//! Workspaces (snapshot download and upload) are not handled yet: `workspace` and `workspaceAccess`
//! are ignored and results carry no `workspace`.

mod action;
pub mod failure;
pub mod payload;
mod shell;
pub mod workdir;

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::agents::identity::ToolKind;
use crate::domain::gateway::protocol::{InvokeToolV2, ToolResultV2};
use crate::node_agent::sandbox::host::HostSandbox;
use crate::node_agent::sandbox::{BackendKind, Sandbox};
use crate::node_agent::AgentError;

pub use failure::Failure;

/// What every execution shares: the operator's choices and the clients.
pub struct RuntimeContext {
    /// `--exec-backend`: where tasks run unless a node names another backend (the host only if this is
    /// the host).
    pub default_backend: BackendKind,
    /// Under which each task gets its per-run directory.
    pub workdir_root: PathBuf,
    pub host: Box<dyn Sandbox>,
    /// For connector calls. Redirects are not followed: a redirect must not carry the secret along.
    pub http: reqwest::Client,
}

impl RuntimeContext {
    pub fn new(default_backend: BackendKind, workdir_root: PathBuf) -> Result<Self, AgentError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AgentError::Protocol(format!("http client: {e}")))?;
        Ok(Self {
            default_backend,
            workdir_root,
            host: Box::new(HostSandbox::default()),
            http,
        })
    }
}

/// Executes `invoke` and builds its result. Never panics and never fails: a failure is a result.
pub async fn execute(invoke: InvokeToolV2, ctx: &RuntimeContext) -> ToolResultV2 {
    let done = match invoke.kind {
        ToolKind::AgentExecute => shell::run(&invoke, ctx).await,
        ToolKind::ConnectorAction => action::run(&invoke, ctx).await,
    };
    // The invoke holds the secret: only its id and kind are logged.
    match done {
        Ok(output) => {
            tracing::info!(request_id = %invoke.request_id, kind = ?invoke.kind, "tool call succeeded");
            failure::succeeded(invoke.request_id, output)
        }
        Err(failed) => {
            tracing::info!(request_id = %invoke.request_id, kind = ?invoke.kind, error = %failed.failure, "tool call failed");
            failure::failed(invoke.request_id, failed)
        }
    }
}

#[cfg(test)]
mod tests;
