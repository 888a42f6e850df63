//! `agent.execute` and `agent.run`: the cloud stub runs here; anything remote waits for the gateway,
//! which is not part of this build yet, so it fails deterministically instead of hanging.

use serde_json::json;

use super::context::Outcome;
use crate::domain::workflows::dsl::spec::AgentExecute;
use crate::domain::workflows::dsl::Node;

/// `agent.execute`: no `execution` (or mode `cloud`) is the stub; mode `executor` needs the gateway.
pub fn execute(node: &Node, _config: Option<&AgentExecute>) -> Outcome {
    if node.is_remote() {
        return Outcome::fail("EXECUTOR_NOT_AVAILABLE", false);
    }
    Outcome::Succeeded(json!({"accepted": true, "taskId": format!("{}-task", node.id)}))
}

/// `agent.run` always runs in the gateway brain.
pub fn run() -> Outcome {
    Outcome::fail("EXECUTOR_NOT_AVAILABLE", false)
}
