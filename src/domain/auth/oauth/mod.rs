//! OAuth sign-in (Google OIDC, GitHub OAuth2): authorization code + PKCE (S256) + state + nonce, with the
//! pending state kept in PostgreSQL (`oauth_states`) so a callback works on any instance and after a restart.

mod github;
mod google;
pub mod routes;
mod state;

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::Utc;

use crate::app::config::Config;
use crate::platform::crypto;
use crate::platform::db::PgPool;
use crate::platform::http::ApiError;

pub const STATE_COOKIE: &str = "vespid_oauth_state";
pub const NONCE_COOKIE: &str = "vespid_oauth_nonce";

/// Sent to the providers' APIs (GitHub rejects requests without one).
const USER_AGENT: &str = concat!("vespid/", env!("CARGO_PKG_VERSION"));
/// Expired `oauth_states` rows are purged at most this often per process.
const PURGE_EVERY_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Google,
    Github,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "google" => Some(Self::Google),
            "github" => Some(Self::Github),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Github => "github",
        }
    }
}

/// Why an OAuth step failed. `Exchange` carries a short cause for the log (an upstream status or error
/// code, never a code, token, state or nonce value).
#[derive(Debug)]
pub enum OAuthError {
    Api(ApiError),
    NotConfigured,
    /// The provider's metadata could not be fetched when building the authorization URL.
    Unavailable(String),
    InvalidNonce,
    EmailRequired,
    AccessDenied,
    Exchange(String),
}

impl OAuthError {
    pub fn exchange(cause: impl Into<String>) -> Self {
        Self::Exchange(cause.into())
    }

    /// The cause worth logging next to the mapped code, if any.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Self::Exchange(c) | Self::Unavailable(c) => Some(c),
            _ => None,
        }
    }

    pub fn into_api(self, provider: Provider) -> ApiError {
        match self {
            Self::Api(e) => e,
            Self::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "OAUTH_PROVIDER_NOT_CONFIGURED",
                format!("OAuth provider is not configured: {}", provider.as_str()),
            ),
            Self::Unavailable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "OAUTH_PROVIDER_UNAVAILABLE",
                "OAuth provider is unavailable",
            ),
            Self::InvalidNonce => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "OAUTH_INVALID_NONCE",
                "Invalid OAuth nonce",
            ),
            Self::EmailRequired => ApiError::new(
                StatusCode::BAD_REQUEST,
                "OAUTH_EMAIL_REQUIRED",
                "OAuth provider did not return an email address",
            ),
            Self::AccessDenied => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "OAUTH_ACCESS_DENIED",
                "OAuth authorization was denied",
            ),
            Self::Exchange(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "OAUTH_EXCHANGE_FAILED",
                "OAuth exchange failed",
            ),
        }
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// Who the provider says signed in: a verified email (lower-cased) and a display name.
#[derive(Debug, Clone)]
pub struct Identity {
    pub email: String,
    pub display_name: Option<String>,
}

/// The per-flow secrets generated at start.
pub struct Flow {
    pub state: String,
    pub code_verifier: String,
    pub nonce: String,
}

impl Flow {
    fn generate() -> Self {
        Self {
            state: crypto::random_token(32),
            code_verifier: crypto::random_token(32),
            nonce: crypto::random_token(24),
        }
    }
}

/// What start hands to the route: the provider URL and the two signed cookie values.
pub struct Started {
    pub authorization_url: String,
    pub state_cookie: String,
    pub nonce_cookie: String,
}

/// A consumed server-side state: what the exchange needs.
pub struct Pending {
    pub code_verifier: String,
    pub nonce: String,
}

pub struct OAuthService {
    config: Arc<Config>,
    db: PgPool,
    /// One client for every provider call; redirects disabled (openidconnect's advice against SSRF).
    http: Option<reqwest::Client>,
    google: google::Discovery,
    last_purge: AtomicI64,
}

impl OAuthService {
    pub fn new(config: Arc<Config>, db: PgPool) -> Self {
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
        self.config.auth.oauth_state_secret.expose().as_bytes()
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
                google::authorization_url(&self.config.oauth.google, &self.google, http, &flow)
                    .await?
            }
            Provider::Github => github::authorization_url(&self.config.oauth.github, &flow)?,
        };
        let ttl = self.config.auth.oauth_context_ttl_secs;
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
    ) -> Result<String, ApiError> {
        let (Some(state_cookie), Some(nonce_cookie)) = (state_cookie, nonce_cookie) else {
            return Err(ApiError::unauthorized("Missing OAuth state/nonce cookies"));
        };
        let now = Utc::now().timestamp();
        let key = self.state_key();
        let (Some(state), Some(nonce)) = (
            state::verify_cookie(key, state_cookie, state::Kind::State, now),
            state::verify_cookie(key, nonce_cookie, state::Kind::Nonce, now),
        ) else {
            return Err(ApiError::unauthorized("Invalid OAuth state/nonce cookies"));
        };
        if !crypto::ct_eq(state.as_bytes(), query_state.as_bytes()) {
            return Err(ApiError::unauthorized("Invalid OAuth state"));
        }
        Ok(nonce)
    }

    /// Callback steps d-e: single-use removal of the server-side state, then the nonce check.
    pub async fn consume(
        &self,
        provider: Provider,
        query_state: &str,
        cookie_nonce: &str,
    ) -> Result<Pending, ApiError> {
        let row = state::take(&self.db, query_state).await?;
        let now = Utc::now();
        let Some(row) = row.filter(|r| r.provider == provider.as_str() && r.expires_at > now)
        else {
            return Err(ApiError::unauthorized("Invalid or expired OAuth state"));
        };
        if !crypto::ct_eq(row.nonce.as_bytes(), cookie_nonce.as_bytes()) {
            return Err(ApiError::unauthorized("Invalid OAuth nonce"));
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
                google::identify(&self.config.oauth.google, &self.google, http, code, pending)
                    .await?
            }
            Provider::Github => {
                github::identify(&self.config.oauth.github, http, code, pending).await?
            }
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

/// `<WEB_BASE_URL>/auth?…` for the browser flow's landing page.
pub fn web_redirect(config: &Config, pairs: &[(&str, Cow<'_, str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!(
        "{}/auth?{}",
        config.web.base_url.trim_end_matches('/'),
        query.finish()
    )
}
