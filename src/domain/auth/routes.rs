//! `/v1/auth/*` and `/v1/me`: parse, call the service, answer.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::extract::AuthUser;
use super::model::{User, UserView};
use super::password::MAX_PASSWORD_BYTES;
use super::{ClientMeta, IssuedSession};
use crate::app::config::Config;
use crate::app::state::AppState;
use crate::domain::orgs;
use crate::platform::http::{ApiError, Form, JsonBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/auth/signup", web::post().to(signup))
        .route("/v1/auth/login", web::post().to(login))
        .route("/v1/auth/refresh", web::post().to(refresh))
        .route("/v1/auth/logout", web::post().to(logout))
        .route("/v1/auth/logout-all", web::post().to(logout_all))
        .route("/v1/me", web::get().to(me));
    #[cfg(feature = "oidc")]
    super::oauth::routes::configure(cfg);
}

pub fn client_meta(req: &HttpRequest) -> ClientMeta {
    ClientMeta {
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        ip: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

/// The refresh cookie: HttpOnly, Path=/, SameSite=Lax, Max-Age = session TTL, Secure per config.
pub fn session_cookie(config: &Config, value: String) -> Cookie<'static> {
    Cookie::build(config.auth.session_cookie_name.clone(), value)
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .secure(config.cookie_secure())
        .max_age(CookieDuration::seconds(config.auth.session_ttl_secs))
        .finish()
}

pub fn clear_cookie(config: &Config, name: &str) -> Cookie<'static> {
    let mut c = Cookie::build(name.to_string(), "")
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .secure(config.cookie_secure())
        .finish();
    c.make_removal();
    c
}

/// `{session, user}` with the refresh cookie set.
pub fn session_response(
    config: &Config,
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
        .cookie(session_cookie(config, issued.refresh_token))
        .json(body)
}

async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut f = Form::new(&body.0);
    let email = f.email("email");
    let password = f.string("password", 8, usize::MAX);
    let display_name = f.opt_string("displayName", 1, 120);
    if password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PASSWORD_BYTES)
    {
        f.invalid().field(
            "password",
            format!("Password must be at most {MAX_PASSWORD_BYTES} bytes"),
        );
    }
    f.finish("Invalid signup payload")?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::bad_request("Invalid signup payload"));
    };
    let (user, issued) = state
        .auth
        .signup(&email, password, display_name, &client_meta(&req))
        .await?;
    orgs::ensure_personal_workspace(&state, user.id).await?;
    Ok(session_response(
        &state.config,
        StatusCode::CREATED,
        &user,
        issued,
        None,
    ))
}

async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut f = Form::new(&body.0);
    let email = f.email("email");
    let password = f.string("password", 1, usize::MAX);
    if password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PASSWORD_BYTES)
    {
        f.invalid().field(
            "password",
            format!("Password must be at most {MAX_PASSWORD_BYTES} bytes"),
        );
    }
    f.finish("Invalid login payload")?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::bad_request("Invalid login payload"));
    };
    let (user, issued) = state
        .auth
        .login(&email, password, &client_meta(&req))
        .await?;
    orgs::ensure_personal_workspace(&state, user.id).await?;
    Ok(session_response(
        &state.config,
        StatusCode::OK,
        &user,
        issued,
        None,
    ))
}

async fn refresh(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // Refresh is authenticated by the cookie alone: the same cross-site rule as other cookie writes.
    if !super::extract::same_origin(&req, &state.config.web.base_url) {
        return Err(ApiError::forbidden("Cross-site request rejected"));
    }
    let cookie = req
        .cookie(&state.config.auth.session_cookie_name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Session cookie is required"))?;
    let (user, issued) = state.auth.refresh(&cookie).await?;
    Ok(session_response(
        &state.config,
        StatusCode::OK,
        &user,
        issued,
        None,
    ))
}

async fn logout(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&user).await?;
    Ok(HttpResponse::Ok()
        .cookie(clear_cookie(
            &state.config,
            &state.config.auth.session_cookie_name,
        ))
        .json(json!({ "ok": true })))
}

async fn logout_all(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let n = state.auth.logout_all(&user).await?;
    Ok(HttpResponse::Ok()
        .cookie(clear_cookie(
            &state.config,
            &state.config.auth.session_cookie_name,
        ))
        .json(json!({ "ok": true, "revokedCount": n })))
}

async fn me(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let user = state
        .auth
        .user(caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Session is invalid"))?;
    let orgs = orgs::my_orgs(&state, user.id).await?;
    let default_org = orgs.first().map(|o| o.id);
    Ok(HttpResponse::Ok().json(json!({
        "user": UserView::from(&user),
        "orgs": orgs,
        "defaultOrgId": default_org,
    })))
}
