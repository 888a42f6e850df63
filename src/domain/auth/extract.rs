//! The `AuthUser` extractor: resolves the caller once per request (bearer, then refresh cookie), records
//! a re-minted access token for the response, and refuses cross-site cookie-authenticated writes.

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::model::Principal;
use crate::app::state::AppState;
use crate::platform::http::{hint, ApiError};

/// An authenticated caller; extraction fails with 401 for anonymous requests.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

impl std::ops::Deref for AuthUser {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
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

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if let Some(p) = req.extensions().get::<Principal>() {
                return Ok(AuthUser(p.clone()));
            }
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(ApiError::internal)?;
            let cookie = req
                .cookie(&state.config.auth.session_cookie_name)
                .map(|c| c.value().to_string());
            let resolved = state
                .auth
                .authenticate(bearer(&req).as_deref(), cookie.as_deref())
                .await?;
            let Some((principal, minted)) = resolved else {
                return Err(ApiError::unauthenticated());
            };
            if principal.via_cookie && !same_origin(&req, &state.config.web.base_url) {
                return Err(ApiError::forbidden("Cross-site request rejected"));
            }
            if let Some(token) = minted {
                hint(&req, |h| h.access_token = Some(token));
            }
            req.extensions_mut().insert(principal.clone());
            Ok(AuthUser(principal))
        })
    }
}
