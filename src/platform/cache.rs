//! The freshness rule of the in-process caches (sessions, memberships, settings).

use std::time::{Duration, Instant};

use crate::platform::redis::Redis;

/// Fresh within the TTL; within a second TTL the entry is still served while exactly one caller (the one
/// told `true`) re-reads it, so an expiring entry of a busy key does not send every concurrent request to
/// the same database row at once. `None`: too old, re-read. Revocations never wait for this: they remove
/// the entry.
pub fn freshness(checked: Instant, refreshing: &mut bool, ttl: Duration) -> Option<bool> {
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

/// Tells the other instances to drop an entry (the caller has dropped its own). A Redis failure only
/// leaves them on their TTL, so it is logged, not returned.
pub async fn broadcast(redis: &Redis, channel: &str, message: String) {
    if let Err(e) = redis.publish(channel, message).await {
        tracing::warn!(error = %e, channel, "cache invalidation not broadcast; other instances rely on the TTL");
    }
}
