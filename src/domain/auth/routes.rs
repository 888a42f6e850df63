//! `/v1/auth/*` and `/v1/me`: parse, call the service, answer.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::model::{ClientMeta, User, UserView};
use super::password::MAX_PASSWORD_BYTES;
use super::tokens::SessionView;
use super::{AuthError, AuthService, IssuedSession};
use crate::domain::common::access::AccessConfig;
use crate::domain::common::extract::{same_origin, AuthUser};
use crate::domain::common::ids::OrgId;
use crate::domain::orgs::model::MyOrg;
use crate::platform::http::client_ip::client_ip;
use crate::platform::http::openapi::{BadRequest, ErrorBody, OkBody, TooManyRequests};
use crate::platform::http::{ApiError, Form, JsonBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/auth/signup", web::post().to(signup))
        .route("/v1/auth/login", web::post().to(login))
        .route("/v1/auth/refresh", web::post().to(refresh))
        .route("/v1/auth/logout", web::post().to(logout))
        .route("/v1/auth/logout-all", web::post().to(logout_all))
        .route("/v1/me", web::get().to(me));
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::EmailTaken => ApiError::conflict("Email already registered"),
            AuthError::InvalidCredentials => ApiError::unauthorized("Invalid credentials"),
            AuthError::Throttled(t) => ApiError::rate_limited(t.retry_after_secs),
            AuthError::RefreshInvalid => {
                ApiError::unauthorized("Refresh token is invalid or expired")
            }
            AuthError::SessionInvalid => ApiError::unauthorized("Session is invalid"),
            AuthError::Workspace(e) => e.into(),
            AuthError::Db(e) => e.into(),
            e @ (AuthError::Hash(_) | AuthError::Inconsistent(_)) => ApiError::internal_from(e),
        }
    }
}

pub fn client_meta(req: &HttpRequest) -> ClientMeta {
    ClientMeta {
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        ip: client_ip(req).map(|ip| ip.to_string()),
    }
}

/// The refresh cookie: HttpOnly, Path=/, SameSite=Lax, Max-Age = session TTL, Secure per config.
pub fn session_cookie(auth: &AuthService, value: String) -> Cookie<'static> {
    let config = auth.config();
    Cookie::build(config.session_cookie_name.clone(), value)
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .secure(auth.secure_cookies())
        .max_age(CookieDuration::seconds(config.session_ttl_secs))
        .finish()
}

pub fn clear_cookie(auth: &AuthService, name: &str) -> Cookie<'static> {
    let mut c = Cookie::build(name.to_string(), "")
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .secure(auth.secure_cookies())
        .finish();
    c.make_removal();
    c
}

/// `{session, user}` with the refresh cookie set.
pub fn session_response(
    auth: &AuthService,
    status: StatusCode,
    user: &User,
    issued: IssuedSession,
    extra: Option<(&str, serde_json::Value)>,
) -> HttpResponse {
    let mut body = json!({ "session": issued.session, "user": UserView::from(user) });
    if let (Some((k, v)), Some(obj)) = (extra, body.as_object_mut()) {
        obj.insert(k.to_string(), v);
    }
    HttpResponse::build(status)
        .cookie(session_cookie(auth, issued.refresh_token))
        .json(body)
}

/// Email and password of a sign-up or login body (`min_password` chars at least).
fn credentials(
    body: &JsonBody,
    min_password: usize,
    with_name: bool,
    message: &'static str,
) -> Result<(String, String, Option<String>), ApiError> {
    let mut f = Form::new(&body.0);
    let email = f.email("email");
    let password = f.string("password", min_password, usize::MAX);
    let display_name = if with_name {
        f.opt_string("displayName", 1, 120)
    } else {
        None
    };
    if password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PASSWORD_BYTES)
    {
        f.invalid().field(
            "password",
            format!("Password must be at most {MAX_PASSWORD_BYTES} bytes"),
        );
    }
    f.finish(message)?;
    match (email, password) {
        (Some(email), Some(password)) => Ok((email, password, display_name)),
        _ => Err(ApiError::bad_request(message)),
    }
}

/// Creates an account and signs it in (the refresh token is set as the session cookie).
#[utoipa::path(
    post, path = "/v1/auth/signup", operation_id = "signup", tag = "auth",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Signed up and signed in; sets the refresh cookie", body = SessionBody),
        (status = 400, response = BadRequest),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 429, response = TooManyRequests),
    )
)]
async fn signup(
    auth: web::Data<AuthService>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (email, password, display_name) = credentials(&body, 8, true, "Invalid signup payload")?;
    let (user, issued) = auth
        .signup(&email, password, display_name, &client_meta(&req))
        .await?;
    Ok(session_response(
        &auth,
        StatusCode::CREATED,
        &user,
        issued,
        None,
    ))
}

/// Signs in with email and password (sets the refresh cookie).
#[utoipa::path(
    post, path = "/v1/auth/login", operation_id = "login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; sets the refresh cookie", body = SessionBody),
        (status = 400, response = BadRequest),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 429, response = TooManyRequests),
    )
)]
async fn login(
    auth: web::Data<AuthService>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (email, password, _) = credentials(&body, 1, false, "Invalid login payload")?;
    let (user, issued) = auth.login(&email, password, &client_meta(&req)).await?;
    Ok(session_response(&auth, StatusCode::OK, &user, issued, None))
}

/// Trades the refresh cookie for a new access token (and a rotated cookie). No body.
#[utoipa::path(
    post, path = "/v1/auth/refresh", operation_id = "refreshSession", tag = "auth",
    security(("sessionCookie" = [])),
    responses(
        (status = 200, description = "A new session; sets the rotated refresh cookie", body = SessionBody),
        (status = 401, description = "No, or an invalid or expired, refresh cookie", body = ErrorBody),
        (status = 403, description = "Cross-site request", body = ErrorBody),
    )
)]
async fn refresh(
    auth: web::Data<AuthService>,
    access: web::Data<AccessConfig>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Refresh is authenticated by the cookie alone: the same cross-site rule as other cookie writes.
    if !same_origin(&req, &access.web_origin) {
        return Err(ApiError::forbidden("Cross-site request rejected"));
    }
    let cookie = req
        .cookie(&auth.config().session_cookie_name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Session cookie is required"))?;
    let (user, issued) = auth.refresh(&cookie).await?;
    Ok(session_response(&auth, StatusCode::OK, &user, issued, None))
}

/// Ends the caller's session and clears the cookie. No body.
#[utoipa::path(
    post, path = "/v1/auth/logout", operation_id = "logout", tag = "auth",
    responses((status = 200, description = "Signed out", body = OkBody))
)]
async fn logout(auth: web::Data<AuthService>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    auth.logout(&user).await?;
    Ok(HttpResponse::Ok()
        .cookie(clear_cookie(&auth, &auth.config().session_cookie_name))
        .json(json!({ "ok": true })))
}

/// Ends every session of the caller. No body.
#[utoipa::path(
    post, path = "/v1/auth/logout-all", operation_id = "logoutAll", tag = "auth",
    responses((status = 200, description = "Every session ended", body = LogoutAllBody))
)]
async fn logout_all(
    auth: web::Data<AuthService>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let n = auth.logout_all(&user).await?;
    Ok(HttpResponse::Ok()
        .cookie(clear_cookie(&auth, &auth.config().session_cookie_name))
        .json(json!({ "ok": true, "revokedCount": n })))
}

/// The caller, the orgs they belong to and the default one.
#[utoipa::path(
    get, path = "/v1/me", operation_id = "getMe", tag = "auth",
    responses((status = 200, description = "The signed-in user", body = MeBody))
)]
async fn me(auth: web::Data<AuthService>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let (user, orgs) = auth.me(&caller).await?;
    let default_org = orgs.first().map(|o| o.id);
    Ok(HttpResponse::Ok().json(json!({
        "user": UserView::from(&user),
        "orgs": orgs,
        "defaultOrgId": default_org,
    })))
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

/// `POST /v1/auth/signup`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupRequest {
    #[schema(format = "email")]
    pub email: String,
    #[schema(min_length = 8)]
    pub password: String,
    #[schema(min_length = 1, max_length = 120)]
    pub display_name: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(format = "email")]
    pub email: String,
    #[schema(min_length = 1)]
    pub password: String,
}

/// A new session: the access token (`session.token`, sent as `Authorization: Bearer`) and its user.
#[derive(utoipa::ToSchema)]
pub struct SessionBody {
    pub session: SessionView,
    pub user: UserView,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogoutAllBody {
    pub ok: bool,
    pub revoked_count: i64,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeBody {
    pub user: UserView,
    pub orgs: Vec<MyOrg>,
    pub default_org_id: Option<OrgId>,
}
