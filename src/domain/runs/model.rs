//! Runs, their steps and their events, as stored and as shown.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::domain::common::ids::{EventId, OrgId, RunId, UserId, WorkflowId};
use crate::domain::common::time::iso;
use crate::domain::workflows::dsl::NodeType;
use crate::platform::db::schema::{workflow_run_events, workflow_runs};

crate::text_enum! {
    /// Where a run stands. `queued` also covers a retry waiting for its `next_attempt_at`.
    pub enum RunStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

crate::text_enum! {
    /// What started a run.
    pub enum TriggerType {
        Manual = "manual",
        Webhook = "webhook",
        Cron = "cron",
    }
}

crate::text_enum! {
    /// The kinds of run events (workflows spec 4).
    pub enum EventKind {
        RunStarted = "run_started",
        NodeStarted = "node_started",
        NodeSucceeded = "node_succeeded",
        NodeFailed = "node_failed",
        NodeSkipped = "node_skipped",
        RunSucceeded = "run_succeeded",
        RunRetried = "run_retried",
        RunFailed = "run_failed",
        NodeDispatched = "node_dispatched",
        RemoteResultReceived = "remote_result_received",
        /// An `agent.run` node's model asked for a tool (written by the brain while the run waits).
        AgentToolCall = "agent_tool_call",
        /// The result of that tool call.
        AgentToolResult = "agent_tool_result",
    }
}

crate::text_enum! {
    pub enum Level {
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

crate::text_enum! {
    pub enum StepStatus {
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = workflow_runs)]
pub struct Run {
    pub id: RunId,
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub trigger_type: TriggerType,
    pub status: RunStatus,
    pub attempt_count: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub cursor_node_index: i32,
    pub blocked_request_id: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub requested_by_user_id: UserId,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The wire `run` object (blocked cursor and lease columns are internal).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Run)]
pub struct RunView {
    pub id: RunId,
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub requested_by_user_id: UserId,
    pub trigger_type: TriggerType,
    pub status: RunStatus,
    pub attempt_count: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<String>,
    pub input: Value,
    pub output: Value,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            workflow_id: r.workflow_id,
            requested_by_user_id: r.requested_by_user_id,
            trigger_type: r.trigger_type,
            status: r.status,
            attempt_count: r.attempt_count,
            max_attempts: r.max_attempts,
            next_attempt_at: r.next_attempt_at.map(iso),
            input: r.input.clone().unwrap_or(Value::Null),
            output: r.output.clone().unwrap_or(Value::Null),
            error: r.error.clone(),
            created_at: iso(r.created_at),
            started_at: r.started_at.map(iso),
            finished_at: r.finished_at.map(iso),
        }
    }
}

/// A present JSON `null` output stays `Some(Null)` (a node may succeed with `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One executed node in `output.steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub node_id: String,
    pub node_type: NodeType,
    pub status: StepStatus,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Step {
    pub fn succeeded(&self) -> bool {
        self.status == StepStatus::Succeeded
    }

    /// The succeeded steps recorded in a stored run output (what a resumed attempt must not redo).
    /// Steps that do not read as steps are skipped: only this engine writes them.
    pub fn succeeded_in(output: Option<&Value>) -> Vec<Step> {
        output
            .and_then(|o| o.get("steps"))
            .and_then(Value::as_array)
            .map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| Step::deserialize(s).ok())
                    .filter(Step::succeeded)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `output.output`: the summary of an attempt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary<'a> {
    pub completed_node_count: usize,
    pub failed_node_id: Option<&'a str>,
}

/// A run's `output` (workflows spec 3.3).
#[derive(Debug, Serialize)]
pub struct RunOutput<'a> {
    pub status: StepStatus,
    pub steps: &'a [Step],
    pub output: Summary<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'a Value>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workflow_run_events)]
pub struct Event {
    pub id: EventId,
    pub seq: i64,
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub attempt_count: i32,
    pub event_type: EventKind,
    pub node_id: Option<String>,
    pub node_type: Option<NodeType>,
    pub level: Level,
    pub message: Option<String>,
    pub payload: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RunEvent)]
pub struct EventView {
    pub id: EventId,
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub attempt_count: i32,
    pub event_type: EventKind,
    pub node_id: Option<String>,
    pub node_type: Option<NodeType>,
    pub level: Level,
    pub message: Option<String>,
    pub payload: Value,
    pub created_at: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id,
            organization_id: e.organization_id,
            workflow_id: e.workflow_id,
            run_id: e.run_id,
            attempt_count: e.attempt_count,
            event_type: e.event_type,
            node_id: e.node_id.clone(),
            node_type: e.node_type,
            level: e.level,
            message: e.message.clone(),
            payload: e.payload.clone().unwrap_or(Value::Null),
            created_at: iso(e.created_at),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = workflow_run_events)]
pub struct NewEvent {
    pub organization_id: OrgId,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub attempt_count: i32,
    pub event_type: EventKind,
    pub node_id: Option<String>,
    pub node_type: Option<NodeType>,
    pub level: Level,
    pub message: Option<String>,
    pub payload: Option<Value>,
}

/// The spec's payload summary: stored as is when its JSON fits in `max` chars, else a preview.
pub fn summarize(value: &Value, max: usize) -> Option<Value> {
    if value.is_null() {
        return None;
    }
    let text = value.to_string();
    let len = text.chars().count();
    if len <= max {
        return Some(value.clone());
    }
    Some(serde_json::json!({
        "truncated": true,
        "preview": text.chars().take(max).collect::<String>(),
        "originalLength": len,
    }))
}
