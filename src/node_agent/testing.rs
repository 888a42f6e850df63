//! Test helpers shared by the dispatcher's and the session's tests: a sandbox that only waits, and
//! invocation frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::runtime::RuntimeContext;
use super::sandbox::{BackendKind, Outcome, Running, Sandbox, Task};
use crate::domain::agents::identity::ToolKind;
use crate::domain::gateway::protocol::{GatewayFrame, InvokeToolV2, ToolPolicy};

/// Waits `delay`, then "succeeds" with the script as stdout; counts how many run at once.
#[derive(Clone, Default)]
pub struct WaitingSandbox {
    pub delay: Duration,
    pub running: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
}

impl Sandbox for WaitingSandbox {
    fn run(&self, task: Task) -> Running<'_> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome {
                backend: "host",
                exit_code: Some(0),
                timed_out: false,
                stdout: task.script,
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
            })
        })
    }
}

pub fn context(sandbox: impl Sandbox + 'static) -> RuntimeContext {
    let root = std::env::temp_dir().join(format!("vespid-agent-{}", Uuid::new_v4().simple()));
    let mut ctx = RuntimeContext::new(BackendKind::Host, root).unwrap();
    ctx.host = Box::new(sandbox);
    ctx
}

/// An `invoke_tool_v2` frame for a shell task whose stdout (with [`WaitingSandbox`]) is `script`.
pub fn shell_invoke(request_id: &str, script: &str) -> String {
    let frame = GatewayFrame::Invoke(InvokeToolV2 {
        request_id: request_id.into(),
        organization_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        kind: ToolKind::AgentExecute,
        payload: json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute",
            "config": {"task": {"type": "shell", "script": script}}}}),
        secret: None,
        tool_policy: ToolPolicy::default_deny(10_000, 65_536),
        workspace: None,
        workspace_access: None,
        idempotency_key: None,
    });
    serde_json::to_string(&frame).unwrap()
}
