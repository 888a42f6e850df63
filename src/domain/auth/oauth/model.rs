//! The OAuth flow's data: providers, the per-flow secrets, what a provider says about the user, and what
//! can go wrong.

use crate::domain::auth::error::AuthError;
use crate::platform::crypto;
use crate::platform::db::DbError;

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

/// Why an OAuth step failed. `Exchange` and `Unavailable` carry a short cause for the log (an upstream
/// status or error code, never a code, token, state or nonce value).
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("provider is not configured")]
    NotConfigured,
    /// The provider's metadata could not be fetched when building the authorization URL.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("invalid nonce in the provider's token")]
    InvalidNonce,
    #[error("provider returned no verified email")]
    EmailRequired,
    #[error("authorization denied")]
    AccessDenied,
    #[error("exchange failed: {0}")]
    Exchange(String),
    /// The callback's cookies or state did not check out (the message says which).
    #[error("{0}")]
    Rejected(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    SignIn(#[from] AuthError),
}

impl OAuthError {
    pub fn exchange(cause: impl Into<String>) -> Self {
        Self::Exchange(cause.into())
    }

    /// The cause worth logging next to the mapped code, if any.
    pub fn cause(&self) -> Option<String> {
        match self {
            Self::Exchange(c) | Self::Unavailable(c) => Some(c.clone()),
            Self::Db(e) => Some(e.to_string()),
            Self::SignIn(e) => Some(e.to_string()),
            _ => None,
        }
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
    pub(super) fn generate() -> Self {
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
