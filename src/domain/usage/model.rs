//! Usage as recorded and as reported: one LLM call to write, the window and filters of a report (parsed
//! from the query at the boundary), and the report's wire shape.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::common::ids::{OrgId, RunId};

/// The longest window a report may span.
pub const MAX_SPAN_DAYS: i64 = 366;
/// How many sessions `bySession` lists (those with the most tokens).
pub const TOP_SESSIONS: i64 = 100;

/// One LLM call to record. Counts are as the provider reported them; negative values are stored as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub org: OrgId,
    /// The agent session whose turn made the call. A plain UUID: the sessions domain owns its typed id.
    pub session_id: Option<Uuid>,
    /// The run whose `agent.run` node made the call.
    pub run_id: Option<RunId>,
    pub node_id: Option<String>,
    /// `openai`, `anthropic`, `gemini`, …
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
    /// Estimated cost in micro-USD (the price table's; 0 for an unknown model).
    pub cost_micros: i64,
}

/// Which end of the window a query value is: a bare date means the start of that day for `since` and
/// the end of it (the next midnight, exclusive) for `until`, so `since=2026-12-01&until=2026-12-31`
/// covers all of December.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Since,
    Until,
}

/// An instant from a query value: RFC 3339 (`2026-12-04T10:00:00Z`, any offset), a date-time without an
/// offset (read as UTC), or a date (`2026-12-04`, UTC). `None` when it is none of these.
pub fn parse_instant(raw: &str, bound: Bound) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&t));
    }
    // Exactly `YYYY-MM-DD` (the parser would take `2026-12-4` too).
    if raw.len() != 10 {
        return None;
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    let day = match bound {
        Bound::Since => day,
        Bound::Until => day.succ_opt()?,
    };
    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?))
}

/// The first instant of `t`'s calendar month (UTC).
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(t, |d| Utc.from_utc_datetime(&d))
}

/// Why a window was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("since must be before until")]
    Order,
    #[error("the window may span at most {MAX_SPAN_DAYS} days")]
    TooLong,
}

/// `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Window {
    /// The window asked for: `until` defaults to `now`, `since` to the start of the calendar month of
    /// `until`'s last instant (so no parameters means this month so far).
    pub fn resolve(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let until = until.unwrap_or(now);
        let since = since.unwrap_or_else(|| month_start(until - Duration::microseconds(1)));
        if since >= until {
            return Err(WindowError::Order);
        }
        if until - since > Duration::days(MAX_SPAN_DAYS) {
            return Err(WindowError::TooLong);
        }
        Ok(Self { since, until })
    }
}

/// What a report covers: the window and optional filters (absent = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub window: Window,
    pub session_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
}

/// Micro-USD as USD.
pub fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// Everything in the window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    /// `costMicros / 1e6`.
    pub cost_usd: f64,
    /// Estimated cost in micro-USD.
    pub cost_micros: i64,
}

/// One UTC day with calls.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// One provider and model.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionUsage {
    pub session_id: Uuid,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// The org's monthly token budget and this calendar month's (UTC) use, whatever the report's window and
/// filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// `llm.budget.monthlyTokens` of the org's settings; `null` when there is no budget.
    pub monthly_tokens: Option<i64>,
    /// Input and output tokens of this month's calls.
    pub used_this_month: i64,
    /// What is left (never below 0); `null` when there is no budget.
    pub remaining: Option<i64>,
}

impl Budget {
    pub fn new(monthly_tokens: Option<i64>, used_this_month: i64) -> Self {
        Self {
            monthly_tokens,
            used_this_month,
            remaining: monthly_tokens.map(|b| b.saturating_sub(used_this_month).max(0)),
        }
    }

    /// Whether no more calls may be made this month.
    pub fn exhausted(&self) -> bool {
        self.monthly_tokens
            .is_some_and(|b| self.used_this_month >= b)
    }
}

/// The `usage` object of `GET /v1/orgs/{orgId}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// The window's start (inclusive), ISO 8601 UTC.
    pub since: String,
    /// The window's end (exclusive), ISO 8601 UTC.
    pub until: String,
    pub totals: Totals,
    /// Days with calls, oldest first.
    pub by_day: Vec<DayUsage>,
    /// Most tokens first.
    pub by_model: Vec<ModelUsage>,
    /// Calls made by sessions only, the 100 with the most tokens, most first.
    pub by_session: Vec<SessionUsage>,
    pub budget: Budget,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn instants_dates_and_naive_times_parse() {
        use Bound::{Since, Until};
        assert_eq!(
            parse_instant("2026-12-04T10:00:00Z", Since),
            Some(at("2026-12-04T10:00:00Z"))
        );
        assert_eq!(
            parse_instant("2026-12-04T12:00:00+02:00", Until),
            Some(at("2026-12-04T10:00:00Z"))
        );
        assert_eq!(
            parse_instant("2026-12-04T10:00:00.250", Since),
            Some(at("2026-12-04T10:00:00.250Z"))
        );
        assert_eq!(
            parse_instant("2026-12-04", Since),
            Some(at("2026-12-04T00:00:00Z"))
        );
        // A date as the end includes the whole day.
        assert_eq!(
            parse_instant("2026-12-31", Until),
            Some(at("2027-01-01T00:00:00Z"))
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-12-4",
            "12/04/2026",
            "1733300000",
            "2026-12-04T25:00:00Z",
        ] {
            assert_eq!(parse_instant(bad, Since), None, "{bad}");
            assert_eq!(parse_instant(bad, Until), None, "{bad}");
        }
    }

    #[test]
    fn month_start_is_the_first_midnight_of_the_utc_month() {
        assert_eq!(
            month_start(at("2026-12-04T18:10:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            month_start(at("2026-12-01T00:00:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        // Another offset's "December 1st" is still November in UTC.
        assert_eq!(
            month_start(at("2026-12-01T01:00:00+02:00")),
            at("2026-11-01T00:00:00Z")
        );
    }

    #[test]
    fn windows_default_to_this_month_and_refuse_bad_orders_and_spans() {
        let now = at("2026-12-04T18:10:00Z");
        assert_eq!(
            Window::resolve(None, None, now),
            Ok(Window {
                since: at("2026-12-01T00:00:00Z"),
                until: now
            })
        );
        // Only an end: the month that end falls in.
        let until = at("2026-11-01T00:00:00Z");
        assert_eq!(
            Window::resolve(None, Some(until), now).map(|w| w.since),
            Ok(at("2026-10-01T00:00:00Z"))
        );
        // Only a start: up to now.
        let since = at("2026-06-01T00:00:00Z");
        assert_eq!(
            Window::resolve(Some(since), None, now).map(|w| w.until),
            Ok(now)
        );
        assert_eq!(
            Window::resolve(Some(now), Some(now), now),
            Err(WindowError::Order)
        );
        assert_eq!(
            Window::resolve(Some(now + Duration::seconds(1)), None, now),
            Err(WindowError::Order)
        );
        let year = at("2025-12-04T18:10:00Z");
        assert!(Window::resolve(Some(year), None, now).is_ok());
        assert_eq!(
            Window::resolve(Some(year - Duration::days(2)), None, now),
            Err(WindowError::TooLong)
        );
        assert!(Window::resolve(Some(now - Duration::days(MAX_SPAN_DAYS)), None, now).is_ok());
    }

    #[test]
    fn budgets_count_down_and_never_below_zero() {
        assert_eq!(Budget::new(None, 50).remaining, None);
        assert!(!Budget::new(None, i64::MAX).exhausted());
        assert_eq!(Budget::new(Some(100), 60).remaining, Some(40));
        assert!(!Budget::new(Some(100), 99).exhausted());
        assert!(Budget::new(Some(100), 100).exhausted());
        assert_eq!(Budget::new(Some(100), 110).remaining, Some(0));
        assert_eq!(usd(1_500), 0.0015);
    }
}
