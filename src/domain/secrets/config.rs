//! The `secrets` section of the configuration: the active KEK and decrypt-only previous ones.

use serde::Deserialize;

use crate::platform::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    pub kek_id: String,
    pub kek_base64: Secret,
    pub kek_previous: Secret,
    /// Development only: where a generated KEK is kept when none is configured (`none` turns it off).
    pub dev_kek_file: String,
}
