//! `GET /v1/orgs/{orgId}/usage?since&until&sessionId&model&provider` (owner/admin): the org's LLM usage in
//! a window, by day, model and session, with its monthly budget. Bad parameters are 400 with the field,
//! never ignored.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::model::{parse_instant, Bound, Filter, UsageReport, Window};
use super::{UsageError, UsageService};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::page::query_map;
use crate::platform::http::openapi::BadRequest;
use crate::platform::http::{ApiError, Invalid};
use crate::platform::validation::parse_uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/usage", web::get().to(report));
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::BudgetExceeded { used, budget } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                UsageError::BUDGET_EXCEEDED,
                "The organization's monthly token budget is spent",
            )
            .with_details(json!({"usedThisMonth": used, "monthlyTokens": budget})),
            UsageError::Settings(e) => e.into(),
            UsageError::Db(e) => e.into(),
        }
    }
}

const KNOWN: [&str; 5] = ["since", "until", "sessionId", "model", "provider"];
const INVALID: &str = "Invalid query";
/// Longest `model` / `provider` filter accepted (as org settings allow for them).
const MAX_NAME_CHARS: usize = 200;

fn instant(
    inv: &mut Invalid,
    q: &HashMap<String, String>,
    key: &str,
    bound: Bound,
) -> Option<DateTime<Utc>> {
    let raw = q.get(key)?;
    let parsed = parse_instant(raw, bound);
    if parsed.is_none() {
        inv.field(
            key,
            "Expected a date (YYYY-MM-DD) or an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z",
        );
    }
    parsed
}

fn name(inv: &mut Invalid, q: &HashMap<String, String>, key: &str) -> Option<String> {
    let raw = q.get(key)?;
    if raw.is_empty() || raw.chars().count() > MAX_NAME_CHARS {
        inv.field(
            key,
            format!("Expected a string of 1..{MAX_NAME_CHARS} characters"),
        );
        return None;
    }
    Some(raw.clone())
}

/// The query as a report filter; every problem is reported at once.
fn parse_filter(query_string: &str, now: DateTime<Utc>) -> Result<Filter, ApiError> {
    let q = query_map(query_string, &KNOWN)?;
    let mut inv = Invalid::default();
    let since = instant(&mut inv, &q, "since", Bound::Since);
    let until = instant(&mut inv, &q, "until", Bound::Until);
    let session_id = q.get("sessionId").and_then(|s| {
        let id = parse_uuid(s);
        if id.is_none() {
            inv.field("sessionId", "Expected a UUID");
        }
        id
    });
    let model = name(&mut inv, &q, "model");
    let provider = name(&mut inv, &q, "provider");
    let window = if inv.is_empty() {
        match Window::resolve(since, until, now) {
            Ok(w) => Some(w),
            Err(e) => {
                inv.field("since", e.to_string());
                None
            }
        }
    } else {
        None
    };
    inv.finish(INVALID)?;
    let window = window.ok_or_else(|| ApiError::bad_request(INVALID))?;
    Ok(Filter {
        window,
        session_id,
        model,
        provider,
    })
}

/// The body of `GET /v1/orgs/{orgId}/usage`.
#[derive(utoipa::ToSchema)]
pub struct UsageBody {
    pub usage: UsageReport,
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/usage", operation_id = "getUsage", tag = "usage",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("since" = Option<String>, Query, description = "Start, inclusive: RFC 3339, or a date (UTC midnight). \
            Default: the first day of `until`'s month"),
        ("until" = Option<String>, Query, description = "End, exclusive: RFC 3339, or a date (that whole day \
            included). Default: now. At most 366 days after `since`"),
        ("sessionId" = Option<Uuid>, Query, description = "Only this session's calls"),
        ("model" = Option<String>, Query, description = "Only this model"),
        ("provider" = Option<String>, Query, description = "Only this provider (`openai`, `anthropic`, `gemini`)"),
    ),
    responses(
        (status = 200, description = "Totals, by day, by model and by session (top 100), and the monthly budget", body = UsageBody),
        (status = 400, response = BadRequest),
    )
)]
async fn report(
    usage: web::Data<UsageService>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let filter = parse_filter(req.query_string(), Utc::now())?;
    let report = usage.report(&ctx, filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "usage": report })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T18:10:00Z")
            .expect("now")
            .with_timezone(&Utc)
    }

    fn fields(query: &str) -> Vec<String> {
        match parse_filter(query, now()) {
            Ok(f) => panic!("{query} accepted: {f:?}"),
            Err(e) => {
                let details = e.details.unwrap_or_default();
                let mut keys: Vec<String> = details["fieldErrors"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                keys.sort();
                keys
            }
        }
    }

    #[test]
    fn a_query_parses_into_a_filter() {
        let f = parse_filter(
            "since=2026-11-01&until=2026-11-30&sessionId=0b5a0c3e-9d5e-4a3c-8a51-5f0e2b1c7d11\
             &model=gpt-4o&provider=openai&other=ignored",
            now(),
        )
        .expect("valid");
        assert_eq!(
            crate::domain::common::time::iso(f.window.since),
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(
            crate::domain::common::time::iso(f.window.until),
            "2026-12-01T00:00:00.000Z"
        );
        assert!(f.session_id.is_some());
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.provider.as_deref(), Some("openai"));
        let f = parse_filter("", now()).expect("defaults");
        assert_eq!(f.window.until, now());
        assert_eq!(f.session_id, None);
    }

    #[test]
    fn bad_queries_name_their_fields() {
        assert_eq!(fields("since=yesterday"), ["since"]);
        assert_eq!(fields("until=2026-12-32"), ["until"]);
        assert_eq!(fields("sessionId=nope&model="), ["model", "sessionId"]);
        assert_eq!(
            fields(&format!("provider={}", "p".repeat(201))),
            ["provider"]
        );
        assert_eq!(fields("since=2026-12-04&until=2026-12-03"), ["since"]);
        assert_eq!(fields("since=2025-01-01&until=2026-12-01"), ["since"]);
        assert_eq!(fields("since=2026-12-01&since=2026-12-02"), ["since"]);
    }
}
