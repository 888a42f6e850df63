//! Throttling of failed pairings per client address. `POST /v1/agents/pair` is unauthenticated, so a
//! client that keeps presenting bad tokens is slowed down (429 once over the limit, until its window
//! ends); valid pairings never count. A counter always gets its TTL. If Redis is down the limiter fails
//! open (logged): pairing tokens are 192-bit random secrets, guessing is not the risk, load is.

use std::net::IpAddr;

use fred::interfaces::LuaInterface;

use crate::platform::http::client_ip::client_bucket;
use crate::platform::redis::Redis;

/// KEYS: the client's counter. ARGV: the limit. Returns 0, or the seconds until the window ends.
const CHECK: &str = r#"
local limit = tonumber(ARGV[1])
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if limit > 0 and n >= limit then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0
"#;

/// KEYS: the client's counter. ARGV: the window in seconds.
const FAIL: &str = r#"
redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
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

    /// `Err(seconds)` when the client is over its failure limit.
    pub async fn check(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let wait: Result<i64, _> = self
            .redis
            .client
            .eval(
                CHECK,
                vec![self.key(client)],
                vec![self.max_failures.to_string()],
            )
            .await;
        match wait {
            Ok(secs) if secs > 0 => {
                tracing::warn!(event = "pair_rate_limited", client = ?client, retry_after_secs = secs, "too many failed pairings");
                Err(u64::try_from(secs).unwrap_or(1))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "pairing throttle unavailable (failing open)");
                Ok(())
            }
        }
    }

    pub async fn record_failure(&self, client: Option<IpAddr>) {
        if self.max_failures == 0 {
            return;
        }
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(
                FAIL,
                vec![self.key(client)],
                vec![self.window_secs.to_string()],
            )
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "failed pairing could not be counted");
        }
    }
}
