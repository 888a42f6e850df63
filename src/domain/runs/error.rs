//! What can go wrong creating and reading runs, in domain terms. Clone: one failure of a group commit is
//! the answer of every request in the group.

use std::sync::Arc;

use crate::domain::common::ids::RunId;
use crate::platform::db::DbError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// No such workflow or run in the org.
    #[error("not found")]
    NotFound,
    #[error("workflow is not published")]
    WorkflowNotPublished,
    /// Redis did not take the run in time; the row (this id) was removed again.
    #[error("run queue unavailable: {reason}")]
    QueueUnavailable { run_id: RunId, reason: String },
    /// The process's run intake is gone (shutting down).
    #[error("run intake stopped")]
    IntakeStopped,
    /// The live event stream limits (per org, per process) are reached.
    #[error("too many live event streams")]
    TooManyStreams,
    #[error(transparent)]
    Db(Arc<DbError>),
}

impl RunError {
    /// "Try again later" rather than "this request is wrong".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RunError::Db(e) if e.is_unavailable())
    }
}

impl From<DbError> for RunError {
    fn from(e: DbError) -> Self {
        RunError::Db(Arc::new(e))
    }
}

impl From<diesel::result::Error> for RunError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from(e).into()
    }
}
