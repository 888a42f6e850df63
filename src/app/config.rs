//! Typed configuration: built-in defaults (`config/default.toml`) < optional file < environment variables,
//! validated once at start-up with errors that name the offending key.

use serde::Deserialize;
use toml::Value;

pub use crate::domain::agents::config::AgentsConfig;
pub use crate::domain::apikeys::config::ApiKeysConfig;
pub use crate::domain::auth::config::{AuthConfig, CookieSecure};
pub use crate::domain::auth::config::{GithubConfig, GoogleConfig, OAuthConfig};
pub use crate::domain::brain::config::BrainConfig;
pub use crate::domain::common::access::Enforcement;
pub use crate::domain::gateway::config::{GatewayConfig, WorkspaceConfig};
pub use crate::domain::inference::config::InferenceConfig;
pub use crate::domain::orgs::config::OrgsConfig;
pub use crate::domain::runs::config::WorkflowsConfig;
pub use crate::domain::secrets::config::SecretsConfig;
pub use crate::domain::sessions::config::SessionsConfig;
pub use crate::domain::triggers::config::TriggersConfig;

/// The audit log's retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Rows older than this many days are deleted (0 = kept forever).
    pub retention_days: u64,
}
pub use crate::platform::secret::Secret;

const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub web: WebConfig,
    pub auth: AuthConfig,
    pub orgs: OrgsConfig,
    pub oauth: OAuthConfig,
    pub secrets: SecretsConfig,
    pub workflows: WorkflowsConfig,
    pub triggers: TriggersConfig,
    pub sessions: SessionsConfig,
    pub brain: BrainConfig,
    pub audit: AuditConfig,
    pub agents: AgentsConfig,
    pub api_keys: ApiKeysConfig,
    pub gateway: GatewayConfig,
    pub workspace: WorkspaceConfig,
    pub inference: InferenceConfig,
    pub metrics: MetricsConfig,
    pub enterprise: EnterpriseConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub env: RunEnv,
    pub log_level: String,
    pub log_format: LogFormat,
    pub workers: usize,
    pub shutdown_grace_secs: u64,
    pub body_read_timeout_ms: u64,
    /// Reverse proxies (CIDRs, comma-separated) whose forwarding header is believed.
    pub trusted_proxies: String,
    /// The header those proxies write: `x-forwarded-for` or `forwarded`.
    pub trusted_proxy_header: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunEnv {
    Development,
    Test,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub migrate_url: Secret,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub base_url: String,
}

/// `/metrics`: who may scrape it and where (see config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub token: Secret,
    pub addr: String,
    pub queue_top_orgs: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    pub provider_module: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}` (env {env}): {message}")]
    Env {
        key: &'static str,
        env: &'static str,
        message: String,
    },
    #[error("config: {0}")]
    Shape(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Environment variables and the config key each one sets. The first name wins when several are set.
const ENV_KEYS: &[(&str, &str)] = &[
    ("API_HOST", "server.host"),
    ("API_PORT", "server.port"),
    ("VESPID_ENV", "server.env"),
    ("NODE_ENV", "server.env"),
    ("API_LOG_LEVEL", "server.log_level"),
    ("LOG_FORMAT", "server.log_format"),
    ("HTTP_WORKERS", "server.workers"),
    ("SHUTDOWN_GRACE_SEC", "server.shutdown_grace_secs"),
    ("BODY_READ_TIMEOUT_MS", "server.body_read_timeout_ms"),
    ("TRUSTED_PROXIES", "server.trusted_proxies"),
    ("TRUSTED_PROXY_HEADER", "server.trusted_proxy_header"),
    ("DATABASE_URL", "database.url"),
    ("DATABASE_MIGRATE_URL", "database.migrate_url"),
    ("DATABASE_POOL_SIZE", "database.pool_size"),
    ("DATABASE_CONNECT_TIMEOUT_MS", "database.connect_timeout_ms"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_KEY_PREFIX", "redis.key_prefix"),
    ("REDIS_TIMEOUT_MS", "redis.timeout_ms"),
    ("WEB_BASE_URL", "web.base_url"),
    ("AUTH_TOKEN_SECRET", "auth.token_secret"),
    ("AUTH_TOKEN_SECRET_PREVIOUS", "auth.token_secret_previous"),
    ("REFRESH_TOKEN_SECRET", "auth.refresh_secret"),
    ("OAUTH_STATE_SECRET", "auth.oauth_state_secret"),
    ("ACCESS_TOKEN_TTL_SEC", "auth.access_ttl_secs"),
    ("SESSION_TTL_SEC", "auth.session_ttl_secs"),
    ("SESSION_ABSOLUTE_TTL_SEC", "auth.session_absolute_ttl_secs"),
    ("OAUTH_CONTEXT_TTL_SEC", "auth.oauth_context_ttl_secs"),
    ("SESSION_COOKIE_NAME", "auth.session_cookie_name"),
    ("COOKIE_SECURE", "auth.cookie_secure"),
    ("AUTH_SESSION_CACHE_TTL_SEC", "auth.session_cache_ttl_secs"),
    ("LOGIN_MAX_FAILURES", "auth.login_max_failures"),
    ("LOGIN_FAILURE_WINDOW_SEC", "auth.login_failure_window_secs"),
    (
        "LOGIN_MAX_FAILURES_PER_IP",
        "auth.login_max_failures_per_ip",
    ),
    (
        "LOGIN_ACCOUNT_MAX_FAILURES",
        "auth.login_account_max_failures",
    ),
    ("LOGIN_ACCOUNT_WINDOW_SEC", "auth.login_account_window_secs"),
    (
        "LOGIN_TRUSTED_CLIENT_DAYS",
        "auth.login_trusted_client_days",
    ),
    ("REFRESH_REUSE_GRACE_SEC", "auth.refresh_reuse_grace_secs"),
    ("ORG_CONTEXT_ENFORCEMENT", "orgs.context_enforcement"),
    ("PERSONAL_TRIAL_CREDITS", "orgs.personal_trial_credits"),
    ("GOOGLE_CLIENT_ID", "oauth.google.client_id"),
    ("GOOGLE_CLIENT_SECRET", "oauth.google.client_secret"),
    ("GOOGLE_REDIRECT_URI", "oauth.google.redirect_uri"),
    ("GOOGLE_ISSUER_URL", "oauth.google.issuer_url"),
    ("GITHUB_CLIENT_ID", "oauth.github.client_id"),
    ("GITHUB_CLIENT_SECRET", "oauth.github.client_secret"),
    ("GITHUB_REDIRECT_URI", "oauth.github.redirect_uri"),
    ("GITHUB_AUTHORIZE_URL", "oauth.github.authorize_url"),
    ("GITHUB_TOKEN_URL", "oauth.github.token_url"),
    ("GITHUB_API_URL", "oauth.github.api_url"),
    ("SECRETS_KEK_ID", "secrets.kek_id"),
    ("SECRETS_KEK_BASE64", "secrets.kek_base64"),
    ("SECRETS_KEK_PREVIOUS", "secrets.kek_previous"),
    ("SECRETS_DEV_KEK_FILE", "secrets.dev_kek_file"),
    ("WORKFLOW_QUEUE_NAME", "workflows.queue_name"),
    ("WORKFLOW_QUEUE_CONCURRENCY", "workflows.concurrency"),
    ("WORKFLOW_CLAIM_BATCH", "workflows.claim_batch"),
    ("WORKFLOW_RETRY_ATTEMPTS", "workflows.retry_attempts"),
    ("WORKFLOW_RETRY_BACKOFF_MS", "workflows.retry_backoff_ms"),
    (
        "WORKFLOW_EVENT_PAYLOAD_MAX_CHARS",
        "workflows.event_payload_max_chars",
    ),
    ("WORKFLOW_LEASE_SEC", "workflows.lease_secs"),
    (
        "WORKFLOW_REAPER_INTERVAL_MS",
        "workflows.reaper_interval_ms",
    ),
    ("WORKFLOW_STALE_QUEUED_SEC", "workflows.stale_queued_secs"),
    (
        "WORKFLOW_ENQUEUE_TIMEOUT_MS",
        "workflows.enqueue_timeout_ms",
    ),
    ("HTTP_NODE_TIMEOUT_MS", "workflows.http_timeout_ms"),
    (
        "HTTP_NODE_MAX_RESPONSE_BYTES",
        "workflows.http_max_response_bytes",
    ),
    ("HTTP_NODE_ALLOW_HOSTS", "workflows.http_allow_hosts"),
    ("GITHUB_API_BASE_URL", "workflows.github_api_base_url"),
    ("WORKFLOW_MAX_NODES", "workflows.dsl_max_nodes"),
    ("WORKFLOW_MAX_EDGES", "workflows.dsl_max_edges"),
    ("WORKFLOW_MAX_BYTES", "workflows.dsl_max_bytes"),
    ("WORKFLOW_RUN_MAX_EVENTS", "workflows.run_max_events"),
    (
        "WORKFLOW_RUN_OUTPUT_MAX_BYTES",
        "workflows.run_output_max_bytes",
    ),
    ("GATEWAY_WS_URL", "agents.gateway_ws_url"),
    ("GATEWAY_HOST", "gateway.host"),
    ("GATEWAY_PORT", "gateway.port"),
    ("GATEWAY_EDGE_ID", "gateway.edge_id"),
    ("GATEWAY_AGENT_STALE_MS", "gateway.executor_stale_ms"),
    ("GATEWAY_PING_INTERVAL_MS", "gateway.ping_interval_ms"),
    ("GATEWAY_MAX_FRAME_BYTES", "gateway.max_frame_bytes"),
    ("GATEWAY_SERVICE_TOKEN", "gateway.service_token"),
    ("GATEWAY_RESULTS_TTL_SEC", "gateway.results_ttl_secs"),
    ("GATEWAY_ORG_MAX_INFLIGHT", "gateway.org_max_in_flight"),
    (
        "GATEWAY_TOOL_OUTPUT_MAX_CHARS",
        "gateway.tool_output_max_chars",
    ),
    ("GATEWAY_DISCONNECT_GRACE_MS", "gateway.disconnect_grace_ms"),
    ("NODE_EXEC_TIMEOUT_MS", "workflows.node_exec_timeout_ms"),
    (
        "WORKFLOW_CONTINUATION_POLL_MS",
        "workflows.continuation_poll_ms",
    ),
    (
        "WORKFLOW_REDISPATCH_AFTER_MS",
        "workflows.redispatch_after_ms",
    ),
    ("GATEWAY_HTTP_URL", "workflows.gateway_http_url"),
    ("TRIGGERS_CRON_POLL_MS", "triggers.cron_poll_ms"),
    ("SESSIONS_CLIENT_RECHECK_MS", "sessions.client_recheck_ms"),
    ("BRAIN_MAX_CONCURRENT_TURNS", "brain.max_concurrent_turns"),
    ("BRAIN_TURN_LOCK_TTL_MS", "brain.turn_lock_ttl_ms"),
    ("BRAIN_SWEEP_INTERVAL_MS", "brain.sweep_interval_ms"),
    ("BRAIN_TOOL_CALLING", "brain.tool_calling"),
    ("BRAIN_BASE_URL_ALLOW_HOSTS", "brain.base_url_allow_hosts"),
    ("BRAIN_HISTORY_MESSAGES", "brain.history_messages"),
    ("AUDIT_RETENTION_DAYS", "audit.retention_days"),
    ("TRIGGERS_CRON_CATCH_UP", "triggers.cron_catch_up"),
    (
        "TRIGGERS_CRON_CATCH_UP_MAX_AGE_SEC",
        "triggers.cron_catch_up_max_age_secs",
    ),
    ("WEBHOOK_MAX_BYTES", "triggers.webhook_max_bytes"),
    (
        "WEBHOOK_SIGNATURE_TOLERANCE_SEC",
        "triggers.webhook_signature_tolerance_secs",
    ),
    (
        "WEBHOOK_RATE_PER_MINUTE",
        "triggers.webhook_rate_per_minute",
    ),
    ("WORKSPACE_DIR", "workspace.dir"),
    ("WORKSPACE_PUBLIC_URL", "workspace.public_url"),
    (
        "WORKSPACE_PRESIGN_EXPIRES_SEC",
        "workspace.presign_expires_secs",
    ),
    ("WORKSPACE_MAX_BYTES", "workspace.max_bytes"),
    ("WORKSPACE_S3_BUCKET", "workspace.s3_bucket"),
    ("WORKSPACE_S3_REGION", "workspace.s3_region"),
    ("WORKSPACE_S3_ENDPOINT", "workspace.s3_endpoint"),
    ("WORKSPACE_S3_ACCESS_KEY_ID", "workspace.s3_access_key_id"),
    (
        "WORKSPACE_S3_SECRET_ACCESS_KEY",
        "workspace.s3_secret_access_key",
    ),
    (
        "EXECUTOR_PAIRING_TOKEN_TTL_SEC",
        "agents.pairing_token_ttl_secs",
    ),
    ("EXECUTOR_PAIR_MAX_FAILURES", "agents.pair_max_failures"),
    (
        "EXECUTOR_PAIR_FAILURE_WINDOW_SEC",
        "agents.pair_failure_window_secs",
    ),
    (
        "API_KEY_LAST_USED_FLUSH_SEC",
        "api_keys.last_used_flush_secs",
    ),
    (
        "VESPID_ENTERPRISE_PROVIDER_MODULE",
        "enterprise.provider_module",
    ),
    ("INFERENCE_OPENAI_BASE_URL", "inference.openai_base_url"),
    (
        "INFERENCE_ANTHROPIC_BASE_URL",
        "inference.anthropic_base_url",
    ),
    ("INFERENCE_GEMINI_BASE_URL", "inference.gemini_base_url"),
    ("INFERENCE_TIMEOUT_MS", "inference.timeout_ms"),
    (
        "INFERENCE_CONNECT_TIMEOUT_MS",
        "inference.connect_timeout_ms",
    ),
    ("INFERENCE_MAX_ATTEMPTS", "inference.max_attempts"),
    ("INFERENCE_PRICES", "inference.prices"),
    ("OPENAI_API_KEY", "inference.openai_api_key"),
    ("ANTHROPIC_API_KEY", "inference.anthropic_api_key"),
    ("GEMINI_API_KEY", "inference.gemini_api_key"),
    ("METRICS_TOKEN", "metrics.token"),
    ("METRICS_ADDR", "metrics.addr"),
    ("METRICS_QUEUE_TOP_ORGS", "metrics.queue_top_orgs"),
    ("RUN_EVENTS_STREAM_MAX", "workflows.events_stream_max"),
    (
        "RUN_EVENTS_STREAM_MAX_PER_ORG",
        "workflows.events_stream_max_per_org",
    ),
    (
        "RUN_EVENTS_STREAM_POLL_MS",
        "workflows.events_stream_poll_ms",
    ),
];

/// Known default secrets that production refuses.
const KNOWN_DEFAULT_SECRETS: &[&str] = &["dev-auth-secret", "dev-oauth-state-secret", "change-me"];

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&str>) -> Result<Self, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// Same as [`Config::load`] with an explicit environment, so tests need not touch the process env.
    pub fn load_with(
        file: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut root: Value = toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Parse {
            path: "<built-in defaults>".into(),
            message: e.to_string(),
        })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_string(),
                source,
            })?;
            let overlay: Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_string(),
                message: e.to_string(),
            })?;
            merge(&mut root, overlay);
        }
        let mut seen: Vec<&str> = Vec::new();
        for (name, key) in ENV_KEYS {
            if seen.contains(key) {
                continue;
            }
            let Some(raw) = env(name).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            seen.push(key);
            set_key(&mut root, key, name, raw.trim())?;
        }
        let config: Config = root
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Shape(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn is_production(&self) -> bool {
        self.server.env == RunEnv::Production
    }

    pub fn cookie_secure(&self) -> bool {
        match self.auth.cookie_secure {
            CookieSecure::True => true,
            CookieSecure::False => false,
            CookieSecure::Auto => self.is_production(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        let w = &self.workflows;
        if w.concurrency == 0 {
            return Err(invalid("workflows.concurrency", "must be at least 1"));
        }
        if !(1..=500).contains(&w.claim_batch) {
            return Err(invalid(
                "workflows.claim_batch",
                "must be between 1 and 500",
            ));
        }
        if !(1000..=600_000).contains(&w.node_exec_timeout_ms) {
            return Err(invalid(
                "workflows.node_exec_timeout_ms",
                "must be between 1000 and 600000",
            ));
        }
        if self.workspace.presign_expires_secs < 60 {
            return Err(invalid(
                "workspace.presign_expires_secs",
                "must be at least 60",
            ));
        }
        if self.sessions.client_recheck_ms < 100 {
            return Err(invalid(
                "sessions.client_recheck_ms",
                "must be at least 100",
            ));
        }
        if self.gateway.results_ttl_secs < 30 {
            return Err(invalid("gateway.results_ttl_secs", "must be at least 30"));
        }
        if self.gateway.org_max_in_flight < 1 {
            return Err(invalid("gateway.org_max_in_flight", "must be at least 1"));
        }
        if self.gateway.tool_output_max_chars < 10_000 {
            return Err(invalid(
                "gateway.tool_output_max_chars",
                "must be at least 10000",
            ));
        }
        if w.retry_attempts < 1 {
            return Err(invalid("workflows.retry_attempts", "must be at least 1"));
        }
        if w.retry_backoff_ms < 1000 {
            return Err(invalid(
                "workflows.retry_backoff_ms",
                "must be at least 1000",
            ));
        }
        if !(256..=200_000).contains(&w.event_payload_max_chars) {
            return Err(invalid(
                "workflows.event_payload_max_chars",
                "must be within 256..200000",
            ));
        }
        if w.lease_secs < 2 {
            return Err(invalid("workflows.lease_secs", "must be at least 2"));
        }
        if let Err(e) =
            crate::platform::http::client_ip::TrustedProxies::parse(&self.server.trusted_proxies)
        {
            return Err(invalid("server.trusted_proxies", &e));
        }
        if let Err(e) = crate::platform::http::client_ip::ForwardedHeader::parse(
            &self.server.trusted_proxy_header,
        ) {
            return Err(invalid("server.trusted_proxy_header", &e));
        }
        if !self.metrics.addr.is_empty()
            && self.metrics.addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics.addr",
                "must be host:port with an IP address, e.g. 127.0.0.1:9464",
            ));
        }
        if !(1..=3600).contains(&self.api_keys.last_used_flush_secs) {
            return Err(invalid(
                "api_keys.last_used_flush_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.is_production()
            && !self.metrics.token.is_empty()
            && self.metrics.token.expose().len() < 16
        {
            return Err(invalid(
                "metrics.token",
                "production needs a token of at least 16 bytes",
            ));
        }
        if let Err((key, message)) = self.inference.validate() {
            return Err(ConfigError::Invalid { key, message });
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        for (key, ttl) in [
            ("auth.access_ttl_secs", self.auth.access_ttl_secs),
            ("auth.session_ttl_secs", self.auth.session_ttl_secs),
            (
                "auth.session_absolute_ttl_secs",
                self.auth.session_absolute_ttl_secs,
            ),
            (
                "auth.oauth_context_ttl_secs",
                self.auth.oauth_context_ttl_secs,
            ),
        ] {
            if ttl <= 0 {
                return Err(invalid(key, "must be a positive number of seconds"));
            }
        }
        if self.auth.session_cookie_name.is_empty()
            || !self
                .auth
                .session_cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "auth.session_cookie_name",
                "must be a non-empty token of letters, digits, '_' or '-'",
            ));
        }
        if url::Url::parse(&self.web.base_url).is_err() {
            return Err(invalid("web.base_url", "must be an absolute URL"));
        }
        if self.auth.token_secret.is_empty() {
            return Err(invalid("auth.token_secret", "must not be empty"));
        }
        if self.is_production() {
            for (key, secret) in [
                ("auth.token_secret", &self.auth.token_secret),
                ("auth.oauth_state_secret", &self.auth.oauth_state_secret),
            ] {
                let value = secret.expose();
                if KNOWN_DEFAULT_SECRETS.contains(&value) || value.len() < 32 {
                    return Err(invalid(
                        key,
                        "production needs a secret of at least 32 bytes that is not a built-in default",
                    ));
                }
            }
            if !self.auth.refresh_secret.is_empty() && self.auth.refresh_secret.expose().len() < 32
            {
                return Err(invalid(
                    "auth.refresh_secret",
                    "production needs at least 32 bytes",
                ));
            }
            let service = self.gateway.service_token.expose();
            if service.len() < 16 || service == crate::domain::gateway::config::DEV_SERVICE_TOKEN {
                return Err(invalid(
                    "gateway.service_token",
                    "production needs a service token of at least 16 bytes that is not the development default",
                ));
            }
        }
        Ok(())
    }
}

/// Deep-merges `overlay` into `base` (tables merge key by key, everything else replaces).
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Table(base), Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Sets `key` (dotted path) from an env string, parsed to the type the default has.
fn set_key(
    root: &mut Value,
    key: &'static str,
    env: &'static str,
    raw: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env { key, env, message };
    let mut node = root;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| err("config shape mismatch".into()))?;
        if parts.peek().is_none() {
            let current = table.get(part).ok_or_else(|| err("unknown key".into()))?;
            let parsed = match current {
                Value::Integer(_) => raw
                    .parse::<i64>()
                    .map(Value::Integer)
                    .map_err(|_| err(format!("expected an integer, got {raw:?}")))?,
                Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Value::Boolean(true),
                    "false" | "0" | "no" => Value::Boolean(false),
                    _ => return Err(err(format!("expected true or false, got {raw:?}"))),
                },
                _ => Value::String(normalize_enum(key, raw)),
            };
            check_enum(key, &parsed).map_err(err)?;
            table.insert(part.to_string(), parsed);
            return Ok(());
        }
        node = table
            .get_mut(part)
            .ok_or_else(|| err("unknown key".into()))?;
    }
    Err(err("empty key".into()))
}

fn normalize_enum(key: &str, raw: &str) -> String {
    match key {
        "server.env" | "server.log_format" | "auth.cookie_secure" | "orgs.context_enforcement" => {
            raw.to_ascii_lowercase()
        }
        _ => raw.to_string(),
    }
}

/// Gives enum-valued env vars a message naming the allowed values (serde's would not name the env var).
fn check_enum(key: &str, value: &Value) -> Result<(), String> {
    let allowed: &[&str] = match key {
        "server.env" => &["development", "test", "production"],
        "server.log_format" => &["auto", "json", "text"],
        "auth.cookie_secure" => &["auto", "true", "false"],
        "orgs.context_enforcement" => &["strict", "warn"],
        _ => return Ok(()),
    };
    match value.as_str() {
        Some(v) if allowed.contains(&v) => Ok(()),
        _ => Err(format!("must be one of {}", allowed.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(None, move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_load() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.server.port, 3001);
        assert_eq!(c.orgs.context_enforcement, Enforcement::Strict);
        assert_eq!(c.auth.session_cookie_name, "vespid_session");
        assert_eq!(c.inference.openai_base_url, "https://api.openai.com");
        assert_eq!(c.inference.max_attempts, 4);
    }

    #[test]
    fn inference_keys_from_env() {
        use crate::domain::inference::Provider;
        let c = load(&[
            ("ANTHROPIC_API_KEY", "sk-ant-xyz"),
            ("INFERENCE_PRICES", "openai/llama3=1:2"),
            ("INFERENCE_MAX_ATTEMPTS", "2"),
        ])
        .expect("valid");
        assert_eq!(c.inference.max_attempts, 2);
        let cred = c
            .inference
            .fallback_credential(Provider::Anthropic)
            .expect("set");
        assert_eq!(cred.api_key.as_str(), "sk-ant-xyz");
        assert!(c.inference.fallback_credential(Provider::OpenAi).is_none());
        assert!(!format!("{c:?}").contains("sk-ant-xyz"));
        let e = load(&[("INFERENCE_PRICES", "nope")]).expect_err("invalid");
        assert!(e.to_string().contains("inference.prices"), "{e}");
    }

    #[test]
    fn env_overrides_and_names_bad_keys() {
        let c = load(&[("API_PORT", "4000"), ("ORG_CONTEXT_ENFORCEMENT", "WARN")]).expect("valid");
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.orgs.context_enforcement, Enforcement::Warn);
        let e = load(&[("ORG_CONTEXT_ENFORCEMENT", "lenient")]).expect_err("invalid");
        assert!(e.to_string().contains("ORG_CONTEXT_ENFORCEMENT"), "{e}");
        let e = load(&[("API_PORT", "abc")]).expect_err("invalid");
        assert!(e.to_string().contains("server.port"), "{e}");
    }

    #[test]
    fn production_refuses_default_and_short_secrets() {
        let e = load(&[("VESPID_ENV", "production")]).expect_err("defaults refused");
        assert!(e.to_string().contains("auth.token_secret"), "{e}");
        let long = "x".repeat(40);
        let e = load(&[
            ("NODE_ENV", "production"),
            ("AUTH_TOKEN_SECRET", &long),
            ("OAUTH_STATE_SECRET", "short"),
        ])
        .expect_err("short refused");
        assert!(e.to_string().contains("oauth_state_secret"), "{e}");
        let e = load(&[
            ("NODE_ENV", "production"),
            ("AUTH_TOKEN_SECRET", &long),
            ("OAUTH_STATE_SECRET", &long),
        ])
        .expect_err("the default gateway service token refused");
        assert!(e.to_string().contains("gateway.service_token"), "{e}");
        let c = load(&[
            ("NODE_ENV", "production"),
            ("AUTH_TOKEN_SECRET", &long),
            ("OAUTH_STATE_SECRET", &long),
            ("GATEWAY_SERVICE_TOKEN", &long),
        ])
        .expect("valid production");
        assert!(c.cookie_secure());
        assert_eq!(format!("{:?}", c.auth.token_secret), "***");
    }
}
