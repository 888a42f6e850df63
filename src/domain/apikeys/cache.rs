//! In-memory cache of API keys, so a request authenticated by a key needs no database round trip.
//! Revocations are immediate: this process drops the entry itself and tells every other instance over
//! Redis pub/sub; the TTL only bounds staleness if that channel is down (and a reconnect drops everything).
//! A read that raced an invalidation (it read the row before the revocation committed and would cache it
//! after the entry was dropped) is not cached: every invalidation bumps an epoch that the read checks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    /// SHA-256 of the whole key (stored as hex; kept raw here so a check allocates nothing).
    pub digest: [u8; 32],
    pub scopes: Scopes,
    pub creator_role: Role,
    pub creator: UserId,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// The last second (Unix) this process noted a use of the key, so a busy key is noted once per
    /// second rather than on every request (see `usage::LastUsed`).
    pub noted: Arc<AtomicI64>,
}

struct Cached {
    record: KeyRecord,
    checked: Instant,
    refreshing: bool,
}

pub struct KeyCache {
    ttl: Duration,
    keys: DashMap<ApiKeyId, Cached>,
    epoch: AtomicU64,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            keys: DashMap::new(),
            epoch: AtomicU64::new(0),
        })
    }

    /// The cached key and whether this caller should re-read it (see [`freshness`]). A fresh entry is
    /// read under the shared lock, so concurrent requests with the same key do not queue on it.
    pub fn get(&self, id: ApiKeyId) -> Option<(KeyRecord, bool)> {
        {
            let entry = self.keys.get(&id)?;
            if entry.checked.elapsed() < self.ttl {
                return Some((entry.record.clone(), false));
            }
        }
        let mut entry = self.keys.get_mut(&id)?;
        let (checked, ttl) = (entry.checked, self.ttl);
        let refresh = freshness(checked, &mut entry.refreshing, ttl)?;
        Some((entry.record.clone(), refresh))
    }

    /// Taken before reading a key from the database, and handed to [`KeyCache::put`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches what was read, unless an invalidation happened since `epoch` was taken.
    pub fn put(&self, id: ApiKeyId, record: KeyRecord, epoch: u64) {
        if self.ttl.is_zero() || self.epoch() != epoch {
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
        self.epoch.fetch_add(1, Ordering::AcqRel);
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
            move || {
                on_reconnect.epoch.fetch_add(1, Ordering::AcqRel);
                on_reconnect.keys.clear();
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        KeyRecord {
            org: OrgId::random(),
            digest: [0; 32],
            scopes: Scopes::default(),
            creator_role: Role::Admin,
            creator: UserId::random(),
            expires_at: None,
            revoked: false,
            noted: Arc::default(),
        }
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = KeyCache::new(Duration::from_secs(30));
        let id = ApiKeyId::random();
        let before = cache.epoch();
        // The revocation lands while the row is being read.
        cache.apply(&format!("key:{id}"));
        cache.put(id, record(), before);
        assert!(cache.get(id).is_none());
        // A read started after it is cached, and dropped by the next invalidation.
        cache.put(id, record(), cache.epoch());
        assert!(cache.get(id).is_some());
        cache.apply(&format!("key:{id}"));
        assert!(cache.get(id).is_none());
    }
}
