//! The v2 executor protocol (spec gateway §2.4, §2.8): the one definition of the frames between the
//! gateway and a node agent, used by both sides. JSON text frames tagged by `type`; a frame that does not
//! parse or fails its limits is ignored by the receiver.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::agents::identity::{Pool, ToolKind};

pub const MAX_LABELS: usize = 50;
pub const MAX_LABEL_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 120;

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentFrame {
    #[serde(rename = "executor_hello_v2")]
    Hello(HelloV2),
    #[serde(rename = "tool_result_v2")]
    ToolResult(ToolResultV2),
    #[serde(rename = "tool_event_v2")]
    ToolEvent(ToolEventV2),
}

/// Sent on open and every 15 s (it is also the heartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloV2 {
    pub executor_version: String,
    pub executor_id: Uuid,
    pub pool: Pool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    #[serde(default)]
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub max_in_flight: u32,
    pub kinds: Vec<ToolKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_hints: Option<Value>,
}

impl HelloV2 {
    /// The schema's limits beyond the types.
    pub fn is_valid(&self) -> bool {
        !self.executor_version.is_empty()
            && self
                .name
                .as_ref()
                .is_none_or(|n| (1..=MAX_NAME_CHARS).contains(&n.chars().count()))
            && self.labels.len() <= MAX_LABELS
            && self
                .labels
                .iter()
                .all(|l| (1..=MAX_LABEL_CHARS).contains(&l.chars().count()))
            && (1..=200).contains(&self.max_in_flight)
            && !self.kinds.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultV2 {
    pub request_id: String,
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Value>,
}

impl ToolResultV2 {
    pub fn is_valid(&self) -> bool {
        !self.request_id.is_empty() && self.error.as_ref().is_none_or(|e| !e.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolEventV2 {
    pub request_id: String,
    pub event: Value,
}

/// What the gateway sends an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum GatewayFrame {
    #[serde(rename = "invoke_tool_v2")]
    Invoke(InvokeToolV2),
}

/// One tool call for an executor (spec 2.8). `requestId` is what its `tool_result_v2` must name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeToolV2 {
    pub request_id: String,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub kind: ToolKind,
    pub payload: Value,
    /// Only for `connector.action`, and only when the action has one; never on a shell task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub tool_policy: ToolPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_access: Option<WorkspaceAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolPolicy {
    pub network_mode_default_deny: bool,
    /// `none` or `enabled`.
    pub network_mode: String,
    pub timeout_ms: u64,
    pub output_max_chars: u64,
    pub mounts_allowlist: Vec<Mount>,
}

impl ToolPolicy {
    /// The policy of every call today: no network, `/work` and `/tmp` writable.
    pub fn default_deny(timeout_ms: u64, output_max_chars: u64) -> Self {
        Self {
            network_mode_default_deny: true,
            network_mode: "none".into(),
            timeout_ms,
            output_max_chars,
            mounts_allowlist: vec![
                Mount {
                    container_path: "/work".into(),
                    mode: "rw".into(),
                },
                Mount {
                    container_path: "/tmp".into(),
                    mode: "rw".into(),
                },
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub container_path: String,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRef {
    pub workspace_id: Uuid,
    pub version: i64,
    pub object_key: String,
    #[serde(default)]
    pub etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    pub upload: WorkspaceUpload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUpload {
    pub url: String,
    pub object_key: String,
    pub version: i64,
}

/// Parses a frame from the gateway (the agent's side); `None` for anything else.
pub fn parse_gateway_frame(text: &str) -> Option<GatewayFrame> {
    let frame: GatewayFrame = serde_json::from_str(text).ok()?;
    let GatewayFrame::Invoke(i) = &frame;
    let p = &i.tool_policy;
    let valid = !i.request_id.is_empty()
        && (1000..=600_000).contains(&p.timeout_ms)
        && (256..=1_000_000).contains(&p.output_max_chars);
    valid.then_some(frame)
}

/// Parses one text frame; `None` for anything the protocol does not know (ignored, as in the original).
pub fn parse_agent_frame(text: &str) -> Option<AgentFrame> {
    let frame: AgentFrame = serde_json::from_str(text).ok()?;
    let valid = match &frame {
        AgentFrame::Hello(h) => h.is_valid(),
        AgentFrame::ToolResult(r) => r.is_valid(),
        AgentFrame::ToolEvent(e) => !e.request_id.is_empty(),
    };
    valid.then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hello as the spec shows it, byte for byte.
    #[test]
    fn the_spec_hello_parses() {
        let text = r#"{"type":"executor_hello_v2","executorVersion":"0.1.0","executorId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","pool":"byon","organizationId":"0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99","name":"build-box","labels":["gpu"],"maxInFlight":10,"kinds":["connector.action","agent.execute"]}"#;
        let Some(AgentFrame::Hello(h)) = parse_agent_frame(text) else {
            panic!("not a hello")
        };
        assert_eq!(h.pool, Pool::Byon);
        assert_eq!(h.max_in_flight, 10);
        assert_eq!(h.kinds, ToolKind::ALL.to_vec());
    }

    #[test]
    fn frames_outside_the_schema_are_ignored() {
        for text in [
            "not json",
            r#"{"type":"hello"}"#,
            r#"{"type":"executor_hello_v2","executorVersion":"","executorId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","pool":"byon","labels":[],"maxInFlight":10,"kinds":["agent.execute"]}"#,
            r#"{"type":"executor_hello_v2","executorVersion":"1","executorId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","pool":"byon","labels":[],"maxInFlight":0,"kinds":["agent.execute"]}"#,
            r#"{"type":"executor_hello_v2","executorVersion":"1","executorId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","pool":"byon","labels":[],"maxInFlight":1,"kinds":[]}"#,
            r#"{"type":"tool_result_v2","requestId":"","status":"succeeded"}"#,
            r#"{"type":"tool_result_v2","requestId":"r1","status":"done"}"#,
        ] {
            assert!(parse_agent_frame(text).is_none(), "{text}");
        }
    }
}
