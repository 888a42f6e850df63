//! The `inference` section of the configuration: provider endpoints, timeouts, retries, the price table's
//! overrides and the process-wide fallback API keys.

use serde::Deserialize;

use super::{Credential, Provider};
use crate::platform::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Base URL of the OpenAI-compatible API (OpenAI, OpenRouter, vLLM, llama.cpp, Ollama, DeepSeek).
    pub openai_base_url: String,
    pub anthropic_base_url: String,
    pub gemini_base_url: String,
    /// The longest one attempt may take (the call's deadline caps it further).
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Attempts per call, the first included (429, 5xx and network errors are retried).
    pub max_attempts: u32,
    /// Extra or overriding price entries: `provider/model=in:out,…`, USD per 1M tokens.
    pub prices: String,
    /// Fallback keys used when a session or node names no credential of its own.
    pub openai_api_key: Secret,
    pub anthropic_api_key: Secret,
    pub gemini_api_key: Secret,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            openai_base_url: "https://api.openai.com".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            gemini_base_url: "https://generativelanguage.googleapis.com".into(),
            timeout_ms: 120_000,
            connect_timeout_ms: 5_000,
            max_attempts: 4,
            prices: String::new(),
            openai_api_key: Secret::default(),
            anthropic_api_key: Secret::default(),
            gemini_api_key: Secret::default(),
        }
    }
}

impl InferenceConfig {
    /// The process-wide key of `provider` (from `OPENAI_API_KEY`, …), if one is set.
    pub fn fallback_credential(&self, provider: Provider) -> Option<Credential> {
        let key = match provider {
            Provider::OpenAi => &self.openai_api_key,
            Provider::Anthropic => &self.anthropic_api_key,
            Provider::Gemini => &self.gemini_api_key,
        };
        let key = key.expose().trim();
        if key.is_empty() {
            return None;
        }
        Some(Credential {
            api_key: zeroize::Zeroizing::new(key.to_string()),
            base_url: None,
        })
    }

    pub fn base_url(&self, provider: Provider) -> &str {
        match provider {
            Provider::OpenAi => &self.openai_base_url,
            Provider::Anthropic => &self.anthropic_base_url,
            Provider::Gemini => &self.gemini_base_url,
        }
    }

    /// Checks run at start-up: `(key, message)` of the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, url) in [
            ("inference.openai_base_url", &self.openai_base_url),
            ("inference.anthropic_base_url", &self.anthropic_base_url),
            ("inference.gemini_base_url", &self.gemini_base_url),
        ] {
            match url::Url::parse(url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => return Err((key, "must be an absolute http(s) URL".into())),
            }
        }
        if !(1000..=3_600_000).contains(&self.timeout_ms) {
            return Err((
                "inference.timeout_ms",
                "must be within 1000..3600000".into(),
            ));
        }
        if !(100..=600_000).contains(&self.connect_timeout_ms) {
            return Err((
                "inference.connect_timeout_ms",
                "must be within 100..600000".into(),
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(("inference.max_attempts", "must be within 1..10".into()));
        }
        super::pricing::PriceTable::with_overrides(&self.prices)
            .map_err(|e| ("inference.prices", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_credential_only_when_set_and_debug_redacts() {
        let mut c = InferenceConfig::default();
        assert!(c.fallback_credential(Provider::OpenAi).is_none());
        c.openai_api_key = Secret::new("sk-live-123");
        let cred = c.fallback_credential(Provider::OpenAi).unwrap();
        assert_eq!(cred.api_key.as_str(), "sk-live-123");
        assert!(!format!("{cred:?}").contains("sk-live"));
        assert!(!format!("{c:?}").contains("sk-live"));
        assert!(c.fallback_credential(Provider::Gemini).is_none());
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = InferenceConfig::default();
        assert!(c.validate().is_ok());
        c.prices = "openai/gpt-x=oops".into();
        assert_eq!(c.validate().unwrap_err().0, "inference.prices");
        c.prices = String::new();
        c.max_attempts = 0;
        assert_eq!(c.validate().unwrap_err().0, "inference.max_attempts");
    }
}
