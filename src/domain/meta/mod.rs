//! `/v1/meta/*`: the edition, its capabilities and the connector catalog.

pub mod provider;
pub mod routes;

use std::sync::Arc;

use serde::Serialize;

use provider::{Connector, EnterpriseProvider};

/// The edition's metadata service: what this build (and its enterprise provider, if any) offers.
pub struct Meta {
    provider: Arc<dyn EnterpriseProvider>,
}

impl Meta {
    pub fn new(provider: Arc<dyn EnterpriseProvider>) -> Self {
        Self { provider }
    }

    pub fn provider(&self) -> &dyn EnterpriseProvider {
        self.provider.as_ref()
    }

    pub fn capabilities(&self) -> Vec<String> {
        capabilities(self.provider.as_ref())
    }

    pub fn connectors(&self) -> Vec<CatalogEntry> {
        connectors(self.provider.as_ref())
    }

    pub fn allowed_secret_connectors(&self) -> Vec<String> {
        allowed_secret_connectors(self.provider.as_ref())
    }
}

/// The community baseline: always present, always first, in this order.
pub const COMMUNITY_CAPABILITIES: &[&str] = &[
    "auth_email_oauth",
    "org_rbac_baseline",
    "workflow_dsl_v2",
    "workflow_async_queue",
    "tenant_rls",
];

/// Connector ids usable for secrets beyond the catalog.
pub const LLM_CONNECTORS: &[&str] = &[
    "llm.openai",
    "llm.anthropic",
    "llm.gemini",
    "llm.vertex.oauth",
];

pub fn capabilities(p: &dyn EnterpriseProvider) -> Vec<String> {
    let mut out: Vec<String> = COMMUNITY_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in p.capabilities() {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Connector)]
pub struct CatalogEntry {
    pub id: String,
    pub display_name: String,
    pub requires_secret: bool,
    pub source: &'static str,
}

/// Community catalog, then the provider's; an enterprise entry with a known id replaces it in place.
pub fn connectors(p: &dyn EnterpriseProvider) -> Vec<CatalogEntry> {
    let community = [
        ("jira", "Jira", true),
        ("github", "GitHub", true),
        ("slack", "Slack", true),
        ("email", "Email", false),
    ];
    let mut out: Vec<CatalogEntry> = community
        .iter()
        .map(|(id, name, secret)| CatalogEntry {
            id: id.to_string(),
            display_name: name.to_string(),
            requires_secret: *secret,
            source: "community",
        })
        .collect();
    for Connector {
        id,
        display_name,
        requires_secret,
    } in p.connectors()
    {
        let entry = CatalogEntry {
            id: id.clone(),
            display_name,
            requires_secret,
            source: "enterprise",
        };
        match out.iter_mut().find(|e| e.id == id) {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    }
    out
}

/// Every connector id a secret may be stored for: catalog order, then the LLM ids.
pub fn allowed_secret_connectors(p: &dyn EnterpriseProvider) -> Vec<String> {
    let mut ids: Vec<String> = connectors(p).into_iter().map(|c| c.id).collect();
    ids.extend(LLM_CONNECTORS.iter().map(|s| s.to_string()));
    ids
}

#[cfg(test)]
mod tests {
    use super::provider::*;
    use super::*;

    #[test]
    fn community_and_injected_enterprise() {
        let caps = capabilities(&Community);
        assert_eq!(caps.first().map(String::as_str), Some("auth_email_oauth"));
        assert!(caps.contains(&"tenant_rls".to_string()));
        let p = ManifestProvider {
            edition: "enterprise".into(),
            name: "enterprise-inline".into(),
            version: Some("0.4.0".into()),
            capabilities: vec!["sso".into(), "advanced_rbac".into(), "tenant_rls".into()],
            connectors: vec![
                serde_json::json!({"id": "salesforce", "displayName": "Salesforce", "requiresSecret": true}),
                serde_json::json!({"id": "github", "displayName": "GitHub EE", "requiresSecret": true}),
                serde_json::json!({"id": 5}),
            ],
        };
        let caps = capabilities(&p);
        assert_eq!(caps.iter().filter(|c| *c == "tenant_rls").count(), 1);
        assert!(caps.contains(&"sso".to_string()));
        let conns = connectors(&p);
        assert_eq!(conns[1].id, "github");
        assert_eq!(conns[1].source, "enterprise");
        assert_eq!(conns.len(), 5);
        assert_eq!(conns[4].id, "salesforce");
    }
}
