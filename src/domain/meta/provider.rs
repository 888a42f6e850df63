//! The edition/provider hook: a community implementation built in, and an enterprise provider either
//! compiled in or described by a JSON manifest named by `VESPID_ENTERPRISE_PROVIDER_MODULE`. Anything
//! unresolvable falls back to community with a warning; never fatal.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    pub id: String,
    pub display_name: String,
    pub requires_secret: bool,
}

pub trait EnterpriseProvider: Send + Sync {
    fn edition(&self) -> &str;
    fn name(&self) -> &str;
    fn version(&self) -> Option<&str>;
    fn capabilities(&self) -> Vec<String>;
    fn connectors(&self) -> Vec<Connector> {
        Vec::new()
    }
}

pub struct Community;

impl EnterpriseProvider for Community {
    fn edition(&self) -> &str {
        "community"
    }
    fn name(&self) -> &str {
        "community-core"
    }
    fn version(&self) -> Option<&str> {
        None
    }
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A provider described by data (a manifest file, or injected by tests).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestProvider {
    pub edition: String,
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub connectors: Vec<serde_json::Value>,
}

impl EnterpriseProvider for ManifestProvider {
    fn edition(&self) -> &str {
        &self.edition
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    fn capabilities(&self) -> Vec<String> {
        self.capabilities.clone()
    }
    /// Only entries with a string `id`, string `displayName` and boolean `requiresSecret` are kept.
    fn connectors(&self) -> Vec<Connector> {
        self.connectors
            .iter()
            .filter_map(|v| serde_json::from_value::<Connector>(v.clone()).ok())
            .collect()
    }
}

/// Resolves the provider named by the setting; logs the spec's start-up events.
pub fn load(module: &str) -> Arc<dyn EnterpriseProvider> {
    if module.trim().is_empty() {
        return Arc::new(Community);
    }
    let text = match std::fs::read_to_string(module) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(event = "enterprise_provider_load_failed", modulePath = module, error = %e, "enterprise provider could not be loaded; running as community");
            return Arc::new(Community);
        }
    };
    match serde_json::from_str::<ManifestProvider>(&text) {
        Ok(p) if p.edition == "community" || p.edition == "enterprise" => {
            tracing::info!(event = "enterprise_provider_loaded", modulePath = module, provider = %p.name, edition = %p.edition, "enterprise provider loaded");
            Arc::new(p)
        }
        _ => {
            tracing::warn!(
                event = "enterprise_provider_invalid",
                modulePath = module,
                "enterprise provider is invalid; running as community"
            );
            Arc::new(Community)
        }
    }
}
