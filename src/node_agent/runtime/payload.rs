//! The `agent.execute` payload (spec gateway §3.4): the workflow node as the worker forwards it.
//! Extra keys are allowed everywhere (the node's config also carries `execution`, for the gateway).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::failure::Failure;
use crate::node_agent::sandbox::{BackendKind, NetworkMode, Shell};

/// The bounds of a node's `sandbox.timeoutMs`, as for the gateway's `toolPolicy.timeoutMs`.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1000..=600_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutePayload {
    pub node_id: String,
    #[serde(default)]
    pub node: Option<NodeSpec>,
    #[serde(default)]
    pub run_id: Option<Uuid>,
    #[serde(default)]
    pub workflow_id: Option<Uuid>,
    #[serde(default)]
    pub attempt_count: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NodeType,
    #[serde(default)]
    pub config: Option<NodeConfig>,
}

/// The only node type an executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum NodeType {
    #[serde(rename = "agent.execute")]
    AgentExecute,
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeConfig {
    #[serde(default)]
    pub task: Option<ShellTask>,
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
}

#[derive(Debug, Deserialize)]
pub struct ShellTask {
    #[serde(rename = "type")]
    pub kind: TaskType,
    pub script: String,
    #[serde(default)]
    pub shell: Option<Shell>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    Shell,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    #[serde(default)]
    pub backend: Option<BackendKind>,
    #[serde(default)]
    pub network: Option<NetworkMode>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub docker: Option<DockerSpec>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DockerSpec {
    #[serde(default)]
    pub image: Option<String>,
}

impl ExecutePayload {
    /// The payload, or `INVALID_EXECUTE_PAYLOAD` when it breaks the schema (types, then the bounds the
    /// types cannot say).
    pub fn parse(payload: &Value) -> Result<Self, Failure> {
        let parsed = Self::deserialize(payload).map_err(|_| Failure::InvalidExecutePayload)?;
        let config = parsed.config();
        let bounded = parsed.attempt_count.is_none_or(|a| a >= 1)
            && config
                .and_then(|c| c.task.as_ref())
                .is_none_or(|t| !t.script.is_empty())
            && config
                .and_then(|c| c.sandbox.as_ref())
                .and_then(|s| s.timeout_ms)
                .is_none_or(|ms| TIMEOUT_MS.contains(&ms));
        if bounded {
            Ok(parsed)
        } else {
            Err(Failure::InvalidExecutePayload)
        }
    }

    fn config(&self) -> Option<&NodeConfig> {
        self.node.as_ref().and_then(|n| n.config.as_ref())
    }

    /// The shell task, if the node has one (a node without one is only acknowledged).
    pub fn task(&self) -> Option<&ShellTask> {
        self.config().and_then(|c| c.task.as_ref())
    }

    /// The node's sandbox settings (all unset when it has none).
    pub fn sandbox(&self) -> Option<&SandboxSpec> {
        self.config().and_then(|c| c.sandbox.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_schema_and_its_bounds() {
        let ok = |v: Value| ExecutePayload::parse(&v).is_ok();
        assert!(ok(json!({"nodeId": "n", "extra": 1})));
        assert!(ok(
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"execution": {"mode": "executor"},
                "task": {"type": "shell", "script": "echo", "shell": "bash", "env": {"A": "b"}},
                "sandbox": {"backend": "host", "network": "enabled", "timeoutMs": 1000, "docker": {"image": "alpine"}}}},
                "runId": "0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99", "attemptCount": 2})
        ));
        for bad in [
            json!({}),
            json!({"nodeId": 3}),
            json!({"nodeId": "n", "attemptCount": 0}),
            json!({"nodeId": "n", "runId": "not-a-uuid"}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "http.request"}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"task": {"type": "shell", "script": ""}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"task": {"type": "python", "script": "x"}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"task": {"type": "shell", "script": "x", "shell": "zsh"}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"task": {"type": "shell", "script": "x", "env": {"A": 1}}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"sandbox": {"timeoutMs": 999}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"sandbox": {"network": "open"}}}}),
            json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"sandbox": {"backend": "vm"}}}}),
        ] {
            assert_eq!(
                ExecutePayload::parse(&bad).err(),
                Some(Failure::InvalidExecutePayload),
                "{bad}"
            );
        }
    }
}
