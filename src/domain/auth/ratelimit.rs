//! Login brute-force protection that cannot be turned against the account's owner. Failures are counted
//! in Redis in three windows:
//! - per account and client address: the tight limit; it stops one client guessing, and only that client;
//! - per client address, over all accounts: one address spraying many accounts;
//! - per account, over all addresses: a slower ceiling against distributed guessing. Clients that logged in
//!   to that account successfully within the trust period are exempt, so the owner keeps working.
//!
//! A throttled client gets 429 `RATE_LIMITED` with `Retry-After`. Successful logins are never throttled by
//! failures of others, and they clear their own account+client counter. Counting and checking are single
//! Lua scripts (atomic), and a counter always gets its TTL (set whenever one is missing). If Redis is down
//! the check fails open (logged): locking everyone out would be worse.

use fred::interfaces::LuaInterface;

use super::config::AuthConfig;
use crate::platform::crypto;
use crate::platform::redis::Redis;

/// Too many failures: try again in this many seconds.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many failed attempts, retry in {retry_after_secs} s")]
pub struct Throttled {
    pub retry_after_secs: u64,
}

/// KEYS: account+client, client, account, trusted flag. ARGV: the three limits (0 = off). Returns 0 or the
/// seconds until the first exceeded window ends.
const CHECK: &str = r#"
local function over(key, limit)
  if tonumber(limit) == 0 then return 0 end
  local n = tonumber(redis.call('GET', key) or '0')
  if n < tonumber(limit) then return 0 end
  local ttl = redis.call('TTL', key)
  if ttl < 1 then ttl = 1 end
  return ttl
end
local t = over(KEYS[1], ARGV[1])
if t > 0 then return t end
t = over(KEYS[2], ARGV[2])
if t > 0 then return t end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
return over(KEYS[3], ARGV[3])
"#;

/// KEYS: account+client, client, account. ARGV: their windows in seconds. Counts one failure in each.
const FAIL: &str = r#"
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[i]) end
end
return 1
"#;

/// KEYS: account+client, trusted flag. ARGV: trust period in seconds.
const SUCCESS: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return 1
"#;

pub struct LoginLimiter {
    redis: Redis,
    per_client: u32,
    per_ip: u32,
    per_account: u32,
    window_secs: u64,
    account_window_secs: u64,
    trusted_secs: u64,
}

impl LoginLimiter {
    pub fn new(redis: Redis, config: &AuthConfig) -> Self {
        Self {
            redis,
            per_client: config.login_max_failures,
            per_ip: config.login_max_failures_per_ip,
            per_account: config.login_account_max_failures,
            window_secs: config.login_failure_window_secs.max(1),
            account_window_secs: config.login_account_window_secs.max(1),
            trusted_secs: config
                .login_trusted_client_days
                .saturating_mul(86_400)
                .max(1),
        }
    }

    fn off(&self) -> bool {
        self.per_client == 0 && self.per_ip == 0 && self.per_account == 0
    }

    /// `[account+client, client, account, trusted]`. The email is hashed so Redis never holds account
    /// names; a missing client address counts as one shared "unknown" client.
    fn keys(&self, email: &str, ip: Option<&str>) -> [String; 4] {
        let account = crypto::sha256_hex(email.as_bytes());
        let ip = ip.unwrap_or("unknown");
        [
            self.redis.key(&format!("rl:login:acctip:{account}:{ip}")),
            self.redis.key(&format!("rl:login:ip:{ip}")),
            self.redis.key(&format!("rl:login:acct:{account}")),
            self.redis.key(&format!("rl:login:trusted:{account}:{ip}")),
        ]
    }

    pub async fn check(&self, email: &str, ip: Option<&str>) -> Result<(), Throttled> {
        if self.off() {
            return Ok(());
        }
        let keys = self.keys(email, ip);
        let args = vec![
            self.per_client.to_string(),
            self.per_ip.to_string(),
            self.per_account.to_string(),
        ];
        let wait: Result<i64, _> = self.redis.client.eval(CHECK, keys.to_vec(), args).await;
        match wait {
            Ok(secs) if secs > 0 => {
                tracing::warn!(
                    event = "login_rate_limited",
                    retry_after_secs = secs,
                    "login throttled"
                );
                Err(Throttled {
                    retry_after_secs: secs.unsigned_abs(),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "login rate limiter unavailable; failing open");
                Ok(())
            }
        }
    }

    pub async fn record_failure(&self, email: &str, ip: Option<&str>) {
        if self.off() {
            return;
        }
        let [pair, client, account, _] = self.keys(email, ip);
        let args = vec![
            self.window_secs.to_string(),
            self.window_secs.to_string(),
            self.account_window_secs.to_string(),
        ];
        let counted: Result<i64, _> = self
            .redis
            .client
            .eval(FAIL, vec![pair, client, account], args)
            .await;
        if let Err(e) = counted {
            tracing::warn!(error = %e, "login failure not counted");
        }
    }

    /// A successful login: this client's failures on the account are forgotten, and the client stays
    /// trusted for the account (exempt from the account-wide ceiling) for the trust period.
    pub async fn record_success(&self, email: &str, ip: Option<&str>) {
        if self.off() {
            return;
        }
        let [pair, _, _, trusted] = self.keys(email, ip);
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(
                SUCCESS,
                vec![pair, trusted],
                vec![self.trusted_secs.to_string()],
            )
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "successful login not recorded by the limiter");
        }
    }
}
