//! `/v1/orgs…` and `/v1/invitations/{token}/accept`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::model::{MembershipView, OrgView};
use super::{settings, OrgError, Orgs};
use crate::domain::common::access::{OrgCtx, Role};
use crate::domain::common::extract::AuthUser;
use crate::domain::common::ids::{OrgId, UserId};
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

async fn get_settings(orgs: web::Data<Orgs>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let stored = orgs.stored_settings(ctx.org_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&stored) })))
}

async fn put_settings(
    orgs: web::Data<Orgs>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let saved = orgs.update_settings(&ctx, body.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&saved) })))
}

async fn credits(orgs: web::Data<Orgs>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    ctx.authorize()?;
    let (balance, updated_at) = orgs.credit_balance(&ctx).await?;
    Ok(HttpResponse::Ok().json(json!({
        "credits": { "organizationId": ctx.org_id, "balanceCredits": balance, "updatedAt": updated_at }
    })))
}

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
