//! The `sessions` section of the configuration: the control-client sockets.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// How often a connected control client's membership (and API key) is checked again; the socket is
    /// closed when it no longer holds.
    pub client_recheck_ms: u64,
}
