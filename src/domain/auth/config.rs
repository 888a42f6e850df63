//! The `auth` and `oauth` sections of the configuration: token keys and lifetimes, cookies, login
//! throttling, and the Google (OIDC) and GitHub (OAuth2) clients.

use serde::Deserialize;

use crate::platform::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub token_secret: Secret,
    pub token_secret_previous: Secret,
    pub refresh_secret: Secret,
    pub oauth_state_secret: Secret,
    pub access_ttl_secs: i64,
    pub session_ttl_secs: i64,
    pub session_absolute_ttl_secs: i64,
    pub oauth_context_ttl_secs: i64,
    pub session_cookie_name: String,
    pub cookie_secure: CookieSecure,
    pub session_cache_ttl_secs: u64,
    pub login_max_failures: u32,
    pub login_failure_window_secs: u64,
    pub login_max_failures_per_ip: u32,
    pub login_account_max_failures: u32,
    pub login_account_window_secs: u64,
    pub login_trusted_client_days: u64,
    /// Seconds during which the token a rotation replaced still gets that rotation's result.
    pub refresh_reuse_grace_secs: i64,
}

impl AuthConfig {
    /// The refresh-token key; falls back to the access-token key as the original does.
    pub fn refresh_key(&self) -> &Secret {
        if self.refresh_secret.is_empty() {
            &self.token_secret
        } else {
            &self.refresh_secret
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    Auto,
    True,
    False,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub google: GoogleConfig,
    pub github: GithubConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uri: String,
    pub issuer_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uri: String,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
}

impl GoogleConfig {
    pub fn enabled(&self) -> bool {
        all_set(&self.client_id, &self.client_secret, &self.redirect_uri)
    }
}

impl GithubConfig {
    pub fn enabled(&self) -> bool {
        all_set(&self.client_id, &self.client_secret, &self.redirect_uri)
    }
}

fn all_set(id: &str, secret: &Secret, redirect: &str) -> bool {
    !id.trim().is_empty() && !secret.expose().trim().is_empty() && !redirect.trim().is_empty()
}
