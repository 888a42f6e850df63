//! The `workflows` section of the configuration: the run queue, the worker and node executors.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    pub queue_name: String,
    pub concurrency: usize,
    pub claim_batch: usize,
    pub retry_attempts: i32,
    pub retry_backoff_ms: u64,
    pub event_payload_max_chars: usize,
    pub lease_secs: u64,
    pub reaper_interval_ms: u64,
    pub stale_queued_secs: u64,
    pub enqueue_timeout_ms: u64,
    pub http_timeout_ms: u64,
    pub http_max_response_bytes: usize,
    pub http_allow_hosts: String,
    pub github_api_base_url: String,
    pub dsl_max_nodes: usize,
    pub dsl_max_edges: usize,
    pub dsl_max_bytes: usize,
    pub run_max_events: usize,
    pub run_output_max_bytes: usize,
    /// How long a run waits on a remote node that sets no timeout of its own.
    pub node_exec_timeout_ms: u64,
    /// The continuation's sweep of blocked runs (lost pushes, timeouts, unsent dispatches).
    pub continuation_poll_ms: u64,
    /// A blocked run whose dispatch the gateway does not know after this long is dispatched again.
    pub redispatch_after_ms: u64,
    /// The gateway a worker without one in its own process dispatches to ("" = none).
    pub gateway_http_url: String,
    /// Live event streams open at once per process.
    pub events_stream_max: usize,
    /// Live event streams open at once per org (per process).
    pub events_stream_max_per_org: usize,
    /// How often a live stream re-reads without an announcement (a lost Redis message costs this much).
    pub events_stream_poll_ms: u64,
}
