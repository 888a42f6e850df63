//! What can go wrong with executors and their pairing, in domain terms.

use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("executor not found")]
    NotFound,
    /// The token's prefix is not an org id.
    #[error("pairing token is malformed")]
    PairingTokenMalformed,
    /// Unknown, or lost a race to another pairing with the same token.
    #[error("pairing token is invalid")]
    PairingTokenInvalid,
    #[error("pairing token has already been used")]
    PairingTokenUsed,
    #[error("pairing token is expired")]
    PairingTokenExpired,
    /// Too many failed pairings from this client address.
    #[error("too many failed pairings, retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AgentError {
    fn from(e: diesel::result::Error) -> Self {
        AgentError::Db(e.into())
    }
}
