//! The one error type at the HTTP edge, rendered once as the spec's envelope `{code, message, details?}`.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::platform::db::DbError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
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
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
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

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let (Some(details), Some(obj)) = (&self.details, body.as_object_mut()) {
            obj.insert("details".into(), details.clone());
        }
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("retry-after", secs.to_string()));
        }
        res.json(body)
    }
}

/// Diesel errors mapped once: not found 404, unique violation 409, lost connection 503, the rest 500
/// (logged here with the cause; the client sees only the generic envelope).
impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::Query(e).into()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable();
        }
        match e {
            DbError::Query(Error::NotFound) => ApiError::not_found("Not Found"),
            DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                ApiError::conflict("Resource already exists")
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::internal()
            }
        }
    }
}

/// Field-level validation failures, rendered as `{formErrors, fieldErrors}` (spec 6.2).
#[derive(Debug, Default)]
pub struct Invalid {
    form: Vec<String>,
    fields: serde_json::Map<String, Value>,
}

impl Invalid {
    pub fn form(&mut self, message: impl Into<String>) {
        self.form.push(message.into());
    }

    pub fn field(&mut self, name: &str, message: impl Into<String>) {
        let entry = self
            .fields
            .entry(name.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(message.into()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.form.is_empty() && self.fields.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else the 400 with `message` and the details.
    pub fn finish(self, message: &'static str) -> Result<(), ApiError> {
        if self.is_empty() {
            return Ok(());
        }
        Err(ApiError::bad_request(message).with_details(json!({
            "formErrors": self.form,
            "fieldErrors": self.fields,
        })))
    }
}
