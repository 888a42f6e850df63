//! The request extractors every domain's routes use: [`AuthUser`] resolves the caller once per request
//! (an API key, else a bearer token, then the refresh cookie) and [`OrgCtx`] applies the org-context rule
//! (identity spec 2.2): `X-Org-Id` present, well-formed and equal to the route's org (or, in `warn` mode,
//! a recorded fallback), and a membership in both modes. Both look the route up in the access table first
//! (deny by default). An API key must hold the route's scope, and names its own org (see
//! [`resolve_key_org`]); [`api_key_gate`] refuses keys early on the routes that never take one.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde_json::json;

use super::access::{
    AccessConfig, Authenticator, Enforcement, KeyGrant, KeyRefusal, LookupError, Memberships,
    OrgCtx, Principal, Role, API_KEY_PREFIX,
};
use super::ids::{MembershipId, OrgId, UserId};
use super::policy::{self, Keys, Rule};
use crate::platform::http::{hint, org_header, parse_uuid, request_id, route_of, ApiError};

/// An authenticated caller; extraction fails with 401 for anonymous requests.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

impl std::ops::Deref for AuthUser {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

/// `Authorization: Bearer <token>`, the scheme in any case (also read by the gateway's executor edge).
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Unsafe methods authenticated by cookie must come from the web app's own origin (CSRF defence beyond
/// SameSite=Lax). Requests without Origin/Referer (non-browser clients) pass.
pub fn same_origin(req: &HttpRequest, allowed: &str) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        return origin.trim_end_matches('/') == allowed.trim_end_matches('/');
    }
    if let Some(referer) = headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        return url::Url::parse(referer)
            .map(|u| u.origin().ascii_serialization() == allowed.trim_end_matches('/'))
            .unwrap_or(false);
    }
    true
}

fn access_config(req: &HttpRequest) -> Result<web::Data<AccessConfig>, ApiError> {
    req.app_data::<web::Data<AccessConfig>>()
        .cloned()
        .ok_or_else(|| ApiError::internal_from(Missing("AccessConfig")))
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is not registered with the HTTP server")]
struct Missing(&'static str);

#[derive(Debug, thiserror::Error)]
#[error("route {method} {path} has no access rule")]
struct NoRule {
    method: String,
    path: String,
}

/// The route's entry in the access table; a route without one is refused (deny by default).
fn rule_of(req: &HttpRequest) -> Result<&'static Rule, ApiError> {
    let path = route_of(req);
    policy::rule_for(req.method().as_str(), &path).ok_or_else(|| {
        ApiError::internal_from(NoRule {
            method: req.method().to_string(),
            path,
        })
    })
}

/// Whether the bearer credential is an API key (by its prefix; the key itself is checked later). Read
/// on every request by [`api_key_gate`], so it allocates nothing.
fn bearer_is_api_key(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.starts_with(API_KEY_PREFIX)
        })
}

fn key_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "API_KEY_NOT_ALLOWED",
        "API keys cannot be used on this route",
    )
}

/// What the route's rule says about this key: its scopes must grant the route's scope.
fn check_key_route(rule: &Rule, grant: &KeyGrant) -> Result<(), ApiError> {
    match rule.keys {
        Keys::Scope(s) if grant.scopes.grants(s) => Ok(()),
        Keys::Scope(s) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "API_KEY_SCOPE_MISSING",
            format!("API key lacks the scope {s}"),
        )
        .with_details(json!({ "requiredScope": s }))),
        Keys::Ignored | Keys::Refused => Err(key_not_allowed()),
    }
}

/// Refuses an API key on the public routes that never take one (sign-in and sessions), which read no
/// credential themselves, before their handler runs. Every other route refuses or checks a key when it
/// resolves the caller. Matching a route before routing scans every route's pattern, so only paths that
/// begin like one of those public routes are matched here.
pub async fn api_key_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if bearer_is_api_key(req.request()) && policy::may_refuse_keys_early(req.path()) {
        let path = route_of(req.request());
        let refused =
            policy::rule_for(req.method().as_str(), &path).is_some_and(|r| r.keys == Keys::Refused);
        if refused {
            let res = key_not_allowed().error_response();
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The caller of `req`, resolved once per request.
pub async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    if let Some(p) = req.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    let rule = rule_of(req)?;
    let config = access_config(req)?;
    let auth = req
        .app_data::<web::Data<dyn Authenticator>>()
        .cloned()
        .ok_or_else(|| ApiError::internal_from(Missing("Authenticator")))?;
    let cookie = req
        .cookie(&config.session_cookie_name)
        .map(|c| c.value().to_string());
    let resolved = auth
        .authenticate(bearer(req).as_deref(), cookie.as_deref())
        .await?;
    let Some(found) = resolved else {
        return Err(ApiError::unauthenticated());
    };
    let principal = found.principal;
    if let Some(grant) = &principal.api_key {
        check_key_route(rule, grant)?;
    }
    if principal.via_cookie && !same_origin(req, &config.web_origin) {
        return Err(ApiError::forbidden("Cross-site request rejected"));
    }
    if let Some(token) = found.minted_access_token {
        hint(req, |h| h.access_token = Some(token));
    }
    tracing::Span::current().record("user_id", tracing::field::display(principal.user_id));
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.map(AuthUser) })
    }
}

const REQUIRED: &str = "ORG_CONTEXT_REQUIRED";
const INVALID: &str = "INVALID_ORG_CONTEXT";

fn fallback_event(
    req: &HttpRequest,
    reason: &'static str,
    user: UserId,
    route_org: OrgId,
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

/// The org-context rule for `/v1/orgs/{orgId}/…`; the role is checked later by [`OrgCtx::authorize`].
pub async fn resolve_org(req: &HttpRequest) -> Result<OrgCtx, ApiError> {
    let user = authenticate(req).await?;
    let rule = rule_of(req)?;
    let config = access_config(req)?;
    let route_org = req
        .match_info()
        .get("orgId")
        .and_then(parse_uuid)
        .map(OrgId::from)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                INVALID,
                "Route organization id must be a valid UUID",
            )
        })?;
    if let Some(grant) = user.api_key {
        return resolve_key_org(req, user, grant, route_org, rule).await;
    }
    let strict = config.enforcement == Enforcement::Strict;
    let header = org_header(req);
    let bad = |code: &'static str, message: &'static str| {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
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
        Some(raw) => match parse_uuid(raw).map(OrgId::from) {
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
    let Some((role, membership_id)) = membership(req, route_org, user.user_id).await? else {
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
            StatusCode::FORBIDDEN,
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
        required: rule.required(),
    })
}

async fn membership(
    req: &HttpRequest,
    org: OrgId,
    user: UserId,
) -> Result<Option<(Role, MembershipId)>, ApiError> {
    let members = req
        .app_data::<web::Data<dyn Memberships>>()
        .cloned()
        .ok_or_else(|| ApiError::internal_from(Missing("Memberships")))?;
    Ok(members.membership(org, user).await?)
}

/// The org context of an API key: the key names its org, so `X-Org-Id` is optional, but when given it
/// must be that org (in either enforcement mode: keys are new, no client relies on a fallback). A route
/// of another org is refused as for a non-member. The key acts as its creator, at the lowest of the
/// key's role and the creator's current role; a creator who left the org takes the key's access along.
async fn resolve_key_org(
    req: &HttpRequest,
    user: Principal,
    grant: KeyGrant,
    route_org: OrgId,
    rule: &Rule,
) -> Result<OrgCtx, ApiError> {
    let denied =
        |message: &'static str| ApiError::new(StatusCode::FORBIDDEN, "ORG_ACCESS_DENIED", message);
    if route_org != grant.org_id {
        return Err(denied("API key does not belong to this organization"));
    }
    let header = org_header(req);
    match header.as_deref().map(str::trim) {
        None | Some("") => {}
        Some(raw) => match parse_uuid(raw).map(OrgId::from) {
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    INVALID,
                    "X-Org-Id must be a valid UUID",
                ))
            }
            Some(h) if h != grant.org_id => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    INVALID,
                    "X-Org-Id does not match the API key's organization",
                ))
            }
            Some(_) => {}
        },
    }
    let Some((member_role, membership_id)) = membership(req, route_org, user.user_id).await? else {
        return Err(denied(
            "The API key's creator is no longer a member of this organization",
        ));
    };
    tracing::Span::current().record("org_id", tracing::field::display(route_org));
    Ok(OrgCtx {
        org_id: route_org,
        role: grant.role.lower(member_role),
        user,
        membership_id,
        required: rule.required(),
    })
}

impl FromRequest for OrgCtx {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { resolve_org(&req).await })
    }
}

/// A failed lookup: the database's answer (503 when unreachable).
impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Db(db) => db.into(),
            LookupError::KeyRefused(r) => {
                let code = match r {
                    KeyRefusal::Invalid => "API_KEY_INVALID",
                    KeyRefusal::Expired => "API_KEY_EXPIRED",
                    KeyRefusal::Revoked => "API_KEY_REVOKED",
                };
                ApiError::new(StatusCode::UNAUTHORIZED, code, r.to_string())
            }
        }
    }
}

/// A role refusal as the spec's 403.
impl From<super::access::Denied> for ApiError {
    fn from(d: super::access::Denied) -> Self {
        ApiError::forbidden(d.message)
    }
}
