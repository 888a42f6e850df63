//! Metrics of the infrastructure every role shares: the PostgreSQL pool (read at scrape time) and the
//! Redis clients (connection errors counted as they happen, the connection state read at scrape time).

use std::sync::Arc;

use fred::interfaces::{ClientLike, EventInterface};
use futures_util::future::{ready, BoxFuture, FutureExt};
use prometheus::{IntGauge, IntGaugeVec};

use super::{Metrics, MetricsError, Probe};
use crate::platform::db::PgPool;
use crate::platform::redis::Redis;

struct PoolProbe {
    pool: PgPool,
    connections: IntGaugeVec,
    max: IntGauge,
    waiting: IntGauge,
}

impl Probe for PoolProbe {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        let s = self.pool.status();
        let idle = s.available.min(s.size);
        self.connections
            .with_label_values(&["idle"])
            .set(gauge(idle));
        self.connections
            .with_label_values(&["in_use"])
            .set(gauge(s.size - idle));
        self.max.set(gauge(s.max_size));
        self.waiting.set(gauge(s.waiting));
        ready(()).boxed()
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `vespid_db_pool_connections{state}`, `vespid_db_pool_max_connections`, `vespid_db_pool_waiting`.
pub fn watch_pool(metrics: &Metrics, pool: &PgPool) -> Result<(), MetricsError> {
    metrics.probe(Arc::new(PoolProbe {
        pool: pool.clone(),
        connections: metrics.gauge_vec(
            "db_pool_connections",
            "Connections of the PostgreSQL pool, idle or in use.",
            &["state"],
        )?,
        max: metrics.gauge(
            "db_pool_max_connections",
            "The PostgreSQL pool's size limit.",
        )?,
        waiting: metrics.gauge(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection.",
        )?,
    }));
    Ok(())
}

struct RedisProbe {
    redis: Redis,
    connected: IntGauge,
}

impl Probe for RedisProbe {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        self.connected
            .set(i64::from(self.redis.client.is_connected()));
        ready(()).boxed()
    }
}

/// `vespid_redis_errors_total{client}` (connection and protocol errors the clients report, including the
/// failed attempts while Redis is down) and `vespid_redis_connected`.
pub fn watch_redis(metrics: &Metrics, redis: &Redis) -> Result<(), MetricsError> {
    let errors = metrics.counter_vec(
        "redis_errors_total",
        "Redis connection and protocol errors, by client (commands, subscriber).",
        &["client"],
    )?;
    for (name, mut rx) in [
        ("commands", redis.client.error_rx()),
        ("subscriber", redis.subscriber.error_rx()),
    ] {
        let counter = errors.with_label_values(&[name]);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) => counter.inc(),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => counter.inc_by(n),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    metrics.probe(Arc::new(RedisProbe {
        redis: redis.clone(),
        connected: metrics.gauge(
            "redis_connected",
            "1 while the shared Redis client is connected.",
        )?,
    }));
    Ok(())
}
