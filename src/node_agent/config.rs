//! The agent's config file (`~/.vespid/agent.json`, or `VESPID_AGENT_CONFIG_PATH`, or `--config-path`):
//! the original agent's keys, so one file works with either. It holds a long-lived executor token, so it
//! is written owner-only (0600), atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::agents::identity::Pool;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub pool: Pool,
    pub executor_id: Uuid,
    pub executor_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    pub gateway_ws_url: String,
    pub api_base_url: String,
    pub executor_name: String,
    pub executor_version: String,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// The file as read: current keys, or the original's legacy ones (`agentId`, `agentToken`, `name`,
/// `agentVersion`); `pool` defaults to `byon`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    pool: Option<Pool>,
    executor_id: Option<String>,
    agent_id: Option<String>,
    executor_token: Option<String>,
    agent_token: Option<String>,
    organization_id: Option<String>,
    gateway_ws_url: Option<String>,
    api_base_url: Option<String>,
    executor_name: Option<String>,
    name: Option<String>,
    executor_version: Option<String>,
    agent_version: Option<String>,
    #[serde(default)]
    capabilities: Capabilities,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// `EXECUTOR_CONFIG_INVALID`, with what is wrong.
    #[error("EXECUTOR_CONFIG_INVALID: {0}")]
    Invalid(String),
}

/// `--config-path`, else `VESPID_AGENT_CONFIG_PATH`, else `~/.vespid/agent.json`.
pub fn path(given: Option<&str>) -> PathBuf {
    if let Some(p) = given.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("VESPID_AGENT_CONFIG_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".vespid").join("agent.json")
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let raw: RawConfig = serde_json::from_str(&text)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        Self::normalize(raw)
    }

    fn normalize(raw: RawConfig) -> Result<Self, ConfigError> {
        let pool = raw.pool.unwrap_or(Pool::Byon);
        let executor_id = raw
            .executor_id
            .or(raw.agent_id)
            .and_then(|s| Uuid::parse_str(&s).ok())
            .ok_or_else(|| ConfigError::Invalid("executorId is missing or not a UUID".into()))?;
        let executor_token = raw
            .executor_token
            .or(raw.agent_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ConfigError::Invalid("executorToken is missing".into()))?;
        let organization_id = raw
            .organization_id
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|_| ConfigError::Invalid("organizationId is not a UUID".into()))?;
        if pool == Pool::Byon && organization_id.is_none() {
            return Err(ConfigError::Invalid(
                "a byon executor needs organizationId".into(),
            ));
        }
        let gateway_ws_url = raw
            .gateway_ws_url
            .filter(|u| u.starts_with("ws://") || u.starts_with("wss://"))
            .ok_or_else(|| {
                ConfigError::Invalid("gatewayWsUrl must be a ws:// or wss:// URL".into())
            })?;
        Ok(Self {
            pool,
            executor_id,
            executor_token,
            organization_id,
            gateway_ws_url,
            api_base_url: raw
                .api_base_url
                .unwrap_or_else(|| "http://localhost:3001".into()),
            executor_name: raw
                .executor_name
                .or(raw.name)
                .unwrap_or_else(super::hostname),
            executor_version: raw
                .executor_version
                .or(raw.agent_version)
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            capabilities: raw.capabilities,
        })
    }

    /// Writes the file owner-only (0600) through a temporary file and a rename, so a reader never sees
    /// half a file and the token is never world-readable, not even for a moment.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |source| ConfigError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text =
            serde_json::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(())
    }

    /// The routing labels the agent reports (informational: the gateway routes on the control plane's).
    pub fn reported_labels(&self) -> Vec<String> {
        self.capabilities
            .labels
            .clone()
            .or_else(|| self.capabilities.tags.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_keys_are_read_and_byon_needs_an_org() {
        let raw: RawConfig = serde_json::from_str(
            r#"{"agentId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","agentToken":"t","organizationId":"0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99","gatewayWsUrl":"ws://h/ws/executor","name":"box","agentVersion":"1.0.0"}"#,
        )
        .unwrap();
        let c = AgentConfig::normalize(raw).unwrap();
        assert_eq!(c.pool, Pool::Byon);
        assert_eq!(c.executor_name, "box");
        assert_eq!(c.executor_version, "1.0.0");
        let raw: RawConfig = serde_json::from_str(
            r#"{"executorId":"6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f","executorToken":"t","gatewayWsUrl":"ws://h"}"#,
        )
        .unwrap();
        assert!(matches!(
            AgentConfig::normalize(raw),
            Err(ConfigError::Invalid(_))
        ));
    }
}
