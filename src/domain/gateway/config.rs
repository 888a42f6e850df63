//! The `gateway` section of the configuration.

use serde::Deserialize;

use crate::platform::secret::Secret;

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
    /// The shared secret of `/internal/v1/*`.
    pub service_token: Secret,
    pub results_ttl_secs: u64,
    pub org_max_in_flight: u32,
    pub tool_output_max_chars: u64,
    pub disconnect_grace_ms: u64,
}

/// The development default of `service_token`: production refuses it.
pub const DEV_SERVICE_TOKEN: &str = "dev-gateway-token";

/// The `workspace` section: where workspace snapshots live when no S3-compatible store is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// The directory of snapshot objects (the single-node default store).
    pub dir: String,
    /// Where executors reach the gateway over HTTP for snapshot URLs ("" = derived from
    /// `agents.gateway_ws_url`).
    pub public_url: String,
    /// Lifetime of a signed snapshot URL.
    pub presign_expires_secs: u64,
    /// The largest snapshot accepted.
    pub max_bytes: u64,
    /// An S3-compatible store instead of the directory (several gateway machines need one).
    pub s3_bucket: String,
    pub s3_region: String,
    /// A custom endpoint (MinIO, R2, moto, …), addressed path-style; "" = AWS.
    pub s3_endpoint: String,
    /// "" = the usual AWS credential chain (AWS_ACCESS_KEY_ID, …).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
}
