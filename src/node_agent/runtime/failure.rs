//! Why a tool call failed: the error codes of the original agent (spec gateway §3.4-3.6), which the
//! gateway hands back to the worker and the run as they are.

use serde_json::Value;

use crate::domain::gateway::protocol::{ResultStatus, ToolResultV2};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Keeps connector and provider credentials away from shell tasks.
    #[error("SECRET_NOT_ALLOWED_FOR_SHELL")]
    SecretNotAllowedForShell,
    #[error("INVALID_EXECUTE_PAYLOAD")]
    InvalidExecutePayload,
    /// The per-run directory would not be inside the workdir root.
    #[error("WORKDIR_PATH_ESCAPE")]
    WorkdirPathEscape,
    /// A node asked for the host backend on an agent whose operator did not choose it.
    #[error("HOST_BACKEND_NOT_ENABLED")]
    HostBackendNotEnabled,
    /// The task needs the Docker backend and the engine failed (or none answered at start).
    #[error("DOCKER_FAILED")]
    DockerFailed,
    #[error("SANDBOX_PROVIDER_NOT_CONFIGURED")]
    SandboxProviderNotConfigured,
    /// The provider command could not be started.
    #[error("SANDBOX_PROVIDER_LOAD_FAILED")]
    SandboxProviderLoadFailed,
    /// The provider answered with something that is not a result.
    #[error("SANDBOX_PROVIDER_INVALID")]
    SandboxProviderInvalid,
    /// The provider's own error code, passed on as it gave it (checked to be a short one-line code).
    #[error("{0}")]
    Provider(String),
    #[error("HOST_NETWORK_MODE_UNSUPPORTED")]
    HostNetworkModeUnsupported,
    #[error("NODE_EXECUTION_TIMEOUT")]
    Timeout,
    #[error("HOST_EXIT_CODE:{0}")]
    HostExitCode(i32),
    #[error("DOCKER_EXIT_CODE:{0}")]
    DockerExitCode(i32),
    /// The task ran but ended without an exit code (killed by a signal other than the timeout's).
    #[error("NODE_EXECUTION_FAILED")]
    ExecutionFailed,
    /// The task could not be started at all.
    #[error("NODE_EXECUTION_FAILED: {0}")]
    ExecutionFailedWith(String),
    #[error("INVALID_ACTION_PAYLOAD")]
    InvalidActionPayload,
    #[error("INVALID_ACTION_INPUT")]
    InvalidActionInput,
    #[error("ACTION_NOT_SUPPORTED:{connector_id}:{action_id}")]
    ActionNotSupported {
        connector_id: String,
        action_id: String,
    },
    #[error("SECRET_REQUIRED")]
    SecretRequired,
    #[error("GITHUB_REQUEST_FAILED:{0}")]
    GithubRequestFailed(u16),
    /// No HTTP answer at all (connection refused, TLS, DNS).
    #[error("GITHUB_REQUEST_FAILED")]
    GithubUnreachable,
    #[error("GITHUB_RESPONSE_INVALID")]
    GithubResponseInvalid,
    /// A frame that looked like an invocation but broke the protocol's schema.
    #[error("INVALID_INVOKE")]
    InvalidInvoke,
    /// The agent is stopping and did not start this call.
    #[error("AGENT_SHUTTING_DOWN")]
    ShuttingDown,
    /// A workspace version above 0 came without a URL to fetch it from.
    #[error("WORKSPACE_DOWNLOAD_URL_REQUIRED")]
    WorkspaceDownloadUrlRequired,
    /// The HTTP status of the GET, or why there was none (`timeout`, `unreachable`, `too_large`, `io`).
    #[error("WORKSPACE_DOWNLOAD_FAILED:{0}")]
    WorkspaceDownloadFailed(String),
    /// The archive was refused or could not be unpacked (`path_escape`, `symlink_escape`, `too_large`…).
    #[error("WORKSPACE_EXTRACT_FAILED:{0}")]
    WorkspaceExtractFailed(String),
    /// The task's tree could not be archived, or its archive would not extract again; same reasons.
    #[error("WORKSPACE_SNAPSHOT_FAILED:{0}")]
    WorkspaceSnapshotFailed(String),
    /// The HTTP status of the PUT, or why there was none (`timeout`, `unreachable`, `io`).
    #[error("WORKSPACE_UPLOAD_FAILED:{0}")]
    WorkspaceUploadFailed(String),
}

/// A failed call: its code, and what the task printed when it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub failure: Failure,
    pub output: Option<Value>,
}

impl From<Failure> for Failed {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            output: None,
        }
    }
}

pub fn succeeded(request_id: String, output: Value) -> ToolResultV2 {
    ToolResultV2 {
        request_id,
        status: ResultStatus::Succeeded,
        output: Some(output),
        error: None,
        workspace: None,
    }
}

pub fn failed(request_id: String, failed: Failed) -> ToolResultV2 {
    ToolResultV2 {
        request_id,
        status: ResultStatus::Failed,
        output: failed.output,
        error: Some(failed.failure.to_string()),
        workspace: None,
    }
}
