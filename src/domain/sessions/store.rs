//! Queries for `agent_sessions` and `agent_session_events`, always under the org's context; the one
//! cross-org read (sessions with unanswered messages) goes through the definer function
//! `app.pending_sessions()`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Uuid as SqlUuid;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{json, Value};
use uuid::Uuid;

use super::model::{EventRow, NewEvent, NewSession, SessionRow};
use crate::domain::common::ids::{AgentSessionId, OrgId, UserId};
use crate::platform::db::schema::{agent_session_events as e, agent_sessions as s};

/// Inserts a session whose first event (seq 0) the caller inserts in the same transaction.
pub async fn insert_session(
    c: &mut AsyncPgConnection,
    org: OrgId,
    by: UserId,
    new: &NewSession,
) -> QueryResult<SessionRow> {
    let selector = &new.executor_selector;
    let text = |k: &str| selector.get(k).and_then(Value::as_str).map(str::to_string);
    diesel::insert_into(s::table)
        .values((
            s::organization_id.eq(org),
            s::created_by_user_id.eq(by),
            s::title.eq(&new.title),
            s::executor_selector.eq(Some(selector)),
            s::selector_tag.eq(text("tag")),
            s::selector_group.eq(text("group")),
            s::engine_id.eq(&new.engine_id),
            s::llm_provider.eq(&new.llm_provider),
            s::llm_model.eq(&new.llm_model),
            s::llm_secret_id.eq(new.llm_secret_id),
            s::tool_calling.eq(new.tool_calling),
            s::tools_allow.eq(json!(new.tools_allow)),
            s::limits.eq(new.limits.to_json()),
            s::prompt_system.eq(&new.prompt_system),
            s::prompt_instructions.eq(&new.prompt_instructions),
            s::last_seq.eq(0),
        ))
        .returning(SessionRow::as_returning())
        .get_result(c)
        .await
}

pub async fn insert_event(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    seq: i32,
    ev: &NewEvent,
    idempotency_key: Option<&str>,
) -> QueryResult<EventRow> {
    diesel::insert_into(e::table)
        .values((
            e::organization_id.eq(org),
            e::session_id.eq(session),
            e::seq.eq(seq),
            e::event_type.eq(&ev.event_type),
            e::level.eq(ev.level),
            e::payload.eq(Some(&ev.payload)),
            e::idempotency_key.eq(idempotency_key),
        ))
        .returning(EventRow::as_returning())
        .get_result(c)
        .await
}

pub async fn get(
    c: &mut AsyncPgConnection,
    org: OrgId,
    id: AgentSessionId,
) -> QueryResult<Option<SessionRow>> {
    s::table
        .filter(s::organization_id.eq(org))
        .filter(s::id.eq(id))
        .select(SessionRow::as_select())
        .first(c)
        .await
        .optional()
}

/// The session row, locked until the transaction ends: appends to one session are serialized here.
pub async fn lock(
    c: &mut AsyncPgConnection,
    org: OrgId,
    id: AgentSessionId,
) -> QueryResult<Option<SessionRow>> {
    s::table
        .filter(s::organization_id.eq(org))
        .filter(s::id.eq(id))
        .select(SessionRow::as_select())
        .for_update()
        .first(c)
        .await
        .optional()
}

/// Records the session's new last seq (and, for a user message, its seq) and bumps its activity.
pub async fn appended(
    c: &mut AsyncPgConnection,
    id: AgentSessionId,
    seq: i32,
    user_seq: Option<i32>,
) -> QueryResult<()> {
    let now = diesel::dsl::sql::<diesel::sql_types::Timestamptz>("clock_timestamp()");
    let q = diesel::update(s::table.filter(s::id.eq(id)));
    match user_seq {
        Some(u) => {
            q.set((
                s::last_seq.eq(seq),
                s::last_user_seq.eq(u),
                s::updated_at.eq(now.clone()),
                s::last_activity_at.eq(now),
            ))
            .execute(c)
            .await
        }
        None => {
            q.set((
                s::last_seq.eq(seq),
                s::updated_at.eq(now.clone()),
                s::last_activity_at.eq(now),
            ))
            .execute(c)
            .await
        }
    }
    .map(|_| ())
}

/// A page of the org's sessions, most recently updated first, strictly after `after`.
pub async fn list(
    c: &mut AsyncPgConnection,
    org: OrgId,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> QueryResult<Vec<SessionRow>> {
    let mut q = s::table
        .filter(s::organization_id.eq(org))
        .select(SessionRow::as_select())
        .order((s::updated_at.desc(), s::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some((t, id)) = after {
        let id = AgentSessionId::from(id);
        q = q.filter(
            s::updated_at
                .lt(t)
                .or(s::updated_at.eq(t).and(s::id.lt(id))),
        );
    }
    q.load(c).await
}

/// Events with `seq > after`, ascending.
pub async fn events_after(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    after: i32,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    e::table
        .filter(e::organization_id.eq(org))
        .filter(e::session_id.eq(session))
        .filter(e::seq.gt(after))
        .order(e::seq.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(c)
        .await
}

/// The last `n` events with `seq < before`, ascending.
pub async fn events_before(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    before: i32,
    n: i64,
) -> QueryResult<Vec<EventRow>> {
    let mut rows: Vec<EventRow> = e::table
        .filter(e::organization_id.eq(org))
        .filter(e::session_id.eq(session))
        .filter(e::seq.lt(before))
        .order(e::seq.desc())
        .limit(n)
        .select(EventRow::as_select())
        .load(c)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// The last `n` user and agent messages, ascending (the model's view of the conversation: tool calls and
/// progress are a turn's own business).
pub async fn conversation(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    n: i64,
) -> QueryResult<Vec<EventRow>> {
    let mut rows: Vec<EventRow> = e::table
        .filter(e::organization_id.eq(org))
        .filter(e::session_id.eq(session))
        .filter(e::event_type.eq_any(["user_message", "agent_message"]))
        .order(e::seq.desc())
        .limit(n)
        .select(EventRow::as_select())
        .load(c)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// The user message an earlier `send` with this key appended.
pub async fn event_by_key(
    c: &mut AsyncPgConnection,
    session: AgentSessionId,
    key: &str,
) -> QueryResult<Option<EventRow>> {
    e::table
        .filter(e::session_id.eq(session))
        .filter(e::idempotency_key.eq(key))
        .select(EventRow::as_select())
        .first(c)
        .await
        .optional()
}

/// The first user message after the session's `answered_seq`.
pub async fn next_pending(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
) -> QueryResult<Option<EventRow>> {
    e::table
        .inner_join(s::table)
        .filter(s::organization_id.eq(org))
        .filter(s::id.eq(session))
        .filter(e::event_type.eq("user_message"))
        .filter(e::seq.gt(s::answered_seq))
        .order(e::seq.asc())
        .select(EventRow::as_select())
        .first(c)
        .await
        .optional()
}

/// Raises `answered_seq` to `seq` (never lowers it); false when there is no such session.
pub async fn mark_answered(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    seq: i32,
) -> QueryResult<bool> {
    let n = diesel::update(
        s::table
            .filter(s::organization_id.eq(org))
            .filter(s::id.eq(session)),
    )
    .set(
        s::answered_seq.eq(
            diesel::dsl::sql::<diesel::sql_types::Int4>("greatest(answered_seq, ")
                .bind::<diesel::sql_types::Int4, _>(seq)
                .sql(")"),
        ),
    )
    .execute(c)
    .await?;
    Ok(n > 0)
}

/// Adds one model call's tokens and cost to the session's totals (in the usage row's transaction).
pub async fn add_usage(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
) -> QueryResult<()> {
    diesel::update(
        s::table
            .filter(s::organization_id.eq(org))
            .filter(s::id.eq(session)),
    )
    .set((
        s::llm_calls.eq(s::llm_calls + 1),
        s::input_tokens.eq(s::input_tokens + input_tokens),
        s::output_tokens.eq(s::output_tokens + output_tokens),
        s::cost_micros.eq(s::cost_micros + cost_micros),
    ))
    .execute(c)
    .await?;
    Ok(())
}

/// Stores the brain's loop state; false when there is no such session.
pub async fn set_runtime(
    c: &mut AsyncPgConnection,
    org: OrgId,
    session: AgentSessionId,
    runtime: &Value,
) -> QueryResult<bool> {
    let n = diesel::update(
        s::table
            .filter(s::organization_id.eq(org))
            .filter(s::id.eq(session)),
    )
    .set(s::runtime.eq(runtime))
    .execute(c)
    .await?;
    Ok(n > 0)
}

#[derive(QueryableByName)]
pub struct Pending {
    #[diesel(sql_type = SqlUuid)]
    pub organization_id: OrgId,
    #[diesel(sql_type = SqlUuid)]
    pub session_id: AgentSessionId,
}

/// Sessions of every org with a user message not answered yet.
pub async fn pending_sessions(c: &mut AsyncPgConnection) -> QueryResult<Vec<Pending>> {
    diesel::sql_query("SELECT organization_id, session_id FROM app.pending_sessions()")
        .load(c)
        .await
}
