//! Session turns (gateway spec 4.3 with its Improve lines): a per-session driver answers the session's
//! unanswered messages one at a time, in order, under a Redis lock that names this process (refreshed
//! while it works, released only by its holder). A message sent while a turn runs is answered next,
//! never dropped; messages left by a process that died are found by the sweep once its lock expires.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions};
use futures_util::future::{BoxFuture, FutureExt};
use prometheus::{Histogram, IntCounterVec};
use serde_json::{json, Value};
use tracing::Instrument;

use super::agent_loop::{self, EventLevel, Host, Limits, LoopSpec, ToolCalling};
use super::tools::{self, ShellInput};
use super::Brain;
use crate::domain::common::ids::{AgentSessionId, OrgId};
use crate::domain::gateway::dispatch::{DispatchRequest, DispatchResult, Selector};
use crate::domain::gateway::workspace::OwnerType;
use crate::domain::inference::{ChatResponse, Deltas, Message, Provider};
use crate::domain::sessions::model::{EventRow, Level, NewEvent, SessionRow};
use crate::domain::sessions::TurnScheduler;
use crate::domain::usage::model::UsageRecord;
use crate::domain::usage::UsageError;
use crate::platform::metrics::{Metrics, MetricsError};

/// Deletes a lock only if this process still holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Extends a lock only if this process still holds it.
const EXTEND: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// The brain's metrics: turns by outcome and the time a turn spends in the brain itself.
pub struct TurnMetrics {
    turns: IntCounterVec,
    overhead: Histogram,
}

impl TurnMetrics {
    pub fn register(metrics: &Metrics) -> Result<Self, MetricsError> {
        Ok(Self {
            turns: metrics.counter_vec(
                "brain_turns_total",
                "Session turns and agent.run loops ended, by kind and outcome.",
                &["kind", "outcome"],
            )?,
            overhead: metrics.histogram(
                "brain_turn_overhead_seconds",
                "Time a turn spends outside the provider and the tools (the brain's own work).",
                &[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )?,
        })
    }

    pub fn ended(&self, kind: &str, outcome: &agent_loop::Outcome) {
        let label = if outcome.result.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        self.turns.with_label_values(&[kind, label]).inc();
        self.overhead.observe(outcome.overhead_ms() / 1000.0);
    }
}

impl TurnScheduler for Brain {
    fn wake(&self, org: OrgId, session: AgentSessionId) {
        if let Some(me) = self.me.upgrade() {
            me.drive(org, session);
        }
    }
}

fn lock_key(session: AgentSessionId) -> String {
    format!("session:brain:{session}")
}

impl Brain {
    /// Starts this session's driver unless one runs here already (that one answers new messages too).
    pub fn drive(self: &Arc<Self>, org: OrgId, session: AgentSessionId) {
        if !self.driving.insert(session) {
            return;
        }
        let brain = Arc::clone(self);
        let span = tracing::info_span!("session_turns", org_id = %org, session_id = %session);
        tokio::spawn(
            async move {
                let Ok(_slot) = brain.slots.clone().acquire_owned().await else {
                    brain.driving.remove(&session);
                    return;
                };
                if brain.lock(session).await {
                    brain.answer_pending(org, session).await;
                    brain.unlock(session).await;
                }
                brain.driving.remove(&session);
                // A message that arrived while this driver was finishing (its wake found the driver
                // still registered, or the lock still held by us) is answered now.
                if brain.lock_is_free(session).await
                    && matches!(brain.sessions.next_pending(org, session).await, Ok(Some(_)))
                {
                    brain.drive(org, session);
                }
            }
            .instrument(span),
        );
    }

    /// Wakes every session with unanswered messages (they may have been left by a dead instance). Runs
    /// in the gateway role every `sweep_interval_ms`.
    pub async fn sweep(self: &Arc<Self>) {
        match self.sessions.pending_sessions().await {
            Ok(pending) => {
                for (org, session) in pending {
                    self.drive(org, session);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pending sessions not read"),
        }
    }

    async fn lock(&self, session: AgentSessionId) -> bool {
        let taken: Result<Option<String>, _> = self
            .redis
            .client
            .set(
                self.redis.key(&lock_key(session)),
                self.instance.as_str(),
                Some(Expiration::PX(self.config.turn_lock_ttl_ms as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match taken {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "turn lock not taken (Redis); the sweep retries");
                false
            }
        }
    }

    async fn lock_is_free(&self, session: AgentSessionId) -> bool {
        let held: Result<i64, _> = self
            .redis
            .client
            .exists(self.redis.key(&lock_key(session)))
            .await;
        matches!(held, Ok(0))
    }

    async fn extend(&self, session: AgentSessionId) -> bool {
        let extended: Result<i64, _> = self
            .redis
            .client
            .eval(
                EXTEND,
                vec![self.redis.key(&lock_key(session))],
                vec![
                    self.instance.clone(),
                    self.config.turn_lock_ttl_ms.to_string(),
                ],
            )
            .await;
        matches!(extended, Ok(1))
    }

    async fn unlock(&self, session: AgentSessionId) {
        let _: Result<i64, _> = self
            .redis
            .client
            .eval(
                RELEASE,
                vec![self.redis.key(&lock_key(session))],
                vec![self.instance.clone()],
            )
            .await;
    }

    /// Answers the session's unanswered messages in order while holding its lock.
    async fn answer_pending(self: &Arc<Self>, org: OrgId, session: AgentSessionId) {
        // The session and its first unanswered message are read together (one round trip less
        // before the first turn).
        let (row, first) = tokio::join!(
            self.sessions.find(org, session),
            self.sessions.next_pending(org, session)
        );
        let row = match row {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "session not read; the sweep retries");
                return;
            }
        };
        let mut first = Some(first);
        loop {
            let pending = match first.take() {
                Some(p) => p,
                None => self.sessions.next_pending(org, session).await,
            };
            let message = match pending {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "pending message not read; the sweep retries");
                    return;
                }
            };
            // The lock is refreshed while the turn runs; if it is lost (Redis restarted, a pause
            // longer than its TTL) the turn still ends, and the answered mark keeps the order.
            let refresh = {
                let brain = Arc::clone(self);
                let every = Duration::from_millis((self.config.turn_lock_ttl_ms / 3).max(100));
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        if !brain.extend(session).await {
                            tracing::warn!(session_id = %session, "turn lock lost while a turn runs");
                        }
                    }
                })
            };
            self.turn(&row, &message).await;
            refresh.abort();
            if let Err(e) = self.sessions.mark_answered(org, session, message.seq).await {
                tracing::warn!(error = %e, seq = message.seq, "message not marked answered; it will be answered again");
                return;
            }
        }
    }

    /// One turn: the model answers `message` (calling tools as it needs); its answer or its failure is
    /// appended to the session. Never fails: whatever goes wrong becomes an `error` event.
    async fn turn(self: &Arc<Self>, row: &SessionRow, message: &EventRow) {
        let began = std::time::Instant::now();
        let org = row.organization_id;
        let session = row.id;
        let user_text = message
            .payload
            .as_ref()
            .and_then(|p| p.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let provider = match engine_provider(&row.engine_id, &row.llm_provider) {
            Some(p) => p,
            None => {
                self.fail_turn(row, message.seq, "LLM_PROVIDER_NOT_SUPPORTED")
                    .await;
                return;
            }
        };
        let (settings, history, credential) = tokio::join!(
            self.orgs.stored_settings(org),
            // Everything said so far, answers to earlier messages included (those were appended
            // after this message when it was queued behind them); later messages wait their turn.
            self.sessions
                .conversation(org, session, self.config.history_messages),
            self.credential(org, provider, row.llm_secret_id, true, None),
        );
        let credential = match credential {
            Ok(c) => c,
            Err(code) => {
                self.fail_turn(row, message.seq, &code).await;
                return;
            }
        };
        let shell_enabled = settings
            .ok()
            .and_then(|s| s.pointer("/tools/shellRunEnabled").and_then(Value::as_bool))
            .unwrap_or(false);
        let history = history
            .map(|h| {
                let earlier: Vec<EventRow> = h
                    .into_iter()
                    .filter(|e| e.seq < message.seq || e.event_type != "user_message")
                    .collect();
                transcript(&earlier)
            })
            .unwrap_or_default();
        let mut system = String::new();
        if let Some(s) = row
            .prompt_system
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            system.push_str(s);
            system.push_str("\n\n");
        }
        system.push_str(&row.prompt_instructions);
        let allow: Vec<String> =
            serde_json::from_value(row.tools_allow.clone()).unwrap_or_default();
        let spec = LoopSpec {
            provider,
            model: row.llm_model.clone(),
            credential,
            system: Some(system),
            history,
            user: user_text,
            allow,
            mode: ToolCalling::parse(row.tool_calling.as_str()).unwrap_or(self.config.tool_calling),
            limits: Limits::from_json(&row.limits),
            shell_policy: if shell_enabled {
                Ok(())
            } else {
                Err("TOOL_POLICY_DENIED:shell.run".into())
            },
            json_output: false,
        };
        // The progress event is written while the model thinks (it costs the turn no time); the turn's
        // next event waits for it, so the log keeps the order of what happened.
        let started = {
            let sessions = Arc::clone(&self.sessions);
            let ev = NewEvent {
                event_type: "agent_turn_started".into(),
                level: Level::Info,
                payload: json!({"messageSeq": message.seq}),
            };
            tokio::spawn(async move {
                if let Err(e) = sessions.append(org, session, ev).await {
                    tracing::warn!(error = %e, "agent_turn_started not recorded");
                }
            })
        };
        let host = SessionHost {
            brain: Arc::clone(self),
            row: row.clone(),
            turn_seq: message.seq,
            deltas: Arc::new(AtomicU32::new(0)),
            usage: Mutex::new(TurnUsage::default()),
            before: tokio::sync::Mutex::new(vec![started]),
            writes: tokio::sync::Mutex::new(Vec::new()),
            last_usage: tokio::sync::Mutex::new(None),
        };
        let outcome = agent_loop::run(self.inference.as_ref(), spec, &host).await;
        // Streamed text reaches clients before the answer that ends the turn.
        // The answer is stored only after the turn's usage (a client that sees it reads totals that
        // include it), and after its streamed text went out.
        tokio::join!(host.settle(), host.written());
        // The turn's own time: from picking the message up to storing the answer, less the provider's
        // and the tools'.
        let mut outcome = outcome;
        outcome.total_ms = began.elapsed().as_secs_f64() * 1000.0;
        self.metrics.ended("session", &outcome);
        let usage = host.usage.lock().map(|u| u.clone()).unwrap_or_default();
        let turn = json!({
            "messageSeq": message.seq,
            "llmCalls": outcome.llm_calls,
            "toolCalls": outcome.tool_calls,
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "costUsd": usage.cost_micros as f64 / 1e6,
            "totalMs": round2(outcome.total_ms),
            "providerMs": round2(outcome.provider_ms),
            "toolMs": round2(outcome.tool_ms),
            "overheadMs": round2(outcome.overhead_ms()),
        });
        tracing::info!(
            event = "session_turn_ended",
            ok = outcome.result.is_ok(),
            overhead_ms = outcome.overhead_ms(),
            "turn ended"
        );
        let event = match outcome.result {
            Ok(output) => NewEvent {
                event_type: "agent_message".into(),
                level: Level::Info,
                payload: json!({"message": as_text(output), "turn": turn}),
            },
            Err(code) => NewEvent {
                event_type: "error".into(),
                level: Level::Error,
                payload: json!({"code": code, "turn": turn}),
            },
        };
        let last = host.last_usage.lock().await.take();
        let appended = match last {
            Some(record) => {
                let sid = session;
                let also: crate::domain::sessions::Also = Box::new(move |c| {
                    Box::pin(async move {
                        crate::domain::usage::record_in(c, &record).await?;
                        crate::domain::sessions::store::add_usage(
                            c,
                            record.org,
                            sid,
                            record.input_tokens,
                            record.output_tokens,
                            record.cost_micros,
                        )
                        .await
                    })
                });
                self.sessions.append_with(org, session, event, also).await
            }
            None => self.sessions.append(org, session, event).await,
        };
        if let Err(e) = appended {
            tracing::warn!(error = %e, "turn outcome not recorded");
        }
    }

    async fn fail_turn(&self, row: &SessionRow, seq: i32, code: &str) {
        let event = NewEvent {
            event_type: "error".into(),
            level: Level::Error,
            payload: json!({"code": code, "turn": {"messageSeq": seq}}),
        };
        if let Err(e) = self
            .sessions
            .append(row.organization_id, row.id, event)
            .await
        {
            tracing::warn!(error = %e, "turn failure not recorded");
        }
    }

    /// Records one model call: a usage row (and the session's totals) with its estimated cost.
    pub(super) async fn record_usage(
        &self,
        org: OrgId,
        session: Option<AgentSessionId>,
        run: Option<(crate::domain::common::ids::RunId, String)>,
        provider: Provider,
        model: &str,
        resp: &ChatResponse,
    ) -> i64 {
        let (record, cost) = self.usage_record(org, session, run, provider, model, resp);
        self.write_usage(record).await;
        cost
    }

    /// One model call's usage row, with its estimated cost.
    pub(super) fn usage_record(
        &self,
        org: OrgId,
        session: Option<AgentSessionId>,
        run: Option<(crate::domain::common::ids::RunId, String)>,
        provider: Provider,
        model: &str,
        resp: &ChatResponse,
    ) -> (UsageRecord, i64) {
        let cost = self.prices.cost_micros(provider, model, &resp.usage);
        let (run_id, node_id) = match run {
            Some((r, n)) => (Some(r), Some(n)),
            None => (None, None),
        };
        let record = UsageRecord {
            org,
            session_id: session.map(|s| s.uuid()),
            run_id,
            node_id,
            provider: provider.as_str().to_string(),
            model: model.to_string(),
            input_tokens: resp.usage.input_tokens as i64,
            output_tokens: resp.usage.output_tokens as i64,
            latency_ms: resp.latency_ms as i64,
            cost_micros: cost,
        };
        (record, cost)
    }

    /// Writes a usage row (and moves the session's totals in the same transaction).
    pub(super) async fn write_usage(&self, record: UsageRecord) {
        let org = record.org;
        let recorded = match record.session_id.map(AgentSessionId::from) {
            Some(sid) => {
                self.usage
                    .record_with(
                        record,
                        Box::new(move |c, r| {
                            Box::pin(crate::domain::sessions::store::add_usage(
                                c,
                                r.org,
                                sid,
                                r.input_tokens,
                                r.output_tokens,
                                r.cost_micros,
                            ))
                        }),
                    )
                    .await
            }
            None => self.usage.record(record).await,
        };
        if let Err(e) = recorded {
            tracing::error!(org_id = %org, error = %e, "LLM usage not recorded");
        }
    }

    pub(super) async fn budget(&self, org: OrgId) -> Result<(), String> {
        match self.usage.check_budget(org).await {
            Ok(()) => Ok(()),
            Err(UsageError::BudgetExceeded { .. }) => Err("LLM_BUDGET_EXCEEDED".into()),
            // The budget cannot be read: spending goes on rather than every turn failing.
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "token budget not checked");
                Ok(())
            }
        }
    }

    /// One shell call of a session or node on an executor, with the owner's workspace.
    pub(super) async fn shell_call(
        &self,
        mut req: DispatchRequest,
        input: &ShellInput,
        fallback: Option<Selector>,
        owner: OwnerType,
        owner_id: uuid::Uuid,
    ) -> DispatchResult {
        req.executor_selector = match &input.selector {
            Some(v) => match serde_json::from_value::<Selector>(v.clone()) {
                Ok(s) => Some(s),
                Err(_) => return DispatchResult::failed("INVALID_TOOL_INPUT"),
            },
            None => fallback,
        };
        self.gateway.invoke_tool(&req, owner, owner_id).await
    }
}

/// The provider a session's engine forces (gateway spec 4.3 step 4).
pub(super) fn engine_provider(engine: &str, provider: &str) -> Option<Provider> {
    match engine {
        "gateway.codex.v2" => Some(Provider::OpenAi),
        "gateway.claude.v2" => Some(Provider::Anthropic),
        _ => provider.parse().ok(),
    }
}

/// Earlier messages as the model reads them: what the user said and what the agent answered.
fn transcript(events: &[EventRow]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| {
            let text = |key: &str| {
                e.payload
                    .as_ref()
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            match e.event_type.as_str() {
                "user_message" => text("message").map(Message::User),
                "agent_message" => text("message").map(|t| Message::Assistant {
                    text: t,
                    tool_calls: Vec::new(),
                }),
                _ => None,
            }
        })
        .collect()
}

fn as_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

#[derive(Debug, Clone, Default)]
struct TurnUsage {
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: i64,
}

/// What a session turn's loop writes to: the session's events, its workspace, its usage.
struct SessionHost {
    brain: Arc<Brain>,
    row: SessionRow,
    turn_seq: i32,
    deltas: Arc<AtomicU32>,
    usage: Mutex<TurnUsage>,
    /// Writes and publications the next event must follow (the turn's start, streamed text).
    before: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Usage rows being written.
    writes: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The latest model call's usage row, not written yet.
    last_usage: tokio::sync::Mutex<Option<UsageRecord>>,
}

impl SessionHost {
    /// Writes the latest call's row too, and waits for every row (before a budget check).
    async fn flush_usage(&self) {
        if let Some(r) = self.last_usage.lock().await.take() {
            self.brain.write_usage(r).await;
        }
        self.written().await;
    }

    /// Waits for the usage rows still being written.
    async fn written(&self) {
        let pending: Vec<_> = std::mem::take(&mut *self.writes.lock().await);
        for task in pending {
            let _ = task.await;
        }
    }

    /// Waits for the writes and publications still in flight.
    async fn settle(&self) {
        let pending: Vec<_> = std::mem::take(&mut *self.before.lock().await);
        for task in pending {
            let _ = task.await;
        }
    }
}

impl Host for SessionHost {
    fn event(
        &self,
        event_type: &'static str,
        level: EventLevel,
        payload: Value,
    ) -> BoxFuture<'_, ()> {
        async move {
            self.settle().await;
            let level = match level {
                EventLevel::Info => Level::Info,
                EventLevel::Warn => Level::Warn,
                EventLevel::Error => Level::Error,
            };
            let ev = NewEvent {
                event_type: event_type.into(),
                level,
                payload,
            };
            if let Err(e) = self
                .brain
                .sessions
                .append(self.row.organization_id, self.row.id, ev)
                .await
            {
                tracing::warn!(error = %e, event_type, "session event not recorded");
            }
        }
        .boxed()
    }

    fn shell(
        &self,
        call_index: u32,
        input: ShellInput,
        timeout_ms: u64,
    ) -> BoxFuture<'_, DispatchResult> {
        async move {
            let session = self.row.id.uuid();
            let node_id = format!("agent:tool:{call_index}");
            let attempt = u32::try_from(self.turn_seq).unwrap_or(0).saturating_add(1);
            let req = DispatchRequest {
                organization_id: self.row.organization_id.uuid(),
                requested_by_user_id: self.row.created_by_user_id.uuid(),
                run_id: session,
                workflow_id: session,
                node_id: node_id.clone(),
                node_type: "agent.execute".into(),
                attempt_count: attempt.min(1000),
                kind: "agent.execute".into(),
                payload: tools::shell_payload(&node_id, &input, session, session, attempt),
                secret: None,
                executor_selector: None,
                timeout_ms: Some(timeout_ms.clamp(1000, 600_000)),
            };
            let fallback = self
                .row
                .executor_selector
                .as_ref()
                .and_then(|v| serde_json::from_value::<Selector>(v.clone()).ok());
            self.brain
                .shell_call(req, &input, fallback, OwnerType::Session, session)
                .await
        }
        .boxed()
    }

    fn llm_call<'a>(
        &'a self,
        provider: Provider,
        model: &'a str,
        resp: &'a ChatResponse,
    ) -> BoxFuture<'a, ()> {
        async move {
            let (record, cost) = self.brain.usage_record(
                self.row.organization_id,
                Some(self.row.id),
                None,
                provider,
                model,
                resp,
            );
            if let Ok(mut u) = self.usage.lock() {
                u.input_tokens += resp.usage.input_tokens;
                u.output_tokens += resp.usage.output_tokens;
                u.cost_micros += cost;
            }
            // The last call's row commits with the turn's answer (one commit, and a client that sees
            // the answer reads totals that include it); an earlier call's row, once another call
            // follows, is written beside the turn.
            let earlier = self.last_usage.lock().await.replace(record);
            if let Some(earlier) = earlier {
                let brain = Arc::clone(&self.brain);
                let write = tokio::spawn(async move { brain.write_usage(earlier).await });
                self.writes.lock().await.push(write);
            }
        }
        .boxed()
    }

    fn budget(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            self.flush_usage().await;
            self.brain.budget(self.row.organization_id).await
        }
        .boxed()
    }

    fn deltas(&self) -> Option<Deltas> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let sessions = Arc::clone(&self.brain.sessions);
        let (org, session, turn) = (self.row.organization_id, self.row.id, self.turn_seq);
        let index = Arc::clone(&self.deltas);
        let forwarder = tokio::spawn(async move {
            while let Some(delta) = rx.recv().await {
                let i = index.fetch_add(1, Ordering::Relaxed);
                sessions.publish_delta(org, session, turn, i, &delta).await;
            }
        });
        // Called before each model call, never while `settle` holds the list.
        if let Ok(mut before) = self.before.try_lock() {
            before.push(forwarder);
        }
        Some(tx)
    }
}
