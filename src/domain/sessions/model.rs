//! Sessions and their events as stored and as shown, the validated input of a new session, and the
//! frames the sessions domain publishes on Redis (`session-events`) for every gateway instance.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::common::ids::{AgentSessionId, OrgId, SecretId, SessionEventId, UserId};
use crate::domain::common::time::iso;
use crate::platform::db::schema::{agent_session_events, agent_sessions};

crate::text_enum! {
    /// A session's status.
    pub enum SessionStatus {
        Active = "active",
        Archived = "archived",
    }
}

crate::text_enum! {
    /// An event's level.
    pub enum Level {
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

crate::text_enum! {
    /// How the brain asks the model for tool calls: the provider's native tools, or the original's
    /// JSON-in-text format.
    pub enum ToolCalling {
        Native = "native",
        Json = "json",
    }
}

/// The engines a session may name (gateway spec 4.1).
pub const ENGINES: &[&str] = &["gateway.loop.v2", "gateway.codex.v2", "gateway.claude.v2"];
pub const DEFAULT_ENGINE: &str = "gateway.loop.v2";
pub const PROVIDERS: &[&str] = &["openai", "anthropic", "gemini"];

/// A message a user may send: 1..=50000 characters.
pub const MAX_MESSAGE_CHARS: usize = 50_000;
/// An idempotency key: 1..=200 characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// A session row (everything but `runtime`, which only the brain reads, through [`super::Sessions`]).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = agent_sessions)]
pub struct SessionRow {
    pub id: AgentSessionId,
    pub organization_id: OrgId,
    pub created_by_user_id: UserId,
    pub title: String,
    pub status: SessionStatus,
    pub pinned_agent_id: Option<uuid::Uuid>,
    pub executor_selector: Option<Value>,
    pub selector_tag: Option<String>,
    pub selector_group: Option<String>,
    pub engine_id: String,
    pub toolset_id: Option<uuid::Uuid>,
    pub llm_provider: String,
    pub llm_model: String,
    pub llm_secret_id: Option<SecretId>,
    pub tool_calling: ToolCalling,
    pub tools_allow: Value,
    pub limits: Value,
    pub prompt_system: Option<String>,
    pub prompt_instructions: String,
    pub runtime: Value,
    pub last_seq: i32,
    pub answered_seq: i32,
    pub last_user_seq: i32,
    pub llm_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

/// A session as created: validated at the boundary.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub title: String,
    pub engine_id: String,
    /// Accepted as a UUID; refused unless `None` (there are no toolsets yet, so none is the org's).
    pub toolset_id: Option<uuid::Uuid>,
    pub llm_provider: String,
    pub llm_model: String,
    pub llm_secret_id: Option<SecretId>,
    pub tool_calling: ToolCalling,
    pub prompt_system: Option<String>,
    pub prompt_instructions: String,
    pub tools_allow: Vec<String>,
    /// Every limit, defaulted and range-checked (see [`Limits`]).
    pub limits: Limits,
    /// The selector object as given (known keys only), `{}` by default (no pool: own executors first).
    pub executor_selector: Value,
}

/// A session's turn limits (gateway spec 4.3), each within its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionLimits)]
pub struct Limits {
    /// 1..=64, default 8.
    pub max_turns: i64,
    /// 0..=200, default 20.
    pub max_tool_calls: i64,
    /// 1000..=600000, default 60000.
    pub timeout_ms: i64,
    /// 128..=2000000, default 50000.
    pub max_output_chars: i64,
    /// 1000..=2000000, default 200000.
    pub max_runtime_chars: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_turns: 8,
            max_tool_calls: 20,
            timeout_ms: 60_000,
            max_output_chars: 50_000,
            max_runtime_chars: 200_000,
        }
    }
}

impl Limits {
    /// (wire name, minimum, maximum) of each limit.
    pub const RANGES: [(&'static str, i64, i64); 5] = [
        ("maxTurns", 1, 64),
        ("maxToolCalls", 0, 200),
        ("timeoutMs", 1000, 600_000),
        ("maxOutputChars", 128, 2_000_000),
        ("maxRuntimeChars", 1000, 2_000_000),
    ];

    /// The limits a stored session carries (the defaults for any value missing or out of range: rows
    /// are written validated, so this only guards against hand edits).
    pub fn of(stored: &Value) -> Self {
        let d = Self::default();
        let get = |name: &str, default: i64| {
            Self::RANGES
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, lo, hi)| {
                    stored
                        .get(name)
                        .and_then(Value::as_i64)
                        .filter(|v| (*lo..=*hi).contains(v))
                })
                .unwrap_or(default)
        };
        Self {
            max_turns: get("maxTurns", d.max_turns),
            max_tool_calls: get("maxToolCalls", d.max_tool_calls),
            timeout_ms: get("timeoutMs", d.timeout_ms),
            max_output_chars: get("maxOutputChars", d.max_output_chars),
            max_runtime_chars: get("maxRuntimeChars", d.max_runtime_chars),
        }
    }

    pub fn to_json(self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({}))
    }
}

/// A session's LLM usage totals, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionUsage)]
pub struct UsageView {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Estimated from the configured price table.
    pub cost_usd: f64,
}

/// A session as the API shows it (spec 4.1, plus `llmSecretId`, `toolCalling` and `usage`); never
/// `runtime` or the brain's bookkeeping.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentSession)]
pub struct SessionView {
    pub id: AgentSessionId,
    pub organization_id: OrgId,
    pub created_by_user_id: UserId,
    pub title: String,
    pub status: SessionStatus,
    /// Always `null` (no pinning in v2).
    pub pinned_agent_id: Option<uuid::Uuid>,
    #[schema(value_type = Object)]
    pub executor_selector: Option<Value>,
    pub selector_tag: Option<String>,
    pub selector_group: Option<String>,
    pub engine_id: String,
    pub toolset_id: Option<uuid::Uuid>,
    pub llm_provider: String,
    pub llm_model: String,
    /// The org's connector secret holding the provider credential, if the session brings its own.
    pub llm_secret_id: Option<SecretId>,
    pub tool_calling: ToolCalling,
    #[schema(value_type = Vec<String>)]
    pub tools_allow: Value,
    #[schema(value_type = Limits)]
    pub limits: Value,
    pub prompt_system: Option<String>,
    pub prompt_instructions: String,
    pub usage: UsageView,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: String,
}

impl From<&SessionRow> for SessionView {
    fn from(r: &SessionRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            created_by_user_id: r.created_by_user_id,
            title: r.title.clone(),
            status: r.status,
            pinned_agent_id: r.pinned_agent_id,
            executor_selector: r.executor_selector.clone(),
            selector_tag: r.selector_tag.clone(),
            selector_group: r.selector_group.clone(),
            engine_id: r.engine_id.clone(),
            toolset_id: r.toolset_id,
            llm_provider: r.llm_provider.clone(),
            llm_model: r.llm_model.clone(),
            llm_secret_id: r.llm_secret_id,
            tool_calling: r.tool_calling,
            tools_allow: r.tools_allow.clone(),
            limits: r.limits.clone(),
            prompt_system: r.prompt_system.clone(),
            prompt_instructions: r.prompt_instructions.clone(),
            usage: UsageView {
                calls: r.llm_calls,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: r.cost_micros as f64 / 1_000_000.0,
            },
            created_at: iso(r.created_at),
            updated_at: iso(r.updated_at),
            last_activity_at: iso(r.last_activity_at),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub level: Level,
    pub payload: Value,
}

impl NewEvent {
    pub fn info(event_type: &str, payload: Value) -> Self {
        Self {
            event_type: event_type.to_string(),
            level: Level::Info,
            payload,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = agent_session_events)]
pub struct EventRow {
    pub id: SessionEventId,
    pub organization_id: OrgId,
    pub session_id: AgentSessionId,
    pub seq: i32,
    pub event_type: String,
    pub level: Level,
    pub payload: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// An event as the REST API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentSessionEvent)]
pub struct EventView {
    pub id: SessionEventId,
    pub organization_id: OrgId,
    pub session_id: AgentSessionId,
    pub seq: i32,
    pub event_type: String,
    pub level: Level,
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    pub created_at: String,
}

impl From<&EventRow> for EventView {
    fn from(e: &EventRow) -> Self {
        Self {
            id: e.id,
            organization_id: e.organization_id,
            session_id: e.session_id,
            seq: e.seq,
            event_type: e.event_type.clone(),
            level: e.level,
            payload: e.payload.clone(),
            created_at: iso(e.created_at),
        }
    }
}

/// What travels on the `session-events` channel: a committed event, or an ephemeral delta of assistant
/// text (never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Published {
    #[serde(rename_all = "camelCase")]
    Event {
        organization_id: OrgId,
        session_id: AgentSessionId,
        seq: i32,
        event_type: String,
        level: Level,
        payload: Option<Value>,
        created_at: String,
    },
    #[serde(rename_all = "camelCase")]
    Delta {
        organization_id: OrgId,
        session_id: AgentSessionId,
        turn_seq: i32,
        index: u32,
        delta: String,
    },
}

impl Published {
    pub fn event(e: &EventRow) -> Self {
        Published::Event {
            organization_id: e.organization_id,
            session_id: e.session_id,
            seq: e.seq,
            event_type: e.event_type.clone(),
            level: e.level,
            payload: e.payload.clone(),
            created_at: iso(e.created_at),
        }
    }

    pub fn session_id(&self) -> AgentSessionId {
        match self {
            Published::Event { session_id, .. } | Published::Delta { session_id, .. } => {
                *session_id
            }
        }
    }
}
