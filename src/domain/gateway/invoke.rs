//! Dispatch processing (gateway spec 2.8, 2.9): select and reserve an executor, send it the tool call
//! (directly when it is connected here, over its instance's channel otherwise), wait for its reply,
//! release the reservation, and for an asynchronous dispatch store the result and push it to the
//! continuation so the run resumes at once.
//!
//! A result is accepted only from the executor the call was sent to (a pending record in Redis, so the
//! check holds whichever instance the executor reconnects to); an executor that drops with calls in
//! flight has a grace period to come back before they fail with `AGENT_DISCONNECTED`.

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{KeysInterface, ListInterface, LuaInterface};
use fred::types::{Expiration, SetOptions};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::dispatch::{Accepted, DispatchRequest, DispatchResult, RemoteApply};
use super::protocol::{
    GatewayFrame, InvokeToolV2, ResultStatus, ToolPolicy, ToolResultV2, WorkspaceAccess,
    WorkspaceRef, WorkspaceUpload,
};
use super::select::{self, RouteRecord};
use super::workspace::{self, Lease, OwnerType, WorkspaceError};
use super::{
    results, Connection, Forward, Gateway, GatewayError, Outbound, Reply, RESULT_GRACE,
    TAKE_PENDING,
};
use crate::domain::agents::identity::ToolKind;
use crate::domain::agents::presence;
use crate::domain::common::ids::{ExecutorId, OrgId};

/// How often a waiter re-reads its reply key (in case its wake-up was missed).
const REPLY_POLL: Duration = Duration::from_millis(1000);

impl Gateway {
    /// `dispatch-async`: answers at once; the dispatch runs in the background and its result is stored
    /// and pushed to the continuation. A request already answered is not run again (its result is
    /// pushed again, so a run that missed it resumes); one already running is not sent twice.
    pub async fn dispatch_async(
        self: &Arc<Self>,
        req: DispatchRequest,
    ) -> Result<Accepted, GatewayError> {
        let request_id = req.request_id();
        if let Some(result) = self.stored_result(&request_id).await? {
            self.push_continuation(&req, &result).await;
            return Ok(Accepted {
                request_id,
                dispatched: false,
                cached: Some(true),
                inflight: None,
            });
        }
        let marker_ms = req.timeout_ms() + RESULT_GRACE.as_millis() as u64 + 30_000;
        let fresh: Option<String> = self
            .redis
            .client
            .set(
                self.redis.key(&results::inflight_key(&request_id)),
                self.edge_id.as_str(),
                Some(Expiration::PX(marker_ms as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        if fresh.is_none() {
            return Ok(Accepted {
                request_id,
                dispatched: false,
                cached: None,
                inflight: Some(true),
            });
        }
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            let result = gateway.run_dispatch(&req).await;
            gateway.store_result(&req.request_id(), &result).await;
            gateway.push_continuation(&req, &result).await;
            let _: Result<i64, _> = gateway
                .redis
                .client
                .del(gateway.redis.key(&results::inflight_key(&req.request_id())))
                .await;
        });
        Ok(Accepted {
            request_id,
            dispatched: true,
            cached: None,
            inflight: None,
        })
    }

    /// `dispatch` (synchronous): the stored result, or the dispatch run now and its result stored.
    pub async fn dispatch_sync(
        self: &Arc<Self>,
        req: DispatchRequest,
    ) -> Result<DispatchResult, GatewayError> {
        let request_id = req.request_id();
        if let Some(result) = self.stored_result(&request_id).await? {
            return Ok(result);
        }
        let result = self.run_dispatch(&req).await;
        self.store_result(&request_id, &result).await;
        Ok(result)
    }

    /// A dispatch's stored result (`results/:requestId`).
    pub async fn stored_result(
        &self,
        request_id: &str,
    ) -> Result<Option<DispatchResult>, GatewayError> {
        let raw: Option<String> = self
            .redis
            .client
            .get(self.redis.key(&results::result_key(request_id)))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn store_result(&self, request_id: &str, result: &DispatchResult) {
        let Ok(text) = serde_json::to_string(result) else {
            return;
        };
        let stored: Result<(), _> = self
            .redis
            .client
            .set(
                self.redis.key(&results::result_key(request_id)),
                text,
                Some(Expiration::EX(self.config.results_ttl_secs as i64)),
                None,
                false,
            )
            .await;
        if let Err(e) = stored {
            tracing::error!(request_id, error = %e, "dispatch result not stored; the run waits for its timeout");
        }
    }

    async fn push_continuation(&self, req: &DispatchRequest, result: &DispatchResult) {
        let message = RemoteApply {
            kind: "remote.apply".into(),
            organization_id: req.organization_id,
            workflow_id: req.workflow_id,
            run_id: req.run_id,
            request_id: req.request_id(),
            attempt_count: req.attempt_count,
            result: result.clone(),
        };
        let Ok(text) = serde_json::to_string(&message) else {
            return;
        };
        let pushed: Result<i64, _> = self
            .redis
            .client
            .lpush(self.redis.key(results::CONTINUATIONS), text)
            .await;
        if let Err(e) = pushed {
            // The continuation's sweep finds the stored result instead.
            tracing::warn!(request_id = %req.request_id(), error = %e, "continuation push failed");
        }
    }

    /// Runs one dispatch to its result: executor kinds on an executor, `agent.run` in the brain.
    async fn run_dispatch(&self, req: &DispatchRequest) -> DispatchResult {
        let span = tracing::info_span!("dispatch", request_id = %req.request_id(), org_id = %req.organization_id);
        self.dispatch_in_span(req).instrument(span).await
    }

    async fn dispatch_in_span(&self, req: &DispatchRequest) -> DispatchResult {
        if req.kind == "agent.run" {
            return match self.agent_runner.get() {
                Some(brain) => brain.run_agent(req).await,
                None => DispatchResult::failed("BRAIN_NOT_AVAILABLE"),
            };
        }
        self.invoke_tool(req, OwnerType::WorkflowRun, req.run_id)
            .await
    }

    /// Runs one tool call on an executor to its result, with the files of `owner`'s workspace (a run's,
    /// or a session's): the brain's tool calls come through here, with the same selection, quotas,
    /// workspace lock and result checks as a workflow's remote node.
    pub async fn invoke_tool(
        &self,
        req: &DispatchRequest,
        owner: OwnerType,
        owner_id: uuid::Uuid,
    ) -> DispatchResult {
        let Some(kind) = req.tool_kind() else {
            return DispatchResult::failed("UNSUPPORTED_KIND");
        };
        let org = OrgId::from(req.organization_id);
        let selector = req.executor_selector.clone().unwrap_or_default();
        let org_max = self.org_limit(org).await;
        let timeout_ms = req.timeout_ms();
        let reserve_ttl = (timeout_ms + RESULT_GRACE.as_millis() as u64 + 60_000).max(300_000);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        // The run's files: locked for the call (with room for snapshot transfer), released on every
        // path below. Taken while the executor is chosen.
        let lock_secs = (timeout_ms / 1000 + 1 + RESULT_GRACE.as_secs() + 30) as i64;
        let (reserved, lease) = tokio::join!(
            self.reserve(org, kind, &selector, org_max, reserve_ttl, deadline),
            workspace::acquire(&self.db, org, owner, owner_id, lock_secs),
        );
        let ((reserved, waited), lease) = match (reserved, lease) {
            (Ok(r), Ok(l)) => (r, l),
            (reserved, lease) => {
                if let Ok((r, _)) = &reserved {
                    self.release_slot(r).await;
                }
                if let Ok(l) = &lease {
                    workspace::release(&self.db, l).await;
                }
                return DispatchResult::failed(match (reserved, lease) {
                    (Err(no), _) => no.code(),
                    (_, Err(WorkspaceError::Locked)) => "WORKSPACE_LOCKED",
                    (_, Err(e)) => {
                        tracing::warn!(error = %e, "workspace unavailable");
                        "WORKSPACE_UNAVAILABLE"
                    }
                    (Ok(_), Ok(_)) => "NODE_EXECUTION_FAILED",
                });
            }
        };
        // Time spent waiting for a slot counts against the call's timeout.
        let timeout_ms = if waited {
            (deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_millis() as u64)
                .max(1000)
        } else {
            timeout_ms
        };
        let (result, snapshot) = self
            .invoke_on(&reserved.route, req, kind, timeout_ms, &lease)
            .await;
        let (result, ()) = tokio::join!(
            self.settle_workspace(&lease, snapshot, result),
            self.release_slot(&reserved),
        );
        result
    }

    /// Reserves an executor (and says whether it had to wait); while every matching one is at its `maxInFlight` (or the org at its
    /// quota), the call waits for a slot (woken when one is released here, else by a short backoff)
    /// rather than failing, until its deadline. No matching executor at all fails at once.
    async fn reserve(
        &self,
        org: OrgId,
        kind: ToolKind,
        selector: &super::dispatch::Selector,
        org_max: u32,
        reserve_ttl: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(select::Reserved, bool), select::NoExecutor> {
        let mut backoff = Duration::from_millis(5);
        let mut waited = false;
        loop {
            match select::select(&self.redis, org, kind, selector, org_max, reserve_ttl).await {
                Ok(r) => return Ok((r, waited)),
                Err(select::NoExecutor::NoneAvailable) => {
                    return Err(select::NoExecutor::NoneAvailable)
                }
                Err(full) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(full);
                    }
                    let freed = self.slot_freed.notified();
                    tokio::select! {
                        _ = freed => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    waited = true;
                    backoff = (backoff * 3 / 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    async fn release_slot(&self, r: &select::Reserved) {
        select::release(&self.redis, r).await;
        self.slot_freed.notify_waiters();
    }

    /// Commits the version the executor uploaded (compare-and-set) or releases the lock.
    async fn settle_workspace(
        &self,
        lease: &Lease,
        snapshot: Option<Value>,
        result: DispatchResult,
    ) -> DispatchResult {
        let planned = lease.next_key();
        // The executor's word on the version is checked: only the planned key of the next version, and
        // only once the object is really there (an executor cannot point the workspace elsewhere).
        let uploaded = match &snapshot {
            Some(w) => {
                w.get("version").and_then(Value::as_i64) == Some(lease.version + 1)
                    && w.get("objectKey")
                        .and_then(Value::as_str)
                        .is_none_or(|k| k == planned)
                    && self.objects.exists(&planned).await
            }
            None => false,
        };
        if !uploaded {
            workspace::release(&self.db, lease).await;
            return result;
        }
        let etag = snapshot
            .as_ref()
            .and_then(|w| w.get("etag"))
            .and_then(Value::as_str);
        match workspace::commit(&self.db, lease, &planned, etag).await {
            Ok(true) => result,
            Ok(false) => DispatchResult::failed("WORKSPACE_VERSION_CONFLICT"),
            Err(e) => {
                tracing::warn!(error = %e, "workspace version not committed");
                workspace::release(&self.db, lease).await;
                result
            }
        }
    }

    /// The org's in-flight limit: its settings' `execution.quotas.maxExecutorInFlight`, else the
    /// configured default (also when the settings cannot be read).
    async fn org_limit(&self, org: OrgId) -> u32 {
        let configured = self.config.org_max_in_flight.max(1);
        match self.orgs.stored_settings(org).await {
            Ok(settings) => settings
                .pointer("/execution/quotas/maxExecutorInFlight")
                .and_then(Value::as_f64)
                .filter(|n| *n >= 1.0)
                .map_or(configured, |n| n.floor().min(f64::from(u32::MAX)) as u32),
            Err(_) => configured,
        }
    }

    /// Sends one tool call to `route`'s executor and waits for its reply.
    async fn invoke_on(
        &self,
        route: &RouteRecord,
        req: &DispatchRequest,
        kind: ToolKind,
        timeout_ms: u64,
        lease: &Lease,
    ) -> (DispatchResult, Option<Value>) {
        let invoke_id = format!(
            "{}:{}",
            req.run_id,
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let next_key = lease.next_key();
        let download_url = if lease.object_key.is_empty() {
            None
        } else {
            match self.objects.presign_get(&lease.object_key).await {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::warn!(error = %e, "workspace download URL not signed");
                    return (DispatchResult::failed("WORKSPACE_STORE_UNAVAILABLE"), None);
                }
            }
        };
        let upload_url = match self.objects.presign_put(&next_key).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "workspace upload URL not signed");
                return (DispatchResult::failed("WORKSPACE_STORE_UNAVAILABLE"), None);
            }
        };
        let frame = GatewayFrame::Invoke(InvokeToolV2 {
            request_id: invoke_id.clone(),
            organization_id: req.organization_id,
            user_id: req.requested_by_user_id,
            kind,
            payload: req.payload.clone(),
            // A shell task never carries a secret (spec 2.11).
            secret: match kind {
                ToolKind::ConnectorAction => req.secret.clone(),
                ToolKind::AgentExecute => None,
            },
            tool_policy: ToolPolicy::default_deny(timeout_ms, self.config.tool_output_max_chars),
            workspace: Some(WorkspaceRef {
                workspace_id: lease.id,
                version: lease.version,
                object_key: lease.object_key.clone(),
                etag: lease.etag.clone(),
            }),
            workspace_access: Some(WorkspaceAccess {
                download_url,
                upload: WorkspaceUpload {
                    url: upload_url,
                    object_key: next_key,
                    version: lease.version + 1,
                },
            }),
            idempotency_key: None,
        });
        let Ok(text) = serde_json::to_string(&frame) else {
            return (DispatchResult::failed("NODE_EXECUTION_FAILED"), None);
        };
        let wait = Duration::from_millis(timeout_ms) + RESULT_GRACE;
        let (tx, mut rx) = oneshot::channel();
        self.waiters.insert(invoke_id.clone(), tx);
        let recorded: Result<(), _> = self
            .redis
            .client
            .set(
                self.redis.key(&results::pending_key(&invoke_id)),
                route.executor_id.to_string(),
                Some(Expiration::PX(wait.as_millis() as i64 + 5_000)),
                None,
                false,
            )
            .await;
        if recorded.is_err() {
            self.waiters.remove(&invoke_id);
            return (DispatchResult::failed("GATEWAY_UNAVAILABLE"), None);
        }
        let sent = if route.edge_id == self.edge_id {
            self.deliver_local(route.executor_id, &invoke_id, text)
        } else {
            let forward = Forward {
                executor_id: route.executor_id,
                invoke_id: invoke_id.clone(),
                frame: text,
            };
            match serde_json::to_string(&forward) {
                Ok(msg) => self
                    .redis
                    .publish(&results::edge_channel(&route.edge_id), msg)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        };
        if !sent {
            self.waiters.remove(&invoke_id);
            return (DispatchResult::failed("NO_AGENT_AVAILABLE"), None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let reply = loop {
            tokio::select! {
                woke = &mut rx => match woke {
                    Ok(Some(text)) => break serde_json::from_str(&text).ok(),
                    _ => break self.read_reply(&invoke_id).await,
                },
                _ = tokio::time::sleep(REPLY_POLL) => {
                    if let Some(r) = self.read_reply(&invoke_id).await {
                        break Some(r);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break self.read_reply(&invoke_id).await,
            }
        };
        self.waiters.remove(&invoke_id);
        match reply {
            // Anything but `succeeded` is a failure (the Improve of spec 2.8 step 8).
            Some(r) if r.status == "succeeded" => (
                DispatchResult {
                    status: ResultStatus::Succeeded,
                    output: r.output,
                    error: None,
                },
                r.workspace,
            ),
            Some(r) => (
                DispatchResult {
                    status: ResultStatus::Failed,
                    output: r.output,
                    error: Some(
                        r.error
                            .filter(|e| !e.is_empty())
                            .unwrap_or_else(|| "NODE_EXECUTION_FAILED".into()),
                    ),
                },
                r.workspace,
            ),
            None => (DispatchResult::failed("NODE_EXECUTION_TIMEOUT"), None),
        }
    }

    async fn read_reply(&self, invoke_id: &str) -> Option<Reply> {
        let raw: Option<String> = self
            .redis
            .client
            .get(self.redis.key(&results::reply_key(invoke_id)))
            .await
            .ok()?;
        raw.and_then(|r| serde_json::from_str(&r).ok())
    }

    /// Sends a tool call to an executor connected to this instance; `false` if it is not.
    pub(super) fn deliver_local(
        &self,
        executor: ExecutorId,
        invoke_id: &str,
        frame: String,
    ) -> bool {
        let Some(live) = self.live.get(&executor) else {
            return false;
        };
        self.pending.insert(invoke_id.to_string(), executor);
        if live.tx.send(Outbound::Frame(frame)).is_err() {
            self.pending.remove(invoke_id);
            return false;
        }
        true
    }

    /// A tool call forwarded by another instance for an executor connected here.
    pub(super) async fn on_forward(&self, f: Forward) {
        if !self.deliver_local(f.executor_id, &f.invoke_id, f.frame) {
            self.reply(
                &f.invoke_id,
                r#"{"status":"failed","error":"NO_AGENT_AVAILABLE"}"#,
                false,
            )
            .await;
        }
    }

    /// A `tool_result_v2`: accepted only from the executor its call was sent to, then stored for the
    /// waiter (wherever it is) and announced.
    pub(super) async fn on_result(&self, conn: &Connection, result: ToolResultV2) {
        let invoke_id = result.request_id.clone();
        let accepted: Result<i64, _> = self
            .redis
            .client
            .eval(
                TAKE_PENDING,
                vec![self.redis.key(&results::pending_key(&invoke_id))],
                vec![conn.executor.to_string()],
            )
            .await;
        if !matches!(accepted, Ok(1)) {
            tracing::warn!(executor_id = %conn.executor, request_id = %invoke_id, "result for a tool call this executor was not sent (or already answered); ignored");
            return;
        }
        self.pending.remove(&invoke_id);
        let Ok(text) = serde_json::to_string(&result) else {
            return;
        };
        self.reply(&invoke_id, &text, false).await;
    }

    /// Stores a reply and wakes its waiter (here, or on every instance). `only_if_absent` keeps a real
    /// result that beat a synthetic failure.
    async fn reply(&self, invoke_id: &str, json: &str, only_if_absent: bool) {
        let stored: Result<Option<String>, _> = self
            .redis
            .client
            .set(
                self.redis.key(&results::reply_key(invoke_id)),
                json,
                Some(Expiration::EX(self.config.results_ttl_secs as i64)),
                only_if_absent.then_some(SetOptions::NX),
                false,
            )
            .await;
        let written = match stored {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::warn!(request_id = invoke_id, error = %e, "reply not stored; its waiter times out");
                return;
            }
        };
        if let Some((_, tx)) = self.waiters.remove(invoke_id) {
            // Not written (a real reply was there first): the waiter reads that one.
            let _ = tx.send(written.then(|| json.to_string()));
        } else {
            let _ = self
                .redis
                .publish(results::REPLIES_CHANNEL, invoke_id.to_string())
                .await;
        }
    }

    /// A reply landed somewhere: wake its waiter if it is here.
    pub(super) fn wake(&self, invoke_id: &str) {
        if let Some((_, tx)) = self.waiters.remove(invoke_id) {
            let _ = tx.send(None);
        }
    }

    /// After an executor's connection ends: if it has not come back (here or on another instance)
    /// within the grace period, its calls in flight fail with `AGENT_DISCONNECTED`.
    pub(super) fn fail_pending_later(self: &Arc<Self>, executor: ExecutorId) {
        if !self.pending.iter().any(|p| *p.value() == executor) {
            return;
        }
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(gateway.config.disconnect_grace_ms)).await;
            if gateway.live.contains_key(&executor) {
                return;
            }
            let back: Result<i64, _> = gateway
                .redis
                .client
                .exists(gateway.redis.key(&presence::route_key(executor)))
                .await;
            if matches!(back, Ok(1)) {
                return;
            }
            let lost: Vec<String> = gateway
                .pending
                .iter()
                .filter(|p| *p.value() == executor)
                .map(|p| p.key().clone())
                .collect();
            for invoke_id in lost {
                gateway.pending.remove(&invoke_id);
                let _: Result<i64, _> = gateway
                    .redis
                    .client
                    .del(gateway.redis.key(&results::pending_key(&invoke_id)))
                    .await;
                tracing::warn!(executor_id = %executor, request_id = %invoke_id, "executor gone with a tool call in flight");
                gateway
                    .reply(
                        &invoke_id,
                        r#"{"status":"failed","error":"AGENT_DISCONNECTED"}"#,
                        true,
                    )
                    .await;
            }
        });
    }
}
