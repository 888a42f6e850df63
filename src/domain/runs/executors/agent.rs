//! `agent.execute` and `agent.run`: the cloud stub runs here; anything remote waits for the gateway,
//! which is not part of this build yet, so it fails deterministically instead of hanging.

use serde_json::{json, Value};

use super::{ExecCtx, Outcome};

/// `agent.execute`: no `execution` (or mode `cloud`) is the stub; mode `executor` needs the gateway.
/// A missing `mode` reads as cloud, like [`crate::domain::workflows::dsl::is_remote`].
pub fn execute(ctx: &ExecCtx<'_>) -> Outcome {
    let execution = ctx.node.config.as_ref().and_then(|c| c.get("execution"));
    let mode = execution
        .and_then(|e| e.get("mode"))
        .and_then(Value::as_str);
    match mode {
        Some("executor") => Outcome::fail("EXECUTOR_NOT_AVAILABLE", false),
        _ => {
            Outcome::Succeeded(json!({"accepted": true, "taskId": format!("{}-task", ctx.node.id)}))
        }
    }
}

/// `agent.run` always runs in the gateway brain.
pub fn run() -> Outcome {
    Outcome::fail("EXECUTOR_NOT_AVAILABLE", false)
}
