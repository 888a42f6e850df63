//! What can go wrong delivering a webhook or firing a schedule, in domain terms.

use crate::platform::db::DbError;

use super::signature::Refused;

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No published workflow with a webhook trigger behind this id (also: the id is not a UUID).
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Refused(Refused),
    /// This signature was already used: a replay.
    #[error("WEBHOOK_REPLAYED")]
    Replayed,
    #[error("rate limited, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The body is not JSON or a form, or not valid as one.
    #[error("{0}")]
    BadBody(String),
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("Idempotency-Key must be 1..200 printable characters")]
    BadIdempotencyKey,
    /// Redis did not answer where the replay check needs it.
    #[error("redis unavailable: {0}")]
    Redis(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for TriggerError {
    fn from(e: diesel::result::Error) -> Self {
        TriggerError::Db(DbError::from(e))
    }
}
