//! The `agents` section of the configuration: pairing and what a paired agent is told.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Where a freshly paired agent connects (`gatewayWsUrl` of the pair response).
    pub gateway_ws_url: String,
    /// Lifetime of a pairing token.
    pub pairing_token_ttl_secs: u64,
    /// Failed pairings allowed per client address within the window (0 = no limit); valid pairings
    /// never count.
    pub pair_max_failures: u32,
    pub pair_failure_window_secs: u64,
}
