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
}
