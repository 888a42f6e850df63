//! `GET /v1/orgs/{orgId}/audit?limit&cursor&action&actorUserId&targetType&since&until` (owner/admin):
//! the org's audit log, newest first: `{entries:[…], nextCursor}` (`nextCursor` null on the last page).
//! Bad filters are 400 with the field, never ignored.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Action, Audit, Filter};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::page::{decode, parse_limit, query_map};
use crate::platform::http::{ApiError, Invalid};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/audit", web::get().to(list));
}

const KNOWN: [&str; 7] = [
    "limit",
    "cursor",
    "action",
    "actorUserId",
    "targetType",
    "since",
    "until",
];

fn time(
    inv: &mut Invalid,
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let raw = q.get(key)?;
    match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.with_timezone(&chrono::Utc)),
        Err(_) => {
            inv.field(key, "Expected an RFC 3339 date-time");
            None
        }
    }
}

async fn list(
    audit: web::Data<Audit>,
    req: actix_web::HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let q = query_map(req.query_string(), &KNOWN)?;
    let limit = parse_limit(&q, 50, 200)?;
    let before = match q.get("cursor") {
        Some(c) => decode(c)?,
        None => None,
    };
    let mut inv = Invalid::default();
    let action = q.get("action").and_then(|a| {
        let parsed = Action::parse(a);
        if parsed.is_none() {
            inv.field("action", "Unknown action");
        }
        parsed
    });
    let actor = q
        .get("actorUserId")
        .and_then(|a| match uuid::Uuid::parse_str(a) {
            Ok(id) => Some(id.into()),
            Err(_) => {
                inv.field("actorUserId", "Expected a UUID");
                None
            }
        });
    let target_type = q.get("targetType").cloned();
    let since = time(&mut inv, &q, "since");
    let until = time(&mut inv, &q, "until");
    inv.finish("Invalid query")?;
    let (entries, next) = audit
        .list(
            &ctx,
            Filter {
                action,
                actor,
                target_type,
                since,
                until,
                limit,
                before,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "entries": entries, "nextCursor": next })))
}
