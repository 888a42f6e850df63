//! A `trigger.cron` schedule: a standard 5-field cron expression (or 6 fields, seconds first, for
//! schedules finer than a minute), read by the `croner` crate, in an optional IANA time zone
//! (`config.timezone`, default UTC). Ticks are computed in that zone, so `0 9 * * *` in
//! `Europe/Paris` fires at 09:00 Paris time across daylight-saving changes.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde_json::Value;

/// The longest expression accepted (a schedule, not a document).
const EXPRESSION_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("Invalid cron expression: {0}")]
    Expression(String),
    #[error("Unknown time zone '{0}' (expected an IANA name such as 'Europe/Paris')")]
    TimeZone(String),
}

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        if expression.len() > EXPRESSION_MAX {
            return Err(ScheduleError::Expression("too long".into()));
        }
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(ScheduleError::Expression(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; got {fields}"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::Expression(e.to_string()))?;
        let zone = match timezone.map(str::trim).filter(|z| !z.is_empty()) {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::TimeZone(name.to_owned()))?,
        };
        Ok(Self { cron, zone })
    }

    /// The schedule of a trigger's `config` (`{cron, timezone?}`).
    pub fn of_config(config: &Value) -> Result<Self, ScheduleError> {
        let expression = config
            .get("cron")
            .and_then(Value::as_str)
            .ok_or_else(|| ScheduleError::Expression("missing".into()))?;
        let zone = config.get("timezone").and_then(Value::as_str);
        Self::parse(expression, zone)
    }

    /// The latest tick at or before `now`, if the schedule has one.
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first tick after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_tick_on_minutes_and_six_on_seconds() {
        let hourly = Schedule::parse("0 * * * *", None).unwrap();
        assert_eq!(
            hourly.latest_at_or_before(at("2026-12-04T10:59:59Z")),
            Some(at("2026-12-04T10:00:00Z"))
        );
        assert_eq!(
            hourly.latest_at_or_before(at("2026-12-04T11:00:00Z")),
            Some(at("2026-12-04T11:00:00Z"))
        );
        let every_2s = Schedule::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(
            every_2s.next_after(at("2026-12-04T10:00:01Z")),
            Some(at("2026-12-04T10:00:02Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_ticks() {
        let nine = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        // Winter: Paris is UTC+1.
        assert_eq!(
            nine.next_after(Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()),
            Some(at("2026-12-04T08:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            nine.next_after(Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap()),
            Some(at("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_a_reason() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * * *", "every day"] {
            assert!(
                matches!(
                    Schedule::parse(bad, None),
                    Err(ScheduleError::Expression(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
        assert!(Schedule::of_config(&serde_json::json!({"cron": "*/5 * * * *"})).is_ok());
    }
}
