//! Throttling of failed pairings per client address. `POST /v1/agents/pair` is unauthenticated, so a
//! client that keeps presenting bad tokens is slowed down (429 once over the limit, until its window
//! ends). Each attempt is counted before the token is looked up, in one script that also decides (a
//! parallel burst cannot all pass a check made while the count was low); an attempt that was not the
//! client's failure (a valid pairing) takes its count back, so valid pairings never count, and a refused
//! attempt is not counted. A counter always gets its TTL. If Redis is down the limiter fails open
//! (logged): pairing tokens are 192-bit random secrets, guessing is not the risk, load is.

use std::net::IpAddr;

use fred::interfaces::LuaInterface;

use crate::platform::http::client_ip::client_bucket;
use crate::platform::redis::Redis;

/// An attempt that was not a failure takes its count back. KEYS: the client's counter.
const UNDO: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 1
"#;

pub struct PairLimiter {
    redis: Redis,
    max_failures: u32,
    window_secs: u64,
}

impl PairLimiter {
    pub fn new(redis: Redis, max_failures: u32, window_secs: u64) -> Self {
        Self {
            redis,
            max_failures,
            window_secs: window_secs.max(1),
        }
    }

    fn key(&self, client: Option<IpAddr>) -> String {
        let client = client.map_or_else(|| "unknown".to_string(), client_bucket);
        self.redis.key(&format!("rl:pair:{client}"))
    }

    /// Counts an attempt (a failure until [`PairLimiter::not_a_failure`] says otherwise);
    /// `Err(seconds)` when the client is over its failure limit.
    pub async fn attempt(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let wait = self
            .redis
            .window_attempt(
                self.key(client),
                u64::from(self.max_failures),
                self.window_secs,
            )
            .await;
        match wait {
            Ok(Some(secs)) => {
                tracing::warn!(event = "pair_rate_limited", client = ?client, retry_after_secs = secs, "too many failed pairings");
                Err(secs)
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "pairing throttle unavailable (failing open)");
                Ok(())
            }
        }
    }

    /// The attempt paired (or failed for a reason of ours, not the client's): it takes its count back.
    pub async fn not_a_failure(&self, client: Option<IpAddr>) {
        if self.max_failures == 0 {
            return;
        }
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(UNDO, vec![self.key(client)], Vec::<String>::new())
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "pairing attempt not taken back by the limiter");
        }
    }
}
