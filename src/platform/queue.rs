//! A work queue on Redis with per-tenant fairness, at-least-once delivery, leases and delayed items.
//! It carries ids only; PostgreSQL holds the truth about each item, so a lost or duplicated queue entry
//! is repaired by the consumer's own checks and by a sweeper, never trusted blindly.
//!
//! Keys under `<prefix><name>:`:
//! - `orgs`       LIST  tenants with ready work, rotated on every claim (round-robin fairness);
//! - `org:<id>`   LIST  that tenant's ready item ids;
//! - `pending`    SET   ids currently ready (dedup: an id is queued at most once);
//! - `delayed`    ZSET  `<tenant>:<id>` scored by due time (ms), promoted to ready when due;
//! - `inflight`   ZSET  `<tenant>:<id>` scored by lease expiry (ms); expired leases go back to ready;
//! - `signal`     LIST  wake-ups for idle consumers (BLPOP), trimmed short.
//!
//! Every multi-key step is one Lua script, so concurrent producers and consumers never see half a move.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::*;
use uuid::Uuid;

use crate::platform::redis::{Redis, RedisError};

/// ARGV: prefix, org, id… Returns how many ids were added (ids already ready are skipped).
const ENQUEUE: &str = r#"
local p = ARGV[1]
local org = ARGV[2]
local added = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('SADD', p .. 'pending', id) == 1 then
    if redis.call('LLEN', p .. 'org:' .. org) == 0 then redis.call('RPUSH', p .. 'orgs', org) end
    redis.call('RPUSH', p .. 'org:' .. org, id)
    added = added + 1
  end
end
if added > 0 then
  redis.call('LPUSH', p .. 'signal', '1')
  redis.call('LTRIM', p .. 'signal', 0, 63)
end
return added
"#;

/// ARGV: prefix, lease expiry (ms), max. Takes up to `max` ids of the next tenant in turn (one tenant per
/// claim, so a batch shares one tenant context); the tenant goes to the back of the rotation.
const CLAIM: &str = r#"
local p = ARGV[1]
local expires = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local n = redis.call('LLEN', p .. 'orgs')
for i = 1, n do
  local org = redis.call('LPOP', p .. 'orgs')
  if not org then return false end
  -- LPOP one at a time: LPOP with a count needs Redis 6.2, and Ubuntu 22.04 ships 6.0.
  local out = {org}
  for j = 1, max do
    local id = redis.call('LPOP', p .. 'org:' .. org)
    if not id then break end
    redis.call('SREM', p .. 'pending', id)
    redis.call('ZADD', p .. 'inflight', expires, org .. ':' .. id)
    out[#out + 1] = id
  end
  if #out > 1 then
    if redis.call('LLEN', p .. 'org:' .. org) > 0 then redis.call('RPUSH', p .. 'orgs', org) end
    return out
  end
end
return false
"#;

/// Moves members of a ZSET scored <= now back to ready (delayed items that are due, expired leases).
const PROMOTE: &str = r#"
local p = ARGV[1]
local set = p .. ARGV[2]
local now = ARGV[3]
local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 500)
for _, m in ipairs(due) do
  redis.call('ZREM', set, m)
  local sep = string.find(m, ':', 1, true)
  local org, id = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
  if redis.call('SADD', p .. 'pending', id) == 1 then
    if redis.call('LLEN', p .. 'org:' .. org) == 0 then redis.call('RPUSH', p .. 'orgs', org) end
    redis.call('RPUSH', p .. 'org:' .. org, id)
  end
end
if #due > 0 then
  redis.call('LPUSH', p .. 'signal', '1')
  redis.call('LTRIM', p .. 'signal', 0, 63)
end
return #due
"#;

/// ARGV: prefix, max tenants. Totals, then each of the first `max` tenants with ready work: its id, how many
/// ids it has ready and the oldest of them. Read-only; one round trip per scrape.
const STATS: &str = r#"
local p = ARGV[1]
local max = tonumber(ARGV[2])
local out = {
  tostring(redis.call('SCARD', p .. 'pending')),
  tostring(redis.call('ZCARD', p .. 'delayed')),
  tostring(redis.call('ZCARD', p .. 'inflight')),
}
for _, org in ipairs(redis.call('LRANGE', p .. 'orgs', 0, max - 1)) do
  out[#out + 1] = org
  out[#out + 1] = tostring(redis.call('LLEN', p .. 'org:' .. org))
  out[#out + 1] = redis.call('LINDEX', p .. 'org:' .. org, 0) or ''
end
return out
"#;

/// A snapshot of the queue, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ids ready to be claimed, over every tenant.
    pub ready: u64,
    /// Ids waiting for their due time (retries).
    pub delayed: u64,
    /// Ids claimed and not yet acknowledged.
    pub inflight: u64,
    /// Tenants with ready work (at most the number asked for), in rotation order.
    pub tenants: Vec<TenantQueue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQueue {
    pub tenant: Uuid,
    pub ready: u64,
    /// The id that has waited longest (the next one this tenant gets).
    pub oldest: Option<Uuid>,
}

#[derive(Clone)]
pub struct WorkQueue {
    client: Client,
    prefix: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn member(org: Uuid, id: Uuid) -> String {
    format!("{org}:{id}")
}

impl WorkQueue {
    pub fn new(redis: &Redis, name: &str) -> Self {
        Self {
            client: redis.client.clone(),
            prefix: redis.key(&format!("{name}:")),
        }
    }

    /// Makes `id` ready for `org` (no-op if it already is). Returns whether it was added.
    pub async fn enqueue(&self, org: Uuid, id: Uuid) -> Result<bool, RedisError> {
        Ok(self.enqueue_many(org, &[id]).await? == 1)
    }

    /// Makes every id ready for `org` in one step; returns how many were not ready already.
    pub async fn enqueue_many(&self, org: Uuid, ids: &[Uuid]) -> Result<usize, RedisError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut args = Vec::with_capacity(ids.len() + 2);
        args.push(self.prefix.clone());
        args.push(org.to_string());
        args.extend(ids.iter().map(Uuid::to_string));
        let added: i64 = self
            .client
            .eval(ENQUEUE, Vec::<String>::new(), args)
            .await?;
        Ok(added.max(0) as usize)
    }

    /// Makes `id` ready at `due_ms` (Unix ms).
    pub async fn enqueue_at(&self, org: Uuid, id: Uuid, due_ms: i64) -> Result<(), RedisError> {
        let _: i64 = self
            .client
            .zadd(
                format!("{}delayed", self.prefix),
                None,
                None,
                false,
                false,
                (due_ms as f64, member(org, id)),
            )
            .await?;
        Ok(())
    }

    /// Takes the next item, tenants in turn, with a lease of `lease`.
    pub async fn claim(&self, lease: Duration) -> Result<Option<(Uuid, Uuid)>, RedisError> {
        Ok(self
            .claim_many(lease, 1)
            .await?
            .and_then(|(org, ids)| ids.first().map(|id| (org, *id))))
    }

    /// Takes up to `max` items of the next tenant in turn, each with a lease of `lease`.
    pub async fn claim_many(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Option<(Uuid, Vec<Uuid>)>, RedisError> {
        let expires = now_ms() + lease.as_millis() as i64;
        let got: Option<Vec<String>> = self
            .client
            .eval(
                CLAIM,
                Vec::<String>::new(),
                vec![
                    self.prefix.clone(),
                    expires.to_string(),
                    max.max(1).to_string(),
                ],
            )
            .await?;
        let Some((org, ids)) = got.as_deref().and_then(<[String]>::split_first) else {
            return Ok(None);
        };
        let Ok(org) = Uuid::parse_str(org) else {
            return Ok(None);
        };
        // Only this queue writes these keys, so an unparsable id is corruption: skip it (the sweeper finds
        // the run through PostgreSQL).
        let ids: Vec<Uuid> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        Ok((!ids.is_empty()).then_some((org, ids)))
    }

    pub async fn heartbeat(&self, org: Uuid, id: Uuid, lease: Duration) -> Result<(), RedisError> {
        let expires = now_ms() + lease.as_millis() as i64;
        let _: i64 = self
            .client
            .zadd(
                format!("{}inflight", self.prefix),
                None,
                None,
                false,
                false,
                (expires as f64, member(org, id)),
            )
            .await?;
        Ok(())
    }

    /// Done with the item (whatever the outcome: PostgreSQL records it).
    pub async fn ack(&self, org: Uuid, id: Uuid) -> Result<(), RedisError> {
        self.ack_many(org, &[id]).await
    }

    /// Done with these items of `org`, in one command.
    pub async fn ack_many(&self, org: Uuid, ids: &[Uuid]) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let members: Vec<String> = ids.iter().map(|id| member(org, *id)).collect();
        let _: i64 = self
            .client
            .zrem(format!("{}inflight", self.prefix), members)
            .await?;
        Ok(())
    }

    /// Moves due delayed items and expired leases back to ready; returns how many moved.
    pub async fn promote(&self) -> Result<(i64, i64), RedisError> {
        let now = now_ms().to_string();
        let due: i64 = self
            .client
            .eval(
                PROMOTE,
                Vec::<String>::new(),
                vec![self.prefix.clone(), "delayed".into(), now.clone()],
            )
            .await?;
        let expired: i64 = self
            .client
            .eval(
                PROMOTE,
                Vec::<String>::new(),
                vec![self.prefix.clone(), "inflight".into(), now],
            )
            .await?;
        Ok((due, expired))
    }

    /// The earliest delayed item's due time, so the sweeper knows when to look again.
    pub async fn next_due_ms(&self) -> Result<Option<i64>, RedisError> {
        let first: Vec<(String, f64)> = self
            .client
            .zrange(
                format!("{}delayed", self.prefix),
                0,
                0,
                None,
                false,
                None,
                true,
            )
            .await?;
        Ok(first.first().map(|(_, s)| *s as i64))
    }

    /// Whether `id` is ready, delayed or in flight (the sweeper's "has a queue entry" test).
    pub async fn contains(&self, org: Uuid, id: Uuid) -> Result<bool, RedisError> {
        let pending: bool = self
            .client
            .sismember(format!("{}pending", self.prefix), id.to_string())
            .await?;
        if pending {
            return Ok(true);
        }
        let m = member(org, id);
        let delayed: Option<f64> = self
            .client
            .zscore(format!("{}delayed", self.prefix), &m)
            .await?;
        let inflight: Option<f64> = self
            .client
            .zscore(format!("{}inflight", self.prefix), &m)
            .await?;
        Ok(delayed.is_some() || inflight.is_some())
    }

    /// Totals and the first `max_tenants` tenants with ready work (see [`QueueStats`]).
    pub async fn stats(&self, max_tenants: usize) -> Result<QueueStats, RedisError> {
        let raw: Vec<String> = self
            .client
            .eval(
                STATS,
                Vec::<String>::new(),
                vec![self.prefix.clone(), max_tenants.max(1).to_string()],
            )
            .await?;
        let num = |s: Option<&String>| s.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut it = raw.iter();
        let (ready, delayed, inflight) = (num(it.next()), num(it.next()), num(it.next()));
        let rest: Vec<&String> = it.collect();
        let tenants = rest
            .chunks(3)
            .filter_map(|c| match c {
                [tenant, n, oldest] => Some(TenantQueue {
                    tenant: Uuid::parse_str(tenant).ok()?,
                    ready: n.parse().unwrap_or(0),
                    oldest: Uuid::parse_str(oldest).ok(),
                }),
                _ => None,
            })
            .collect();
        Ok(QueueStats {
            ready,
            delayed,
            inflight,
            tenants,
        })
    }

    /// Blocks up to `timeout` for a wake-up, on `blocking` (a connection of its own: BLPOP would stall
    /// every other command multiplexed on a shared one).
    pub async fn wait(&self, blocking: &Client, timeout: Duration) -> Result<(), RedisError> {
        let waited: Result<Option<(String, String)>, _> = blocking
            .blpop(format!("{}signal", self.prefix), timeout.as_secs_f64())
            .await;
        match waited {
            Ok(_) => Ok(()),
            // Nothing arrived within `timeout`: the client reports the blocking command's own timeout as
            // an error, but it is the normal idle case.
            Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A dedicated connection for [`WorkQueue::wait`].
    pub async fn blocking_client(&self) -> Result<Client, RedisError> {
        let c = self.client.clone_new();
        c.connect();
        c.wait_for_connect().await?;
        Ok(c)
    }
}
