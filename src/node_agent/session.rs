//! The connection loop: connect to the gateway with the executor token, say hello at once and every
//! 15 s, answer pings, and reconnect with backoff and jitter whenever the connection ends, until shutdown.
//! A token the gateway refuses (401: revoked, or wrong) ends the agent with a clear error instead of
//! retrying forever.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::config::AgentConfig;
use super::AgentError;
use crate::domain::agents::identity::{Pool, ToolKind};
use crate::domain::gateway::protocol::{AgentFrame, HelloV2};

/// How often the hello (also the heartbeat) is resent.
pub const HELLO_EVERY: Duration = Duration::from_secs(15);

/// `min(30 s, 500 ms * 2^min(10, attempt)) + [0, 250) ms`; `attempt` is 1 for the first retry.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.min(10)).min(30_000);
    Duration::from_millis(base + rand::thread_rng().gen_range(0..250))
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
        max_in_flight: config
            .capabilities
            .max_in_flight
            .unwrap_or(10)
            .clamp(1, 200),
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
    /// Shutdown asked for: the socket was closed cleanly.
    Shutdown,
}

/// Runs until `shutdown` turns true (Ok) or the gateway refuses the token (Err).
pub async fn run(
    config: &AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let hello = hello(config)?;
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return Ok(());
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
            _ = shutdown.changed() => return Ok(()),
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
                match connected(ws, &hello, &mut shutdown).await {
                    Ended::Shutdown => return Ok(()),
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
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn connected<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    hello: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut ticker = tokio::time::interval(HELLO_EVERY);
    loop {
        tokio::select! {
            // The first tick is immediate: the hello goes out on open.
            _ = ticker.tick() => {
                if tx.send(Message::text(hello)).await.is_err() {
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
                Some(Ok(Message::Text(text))) => {
                    // Tool invocations arrive with remote execution; until then nothing else is sent.
                    tracing::debug!(bytes = text.len(), "frame from the gateway ignored");
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Lost,
            },
            _ = shutdown.changed() => {
                let _ = tx.send(Message::Close(None)).await;
                let _ = tx.close().await;
                return Ended::Shutdown;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_with_jitter() {
        let ms = |a| backoff(a).as_millis();
        assert!((1000..1250).contains(&ms(1)));
        assert!((2000..2250).contains(&ms(2)));
        assert!((30_000..30_250).contains(&ms(9)));
        assert!((30_000..30_250).contains(&ms(500)));
    }
}
