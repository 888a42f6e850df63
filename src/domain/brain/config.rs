//! The `brain` section of the configuration: how session turns are scheduled and how agents call tools.

use serde::Deserialize;

use super::agent_loop::ToolCalling;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrainConfig {
    /// Session turns and `agent.run` loops this process runs at once (more wait for a slot).
    pub max_concurrent_turns: usize,
    /// A session's turn lock: held by the instance running its turns, refreshed at a third of this, so
    /// a dead instance's sessions are taken over this long after it died.
    pub turn_lock_ttl_ms: u64,
    /// How often sessions with unanswered messages and no live turn are looked for (crash recovery).
    pub sweep_interval_ms: u64,
    /// How models call tools unless a session says otherwise.
    pub tool_calling: ToolCalling,
    /// Hosts, IPs or CIDRs a provider credential's own `baseUrl` may point at beyond public addresses
    /// (e.g. a local Ollama: `127.0.0.1`). Private and loopback targets are refused otherwise.
    pub base_url_allow_hosts: String,
    /// Earlier messages of a session given to the model with each turn.
    pub history_messages: i64,
}
