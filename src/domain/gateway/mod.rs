//! The gateway's executor edge: node agents connect over `/ws/executor` with their executor token; the
//! gateway keeps one live connection per executor, a route record per connection in Redis (what makes an
//! executor `online` and, with dispatch, routable from any instance), pings it, re-reads its revocation
//! and labels on every hello, and closes it at once when it is revoked anywhere.
//!
//! Routing labels are the control plane's only: labels in the hello are reported, never routed on.

pub mod config;
pub mod dispatch;
pub mod error;
mod invoke;
pub mod metrics;
pub mod objects;
pub mod protocol;
pub mod results;
pub mod routes;
pub mod select;
pub mod workspace;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use fred::interfaces::{KeysInterface, LuaInterface};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::domain::agents::identity::{ExecutorIdentity, Pool, ToolKind};
use crate::domain::agents::presence::{self, Revoked};
use crate::domain::agents::Agents;
use crate::domain::common::ids::{ExecutorId, OrgId};
use crate::domain::orgs::Orgs;
use crate::platform::db::PgPool;
use crate::platform::redis::Redis;
use config::GatewayConfig;
pub use error::GatewayError;
use objects::ObjectStore;
use protocol::{AgentFrame, HelloV2};

/// What the gateway service is built from.
pub struct GatewayParts {
    pub config: GatewayConfig,
    pub agents: Arc<Agents>,
    /// Org settings (the per-org in-flight quota).
    pub orgs: Arc<Orgs>,
    pub redis: Redis,
    /// Workspaces (rows and locks).
    pub db: PgPool,
    /// Where workspace snapshots live.
    pub objects: ObjectStore,
}

/// Why the gateway closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhy {
    /// The executor was revoked.
    Revoked,
    /// A newer connection of the same executor took over.
    Replaced,
    /// The hello named another executor, pool or org than the token.
    HelloMismatch,
    /// Two pings went unanswered.
    Unresponsive,
    /// This gateway instance is stopping: the agent reconnects (to another instance, or to this one
    /// when it is back).
    Shutdown,
}

impl CloseWhy {
    pub fn reason(self) -> &'static str {
        match self {
            CloseWhy::Revoked => "EXECUTOR_REVOKED",
            CloseWhy::Replaced => "REPLACED_BY_NEWER_CONNECTION",
            CloseWhy::HelloMismatch => "HELLO_MISMATCH",
            CloseWhy::Unresponsive => "PING_TIMEOUT",
            CloseWhy::Shutdown => "GATEWAY_SHUTDOWN",
        }
    }
}

/// What the gateway asks a connection's socket loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// A frame to send (a tool call).
    Frame(String),
    Close(CloseWhy),
}

/// One live connection, as the registry holds it.
struct Live {
    conn: String,
    /// The in-flight limit the token's record allows; a hello can only lower it.
    configured_max_in_flight: u32,
    identity: ExecutorIdentity,
    tx: mpsc::UnboundedSender<Outbound>,
}

/// A connection, as its socket loop holds it.
pub struct Connection {
    pub executor: ExecutorId,
    /// Unique per connection (edge id + a random part).
    pub conn: String,
    /// The executor's connection number, from Redis: increasing across every gateway instance, it fences
    /// the route record (an older connection never overwrites or removes a newer one's).
    pub seq: i64,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
}

/// What the socket loop does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Close(CloseWhy),
}

/// The route record of a connected executor (what a dispatching instance reads).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Route<'a> {
    edge_id: &'a str,
    executor_id: ExecutorId,
    pool: Pool,
    organization_id: Option<OrgId>,
    labels: &'a [String],
    max_in_flight: u32,
    kinds: &'a [ToolKind],
    last_seen_at_ms: i64,
    conn: &'a str,
    seq: i64,
}

/// Writes a route record unless a newer connection's is there, and indexes it in its pool's set. KEYS:
/// the route, the pool's index. ARGV: the record, its connection number, the TTL in ms, the executor id.
const WRITE_ROUTE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, route = pcall(cjson.decode, v)
  if ok and type(route) == 'table' and tonumber(route.seq) and tonumber(route.seq) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"#;

/// Deletes a route record (and its index entry) only if it is the given connection's. KEYS: the route,
/// the pool's index. ARGV: the connection number, the executor id.
const DELETE_OWN_ROUTE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, route = pcall(cjson.decode, v)
if ok and type(route) == 'table' and tonumber(route.seq) == tonumber(ARGV[1]) then
  redis.call('SREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Accepts a result only from the executor its tool call was sent to, once. KEYS: the pending record.
/// ARGV: the sender. Returns 1 when accepted.
const TAKE_PENDING: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// How much longer than the task's own timeout a tool call is waited for (snapshot and upload time).
const RESULT_GRACE: Duration = Duration::from_secs(15);

/// A tool call for an executor connected to another instance, sent over that instance's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Forward {
    executor_id: ExecutorId,
    invoke_id: String,
    frame: String,
}

/// An executor's reply, as stored under the reply key.
#[derive(Debug, Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    /// The snapshot the executor uploaded (`{workspaceId, version, objectKey, etag?}`).
    #[serde(default)]
    workspace: Option<Value>,
}

pub struct Gateway {
    config: GatewayConfig,
    agents: Arc<Agents>,
    redis: Redis,
    edge_id: String,
    seq: AtomicU64,
    live: DashMap<ExecutorId, Live>,
    /// Set on shutdown: new connections are closed as soon as they register.
    closing: AtomicBool,
    orgs: Arc<Orgs>,
    db: PgPool,
    objects: ObjectStore,
    /// Tool calls sent to executors connected here, by call id (failed if the executor drops).
    pending: DashMap<String, ExecutorId>,
    /// Tool calls this instance waits on, woken when their reply lands.
    /// The reply travels in the wake-up when it landed on this instance (`None`: read it from Redis).
    waiters: DashMap<String, oneshot::Sender<Option<String>>>,
    listening: AtomicBool,
    /// Woken when this instance releases an executor slot (calls waiting for capacity retry).
    slot_freed: tokio::sync::Notify,
    /// Runs `agent.run` dispatches (the brain, set by the composition root: the brain calls the
    /// gateway for its tools, so the gateway cannot own it).
    agent_runner: std::sync::OnceLock<Arc<dyn AgentRunner>>,
}

/// What runs an `agent.run` dispatch to its final result (the brain).
pub trait AgentRunner: Send + Sync {
    fn run_agent<'a>(
        &'a self,
        req: &'a dispatch::DispatchRequest,
    ) -> futures_util::future::BoxFuture<'a, dispatch::DispatchResult>;
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Self {
        let edge_id = if parts.config.edge_id.is_empty() {
            format!("edge-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else {
            parts.config.edge_id.clone()
        };
        Self {
            config: parts.config,
            agents: parts.agents,
            redis: parts.redis,
            edge_id,
            seq: AtomicU64::new(0),
            live: DashMap::new(),
            closing: AtomicBool::new(false),
            orgs: parts.orgs,
            db: parts.db,
            objects: parts.objects,
            pending: DashMap::new(),
            waiters: DashMap::new(),
            listening: AtomicBool::new(false),
            slot_freed: tokio::sync::Notify::new(),
            agent_runner: std::sync::OnceLock::new(),
        }
    }

    /// Installs the brain that runs `agent.run` dispatches (once; later calls are ignored).
    pub fn set_agent_runner(&self, runner: Arc<dyn AgentRunner>) {
        let _ = self.agent_runner.set(runner);
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// How many executors hold a connection to this instance.
    pub fn connected(&self) -> usize {
        self.live.len()
    }

    /// Tool calls sent to executors connected here and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Closes the sockets of executors revoked anywhere, as soon as the revocation is announced; after
    /// a lost subscription, re-checks every local connection. Called once by the gateway role.
    pub fn listen(self: &Arc<Self>) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let on_forward = Arc::clone(self);
        self.redis.listen(
            &results::edge_channel(&self.edge_id),
            move |text| match serde_json::from_str::<Forward>(text) {
                Ok(f) => {
                    let gateway = Arc::clone(&on_forward);
                    tokio::spawn(async move { gateway.on_forward(f).await });
                }
                Err(e) => tracing::warn!(error = %e, "unreadable forwarded tool call"),
            },
            // A forward missed while disconnected fails by its own timeout.
            || {},
        );
        let on_reply = Arc::clone(self);
        self.redis.listen(
            results::REPLIES_CHANNEL,
            move |invoke_id| on_reply.wake(invoke_id),
            // Waiters also poll their reply key, so a missed wake-up only costs a poll interval.
            || {},
        );
        let on_revoked = Arc::clone(self);
        let on_reconnect = Arc::clone(self);
        self.redis.listen(
            presence::REVOKED_CHANNEL,
            move |text| match serde_json::from_str::<Revoked>(text) {
                Ok(r) => on_revoked.close_revoked(&r),
                Err(e) => tracing::warn!(error = %e, "unreadable revocation notice"),
            },
            move || {
                let gateway = Arc::clone(&on_reconnect);
                tokio::spawn(async move { gateway.recheck_all().await });
            },
        );
    }

    /// A revocation names the executor and its org: a managed executor (no org) or another org's never
    /// matches.
    fn close_revoked(&self, r: &Revoked) {
        let ours = self
            .live
            .get(&r.executor_id)
            .is_some_and(|l| l.identity.org == Some(r.organization_id));
        if ours {
            self.close(r.executor_id, CloseWhy::Revoked);
        }
    }

    fn close(&self, id: ExecutorId, why: CloseWhy) {
        if let Some(live) = self.live.get(&id) {
            tracing::info!(executor_id = %id, reason = why.reason(), "closing executor connection");
            let _ = live.tx.send(Outbound::Close(why));
        }
    }

    /// Closes every connection this instance holds (on shutdown, so the HTTP server's graceful stop
    /// does not wait out the grace period for sockets that never end by themselves).
    pub fn close_all(&self, why: CloseWhy) {
        self.closing.store(true, Ordering::SeqCst);
        for live in &self.live {
            let _ = live.tx.send(Outbound::Close(why));
        }
    }

    /// Re-reads the executor's revocation (periodically, whether or not it sends hellos): a revocation
    /// whose announcement was missed still closes the socket within one period.
    pub async fn recheck(&self, conn: &Connection) -> Verdict {
        let Some(who) = self.identity_of(conn) else {
            return Verdict::Close(CloseWhy::Replaced);
        };
        match self.agents.current_labels(&who).await {
            Ok(None) => Verdict::Close(CloseWhy::Revoked),
            Ok(Some(_)) | Err(_) => Verdict::Continue,
        }
    }

    async fn recheck_all(&self) {
        let identities: Vec<ExecutorIdentity> =
            self.live.iter().map(|l| l.identity.clone()).collect();
        for who in identities {
            if let Ok(None) = self.agents.current_labels(&who).await {
                self.close(who.id, CloseWhy::Revoked);
            }
        }
    }

    /// The live executor holding `token`.
    pub async fn authenticate(&self, token: &str) -> Result<ExecutorIdentity, GatewayError> {
        self.agents
            .authenticate(token)
            .await?
            .ok_or(GatewayError::InvalidToken)
    }

    /// Registers a new connection (a previous one of the same executor is told to close), publishes its
    /// route and records that it was seen. Revocation is read again once registered: a revocation
    /// announced between the token check and the registration found nothing to close.
    pub async fn connect(&self, identity: ExecutorIdentity) -> Connection {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let conn = format!(
            "{}:{}:{n}",
            self.edge_id,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let seq_key = self
            .redis
            .key(&format!("executor:conn_seq:{}", identity.id));
        let seq: i64 = match self.redis.client.incr(&seq_key).await {
            Ok(seq) => seq,
            Err(e) => {
                // Without Redis there is no route to fence either; the connection still works locally.
                tracing::warn!(executor_id = %identity.id, error = %e, "connection number unavailable");
                0
            }
        };
        let (tx, outbound) = mpsc::unbounded_channel();
        let executor = identity.id;
        let previous = self.live.insert(
            executor,
            Live {
                conn: conn.clone(),
                configured_max_in_flight: identity.max_in_flight,
                identity: identity.clone(),
                tx: tx.clone(),
            },
        );
        if let Some(old) = previous {
            let _ = old.tx.send(Outbound::Close(CloseWhy::Replaced));
        }
        tracing::info!(executor_id = %executor, org_id = ?identity.org, conn = %conn, "executor connected");
        let connection = Connection {
            executor,
            conn,
            seq,
            outbound,
        };
        if self.closing.load(Ordering::SeqCst) {
            let _ = tx.send(Outbound::Close(CloseWhy::Shutdown));
            return connection;
        }
        if let Ok(None) = self.agents.current_labels(&identity).await {
            let _ = tx.send(Outbound::Close(CloseWhy::Revoked));
            return connection;
        }
        self.write_route(&identity, &connection).await;
        self.agents.touch(&identity).await;
        connection
    }

    /// Handles one text frame of `conn`.
    pub async fn on_text(&self, conn: &Connection, text: &str) -> Verdict {
        match protocol::parse_agent_frame(text) {
            Some(AgentFrame::Hello(hello)) => self.on_hello(conn, hello).await,
            Some(AgentFrame::ToolResult(result)) => {
                self.on_result(conn, result).await;
                Verdict::Continue
            }
            Some(AgentFrame::ToolEvent(_)) | None => Verdict::Continue,
        }
    }

    async fn on_hello(&self, conn: &Connection, hello: HelloV2) -> Verdict {
        let Some((current, configured)) = self
            .live
            .get(&conn.executor)
            .filter(|l| l.conn == conn.conn)
            .map(|l| (l.identity.clone(), l.configured_max_in_flight))
        else {
            return Verdict::Close(CloseWhy::Replaced);
        };
        let org_ok = match current.pool {
            Pool::Byon => hello.organization_id == current.org.map(OrgId::uuid),
            Pool::Managed => true,
        };
        if hello.executor_id != current.id.uuid() || hello.pool != current.pool || !org_ok {
            tracing::warn!(executor_id = %current.id, "hello does not match the executor's token; closing");
            return Verdict::Close(CloseWhy::HelloMismatch);
        }
        // Revocation and routing labels are re-read from the control plane on every hello.
        let labels = match self.agents.current_labels(&current).await {
            Ok(Some(labels)) => labels,
            Ok(None) => return Verdict::Close(CloseWhy::Revoked),
            Err(e) => {
                tracing::warn!(executor_id = %current.id, error = %e, "executor state not re-read; keeping the connection as it was");
                current.labels.clone()
            }
        };
        let updated = ExecutorIdentity {
            labels,
            max_in_flight: hello.max_in_flight.min(configured).max(1),
            kinds: hello.kinds.clone(),
            name: hello.name.clone().unwrap_or(current.name.clone()),
            ..current
        };
        let current = match self.live.get_mut(&conn.executor) {
            Some(mut live) if live.conn == conn.conn => {
                live.identity = updated.clone();
                true
            }
            _ => false,
        };
        if !current {
            return Verdict::Close(CloseWhy::Replaced);
        }
        self.write_route(&updated, conn).await;
        self.agents.touch(&updated).await;
        Verdict::Continue
    }

    fn identity_of(&self, conn: &Connection) -> Option<ExecutorIdentity> {
        self.live
            .get(&conn.executor)
            .filter(|l| l.conn == conn.conn)
            .map(|l| l.identity.clone())
    }

    /// Keeps the route record alive (on each answered ping).
    pub async fn still_alive(&self, conn: &Connection) {
        if let Some(identity) = self.identity_of(conn) {
            self.write_route(&identity, conn).await;
        }
    }

    /// The connection ended: forget it, and its route record if it is still this connection's.
    pub async fn disconnect(self: &Arc<Self>, conn: &Connection) {
        let removed = self
            .live
            .remove_if(&conn.executor, |_, live| live.conn == conn.conn);
        let index = removed.map_or_else(
            || select::index_key(Pool::Managed, None),
            |(_, live)| select::index_key(live.identity.pool, live.identity.org),
        );
        let key = self.redis.key(&presence::route_key(conn.executor));
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(
                DELETE_OWN_ROUTE,
                vec![key, self.redis.key(&index)],
                vec![conn.seq.to_string(), conn.executor.to_string()],
            )
            .await;
        self.fail_pending_later(conn.executor);
        if let Err(e) = done {
            tracing::warn!(executor_id = %conn.executor, error = %e, "route record not removed (it expires on its own)");
        }
        tracing::info!(executor_id = %conn.executor, conn = %conn.conn, "executor disconnected");
    }

    /// Writes (or refreshes) the connection's route record, unless a newer connection's is there.
    async fn write_route(&self, identity: &ExecutorIdentity, conn: &Connection) {
        let route = Route {
            edge_id: &self.edge_id,
            executor_id: identity.id,
            pool: identity.pool,
            organization_id: identity.org,
            labels: &identity.labels,
            max_in_flight: identity.max_in_flight,
            kinds: &identity.kinds,
            last_seen_at_ms: chrono::Utc::now().timestamp_millis(),
            conn: &conn.conn,
            seq: conn.seq,
        };
        let Ok(value) = serde_json::to_string(&route) else {
            return;
        };
        let key = self.redis.key(&presence::route_key(identity.id));
        let index = self
            .redis
            .key(&select::index_key(identity.pool, identity.org));
        let ttl = self.config.executor_stale_ms.max(1000);
        let done: Result<i64, _> = self
            .redis
            .client
            .eval(
                WRITE_ROUTE,
                vec![key, index],
                vec![
                    value,
                    conn.seq.to_string(),
                    ttl.to_string(),
                    identity.id.to_string(),
                ],
            )
            .await;
        if let Err(e) = done {
            tracing::warn!(executor_id = %identity.id, error = %e, "route record not written");
        }
    }
}
