//! Where an agent runs a shell task: one trait, one backend per way of isolating it. The host backend
//! runs the task as a process group on the agent's machine (only when explicitly enabled; the Docker
//! backend, the default, is the next step of remote execution).

pub mod docker;
pub mod host;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

impl Shell {
    fn program(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }
}

/// The network a task may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Enabled,
}

/// One shell task.
#[derive(Debug, Clone)]
pub struct Task {
    pub script: String,
    pub shell: Shell,
    /// The task's own environment (nothing of the agent's leaks in beyond a fixed allowlist).
    pub env: BTreeMap<String, String>,
    /// Its working directory (created if missing).
    pub workdir: PathBuf,
    pub timeout: Duration,
    pub network: NetworkMode,
    /// Bytes kept of each of stdout and stderr; the rest is counted, not kept.
    pub output_max_bytes: usize,
}

/// What a task did (the original's output object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub backend: &'static str,
    /// `None` when killed by a signal (the timeout, or anything else).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Why a task could not run at all (its own failures are an [`Outcome`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    /// The host backend cannot take the network away.
    #[error("HOST_NETWORK_MODE_UNSUPPORTED")]
    NetworkModeUnsupported,
    #[error("NODE_EXECUTION_FAILED: {0}")]
    Failed(String),
}

pub type Running<'a> = Pin<Box<dyn Future<Output = Result<Outcome, SandboxError>> + Send + 'a>>;

pub trait Sandbox: Send + Sync {
    fn run(&self, task: Task) -> Running<'_>;
}
