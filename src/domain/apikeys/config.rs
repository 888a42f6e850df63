//! The `api_keys` section of the configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// How often each instance writes the last-used times of the keys it saw (one batch per org):
    /// a key's `last_used_at` is written at most once per interval per instance, never per request.
    pub last_used_flush_secs: u64,
}
