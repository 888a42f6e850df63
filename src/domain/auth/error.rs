//! What can go wrong in authentication, in its own terms; `routes.rs` maps each to the spec's answer.

use super::password::HashError;
use super::ratelimit::Throttled;
use crate::domain::orgs::OrgError;
use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("email already registered")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error("refresh token is invalid or expired")]
    RefreshInvalid,
    #[error("session is invalid")]
    SessionInvalid,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("personal workspace: {0}")]
    Workspace(#[from] OrgError),
    #[error("inconsistent state: {0}")]
    Inconsistent(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AuthError {
    fn from(e: diesel::result::Error) -> Self {
        AuthError::Db(e.into())
    }
}
