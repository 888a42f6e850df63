//! `GET /v1/auth/oauth/{provider}/start` and `/callback`: the browser flow (redirects) and the JSON flow
//! (`?mode=json`), with the callback's checks in the contract's order.

use std::borrow::Cow;

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::{OAuthError, OAuthService, Provider, NONCE_COOKIE, STATE_COOKIE};
use crate::domain::auth::model::User;
use crate::domain::auth::routes::{clear_cookie, client_meta, session_cookie, session_response};
use crate::domain::auth::{AuthService, IssuedSession};
use crate::platform::http::openapi::{BadRequest, ErrorBody};
use crate::platform::http::{request_id, route_of, ApiError, Invalid};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/auth/oauth/{provider}/start", web::get().to(start))
        .route(
            "/v1/auth/oauth/{provider}/callback",
            web::get().to(callback),
        );
}

/// An OAuth failure as the spec's answer; the code also names the failure in the browser redirect.
fn api_error(e: OAuthError, provider: Provider) -> ApiError {
    match e {
        OAuthError::NotConfigured => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OAUTH_PROVIDER_NOT_CONFIGURED",
            format!("OAuth provider is not configured: {}", provider.as_str()),
        ),
        OAuthError::Unavailable(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "OAUTH_PROVIDER_UNAVAILABLE",
            "OAuth provider is unavailable",
        ),
        OAuthError::InvalidNonce => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "OAUTH_INVALID_NONCE",
            "Invalid OAuth nonce",
        ),
        OAuthError::EmailRequired => ApiError::new(
            StatusCode::BAD_REQUEST,
            "OAUTH_EMAIL_REQUIRED",
            "OAuth provider did not return an email address",
        ),
        OAuthError::AccessDenied => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "OAUTH_ACCESS_DENIED",
            "OAuth authorization was denied",
        ),
        OAuthError::Exchange(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "OAUTH_EXCHANGE_FAILED",
            "OAuth exchange failed",
        ),
        OAuthError::Rejected(message) => ApiError::unauthorized(message),
        OAuthError::Db(e) => e.into(),
        OAuthError::SignIn(e) => e.into(),
    }
}

fn provider_of(req: &HttpRequest) -> Result<Provider, ApiError> {
    req.match_info()
        .get("provider")
        .and_then(Provider::parse)
        .ok_or_else(|| ApiError::bad_request("Unsupported OAuth provider"))
}

/// Every value of every query parameter, in order.
fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

fn values<'q>(pairs: &'q [(String, String)], name: &str) -> Vec<&'q str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn oauth_cookie(web: &Web<'_>, name: &str, value: String) -> Cookie<'static> {
    Cookie::build(name.to_string(), value)
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .secure(web.auth.secure_cookies())
        .max_age(CookieDuration::seconds(web.oauth.context_ttl_secs()))
        .finish()
}

/// The two services a callback answer needs (cookies, redirects, sessions).
struct Web<'a> {
    oauth: &'a OAuthService,
    auth: &'a AuthService,
}

fn found(location: &str) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Found();
    res.insert_header((LOCATION, location.to_string()));
    res
}

/// Starts the sign-in with a provider: a 302 to it, or with `?mode=json` its URL. Sets the state and
/// nonce cookies.
#[utoipa::path(
    get, path = "/v1/auth/oauth/{provider}/start", operation_id = "startOAuth", tag = "auth",
    params(
        ("provider" = String, Path, description = "`google` or `github`"),
        ("mode" = Option<String>, Query, description = "`json` for a JSON answer instead of a redirect"),
    ),
    responses(
        (status = 200, description = "`?mode=json`", body = OAuthStart),
        (status = 302, description = "A redirect to the provider"),
        (status = 400, description = "Unsupported provider", body = ErrorBody),
        (status = 502, description = "`OAUTH_PROVIDER_UNAVAILABLE`", body = ErrorBody),
        (status = 503, description = "`OAUTH_PROVIDER_NOT_CONFIGURED`", body = ErrorBody),
    )
)]
async fn start(
    oauth: web::Data<OAuthService>,
    auth: web::Data<AuthService>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let provider = provider_of(&req)?;
    let json_mode = values(&query_pairs(&req), "mode").first() == Some(&"json");
    let started = oauth.start(provider).await.map_err(|e| {
        if let Some(cause) = e.cause() {
            tracing::warn!(provider = provider.as_str(), cause, "OAuth start failed");
        }
        api_error(e, provider)
    })?;
    let web = Web {
        oauth: &oauth,
        auth: &auth,
    };
    let mut res = if json_mode {
        let mut res = HttpResponse::Ok();
        res.json(json!({
            "provider": provider.as_str(),
            "authorizationUrl": started.authorization_url,
        }))
    } else {
        found(&started.authorization_url).finish()
    };
    add_cookies(
        &mut res,
        [
            oauth_cookie(&web, STATE_COOKIE, started.state_cookie),
            oauth_cookie(&web, NONCE_COOKIE, started.nonce_cookie),
        ],
    );
    Ok(res)
}

/// The validated callback query.
struct CallbackQuery {
    code: String,
    state: String,
    json: bool,
}

enum Parsed {
    Ok(CallbackQuery),
    /// The provider sent `?error=…` without a code (the user cancelled or was refused).
    Denied {
        json: bool,
    },
}

/// Step 2: `code` and `state` non-empty strings, `mode` absent or `json`; else a 400 with details.
fn parse_callback(pairs: &[(String, String)]) -> Result<Parsed, ApiError> {
    let mut invalid = Invalid::default();
    let mut single = |name: &str| -> Option<&str> {
        match values(pairs, name).as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => {
                invalid.field(name, "Expected string, received array");
                None
            }
        }
    };
    let (code, state, mode, error) = (
        single("code"),
        single("state"),
        single("mode"),
        single("error"),
    );
    let mode_ok = mode.is_none_or(|m| m == "json");
    let json = mode == Some("json");
    if invalid.is_empty()
        && mode_ok
        && code.is_none_or(str::is_empty)
        && error.is_some_and(|e| !e.is_empty())
    {
        return Ok(Parsed::Denied { json });
    }
    for (name, value) in [("code", code), ("state", state)] {
        match value {
            None if values(pairs, name).is_empty() => invalid.field(name, "Required"),
            Some("") => invalid.field(name, "String must contain at least 1 character(s)"),
            _ => {}
        }
    }
    if !mode_ok {
        invalid.field("mode", "Invalid literal value, expected \"json\"");
    }
    invalid.finish("Invalid OAuth callback query")?;
    match (code, state) {
        (Some(code), Some(state)) => Ok(Parsed::Ok(CallbackQuery {
            code: code.to_string(),
            state: state.to_string(),
            json,
        })),
        _ => Err(ApiError::bad_request("Invalid OAuth callback query")),
    }
}

/// A failed callback. Checks a-c keep the OAuth cookies (a later correct callback may still succeed);
/// from the consume step on the flow is over and they are cleared.
struct Failure {
    error: OAuthError,
    clear_cookies: bool,
}

impl Failure {
    fn keeping_cookies(error: impl Into<OAuthError>) -> Self {
        Self {
            error: error.into(),
            clear_cookies: false,
        }
    }
    fn clearing_cookies(error: impl Into<OAuthError>) -> Self {
        Self {
            error: error.into(),
            clear_cookies: true,
        }
    }
}

/// The provider's redirect back: signs in (a session and the refresh cookie), then a 302 to the web app,
/// or with `?mode=json` the session as JSON. Failures redirect with a code, or answer the envelope in JSON
/// mode.
#[utoipa::path(
    get, path = "/v1/auth/oauth/{provider}/callback", operation_id = "finishOAuth", tag = "auth",
    params(
        ("provider" = String, Path, description = "`google` or `github`"),
        ("code" = Option<String>, Query, description = "From the provider"),
        ("state" = Option<String>, Query, description = "From the provider"),
        ("error" = Option<String>, Query, description = "From the provider, when the user declined"),
        ("mode" = Option<String>, Query, description = "`json` for a JSON answer instead of a redirect"),
    ),
    responses(
        (status = 200, description = "`?mode=json`: signed in; sets the refresh cookie", body = crate::domain::auth::routes::SessionBody),
        (status = 302, description = "A redirect to the web app, signed in or with the failure's code"),
        (status = 400, response = BadRequest),
        (status = 401, description = "`UNAUTHORIZED` (state or cookies), `OAUTH_INVALID_NONCE`, `OAUTH_ACCESS_DENIED`, `OAUTH_EXCHANGE_FAILED` (JSON mode)", body = ErrorBody),
        (status = 502, description = "`OAUTH_PROVIDER_UNAVAILABLE` (JSON mode)", body = ErrorBody),
        (status = 503, description = "`OAUTH_PROVIDER_NOT_CONFIGURED` (JSON mode)", body = ErrorBody),
    )
)]
async fn callback(
    oauth: web::Data<OAuthService>,
    auth: web::Data<AuthService>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let provider = provider_of(&req)?;
    let web = Web {
        oauth: &oauth,
        auth: &auth,
    };
    let query = match parse_callback(&query_pairs(&req))? {
        Parsed::Ok(q) => q,
        Parsed::Denied { json } => {
            // The flow is over; its state row is left to expire and be purged.
            let failure = Failure::clearing_cookies(OAuthError::AccessDenied);
            return Ok(fail(&web, &req, provider, json, failure));
        }
    };
    match sign_in(&web, &req, provider, &query).await {
        Ok((user, issued)) => Ok(succeed(&web, provider, query.json, &user, issued)),
        Err(failure) => Ok(fail(&web, &req, provider, query.json, failure)),
    }
}

/// Steps a-h: cookies, consume, nonce, exchange, user, session, personal workspace.
async fn sign_in(
    web: &Web<'_>,
    req: &HttpRequest,
    provider: Provider,
    query: &CallbackQuery,
) -> Result<(User, IssuedSession), Failure> {
    // An emptied cookie counts as missing.
    let cookie = |name| req.cookie(name).filter(|c| !c.value().is_empty());
    let (state_cookie, nonce_cookie) = (cookie(STATE_COOKIE), cookie(NONCE_COOKIE));
    let nonce = web
        .oauth
        .check_cookies(
            state_cookie.as_ref().map(|c| c.value()),
            nonce_cookie.as_ref().map(|c| c.value()),
            &query.state,
        )
        .map_err(Failure::keeping_cookies)?;
    let pending = web
        .oauth
        .consume(provider, &query.state, &nonce)
        .await
        .map_err(Failure::clearing_cookies)?;
    let identity = web
        .oauth
        .identify(provider, &query.code, &pending)
        .await
        .map_err(Failure::clearing_cookies)?;
    let (user, issued) = web
        .auth
        .oauth_sign_in(&identity.email, identity.display_name, &client_meta(req))
        .await
        .map_err(Failure::clearing_cookies)?;
    Ok((user, issued))
}

fn succeed(
    web: &Web<'_>,
    provider: Provider,
    json_mode: bool,
    user: &User,
    issued: IssuedSession,
) -> HttpResponse {
    let mut res = if json_mode {
        session_response(
            web.auth,
            StatusCode::OK,
            user,
            issued,
            Some(("provider", json!(provider.as_str()))),
        )
    } else {
        let location = web.oauth.web_redirect(&[
            ("oauth", Cow::Borrowed("success")),
            ("provider", Cow::Borrowed(provider.as_str())),
        ]);
        found(&location)
            .cookie(session_cookie(web.auth, issued.refresh_token))
            .finish()
    };
    add_cookies(&mut res, cleared(web.auth));
    res
}

/// The failure path: the `oauth_callback_failed` event, then the mapped error as JSON or as a redirect
/// to the web app's `/auth` page.
fn fail(
    web: &Web<'_>,
    req: &HttpRequest,
    provider: Provider,
    json_mode: bool,
    failure: Failure,
) -> HttpResponse {
    let cause = failure.error.cause();
    let error = api_error(failure.error, provider);
    tracing::warn!(
        event = "oauth_callback_failed",
        provider = provider.as_str(),
        reasonCode = %error.code,
        requestId = %request_id(req),
        path = %route_of(req),
        cause = cause.as_deref(),
        "OAuth callback failed"
    );
    let mut res = if json_mode {
        error.error_response()
    } else {
        let location = web.oauth.web_redirect(&[
            ("oauth", Cow::Borrowed("error")),
            ("provider", Cow::Borrowed(provider.as_str())),
            ("code", error.code.clone()),
        ]);
        found(&location).finish()
    };
    if failure.clear_cookies {
        add_cookies(&mut res, cleared(web.auth));
    }
    res
}

fn cleared(auth: &AuthService) -> [Cookie<'static>; 2] {
    [
        clear_cookie(auth, STATE_COOKIE),
        clear_cookie(auth, NONCE_COOKIE),
    ]
}

fn add_cookies(res: &mut HttpResponse, cookies: impl IntoIterator<Item = Cookie<'static>>) {
    for c in cookies {
        if let Err(e) = res.add_cookie(&c) {
            tracing::error!(error = %e, cookie = c.name(), "cannot set cookie");
        }
    }
}

/// `?mode=json` of the start route.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthStart {
    pub provider: String,
    pub authorization_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn callback_query_rules() {
        assert!(matches!(
            parse_callback(&pairs("code=c&state=s")),
            Ok(Parsed::Ok(CallbackQuery { json: false, .. }))
        ));
        assert!(matches!(
            parse_callback(&pairs("code=c&state=s&mode=json")),
            Ok(Parsed::Ok(CallbackQuery { json: true, .. }))
        ));
        for bad in [
            "",
            "code=c",
            "state=s",
            "code=&state=s",
            "code=c&state=s&mode=xml",
            "code=c&code=d&state=s",
            "error=access_denied&mode=xml",
        ] {
            let e = parse_callback(&pairs(bad)).err().expect(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.details.is_some(), "{bad}");
        }
        assert!(matches!(
            parse_callback(&pairs("error=access_denied&state=s")),
            Ok(Parsed::Denied { json: false })
        ));
        assert!(matches!(
            parse_callback(&pairs("error=access_denied&mode=json")),
            Ok(Parsed::Denied { json: true })
        ));
    }
}
