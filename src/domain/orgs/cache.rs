//! In-memory cache of memberships and org settings (read by every org-scoped request and by every run).
//! Changes are immediate: this process drops the entry and tells every other instance over Redis pub/sub;
//! the TTL only bounds staleness if that channel is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::Value;

use crate::domain::common::access::Role;
use crate::domain::common::ids::{MembershipId, OrgId, UserId};
use crate::platform::cache::{broadcast, freshness};
use crate::platform::redis::Redis;

const CHANNEL: &str = "orgs:invalidate";

#[derive(Debug, Clone)]
struct CachedMember {
    role: Role,
    membership_id: MembershipId,
    checked: Instant,
    refreshing: bool,
}

/// What every instance must forget.
#[derive(Debug, Clone, Copy)]
pub enum Forget {
    Member(OrgId, UserId),
    Settings(OrgId),
}

impl Forget {
    fn message(self) -> String {
        match self {
            Forget::Member(org, user) => format!("member:{org}:{user}"),
            Forget::Settings(org) => format!("settings:{org}"),
        }
    }
}

pub struct OrgCache {
    ttl: Duration,
    members: DashMap<(OrgId, UserId), CachedMember>,
    settings: DashMap<OrgId, (Value, Instant)>,
}

impl OrgCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            members: DashMap::new(),
            settings: DashMap::new(),
        })
    }

    /// `(role, membership id)` of a cached membership, and whether this caller should re-read it.
    pub fn member(&self, org: OrgId, user: UserId) -> Option<(Role, MembershipId, bool)> {
        let mut entry = self.members.get_mut(&(org, user))?;
        let (checked, ttl) = (entry.checked, self.ttl);
        let refresh = freshness(checked, &mut entry.refreshing, ttl)?;
        Some((entry.role, entry.membership_id, refresh))
    }

    pub fn put_member(&self, org: OrgId, user: UserId, role: Role, membership_id: MembershipId) {
        if self.ttl.is_zero() {
            return;
        }
        self.members.insert(
            (org, user),
            CachedMember {
                role,
                membership_id,
                checked: Instant::now(),
                refreshing: false,
            },
        );
    }

    pub fn settings(&self, org: OrgId) -> Option<Value> {
        let entry = self.settings.get(&org)?;
        (entry.1.elapsed() < self.ttl).then(|| entry.0.clone())
    }

    pub fn put_settings(&self, org: OrgId, value: Value) {
        if !self.ttl.is_zero() {
            self.settings.insert(org, (value, Instant::now()));
        }
    }

    fn apply(&self, message: &str) {
        let mut parts = message.split(':');
        let id = |s: Option<&str>| s.and_then(|s| s.parse::<uuid::Uuid>().ok());
        match (parts.next(), id(parts.next()), id(parts.next())) {
            (Some("settings"), Some(org), None) => {
                self.settings.remove(&OrgId::from_uuid(org));
            }
            (Some("member"), Some(org), Some(user)) => {
                self.members
                    .remove(&(OrgId::from_uuid(org), UserId::from_uuid(user)));
            }
            _ => self.clear(),
        }
    }

    fn clear(&self) {
        self.members.clear();
        self.settings.clear();
    }

    /// Drops the entry here and broadcasts to other instances; a Redis failure only leaves them on TTL.
    pub async fn invalidate(&self, redis: &Redis, what: Forget) {
        let message = what.message();
        self.apply(&message);
        broadcast(redis, CHANNEL, message).await;
    }

    /// Listens for other instances' invalidations; after a reconnect the whole cache is dropped.
    pub fn spawn_listener(self: &Arc<Self>, redis: &Redis) {
        let (on_message, on_reconnect) = (Arc::clone(self), Arc::clone(self));
        redis.listen(
            CHANNEL,
            move |m| on_message.apply(m),
            move || on_reconnect.clear(),
        );
    }
}
