//! The `triggers` section of the configuration: the cron scheduler and the webhook intake.

use serde::Deserialize;

/// What the scheduler does with ticks it missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Fire the latest missed tick once (the default): a daily report still runs after an outage.
    Latest,
    /// Skip missed ticks: only ticks that come due while a scheduler runs fire.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// How often the scheduler looks for due ticks (and notices new or changed schedules).
    pub cron_poll_ms: u64,
    pub cron_catch_up: CatchUp,
    /// With `latest`: a missed tick older than this is not fired (0 = no limit).
    pub cron_catch_up_max_age_secs: u64,
    /// The largest webhook body accepted (413 beyond).
    pub webhook_max_bytes: usize,
    /// How far a signature's timestamp may be from our clock.
    pub webhook_signature_tolerance_secs: u64,
    /// Deliveries per workflow per minute (429 with Retry-After beyond; 0 = unlimited).
    pub webhook_rate_per_minute: u64,
}
