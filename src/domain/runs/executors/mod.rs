//! Node executors: what each node type does inside the worker. `ExecDeps`, `ExecCtx`, `Outcome` and
//! `execute` are what the engine calls; the per-type logic lives in sibling modules, each taking the
//! node's typed config (validated once, by the DSL).

use std::sync::Arc;

use serde_json::{json, Value};

use super::config::WorkflowsConfig;
use super::model::Step;
use crate::domain::common::ids::{OrgId, RunId, UserId, WorkflowId};
use crate::domain::secrets::Secrets;
use crate::domain::workflows::dsl::{Node, NodeSpec};

mod agent;
pub mod condition;
mod connector;
mod http;
mod secret_store;
pub mod ssrf;

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

/// Runs one node (v2 semantics; the v3 engine evaluates `condition` / `parallel.join` itself, with
/// [`condition::evaluate`] for conditions).
pub async fn execute(deps: &ExecDeps, ctx: &ExecCtx<'_>) -> Outcome {
    match &ctx.node.spec {
        NodeSpec::HttpRequest(cfg) => http::run(deps, ctx, cfg.as_ref()).await,
        NodeSpec::AgentExecute(cfg) => agent::execute(ctx.node, cfg.as_ref()),
        NodeSpec::AgentRun(_) => agent::run(),
        NodeSpec::ConnectorAction(cfg) => connector::run_action(deps, ctx, cfg).await,
        NodeSpec::GithubIssueCreate(cfg) => connector::run_legacy_github(deps, ctx, cfg).await,
        NodeSpec::Condition(_) => Outcome::Succeeded(json!({"branch": "true"})),
        NodeSpec::ParallelJoin(_) => Outcome::Succeeded(json!({"joined": true})),
    }
}
