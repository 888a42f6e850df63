//! Node executors: what each node type does inside the worker. `ExecDeps`, `ExecCtx`, `Outcome` and
//! `execute` are what the engine calls; the per-type logic lives in sibling modules, each taking the
//! node's typed config (validated once, by the DSL).

use serde_json::json;

use crate::domain::workflows::dsl::NodeSpec;

mod agent;
pub mod condition;
mod connector;
pub mod context;
mod http;
mod secret_store;
pub mod ssrf;

pub use context::{Block, BlockKind, ExecCtx, ExecDeps, Outcome};

/// Runs one node (v2 semantics; the v3 engine evaluates `condition` / `parallel.join` itself, with
/// [`condition::evaluate`] for conditions).
pub async fn execute(deps: &ExecDeps, ctx: &ExecCtx<'_>) -> Outcome {
    match &ctx.node.spec {
        NodeSpec::HttpRequest(cfg) => http::run(deps, ctx, cfg.as_ref()).await,
        NodeSpec::AgentExecute(cfg) => agent::execute(ctx, cfg.as_ref()),
        NodeSpec::AgentRun(cfg) => agent::run(ctx, cfg),
        NodeSpec::ConnectorAction(cfg) => connector::run_action(deps, ctx, cfg).await,
        NodeSpec::GithubIssueCreate(cfg) => connector::run_legacy_github(deps, ctx, cfg).await,
        NodeSpec::Condition(_) => Outcome::Succeeded(json!({"branch": "true"})),
        NodeSpec::ParallelJoin(_) => Outcome::Succeeded(json!({"joined": true})),
    }
}
