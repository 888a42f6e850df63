//! `vespid agent`: the node agent that pairs a machine with an org and connects it to the gateway as an
//! executor (spec gateway §3). `connect` trades a pairing token for an executor token, writes the config
//! file (0600) and runs; `start` runs from the config file or from flags. The original agent's flag names
//! and config keys are kept.

pub mod config;
pub mod sandbox;
pub mod session;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::agents::identity::Pool;
use config::{AgentConfig, Capabilities, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pairing endpoint refused: its error code (`PAIRING_TOKEN_INVALID`, …) or `PAIRING_FAILED`.
    #[error("pairing failed: {0}")]
    Pairing(String),
    #[error("invalid flag: {0}")]
    Flag(String),
    #[error("{0}")]
    Protocol(String),
    /// The gateway answered 401: the executor was revoked, or the token is wrong.
    #[error(
        "EXECUTOR_TOKEN_REFUSED: the gateway refused this executor's token (revoked?); pair again"
    )]
    TokenRefused,
}

/// `vespid agent connect`: pair with a pairing token (from `POST /v1/orgs/{org}/agents/pairing-tokens`),
/// write the config file (0600) and run.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    #[arg(long)]
    pub pairing_token: String,
    /// The API's base URL.
    #[arg(long, default_value = "http://localhost:3001")]
    pub api_base: String,
    /// This executor's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated labels this agent reports about itself (else VESPID_AGENT_TAGS); routing uses
    /// the labels an admin sets.
    #[arg(long)]
    pub tags: Option<String>,
    /// Where the config is written (else VESPID_AGENT_CONFIG_PATH, else ~/.vespid/agent.json).
    #[arg(long)]
    pub config_path: Option<String>,
}

/// `vespid agent start`: run from the config file, or from flags when --executor-id, --executor-token
/// and --gateway-ws-url are all given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StartArgs {
    #[arg(long)]
    pub config_path: Option<String>,
    /// `byon` or `managed` (with flags; default managed).
    #[arg(long, value_parser = parse_pool)]
    pub pool: Option<Pool>,
    #[arg(long)]
    pub executor_id: Option<Uuid>,
    #[arg(long)]
    pub executor_token: Option<String>,
    #[arg(long)]
    pub organization_id: Option<Uuid>,
    #[arg(long)]
    pub gateway_ws_url: Option<String>,
    #[arg(long)]
    pub api_base: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated (`--tags` is the same; else VESPID_AGENT_TAGS).
    #[arg(long, alias = "tags")]
    pub labels: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub max_in_flight: Option<u32>,
}

fn parse_pool(raw: &str) -> Result<Pool, String> {
    match raw {
        "byon" => Ok(Pool::Byon),
        "managed" => Ok(Pool::Managed),
        other => Err(format!("`{other}`: expected byon or managed")),
    }
}

/// This machine's name (the default executor name).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "vespid-agent".to_string())
}

/// Labels as the gateway accepts them in a hello: at most 50, each 1..=64 characters.
fn check_labels(labels: Option<&Vec<String>>) -> Result<(), AgentError> {
    if labels
        .is_some_and(|l| l.len() > 50 || l.iter().any(|t| t.is_empty() || t.chars().count() > 64))
    {
        return Err(AgentError::Flag(
            "labels: at most 50, each of 1 to 64 characters".into(),
        ));
    }
    Ok(())
}

fn csv(raw: Option<String>) -> Option<Vec<String>> {
    let raw = raw.or_else(|| std::env::var("VESPID_AGENT_TAGS").ok())?;
    let items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!items.is_empty()).then_some(items)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairResponse {
    executor_id: Uuid,
    executor_token: String,
    organization_id: Uuid,
    gateway_ws_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairRequest<'a> {
    pairing_token: &'a str,
    name: &'a str,
    agent_version: &'a str,
    capabilities: Value,
}

/// Pairs, writes the config file, then runs until `shutdown`.
pub async fn connect(args: ConnectArgs, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let name = args.name.clone().unwrap_or_else(hostname);
    if name.is_empty() || name.chars().count() > 120 {
        return Err(AgentError::Flag("--name must be 1..120 characters".into()));
    }
    let labels = csv(args.tags.clone());
    check_labels(labels.as_ref())?;
    let capabilities = match &labels {
        Some(l) => json!({ "kinds": ["connector.action", "agent.execute"], "labels": l }),
        None => json!({ "kinds": ["connector.action", "agent.execute"] }),
    };
    let api_base = args.api_base.trim_end_matches('/').to_string();
    let url = format!("{api_base}/v1/executors/pair");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| AgentError::Pairing(format!("PAIRING_FAILED: {e}")))?;
    let response = client
        .post(&url)
        .json(&PairRequest {
            pairing_token: &args.pairing_token,
            name: &name,
            agent_version: env!("CARGO_PKG_VERSION"),
            capabilities,
        })
        .send()
        .await
        .map_err(|e| AgentError::Pairing(format!("PAIRING_FAILED: {e}")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("PAIRING_FAILED");
        return Err(AgentError::Pairing(code.to_string()));
    }
    let paired: PairResponse = serde_json::from_value(body)
        .map_err(|e| AgentError::Pairing(format!("PAIRING_FAILED: unexpected answer: {e}")))?;
    let config = AgentConfig {
        pool: Pool::Byon,
        executor_id: paired.executor_id,
        executor_token: paired.executor_token,
        organization_id: Some(paired.organization_id),
        gateway_ws_url: paired.gateway_ws_url,
        api_base_url: api_base,
        executor_name: name,
        executor_version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: Capabilities {
            kinds: vec!["connector.action".into(), "agent.execute".into()],
            labels,
            ..Capabilities::default()
        },
    };
    let path = config::path(args.config_path.as_deref());
    config.save(&path)?;
    tracing::info!(executor_id = %config.executor_id, org_id = %paired.organization_id, path = %path.display(), "paired; config written");
    session::run(&config, shutdown).await
}

/// Runs from flags (when id, token and URL are all given) or from the config file.
pub async fn start(args: StartArgs, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let config = match (
        &args.executor_id,
        &args.executor_token,
        &args.gateway_ws_url,
    ) {
        (Some(id), Some(token), Some(url)) => AgentConfig {
            pool: args.pool.unwrap_or(Pool::Managed),
            executor_id: *id,
            executor_token: token.clone(),
            organization_id: args.organization_id,
            gateway_ws_url: url.clone(),
            api_base_url: args
                .api_base
                .clone()
                .or_else(|| std::env::var("VESPID_API_BASE").ok())
                .unwrap_or_else(|| "http://localhost:3001".into()),
            executor_name: args.name.clone().unwrap_or_else(hostname),
            executor_version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: Capabilities {
                kinds: vec!["connector.action".into(), "agent.execute".into()],
                labels: csv(args.labels.clone()),
                max_in_flight: args.max_in_flight,
                ..Capabilities::default()
            },
        },
        _ => {
            let path: PathBuf = config::path(args.config_path.as_deref());
            AgentConfig::load(&path)?
        }
    };
    check_labels(Some(&config.reported_labels()))?;
    if config.pool == Pool::Byon && config.organization_id.is_none() {
        return Err(AgentError::Config(ConfigError::Invalid(
            "a byon executor needs --organization-id".into(),
        )));
    }
    session::run(&config, shutdown).await
}
