//! GitHub OAuth2 (not OIDC): authorize URL with state + PKCE, code exchange, then `/user` and `/user/emails`.
//! Only a verified email is ever used; the profile's public email is not proof of ownership.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::model::{Flow, Identity, OAuthError, Pending};
use crate::domain::auth::config::GithubConfig;
use crate::platform::crypto;

const SCOPE: &str = "read:user user:email";
const API_ACCEPT: &str = "application/vnd.github+json";

pub fn authorization_url(cfg: &GithubConfig, flow: &Flow) -> Result<String, OAuthError> {
    if !cfg.enabled() {
        return Err(OAuthError::NotConfigured);
    }
    let mut url = url::Url::parse(cfg.authorize_url.trim()).map_err(|e| {
        tracing::error!(error = %e, "oauth.github.authorize_url is not a valid URL");
        OAuthError::NotConfigured
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", cfg.client_id.trim())
        .append_pair("redirect_uri", cfg.redirect_uri.trim())
        .append_pair("scope", SCOPE)
        .append_pair("state", &flow.state)
        .append_pair(
            "code_challenge",
            &crypto::sha256_b64url(flow.code_verifier.as_bytes()),
        )
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// GitHub answers failed exchanges with 200 and an `error` code.
    error: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    login: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

pub async fn identify(
    cfg: &GithubConfig,
    http: &reqwest::Client,
    code: &str,
    pending: &Pending,
) -> Result<Identity, OAuthError> {
    if !cfg.enabled() {
        return Err(OAuthError::NotConfigured);
    }
    let token = exchange(cfg, http, code, pending).await?;
    let api = cfg.api_url.trim().trim_end_matches('/');
    let (user_url, emails_url) = (format!("{api}/user"), format!("{api}/user/emails"));
    let (profile, emails) = tokio::join!(
        get_json::<Profile>(http, &user_url, &token, "user"),
        get_json::<Vec<Email>>(http, &emails_url, &token, "user/emails"),
    );
    let (profile, emails) = (profile?, emails?);
    let email = pick_email(&emails).ok_or(OAuthError::EmailRequired)?;
    Ok(Identity {
        email: email.to_string(),
        display_name: profile
            .name
            .filter(|n| !n.trim().is_empty())
            .or(profile.login),
    })
}

async fn exchange(
    cfg: &GithubConfig,
    http: &reqwest::Client,
    code: &str,
    pending: &Pending,
) -> Result<String, OAuthError> {
    let res = http
        .post(cfg.token_url.trim())
        .header(ACCEPT, "application/json")
        .form(&[
            ("client_id", cfg.client_id.trim()),
            ("client_secret", cfg.client_secret.expose().trim()),
            ("code", code),
            ("redirect_uri", cfg.redirect_uri.trim()),
            ("code_verifier", pending.code_verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| OAuthError::exchange(format!("github token request: {}", e.without_url())))?;
    let status = res.status();
    if !status.is_success() {
        return Err(OAuthError::exchange(format!(
            "github token endpoint status {}",
            status.as_u16()
        )));
    }
    let body: TokenResponse = res
        .json()
        .await
        .map_err(|_| OAuthError::exchange("github token response is not the expected JSON"))?;
    match (body.access_token, body.error) {
        (Some(t), None) if !t.is_empty() => Ok(t),
        (_, Some(error)) => Err(OAuthError::exchange(format!(
            "github token endpoint error {}",
            error.chars().take(64).collect::<String>()
        ))),
        _ => Err(OAuthError::exchange("github token response has no token")),
    }
}

async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    what: &str,
) -> Result<T, OAuthError> {
    let res = http
        .get(url)
        .header(ACCEPT, API_ACCEPT)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header("x-github-api-version", "2022-11-28")
        .send()
        .await
        .map_err(|e| OAuthError::exchange(format!("github {what}: {}", e.without_url())))?;
    let status = res.status();
    if !status.is_success() {
        return Err(OAuthError::exchange(format!(
            "github {what} status {}",
            status.as_u16()
        )));
    }
    res.json()
        .await
        .map_err(|_| OAuthError::exchange(format!("github {what} is not the expected JSON")))
}

/// The primary address if verified, else any verified one; never an unverified address.
fn pick_email(emails: &[Email]) -> Option<&str> {
    let usable = |e: &&Email| e.verified && !e.email.trim().is_empty();
    emails
        .iter()
        .filter(usable)
        .find(|e| e.primary)
        .or_else(|| emails.iter().find(usable))
        .map(|e| e.email.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(email: &str, primary: bool, verified: bool) -> Email {
        Email {
            email: email.into(),
            primary,
            verified,
        }
    }

    #[test]
    fn picks_primary_verified_then_any_verified_never_unverified() {
        let list = [e("a@x", false, true), e("b@x", true, true)];
        assert_eq!(pick_email(&list), Some("b@x"));
        let list = [e("p@x", true, false), e("v@x", false, true)];
        assert_eq!(pick_email(&list), Some("v@x"));
        let list = [e("p@x", true, false), e("q@x", false, false)];
        assert_eq!(pick_email(&list), None);
        assert_eq!(pick_email(&[]), None);
    }
}
