//! `/v1/orgs/{orgId}/secrets…`: owner/admin only; the value goes in, never out.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use zeroize::Zeroizing;

use super::model::SecretView;
use super::{SecretError, Secrets};
use crate::domain::common::access::OrgCtx;
use crate::domain::common::extract::resolve_org;
use crate::domain::common::ids::SecretId;
use crate::platform::http::openapi::{BadRequest, ErrorBody};
use crate::platform::http::{path_uuid, ApiError, Form, JsonBody};
use crate::platform::validation::NUL_MESSAGE;

/// Cap on a secret's size (Improve: the original had none).
const MAX_VALUE_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs/{orgId}/secrets", web::get().to(list))
        .route("/v1/orgs/{orgId}/secrets", web::post().to(create))
        .route("/v1/orgs/{orgId}/secrets/{secretId}", web::put().to(update))
        .route(
            "/v1/orgs/{orgId}/secrets/{secretId}",
            web::delete().to(remove),
        );
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SECRET_NOT_FOUND",
        "Secret not found",
    )
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SECRETS_NOT_CONFIGURED",
                "Secrets KEK is not configured",
            ),
            SecretError::NotFound => not_found(),
            SecretError::AlreadyExists => ApiError::new(
                StatusCode::CONFLICT,
                "SECRET_ALREADY_EXISTS",
                "Secret already exists",
            ),
            SecretError::ConnectorNotAllowed { connector, allowed } => {
                ApiError::bad_request("Invalid connectorId for secret")
                    .with_details(json!({ "connectorId": connector, "allowed": allowed }))
            }
            SecretError::Db(e) => e.into(),
            e @ (SecretError::Ambiguous | SecretError::Crypto(_) | SecretError::Encoding) => {
                ApiError::internal_from(e)
            }
        }
    }
}

fn secret_id(req: &HttpRequest) -> Result<SecretId, ApiError> {
    path_uuid(req, "secretId", not_found).map(SecretId::from)
}

/// The value: a non-empty string within the cap; whitespace-only is its own error (checked after shape).
fn value_field(f: &mut Form<'_>) -> Option<Zeroizing<String>> {
    let v = f.string("value", 1, usize::MAX).map(Zeroizing::new);
    if v.as_ref().is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        f.invalid().field(
            "value",
            format!("Secret value must be at most {MAX_VALUE_BYTES} bytes"),
        );
        return None;
    }
    v
}

fn require_non_blank(value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SECRET_VALUE_REQUIRED",
            "Secret value is required",
        ));
    }
    Ok(())
}

/// The org's connector secrets: names and metadata, never values (owner/admin).
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/secrets", operation_id = "listSecrets", tag = "secrets",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("connectorId" = Option<String>, Query, description = "Only this connector's secrets"),
    ),
    responses(
        (status = 200, description = "The secrets", body = SecretList),
        (status = 400, response = BadRequest),
    )
)]
async fn list(secrets: web::Data<Secrets>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // The query is validated before the org context (spec order).
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map_err(|_| ApiError::bad_request("Invalid list secrets query"))?;
    let connector = query.get("connectorId").cloned();
    if connector.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(
            ApiError::bad_request("Invalid list secrets query").with_details(
                json!({"formErrors": [], "fieldErrors": {"connectorId": [NUL_MESSAGE]}}),
            ),
        );
    }
    if connector.as_deref().is_some_and(str::is_empty) {
        return Err(ApiError::bad_request("Invalid list secrets query")
            .with_details(json!({"formErrors": [], "fieldErrors": {"connectorId": ["String must contain at least 1 character(s)"]}})));
    }
    let ctx = resolve_org(&req).await?;
    ctx.authorize()?;
    let list = secrets.list(&ctx, connector).await?;
    let views: Vec<SecretView> = list.iter().map(SecretView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "secrets": views })))
}

/// Stores a connector secret (owner/admin); the value is encrypted and never returned.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/secrets", operation_id = "createSecret", tag = "secrets",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body = CreateSecretRequest,
    responses(
        (status = 201, description = "Stored", body = SecretBody),
        (status = 400, description = "Invalid payload, `SECRET_VALUE_REQUIRED`, or a connector that takes no secret", body = ErrorBody),
        (status = 409, description = "`SECRET_ALREADY_EXISTS`", body = ErrorBody),
        (status = 503, description = "`SECRETS_NOT_CONFIGURED` (no KEK), or the database is unavailable", body = ErrorBody),
    )
)]
async fn create(
    secrets: web::Data<Secrets>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    let connector_id = f.string("connectorId", 1, 80);
    let name = f.string("name", 1, 80);
    let value = value_field(&mut f);
    f.finish("Invalid secret payload")?;
    let (Some(connector_id), Some(name), Some(value)) = (connector_id, name, value) else {
        return Err(ApiError::bad_request("Invalid secret payload"));
    };
    require_non_blank(&value)?;
    let secret = secrets.create(&ctx, connector_id, name, value).await?;
    Ok(HttpResponse::Created().json(json!({ "secret": SecretView::from(&secret) })))
}

/// Replaces a secret's value (owner/admin).
#[utoipa::path(
    put, path = "/v1/orgs/{orgId}/secrets/{secretId}", operation_id = "updateSecret", tag = "secrets",
    params(("orgId" = Uuid, Path, description = "The organization"), ("secretId" = Uuid, Path, description = "The secret")),
    request_body = UpdateSecretRequest,
    responses(
        (status = 200, description = "Updated", body = SecretBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "`SECRET_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`SECRETS_NOT_CONFIGURED` (no KEK), or the database is unavailable", body = ErrorBody),
    )
)]
async fn update(
    secrets: web::Data<Secrets>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    let value = value_field(&mut f);
    f.finish("Invalid secret payload")?;
    let value = value.ok_or_else(|| ApiError::bad_request("Invalid secret payload"))?;
    require_non_blank(&value)?;
    let id = secret_id(&req)?;
    let secret = secrets.update_value(&ctx, id, value).await?;
    Ok(HttpResponse::Ok().json(json!({ "secret": SecretView::from(&secret) })))
}

/// Deletes a secret (owner/admin).
#[utoipa::path(
    delete, path = "/v1/orgs/{orgId}/secrets/{secretId}", operation_id = "deleteSecret", tag = "secrets",
    params(("orgId" = Uuid, Path, description = "The organization"), ("secretId" = Uuid, Path, description = "The secret")),
    responses(
        (status = 200, description = "Deleted", body = crate::platform::http::openapi::OkBody),
        (status = 404, description = "`SECRET_NOT_FOUND`", body = ErrorBody),
    )
)]
async fn remove(
    secrets: web::Data<Secrets>,
    req: HttpRequest,
    ctx: OrgCtx,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let id = secret_id(&req)?;
    secrets.delete(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/orgs/{orgId}/secrets`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSecretRequest {
    #[schema(min_length = 1, max_length = 80)]
    pub connector_id: String,
    #[schema(min_length = 1, max_length = 80)]
    pub name: String,
    /// At most 64 KiB; not blank.
    #[schema(min_length = 1, format = Password)]
    pub value: String,
}

/// `PUT /v1/orgs/{orgId}/secrets/{secretId}`.
#[derive(utoipa::ToSchema)]
pub struct UpdateSecretRequest {
    /// At most 64 KiB; not blank.
    #[schema(min_length = 1, format = Password)]
    pub value: String,
}

#[derive(utoipa::ToSchema)]
pub struct SecretBody {
    pub secret: SecretView,
}

#[derive(utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
}
