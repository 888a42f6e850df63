//! OAuth sign-in (Google OIDC, GitHub OAuth2): authorization code + PKCE (S256) + state + nonce, with the
//! pending state kept in PostgreSQL (`oauth_states`) so a callback works on any instance and after a restart.

mod github;
mod google;
pub mod model;
pub mod routes;
mod state;

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;

use crate::domain::auth::config::OAuthConfig;
use crate::platform::crypto;
use crate::platform::db::PgPool;
use crate::platform::secret::Secret;
pub use model::{Flow, Identity, OAuthError, Pending, Provider, Started};

pub const STATE_COOKIE: &str = "vespid_oauth_state";
pub const NONCE_COOKIE: &str = "vespid_oauth_nonce";

/// Sent to the providers' APIs (GitHub rejects requests without one).
const USER_AGENT: &str = concat!("vespid/", env!("CARGO_PKG_VERSION"));
/// Expired `oauth_states` rows are purged at most this often per process.
const PURGE_EVERY_SECS: i64 = 60;

/// What the OAuth service is built from.
pub struct OAuthParts {
    pub config: OAuthConfig,
    pub state_secret: Secret,
    pub context_ttl_secs: i64,
    pub web_base_url: String,
    pub db: PgPool,
}

pub struct OAuthService {
    config: OAuthConfig,
    state_secret: Secret,
    context_ttl_secs: i64,
    web_base_url: String,
    db: PgPool,
    /// One client for every provider call; redirects disabled (openidconnect's advice against SSRF).
    http: Option<reqwest::Client>,
    google: google::Discovery,
    last_purge: AtomicI64,
}

impl OAuthService {
    pub fn new(parts: OAuthParts) -> Self {
        let OAuthParts {
            config,
            state_secret,
            context_ttl_secs,
            web_base_url,
            db,
        } = parts;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the OAuth HTTP client"))
            .ok();
        Self {
            config,
            state_secret,
            context_ttl_secs,
            web_base_url,
            db,
            http,
            google: google::Discovery::default(),
            last_purge: AtomicI64::new(0),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, OAuthError> {
        self.http
            .as_ref()
            .ok_or_else(|| OAuthError::exchange("HTTP client unavailable"))
    }

    fn state_key(&self) -> &[u8] {
        self.state_secret.expose().as_bytes()
    }

    /// Steps 1-4 of start: secrets, provider URL (503 when not configured, before anything is stored),
    /// the server-side state row and the signed cookies.
    pub async fn start(&self, provider: Provider) -> Result<Started, OAuthError> {
        let flow = Flow::generate();
        let authorization_url = match provider {
            Provider::Google => {
                let http = self
                    .http
                    .as_ref()
                    .ok_or_else(|| OAuthError::Unavailable("HTTP client unavailable".into()))?;
                google::authorization_url(&self.config.google, &self.google, http, &flow).await?
            }
            Provider::Github => github::authorization_url(&self.config.github, &flow)?,
        };
        let ttl = self.context_ttl_secs;
        let expires_at = Utc::now().timestamp() + ttl;
        self.purge_expired().await;
        state::insert(&self.db, provider, &flow, expires_at).await?;
        Ok(Started {
            authorization_url,
            state_cookie: state::sign_cookie(
                self.state_key(),
                &flow.state,
                state::Kind::State,
                expires_at,
            ),
            nonce_cookie: state::sign_cookie(
                self.state_key(),
                &flow.nonce,
                state::Kind::Nonce,
                expires_at,
            ),
        })
    }

    /// Callback steps a-c (nothing is consumed): both cookies present and valid, state cookie = query state.
    /// Returns the nonce from the nonce cookie.
    pub fn check_cookies(
        &self,
        state_cookie: Option<&str>,
        nonce_cookie: Option<&str>,
        query_state: &str,
    ) -> Result<String, OAuthError> {
        let (Some(state_cookie), Some(nonce_cookie)) = (state_cookie, nonce_cookie) else {
            return Err(OAuthError::Rejected("Missing OAuth state/nonce cookies"));
        };
        let now = Utc::now().timestamp();
        let key = self.state_key();
        let (Some(state), Some(nonce)) = (
            state::verify_cookie(key, state_cookie, state::Kind::State, now),
            state::verify_cookie(key, nonce_cookie, state::Kind::Nonce, now),
        ) else {
            return Err(OAuthError::Rejected("Invalid OAuth state/nonce cookies"));
        };
        if !crypto::ct_eq(state.as_bytes(), query_state.as_bytes()) {
            return Err(OAuthError::Rejected("Invalid OAuth state"));
        }
        Ok(nonce)
    }

    /// Callback steps d-e: single-use removal of the server-side state, then the nonce check.
    pub async fn consume(
        &self,
        provider: Provider,
        query_state: &str,
        cookie_nonce: &str,
    ) -> Result<Pending, OAuthError> {
        let row = state::take(&self.db, query_state).await?;
        let now = Utc::now();
        let Some(row) = row.filter(|r| r.provider == provider.as_str() && r.expires_at > now)
        else {
            return Err(OAuthError::Rejected("Invalid or expired OAuth state"));
        };
        if !crypto::ct_eq(row.nonce.as_bytes(), cookie_nonce.as_bytes()) {
            return Err(OAuthError::Rejected("Invalid OAuth nonce"));
        }
        Ok(Pending {
            code_verifier: row.code_verifier,
            nonce: row.nonce,
        })
    }

    /// Callback step f: code exchange and profile, down to one verified email.
    pub async fn identify(
        &self,
        provider: Provider,
        code: &str,
        pending: &Pending,
    ) -> Result<Identity, OAuthError> {
        let http = self.http()?;
        let identity = match provider {
            Provider::Google => {
                google::identify(&self.config.google, &self.google, http, code, pending).await?
            }
            Provider::Github => github::identify(&self.config.github, http, code, pending).await?,
        };
        Ok(Identity {
            email: identity.email.trim().to_lowercase(),
            display_name: identity
                .display_name
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty()),
        })
    }

    /// Abandoned flows leave rows behind; drop the expired ones now and then (best effort).
    async fn purge_expired(&self) {
        let now = Utc::now().timestamp();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now - last < PURGE_EVERY_SECS
            || self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = state::purge_expired(&self.db).await {
            tracing::warn!(error = %e, "could not purge expired OAuth states");
        }
    }
}

impl OAuthService {
    /// `<WEB_BASE_URL>/auth?…` for the browser flow's landing page.
    pub fn web_redirect(&self, pairs: &[(&str, Cow<'_, str>)]) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        format!(
            "{}/auth?{}",
            self.web_base_url.trim_end_matches('/'),
            query.finish()
        )
    }

    /// How long the OAuth cookies live.
    pub fn context_ttl_secs(&self) -> i64 {
        self.context_ttl_secs
    }
}
