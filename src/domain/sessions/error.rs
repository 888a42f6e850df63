//! What can go wrong with a session, in domain terms.

use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session in the org (also: an id that is not a UUID).
    #[error("session not found")]
    NotFound,
    /// `llm.auth.secretId` names no connector secret of the org.
    #[error("secret not found")]
    SecretNotFound,
    /// `toolsetId` names no toolset of the org (there are no toolsets yet: any id).
    #[error("toolset not found")]
    ToolsetNotFound,
    /// A message outside 1..=50000 characters, or an idempotency key outside 1..=200.
    #[error("invalid message")]
    InvalidMessage,
    /// The secrets service failed otherwise (never a secret's value).
    #[error("secrets: {0}")]
    Secrets(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SessionError {
    fn from(e: diesel::result::Error) -> Self {
        SessionError::Db(DbError::from(e))
    }
}
