//! Login brute-force protection: failed attempts counted per account and per client IP in Redis with a
//! window; at the limit, 429 `RATE_LIMITED` with `Retry-After`. Successful logins are never throttled.
//! If Redis is down the check fails open (logged): locking everyone out would be worse.

use fred::prelude::*;

use crate::platform::crypto;
use crate::platform::redis::Redis;

/// Too many failures: try again in this many seconds.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many failed attempts, retry in {retry_after_secs} s")]
pub struct Throttled {
    pub retry_after_secs: u64,
}

pub struct LoginLimiter {
    redis: Redis,
    max_failures: u32,
    window_secs: u64,
}

impl LoginLimiter {
    pub fn new(redis: Redis, max_failures: u32, window_secs: u64) -> Self {
        Self {
            redis,
            max_failures,
            window_secs,
        }
    }

    fn keys(&self, email: &str, ip: Option<&str>) -> Vec<String> {
        // The email is hashed so Redis never holds account names.
        let mut keys = vec![format!(
            "{}rl:login:acct:{}",
            self.redis.key(""),
            crypto::sha256_hex(email.as_bytes())
        )];
        if let Some(ip) = ip {
            keys.push(self.redis.key(&format!("rl:login:ip:{ip}")));
        }
        keys
    }

    pub async fn check(&self, email: &str, ip: Option<&str>) -> Result<(), Throttled> {
        if self.max_failures == 0 {
            return Ok(());
        }
        for key in self.keys(email, ip) {
            let count: Result<Option<u64>, _> = self.redis.client.get(&key).await;
            match count {
                Ok(Some(n)) if n >= u64::from(self.max_failures) => {
                    let ttl: i64 = self
                        .redis
                        .client
                        .ttl(&key)
                        .await
                        .unwrap_or(self.window_secs as i64);
                    let retry = if ttl > 0 {
                        ttl as u64
                    } else {
                        self.window_secs
                    };
                    tracing::warn!(
                        event = "login_rate_limited",
                        retry_after_secs = retry,
                        "login throttled"
                    );
                    return Err(Throttled {
                        retry_after_secs: retry.max(1),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "login rate limiter unavailable; failing open");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub async fn record_failure(&self, email: &str, ip: Option<&str>) {
        if self.max_failures == 0 {
            return;
        }
        for key in self.keys(email, ip) {
            let counted: Result<u64, _> = self.redis.client.incr(&key).await;
            match counted {
                Ok(1) => {
                    let _: Result<bool, _> = self
                        .redis
                        .client
                        .expire(&key, self.window_secs as i64, None)
                        .await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "login failure not counted"),
            }
        }
    }
}
