//! `/v1/orgs/{orgId}/api-keys…`: owners and admins, signed in (never with a key: the access table refuses
//! keys here). The full key appears in the creation answer and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::model::{ApiKeyView, NewApiKey, MAX_NAME_CHARS};
use super::{ApiKeyError, ApiKeys};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::ApiKeyId;
use crate::domain::common::scope::{Scope, Scopes};
use crate::platform::http::openapi::{BadRequest, ErrorBody, OkBody};
use crate::platform::http::{path_uuid, ApiError, Form, JsonBody};

const INVALID: &str = "Invalid API key payload";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/api-keys", web::post().to(create))
        .route("/v1/orgs/{orgId}/api-keys", web::get().to(list))
        .route(
            "/v1/orgs/{orgId}/api-keys/{keyId}",
            web::delete().to(revoke),
        );
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "API_KEY_NOT_FOUND",
        "API key not found",
    )
}

impl From<ApiKeyError> for ApiError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::NotFound => not_found(),
            ApiKeyError::Denied(d) => d.into(),
            ApiKeyError::Db(e) => e.into(),
        }
    }
}

/// `{name, scopes, expiresAt?}`: a name of 1..=120 characters (not only spaces), at least one known scope
/// (duplicates are folded), and an optional RFC 3339 expiry in the future (`null` = never).
fn parse_new_key(body: &Value) -> Result<NewApiKey, ApiError> {
    let mut f = Form::new(body);
    let name = f.string("name", 1, MAX_NAME_CHARS);
    if name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        f.invalid().field("name", "Name must not be blank");
    }
    let names = f.string_list("scopes", Scope::ALL.len() * 2, 1, 64);
    let mut scopes = Scopes::default();
    for n in names.iter().flatten() {
        match Scope::parse(n) {
            Some(s) => scopes.insert(s),
            None => {
                let allowed: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                f.invalid().field(
                    "scopes",
                    format!(
                        "Unknown scope '{n}'. Expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    if names.as_ref().is_some_and(Vec::is_empty) {
        f.invalid()
            .field("scopes", "Array must contain at least 1 element(s)");
    }
    let expires_at = match body.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) if t.with_timezone(&Utc) > Utc::now() => Some(t.with_timezone(&Utc)),
            Ok(_) => {
                f.invalid()
                    .field("expiresAt", "Expiry must be in the future");
                None
            }
            Err(_) => {
                f.invalid().field(
                    "expiresAt",
                    "Expected an RFC 3339 date-time, e.g. 2027-01-31T00:00:00Z",
                );
                None
            }
        },
        Some(_) => {
            f.invalid().field("expiresAt", "Expected string or null");
            None
        }
    };
    f.finish(INVALID)?;
    match name {
        Some(name) if !scopes.is_empty() => Ok(NewApiKey {
            name: name.trim().to_string(),
            scopes,
            expires_at,
        }),
        _ => Err(ApiError::bad_request(INVALID)),
    }
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/orgs/{orgId}/api-keys`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyRequest {
    /// 1..120 characters.
    pub name: String,
    /// Scope names, e.g. `workflows:read`, `runs:write`, `secrets:write`, `agents:admin`.
    pub scopes: Vec<String>,
    /// RFC 3339, in the future; absent or `null` for no expiry.
    pub expires_at: Option<String>,
}

/// A key as listed: never its secret or hash.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyObject {
    pub id: uuid::Uuid,
    pub name: String,
    /// What the key starts with (`vsk_<org><id>`), to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_by_user_id: uuid::Uuid,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKeyBody {
    pub api_key: ApiKeyObject,
    /// The full key, shown this once.
    pub key: String,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyObject>,
}

#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/api-keys", operation_id = "createApiKey", tag = "api-keys",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created; the key is in `key`, shown once", body = CreatedApiKeyBody),
        (status = 400, response = BadRequest),
    )
)]
async fn create(
    keys: web::Data<ApiKeys>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let new = parse_new_key(&body.0)?;
    let created = keys.create(&ctx, new).await?;
    Ok(HttpResponse::Created().json(json!({
        "apiKey": ApiKeyView::from(&created.row),
        "key": created.key,
    })))
}

#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/api-keys", operation_id = "listApiKeys", tag = "api-keys",
    params(("orgId" = Uuid, Path, description = "The organization")),
    responses((status = 200, description = "The org's keys, newest first, revoked ones included", body = ApiKeyList))
)]
async fn list(keys: web::Data<ApiKeys>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let rows = keys.list(&ctx).await?;
    let views: Vec<ApiKeyView> = rows.iter().map(ApiKeyView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "apiKeys": views })))
}

#[utoipa::path(
    delete, path = "/v1/orgs/{orgId}/api-keys/{keyId}", operation_id = "revokeApiKey", tag = "api-keys",
    params(("orgId" = Uuid, Path, description = "The organization"), ("keyId" = Uuid, Path, description = "The key")),
    responses(
        (status = 200, description = "Revoked at once on every instance (again: unchanged)", body = OkBody),
        (status = 404, description = "`API_KEY_NOT_FOUND`", body = ErrorBody),
    )
)]
async fn revoke(
    keys: web::Data<ApiKeys>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = path_uuid(&req, "keyId", not_found).map(ApiKeyId::from)?;
    keys.revoke(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}
