//! What can go wrong managing API keys, in domain terms; `routes.rs` maps each to its HTTP answer.

use crate::domain::common::access::Denied;
use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key not found")]
    NotFound,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ApiKeyError {
    fn from(e: diesel::result::Error) -> Self {
        ApiKeyError::Db(e.into())
    }
}
