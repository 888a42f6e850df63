//! The agent's work in flight, independent of any one connection: invocations run as tasks, at most
//! `maxInFlight` at once (more wait their turn), and their results wait here until a connection takes
//! them. The dispatcher outlives each connection, so a result that finishes while the agent is
//! reconnecting, or whose send failed, is delivered after the next hello instead of being lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio::task::{Id, JoinError, JoinSet};

use crate::domain::gateway::protocol::{parse_gateway_frame, GatewayFrame, ToolResultV2};
use crate::node_agent::runtime::failure::{failed, Failure};
use crate::node_agent::runtime::{execute, RuntimeContext};

pub struct Dispatcher {
    ctx: Arc<RuntimeContext>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<ToolResultV2>,
    /// Which request each task answers, so even a task that panicked gets a result.
    requests: HashMap<Id, String>,
    /// Finished, not yet sent, oldest first.
    unsent: VecDeque<ToolResultV2>,
    /// Turned true when the agent starts to stop: calls still waiting for a slot are not started.
    stopping: watch::Sender<bool>,
}

impl Dispatcher {
    pub fn new(ctx: Arc<RuntimeContext>, max_in_flight: usize) -> Self {
        Self {
            ctx,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            tasks: JoinSet::new(),
            requests: HashMap::new(),
            unsent: VecDeque::new(),
            stopping: watch::Sender::new(false),
        }
    }

    /// One text frame from the gateway: an invocation starts (or waits for a slot); an invocation that
    /// breaks the schema but names its request is answered `INVALID_INVOKE` at once; anything else is
    /// ignored. While stopping, invocations are answered `AGENT_SHUTTING_DOWN` instead of run.
    pub fn on_text(&mut self, text: &str) {
        let Some(GatewayFrame::Invoke(invoke)) = parse_gateway_frame(text) else {
            if let Some(request_id) = invalid_invoke_request_id(text) {
                tracing::warn!(request_id = %request_id, "invalid invocation from the gateway");
                self.unsent
                    .push_back(failed(request_id, Failure::InvalidInvoke.into()));
            } else {
                tracing::debug!(bytes = text.len(), "frame from the gateway ignored");
            }
            return;
        };
        if *self.stopping.borrow() {
            self.unsent
                .push_back(failed(invoke.request_id, Failure::ShuttingDown.into()));
            return;
        }
        let request_id = invoke.request_id.clone();
        let ctx = Arc::clone(&self.ctx);
        let permits = Arc::clone(&self.permits);
        let mut stopping = self.stopping.subscribe();
        let task = self.tasks.spawn(async move {
            let permit = tokio::select! {
                // Stopping wins a tie: a call that has not started must not start during shutdown.
                biased;
                _ = stopping.wait_for(|s| *s) => None,
                permit = permits.acquire_owned() => permit.ok(),
            };
            match permit {
                Some(_held) => execute(invoke, &ctx).await,
                None => failed(invoke.request_id, Failure::ShuttingDown.into()),
            }
        });
        self.requests.insert(task.id(), request_id);
    }

    /// Calls running or waiting for a slot.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Nothing running and nothing left to send.
    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty() && self.unsent.is_empty()
    }

    /// From now on new invocations are refused and waiting ones are not started.
    pub fn stop_accepting(&mut self) {
        self.stopping.send_replace(true);
    }

    /// Moves every result already finished to the unsent queue (to send them before anything else).
    pub fn collect_finished(&mut self) {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            let result = self.result_of(joined);
            self.unsent.push_back(result);
        }
    }

    /// The next result to send: an unsent one, else the next call to finish. Pending forever when
    /// there is nothing at all (so it can sit in a `select!`).
    pub async fn next_result(&mut self) -> ToolResultV2 {
        if let Some(result) = self.unsent.pop_front() {
            return result;
        }
        match self.tasks.join_next_with_id().await {
            Some(joined) => self.result_of(joined),
            None => std::future::pending().await,
        }
    }

    /// A result whose send failed: first in line for the next connection (the gateway stores results
    /// by request id, so sending one twice is harmless).
    pub fn requeue(&mut self, result: ToolResultV2) {
        self.unsent.push_front(result);
    }

    /// The oldest result not yet sent, if any.
    pub fn pop_unsent(&mut self) -> Option<ToolResultV2> {
        self.unsent.pop_front()
    }

    /// Ends every call still running and waits until they are gone (dropping a host task kills its
    /// process group); returns how many calls, running or finished but unsent, go unanswered.
    pub async fn abandon(&mut self) -> usize {
        let lost = self.tasks.len() + self.unsent.len();
        self.tasks.shutdown().await;
        self.requests.clear();
        self.unsent.clear();
        lost
    }

    fn result_of(&mut self, joined: Result<(Id, ToolResultV2), JoinError>) -> ToolResultV2 {
        match joined {
            Ok((id, result)) => {
                self.requests.remove(&id);
                result
            }
            Err(e) => {
                let request_id = self.requests.remove(&e.id()).unwrap_or_default();
                tracing::error!(request_id = %request_id, error = %e, "a tool call crashed");
                failed(
                    request_id,
                    Failure::ExecutionFailedWith("the agent's task crashed".into()).into(),
                )
            }
        }
    }
}

/// The request id of a frame that claims to be an invocation but did not parse as one.
fn invalid_invoke_request_id(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    if value.get("type").and_then(Value::as_str) != Some("invoke_tool_v2") {
        return None;
    }
    value
        .get("requestId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
