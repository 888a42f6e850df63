//! The brain (gateway spec 4.3, 5; workflows spec 5.6): runs session turns and `agent.run` nodes with one
//! agent loop ([`agent_loop`]), calling models through the inference client and running the tools they
//! ask for on executors through the gateway (its selection, quotas and workspaces). It lives in the
//! gateway role; provider credentials are decrypted here and go nowhere but to the provider.
//!
//! Session turns: a `session_send` appends the user's message and wakes the brain ([`turns`]); one
//! instance at a time holds a session's turn lock and answers its unanswered messages in order, so a
//! message sent while a turn runs waits for it instead of being dropped, and a dead instance's messages
//! are answered by another once its lock expires (the sweep).

pub mod agent_loop;
mod agent_node;
pub mod config;
mod credentials;
pub mod json_text;
pub mod tools;
mod turns;

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::gateway::Gateway;
use crate::domain::inference::pricing::PriceTable;
use crate::domain::inference::{Inference, InferenceConfig};
use crate::domain::orgs::Orgs;
use crate::domain::runs::executors::ssrf::AllowList;
use crate::domain::runs::Runs;
use crate::domain::secrets::Secrets;
use crate::domain::sessions::Sessions;
use crate::domain::usage::UsageService;
use crate::platform::metrics::{Metrics, MetricsError};
use crate::platform::redis::Redis;
use config::BrainConfig;

/// What the brain is built from.
pub struct BrainParts {
    pub config: BrainConfig,
    pub inference: Arc<dyn Inference>,
    pub inference_config: InferenceConfig,
    pub sessions: Arc<Sessions>,
    pub usage: Arc<UsageService>,
    pub gateway: Arc<Gateway>,
    pub secrets: Arc<Secrets>,
    pub orgs: Arc<Orgs>,
    pub runs: Arc<Runs>,
    pub redis: Redis,
    pub metrics: Arc<Metrics>,
}

pub struct Brain {
    config: BrainConfig,
    inference: Arc<dyn Inference>,
    inference_config: InferenceConfig,
    sessions: Arc<Sessions>,
    usage: Arc<UsageService>,
    gateway: Arc<Gateway>,
    secrets: Arc<Secrets>,
    orgs: Arc<Orgs>,
    runs: Arc<Runs>,
    redis: Redis,
    base_url_allow: AllowList,
    /// The estimated cost of a call (the operator's `inference.prices` over the built-in list).
    prices: PriceTable,
    /// Turns and agent loops running in this process.
    slots: Arc<Semaphore>,
    /// Sessions whose turn driver runs in this process (one per session).
    driving: dashmap::DashSet<crate::domain::common::ids::AgentSessionId>,
    /// A unique id of this process, the value of the turn locks it holds.
    instance: String,
    /// Itself, for the drivers a wake starts.
    me: std::sync::Weak<Brain>,
    metrics: turns::TurnMetrics,
}

impl Brain {
    pub fn new(parts: BrainParts) -> Result<Arc<Self>, MetricsError> {
        let slots = Arc::new(Semaphore::new(parts.config.max_concurrent_turns.max(1)));
        let metrics = turns::TurnMetrics::register(&parts.metrics)?;
        Ok(Arc::new_cyclic(|me| Self {
            base_url_allow: AllowList::parse(&parts.config.base_url_allow_hosts),
            prices: PriceTable::with_overrides(&parts.inference_config.prices).unwrap_or_default(),
            config: parts.config,
            inference: parts.inference,
            inference_config: parts.inference_config,
            sessions: parts.sessions,
            usage: parts.usage,
            gateway: parts.gateway,
            secrets: parts.secrets,
            orgs: parts.orgs,
            runs: parts.runs,
            redis: parts.redis,
            slots,
            driving: dashmap::DashSet::new(),
            instance: format!("brain-{}", uuid::Uuid::new_v4().simple()),
            me: me.clone(),
            metrics,
        }))
    }

    /// Answers unanswered messages left without a running turn, every `sweep_interval_ms`, until the
    /// process stops (the gateway role runs it).
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let brain = Arc::downgrade(self);
        let every = std::time::Duration::from_millis(self.config.sweep_interval_ms.max(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(b) = brain.upgrade() else { return };
                b.sweep().await;
            }
        });
    }
}
