//! Node executors: what each node type does inside the worker. CONTRACT FILE: `ExecDeps`, `ExecCtx`,
//! `Outcome` and `execute` are what the engine calls; the per-type logic lives in sibling modules.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::config::Config;
use crate::domain::workflows::dsl::Node;
use crate::platform::crypto::envelope::Keyring;
use crate::platform::db::PgPool;

mod agent;
pub mod condition;
mod connector;
mod http;
mod secret_store;
pub mod ssrf;

/// Long-lived dependencies, built once per worker.
#[derive(Clone)]
pub struct ExecDeps {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub secrets: Arc<Keyring>,
    /// For `http.request` and connector calls; redirects are followed manually so each hop is checked.
    pub http: reqwest::Client,
}

/// What one node execution sees.
pub struct ExecCtx<'a> {
    pub org_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    pub requested_by: Uuid,
    pub node: &'a Node,
    pub run_input: &'a Value,
    /// Steps recorded so far (`{nodeId, nodeType, status, output?, error?}`).
    pub steps: &'a [Value],
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
/// [`condition::evaluate_condition`] for conditions).
pub async fn execute(deps: &ExecDeps, ctx: &ExecCtx<'_>) -> Outcome {
    match ctx.node.node_type.as_str() {
        "http.request" => http::run(deps, ctx).await,
        "agent.execute" => agent::execute(ctx),
        "agent.run" => agent::run(),
        "connector.action" => connector::run_action(deps, ctx).await,
        "connector.github.issue.create" => connector::run_legacy_github(deps, ctx).await,
        "condition" => Outcome::Succeeded(json!({"branch": "true"})),
        "parallel.join" => Outcome::Succeeded(json!({"joined": true})),
        other => Outcome::fail(format!("EXECUTOR_NOT_FOUND:{other}"), false),
    }
}
