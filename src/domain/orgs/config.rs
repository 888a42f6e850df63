//! The `orgs` section of the configuration.

use serde::Deserialize;

use crate::domain::common::access::Enforcement;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgsConfig {
    pub context_enforcement: Enforcement,
    pub personal_trial_credits: i64,
}
