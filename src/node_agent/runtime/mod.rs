//! Runs one `invoke_tool_v2` and says how it went (spec gateway §3.4): a shell task in a sandbox
//! (`agent.execute`) or a connector call (`connector.action`). Every path ends in a `tool_result_v2`,
//! failures included, so the gateway never has to wait out its timeout for an answer we could give.
//! Both run on the call's workspace when the gateway sends one (see [`workspace`]): the result then
//! carries the version the call produced.

mod action;
pub mod failure;
pub mod payload;
mod shell;
pub mod workdir;
pub mod workspace;

use std::path::PathBuf;
use std::time::Duration;

use crate::node_agent::sandbox::docker::{DockerConfig, DockerSandbox};

use crate::domain::agents::identity::ToolKind;
use crate::domain::gateway::protocol::{InvokeToolV2, ToolResultV2};
use crate::node_agent::sandbox::host::HostSandbox;
use crate::node_agent::sandbox::provider::ProviderSandbox;
use crate::node_agent::sandbox::{BackendKind, Sandbox};
use crate::node_agent::AgentError;

pub use failure::Failure;
use workspace::{Budget, Finished, WorkspaceConfig, Workspaces};

/// What every execution shares: the operator's choices and the clients.
pub struct RuntimeContext {
    /// `--exec-backend`: where tasks run unless a node names another backend (the host only if this is
    /// the host).
    pub default_backend: BackendKind,
    /// Under which each task gets its per-run directory.
    pub workdir_root: PathBuf,
    pub host: Box<dyn Sandbox>,
    /// For connector calls and workspace transfers. Redirects are not followed: a redirect must not
    /// carry the secret along, and a presigned URL has no business redirecting.
    pub http: reqwest::Client,
    pub workspaces: Workspaces,
    /// The Docker backend, when an engine answered at start (see [`RuntimeContext::with_docker`]).
    pub docker: Option<std::sync::Arc<DockerSandbox>>,
    /// The operator's provider command (`--sandbox-provider-command`), when set.
    pub provider: Option<ProviderSandbox>,
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
            workspaces: Workspaces::new(WorkspaceConfig::from_env()),
            docker: None,
            provider: None,
        })
    }

    /// Connects the Docker backend (its settings from `VESPID_AGENT_DOCKER_*`). Without an engine the
    /// agent still runs: tasks that need Docker fail with `DOCKER_FAILED`, and the log says why.
    pub async fn with_docker(mut self) -> Self {
        // Only an agent whose operator chose Docker keeps an engine connection and warm containers.
        if self.default_backend != BackendKind::Docker {
            return self;
        }
        let connected = match DockerConfig::from_env() {
            Ok(config) => DockerSandbox::connect(config).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(d) => self.docker = Some(std::sync::Arc::new(d)),
            Err(e) => {
                tracing::warn!(error = %e, "no Docker sandbox: docker tasks will fail with DOCKER_FAILED")
            }
        }
        self
    }
}

/// Executes `invoke` and builds its result. Never panics and never fails: a failure is a result.
pub async fn execute(invoke: InvokeToolV2, ctx: &RuntimeContext) -> ToolResultV2 {
    let budget = Budget::for_call(invoke.tool_policy.timeout_ms);
    let finished = match invoke.kind {
        ToolKind::AgentExecute => shell::run(&invoke, ctx, &budget).await,
        ToolKind::ConnectorAction => run_action(&invoke, ctx, &budget).await,
    };
    // The invoke holds the secret: only its id and kind are logged.
    let mut result = match finished.done {
        Ok(output) => {
            tracing::info!(request_id = %invoke.request_id, kind = ?invoke.kind, "tool call succeeded");
            failure::succeeded(invoke.request_id, output)
        }
        Err(failed) => {
            tracing::info!(request_id = %invoke.request_id, kind = ?invoke.kind, error = %failed.failure, "tool call failed");
            failure::failed(invoke.request_id, failed)
        }
    };
    result.workspace = finished.workspace;
    result
}

/// A connector call does not touch the workspace, but it is one step of the run like any other: the
/// version is fetched and uploaded unchanged as the next one, as the gateway expects of every call.
async fn run_action(invoke: &InvokeToolV2, ctx: &RuntimeContext, budget: &Budget) -> Finished {
    let checkout = match workspace::checkout(invoke, ctx, budget).await {
        Ok(checkout) => checkout,
        Err(failure) => return Finished::without_workspace(Err(failure.into())),
    };
    let done = action::run(invoke, ctx).await;
    workspace::finish(checkout.as_ref(), None, done, ctx, budget).await
}

#[cfg(test)]
mod tests;
