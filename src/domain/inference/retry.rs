//! When a failed attempt is tried again and what the caller sees when it is not: 429, 5xx, network
//! errors and attempt timeouts are retried with exponential backoff and jitter (or after the provider's
//! `Retry-After`) while attempts and time remain; a stream that already reached the caller is not.

use std::time::{Duration, SystemTime};

use super::{InferenceError, Provider};

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// A non-2xx answer; `body` is already redacted and truncated.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// Connecting, sending or reading failed.
    Network(String),
    /// The per-attempt cap (`inference.timeout_ms`) passed before the call's deadline.
    AttemptTimeout(Duration),
    /// Not JSON, or not the shape the protocol promises.
    Invalid(String),
    /// Neither text nor a tool call.
    Empty,
}

#[derive(Debug)]
pub(crate) enum Next {
    Retry(Duration, String),
    Fail(InferenceError),
}

/// What follows attempt number `attempt` (1-based) failing with `err`.
pub(crate) fn decide(
    p: Provider,
    err: AttemptError,
    attempt: u32,
    max_attempts: u32,
    remaining: Duration,
    emitted: bool,
    jitter_ms: u64,
) -> Next {
    let pre = p.code_prefix();
    let (error, retry_after) = match err {
        AttemptError::Status {
            status,
            retry_after,
            body,
        } => {
            let retryable = status == 429 || status >= 500;
            let e = InferenceError::new(
                format!("{pre}_REQUEST_FAILED:{status}"),
                retryable,
                format!("HTTP {status}: {body}"),
            );
            if !retryable {
                return Next::Fail(e);
            }
            (e, retry_after)
        }
        AttemptError::Network(detail) => (
            InferenceError::new(format!("{pre}_UNAVAILABLE"), true, detail),
            None,
        ),
        AttemptError::AttemptTimeout(d) => (
            InferenceError::new(
                "LLM_TIMEOUT",
                true,
                format!("no answer within the attempt cap of {} ms", d.as_millis()),
            ),
            None,
        ),
        AttemptError::Invalid(detail) => {
            return Next::Fail(InferenceError::new(
                format!("{pre}_RESPONSE_INVALID"),
                false,
                detail,
            ))
        }
        AttemptError::Empty => {
            return Next::Fail(InferenceError::new(
                format!("{pre}_RESPONSE_EMPTY"),
                false,
                "the answer had no text and no tool call",
            ))
        }
    };
    if emitted || attempt >= max_attempts {
        return Next::Fail(error);
    }
    let wait = match retry_after {
        // The provider said when: later than our deadline means failing now, not sleeping into a timeout.
        Some(wait) if wait >= remaining => return Next::Fail(error),
        Some(wait) => wait,
        None => backoff(attempt, jitter_ms),
    };
    // Too little time left for a useful attempt after the wait.
    if wait + Duration::from_millis(50) >= remaining {
        return Next::Fail(error);
    }
    Next::Retry(wait, error.code)
}

/// `min(2000, 200·2^(n-1))` ms plus the jitter (under 100 ms) after the n-th failed attempt.
pub(crate) fn backoff(attempt: u32, jitter_ms: u64) -> Duration {
    let exp = 200u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(exp.min(2000) + jitter_ms.min(99))
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 7231); a date in the past means now.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at: SystemTime = at.with_timezone(&chrono::Utc).into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> AttemptError {
        AttemptError::Status {
            status: code,
            retry_after: retry_after.map(Duration::from_secs),
            body: "x".into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        assert_eq!(parse_retry_after(" 7 ", now), Some(secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1, 0), Duration::from_millis(200));
        assert_eq!(backoff(2, 50), Duration::from_millis(450));
        assert_eq!(backoff(4, 0), Duration::from_millis(1600));
        assert_eq!(backoff(5, 0), Duration::from_millis(2000));
        assert_eq!(backoff(60, 500), Duration::from_millis(2099));
    }

    #[test]
    fn decisions() {
        let p = Provider::Anthropic;
        let code = |n: Next| match n {
            Next::Fail(e) => e.code,
            Next::Retry(d, _) => format!("retry {}", d.as_millis()),
        };
        assert_eq!(
            code(decide(p, status(400, None), 1, 4, secs(60), false, 0)),
            "ANTHROPIC_REQUEST_FAILED:400"
        );
        assert_eq!(
            code(decide(p, status(503, None), 1, 4, secs(60), false, 7)),
            "retry 207"
        );
        assert_eq!(
            code(decide(p, status(429, Some(3)), 2, 4, secs(60), false, 7)),
            "retry 3000"
        );
        // Retry-After beyond the deadline: fail now with the provider's 429.
        assert_eq!(
            code(decide(p, status(429, Some(30)), 1, 4, secs(5), false, 0)),
            "ANTHROPIC_REQUEST_FAILED:429"
        );
        assert_eq!(
            code(decide(p, status(500, None), 4, 4, secs(60), false, 0)),
            "ANTHROPIC_REQUEST_FAILED:500"
        );
        // Text already streamed to the caller: never repeated.
        assert_eq!(
            code(decide(p, status(500, None), 1, 4, secs(60), true, 0)),
            "ANTHROPIC_REQUEST_FAILED:500"
        );
        assert_eq!(
            code(decide(
                p,
                AttemptError::Network("x".into()),
                4,
                4,
                secs(60),
                false,
                0
            )),
            "ANTHROPIC_UNAVAILABLE"
        );
        assert_eq!(
            code(decide(
                p,
                AttemptError::Invalid("x".into()),
                1,
                4,
                secs(60),
                false,
                0
            )),
            "ANTHROPIC_RESPONSE_INVALID"
        );
        assert_eq!(
            code(decide(p, AttemptError::Empty, 1, 4, secs(60), false, 0)),
            "ANTHROPIC_RESPONSE_EMPTY"
        );
        assert_eq!(
            code(decide(
                p,
                AttemptError::AttemptTimeout(secs(1)),
                4,
                4,
                secs(60),
                false,
                0
            )),
            "LLM_TIMEOUT"
        );
        // Backoff longer than the time left: the last error, not a sleep into the deadline.
        assert_eq!(
            code(decide(
                p,
                status(502, None),
                1,
                4,
                Duration::from_millis(150),
                false,
                0
            )),
            "ANTHROPIC_REQUEST_FAILED:502"
        );
    }
}
