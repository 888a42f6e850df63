//! `/v1/orgs…` and `/v1/invitations/{token}/accept`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::model::{MembershipView, OrgView, Role};
use super::{settings, OrgCtx};
use crate::app::state::AppState;
use crate::domain::auth::extract::AuthUser;
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

async fn create_org(
    state: web::Data<AppState>,
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
    let (org, membership) = super::create_org(&state, user.user_id, name, slug).await?;
    Ok(HttpResponse::Created().json(json!({
        "organization": OrgView::from(&org),
        "membership": MembershipView::from(&membership),
    })))
}

async fn invite(
    state: web::Data<AppState>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, "Role is not allowed to invite members")?;
    let mut f = Form::new(&body.0);
    let email = f.email("email");
    let role = f.one_of("roleKey", &["admin", "member"]);
    f.finish("Invalid invitation payload")?;
    let (Some(email), Some(role)) = (email, role.as_deref().and_then(Role::parse)) else {
        return Err(ApiError::bad_request("Invalid invitation payload"));
    };
    let invitation = super::invite(&ctx, &state, &email, role).await?;
    Ok(HttpResponse::Created().json(json!({ "invitation": invitation })))
}

async fn change_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(
        Role::Admin,
        "Role is not allowed to change membership roles",
    )?;
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
    let membership = super::change_role(&ctx, &state, target, role).await?;
    Ok(HttpResponse::Ok().json(json!({ "membership": MembershipView::from(&membership) })))
}

async fn get_settings(state: web::Data<AppState>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    let stored = super::stored_settings(&state, ctx.org_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&stored) })))
}

async fn put_settings(
    state: web::Data<AppState>,
    ctx: OrgCtx,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    ctx.require(Role::Admin, "Role is not allowed to manage org settings")?;
    let saved = super::update_settings(&ctx, &state, body.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": settings::normalize(&saved) })))
}

async fn credits(state: web::Data<AppState>, ctx: OrgCtx) -> Result<HttpResponse, ApiError> {
    let (balance, updated_at) = super::credit_balance(&ctx, &state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "credits": { "organizationId": ctx.org_id, "balanceCredits": balance, "updatedAt": updated_at }
    })))
}

async fn accept(
    state: web::Data<AppState>,
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
        .ok_or_else(|| ApiError::bad_request("Invalid invitation token"))?;
    if let Some(h) = org_header(&req) {
        let h = parse_uuid(h.trim()).ok_or_else(|| {
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
    match super::accept_invitation(&state, &user, org, &token).await {
        Ok(a) => Ok(HttpResponse::Ok().json(json!({ "result": {
            "invitationId": a.invitation_id,
            "organizationId": a.organization_id,
            "membershipId": a.membership_id,
            "accepted": true,
        }}))),
        Err(e) => {
            let e = if e.status.is_server_error() && e.code != "SERVICE_UNAVAILABLE" {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INVITATION_ACCEPT_FAILED",
                    "Invitation accept failed",
                )
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
