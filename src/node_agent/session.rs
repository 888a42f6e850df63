//! The connection loop: connect to the gateway with the executor token, say hello at once and every
//! 15 s, answer pings, run the invocations it sends (through the [`Dispatcher`]) and send back their
//! results, and reconnect with backoff and jitter whenever the connection ends. Results that could not
//! be sent wait for the next connection. A token the gateway refuses (401: revoked, or wrong) ends the
//! agent with a clear error instead of retrying forever.
//!
//! Shutdown drains: new invocations are refused, running ones get a grace period to finish and report
//! (reconnecting if need be), then whatever is left is abandoned and the socket closed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::config::AgentConfig;
use super::dispatch::Dispatcher;
use super::runtime::RuntimeContext;
use super::AgentError;
use crate::domain::agents::identity::{Pool, ToolKind};
use crate::domain::gateway::protocol::{AgentFrame, HelloV2, ToolResultV2};

/// How often the hello (also the heartbeat) is resent.
pub const HELLO_EVERY: Duration = Duration::from_secs(15);

/// `min(30 s, 500 ms * 2^min(10, attempt)) + [0, 250) ms`; `attempt` is 1 for the first retry.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.min(10)).min(30_000);
    Duration::from_millis(base + rand::thread_rng().gen_range(0..250))
}

/// `capabilities.maxInFlight` (default 10): what the hello reports and how many calls run at once.
fn max_in_flight(config: &AgentConfig) -> u32 {
    config
        .capabilities
        .max_in_flight
        .unwrap_or(10)
        .clamp(1, 200)
}

fn hello(config: &AgentConfig) -> Result<String, AgentError> {
    let frame = AgentFrame::Hello(HelloV2 {
        executor_version: config.executor_version.clone(),
        executor_id: config.executor_id,
        pool: config.pool,
        organization_id: match config.pool {
            Pool::Byon => config.organization_id,
            Pool::Managed => None,
        },
        name: Some(config.executor_name.clone()),
        labels: config.reported_labels(),
        max_in_flight: max_in_flight(config),
        kinds: ToolKind::ALL.to_vec(),
        resource_hints: None,
    });
    serde_json::to_string(&frame).map_err(|e| AgentError::Protocol(e.to_string()))
}

/// How one connection ended.
enum Ended {
    /// Closed or failed: reconnect.
    Lost,
    /// Closed by the gateway for policy (revoked, or a hello it refuses): reconnecting cannot help.
    Refused(String),
    /// Shutdown, drained (or out of time): the socket was closed cleanly.
    Shutdown,
}

/// Whether the agent is stopping, and until when it may drain.
struct Stop {
    signal: watch::Receiver<bool>,
    grace: Duration,
    deadline: Option<Instant>,
}

impl Stop {
    /// Resolves when the state must change: on the shutdown signal while running (a signal that can
    /// no longer come, its sender gone, counts as one), at the end of the grace while draining.
    async fn next(&mut self) {
        match self.deadline {
            None => {
                let _ = self.signal.wait_for(|stop| *stop).await;
            }
            Some(deadline) => tokio::time::sleep_until(deadline).await,
        }
    }

    fn requested(&self) -> bool {
        *self.signal.borrow()
    }

    fn draining(&self) -> bool {
        self.deadline.is_some()
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Starts draining (once): no new calls, a deadline for the running ones.
    fn begin(&mut self, work: &mut Dispatcher) {
        if self.deadline.is_none() {
            tracing::info!(
                in_flight = work.in_flight(),
                grace_ms = self.grace.as_millis(),
                "stopping: finishing the calls in flight"
            );
            self.deadline = Some(Instant::now() + self.grace);
            work.stop_accepting();
        }
    }

    /// `next` resolved: begin draining, or say the grace is over.
    fn advance(&mut self, work: &mut Dispatcher) -> bool {
        if self.draining() {
            return true;
        }
        self.begin(work);
        false
    }
}

/// The end of a drain: whatever has not finished or not been sent is given up (and logged).
async fn abandon(work: &mut Dispatcher) {
    let lost = work.abandon().await;
    if lost > 0 {
        tracing::warn!(
            unanswered = lost,
            "stopped with tool calls unanswered; the gateway will time them out"
        );
    }
}

/// Runs until shutdown has drained (Ok) or the gateway refuses the token (Err).
pub async fn run(
    config: &AgentConfig,
    ctx: RuntimeContext,
    grace: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let hello = hello(config)?;
    tracing::info!(
        exec_backend = ?ctx.default_backend,
        workdir_root = %ctx.workdir_root.display(),
        workspace_cache_root = %ctx.workspaces.config.cache_root.display(),
        max_in_flight = max_in_flight(config),
        "agent runtime ready"
    );
    let mut work = Dispatcher::new(Arc::new(ctx), max_in_flight(config) as usize);
    let mut stop = Stop {
        signal: shutdown,
        grace,
        deadline: None,
    };
    let mut attempt: u32 = 0;
    loop {
        if stop.requested() {
            stop.begin(&mut work);
        }
        if stop.draining() {
            work.collect_finished();
            if work.is_idle() {
                return Ok(());
            }
            if stop.out_of_time() {
                abandon(&mut work).await;
                return Ok(());
            }
        }
        let mut request = config
            .gateway_ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| AgentError::Protocol(format!("gatewayWsUrl: {e}")))?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {}", config.executor_token)).map_err(|_| {
                AgentError::Protocol("executor token is not a valid header value".into())
            })?;
        request.headers_mut().insert("authorization", bearer);
        let connecting = tokio::select! {
            c = tokio_tungstenite::connect_async(request) => c,
            _ = stop.next() => {
                stop.advance(&mut work);
                continue;
            }
        };
        match connecting {
            Ok((ws, _)) => {
                attempt = 0;
                tracing::info!(
                    event = "executor_connected",
                    pool = ?config.pool,
                    org_id = ?config.organization_id,
                    executor_id = %config.executor_id,
                    "connected to the gateway"
                );
                match connected(ws, &hello, &mut stop, &mut work).await {
                    Ended::Shutdown => {
                        abandon(&mut work).await;
                        return Ok(());
                    }
                    Ended::Refused(reason) if reason == "EXECUTOR_REVOKED" => {
                        return Err(AgentError::TokenRefused)
                    }
                    Ended::Refused(reason) => {
                        return Err(AgentError::Protocol(format!(
                            "the gateway refused this agent ({reason}): check the config's executorId, pool and organizationId"
                        )))
                    }
                    Ended::Lost => {}
                }
                tracing::warn!(executor_id = %config.executor_id, "connection to the gateway lost; reconnecting");
            }
            Err(WsError::Http(resp)) if resp.status().as_u16() == 401 => {
                return Err(AgentError::TokenRefused);
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %config.gateway_ws_url, "cannot reach the gateway; retrying");
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt)) => {}
            _ = stop.next() => {
                stop.advance(&mut work);
            }
        }
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Sends one result; on failure it goes back to the front of the queue for the next connection.
async fn send_result<S>(tx: &mut Sink<S>, work: &mut Dispatcher, result: ToolResultV2) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = AgentFrame::ToolResult(result);
    let text = match serde_json::to_string(&frame) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "a result could not be serialized; dropped");
            return true;
        }
    };
    if tx.send(Message::text(text)).await.is_err() {
        if let AgentFrame::ToolResult(result) = frame {
            work.requeue(result);
        }
        return false;
    }
    true
}

async fn close<S>(tx: &mut Sink<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tx.send(Message::Close(None)).await;
    let _ = tx.close().await;
}

async fn connected<S>(
    ws: WebSocketStream<S>,
    hello: &str,
    stop: &mut Stop,
    work: &mut Dispatcher,
) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    // The hello first, then what finished while we were away, then the live loop.
    if tx.send(Message::text(hello)).await.is_err() {
        return Ended::Lost;
    }
    work.collect_finished();
    while let Some(result) = work.pop_unsent() {
        if !send_result(&mut tx, work, result).await {
            return Ended::Lost;
        }
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + HELLO_EVERY, HELLO_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if stop.draining() && work.is_idle() {
            close(&mut tx).await;
            return Ended::Shutdown;
        }
        tokio::select! {
            _ = ticker.tick() => {
                if tx.send(Message::text(hello)).await.is_err() {
                    return Ended::Lost;
                }
            }
            result = work.next_result() => {
                if !send_result(&mut tx, work, result).await {
                    return Ended::Lost;
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Ping(bytes))) => {
                    if tx.send(Message::Pong(bytes)).await.is_err() {
                        return Ended::Lost;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let policy = frame.as_ref().is_some_and(|f| f.code == CloseCode::Policy);
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    tracing::warn!(reason = %reason, "the gateway closed the connection");
                    return if policy { Ended::Refused(reason) } else { Ended::Lost };
                }
                Some(Ok(Message::Text(text))) => work.on_text(text.as_str()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Lost,
            },
            _ = stop.next() => {
                if stop.advance(work) {
                    close(&mut tx).await;
                    return Ended::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
