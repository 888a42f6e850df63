//! What can go wrong with workflows, in domain terms.

use super::dsl::DslError;
use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow not found")]
    NotFound,
    #[error("only draft workflows can be updated")]
    NotDraft,
    #[error("only published workflows can be cloned into a draft")]
    NotPublished,
    #[error("could not create a new draft revision")]
    RevisionConflict,
    #[error("invalid workflow: {0:?}")]
    Dsl(DslError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for WorkflowError {
    fn from(e: diesel::result::Error) -> Self {
        WorkflowError::Db(e.into())
    }
}
