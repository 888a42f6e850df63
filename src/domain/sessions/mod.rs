//! Interactive agent sessions (gateway spec §4): the session rows and their append-only event log, the
//! REST operations for org members, and the internal operations the brain and the control-client socket
//! use. Every event gets the next `seq` of its session under a `SELECT … FOR UPDATE` of the session row,
//! and once committed it is published on the Redis channel `session-events`, from which every gateway
//! instance's [`client::Hub`] feeds its joined sockets (which fill any gap from the database, so a lost
//! publication delays an event, never loses it). Assistant text deltas travel on the same channel and
//! are never stored.

pub mod client;
pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod socket_routes;
pub mod store;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

use base64::Engine;
use diesel_async::scoped_futures::ScopedFutureExt;
use serde_json::{json, Value};

use crate::domain::audit::{self, Action, Entry};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::{AgentSessionId, OrgId, UserId};
use crate::domain::common::page::{self, Page};
use crate::domain::secrets::{SecretError, Secrets};
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::redis::Redis;
pub use error::SessionError;
use model::{
    EventRow, EventView, NewEvent, NewSession, Published, SessionRow, SessionView,
    MAX_IDEMPOTENCY_KEY_CHARS, MAX_MESSAGE_CHARS,
};

/// The channel (inside the install's Redis namespace) carrying [`Published`] frames as JSON.
pub const CHANNEL: &str = "session-events";

/// Wakes the brain for a session with a new user message (implemented by the brain; the control-client
/// socket calls it after each `session_send`). Must not block.
/// Work that commits with an append (see [`Sessions::append_with`]).
pub type Also = Box<
    dyn for<'c> FnOnce(
            &'c mut diesel_async::AsyncPgConnection,
        ) -> futures_util::future::BoxFuture<'c, diesel::QueryResult<()>>
        + Send,
>;

pub trait TurnScheduler: Send + Sync {
    fn wake(&self, org: OrgId, session: AgentSessionId);
}

/// A scheduler that does nothing (until the brain is wired in, and for processes without one).
pub struct NoTurns;

impl TurnScheduler for NoTurns {
    fn wake(&self, _org: OrgId, _session: AgentSessionId) {}
}

/// A page of events after a position: `cursor` = base64url(JSON `{seq}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPage {
    pub limit: i64,
    pub after: Option<i32>,
}

/// The events cursor naming `seq`.
pub fn event_cursor(seq: i32) -> String {
    URL_SAFE_NO_PAD.encode(json!({ "seq": seq }).to_string())
}

/// The seq an events cursor names; `None` for anything else (a bad cursor is ignored: first page).
pub fn parse_event_cursor(raw: &str) -> Option<i32> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .ok()?;
    let doc: Value = serde_json::from_slice(&bytes).ok()?;
    doc.get("seq")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

pub struct Sessions {
    db: PgPool,
    redis: Redis,
    secrets: Arc<Secrets>,
}

impl Sessions {
    pub fn new(db: PgPool, redis: Redis, secrets: Arc<Secrets>) -> Self {
        Self { db, redis, secrets }
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Creates the session with its `session_created` event (seq 0), audited in the same transaction.
    pub async fn create(&self, ctx: &OrgCtx, new: NewSession) -> Result<SessionView, SessionError> {
        if new.toolset_id.is_some() {
            return Err(SessionError::ToolsetNotFound);
        }
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        // A secret never changes org, so checking before the transaction is enough (the foreign key
        // keeps it from vanishing meanwhile: a deleted secret leaves the session with none).
        if let Some(secret) = new.llm_secret_id {
            match self.secrets.exists(org, secret).await {
                Ok(true) => {}
                Ok(false) => return Err(SessionError::SecretNotFound),
                Err(SecretError::Db(e)) => return Err(SessionError::Db(e)),
                Err(e) => return Err(SessionError::Secrets(e.to_string())),
            }
        }
        let (row, event) = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let row = store::insert_session(c, org, user, &new).await?;
                let created = NewEvent::info(
                    "session_created",
                    json!({
                        "engineId": row.engine_id,
                        "llm": { "provider": row.llm_provider, "model": row.llm_model },
                    }),
                );
                let event = store::insert_event(c, org, row.id, 0, &created, None).await?;
                let entry = Entry::by(user, org, Action::SessionCreate, "session")
                    .target(row.id)
                    .details(json!({
                        "title": row.title,
                        "engineId": row.engine_id,
                        "llmProvider": row.llm_provider,
                        "llmModel": row.llm_model,
                        "llmSecretId": row.llm_secret_id,
                    }));
                audit::record(c, &entry).await?;
                Ok::<_, SessionError>((row, event))
            }
            .scope_boxed()
        })
        .await?;
        self.publish(&Published::event(&event)).await;
        Ok(SessionView::from(&row))
    }

    /// A page of the org's sessions, most recently updated first, and the cursor of the next page
    /// (`None` on the last).
    pub async fn list(
        &self,
        ctx: &OrgCtx,
        page: Page,
    ) -> Result<(Vec<SessionView>, Option<String>), SessionError> {
        let org = ctx.org_id;
        let mut rows = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                    Ok::<_, SessionError>(store::list(c, org, page.after, page.limit + 1).await?)
                }
                .scope_boxed()
        })
        .await?;
        let more = rows.len() as i64 > page.limit;
        rows.truncate(usize::try_from(page.limit).unwrap_or(0));
        let next = if more {
            page::next_cursor(&rows, |r| (r.updated_at, r.id.uuid()))
        } else {
            None
        };
        Ok((rows.iter().map(SessionView::from).collect(), next))
    }

    pub async fn get(&self, ctx: &OrgCtx, id: AgentSessionId) -> Result<SessionView, SessionError> {
        let org = ctx.org_id;
        let row = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { Ok::<_, SessionError>(store::get(c, org, id).await?) }.scope_boxed()
        })
        .await?;
        row.as_ref()
            .map(SessionView::from)
            .ok_or(SessionError::NotFound)
    }

    /// A page of the session's events after the cursor, ascending; an unknown session has none.
    pub async fn events(
        &self,
        ctx: &OrgCtx,
        id: AgentSessionId,
        page: EventPage,
    ) -> Result<(Vec<EventView>, Option<String>), SessionError> {
        let org = ctx.org_id;
        let after = page.after.unwrap_or(-1);
        let mut rows = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                Ok::<_, SessionError>(store::events_after(c, org, id, after, page.limit + 1).await?)
            }
            .scope_boxed()
        })
        .await?;
        let more = rows.len() as i64 > page.limit;
        rows.truncate(usize::try_from(page.limit).unwrap_or(0));
        let next = if more {
            rows.last().map(|e| event_cursor(e.seq))
        } else {
            None
        };
        Ok((rows.iter().map(EventView::from).collect(), next))
    }

    // Internal operations (brain, control-client socket): org-scoped, no user.

    pub async fn find(
        &self,
        org: OrgId,
        id: AgentSessionId,
    ) -> Result<Option<SessionRow>, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::get(c, org, id).await?) }.scope_boxed()
        })
        .await
    }

    /// Appends an event with the session's next seq, then publishes it (after the commit).
    pub async fn append(
        &self,
        org: OrgId,
        id: AgentSessionId,
        ev: NewEvent,
    ) -> Result<EventRow, SessionError> {
        let event = self.append_unpublished(org, id, ev).await?;
        self.publish(&Published::event(&event)).await;
        Ok(event)
    }

    /// [`Sessions::append`], with `also` run in the append's transaction before the event is written
    /// (what must commit with it: a turn's last usage row and the session's totals).
    pub async fn append_with(
        &self,
        org: OrgId,
        id: AgentSessionId,
        ev: NewEvent,
        also: Also,
    ) -> Result<EventRow, SessionError> {
        let event = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let session = store::lock(c, org, id)
                    .await?
                    .ok_or(SessionError::NotFound)?;
                also(c).await?;
                let seq = session.last_seq + 1;
                let event = store::insert_event(c, org, id, seq, &ev, None).await?;
                store::appended(c, id, seq, None).await?;
                Ok::<_, SessionError>(event)
            }
            .scope_boxed()
        })
        .await?;
        self.publish(&Published::event(&event)).await;
        Ok(event)
    }

    /// [`Sessions::append`] without the publication: subscribers find the event when they next read
    /// the database. For tests of gap filling, and for writers that publish in batches.
    pub async fn append_unpublished(
        &self,
        org: OrgId,
        id: AgentSessionId,
        ev: NewEvent,
    ) -> Result<EventRow, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let session = store::lock(c, org, id)
                    .await?
                    .ok_or(SessionError::NotFound)?;
                let seq = session.last_seq + 1;
                let event = store::insert_event(c, org, id, seq, &ev, None).await?;
                store::appended(c, id, seq, None).await?;
                Ok::<_, SessionError>(event)
            }
            .scope_boxed()
        })
        .await
    }

    /// A user's message: appended as `user_message {message}` and recorded as the session's latest
    /// user message. With an idempotency key already used in this session, the first message's event is
    /// returned and nothing is appended. The caller wakes the brain ([`TurnScheduler`]).
    pub async fn send(
        &self,
        org: OrgId,
        user: UserId,
        id: AgentSessionId,
        message: String,
        idempotency_key: Option<String>,
    ) -> Result<EventRow, SessionError> {
        if !(1..=MAX_MESSAGE_CHARS).contains(&message.chars().count())
            || idempotency_key
                .as_ref()
                .is_some_and(|k| !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&k.chars().count()))
        {
            return Err(SessionError::InvalidMessage);
        }
        let (event, fresh) = db::tenant_tx(&self.db, TenantCtx::user_org(user, org), |c| {
            async move {
                let session = store::lock(c, org, id)
                    .await?
                    .ok_or(SessionError::NotFound)?;
                // Under the row lock: a retry racing the first send waits for it, then finds its event.
                if let Some(key) = idempotency_key.as_deref() {
                    if let Some(first) = store::event_by_key(c, id, key).await? {
                        return Ok((first, false));
                    }
                }
                let seq = session.last_seq + 1;
                let ev = NewEvent::info("user_message", json!({ "message": message }));
                let event =
                    store::insert_event(c, org, id, seq, &ev, idempotency_key.as_deref()).await?;
                store::appended(c, id, seq, Some(seq)).await?;
                Ok::<_, SessionError>((event, true))
            }
            .scope_boxed()
        })
        .await?;
        if fresh {
            self.publish(&Published::event(&event)).await;
        }
        Ok(event)
    }

    /// Publishes a piece of assistant text as it is generated (never stored).
    pub async fn publish_delta(
        &self,
        org: OrgId,
        id: AgentSessionId,
        turn_seq: i32,
        index: u32,
        delta: &str,
    ) {
        self.publish(&Published::Delta {
            organization_id: org,
            session_id: id,
            turn_seq,
            index,
            delta: delta.to_string(),
        })
        .await;
    }

    /// The first user message the brain has not answered yet.
    pub async fn next_pending(
        &self,
        org: OrgId,
        id: AgentSessionId,
    ) -> Result<Option<EventRow>, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::next_pending(c, org, id).await?) }
                .scope_boxed()
        })
        .await
    }

    /// Marks every user message up to `seq` answered (`answered_seq` only grows).
    pub async fn mark_answered(
        &self,
        org: OrgId,
        id: AgentSessionId,
        seq: i32,
    ) -> Result<(), SessionError> {
        let found = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::mark_answered(c, org, id, seq).await?) }
                .scope_boxed()
        })
        .await?;
        found.then_some(()).ok_or(SessionError::NotFound)
    }

    /// Stores the brain's loop state for the session (`agent_sessions.runtime`, never shown).
    pub async fn set_runtime(
        &self,
        org: OrgId,
        id: AgentSessionId,
        runtime: Value,
    ) -> Result<(), SessionError> {
        let found = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::set_runtime(c, org, id, &runtime).await?) }
                .scope_boxed()
        })
        .await?;
        found.then_some(()).ok_or(SessionError::NotFound)
    }

    /// The last `n` events before `before_seq`, ascending.
    pub async fn transcript(
        &self,
        org: OrgId,
        id: AgentSessionId,
        before_seq: i32,
        n: i64,
    ) -> Result<Vec<EventRow>, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::events_before(c, org, id, before_seq, n).await?) }.scope_boxed()
        })
        .await
    }

    /// The last `n` user and agent messages, ascending (what the brain gives the model).
    pub async fn conversation(
        &self,
        org: OrgId,
        id: AgentSessionId,
        n: i64,
    ) -> Result<Vec<EventRow>, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::conversation(c, org, id, n).await?) }
                .scope_boxed()
        })
        .await
    }

    /// Events with `seq > after`, ascending, at most `limit` (the socket's replay and gap filling).
    pub async fn events_after(
        &self,
        org: OrgId,
        id: AgentSessionId,
        after: i32,
        limit: i64,
    ) -> Result<Vec<EventRow>, SessionError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { Ok::<_, SessionError>(store::events_after(c, org, id, after, limit).await?) }.scope_boxed()
        })
        .await
    }

    /// Sessions of every org with a user message not answered yet (the brain's sweeper).
    pub async fn pending_sessions(&self) -> Result<Vec<(OrgId, AgentSessionId)>, SessionError> {
        let mut c = db::conn(&self.db).await?;
        let rows = store::pending_sessions(&mut c).await?;
        Ok(rows
            .into_iter()
            .map(|p| (p.organization_id, p.session_id))
            .collect())
    }

    /// Publishes a frame to every instance; a failure is logged, never returned: subscribers fill
    /// gaps from the database.
    async fn publish(&self, frame: &Published) {
        let text = match serde_json::to_string(frame) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "session frame not serializable");
                return;
            }
        };
        if let Err(e) = self.redis.publish(CHANNEL, text).await {
            tracing::warn!(error = %e, session_id = %frame.session_id(), "session frame not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_cursors_round_trip_and_bad_ones_are_ignored() {
        assert_eq!(parse_event_cursor(&event_cursor(41)), Some(41));
        assert_eq!(parse_event_cursor("%%%"), None);
        assert_eq!(parse_event_cursor(&URL_SAFE_NO_PAD.encode("{}")), None);
    }
}
