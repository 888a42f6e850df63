//! The `gateway` section of the configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway's WebSocket edge listens (its own port: only `/ws/*` need exposing).
    pub host: String,
    pub port: u16,
    /// This instance's stable id on the bus ("" = random per process).
    pub edge_id: String,
    /// TTL of an executor's route record: an instance that dies without cleaning up is forgotten
    /// after this long.
    pub executor_stale_ms: u64,
    /// A connected executor is pinged this often and dropped after two unanswered pings.
    pub ping_interval_ms: u64,
    /// Largest frame accepted from an agent.
    pub max_frame_bytes: usize,
}
