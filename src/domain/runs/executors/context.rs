//! What an executor is given (dependencies and the node's context) and what it answers.

use std::sync::Arc;

use serde_json::Value;

use crate::domain::common::ids::{OrgId, RunId, UserId, WorkflowId};
use crate::domain::runs::config::WorkflowsConfig;
use crate::domain::runs::model::Step;
use crate::domain::secrets::Secrets;
use crate::domain::workflows::dsl::Node;
use crate::platform::secret::Secret;

/// Long-lived dependencies, built once per worker.
#[derive(Clone)]
pub struct ExecDeps {
    pub config: Arc<WorkflowsConfig>,
    /// The one way to decrypt a secret.
    pub secrets: Arc<Secrets>,
    /// For connector calls; redirects are never followed automatically.
    pub http: reqwest::Client,
}

/// What one node execution sees.
pub struct ExecCtx<'a> {
    pub org_id: OrgId,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub attempt: i32,
    pub requested_by: UserId,
    pub node: &'a Node,
    pub run_input: &'a Value,
    /// Steps recorded so far.
    pub steps: &'a [Step],
    /// The org's `settings` JSON.
    pub settings: &'a Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// `retryable: false` for deterministic errors (bad config, unsupported action, missing secret, …):
    /// the run fails at once instead of burning attempts.
    Failed {
        error: String,
        output: Option<Value>,
        retryable: bool,
    },
    /// The node runs elsewhere (an executor, the gateway): the run waits for its result (spec 6.1).
    Blocked(Block),
}

/// What a remote node needs dispatched.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub kind: BlockKind,
    /// Sent to the executor verbatim.
    pub payload: Value,
    /// The node's `execution.selector`, as written (the gateway resolves a missing pool).
    pub selector: Option<Value>,
    /// The decrypted connector secret (only `connector.action`; never a shell task's).
    pub secret: Option<Secret>,
    /// How long the run waits (default: the configured node timeout).
    pub timeout_ms: Option<u64>,
}

crate::text_enum! {
    /// What kind of remote work a block is.
    pub enum BlockKind {
        AgentExecute = "agent.execute",
        ConnectorAction = "connector.action",
        AgentRun = "agent.run",
    }
}

impl Outcome {
    pub fn fail(error: impl Into<String>, retryable: bool) -> Self {
        Outcome::Failed {
            error: error.into(),
            output: None,
            retryable,
        }
    }
}
