//! The control-client socket's logic (gateway spec §4.2), without actix: who may connect ([`ClientEdge::admit`]),
//! the per-process [`Hub`] that takes every frame published on `session-events` (one Redis subscription)
//! to the sockets joined to its session, and the per-socket state machine ([`ClientConn`]).
//!
//! Exactly once, in order: each socket remembers the last seq it sent. A live event at or below it is
//! dropped, the next one is sent, and one further ahead means publications were lost: the socket reads
//! the gap from the database first (the event itself is committed before it is published). A socket
//! registers with the hub before it reads its replay, so nothing committed meanwhile falls between the
//! two. A resubscription (or a lagging listener) makes every socket re-read after its last seq.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::model::{EventRow, Published, MAX_IDEMPOTENCY_KEY_CHARS, MAX_MESSAGE_CHARS};
use super::{parse_event_cursor, SessionError, Sessions, TurnScheduler, CHANNEL};
use crate::domain::common::access::{Authenticator, Memberships, API_KEY_PREFIX};
use crate::domain::common::ids::{AgentSessionId, OrgId, UserId};
use crate::domain::common::scope::Scope;
use crate::domain::common::time::iso;
use crate::platform::redis::Redis;
use crate::platform::validation::parse_uuid;

/// Events replayed on a join without a cursor.
pub const REPLAY_LAST: i64 = 200;
/// Events read (and sent) at a time when replaying from a cursor or filling a gap.
const PAGE: i64 = 500;
/// Frames queued per socket; beyond this the socket re-reads from the database.
const QUEUE: usize = 1024;
/// How often a connected client's membership is checked again (and its session re-read).
pub const RECHECK: Duration = Duration::from_secs(60);

/// What reaches a socket from the hub.
#[derive(Debug, Clone)]
pub enum HubMsg {
    Frame(Arc<Published>),
    /// Publications may have been missed: read again from the database.
    Resync,
}

struct Subscriber {
    tx: mpsc::Sender<HubMsg>,
    lagged: Arc<AtomicBool>,
}

/// The sockets of this process by joined session, fed by one subscription to `session-events`.
#[derive(Default)]
pub struct Hub {
    sessions: DashMap<AgentSessionId, HashMap<u64, Subscriber>>,
    next: AtomicU64,
    listening: AtomicBool,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Subscribes once per process (the gateway role calls it).
    pub fn listen(self: &Arc<Self>, redis: &Redis) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (on_msg, on_reconnect) = (Arc::downgrade(self), Arc::downgrade(self));
        redis.listen(
            CHANNEL,
            move |text| {
                if let Some(hub) = on_msg.upgrade() {
                    hub.deliver(text);
                }
            },
            move || {
                if let Some(hub) = on_reconnect.upgrade() {
                    hub.resync_all();
                }
            },
        );
    }

    fn deliver(&self, text: &str) {
        let frame: Published = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable session frame ignored");
                return;
            }
        };
        let Some(subs) = self.sessions.get(&frame.session_id()) else {
            return;
        };
        let frame = Arc::new(frame);
        for sub in subs.values() {
            if sub.tx.try_send(HubMsg::Frame(frame.clone())).is_err() {
                // Full (or closing): the socket re-reads from the database when it catches up.
                sub.lagged.store(true, Ordering::SeqCst);
            }
        }
    }

    fn resync_all(&self) {
        for subs in self.sessions.iter() {
            for sub in subs.values() {
                if sub.tx.try_send(HubMsg::Resync).is_err() {
                    sub.lagged.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    fn register(
        &self,
        session: AgentSessionId,
        tx: mpsc::Sender<HubMsg>,
        lagged: Arc<AtomicBool>,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .entry(session)
            .or_default()
            .insert(id, Subscriber { tx, lagged });
        id
    }

    fn unregister(&self, session: AgentSessionId, id: u64) {
        self.sessions.remove_if_mut(&session, |_, subs| {
            subs.remove(&id);
            subs.is_empty()
        });
    }

    /// Sockets joined to `session` in this process.
    pub fn joined(&self, session: AgentSessionId) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.len())
    }
}

/// Why a connection is refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential, or one that is not valid.
    #[error("unauthenticated")]
    Unauthenticated,
    /// No org id, a malformed one, not a member of it, or an API key of another org or without a
    /// sessions scope.
    #[error("forbidden")]
    Forbidden,
    /// The lookups could not answer.
    #[error("unavailable")]
    Unavailable,
}

/// An admitted client: a member of the org (or an API key of it).
#[derive(Clone)]
pub struct Caller {
    pub org: OrgId,
    pub user: UserId,
    /// False for an API key holding `sessions:read` only.
    pub may_send: bool,
    /// The API key it connected with, checked again with the membership (revoked: closed).
    api_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("org", &self.org)
            .field("user", &self.user)
            .field("may_send", &self.may_send)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Everything the control-client sockets of one process share.
pub struct ClientEdge {
    pub hub: Arc<Hub>,
    sessions: Arc<Sessions>,
    auth: Arc<dyn Authenticator>,
    members: Arc<dyn Memberships>,
    scheduler: RwLock<Arc<dyn TurnScheduler>>,
    recheck: Duration,
}

impl ClientEdge {
    pub fn new(
        sessions: Arc<Sessions>,
        auth: Arc<dyn Authenticator>,
        members: Arc<dyn Memberships>,
    ) -> Self {
        Self {
            hub: Hub::new(),
            sessions,
            auth,
            members,
            scheduler: RwLock::new(Arc::new(super::NoTurns)),
            recheck: RECHECK,
        }
    }

    /// How often memberships are re-checked (tests shorten it).
    pub fn with_recheck(mut self, every: Duration) -> Self {
        self.recheck = every;
        self
    }

    pub fn recheck_every(&self) -> Duration {
        self.recheck
    }

    /// Who is woken after a `session_send` (the brain, once built).
    pub fn set_scheduler(&self, scheduler: Arc<dyn TurnScheduler>) {
        if let Ok(mut s) = self.scheduler.write() {
            *s = scheduler;
        }
    }

    fn wake(&self, org: OrgId, session: AgentSessionId) {
        let scheduler = self.scheduler.read().ok().map(|s| s.clone());
        if let Some(s) = scheduler {
            s.wake(org, session);
        }
    }

    /// Subscribes this process's hub to `session-events`.
    pub fn listen(&self) {
        self.hub.listen(self.sessions.redis());
    }

    /// The upgrade's check: a bearer access token or API key, and a membership of the org named by
    /// `org` (header `x-org-id`, else query `orgId`).
    pub async fn admit(&self, token: Option<&str>, org: Option<&str>) -> Result<Caller, Refusal> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let found = match self.auth.authenticate(Some(token), None).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(Refusal::Unauthenticated),
            Err(crate::domain::common::access::LookupError::KeyRefused(_)) => {
                return Err(Refusal::Unauthenticated)
            }
            Err(e) => {
                tracing::warn!(error = %e, "control client not admitted: lookup failed");
                return Err(Refusal::Unavailable);
            }
        };
        let principal = found.principal;
        let org = org
            .map(str::trim)
            .and_then(parse_uuid)
            .map(OrgId::from)
            .ok_or(Refusal::Forbidden)?;
        let mut may_send = true;
        let mut api_key = None;
        if let Some(grant) = principal.api_key {
            api_key = Some(Zeroizing::new(token.to_string()));
            if !token.starts_with(API_KEY_PREFIX)
                || grant.org_id != org
                || !grant.scopes.grants(Scope::SessionsRead)
            {
                return Err(Refusal::Forbidden);
            }
            may_send = grant.scopes.grants(Scope::SessionsWrite);
        }
        if !self.is_member(org, principal.user_id).await? {
            return Err(Refusal::Forbidden);
        }
        Ok(Caller {
            org,
            user: principal.user_id,
            may_send,
            api_key,
        })
    }

    /// Whether an admitted caller still may be connected: still a member, and its API key (if any)
    /// neither revoked nor expired. A lookup that cannot answer keeps the caller (the next check decides).
    async fn still_admitted(&self, caller: &Caller) -> bool {
        if let Some(key) = caller.api_key.as_ref() {
            match self.auth.authenticate(Some(key), None).await {
                Ok(Some(found)) if found.principal.api_key.is_some() => {}
                Ok(_) | Err(crate::domain::common::access::LookupError::KeyRefused(_)) => {
                    return false
                }
                Err(_) => return true,
            }
        }
        !matches!(self.is_member(caller.org, caller.user).await, Ok(false))
    }

    async fn is_member(&self, org: OrgId, user: UserId) -> Result<bool, Refusal> {
        match self.members.membership(org, user).await {
            Ok(m) => Ok(m.is_some()),
            Err(e) => {
                tracing::warn!(error = %e, "membership lookup failed");
                Err(Refusal::Unavailable)
            }
        }
    }

    /// A connection's state machine, for an admitted caller.
    pub fn connect(self: &Arc<Self>, caller: Caller) -> ClientConn {
        let (tx, rx) = mpsc::channel(QUEUE);
        ClientConn {
            edge: self.clone(),
            caller,
            tx,
            rx,
            lagged: Arc::new(AtomicBool::new(false)),
            joined: None,
        }
    }
}

struct Joined {
    session: AgentSessionId,
    sub: u64,
    /// The seq of the last event sent to this client.
    last: i32,
}

/// One client's socket: frames in ([`ClientConn::on_text`]), hub messages in ([`ClientConn::recv`],
/// [`ClientConn::on_hub`]), frames out (the returned strings, in order).
pub struct ClientConn {
    edge: Arc<ClientEdge>,
    caller: Caller,
    tx: mpsc::Sender<HubMsg>,
    rx: mpsc::Receiver<HubMsg>,
    lagged: Arc<AtomicBool>,
    joined: Option<Joined>,
}

/// What the connection should do after a periodic check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// The caller is no longer a member of the org, or its API key was revoked or expired.
    Close,
}

fn error_frame(session: Option<AgentSessionId>, code: &str, message: &str) -> String {
    let mut frame = json!({ "type": "session_error", "code": code, "message": message });
    if let (Some(s), Some(obj)) = (session, frame.as_object_mut()) {
        obj.insert("sessionId".into(), json!(s));
    }
    frame.to_string()
}

fn event_frame(e: &EventRow) -> String {
    json!({
        "type": "session_event_v2",
        "sessionId": e.session_id,
        "seq": e.seq,
        "eventType": e.event_type,
        "level": e.level,
        "payload": e.payload.clone().unwrap_or(Value::Null),
        "createdAt": iso(e.created_at),
    })
    .to_string()
}

fn session_id_of(v: &Value) -> Option<AgentSessionId> {
    v.get("sessionId")
        .and_then(Value::as_str)
        .and_then(parse_uuid)
        .map(AgentSessionId::from)
}

/// `cursor`: the last seq seen (a number), or the REST events cursor; absent or `null` for none.
fn cursor_of(v: &Value) -> Result<Option<i32>, ()> {
    match v.get("cursor") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= -1)
            .map(Some)
            .ok_or(()),
        Some(Value::String(s)) => parse_event_cursor(s).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

impl ClientConn {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The next hub message for this socket (pending forever when none comes).
    pub async fn recv(&mut self) -> Option<HubMsg> {
        self.rx.recv().await
    }

    /// A text frame from the client; the frames to send back, in order.
    pub async fn on_text(&mut self, text: &str) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        match v.get("type").and_then(Value::as_str) {
            Some("session_join") => self.join(&v).await,
            Some("session_send") => self.send(&v).await,
            // Other types (`client_hello`, `session_reset_agent`, …) are ignored.
            _ => Vec::new(),
        }
    }

    async fn join(&mut self, v: &Value) -> Vec<String> {
        let (Some(session), Ok(cursor)) = (session_id_of(v), cursor_of(v)) else {
            return vec![error_frame(
                None,
                "BAD_REQUEST",
                "Invalid session_join payload",
            )];
        };
        let org = self.caller.org;
        match self.edge.sessions.find(org, session).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return vec![error_frame(
                    Some(session),
                    "SESSION_NOT_FOUND",
                    "Session not found",
                )]
            }
            Err(e) => return vec![internal(session, &e)],
        }
        self.leave();
        // Registered before the replay is read: an event committed meanwhile is either in the replay
        // or queued (and then dropped as already sent, or sent), never lost.
        self.lagged.store(false, Ordering::SeqCst);
        let sub = self
            .edge
            .hub
            .register(session, self.tx.clone(), self.lagged.clone());
        let replay = match cursor {
            Some(after) => self.read_after(session, after).await,
            None => {
                self.edge
                    .sessions
                    .transcript(org, session, i32::MAX, REPLAY_LAST)
                    .await
            }
        };
        let events = match replay {
            Ok(events) => events,
            Err(e) => {
                self.edge.hub.unregister(session, sub);
                return vec![internal(session, &e)];
            }
        };
        let last = events.last().map(|e| e.seq).or(cursor).unwrap_or(-1);
        self.joined = Some(Joined { session, sub, last });
        events.iter().map(event_frame).collect()
    }

    /// One page of events after `after`; a full page asks for the next one through this socket's own
    /// queue, so a long replay goes out a page at a time, interleaved in order with live frames.
    async fn read_after(
        &self,
        session: AgentSessionId,
        after: i32,
    ) -> Result<Vec<EventRow>, SessionError> {
        let page = self
            .edge
            .sessions
            .events_after(self.caller.org, session, after, PAGE)
            .await?;
        if page.len() as i64 == PAGE && self.tx.try_send(HubMsg::Resync).is_err() {
            self.lagged.store(true, Ordering::SeqCst);
        }
        Ok(page)
    }

    async fn send(&mut self, v: &Value) -> Vec<String> {
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| (1..=MAX_MESSAGE_CHARS).contains(&m.chars().count()));
        let key = match v.get("idempotencyKey") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(k))
                if (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&k.chars().count()) =>
            {
                Ok(Some(k.clone()))
            }
            Some(_) => Err(()),
        };
        let (Some(session), Some(message), Ok(key)) = (session_id_of(v), message, key) else {
            return vec![error_frame(
                None,
                "BAD_REQUEST",
                "Invalid session_send payload",
            )];
        };
        if !self.caller.may_send {
            return vec![error_frame(
                Some(session),
                "FORBIDDEN",
                "API key lacks the scope sessions:write",
            )];
        }
        let (org, user) = (self.caller.org, self.caller.user);
        match self
            .edge
            .sessions
            .send(org, user, session, message.to_string(), key)
            .await
        {
            Ok(_) => {
                self.edge.wake(org, session);
                Vec::new()
            }
            Err(SessionError::NotFound) => {
                vec![error_frame(
                    Some(session),
                    "SESSION_NOT_FOUND",
                    "Session not found",
                )]
            }
            Err(SessionError::InvalidMessage) => {
                vec![error_frame(
                    None,
                    "BAD_REQUEST",
                    "Invalid session_send payload",
                )]
            }
            Err(e) => vec![internal(session, &e)],
        }
    }

    /// A message from the hub; the frames to send, in order.
    pub async fn on_hub(&mut self, msg: HubMsg) -> Vec<String> {
        let mut out = Vec::new();
        if self.lagged.swap(false, Ordering::SeqCst) {
            out.extend(self.catch_up().await);
        }
        let Some(joined) = self.joined.as_ref() else {
            return out;
        };
        let (session, last) = (joined.session, joined.last);
        match msg {
            HubMsg::Resync => out.extend(self.catch_up().await),
            HubMsg::Frame(frame) => match frame.as_ref() {
                Published::Event {
                    session_id,
                    seq,
                    event_type,
                    level,
                    payload,
                    created_at,
                    ..
                } if *session_id == session => {
                    if *seq == last + 1 {
                        out.push(
                            json!({
                                "type": "session_event_v2",
                                "sessionId": session,
                                "seq": seq,
                                "eventType": event_type,
                                "level": level,
                                "payload": payload.clone().unwrap_or(Value::Null),
                                "createdAt": created_at,
                            })
                            .to_string(),
                        );
                        if let Some(j) = self.joined.as_mut() {
                            j.last = *seq;
                        }
                    } else if *seq > last + 1 {
                        // Publications were lost: the gap (and this event) from the database.
                        out.extend(self.catch_up().await);
                    }
                }
                Published::Delta {
                    session_id,
                    turn_seq,
                    index,
                    delta,
                    ..
                } if *session_id == session => out.push(
                    json!({
                        "type": "session_delta_v2",
                        "sessionId": session,
                        "turnSeq": turn_seq,
                        "index": index,
                        "delta": delta,
                    })
                    .to_string(),
                ),
                // Another session's (a socket that left it): nothing.
                _ => {}
            },
        }
        out
    }

    /// Every event after the last one sent, from the database.
    async fn catch_up(&mut self) -> Vec<String> {
        let Some((session, last)) = self.joined.as_ref().map(|j| (j.session, j.last)) else {
            return Vec::new();
        };
        match self.read_after(session, last).await {
            Ok(events) => {
                if let (Some(e), Some(j)) = (events.last(), self.joined.as_mut()) {
                    j.last = e.seq;
                }
                events.iter().map(event_frame).collect()
            }
            Err(e) => {
                // The next event or resync tries again.
                tracing::warn!(error = %e, session_id = %session, "session gap not filled yet");
                Vec::new()
            }
        }
    }

    /// The periodic check: still a member? Also re-reads the joined session, so a lost publication with
    /// nothing after it reaches the client within one period.
    pub async fn recheck(&mut self) -> (Verdict, Vec<String>) {
        if !self.edge.still_admitted(&self.caller).await {
            return (Verdict::Close, Vec::new());
        }
        (Verdict::Keep, self.catch_up().await)
    }

    fn leave(&mut self) {
        if let Some(j) = self.joined.take() {
            self.edge.hub.unregister(j.session, j.sub);
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.leave();
    }
}

fn internal(session: AgentSessionId, e: &SessionError) -> String {
    tracing::warn!(error = %e, session_id = %session, "control client request failed");
    error_frame(
        Some(session),
        "INTERNAL_ERROR",
        "Session temporarily unavailable",
    )
}
