//! In-memory cache of live sessions and memberships, so an authenticated request does not need a database
//! round trip for each of them. Revocations are immediate: this process drops the entry itself and tells
//! every other instance over Redis pub/sub; the TTL only bounds staleness if that channel is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use fred::prelude::*;
use uuid::Uuid;

use crate::platform::redis::Redis;

pub const CHANNEL: &str = "auth:invalidate";

#[derive(Debug, Clone)]
pub struct CachedSession {
    pub user_id: Uuid,
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    checked: Instant,
    refreshing: bool,
}

#[derive(Debug, Clone)]
struct CachedMember {
    role: String,
    membership_id: Uuid,
    checked: Instant,
    refreshing: bool,
}

/// Fresh within the TTL; within a second TTL the entry is still served while exactly one caller (the one
/// told `true`) re-reads it, so an expiring entry of a busy session does not send every concurrent request
/// to the same database row at once. Revocations never wait for this: they remove the entry.
fn freshness(checked: Instant, refreshing: &mut bool, ttl: Duration) -> Option<bool> {
    let age = checked.elapsed();
    if age < ttl {
        Some(false)
    } else if age < ttl * 2 {
        let claim = !*refreshing;
        *refreshing = true;
        Some(claim)
    } else {
        None
    }
}

pub struct AuthCache {
    ttl: Duration,
    sessions: DashMap<Uuid, CachedSession>,
    members: DashMap<(Uuid, Uuid), CachedMember>,
    /// Org settings (read by every org-scoped settings GET and by every run); invalidated like the rest.
    settings: DashMap<Uuid, (serde_json::Value, Instant)>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            sessions: DashMap::new(),
            members: DashMap::new(),
            settings: DashMap::new(),
        })
    }

    /// The cached session and whether this caller should re-read it (see [`freshness`]).
    pub fn session(&self, id: Uuid) -> Option<(CachedSession, bool)> {
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
        id: Uuid,
        user_id: Uuid,
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

    /// `(role, membership id)` of a cached membership.
    /// `(role, membership id)` of a cached membership, and whether this caller should re-read it.
    pub fn member(&self, org: Uuid, user: Uuid) -> Option<(String, Uuid, bool)> {
        let mut entry = self.members.get_mut(&(org, user))?;
        let (checked, ttl) = (entry.checked, self.ttl);
        let refresh = freshness(checked, &mut entry.refreshing, ttl)?;
        Some((entry.role.clone(), entry.membership_id, refresh))
    }

    pub fn put_member(&self, org: Uuid, user: Uuid, role: &str, membership_id: Uuid) {
        if self.ttl.is_zero() {
            return;
        }
        self.members.insert(
            (org, user),
            CachedMember {
                role: role.to_string(),
                membership_id,
                checked: Instant::now(),
                refreshing: false,
            },
        );
    }

    pub fn org_settings(&self, org: Uuid) -> Option<serde_json::Value> {
        let entry = self.settings.get(&org)?;
        (entry.1.elapsed() < self.ttl).then(|| entry.0.clone())
    }

    pub fn put_org_settings(&self, org: Uuid, value: serde_json::Value) {
        if !self.ttl.is_zero() {
            self.settings.insert(org, (value, Instant::now()));
        }
    }

    fn apply(&self, message: &str) {
        let mut parts = message.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("session"), Some(id), None) => {
                if let Ok(id) = Uuid::parse_str(id) {
                    self.sessions.remove(&id);
                }
            }
            (Some("user"), Some(id), None) => {
                if let Ok(id) = Uuid::parse_str(id) {
                    self.sessions.retain(|_, s| s.user_id != id);
                }
            }
            (Some("settings"), Some(org), None) => {
                if let Ok(org) = Uuid::parse_str(org) {
                    self.settings.remove(&org);
                }
            }
            (Some("member"), Some(org), Some(user)) => {
                if let (Ok(org), Ok(user)) = (Uuid::parse_str(org), Uuid::parse_str(user)) {
                    self.members.remove(&(org, user));
                }
            }
            _ => self.clear(),
        }
    }

    pub fn clear(&self) {
        self.sessions.clear();
        self.members.clear();
        self.settings.clear();
    }

    /// Drops the entry here and broadcasts to other instances; a Redis failure only leaves them on TTL.
    pub async fn invalidate(&self, redis: &Redis, message: String) {
        self.apply(&message);
        if let Err(e) = redis
            .client
            .publish::<i64, _, _>(redis.key(CHANNEL), message)
            .await
        {
            tracing::warn!(error = %e, "auth cache invalidation not broadcast; other instances rely on the TTL");
        }
    }

    /// Listens for other instances' invalidations. After a reconnect we may have missed some, so the whole
    /// cache is dropped.
    pub fn spawn_listener(self: &Arc<Self>, redis: &Redis) {
        let cache = Arc::clone(self);
        let mut rx = redis.subscriber.message_rx();
        tokio::spawn(async move {
            while let Ok(msg) = rx.recv().await {
                if let Some(text) = msg.value.as_string() {
                    cache.apply(&text);
                }
            }
        });
        let cache = Arc::clone(self);
        let mut reconnects = redis.subscriber.reconnect_rx();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                cache.clear();
            }
        });
        let subscriber = redis.subscriber.clone();
        let channel = redis.key(CHANNEL);
        tokio::spawn(async move {
            if let Err(e) = subscriber.subscribe(channel).await {
                tracing::warn!(error = %e, "cannot subscribe to auth invalidations yet; will retry on reconnect");
            }
        });
    }
}
