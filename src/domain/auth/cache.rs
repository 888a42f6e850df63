//! In-memory cache of live sessions, so an authenticated request does not need a database round trip.
//! Revocations are immediate: this process drops the entry itself and tells every other instance over
//! Redis pub/sub; the TTL only bounds staleness if that channel is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::domain::common::ids::{SessionId, UserId};
use crate::platform::cache::{broadcast, freshness};
use crate::platform::redis::Redis;

const CHANNEL: &str = "auth:invalidate";

#[derive(Debug, Clone)]
pub struct CachedSession {
    pub user_id: UserId,
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    checked: Instant,
    refreshing: bool,
}

/// What another instance must forget.
#[derive(Debug, Clone, Copy)]
pub enum Forget {
    Session(SessionId),
    User(UserId),
}

impl Forget {
    fn message(self) -> String {
        match self {
            Forget::Session(id) => format!("session:{id}"),
            Forget::User(id) => format!("user:{id}"),
        }
    }
}

pub struct AuthCache {
    ttl: Duration,
    sessions: DashMap<SessionId, CachedSession>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            sessions: DashMap::new(),
        })
    }

    /// The cached session and whether this caller should re-read it (see [`freshness`]).
    pub fn session(&self, id: SessionId) -> Option<(CachedSession, bool)> {
        let mut entry = self.sessions.get_mut(&id)?;
        if entry.expires_at <= Utc::now() {
            return None;
        }
        let (checked, ttl) = (entry.checked, self.ttl);
        let refresh = freshness(checked, &mut entry.refreshing, ttl)?;
        Some((entry.clone(), refresh))
    }

    pub fn put_session(
        &self,
        id: SessionId,
        user_id: UserId,
        refresh_token_hash: String,
        expires_at: DateTime<Utc>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        self.sessions.insert(
            id,
            CachedSession {
                user_id,
                refresh_token_hash,
                expires_at,
                checked: Instant::now(),
                refreshing: false,
            },
        );
    }

    fn apply(&self, message: &str) {
        match message.split_once(':') {
            Some(("session", id)) => {
                if let Ok(id) = id.parse() {
                    self.sessions.remove(&SessionId::from_uuid(id));
                }
            }
            Some(("user", id)) => {
                if let Ok(id) = id.parse() {
                    let user = UserId::from_uuid(id);
                    self.sessions.retain(|_, s| s.user_id != user);
                }
            }
            _ => self.sessions.clear(),
        }
    }

    /// Drops the entry here and broadcasts to other instances; a Redis failure only leaves them on TTL.
    pub async fn invalidate(&self, redis: &Redis, what: Forget) {
        let message = what.message();
        self.apply(&message);
        broadcast(redis, CHANNEL, message).await;
    }

    /// Listens for other instances' invalidations. After a reconnect some may have been missed, so the
    /// whole cache is dropped.
    pub fn spawn_listener(self: &Arc<Self>, redis: &Redis) {
        let (on_message, on_reconnect) = (Arc::clone(self), Arc::clone(self));
        redis.listen(
            CHANNEL,
            move |m| on_message.apply(m),
            move || on_reconnect.sessions.clear(),
        );
    }
}
