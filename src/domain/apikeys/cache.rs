//! In-memory cache of API keys, so a request authenticated by a key needs no database round trip.
//! Revocations are immediate: this process drops the entry itself and tells every other instance over
//! Redis pub/sub; the TTL only bounds staleness if that channel is down (and a reconnect drops everything).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::domain::common::access::Role;
use crate::domain::common::ids::{ApiKeyId, OrgId, UserId};
use crate::domain::common::scope::Scopes;
use crate::platform::cache::{broadcast, freshness};
use crate::platform::redis::Redis;

const CHANNEL: &str = "apikeys:invalidate";

/// A key as authentication sees it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub org: OrgId,
    pub secret_hash: String,
    pub scopes: Scopes,
    pub creator_role: Role,
    pub creator: UserId,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

struct Cached {
    record: KeyRecord,
    checked: Instant,
    refreshing: bool,
}

pub struct KeyCache {
    ttl: Duration,
    keys: DashMap<ApiKeyId, Cached>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            keys: DashMap::new(),
        })
    }

    /// The cached key and whether this caller should re-read it (see [`freshness`]).
    pub fn get(&self, id: ApiKeyId) -> Option<(KeyRecord, bool)> {
        let mut entry = self.keys.get_mut(&id)?;
        let (checked, ttl) = (entry.checked, self.ttl);
        let refresh = freshness(checked, &mut entry.refreshing, ttl)?;
        Some((entry.record.clone(), refresh))
    }

    pub fn put(&self, id: ApiKeyId, record: KeyRecord) {
        if self.ttl.is_zero() {
            return;
        }
        self.keys.insert(
            id,
            Cached {
                record,
                checked: Instant::now(),
                refreshing: false,
            },
        );
    }

    fn apply(&self, message: &str) {
        match message
            .strip_prefix("key:")
            .and_then(|id| id.parse::<uuid::Uuid>().ok())
        {
            Some(id) => {
                self.keys.remove(&ApiKeyId::from_uuid(id));
            }
            None => self.keys.clear(),
        }
    }

    /// Drops the entry here and broadcasts to other instances; a Redis failure only leaves them on TTL.
    pub async fn invalidate(&self, redis: &Redis, id: ApiKeyId) {
        let message = format!("key:{id}");
        self.apply(&message);
        broadcast(redis, CHANNEL, message).await;
    }

    /// Listens for other instances' invalidations; after a reconnect the whole cache is dropped.
    pub fn spawn_listener(self: &Arc<Self>, redis: &Redis) {
        let (on_message, on_reconnect) = (Arc::clone(self), Arc::clone(self));
        redis.listen(
            CHANNEL,
            move |m| on_message.apply(m),
            move || on_reconnect.keys.clear(),
        );
    }
}
