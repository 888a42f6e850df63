//! Where an agent runs a shell task: one trait, one backend per way of isolating it. The host backend
//! runs the task as a process group on the agent's machine (only when the operator chose it); the
//! Docker backend (the default, [`docker`]) runs it in a hardened container, through a warm pool when it
//! can. The provider backend ([`provider`]) hands a task to an external command of the operator's
//! choosing, over JSON on stdio; it answers with a result rather than an [`Outcome`], so it is not a
//! [`Sandbox`].

pub mod docker;
pub mod host;
pub mod provider;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    #[default]
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

/// The network a task may use. `None` is stricter than `Enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Enabled,
}

impl NetworkMode {
    /// The stricter of two settings (a node may narrow the gateway's policy, never widen it).
    pub fn stricter(self, other: Self) -> Self {
        if self == Self::None || other == Self::None {
            Self::None
        } else {
            Self::Enabled
        }
    }
}

/// A way of isolating a task: the agent's default (`--exec-backend`) and a node's `sandbox.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Docker,
    Host,
    Provider,
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
    /// The task must have no network and this machine cannot give it a network namespace.
    #[error("HOST_NETWORK_MODE_UNSUPPORTED")]
    NetworkModeUnsupported,
    #[error("NODE_EXECUTION_FAILED: {0}")]
    Failed(String),
}

pub type Running<'a> = Pin<Box<dyn Future<Output = Result<Outcome, SandboxError>> + Send + 'a>>;

pub trait Sandbox: Send + Sync {
    fn run(&self, task: Task) -> Running<'_>;
}
