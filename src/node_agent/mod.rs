//! `vespid agent`: the node agent that pairs a machine with an org and connects it to the gateway as an
//! executor (spec gateway §3). `connect` trades a pairing token for an executor token, writes the config
//! file (0600) and runs; `start` runs from the config file or from flags. The original agent's flag names
//! and config keys are kept.

pub mod config;
pub mod dispatch;
pub mod runtime;
pub mod sandbox;
pub mod session;
#[cfg(test)]
mod testing;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::agents::identity::Pool;
use config::{AgentConfig, Capabilities, ConfigError};
use runtime::RuntimeContext;
use sandbox::provider::ProviderSandbox;
use sandbox::BackendKind;

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
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How this agent runs the work it is sent (both `connect` and `start`).
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Where shell tasks run. `host` runs them unconfined on this machine (without network when the
    /// gateway says so) and is never chosen by a workflow unless the operator chose it here.
    #[arg(long, env = "VESPID_AGENT_EXEC_BACKEND", value_enum, default_value_t = BackendKind::Docker)]
    pub exec_backend: BackendKind,
    /// The root of the per-run task directories (default ~/.vespid/workdir).
    #[arg(long, env = "VESPID_AGENT_WORKDIR_ROOT")]
    pub workdir_root: Option<PathBuf>,
    /// On SIGTERM/ctrl-c: how long running tasks may take to finish and report before the agent quits.
    #[arg(long, env = "VESPID_AGENT_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// The command behind the `provider` backend (split like a shell would, e.g.
    /// `python3 /opt/vm-provider.py`): it reads a task's context as JSON on stdin and answers with a
    /// result as JSON on stdout. Unset: tasks for the provider fail with SANDBOX_PROVIDER_NOT_CONFIGURED.
    #[arg(long, env = "VESPID_AGENT_SANDBOX_PROVIDER_COMMAND")]
    pub sandbox_provider_command: Option<String>,
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            exec_backend: BackendKind::Docker,
            workdir_root: None,
            shutdown_grace_ms: 10_000,
            sandbox_provider_command: None,
        }
    }
}

impl RuntimeArgs {
    fn context(&self) -> Result<RuntimeContext, AgentError> {
        let root = self
            .workdir_root
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(runtime::workdir::default_root);
        let provider = ProviderSandbox::from_setting(self.sandbox_provider_command.as_deref())
            .map_err(|e| AgentError::Flag(format!("--sandbox-provider-command: {e}")))?;
        let mut ctx = RuntimeContext::new(self.exec_backend, root)?;
        ctx.provider = provider;
        Ok(ctx)
    }

    fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
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
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
    let ctx = args.runtime.context()?.with_docker().await;
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
    run_then_clean_up(&config, ctx, args.runtime.shutdown_grace(), shutdown).await
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
    let ctx = args.runtime.context()?.with_docker().await;
    run_then_clean_up(&config, ctx, args.runtime.shutdown_grace(), shutdown).await
}

/// Runs the session, then removes the Docker sandbox's warm containers.
async fn run_then_clean_up(
    config: &AgentConfig,
    ctx: RuntimeContext,
    grace: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let docker = ctx.docker.clone();
    let ran = session::run(config, ctx, grace, shutdown).await;
    if let Some(d) = docker {
        d.shutdown().await;
    }
    ran
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Connect(ConnectArgs),
        Start(StartArgs),
    }

    #[test]
    fn the_exec_backend_is_docker_unless_the_operator_says_otherwise() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let Command::Start(start) = Cli::parse_from(["agent", "start"]).command else {
            panic!("not start")
        };
        assert_eq!(start.runtime.exec_backend, BackendKind::Docker);
        assert_eq!(start.runtime.shutdown_grace(), Duration::from_secs(10));
        let Command::Connect(connect) = Cli::parse_from([
            "agent",
            "connect",
            "--pairing-token",
            "p",
            "--exec-backend",
            "host",
            "--workdir-root",
            "/srv/work",
            "--shutdown-grace-ms",
            "2500",
        ])
        .command
        else {
            panic!("not connect")
        };
        assert_eq!(connect.runtime.exec_backend, BackendKind::Host);
        assert_eq!(
            connect.runtime.workdir_root,
            Some(PathBuf::from("/srv/work"))
        );
        assert_eq!(
            connect.runtime.shutdown_grace(),
            Duration::from_millis(2500)
        );
        assert!(Cli::try_parse_from(["agent", "start", "--exec-backend", "vm"]).is_err());
    }
}
