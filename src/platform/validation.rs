//! Field-level validation failures, collected while parsing input and reported together as the spec's
//! `{formErrors, fieldErrors}` (workflows spec 6.2). Plain Rust: the HTTP edge turns a [`Rejected`] into a 400.

use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct Invalid {
    form: Vec<String>,
    fields: serde_json::Map<String, Value>,
}

/// What [`Invalid::finish`] returns when something was recorded: a message and the details object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub message: &'static str,
    pub details: Value,
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

    /// `Ok(())` when nothing was recorded, else the rejection with `message` and the details.
    pub fn finish(self, message: &'static str) -> Result<(), Rejected> {
        if self.is_empty() {
            return Ok(());
        }
        Err(Rejected {
            message,
            details: json!({
                "formErrors": self.form,
                "fieldErrors": self.fields,
            }),
        })
    }
}

/// RFC 9562 text form only (8-4-4-4-12 hex, any case), as the original's validator.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// The field error for a NUL character (PostgreSQL cannot store one in text or JSON).
pub const NUL_MESSAGE: &str = "Must not contain NUL (\\u0000) characters";
