//! The gateway's metrics, read at scrape time: executors connected to this instance and the tool calls
//! in flight to them.

use std::sync::Arc;

use futures_util::future::{ready, BoxFuture, FutureExt};
use prometheus::IntGauge;

use super::Gateway;
use crate::platform::metrics::{Metrics, MetricsError, Probe};

struct GatewayProbe {
    gateway: Arc<Gateway>,
    connected: IntGauge,
    in_flight: IntGauge,
}

impl Probe for GatewayProbe {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        self.connected
            .set(i64::try_from(self.gateway.connected()).unwrap_or(i64::MAX));
        self.in_flight
            .set(i64::try_from(self.gateway.in_flight()).unwrap_or(i64::MAX));
        ready(()).boxed()
    }
}

/// `vespid_gateway_executors_connected`, `vespid_gateway_tasks_in_flight`.
pub fn register(metrics: &Metrics, gateway: Arc<Gateway>) -> Result<(), MetricsError> {
    metrics.probe(Arc::new(GatewayProbe {
        gateway,
        connected: metrics.gauge(
            "gateway_executors_connected",
            "Executors (node agents) holding a WebSocket to this gateway instance.",
        )?,
        in_flight: metrics.gauge(
            "gateway_tasks_in_flight",
            "Tool calls sent to executors connected here and not yet answered.",
        )?,
    }));
    Ok(())
}
