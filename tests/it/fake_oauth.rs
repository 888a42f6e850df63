//! A fake OAuth provider on 127.0.0.1:0 speaking the real protocols: an OpenID Connect provider at the root
//! (discovery, JWKS, authorize, token with PKCE S256 checks and RS256 ID tokens, userinfo) and GitHub's
//! OAuth2 + REST endpoints under `/github`. The authorization code picks the behaviour (see [`Scenario`]).
//!
//! `/authorize` plays the user's consent: it accepts two test-only parameters, `fake_code` (the code it
//! will hand out) and `login_hint` (the signed-in email; the standard OIDC parameter).

#![cfg(feature = "oidc")]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub const GOOGLE_CLIENT_ID: &str = "google-test-client";
pub const GOOGLE_CLIENT_SECRET: &str = "google-test-secret";
pub const GITHUB_CLIENT_ID: &str = "github-test-client";
pub const GITHUB_CLIENT_SECRET: &str = "github-test-secret";
const KID: &str = "fake-key-1";

/// Behaviours, chosen by the authorization code.
pub mod scenario {
    /// Token endpoint answers 400 `invalid_grant` (any unknown code does).
    pub const BAD_CODE: &str = "bad-code";
    /// Google: the ID token carries a nonce other than the one sent to `/authorize`.
    pub const WRONG_NONCE: &str = "wrong-nonce";
    /// Google: `email_verified: false`.
    pub const UNVERIFIED: &str = "unverified";
    /// Google: no email in the ID token; userinfo has it (verified).
    pub const EMAIL_IN_USERINFO: &str = "email-in-userinfo";
    /// Google: ID token signed by a key that is not in the JWKS.
    pub const FORGED: &str = "forged";
    /// Google: ID token for another audience.
    pub const WRONG_AUDIENCE: &str = "wrong-aud";
    /// GitHub: the only address (primary, also the profile email) is unverified.
    pub const UNVERIFIED_ONLY: &str = "unverified-only";
    /// GitHub: the primary address is unverified, a secondary one is verified.
    pub const SECONDARY_VERIFIED: &str = "secondary-verified";
    /// GitHub: `/user` answers 500.
    pub const USER_ERROR: &str = "user-error";
}

struct Keys {
    der: Vec<u8>,
    n: String,
    e: String,
    /// Signs forged tokens: not published in the JWKS.
    other_der: Vec<u8>,
}

static KEYS: OnceCell<Arc<Keys>> = OnceCell::const_new();

async fn keys() -> Arc<Keys> {
    KEYS.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let mut rng = rand::thread_rng();
            let key = RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
            let other = RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
            Arc::new(Keys {
                der: key.to_pkcs1_der().expect("der").as_bytes().to_vec(),
                n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
                other_der: other.to_pkcs1_der().expect("der").as_bytes().to_vec(),
            })
        })
        .await
        .expect("keygen task")
    })
    .await
    .clone()
}

#[derive(Clone, Debug)]
struct Grant {
    github: bool,
    code: String,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    email: String,
}

struct Inner {
    base: String,
    keys: Arc<Keys>,
    grants: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, Grant>>,
    token_calls: Mutex<u32>,
    discovery_calls: Mutex<u32>,
}

pub struct FakeOAuth {
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeOAuth {
    pub async fn start() -> Self {
        let keys = keys().await;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake provider");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let inner = Arc::new(Inner {
            base: base.clone(),
            keys,
            grants: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_calls: Mutex::new(0),
            discovery_calls: Mutex::new(0),
        });
        let data = web::Data::from(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(google_token))
                .route("/userinfo", web::get().to(userinfo))
                .route("/github/login/oauth/authorize", web::get().to(authorize))
                .route(
                    "/github/login/oauth/access_token",
                    web::post().to(github_token),
                )
                .route("/github/api/user", web::get().to(github_user))
                .route("/github/api/user/emails", web::get().to(github_emails))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self { base, inner }
    }

    /// Env for the app under test: both providers pointing here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_CLIENT_ID", GOOGLE_CLIENT_ID.into()),
            ("GOOGLE_CLIENT_SECRET", GOOGLE_CLIENT_SECRET.into()),
            (
                "GOOGLE_REDIRECT_URI",
                "http://localhost:3001/v1/auth/oauth/google/callback".into(),
            ),
            ("GOOGLE_ISSUER_URL", self.base.clone()),
            ("GITHUB_CLIENT_ID", GITHUB_CLIENT_ID.into()),
            ("GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET.into()),
            (
                "GITHUB_REDIRECT_URI",
                "http://localhost:3001/v1/auth/oauth/github/callback".into(),
            ),
            (
                "GITHUB_AUTHORIZE_URL",
                format!("{}/github/login/oauth/authorize", self.base),
            ),
            (
                "GITHUB_TOKEN_URL",
                format!("{}/github/login/oauth/access_token", self.base),
            ),
            ("GITHUB_API_URL", format!("{}/github/api", self.base)),
        ]
    }

    /// How many times a token endpoint was called (exchanges attempted).
    pub fn token_calls(&self) -> u32 {
        *self.inner.token_calls.lock().expect("lock")
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_calls(&self) -> u32 {
        *self.inner.discovery_calls.lock().expect("lock")
    }
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn oauth_error(error: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": error }))
}

async fn discovery(s: web::Data<Inner>) -> HttpResponse {
    *s.discovery_calls.lock().expect("lock") += 1;
    let b = &s.base;
    HttpResponse::Ok().json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "userinfo_endpoint": format!("{b}/userinfo"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "email", "email_verified", "name", "nonce"],
    }))
}

async fn jwks(s: web::Data<Inner>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID, "n": s.keys.n, "e": s.keys.e,
    }]}))
}

/// The user's consent: checks the request like a provider would and redirects back with a code.
async fn authorize(s: web::Data<Inner>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let github = req.path().starts_with("/github/");
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let expected_client = if github {
        GITHUB_CLIENT_ID
    } else {
        GOOGLE_CLIENT_ID
    };
    let scopes: Vec<String> = get("scope").split(' ').map(str::to_string).collect();
    let scopes_ok = if github {
        scopes.contains(&"read:user".to_string()) && scopes.contains(&"user:email".to_string())
    } else {
        ["openid", "email", "profile"]
            .iter()
            .all(|w| scopes.contains(&w.to_string()))
            && !get("nonce").is_empty()
    };
    if get("response_type") != "code"
        || get("client_id") != expected_client
        || get("redirect_uri").is_empty()
        || get("state").is_empty()
        || get("code_challenge").is_empty()
        || get("code_challenge_method") != "S256"
        || !scopes_ok
    {
        return HttpResponse::BadRequest().body(format!("bad authorization request: {q:?}"));
    }
    let code = q
        .get("fake_code")
        .cloned()
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let prefix = if github { "github" } else { "google" };
    let grant = Grant {
        github,
        code: code.clone(),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        challenge: get("code_challenge"),
        nonce: q.get("nonce").cloned(),
        email: q
            .get("login_hint")
            .cloned()
            .unwrap_or_else(|| format!("{prefix}-{code}@example.com")),
    };
    s.grants
        .lock()
        .expect("lock")
        .insert(code.clone(), grant.clone());
    let mut back = url::Url::parse(&grant.redirect_uri).expect("redirect uri");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    HttpResponse::Found()
        .insert_header((header::LOCATION, back.to_string()))
        .finish()
}

/// Client credentials from HTTP Basic (client_secret_basic) or the form (client_secret_post).
fn client_credentials(req: &HttpRequest, f: &HashMap<String, String>) -> (String, String) {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(id, secret)| {
                let dec = |x: &str| {
                    url::form_urlencoded::parse(format!("x={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(id), dec(secret))
            })
        });
    basic.unwrap_or_else(|| {
        (
            f.get("client_id").cloned().unwrap_or_default(),
            f.get("client_secret").cloned().unwrap_or_default(),
        )
    })
}

/// Takes the grant of `code` (single use) if the PKCE verifier, redirect URI and client all match.
fn redeem(
    s: &Inner,
    f: &HashMap<String, String>,
    client: &(String, String),
    github: bool,
) -> Option<Grant> {
    *s.token_calls.lock().expect("lock") += 1;
    let code = f.get("code")?;
    let grant = s.grants.lock().expect("lock").remove(code)?;
    let (id, secret) = if github {
        (GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET)
    } else {
        (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)
    };
    let ok = grant.github == github
        && grant.client_id == id
        && client.0 == id
        && client.1 == secret
        && f.get("redirect_uri") == Some(&grant.redirect_uri)
        && f.get("code_verifier").map(|v| s256(v)) == Some(grant.challenge.clone());
    ok.then_some(grant)
}

/// A stable subject per email.
fn sub_of(email: &str) -> String {
    Sha256::digest(email.as_bytes())
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn google_token(s: web::Data<Inner>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error("unsupported_grant_type");
    }
    let client = client_credentials(&req, &f);
    let Some(grant) = redeem(&s, &f, &client, false) else {
        return oauth_error("invalid_grant");
    };
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": s.base,
        "sub": sub_of(&grant.email),
        "aud": GOOGLE_CLIENT_ID,
        "iat": now,
        "exp": now + 3600,
        "nonce": grant.nonce,
        "email": grant.email,
        "email_verified": true,
        "name": "Fake Google User",
    });
    let mut key = &s.keys.der;
    match grant.code.as_str() {
        scenario::WRONG_NONCE => claims["nonce"] = json!("not-the-nonce-that-was-sent"),
        scenario::UNVERIFIED => claims["email_verified"] = json!(false),
        scenario::EMAIL_IN_USERINFO => {
            if let Some(obj) = claims.as_object_mut() {
                obj.remove("email");
                obj.remove("email_verified");
            }
        }
        scenario::FORGED => key = &s.keys.other_der,
        scenario::WRONG_AUDIENCE => claims["aud"] = json!("someone-else"),
        _ => {}
    }
    let header = Header {
        kid: Some(KID.to_string()),
        ..Header::new(Algorithm::RS256)
    };
    let id_token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(key)).expect("sign");
    let access_token = format!("ya29.{}", Uuid::new_v4().simple());
    s.tokens
        .lock()
        .expect("lock")
        .insert(access_token.clone(), grant);
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3599,
        "scope": "openid email profile",
        "id_token": id_token,
    }))
}

fn grant_of(s: &Inner, req: &HttpRequest) -> Option<Grant> {
    let token = bearer(req)?;
    s.tokens.lock().expect("lock").get(&token).cloned()
}

async fn userinfo(s: web::Data<Inner>, req: HttpRequest) -> HttpResponse {
    let Some(grant) = grant_of(&s, &req) else {
        return HttpResponse::Unauthorized().finish();
    };
    HttpResponse::Ok().json(json!({
        "sub": sub_of(&grant.email),
        "email": grant.email,
        "email_verified": true,
        "name": "Userinfo Name",
    }))
}

/// GitHub's token endpoint: JSON only when asked (`Accept: application/json`), errors as 200 + `error`.
async fn github_token(s: web::Data<Inner>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let f = form(&body);
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let client = client_credentials(&req, &f);
    let answer: Value = match redeem(&s, &f, &client, true) {
        Some(grant) => {
            let token = format!("gho_{}", Uuid::new_v4().simple());
            s.tokens.lock().expect("lock").insert(token.clone(), grant);
            json!({ "access_token": token, "token_type": "bearer", "scope": "read:user,user:email" })
        }
        None => json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
        }),
    };
    if wants_json {
        HttpResponse::Ok().json(answer)
    } else {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        if let Some(obj) = answer.as_object() {
            for (k, v) in obj {
                ser.append_pair(k, v.as_str().unwrap_or_default());
            }
        }
        HttpResponse::Ok()
            .content_type("application/x-www-form-urlencoded")
            .body(ser.finish())
    }
}

/// GitHub's REST rules: a User-Agent is required, a token must be valid.
fn github_api_grant(s: &Inner, req: &HttpRequest) -> Result<Grant, Box<HttpResponse>> {
    if !req.headers().contains_key(header::USER_AGENT) {
        return Err(Box::new(
            HttpResponse::Forbidden().body("User-Agent required"),
        ));
    }
    let accept_ok = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/vnd.github+json"));
    if !accept_ok {
        return Err(Box::new(HttpResponse::NotAcceptable().finish()));
    }
    grant_of(s, req).filter(|g| g.github).ok_or_else(|| {
        Box::new(HttpResponse::Unauthorized().json(json!({ "message": "Bad credentials" })))
    })
}

async fn github_user(s: web::Data<Inner>, req: HttpRequest) -> HttpResponse {
    let grant = match github_api_grant(&s, &req) {
        Ok(g) => g,
        Err(res) => return *res,
    };
    if grant.code == scenario::USER_ERROR {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().json(json!({
        "login": "octo-fake",
        "id": 4242,
        "name": null,
        // The public profile email: never proof of ownership.
        "email": grant.email,
    }))
}

async fn github_emails(s: web::Data<Inner>, req: HttpRequest) -> HttpResponse {
    let grant = match github_api_grant(&s, &req) {
        Ok(g) => g,
        Err(res) => return *res,
    };
    let e = &grant.email;
    let list = match grant.code.as_str() {
        scenario::UNVERIFIED_ONLY => json!([
            { "email": e, "primary": true, "verified": false, "visibility": "public" },
        ]),
        scenario::SECONDARY_VERIFIED => json!([
            { "email": format!("unverified-{e}"), "primary": true, "verified": false, "visibility": "public" },
            { "email": e, "primary": false, "verified": true, "visibility": null },
        ]),
        _ => json!([
            { "email": format!("secondary-{e}"), "primary": false, "verified": true, "visibility": null },
            { "email": e, "primary": true, "verified": true, "visibility": "public" },
            { "email": format!("unverified-{e}"), "primary": false, "verified": false, "visibility": null },
        ]),
    };
    HttpResponse::Ok().json(list)
}
