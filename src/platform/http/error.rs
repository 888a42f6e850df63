//! The one error type at the HTTP edge, rendered once as the spec's envelope `{code, message, details?}`.
//! It may carry the internal cause of a failure: never serialized, logged once (with the request id) by the
//! edge middleware when the answer is a 5xx, so no server error is silent.

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::platform::db::DbError;
use crate::platform::validation::Rejected;

/// An internal cause, shared so that `ApiError` stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
    /// Why it happened, for the log only.
    pub cause: Option<Cause>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
    pub fn unauthenticated() -> Self {
        Self::unauthorized("Unauthorized")
    }
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal server error",
        )
    }
    /// A 500 that says why in the log.
    pub fn internal_from(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::internal().with_cause(cause)
    }
    pub fn unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service temporarily unavailable",
        );
        e.retry_after = Some(1);
        e
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Too many failed attempts, try again later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

// Errors are rendered through this struct, so the OpenAPI schema derived from it is the wire shape.
/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct Envelope<'a> {
    /// A stable, machine-readable code (`BAD_REQUEST`, `ORG_ACCESS_DENIED`, `QUEUE_UNAVAILABLE`, …).
    pub code: &'a str,
    /// A human-readable message; may change between versions.
    pub message: &'a str,
    /// Extra structure for some codes, e.g. `{formErrors, fieldErrors}` of a validation failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<&'a Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("retry-after", secs.to_string()));
        }
        res.json(Envelope {
            code: &self.code,
            message: &self.message,
            details: self.details.as_ref(),
        })
    }
}

/// Diesel errors mapped once: not found 404, unique violation 409, lost connection 503, the rest 500
/// (with the cause, which the edge logs).
impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::Query(e).into()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Arc::new(e).into()
    }
}

/// The same mapping for a shared error (one failure answered to several waiting requests).
impl From<Arc<DbError>> for ApiError {
    fn from(e: Arc<DbError>) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        let mut mapped = if e.is_unavailable() {
            ApiError::unavailable()
        } else {
            match &*e {
                DbError::Query(Error::NotFound) => ApiError::not_found("Not Found"),
                DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    ApiError::conflict("Resource already exists")
                }
                _ => ApiError::internal(),
            }
        };
        mapped.cause = Some(e);
        mapped
    }
}

/// Field-level validation failures: a 400 with `{formErrors, fieldErrors}`.
impl From<Rejected> for ApiError {
    fn from(r: Rejected) -> Self {
        ApiError::bad_request(r.message).with_details(r.details)
    }
}

/// The cause of a server error response, for the edge's log line.
pub fn cause_of<B>(res: &HttpResponse<B>) -> Option<String> {
    let api = res.error()?.as_error::<ApiError>()?;
    api.cause.as_ref().map(|c| c.to_string())
}
