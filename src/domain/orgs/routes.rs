//! `/v1/orgs…` and `/v1/invitations/{token}/accept`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::model::{InvitationView, MembershipView, OrgView};
use super::{settings, OrgError, Orgs};
use crate::domain::common::access::{OrgCtx, Role};
use crate::domain::common::extract::AuthUser;
use crate::domain::common::ids::{InvitationId, MembershipId};
use crate::domain::common::ids::{OrgId, UserId};
use crate::platform::http::openapi::{BadRequest, ErrorBody};
use crate::platform::http::{
    org_header, parse_uuid, path_uuid, request_id, route_of, ApiError, Form, JsonBody,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/orgs", web::post().to(create_org))
        .route("/v1/orgs/{orgId}/invitations", web::post().to(invite))
        .route(
            "/v1/orgs/{orgId}/members/{memberId}/role",
            web::post().to(change_role),
        )
        .route("/v1/orgs/{orgId}/settings", web::get().to(get_settings))
        .route("/v1/orgs/{orgId}/settings", web::put().to(put_settings))
        .route("/v1/orgs/{orgId}/billing/credits", web::get().to(credits))
        .route("/v1/invitations/{token}/accept", web::post().to(accept));
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::SlugTaken => ApiError::conflict("Organization slug already exists"),
            OrgError::NoPersonalSlug => {
                ApiError::conflict("Could not allocate a personal workspace slug")
            }
            OrgError::OrgNotFound => ApiError::not_found("Organization not found"),
            OrgError::Denied(d) => d.into(),
            OrgError::MembershipNotFound => ApiError::not_found("Membership not found"),
            OrgError::LastOwner => ApiError::conflict("Organization must keep at least one owner"),
            OrgError::InvitationNotFound => ApiError::not_found("Invitation not found"),
            OrgError::InvitationForSomeoneElse => {
                ApiError::forbidden("Invitation email does not match authenticated user")
            }
            OrgError::InvitationExpired => ApiError::bad_request("Invitation has expired"),
            OrgError::InvitationNotPending => ApiError::bad_request("Invitation is not pending"),
            OrgError::InvalidSettings(r) => r.into(),
            OrgError::Db(e) => e.into(),
        }
    }
}

/// Creates an organization; the caller becomes its owner. No `X-Org-Id`.
#[utoipa::path(
    post, path = "/v1/orgs", operation_id = "createOrg", tag = "orgs",
    request_body = CreateOrgRequest,
    responses(
        (status = 201, description = "Created", body = OrgCreated),
        (status = 400, response = BadRequest),
        (status = 409, description = "Slug already exists", body = ErrorBody),
    )
)]
async fn create_org(
    orgs: web::Data<Orgs>,
    user: AuthUser,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut f = Form::new(&body.0);
    let name = f.string("name", 2, 120);
    let slug = f.string("slug", 3, 50);
    if let Some(s) = &slug {
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            f.invalid().field("slug", "Invalid");
        }
    }
    f.finish("Invalid organization payload")?;
    let (Some(name), Some(slug)) = (name, slug) else {
        return Err(ApiError::bad_request("Invalid organization payload"));
    };
    let (org, membership) = orgs.create_org(user.user_id, name, slug).await?;
    Ok(HttpResponse::Created().json(json!({
        "organization": OrgView::from(&org),
        "membership": MembershipView::from(&membership),
    })))
}

/// Invites an email into the org (owner/admin). The invitation's token is shown once.
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/invitations", operation_id = "inviteMember", tag = "orgs",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "Invited", body = InvitationBody),
        (status = 400, response = BadRequest),
    )
)]
async fn invite(
    orgs: web::Data<Orgs>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    let email = f.email("email");
    let role = f.one_of("roleKey", &["admin", "member"]);
    f.finish("Invalid invitation payload")?;
    let (Some(email), Some(role)) = (email, role.as_deref().and_then(Role::parse)) else {
        return Err(ApiError::bad_request("Invalid invitation payload"));
    };
    let invitation = orgs.invite(&ctx, &email, role).await?;
    Ok(HttpResponse::Created().json(json!({ "invitation": invitation })))
}

/// Changes a member's role (owner/admin; only an owner assigns or changes `owner`).
#[utoipa::path(
    post, path = "/v1/orgs/{orgId}/members/{memberId}/role", operation_id = "changeMemberRole", tag = "orgs",
    params(
        ("orgId" = Uuid, Path, description = "The organization"),
        ("memberId" = Uuid, Path, description = "The member's user id"),
    ),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The updated membership", body = MembershipBody),
        (status = 400, response = BadRequest),
        (status = 404, description = "Membership not found", body = ErrorBody),
        (status = 409, description = "The org would be left without an owner", body = ErrorBody),
    )
)]
async fn change_role(
    orgs: web::Data<Orgs>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let mut f = Form::new(&body.0);
    let role = f.one_of("roleKey", &["owner", "admin", "member"]);
    f.finish("Invalid role update payload")?;
    let role = role
        .as_deref()
        .and_then(Role::parse)
        .ok_or_else(|| ApiError::bad_request("Invalid role update payload"))?;
    let target = path_uuid(&req, "memberId", || {
        ApiError::not_found("Membership not found")
    })?;
    let membership = orgs.change_role(&ctx, UserId::from(target), role).await?;
    Ok(HttpResponse::Ok().json(json!({ "membership": MembershipView::from(&membership) })))
}

/// The org's settings.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/settings", operation_id = "getOrgSettings", tag = "orgs",
    params(("orgId" = Uuid, Path, description = "The organization")),
    responses((status = 200, description = "The settings", body = SettingsBody))
)]
async fn get_settings(orgs: web::Data<Orgs>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let stored = orgs.stored_settings(ctx.org_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&stored) })))
}

/// Replaces the org's settings (owner/admin; strict: unknown keys are a 400).
#[utoipa::path(
    put, path = "/v1/orgs/{orgId}/settings", operation_id = "putOrgSettings", tag = "orgs",
    params(("orgId" = Uuid, Path, description = "The organization")),
    request_body(content = Object, description = "The settings document (see the workflows spec)"),
    responses(
        (status = 200, description = "The saved settings", body = SettingsBody),
        (status = 400, response = BadRequest),
    )
)]
async fn put_settings(
    orgs: web::Data<Orgs>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let saved = orgs.update_settings(&ctx, body.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&saved) })))
}

/// The org's credit balance.
#[utoipa::path(
    get, path = "/v1/orgs/{orgId}/billing/credits", operation_id = "getOrgCredits", tag = "orgs",
    params(("orgId" = Uuid, Path, description = "The organization")),
    responses((status = 200, description = "The balance", body = CreditsBody))
)]
async fn credits(orgs: web::Data<Orgs>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let (balance, updated_at) = orgs.credit_balance(&ctx).await?;
    Ok(HttpResponse::Ok().json(json!({
        "credits": { "organizationId": ctx.org_id, "balanceCredits": balance, "updatedAt": updated_at }
    })))
}

/// Accepts an invitation addressed to the caller's email. No body; `X-Org-Id` optional (must match).
#[utoipa::path(
    post, path = "/v1/invitations/{token}/accept", operation_id = "acceptInvitation", tag = "orgs",
    params(
        ("token" = String, Path, description = "The invitation token (`<orgId>.<secret>`)"),
        ("X-Org-Id" = Option<Uuid>, Header, description = "If sent, must name the invitation's organization"),
    ),
    responses(
        (status = 200, description = "Accepted", body = AcceptedBody),
        (status = 400, description = "Invalid token or org header, expired or not pending", body = ErrorBody),
        (status = 403, description = "The invitation is for another email", body = ErrorBody),
        (status = 404, description = "Invitation not found", body = ErrorBody),
    )
)]
async fn accept(
    orgs: web::Data<Orgs>,
    req: HttpRequest,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let token = req
        .match_info()
        .get("token")
        .unwrap_or_default()
        .to_string();
    let org = token
        .split_once('.')
        .and_then(|(org, _)| parse_uuid(org))
        .map(OrgId::from)
        .ok_or_else(|| ApiError::bad_request("Invalid invitation token"))?;
    if let Some(h) = org_header(&req) {
        let h = parse_uuid(h.trim()).map(OrgId::from).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_ORG_CONTEXT",
                "X-Org-Id must be a valid UUID",
            )
        })?;
        if h != org {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_ORG_CONTEXT",
                "X-Org-Id does not match invitation organization",
            ));
        }
    }
    match orgs.accept_invitation(&user, org, &token).await {
        Ok(a) => Ok(HttpResponse::Ok().json(json!({ "result": {
            "invitationId": a.invitation_id,
            "organizationId": a.organization_id,
            "membershipId": a.membership_id,
            "accepted": true,
        }}))),
        Err(e) => {
            let e = ApiError::from(e);
            let e = if e.status.is_server_error() && e.code != "SERVICE_UNAVAILABLE" {
                let mut failed = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INVITATION_ACCEPT_FAILED",
                    "Invitation accept failed",
                );
                failed.cause = e.cause;
                failed
            } else {
                e
            };
            tracing::warn!(
                event = "invitation_accept_failed",
                tokenPrefix = %token.chars().take(8).collect::<String>(),
                reasonCode = %e.code,
                userId = %user.user_id,
                requestId = %request_id(&req),
                path = %route_of(&req),
                "invitation accept failed"
            );
            Err(e)
        }
    }
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/orgs`.
#[derive(utoipa::ToSchema)]
pub struct CreateOrgRequest {
    #[schema(min_length = 2, max_length = 120)]
    pub name: String,
    /// Lower-case letters, digits and `-`.
    #[schema(min_length = 3, max_length = 50, pattern = "^[a-z0-9-]+$")]
    pub slug: String,
}

#[derive(utoipa::ToSchema)]
pub struct OrgCreated {
    pub organization: OrgView,
    pub membership: MembershipView,
}

/// `POST /v1/orgs/{orgId}/invitations`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteRequest {
    #[schema(format = "email")]
    pub email: String,
    #[schema(pattern = "^(admin|member)$")]
    pub role_key: String,
}

#[derive(utoipa::ToSchema)]
pub struct InvitationBody {
    pub invitation: InvitationView,
}

/// `POST /v1/orgs/{orgId}/members/{memberId}/role`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRequest {
    pub role_key: Role,
}

#[derive(utoipa::ToSchema)]
pub struct MembershipBody {
    pub membership: MembershipView,
}

#[derive(utoipa::ToSchema)]
pub struct SettingsBody {
    /// The normalized settings document.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

#[derive(utoipa::ToSchema)]
pub struct CreditsBody {
    pub credits: Credits,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credits {
    pub organization_id: OrgId,
    pub balance_credits: i64,
    pub updated_at: Option<String>,
}

#[derive(utoipa::ToSchema)]
pub struct AcceptedBody {
    pub result: AcceptedInvitation,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedInvitation {
    pub invitation_id: InvitationId,
    pub organization_id: OrgId,
    pub membership_id: MembershipId,
    pub accepted: bool,
}
