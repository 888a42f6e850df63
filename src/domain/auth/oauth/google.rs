//! Google through OpenID Connect (`openidconnect`): discovery from the issuer (cached, with its JWKS), the
//! authorization URL with PKCE and nonce, the code exchange and a fully verified ID token (signature, `iss`,
//! `aud`, `exp`, nonce, `at_hash`), and `email_verified == true`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata, CoreTokenResponse,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EmptyAdditionalClaims, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse,
};
use tokio::sync::RwLock;

use super::model::{Flow, Identity, OAuthError, Pending};
use crate::domain::auth::config::GoogleConfig;

/// Discovery (metadata + JWKS) is trusted this long before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A signature that no cached key verifies triggers one re-discovery (key rotation) if the cache is at
/// least this old, so a stream of forged tokens cannot make us hammer the provider.
const REFRESH_ON_UNKNOWN_KEY_AFTER: Duration = Duration::from_secs(60);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;
type Claims = IdTokenClaims<EmptyAdditionalClaims, CoreGenderClaim>;

struct Discovered {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// The provider metadata of the configured issuer, fetched on first use.
#[derive(Default)]
pub struct Discovery {
    cache: RwLock<Option<Arc<Discovered>>>,
}

impl Discovery {
    async fn get(
        &self,
        cfg: &GoogleConfig,
        http: &reqwest::Client,
    ) -> Result<Arc<Discovered>, String> {
        if let Some(d) = self.cache.read().await.as_ref() {
            if d.fetched.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        self.refresh(cfg, http).await
    }

    async fn refresh(
        &self,
        cfg: &GoogleConfig,
        http: &reqwest::Client,
    ) -> Result<Arc<Discovered>, String> {
        let issuer = IssuerUrl::new(cfg.issuer_url.trim().to_string())
            .map_err(|_| "oauth.google.issuer_url is not a valid URL".to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| format!("google discovery: {}", discovery_cause(&e)))?;
        let d = Arc::new(Discovered {
            metadata,
            fetched: Instant::now(),
        });
        *self.cache.write().await = Some(d.clone());
        Ok(d)
    }
}

/// A short, secret-free description of a discovery failure.
fn discovery_cause<E: std::error::Error>(e: &openidconnect::DiscoveryError<E>) -> String {
    use openidconnect::DiscoveryError as D;
    match e {
        D::Response(status, _, _) => format!("status {}", status.as_u16()),
        D::Request(_) => "request failed".into(),
        D::Parse(p) => format!("unexpected document at {}", p.path()),
        D::UrlParse(_) => "bad URL".into(),
        D::Validation(m) | D::Other(m) => m.chars().take(200).collect(),
        _ => "failed".into(),
    }
}

fn client(cfg: &GoogleConfig, d: &Discovered) -> Result<Client, OAuthError> {
    let redirect = RedirectUrl::new(cfg.redirect_uri.trim().to_string()).map_err(|_| {
        tracing::error!("oauth.google.redirect_uri is not a valid URL");
        OAuthError::NotConfigured
    })?;
    Ok(CoreClient::from_provider_metadata(
        d.metadata.clone(),
        ClientId::new(cfg.client_id.trim().to_string()),
        Some(ClientSecret::new(
            cfg.client_secret.expose().trim().to_string(),
        )),
    )
    .set_redirect_uri(redirect))
}

pub async fn authorization_url(
    cfg: &GoogleConfig,
    discovery: &Discovery,
    http: &reqwest::Client,
    flow: &Flow,
) -> Result<String, OAuthError> {
    if !cfg.enabled() {
        return Err(OAuthError::NotConfigured);
    }
    let d = discovery
        .get(cfg, http)
        .await
        .map_err(OAuthError::Unavailable)?;
    let client = client(cfg, &d)?;
    let verifier = PkceCodeVerifier::new(flow.code_verifier.clone());
    let (state, nonce) = (flow.state.clone(), flow.nonce.clone());
    // `openid` is added by the client itself.
    let (url, _, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
        .url();
    Ok(url.into())
}

pub async fn identify(
    cfg: &GoogleConfig,
    discovery: &Discovery,
    http: &reqwest::Client,
    code: &str,
    pending: &Pending,
) -> Result<Identity, OAuthError> {
    if !cfg.enabled() {
        return Err(OAuthError::NotConfigured);
    }
    let d = discovery
        .get(cfg, http)
        .await
        .map_err(OAuthError::Exchange)?;
    let token = exchange(&client(cfg, &d)?, http, code, pending).await?;
    let nonce = Nonce::new(pending.nonce.clone());
    let (client, claims) = match verify(cfg, &d, &token, &nonce) {
        Err(Refused::Signature(_)) if d.fetched.elapsed() >= REFRESH_ON_UNKNOWN_KEY_AFTER => {
            // Maybe the provider rotated its keys since discovery: fetch them once more.
            let fresh = discovery
                .refresh(cfg, http)
                .await
                .map_err(OAuthError::Exchange)?;
            verify(cfg, &fresh, &token, &nonce)?
        }
        other => other?,
    };

    identity_of(&client, http, &token, &claims).await
}

/// The email from the ID token, else from userinfo; either way it must be marked verified.
async fn identity_of(
    client: &Client,
    http: &reqwest::Client,
    token: &CoreTokenResponse,
    claims: &Claims,
) -> Result<Identity, OAuthError> {
    let (email, verified, name) = match claims.email() {
        Some(email) => (
            Some(email.to_string()),
            claims.email_verified(),
            claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        ),
        None => {
            let info = user_info(client, http, token, claims).await?;
            (
                info.email().map(|e| e.to_string()),
                info.email_verified(),
                claims
                    .name()
                    .or(info.name())
                    .and_then(|n| n.get(None))
                    .map(|n| n.to_string()),
            )
        }
    };
    match (email, verified) {
        (Some(email), Some(true)) if !email.trim().is_empty() => Ok(Identity {
            email,
            display_name: name,
        }),
        _ => Err(OAuthError::EmailRequired),
    }
}

async fn exchange(
    client: &Client,
    http: &reqwest::Client,
    code: &str,
    pending: &Pending,
) -> Result<CoreTokenResponse, OAuthError> {
    client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|_| OAuthError::exchange("google metadata has no token endpoint"))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.code_verifier.clone()))
        .request_async(http)
        .await
        .map_err(|e| {
            OAuthError::exchange(match e {
                RequestTokenError::ServerResponse(r) => {
                    format!("google token endpoint error {}", r.error())
                }
                RequestTokenError::Request(_) => "google token request failed".into(),
                RequestTokenError::Parse(p, _) => {
                    format!("google token response unexpected at {}", p.path())
                }
                RequestTokenError::Other(m) => {
                    format!(
                        "google token endpoint: {}",
                        m.chars().take(200).collect::<String>()
                    )
                }
            })
        })
}

/// Why an ID token was refused: a bad signature may only mean our cached keys are stale.
enum Refused {
    Signature(String),
    Other(OAuthError),
}

impl From<OAuthError> for Refused {
    fn from(e: OAuthError) -> Self {
        Self::Other(e)
    }
}

impl From<Refused> for OAuthError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Signature(cause) => OAuthError::exchange(format!("google id_token {cause}")),
            Refused::Other(e) => e,
        }
    }
}

/// The client built from `d` and the ID-token claims it verified.
fn verify(
    cfg: &GoogleConfig,
    d: &Discovered,
    token: &CoreTokenResponse,
    nonce: &Nonce,
) -> Result<(Client, Claims), Refused> {
    let client = client(cfg, d)?;
    let claims = verified_claims(&client, token, nonce)?;
    Ok((client, claims))
}

/// Signature via the JWKS, `iss`, `aud`, `exp` and the nonce (its own error), then `at_hash`.
fn verified_claims(
    client: &Client,
    token: &CoreTokenResponse,
    nonce: &Nonce,
) -> Result<Claims, Refused> {
    let id_token = token
        .id_token()
        .ok_or_else(|| OAuthError::exchange("google token response has no id_token"))?;
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, nonce).map_err(|e| match e {
        ClaimsVerificationError::InvalidNonce(_) => Refused::Other(OAuthError::InvalidNonce),
        ClaimsVerificationError::SignatureVerification(s) => {
            Refused::Signature(format!("signature: {s}"))
        }
        other => Refused::Other(OAuthError::exchange(format!("google id_token: {other}"))),
    })?;
    // The access token must be the one this ID token was issued with.
    if let Some(expected) = claims.access_token_hash() {
        let actual = id_token
            .signing_alg()
            .ok()
            .zip(id_token.signing_key(&verifier).ok())
            .and_then(|(alg, key)| {
                AccessTokenHash::from_token(token.access_token(), alg, key).ok()
            });
        if actual.as_ref() != Some(expected) {
            return Err(OAuthError::exchange("google id_token at_hash mismatch").into());
        }
    }
    Ok(claims.clone())
}

async fn user_info(
    client: &Client,
    http: &reqwest::Client,
    token: &CoreTokenResponse,
    claims: &Claims,
) -> Result<CoreUserInfoClaims, OAuthError> {
    client
        .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        .map_err(|_| OAuthError::exchange("google metadata has no userinfo endpoint"))?
        .request_async(http)
        .await
        .map_err(|e| {
            use openidconnect::UserInfoError as U;
            OAuthError::exchange(match e {
                U::Response(status, _, _) => format!("google userinfo status {}", status.as_u16()),
                U::ClaimsVerification(c) => format!("google userinfo: {c}"),
                U::Parse(p) => format!("google userinfo unexpected at {}", p.path()),
                U::Request(_) => "google userinfo request failed".into(),
                _ => "google userinfo failed".into(),
            })
        })
}
