//! Dispatches (gateway spec 2.2, 2.9): what a worker asks the gateway to run, the checks the body must
//! pass, and what the gateway answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::protocol::ResultStatus;
use crate::domain::agents::identity::{Pool, ToolKind};

/// A dispatch body. Unknown keys are ignored (as the original's schema strips them).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchRequest {
    pub organization_id: Uuid,
    pub requested_by_user_id: Uuid,
    pub run_id: Uuid,
    pub workflow_id: Uuid,
    pub node_id: String,
    pub node_type: String,
    pub attempt_count: u32,
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub executor_selector: Option<Selector>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl std::fmt::Debug for DispatchRequest {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchRequest")
            .field("request_id", &self.request_id())
            .field("kind", &self.kind)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Where a tool call may go (spec 2.7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub pool: Option<Pool>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub executor_id: Option<Uuid>,
}

/// The default wait of a dispatch without `timeoutMs`.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

impl DispatchRequest {
    /// `<runId>:<nodeId>:<attemptCount>`.
    pub fn request_id(&self) -> String {
        format!("{}:{}:{}", self.run_id, self.node_id, self.attempt_count)
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    /// The schema's limits beyond the types (spec 2.2); `false` answers 400 `BAD_REQUEST`.
    pub fn is_valid(&self) -> bool {
        let short = |s: &str| (1..=64).contains(&s.chars().count());
        let selector_ok = self.executor_selector.as_ref().is_none_or(|s| {
            s.labels
                .as_ref()
                .is_none_or(|l| l.len() <= 50 && l.iter().all(|x| short(x)))
                && s.group.as_deref().is_none_or(short)
                && s.tag.as_deref().is_none_or(short)
        });
        !self.node_id.is_empty()
            && !self.node_type.is_empty()
            && (1..=1000).contains(&self.attempt_count)
            && matches!(
                self.kind.as_str(),
                "connector.action" | "agent.execute" | "agent.run"
            )
            && self.secret.as_ref().is_none_or(|s| !s.is_empty())
            && self
                .timeout_ms
                .is_none_or(|t| (1000..=600_000).contains(&t))
            && selector_ok
    }

    /// The executor kind of this dispatch (`None` for `agent.run`, which runs in the brain).
    pub fn tool_kind(&self) -> Option<ToolKind> {
        match self.kind.as_str() {
            "connector.action" => Some(ToolKind::ConnectorAction),
            "agent.execute" => Some(ToolKind::AgentExecute),
            _ => None,
        }
    }
}

/// A dispatch's final result (spec 2.3): absent fields are left out, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchResult {
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DispatchResult {
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: ResultStatus::Failed,
            output: None,
            error: Some(error.into()),
        }
    }
}

/// The answer to `dispatch-async`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: String,
    pub dispatched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// Already running (the Improve of spec 2.2: an in-flight request is not dispatched twice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight: Option<bool>,
}

/// What the gateway pushes to the continuation when an asynchronous dispatch ends (spec 2.6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteApply {
    #[serde(rename = "type")]
    pub kind: String,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub request_id: String,
    pub attempt_count: u32,
    pub result: DispatchResult,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> String {
        format!(
            r#"{{"organizationId":"0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99","requestedByUserId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","runId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e60","workflowId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e61","nodeId":"n1","nodeType":"agent.execute","attemptCount":1,"kind":"agent.execute","payload":{{}}{extra}}}"#
        )
    }

    #[test]
    fn a_dispatch_body_is_checked_against_the_spec_limits() {
        let ok: DispatchRequest = serde_json::from_str(&body("")).unwrap();
        assert!(ok.is_valid());
        assert_eq!(ok.request_id(), "6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e60:n1:1");
        assert_eq!(ok.timeout_ms(), 60_000);
        for bad in [
            r#","timeoutMs":999"#,
            r#","timeoutMs":600001"#,
            r#","secret":"""#,
            r#","executorSelector":{"tag":""}"#,
        ] {
            let b: DispatchRequest = serde_json::from_str(&body(bad)).unwrap();
            assert!(!b.is_valid(), "{bad}");
        }
        assert!(serde_json::from_str::<DispatchRequest>(&body(
            r#","executorSelector":{"pool":"elsewhere"}"#
        ))
        .is_err());
        let debug = format!(
            "{:?}",
            serde_json::from_str::<DispatchRequest>(&body(r#","secret":"ghp_x""#)).unwrap()
        );
        assert!(!debug.contains("ghp_x"), "{debug}");
    }

    #[test]
    fn results_leave_absent_fields_out() {
        assert_eq!(
            serde_json::to_string(&DispatchResult::failed("NO_EXECUTOR_AVAILABLE")).unwrap(),
            r#"{"status":"failed","error":"NO_EXECUTOR_AVAILABLE"}"#
        );
    }
}
