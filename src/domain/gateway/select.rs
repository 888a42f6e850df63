//! Executor selection and quotas (gateway spec 2.7, with our Decisions): which connected executor takes
//! a tool call, and the atomic reservation of its slot and its org's.
//!
//! Route records are indexed per pool in Redis sets (the org's BYON executors, the managed pool), so a
//! selection reads its candidates' records instead of scanning the keyspace; a member whose record
//! expired (its instance died) is pruned by the reader.

use std::collections::HashMap;

use fred::interfaces::{KeysInterface, LuaInterface, SetsInterface};
use serde::Deserialize;

use super::dispatch::Selector;
use crate::domain::agents::identity::{Pool, ToolKind};
use crate::domain::agents::presence;
use crate::domain::common::ids::{ExecutorId, OrgId};
use crate::platform::redis::Redis;

/// A connected executor's route record, as a dispatching instance reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRecord {
    pub edge_id: String,
    pub executor_id: ExecutorId,
    pub pool: Pool,
    pub organization_id: Option<OrgId>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub max_in_flight: u32,
    #[serde(default)]
    pub kinds: Vec<ToolKind>,
}

/// The set indexing the route records of a pool (an org's own executors, or the managed pool).
pub fn index_key(pool: Pool, org: Option<OrgId>) -> String {
    match (pool, org) {
        (Pool::Byon, Some(org)) => format!("executor:routes:org:{org}"),
        _ => "executor:routes:managed".to_string(),
    }
}

fn inflight_key(id: ExecutorId) -> String {
    format!("executor:inflight:{id}")
}

fn org_inflight_key(org: OrgId) -> String {
    format!("org:quota:{org}:inflight")
}

fn last_used_key(id: ExecutorId) -> String {
    format!("executor:last_used:{id}")
}

/// Takes a slot of the executor and of its org, or says which one is full. KEYS: executor counter, org
/// counter. ARGV: executor max, org max, TTL ms. Returns 0 (reserved), 1 (executor full), 2 (org full).
const RESERVE: &str = r#"
local e = tonumber(redis.call('GET', KEYS[1]) or '0')
local o = tonumber(redis.call('GET', KEYS[2]) or '0')
if e + 1 > tonumber(ARGV[1]) then return 1 end
if o + 1 > tonumber(ARGV[2]) then return 2 end
redis.call('INCR', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"#;

/// Gives both slots back, never below zero (a counter that expired meanwhile is not driven negative).
const RELEASE: &str = r#"
for i = 1, 2 do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if v > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"#;

/// Why no executor took the call (failure precedence of spec 2.7 step 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExecutor {
    OrgQuotaExceeded,
    OverCapacity,
    NoneAvailable,
}

impl NoExecutor {
    pub fn code(self) -> &'static str {
        match self {
            NoExecutor::OrgQuotaExceeded => "ORG_QUOTA_EXCEEDED",
            NoExecutor::OverCapacity => "EXECUTOR_OVER_CAPACITY",
            NoExecutor::NoneAvailable => "NO_EXECUTOR_AVAILABLE",
        }
    }
}

/// A reserved executor: release it when the call ends.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub route: RouteRecord,
    pub org: OrgId,
}

/// Whether `route` may take a call of `org` of `kind` under `selector` (pool already chosen).
pub fn matches(route: &RouteRecord, org: OrgId, kind: ToolKind, selector: &Selector) -> bool {
    if route.pool == Pool::Byon && route.organization_id != Some(org) {
        return false;
    }
    if !route.kinds.contains(&kind) {
        return false;
    }
    if let Some(id) = selector.executor_id {
        if route.executor_id.uuid() != id {
            return false;
        }
    }
    let has = |l: &str| route.labels.iter().any(|x| x == l);
    let labels_ok = selector
        .labels
        .iter()
        .flatten()
        .chain(selector.tag.iter())
        .all(|l| has(l));
    let group_ok = selector
        .group
        .as_ref()
        .is_none_or(|g| has(g) || has(&format!("group:{g}")));
    labels_ok && group_ok
}

/// The route records of a pool's index (pruning members whose record is gone).
pub async fn routes(redis: &Redis, pool: Pool, org: OrgId) -> Vec<RouteRecord> {
    let index = redis.key(&index_key(pool, Some(org)));
    let members: Vec<String> = match redis.client.smembers(&index).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "executor index unreadable");
            return Vec::new();
        }
    };
    if members.is_empty() {
        return Vec::new();
    }
    let keys: Vec<String> = members
        .iter()
        .filter_map(|m| m.parse::<uuid::Uuid>().ok())
        .map(|id| redis.key(&presence::route_key(ExecutorId::from(id))))
        .collect();
    if keys.is_empty() {
        return Vec::new();
    }
    let values: Vec<Option<String>> = if keys.len() == 1 {
        let Some(key) = keys.first() else {
            return Vec::new();
        };
        match redis.client.get::<Option<String>, _>(key).await {
            Ok(v) => vec![v],
            Err(_) => return Vec::new(),
        }
    } else {
        match redis.client.mget(keys).await {
            Ok(v) => v,
            Err(_) => return Vec::new(),
        }
    };
    let mut found = Vec::new();
    let mut gone = Vec::new();
    for (member, value) in members.iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<RouteRecord>(&v).ok()) {
            Some(r) => found.push(r),
            None => gone.push(member.clone()),
        }
    }
    if !gone.is_empty() {
        let _: Result<i64, _> = redis.client.srem(&index, gone).await;
    }
    found
}

/// Picks and reserves an executor: the selector's pool, or (none given) the org's own connected
/// executors that match, else the managed pool (Decisions); then the least loaded by in-flight ratio,
/// then the least recently used.
pub async fn select(
    redis: &Redis,
    org: OrgId,
    kind: ToolKind,
    selector: &Selector,
    org_max: u32,
    reserve_ttl_ms: u64,
) -> Result<Reserved, NoExecutor> {
    let pools: &[Pool] = match selector.pool {
        Some(Pool::Byon) => &[Pool::Byon],
        Some(Pool::Managed) => &[Pool::Managed],
        None => &[Pool::Byon, Pool::Managed],
    };
    for &pool in pools {
        let candidates: Vec<RouteRecord> = routes(redis, pool, org)
            .await
            .into_iter()
            .filter(|r| r.pool == pool && matches(r, org, kind, selector))
            .collect();
        if candidates.is_empty() {
            continue;
        }
        return reserve_one(redis, org, candidates, org_max, reserve_ttl_ms).await;
    }
    Err(NoExecutor::NoneAvailable)
}

async fn counters(redis: &Redis, keys: Vec<String>) -> Vec<i64> {
    let n = keys.len();
    let values: Vec<Option<String>> = if let (1, Some(key)) = (n, keys.first()) {
        redis
            .client
            .get::<Option<String>, _>(key)
            .await
            .map(|v| vec![v])
            .unwrap_or_default()
    } else {
        redis.client.mget(keys).await.unwrap_or_default()
    };
    let mut out: Vec<i64> = values
        .into_iter()
        .map(|v| v.and_then(|s| s.parse().ok()).unwrap_or(0))
        .collect();
    out.resize(n, 0);
    out
}

async fn reserve_one(
    redis: &Redis,
    org: OrgId,
    candidates: Vec<RouteRecord>,
    org_max: u32,
    ttl_ms: u64,
) -> Result<Reserved, NoExecutor> {
    let inflight = counters(
        redis,
        candidates
            .iter()
            .map(|r| redis.key(&inflight_key(r.executor_id)))
            .collect(),
    )
    .await;
    let used = counters(
        redis,
        candidates
            .iter()
            .map(|r| redis.key(&last_used_key(r.executor_id)))
            .collect(),
    )
    .await;
    let load: HashMap<ExecutorId, (f64, i64)> = candidates
        .iter()
        .zip(inflight.iter().zip(used.iter()))
        .map(|(r, (&i, &u))| {
            let ratio = i.max(0) as f64 / f64::from(r.max_in_flight.max(1));
            (r.executor_id, (ratio, u))
        })
        .collect();
    let mut ordered = candidates;
    ordered.sort_by(|a, b| {
        let (ra, ua) = load.get(&a.executor_id).copied().unwrap_or_default();
        let (rb, ub) = load.get(&b.executor_id).copied().unwrap_or_default();
        ra.total_cmp(&rb).then(ua.cmp(&ub))
    });
    let mut org_full = false;
    let mut exec_full = false;
    for route in ordered {
        let keys = vec![
            redis.key(&inflight_key(route.executor_id)),
            redis.key(&org_inflight_key(org)),
        ];
        let verdict: Result<i64, _> = redis
            .client
            .eval(
                RESERVE,
                keys,
                vec![
                    route.max_in_flight.max(1).to_string(),
                    org_max.max(1).to_string(),
                    ttl_ms.to_string(),
                ],
            )
            .await;
        match verdict {
            Ok(0) => {
                let now = chrono::Utc::now().timestamp_millis();
                let _: Result<(), _> = redis
                    .client
                    .set(
                        redis.key(&last_used_key(route.executor_id)),
                        now,
                        Some(fred::types::Expiration::PX(3_600_000)),
                        None,
                        false,
                    )
                    .await;
                return Ok(Reserved { route, org });
            }
            Ok(1) => exec_full = true,
            Ok(_) => org_full = true,
            Err(e) => tracing::warn!(error = %e, "executor reservation failed"),
        }
    }
    Err(if org_full {
        NoExecutor::OrgQuotaExceeded
    } else if exec_full {
        NoExecutor::OverCapacity
    } else {
        NoExecutor::NoneAvailable
    })
}

/// Gives a reservation back.
pub async fn release(redis: &Redis, r: &Reserved) {
    let keys = vec![
        redis.key(&inflight_key(r.route.executor_id)),
        redis.key(&org_inflight_key(r.org)),
    ];
    let done: Result<i64, _> = redis.client.eval(RELEASE, keys, Vec::<String>::new()).await;
    if let Err(e) = done {
        tracing::warn!(error = %e, executor_id = %r.route.executor_id, "executor reservation not released (it expires)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pool: Pool, org: Option<OrgId>, labels: &[&str]) -> RouteRecord {
        RouteRecord {
            edge_id: "e".into(),
            executor_id: ExecutorId::from(uuid::Uuid::new_v4()),
            pool,
            organization_id: org,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            max_in_flight: 10,
            kinds: ToolKind::ALL.to_vec(),
        }
    }

    #[test]
    fn selectors_match_on_control_plane_labels_kind_org_and_id() {
        let org = OrgId::from(uuid::Uuid::new_v4());
        let other = OrgId::from(uuid::Uuid::new_v4());
        let r = route(Pool::Byon, Some(org), &["gpu", "group:build"]);
        let any = Selector::default();
        assert!(matches(&r, org, ToolKind::AgentExecute, &any));
        assert!(!matches(&r, other, ToolKind::AgentExecute, &any));
        let sel = |f: fn(&mut Selector)| {
            let mut s = Selector::default();
            f(&mut s);
            s
        };
        assert!(matches(
            &r,
            org,
            ToolKind::AgentExecute,
            &sel(|s| s.tag = Some("gpu".into()))
        ));
        assert!(!matches(
            &r,
            org,
            ToolKind::AgentExecute,
            &sel(|s| s.tag = Some("cpu".into()))
        ));
        assert!(matches(
            &r,
            org,
            ToolKind::AgentExecute,
            &sel(|s| s.group = Some("build".into()))
        ));
        assert!(!matches(
            &r,
            org,
            ToolKind::AgentExecute,
            &sel(|s| s.labels = Some(vec!["gpu".into(), "arm".into()]))
        ));
        let mut only_shell = r.clone();
        only_shell.kinds = vec![ToolKind::AgentExecute];
        assert!(!matches(&only_shell, org, ToolKind::ConnectorAction, &any));
        let mut by_id = Selector {
            executor_id: Some(uuid::Uuid::new_v4()),
            ..Default::default()
        };
        assert!(!matches(&r, org, ToolKind::AgentExecute, &by_id));
        by_id.executor_id = Some(r.executor_id.uuid());
        assert!(matches(&r, org, ToolKind::AgentExecute, &by_id));
        // The managed pool serves every org.
        let m = route(Pool::Managed, None, &[]);
        assert!(matches(&m, other, ToolKind::AgentExecute, &any));
    }
}
