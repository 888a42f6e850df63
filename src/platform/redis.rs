//! Redis through fred: one shared client with reconnects and bounded command timeouts, plus a subscriber for
//! cross-instance fan-out (cache invalidation now, run queue wake-ups later).

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy,
};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid REDIS_URL: {0}")]
    Url(String),
    #[error("redis: {0}")]
    Command(#[from] fred::error::Error),
}

#[derive(Clone)]
pub struct Redis {
    pub client: Client,
    pub subscriber: SubscriberClient,
    prefix: String,
}

fn builder(url: &str, timeout: Duration) -> Result<fred::types::Builder, RedisError> {
    let config = FredConfig::from_url(url).map_err(|e| RedisError::Url(e.to_string()))?;
    let mut builder = fred::types::Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .set_performance_config(PerformanceConfig {
            default_command_timeout: timeout,
            ..Default::default()
        })
        .set_connection_config(ConnectionConfig {
            connection_timeout: timeout,
            internal_command_timeout: timeout,
            // Fail fast while disconnected instead of queueing commands until Redis is back.
            max_command_attempts: 1,
            // A command sent while the previous one's ACK is delayed must not wait for it (Nagle):
            // publications carry live updates.
            tcp: fred::types::config::TcpConfig {
                nodelay: Some(true),
                ..Default::default()
            },
            ..Default::default()
        });
    Ok(builder)
}

/// One attempt in a fixed window, counted ahead. KEYS: the counter. ARGV: the limit, the window in
/// seconds. Returns 0, or (refused, and not counted) the seconds until the window ends. The counter
/// always gets its TTL.
const WINDOW_ATTEMPT: &str = r#"
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0
"#;

impl Redis {
    /// Counts one attempt against `limit` per `window_secs` on the counter `key` (already namespaced),
    /// in one script that also decides, so a parallel burst cannot all pass a check made while the count
    /// was low. `Some(seconds)` when over the limit (that attempt is not counted).
    pub async fn window_attempt(
        &self,
        key: String,
        limit: u64,
        window_secs: u64,
    ) -> Result<Option<u64>, RedisError> {
        let args = vec![limit.to_string(), window_secs.max(1).to_string()];
        let wait: i64 = self.client.eval(WINDOW_ATTEMPT, vec![key], args).await?;
        Ok((wait > 0).then(|| u64::try_from(wait).unwrap_or(1)))
    }

    /// Connects in the background (reconnecting forever); waits up to `timeout` for the first connection
    /// so that start-up can report Redis, but never fails start-up because Redis is down.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, RedisError> {
        let b = builder(url, timeout)?;
        let client = b.build()?;
        let subscriber = b.build_subscriber_client()?;
        client.connect();
        subscriber.connect();
        // Re-subscribes after reconnects; the task lives as long as the client.
        drop(subscriber.manage_subscriptions());
        let wait = tokio::time::timeout(timeout, client.wait_for_connect()).await;
        if !matches!(wait, Ok(Ok(()))) {
            tracing::warn!(
                "redis is not reachable yet; continuing and reconnecting in the background"
            );
        }
        Ok(Self {
            client,
            subscriber,
            prefix: prefix.to_string(),
        })
    }

    /// A key or channel name inside this install's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Publishes `message` on `channel` (inside this install's namespace) to every instance.
    pub async fn publish(&self, channel: &str, message: String) -> Result<(), RedisError> {
        self.client
            .publish::<i64, _, _>(self.key(channel), message)
            .await?;
        Ok(())
    }

    /// Delivers every message published on `channel` (by any instance) to `on_message`, and calls
    /// `on_reconnect` after the subscriber reconnects: messages sent meanwhile may have been missed. The
    /// listeners live as long as the client.
    pub fn listen(
        &self,
        channel: &str,
        on_message: impl Fn(&str) + Send + 'static,
        on_reconnect: impl Fn() + Send + Sync + 'static,
    ) {
        let channel = self.key(channel);
        let mut rx = self.subscriber.message_rx();
        let wanted = channel.clone();
        let on_reconnect = std::sync::Arc::new(on_reconnect);
        let on_lag = on_reconnect.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        if &*msg.channel != wanted.as_str() {
                            continue;
                        }
                        if let Some(text) = msg.value.as_string() {
                            on_message(&text);
                        }
                    }
                    // Messages arrived faster than they were read and some were dropped: the listener
                    // goes on, and is told it may have missed some (as after a reconnect).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(channel = %wanted, missed = n, "subscriber lagged; messages missed");
                        on_lag();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        let mut reconnects = self.subscriber.reconnect_rx();
        tokio::spawn(async move {
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
                reconnects.recv().await
            {
                on_reconnect();
            }
        });
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            if let Err(e) = subscriber.subscribe(channel.clone()).await {
                tracing::warn!(error = %e, channel = %channel, "cannot subscribe yet; will retry on reconnect");
            }
        });
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let _: String = self.client.ping(None).await?;
        Ok(())
    }

    pub async fn quit(&self) {
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }
}
