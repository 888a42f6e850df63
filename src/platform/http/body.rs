//! Request bodies: read with a size cap and content-type rules (the spec's framework codes), then parsed
//! field by field so that every shape error becomes a 400 with field details, never a 500.

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::platform::validation::{Invalid, NUL_MESSAGE};

/// Bodies larger than this are refused with 413 (the original's 1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long reading a body may take before the request is answered 408 (a client that sends fewer bytes
/// than its `Content-Length` would otherwise hold the connection forever). Put into app data by the api
/// role; absent, [`DEFAULT_READ_TIMEOUT`] applies.
#[derive(Debug, Clone, Copy)]
pub struct BodyConfig {
    pub read_timeout: Duration,
}

pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A JSON request body. `Value::Null` when the request had no body at all (empty POSTs are allowed on
/// some routes; handlers that need an object reject it through [`Form`]).
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.to_ascii_lowercase());
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let read_timeout = req
            .app_data::<web::Data<BodyConfig>>()
            .map_or(DEFAULT_READ_TIMEOUT, |c| c.read_timeout);
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_len.is_some_and(|n| n > BODY_LIMIT) {
                return Err(too_large());
            }
            let read = async {
                let mut body = Vec::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "REQUEST_ERROR",
                            "Invalid request body",
                        )
                    })?;
                    if body.len() + chunk.len() > BODY_LIMIT {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            let body = tokio::time::timeout(read_timeout, read)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "REQUEST_TIMEOUT",
                        "Request body was not received in time",
                    )
                })??;
            parse_json_body(content_type.as_deref(), &body).map(JsonBody)
        })
    }
}

/// The body's bytes as JSON under the framework's content-type rules (lower-cased `content_type`):
/// no body and no type is `Null`; a JSON type needs a non-empty, valid body; another type with a body is
/// 415. Strings may not carry NUL (PostgreSQL cannot store it): a 400 that names the field.
pub fn parse_json_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let is_json = content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime == "application/json" || mime.ends_with("+json")
    });
    let value = match (content_type.is_some(), is_json, body.is_empty()) {
        (false, _, true) => Value::Null,
        (true, true, true) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "FST_ERR_CTP_EMPTY_JSON_BODY",
                "Body cannot be empty when content-type is set to 'application/json'",
            ))
        }
        (true, false, true) => Value::Null,
        (_, false, false) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "FST_ERR_CTP_INVALID_MEDIA_TYPE",
                "Unsupported Media Type",
            ))
        }
        (_, true, false) => serde_json::from_slice(body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "FST_ERR_CTP_INVALID_JSON_BODY",
                "Body is not valid JSON",
            )
        })?,
    };
    if let Some(path) = may_hold_nul(body).then(|| nul_path(&value)).flatten() {
        let mut invalid = Invalid::default();
        invalid.field(&path, NUL_MESSAGE);
        invalid.finish("Invalid request body")?;
    }
    Ok(value)
}

/// The path (`a.b[2]`, `(root)` for the value itself) of the first string or key holding a NUL, if any.
/// Iterative (a deeply nested body cannot exhaust the stack), and paths are built only for the one
/// found: each visited value keeps a link to its parent, so memory stays linear in the body's size.
pub fn nul_path(value: &Value) -> Option<String> {
    enum Seg<'a> {
        Root,
        Key(&'a str),
        Index(usize),
    }
    // (parent position, segment) per visited value; the stack holds positions to visit.
    let mut visited: Vec<(usize, Seg<'_>)> = vec![(0, Seg::Root)];
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    let path_of = |visited: &[(usize, Seg<'_>)], mut at: usize| {
        let mut segs = Vec::new();
        while let Some((parent, seg)) = visited.get(at) {
            match seg {
                Seg::Root => break,
                Seg::Key(k) => segs.push(format!(".{k}")),
                Seg::Index(i) => segs.push(format!("[{i}]")),
            }
            at = *parent;
        }
        let path: String = segs.into_iter().rev().collect();
        match path.strip_prefix('.') {
            Some(p) => p.to_string(),
            None if path.is_empty() => "(root)".to_string(),
            None => path,
        }
    };
    while let Some((v, at)) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return Some(path_of(&visited, at)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    visited.push((at, Seg::Index(i)));
                    stack.push((item, visited.len() - 1));
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter() {
                    visited.push((at, Seg::Key(k)));
                    if k.contains('\0') {
                        return Some(path_of(&visited, visited.len() - 1));
                    }
                    stack.push((item, visited.len() - 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// JSON can only carry a NUL as the escape `\u0000`: without one in the text there is nothing to find.
fn may_hold_nul(body: &[u8]) -> bool {
    body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "FST_ERR_CTP_BODY_TOO_LARGE",
        "Request body is too large",
    )
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads fields from a JSON object, recording every problem; `finish` turns them into one 400.
pub struct Form<'a> {
    obj: Option<&'a Map<String, Value>>,
    invalid: Invalid,
}

impl<'a> Form<'a> {
    /// `allow_empty`: a missing body counts as `{}` (for routes whose fields are all optional).
    pub fn new(value: &'a Value) -> Self {
        let mut invalid = Invalid::default();
        let obj = match value {
            Value::Object(map) => Some(map),
            other => {
                invalid.form(format!("Expected object, received {}", type_name(other)));
                None
            }
        };
        Self { obj, invalid }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(key))
    }

    /// The object's keys, for strict bodies that reject unknown keys.
    pub fn reject_unknown(&mut self, allowed: &[&str]) {
        let Some(obj) = self.obj else { return };
        let unknown: Vec<&String> = obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().map(|k| format!("'{k}'")).collect();
            self.invalid.form(format!(
                "Unrecognized key(s) in object: {}",
                names.join(", ")
            ));
        }
    }

    /// A required string whose length (in chars) lies in `min..=max`.
    pub fn string(&mut self, key: &str, min: usize, max: usize) -> Option<String> {
        self.obj?;
        match self.get(key) {
            None => {
                self.invalid.field(key, "Required");
                None
            }
            Some(v) => self.check_string(key, v, min, max),
        }
    }

    /// An optional string: absent is fine, `null` or a wrong type is not.
    pub fn opt_string(&mut self, key: &str, min: usize, max: usize) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(v) => self.check_string(key, v, min, max),
        }
    }

    fn check_string(&mut self, key: &str, v: &Value, min: usize, max: usize) -> Option<String> {
        let Value::String(s) = v else {
            self.invalid
                .field(key, format!("Expected string, received {}", type_name(v)));
            return None;
        };
        let len = s.chars().count();
        if len < min {
            self.invalid.field(
                key,
                format!("String must contain at least {min} character(s)"),
            );
            return None;
        }
        if len > max {
            self.invalid.field(
                key,
                format!("String must contain at most {max} character(s)"),
            );
            return None;
        }
        Some(s.clone())
    }

    /// A required, syntactically valid email address (returned as given; callers normalise).
    pub fn email(&mut self, key: &str) -> Option<String> {
        let s = self.string(key, 1, 320)?;
        if email_address::EmailAddress::is_valid(&s) && !s.contains(char::is_whitespace) {
            Some(s)
        } else {
            self.invalid.field(key, "Invalid email");
            None
        }
    }

    /// A required string from a fixed set.
    pub fn one_of(&mut self, key: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(key, 0, usize::MAX)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            self.invalid.field(
                key,
                format!(
                    "Invalid enum value. Expected {}, received '{s}'",
                    list.join(" | ")
                ),
            );
            None
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.get(key) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.invalid
                    .field(key, format!("Expected boolean, received {}", type_name(v)));
                None
            }
        }
    }

    /// An optional nested object, as its own form (errors are prefixed with `key.`).
    pub fn opt_object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        match self.get(key) {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(v) => {
                self.invalid
                    .field(key, format!("Expected object, received {}", type_name(v)));
                None
            }
        }
    }

    /// A required array of at most `max_items` strings, each `min..=max` chars long.
    pub fn string_list(
        &mut self,
        key: &str,
        max_items: usize,
        min: usize,
        max: usize,
    ) -> Option<Vec<String>> {
        self.obj?;
        match self.get(key) {
            None => {
                self.invalid.field(key, "Required");
                None
            }
            Some(v) => self.check_string_list(key, v, max_items, min, max),
        }
    }

    /// An optional array of strings (absent is fine, `null` or a wrong type is not).
    pub fn opt_string_list(
        &mut self,
        key: &str,
        max_items: usize,
        min: usize,
        max: usize,
    ) -> Option<Vec<String>> {
        let v = self.get(key)?;
        self.check_string_list(key, v, max_items, min, max)
    }

    fn check_string_list(
        &mut self,
        key: &str,
        v: &Value,
        max_items: usize,
        min: usize,
        max: usize,
    ) -> Option<Vec<String>> {
        let Value::Array(items) = v else {
            self.invalid
                .field(key, format!("Expected array, received {}", type_name(v)));
            return None;
        };
        if items.len() > max_items {
            self.invalid.field(
                key,
                format!("Array must contain at most {max_items} element(s)"),
            );
            return None;
        }
        let out: Vec<String> = items
            .iter()
            .filter_map(|item| self.check_string(key, item, min, max))
            .collect();
        (out.len() == items.len()).then_some(out)
    }

    pub fn invalid(&mut self) -> &mut Invalid {
        &mut self.invalid
    }

    pub fn finish(self, message: &'static str) -> Result<(), ApiError> {
        Ok(self.invalid.finish(message)?)
    }
}

/// Fuzzing the body parser: any bytes under any content type get an answer (a value or an error), and
/// NUL anywhere in a JSON body is found.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_are_answered(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            ct in proptest::option::of(prop_oneof![Just("application/json"), Just("text/plain"), Just("application/x+json; charset=utf-8"), Just("")]),
        ) {
            let _ = parse_json_body(ct, &body);
        }

        #[test]
        fn json_shaped_text_is_answered(text in r#"[\[\]{}",:0-9a-z\\u ]{0,200}"#) {
            let _ = parse_json_body(Some("application/json"), text.as_bytes());
        }

        #[test]
        fn nul_is_found_wherever_it_is(depth in 0usize..40, in_key in any::<bool>()) {
            let mut v = if in_key { json!({"a\u{0}": 1}) } else { json!("x\u{0}") };
            for i in 0..depth {
                v = if i % 2 == 0 { json!([1, v]) } else { json!({"k": v}) };
            }
            let text = serde_json::to_vec(&v).unwrap();
            let e = parse_json_body(Some("application/json"), &text).err();
            prop_assert_eq!(e.map(|e| e.status.as_u16()), Some(400));
        }
    }

    #[test]
    fn nul_paths_are_named_and_wide_bodies_stay_cheap() {
        let v = json!({"a": [1, {"b\u{0}": 2}], "c": "ok"});
        assert_eq!(nul_path(&v).as_deref(), Some("a[1].b\u{0}"));
        assert_eq!(nul_path(&json!("x\u{0}")).as_deref(), Some("(root)"));
        assert_eq!(
            nul_path(&json!([["ok", "n\u{0}"]])).as_deref(),
            Some("[0][1]")
        );
        // A long key over many elements: linear memory (this would take gigabytes with a path per element).
        let wide = json!({"k".repeat(100_000): vec![0; 100_000]});
        assert_eq!(nul_path(&wide), None);
        assert!(!may_hold_nul(br#"{"a":"b"}"#));
        assert!(may_hold_nul(br#"{"a":"\u0000"}"#));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json_body(Some("application/json"), deep.as_bytes()).is_err());
    }
}
