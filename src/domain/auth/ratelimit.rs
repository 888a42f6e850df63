//! Login brute-force protection that cannot be turned against the account's owner. Failures are counted
//! in Redis in three windows:
//! - per account and client address: the tight limit; it stops one client guessing, and only that client;
//! - per client address, over all accounts: one address spraying many accounts;
//! - per account, over all addresses: a slower ceiling against distributed guessing. Clients that logged in
//!   to that account successfully within the trust period are exempt, so the owner keeps working.
//!
//! A throttled client gets 429 `RATE_LIMITED` with `Retry-After`. An attempt from an unknown client is
//! counted before the password is checked, in one Lua script that also decides (so a burst of parallel
//! guesses cannot all pass a check made while the counters were low); a success takes its count back,
//! clears the client's failures on the account and makes the client trusted for it. A trusted client (it
//! has shown the password from this address within the trust period) is held only to its own
//! account+client limit, and its attempts are checked against its recorded failures and counted only when
//! they fail: counting ahead would make a busy client's parallel logins throttle each other. A counter
//! always gets its TTL (set whenever one is missing). IPv6 clients count per /64. If Redis is down the
//! limiter fails open (logged): locking everyone out would be worse.

use fred::interfaces::LuaInterface;

use super::config::AuthConfig;
use crate::platform::crypto;
use crate::platform::http::client_ip::client_bucket;
use crate::platform::redis::Redis;

/// Too many failures: try again in this many seconds.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many failed attempts, retry in {retry_after_secs} s")]
pub struct Throttled {
    pub retry_after_secs: u64,
}

/// One login attempt. KEYS: account+client, client, account, trusted flag, the trusted client's
/// attempts in flight. ARGV: the three limits (0 = off), the three windows in seconds, the in-flight cap. Returns the seconds until the first exceeded window ends
/// when throttled; else 0 when the attempt was counted ahead (an unknown client: parallel guesses cannot
/// all pass a check made while the counters were low), or -1 for a trusted client, checked against its
/// recorded failures and held to at most the cap in flight (so a burst of guesses from its address
/// cannot all slip past one check), and counted if it fails.
const ATTEMPT: &str = r#"
local trusted = redis.call('EXISTS', KEYS[4]) == 1
if trusted then
  local limit = tonumber(ARGV[1])
  local n = tonumber(redis.call('GET', KEYS[1]) or '0')
  if limit > 0 and n >= limit then
    local ttl = redis.call('TTL', KEYS[1])
    if ttl < 1 then ttl = 1 end
    return ttl
  end
  local inflight = redis.call('INCR', KEYS[5])
  if redis.call('TTL', KEYS[5]) < 0 then redis.call('EXPIRE', KEYS[5], 60) end
  if inflight > tonumber(ARGV[7]) then
    redis.call('DECR', KEYS[5])
    return 1
  end
  return -1
end
local counts = {}
for i = 1, 3 do
  counts[i] = redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3 + i]) end
end
for i = 1, 3 do
  local limit = tonumber(ARGV[i])
  if limit > 0 and counts[i] > limit then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 1 then ttl = 1 end
    -- A refused attempt never reaches the password check: it is not a failure.
    for j = 1, 3 do redis.call('DECR', KEYS[j]) end
    return ttl
  end
end
return 0
"#;

/// A successful login: it does not count as a failure anywhere, this client's failures on the account
/// are forgotten, and the client is trusted for the account. KEYS: account+client, client, account,
/// trusted flag, in flight. ARGV: trust period in seconds, how the attempt was counted (`1` ahead, `t`
/// trusted, `0` not).
const SUCCESS: &str = r#"
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then
  for i = 2, 3 do
    if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
  end
end
if ARGV[2] == 't' and tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then redis.call('DECR', KEYS[5]) end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 1
"#;

/// A failed attempt of a trusted client (not counted ahead). KEYS: account+client, client, account,
/// trusted flag, in flight. ARGV: the three windows in seconds.
const FAILURE: &str = r#"
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[i]) end
end
if tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then redis.call('DECR', KEYS[5]) end
return 1
"#;

/// Attempts a trusted client may have in flight at once: enough for a busy client's parallel logins
/// (64 wrk connections in `bench/api.sh`), few enough that guesses from a shared address stay bounded
/// (at most the failure limit plus this many per window).
const TRUSTED_MAX_IN_FLIGHT: u32 = 64;

/// How an attempt that may go on was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted as a failure ahead of the check; a success takes it back.
    CountedAhead,
    /// A trusted client's: counted only if it fails.
    Trusted,
    /// Not counted (limits off, or Redis unavailable).
    Uncounted,
}

/// The client part of a key (an IPv6 client counts per /64).
fn client_key(ip: &str) -> String {
    ip.parse::<std::net::IpAddr>()
        .map_or_else(|_| ip.to_string(), client_bucket)
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
    fn keys(&self, email: &str, ip: Option<&str>) -> [String; 5] {
        let account = crypto::sha256_hex(email.as_bytes());
        let ip = ip.map_or_else(|| "unknown".to_string(), client_key);
        [
            self.redis.key(&format!("rl:login:acctip:{account}:{ip}")),
            self.redis.key(&format!("rl:login:ip:{ip}")),
            self.redis.key(&format!("rl:login:acct:{account}")),
            self.redis.key(&format!("rl:login:trusted:{account}:{ip}")),
            self.redis.key(&format!("rl:login:inflight:{account}:{ip}")),
        ]
    }

    /// Answers whether an attempt may go on, counting it ahead unless the client is trusted (see
    /// [`Attempt`]); the caller reports the outcome with `record_success` or `record_failure`.
    pub async fn attempt(&self, email: &str, ip: Option<&str>) -> Result<Attempt, Throttled> {
        if self.off() {
            return Ok(Attempt::Uncounted);
        }
        let keys = self.keys(email, ip);
        let args = vec![
            self.per_client.to_string(),
            self.per_ip.to_string(),
            self.per_account.to_string(),
            self.window_secs.to_string(),
            self.window_secs.to_string(),
            self.account_window_secs.to_string(),
            TRUSTED_MAX_IN_FLIGHT.to_string(),
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
            Ok(-1) => Ok(Attempt::Trusted),
            Ok(_) => Ok(Attempt::CountedAhead),
            Err(e) => {
                tracing::warn!(error = %e, "login rate limiter unavailable; failing open");
                Ok(Attempt::Uncounted)
            }
        }
    }

    /// A failed attempt: only a trusted client's needs counting now (the others were counted ahead).
    pub async fn record_failure(&self, email: &str, ip: Option<&str>, attempt: Attempt) {
        if attempt != Attempt::Trusted {
            return;
        }
        let keys = self.keys(email, ip);
        let args = vec![
            self.window_secs.to_string(),
            self.window_secs.to_string(),
            self.account_window_secs.to_string(),
        ];
        let done: Result<i64, _> = self.redis.client.eval(FAILURE, keys.to_vec(), args).await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "failed login not counted by the limiter");
        }
    }

    /// A successful login: this client's failures on the account are forgotten, and the client stays
    /// trusted for the account (exempt from the account-wide ceiling) for the trust period.
    pub async fn record_success(&self, email: &str, ip: Option<&str>, attempt: Attempt) {
        if self.off() {
            return;
        }
        let keys = self.keys(email, ip);
        let counted = match attempt {
            Attempt::CountedAhead => "1",
            Attempt::Trusted => "t",
            Attempt::Uncounted => "0",
        };
        let args = vec![self.trusted_secs.to_string(), counted.to_string()];
        let done: Result<i64, _> = self.redis.client.eval(SUCCESS, keys.to_vec(), args).await;
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
        assert_eq!(client_key("::ffff:203.0.113.9"), "203.0.113.9");
    }
}
