//! Login brute-force protection that cannot be turned against the account's owner. Failures are counted
//! in Redis in three windows:
//! - per account and client address: the tight limit; it stops one client guessing, and only that client;
//! - per client address, over all accounts: one address spraying many accounts;
//! - per account, over all addresses: a slower ceiling against distributed guessing. Clients that logged in
//!   to that account successfully within the trust period are exempt, so the owner keeps working.
//!
//! A throttled client gets 429 `RATE_LIMITED` with `Retry-After`. Every attempt is counted before the
//! password is checked, in one Lua script that also decides (so a burst of parallel guesses cannot all
//! pass a check made while the counters were low); a success takes its count back, clears the client's
//! failures on the account and makes the client trusted for it: a trusted client is held only to its own
//! account+client limit. A counter always gets its TTL (set whenever one is missing). IPv6 clients count
//! per /64. If Redis is down the limiter fails open (logged): locking everyone out would be worse.

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

/// One login attempt, counted before the password is checked (so parallel guesses cannot all pass a
/// check made while the counters were low). KEYS: account+client, client, account, trusted flag. ARGV: the
/// three limits (0 = off), then the three windows in seconds. Returns 0, or the seconds until the first
/// exceeded window ends. A client trusted for the account is held only to its own account+client limit.
const ATTEMPT: &str = r#"
local trusted = redis.call('EXISTS', KEYS[4]) == 1
local counts = {}
for i = 1, 3 do
  counts[i] = redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3 + i]) end
end
for i = 1, 3 do
  local limit = tonumber(ARGV[i])
  if (i == 1 or not trusted) and limit > 0 and counts[i] > limit then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 1 then ttl = 1 end
    return ttl
  end
end
return 0
"#;

/// A successful login: it does not count as a failure anywhere, this client's failures on the account
/// are forgotten, and the client is trusted for the account. KEYS: account+client, client, account,
/// trusted flag. ARGV: trust period in seconds.
const SUCCESS: &str = r#"
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 1
"#;

/// The client part of a key: an IPv6 client is its /64 (one subscriber's network; counting single
/// addresses would give whoever holds a /64 billions of fresh budgets).
fn client_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let mut segs = v6.segments();
            for s in segs.iter_mut().skip(4) {
                *s = 0;
            }
            format!("{}/64", std::net::Ipv6Addr::from(segs))
        }
        _ => ip.to_string(),
    }
}

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
        let ip = ip.map_or_else(|| "unknown".to_string(), client_key);
        [
            self.redis.key(&format!("rl:login:acctip:{account}:{ip}")),
            self.redis.key(&format!("rl:login:ip:{ip}")),
            self.redis.key(&format!("rl:login:acct:{account}")),
            self.redis.key(&format!("rl:login:trusted:{account}:{ip}")),
        ]
    }

    /// Counts an attempt (a failure until [`LoginLimiter::record_success`] says otherwise) and answers
    /// whether it may go on.
    pub async fn attempt(&self, email: &str, ip: Option<&str>) -> Result<(), Throttled> {
        if self.off() {
            return Ok(());
        }
        let keys = self.keys(email, ip);
        let args = vec![
            self.per_client.to_string(),
            self.per_ip.to_string(),
            self.per_account.to_string(),
            self.window_secs.to_string(),
            self.window_secs.to_string(),
            self.account_window_secs.to_string(),
        ];
        let wait: Result<i64, _> = self.redis.client.eval(ATTEMPT, keys.to_vec(), args).await;
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

    /// A successful login: this client's failures on the account are forgotten, and the client stays
    /// trusted for the account (exempt from the account-wide ceiling) for the trust period.
    pub async fn record_success(&self, email: &str, ip: Option<&str>) {
        if self.off() {
            return;
        }
        let keys = self.keys(email, ip);
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(SUCCESS, keys.to_vec(), vec![self.trusted_secs.to_string()])
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "successful login not recorded by the limiter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64() {
        assert_eq!(client_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(client_key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(client_key("203.0.113.9"), "203.0.113.9");
        assert_eq!(client_key("::ffff:203.0.113.9"), "::ffff:203.0.113.9");
    }
}
