//! The org-context rule for `/v1/orgs/{orgId}/…` (spec identity 2.2): authenticated caller, `X-Org-Id`
//! present, well-formed and equal to the route org (or, in `warn` mode, a recorded fallback), and a
//! membership in both modes. The resolved org and role are what handlers authorize against.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use super::model::Role;
use crate::app::config::Enforcement;
use crate::app::state::AppState;
use crate::domain::auth::extract::AuthUser;
use crate::domain::auth::model::Principal;
use crate::platform::db::TenantCtx;
use crate::platform::http::{hint, org_header, parse_uuid, request_id, route_of, ApiError};

#[derive(Debug, Clone)]
pub struct OrgCtx {
    pub org_id: Uuid,
    pub user: Principal,
    pub role: Role,
    pub membership_id: Uuid,
}

impl OrgCtx {
    pub fn tenant(&self) -> TenantCtx {
        TenantCtx::user_org(self.user.user_id, self.org_id)
    }

    /// Role guard with an explicit rank: `min` or higher passes, else 403 with the action's message.
    pub fn require(&self, min: Role, message: &'static str) -> Result<(), ApiError> {
        if self.role >= min {
            Ok(())
        } else {
            Err(ApiError::forbidden(message))
        }
    }
}

const REQUIRED: &str = "ORG_CONTEXT_REQUIRED";
const INVALID: &str = "INVALID_ORG_CONTEXT";

fn fallback_event(
    req: &HttpRequest,
    reason: &'static str,
    user: Uuid,
    route_org: Uuid,
    header: Option<&str>,
    message: &str,
) {
    tracing::warn!(
        event = "org_context_header_fallback",
        reason,
        userId = %user,
        routeOrgId = %route_org,
        headerOrgId = header,
        requestId = %request_id(req),
        path = %route_of(req),
        method = %req.method(),
        message,
        "org context header fallback"
    );
    hint(req, |h| h.org_warnings.push(reason));
}

pub async fn resolve(req: &HttpRequest) -> Result<OrgCtx, ApiError> {
    let AuthUser(user) = AuthUser::extract(req).await?;
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(ApiError::internal)?;
    let route_org = req
        .match_info()
        .get("orgId")
        .and_then(parse_uuid)
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                INVALID,
                "Route organization id must be a valid UUID",
            )
        })?;
    let strict = state.config.orgs.context_enforcement == Enforcement::Strict;
    let header = org_header(req);
    let bad = |code: &'static str, message: &'static str| {
        ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, code, message)
    };
    match header.as_deref().map(str::trim) {
        None | Some("") => {
            if strict {
                return Err(bad(REQUIRED, "X-Org-Id header is required"));
            }
            fallback_event(
                req,
                REQUIRED,
                user.user_id,
                route_org,
                header.as_deref(),
                "X-Org-Id header is required",
            );
        }
        Some(raw) => match parse_uuid(raw) {
            None => {
                if strict {
                    return Err(bad(INVALID, "X-Org-Id must be a valid UUID"));
                }
                fallback_event(
                    req,
                    REQUIRED,
                    user.user_id,
                    route_org,
                    Some(raw),
                    "X-Org-Id must be a valid UUID",
                );
            }
            Some(h) if h != route_org => {
                if strict {
                    return Err(bad(
                        INVALID,
                        "X-Org-Id does not match route organization id",
                    ));
                }
                fallback_event(
                    req,
                    INVALID,
                    user.user_id,
                    route_org,
                    Some(raw),
                    "X-Org-Id does not match route organization id",
                );
            }
            Some(_) => {}
        },
    }
    let Some((role, membership_id)) = super::membership_of(&state, route_org, user.user_id).await?
    else {
        tracing::warn!(
            event = "org_context_access_denied",
            userId = %user.user_id,
            orgId = %route_org,
            requestId = %request_id(req),
            path = %route_of(req),
            method = %req.method(),
            "not a member of the organization"
        );
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "ORG_ACCESS_DENIED",
            "You are not a member of this organization",
        ));
    };
    tracing::Span::current().record("org_id", tracing::field::display(route_org));
    Ok(OrgCtx {
        org_id: route_org,
        user,
        role,
        membership_id,
    })
}

impl FromRequest for OrgCtx {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { resolve(&req).await })
    }
}
