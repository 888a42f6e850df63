//! What can go wrong with connector secrets, in domain terms.

use crate::platform::crypto::envelope::EnvelopeError;
use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No usable KEK: secrets can be neither written nor read.
    #[error("secrets KEK is not configured")]
    NotConfigured,
    #[error("secret not found")]
    NotFound,
    #[error("secret already exists")]
    AlreadyExists,
    #[error("connector `{connector}` does not take secrets")]
    ConnectorNotAllowed {
        connector: String,
        allowed: Vec<String>,
    },
    /// A name used under two connectors: refused rather than guessed.
    #[error("secret name is ambiguous")]
    Ambiguous,
    #[error("secret cannot be decrypted: {0}")]
    Crypto(EnvelopeError),
    #[error("secret is not valid UTF-8")]
    Encoding,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SecretError {
    fn from(e: diesel::result::Error) -> Self {
        SecretError::Db(e.into())
    }
}

impl From<EnvelopeError> for SecretError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::NotConfigured(_) => SecretError::NotConfigured,
            other => SecretError::Crypto(other),
        }
    }
}
