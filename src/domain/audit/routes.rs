//! `GET /v1/orgs/{orgId}/audit?limit&cursor&action&actorUserId&targetType&since&until` (owner/admin):
//! the org's audit log, newest first: `{entries:[…], nextCursor}` (`nextCursor` null on the last page).
//! Bad filters are 400 with the field, never ignored.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Action, Audit, Filter};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::page::{decode, parse_limit, query_map};
use crate::platform::http::openapi::BadRequest;
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

/// One audit row.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryObject {
    pub id: uuid::Uuid,
    pub organization_id: uuid::Uuid,
    pub actor_user_id: Option<uuid::Uuid>,
    /// `user` or `system`.
    pub actor_type: String,
    /// `<object>.<verb>`, e.g. `secret.decrypt`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: String,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub entries: Vec<AuditEntryObject>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/audit", operation_id = "listAudit", tag = "audit",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("limit" = Option<i64>, Query, description = "1..200, default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
        ("action" = Option<String>, Query, description = "Only this action"),
        ("actorUserId" = Option<Uuid>, Query, description = "Only this actor"),
        ("targetType" = Option<String>, Query, description = "Only this kind of target"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
    ),
    responses(
        (status = 200, description = "Newest first", body = AuditList),
        (status = 400, response = BadRequest),
    )
)]
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
