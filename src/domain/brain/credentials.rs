//! Which provider credential a loop uses: the org's secret named by the session or node (connector
//! `llm.<provider>`), else the operator's key from the environment when allowed. The key goes to the
//! provider and nowhere else: not to an executor, an event, a log line or a response.

use serde_json::Value;
use url::Url;

use super::Brain;
use crate::domain::common::ids::{OrgId, RunId, SecretId};
use crate::domain::inference::{Credential, Provider};
use crate::domain::runs::executors::ssrf;
use crate::domain::secrets::SecretError;

impl Brain {
    /// The credential for `provider`: `secret` if given (it must be an `llm.<provider>` secret of the
    /// org), else the environment's key when `fallback_to_env`. `run` audits the decryption with it.
    pub(super) async fn credential(
        &self,
        org: OrgId,
        provider: Provider,
        secret: Option<SecretId>,
        fallback_to_env: bool,
        run: Option<RunId>,
    ) -> Result<Credential, String> {
        let Some(id) = secret else {
            return fallback_to_env
                .then(|| self.inference_config.fallback_credential(provider))
                .flatten()
                .ok_or_else(|| "LLM_AUTH_NOT_CONFIGURED".to_string());
        };
        let revealed = match self.secrets.reveal_for(org, id, run).await {
            Ok(r) => r,
            Err(SecretError::NotFound) => return Err("SECRET_NOT_FOUND".into()),
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "provider secret not readable");
                return Err("SECRET_UNAVAILABLE".into());
            }
        };
        if revealed.connector_id != format!("llm.{}", provider.as_str()) {
            return Err("LLM_SECRET_MISMATCH".into());
        }
        let (key, base_url) = parse_value(&revealed.value).ok_or("LLM_SECRET_INVALID")?;
        if let Some(url) = &base_url {
            self.check_base_url(url).await?;
        }
        Ok(Credential {
            api_key: zeroize::Zeroizing::new(key),
            base_url,
        })
    }

    /// A secret's own endpoint must be http(s) and, when it resolves to a private or loopback address,
    /// listed in `brain.base_url_allow_hosts` (the same policy as `http.request` nodes): an org cannot
    /// point the gateway at the operator's internal services and read the answers back.
    async fn check_base_url(&self, raw: &str) -> Result<(), String> {
        let url = Url::parse(raw).map_err(|_| "LLM_BASE_URL_INVALID".to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("LLM_BASE_URL_INVALID".into());
        }
        ssrf::check(&url, &self.base_url_allow)
            .await
            .map(|_| ())
            .map_err(|_| "LLM_BASE_URL_FORBIDDEN".to_string())
    }
}

/// A secret's value: the bare API key, or `{"apiKey": "…", "baseUrl"?: "…"}` for an OpenAI-compatible
/// endpoint of the org's own (OpenRouter, vLLM, Ollama, …).
fn parse_value(value: &str) -> Option<(String, Option<String>)> {
    let trimmed = value.trim();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed).ok()?;
        let key = v.get("apiKey")?.as_str()?.trim().to_string();
        let base = v
            .get("baseUrl")
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty());
        return (!key.is_empty()).then_some((key, base));
    }
    (!trimmed.is_empty()).then(|| (trimmed.to_string(), None))
}

#[cfg(test)]
mod tests {
    use super::parse_value;

    #[test]
    fn secret_values_are_a_key_or_a_key_with_an_endpoint() {
        assert_eq!(parse_value(" sk-1 \n"), Some(("sk-1".into(), None)));
        assert_eq!(
            parse_value(r#"{"apiKey":"k","baseUrl":"http://h:1/v1/"}"#),
            Some(("k".into(), Some("http://h:1/v1".into())))
        );
        assert_eq!(parse_value(r#"{"baseUrl":"http://h"}"#), None);
        assert_eq!(parse_value("  "), None);
    }
}
