//! Keyset pagination shared by the workflow, run and event lists (spec 2.1): `limit` and an opaque
//! `cursor` = base64url(JSON `{"createdAt","id"}`) of the last item returned. The timestamp carries
//! microseconds so that the strict "after" comparison neither repeats nor skips rows (Improve).

use std::collections::HashMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::platform::validation::{Invalid, Rejected, NUL_MESSAGE};

/// A position in a list ordered by `(created_at, id)`.
pub type Position = (DateTime<Utc>, Uuid);

/// Cursors from clients may come with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The cursor naming the row at `(created_at, id)`.
pub fn encode(created_at: DateTime<Utc>, id: Uuid) -> String {
    let doc = json!({
        "createdAt": created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "id": id,
    });
    URL_SAFE_NO_PAD.encode(doc.to_string())
}

/// `Ok(None)` for a cursor that is not base64url JSON (ignored: first page, as the original);
/// 400 for JSON that lacks a valid `createdAt`/`id` (Improve: never a 500).
pub fn decode(raw: &str) -> Result<Option<Position>, Rejected> {
    let Ok(bytes) = LENIENT.decode(raw.trim()) else {
        return Ok(None);
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    let created_at = doc
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let id = doc
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok());
    match (created_at, id) {
        (Some(t), Some(id)) => Ok(Some((t, id))),
        _ => Err(invalid("cursor", "Invalid cursor")),
    }
}

/// The `nextCursor` of a page: the last item's position, `None` only for an empty page.
pub fn next_cursor<T>(items: &[T], position: impl Fn(&T) -> Position) -> Option<String> {
    items.last().map(|item| {
        let (t, id) = position(item);
        encode(t, id)
    })
}

fn invalid(field: &str, message: &str) -> Rejected {
    let mut inv = Invalid::default();
    inv.field(field, message);
    inv.finish("Invalid query").err().unwrap_or(Rejected {
        message: "Invalid query",
        details: json!({"formErrors": [], "fieldErrors": {field: [message]}}),
    })
}

/// Parses a query string into single values; a repeated key among `known` is malformed (the original's
/// parser turned it into an array, which its schema refused). Other keys are ignored.
pub fn query_map(query_string: &str, known: &[&str]) -> Result<HashMap<String, String>, Rejected> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query_string.as_bytes()) {
        let key = k.into_owned();
        // PostgreSQL cannot take NUL; a known key carrying one is refused by name.
        if known.contains(&key.as_str()) && v.contains('\0') {
            return Err(invalid(&key, NUL_MESSAGE));
        }
        if map.contains_key(&key) && known.contains(&key.as_str()) {
            return Err(invalid(&key, "Expected string, received array"));
        }
        map.insert(key, v.into_owned());
    }
    Ok(map)
}

/// `limit`: a decimal integer in `1..=max`, `default` when absent.
pub fn parse_limit(
    query: &HashMap<String, String>,
    default: i64,
    max: i64,
) -> Result<i64, Rejected> {
    let Some(raw) = query.get("limit") else {
        return Ok(default);
    };
    let n = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| invalid("limit", "Expected an integer"))?;
    if n < 1 {
        return Err(invalid(
            "limit",
            "Number must be greater than or equal to 1",
        ));
    }
    if n > max {
        return Err(invalid(
            "limit",
            &format!("Number must be less than or equal to {max}"),
        ));
    }
    Ok(n)
}

/// One page request: how many rows, and the position to continue strictly after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Position>,
}

impl Page {
    /// Validates `limit` (`default`, `1..=max`) and `cursor` (non-empty; see [`decode`]).
    pub fn parse(query_string: &str, default: i64, max: i64) -> Result<Self, Rejected> {
        let query = query_map(query_string, &["limit", "cursor"])?;
        let limit = parse_limit(&query, default, max)?;
        let after = match query.get("cursor") {
            None => None,
            Some(c) if c.is_empty() => {
                return Err(invalid(
                    "cursor",
                    "String must contain at least 1 character(s)",
                ))
            }
            Some(c) => decode(c)?,
        };
        Ok(Self { limit, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trips_microseconds() {
        let t = Utc
            .timestamp_opt(1_790_000_000, 123_456_000)
            .single()
            .unwrap_or_else(Utc::now);
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode(t, id)).ok().flatten(), Some((t, id)));
    }

    #[test]
    fn undecodable_is_ignored_and_incomplete_is_refused() {
        assert_eq!(decode("%%%").ok().flatten(), None);
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode("not json")).ok().flatten(),
            None
        );
        let e = decode(&URL_SAFE_NO_PAD.encode(r#"{"id":"x"}"#)).err();
        assert_eq!(
            e.map(|e| e.details["fieldErrors"]["cursor"].clone()),
            Some(json!(["Invalid cursor"]))
        );
    }

    #[test]
    fn limits() {
        let q = |s: &str| query_map(s, &["limit"]).unwrap_or_default();
        assert_eq!(parse_limit(&q(""), 50, 200).ok(), Some(50));
        assert_eq!(parse_limit(&q("limit=200"), 50, 200).ok(), Some(200));
        for bad in [
            "limit=0",
            "limit=201",
            "limit=abc",
            "limit=",
            "limit=1.5",
            "limit=-1",
        ] {
            assert!(parse_limit(&q(bad), 50, 200).is_err(), "{bad}");
        }
        assert!(query_map("limit=1&limit=2", &["limit"]).is_err());
    }
}
