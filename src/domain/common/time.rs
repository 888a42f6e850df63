//! Timestamps as the wire shows them.

use chrono::{DateTime, SecondsFormat, Utc};

/// ISO-8601 UTC with milliseconds, as JavaScript's `toISOString()`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
