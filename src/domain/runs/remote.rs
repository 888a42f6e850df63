//! The worker's side of remote execution (workflows spec 6.1): what it sends the gateway when a node
//! blocks, and the ways of sending it. In one process with the gateway the call stays in memory; a worker
//! on its own machine posts to the gateway's `/internal/v1/dispatch-async` with the service token.
//!
//! The run's block is recorded before the dispatch is sent (see the engine), so a crash in between
//! leaves a blocked run without a dispatch, which the continuation's sweep notices and sends again.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::domain::common::ids::{OrgId, RunId, UserId, WorkflowId};
use crate::platform::secret::Secret;

/// The dispatch body (gateway spec 2.2), as the worker sends it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchBody {
    pub organization_id: OrgId,
    pub requested_by_user_id: UserId,
    pub run_id: RunId,
    pub workflow_id: WorkflowId,
    pub node_id: String,
    pub node_type: String,
    pub attempt_count: i32,
    pub kind: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_selector: Option<Value>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_secret"
    )]
    pub secret: Option<Secret>,
    pub timeout_ms: u64,
}

impl DispatchBody {
    /// `<runId>:<nodeId>:<attempt>`: the same node of the same attempt is the same request.
    pub fn request_id(&self) -> String {
        request_id(self.run_id, &self.node_id, self.attempt_count)
    }
}

pub fn request_id(run: RunId, node: &str, attempt: i32) -> String {
    format!("{run}:{node}:{attempt}")
}

/// The secret is written only into the dispatch itself (it never reaches a log: `Secret`'s `Debug`
/// hides it).
fn expose_secret<S: Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) => s.serialize_str(v.expose()),
        None => s.serialize_none(),
    }
}

/// Why a dispatch was not accepted (workflows spec 6.1): each is a run-level error (retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("GATEWAY_NOT_CONFIGURED")]
    NotConfigured,
    #[error("GATEWAY_UNAVAILABLE")]
    Unavailable,
    #[error("NO_AGENT_AVAILABLE")]
    NoAgent,
    #[error("GATEWAY_DISPATCH_FAILED")]
    Failed,
    #[error("GATEWAY_RESPONSE_INVALID")]
    Invalid,
}

impl DispatchError {
    pub fn code(&self) -> String {
        self.to_string()
    }
}

/// Sends a dispatch to the gateway; `Ok` once the gateway has taken it (or already has its result).
pub trait RemoteDispatch: Send + Sync {
    fn dispatch<'a>(&'a self, body: &'a DispatchBody) -> BoxFuture<'a, Result<(), DispatchError>>;
}

/// No gateway in this process and none configured: every dispatch fails clearly.
pub struct NoGateway;

impl RemoteDispatch for NoGateway {
    fn dispatch<'a>(&'a self, _: &'a DispatchBody) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async { Err(DispatchError::NotConfigured) })
    }
}

/// A gateway elsewhere, over HTTP (`GATEWAY_HTTP_URL` + `GATEWAY_SERVICE_TOKEN`).
pub struct HttpDispatch {
    client: reqwest::Client,
    url: String,
    token: Secret,
}

impl HttpDispatch {
    pub fn new(base_url: &str, token: Secret) -> reqwest::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .build()?,
            url: format!(
                "{}/internal/v1/dispatch-async",
                base_url.trim_end_matches('/')
            ),
            token,
        })
    }
}

#[derive(serde::Deserialize)]
struct Accepted {
    #[serde(rename = "requestId")]
    request_id: String,
    #[allow(dead_code)]
    dispatched: bool,
}

impl RemoteDispatch for HttpDispatch {
    fn dispatch<'a>(&'a self, body: &'a DispatchBody) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(&self.url)
                .header("x-gateway-token", self.token.expose())
                .json(body)
                .send()
                .await
                .map_err(|_| DispatchError::Unavailable)?;
            match response.status().as_u16() {
                200 | 201 => {}
                503 => return Err(DispatchError::NoAgent),
                _ => return Err(DispatchError::Failed),
            }
            let accepted: Accepted = response.json().await.map_err(|_| DispatchError::Invalid)?;
            if accepted.request_id != body.request_id() {
                return Err(DispatchError::Invalid);
            }
            Ok(())
        })
    }
}
