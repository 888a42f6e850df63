//! Runs and run events as stored and as shown.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::auth::model::iso;
use crate::platform::db::schema::{workflow_run_events, workflow_runs};

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = workflow_runs)]
pub struct Run {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub trigger_type: String,
    pub status: String,
    pub attempt_count: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub cursor_node_index: i32,
    pub blocked_request_id: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub requested_by_user_id: Uuid,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The wire `run` object (blocked cursor and lease columns are internal).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub requested_by_user_id: Uuid,
    pub trigger_type: String,
    pub status: String,
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
            trigger_type: r.trigger_type.clone(),
            status: r.status.clone(),
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

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workflow_run_events)]
pub struct Event {
    pub id: Uuid,
    pub seq: i64,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub attempt_count: i32,
    pub event_type: String,
    pub node_id: Option<String>,
    pub node_type: Option<String>,
    pub level: String,
    pub message: Option<String>,
    pub payload: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub attempt_count: i32,
    pub event_type: String,
    pub node_id: Option<String>,
    pub node_type: Option<String>,
    pub level: String,
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
            event_type: e.event_type.clone(),
            node_id: e.node_id.clone(),
            node_type: e.node_type.clone(),
            level: e.level.clone(),
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
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub attempt_count: i32,
    pub event_type: &'static str,
    pub node_id: Option<String>,
    pub node_type: Option<String>,
    pub level: &'static str,
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
