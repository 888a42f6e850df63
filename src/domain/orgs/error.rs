//! What can go wrong with orgs, memberships, invitations and settings, in domain terms.

use crate::domain::common::access::Denied;
use crate::platform::db::DbError;
use crate::platform::validation::Rejected;

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("organization slug already exists")]
    SlugTaken,
    #[error("could not allocate a personal workspace slug")]
    NoPersonalSlug,
    #[error("organization not found")]
    OrgNotFound,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("membership not found")]
    MembershipNotFound,
    #[error("organization must keep at least one owner")]
    LastOwner,
    #[error("invitation not found")]
    InvitationNotFound,
    #[error("invitation email does not match authenticated user")]
    InvitationForSomeoneElse,
    #[error("invitation has expired")]
    InvitationExpired,
    #[error("invitation is not pending")]
    InvitationNotPending,
    #[error(transparent)]
    InvalidSettings(#[from] Rejected),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for OrgError {
    fn from(e: diesel::result::Error) -> Self {
        OrgError::Db(e.into())
    }
}
