//! OAuth sign-in (spec 1.6, 7.2 and the OAuth bullets of 7.9) against the local fake provider.

#![cfg(feature = "oidc")]

use std::time::Duration;

use url::Url;

use crate::common::{spawn_with, Options, Resp, TestApp, PASSWORD};
use crate::fake_oauth::{scenario, FakeOAuth};

const STATE_COOKIE: &str = "vespid_oauth_state";
const NONCE_COOKIE: &str = "vespid_oauth_nonce";
const WEB: &str = "https://app.vespid.test";

async fn app_with(fake: &FakeOAuth, extra: &[(&str, &str)]) -> TestApp {
    let mut opts = Options::default().env("WEB_BASE_URL", WEB);
    for (k, v) in fake.env() {
        opts = opts.env(k, &v);
    }
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    spawn_with(opts).await
}

async fn setup() -> (FakeOAuth, TestApp) {
    let fake = FakeOAuth::start().await;
    let app = app_with(&fake, &[]).await;
    (fake, app)
}

/// What `start?mode=json` handed out.
struct Started {
    url: Url,
    state: String,
    state_cookie: String,
    nonce_cookie: String,
}

impl Started {
    fn cookies(&self) -> String {
        format!(
            "{STATE_COOKIE}={}; {NONCE_COOKIE}={}",
            self.state_cookie, self.nonce_cookie
        )
    }
    fn param(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

async fn start(app: &TestApp, provider: &str) -> Started {
    let r = app
        .get(&format!("/v1/auth/oauth/{provider}/start?mode=json"))
        .send()
        .await;
    assert_eq!(r.status, 200, "start: {:?}", r.body);
    assert_eq!(r.body["provider"], provider);
    let url: Url = r.body["authorizationUrl"]
        .as_str()
        .expect("authorizationUrl")
        .parse()
        .expect("authorization url");
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state param");
    Started {
        url,
        state,
        state_cookie: r.cookie(STATE_COOKIE).expect("state cookie"),
        nonce_cookie: r.cookie(NONCE_COOKIE).expect("nonce cookie"),
    }
}

/// Plays the user at the provider: returns the code the provider redirected back with.
async fn authorize(
    app: &TestApp,
    s: &Started,
    fake_code: &str,
    login_hint: Option<&str>,
) -> String {
    let mut url = s.url.clone();
    url.query_pairs_mut().append_pair("fake_code", fake_code);
    if let Some(h) = login_hint {
        url.query_pairs_mut().append_pair("login_hint", h);
    }
    let res = app.http.get(url).send().await.expect("authorize");
    assert_eq!(res.status(), 302, "authorize: {:?}", res.text().await);
    let back: Url = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .parse()
        .expect("redirect url");
    let get = |n: &str| {
        back.query_pairs()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.into_owned())
            .expect("param")
    };
    assert_eq!(get("state"), s.state, "the provider echoes the state");
    get("code")
}

async fn callback(
    app: &TestApp,
    provider: &str,
    query: &[(&str, &str)],
    cookies: Option<&str>,
) -> Resp {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    let mut req = app.get(&format!("/v1/auth/oauth/{provider}/callback?{q}"));
    if let Some(c) = cookies {
        req = req.header("cookie", c);
    }
    req.send().await
}

/// The whole flow in JSON mode; returns the callback's answer.
async fn sign_in(app: &TestApp, provider: &str, fake_code: &str, login_hint: Option<&str>) -> Resp {
    let s = start(app, provider).await;
    let code = authorize(app, &s, fake_code, login_hint).await;
    callback(
        app,
        provider,
        &[("code", &code), ("state", &s.state), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await
}

fn location(r: &Resp) -> Url {
    r.header("location")
        .expect("location header")
        .parse()
        .expect("location url")
}

fn query_of(url: &Url) -> Vec<(String, String)> {
    url.query_pairs().into_owned().collect()
}

fn assert_cleared(r: &Resp) {
    for name in [STATE_COOKIE, NONCE_COOKIE] {
        let line = r.set_cookie_line(name).unwrap_or_default();
        assert!(
            line.starts_with(&format!("{name}=;")) && line.contains("Max-Age=0"),
            "{name} cleared: {line:?}"
        );
    }
}

async fn count_users(app: &TestApp, email: &str) -> i64 {
    app.owner_db()
        .await
        .query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
        .await
        .expect("count")
        .get(0)
}

// ---------------------------------------------------------------------------------------------------------
// 7.2: the original suite

#[tokio::test]
async fn start_json_returns_url_with_state_and_sets_cookies() {
    let (fake, app) = setup().await;
    let s = start(&app, "google").await;
    assert!(!s.state.is_empty());
    assert_eq!(s.param("response_type").as_deref(), Some("code"));
    assert_eq!(s.param("code_challenge_method").as_deref(), Some("S256"));
    assert!(s.param("code_challenge").is_some_and(|c| c.len() == 43));
    assert!(s.param("nonce").is_some_and(|n| !n.is_empty()));
    let scope = s.param("scope").expect("scope");
    for w in ["openid", "email", "profile"] {
        assert!(scope.split(' ').any(|x| x == w), "scope {scope}");
    }
    // Browser mode: a 302 to the same provider, the same cookies.
    let r = app.get("/v1/auth/oauth/google/start").send().await;
    assert_eq!(r.status, 302);
    assert!(location(&r).as_str().starts_with(&fake.base));
    for name in [STATE_COOKIE, NONCE_COOKIE] {
        let line = r.set_cookie_line(name).expect("cookie set");
        for attr in ["HttpOnly", "Path=/", "Max-Age=600", "SameSite=Lax"] {
            assert!(line.contains(attr), "{name}: {line}");
        }
        assert!(
            !line.contains("Secure"),
            "not Secure in development: {line}"
        );
    }
}

#[tokio::test]
async fn callback_checks_do_not_consume_state_until_they_pass() {
    let (fake, app) = setup().await;
    let s = start(&app, "google").await;
    let code = authorize(&app, &s, "ok", None).await;
    assert_eq!(code, "ok");

    let r = callback(
        &app,
        "google",
        &[("code", "ok"), ("state", "invalid"), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid OAuth state");
    assert!(r.set_cookie_line(STATE_COOKIE).is_none(), "cookies kept");

    let tampered = format!("{STATE_COOKIE}={}; {NONCE_COOKIE}=tampered", s.state_cookie);
    let r = callback(
        &app,
        "google",
        &[("code", "ok"), ("state", &s.state), ("mode", "json")],
        Some(&tampered),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid OAuth state/nonce cookies");

    let r = callback(
        &app,
        "google",
        &[("code", "ok"), ("state", &s.state), ("mode", "json")],
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Missing OAuth state/nonce cookies");
    assert_eq!(
        fake.token_calls(),
        0,
        "no exchange before the state checks pass"
    );

    let r = callback(
        &app,
        "google",
        &[("code", "ok"), ("state", &s.state), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["session"]["token"].as_str().unwrap_or("").len() > 10);
    assert!(r.body["user"]["email"]
        .as_str()
        .unwrap_or("")
        .contains("google-ok@"));
    assert_eq!(r.body["provider"], "google");
    assert!(r.cookie("vespid_session").is_some_and(|c| !c.is_empty()));
    assert_cleared(&r);
}

async fn bad_code_case(extra: &[(&str, &str)]) {
    let fake = FakeOAuth::start().await;
    let app = app_with(&fake, extra).await;
    let s = start(&app, "google").await;
    let r = callback(
        &app,
        "google",
        &[
            ("code", scenario::BAD_CODE),
            ("state", &s.state),
            ("mode", "json"),
        ],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (401, "OAUTH_EXCHANGE_FAILED"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["message"], "OAuth exchange failed");
    assert_eq!(fake.token_calls(), 1);
    assert_cleared(&r);
}

#[tokio::test]
async fn bad_code_is_exchange_failed() {
    bad_code_case(&[]).await;
}

#[tokio::test]
async fn bad_code_is_exchange_failed_in_warn_mode() {
    bad_code_case(&[("ORG_CONTEXT_ENFORCEMENT", "warn")]).await;
}

// ---------------------------------------------------------------------------------------------------------
// 7.9: state handling, redirects, configuration

#[tokio::test]
async fn state_replay_after_success_fails() {
    let (_fake, app) = setup().await;
    let s = start(&app, "google").await;
    let code = authorize(&app, &s, "ok", None).await;
    let q = [
        ("code", code.as_str()),
        ("state", &s.state),
        ("mode", "json"),
    ];
    let r = callback(&app, "google", &q, Some(&s.cookies())).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = callback(&app, "google", &q, Some(&s.cookies())).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid or expired OAuth state");
    assert_cleared(&r);
}

#[tokio::test]
async fn provider_mismatch_fails_and_consumes_the_state() {
    let (_fake, app) = setup().await;
    let s = start(&app, "google").await;
    let code = authorize(&app, &s, "ok", None).await;
    let q = [
        ("code", code.as_str()),
        ("state", &s.state),
        ("mode", "json"),
    ];
    let r = callback(&app, "github", &q, Some(&s.cookies())).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid or expired OAuth state");
    // Single use: the state is gone for its own provider too.
    let r = callback(&app, "google", &q, Some(&s.cookies())).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
}

#[tokio::test]
async fn expired_server_side_state_fails() {
    let (_fake, app) = setup().await;
    let s = start(&app, "google").await;
    let code = authorize(&app, &s, "ok", None).await;
    let n = app
        .owner_db()
        .await
        .execute(
            "UPDATE oauth_states SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("expire");
    assert_eq!(n, 1);
    let r = callback(
        &app,
        "google",
        &[("code", &code), ("state", &s.state), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid or expired OAuth state");
}

#[tokio::test]
async fn expired_cookies_fail() {
    let fake = FakeOAuth::start().await;
    let app = app_with(&fake, &[("OAUTH_CONTEXT_TTL_SEC", "1")]).await;
    let s = start(&app, "github").await;
    let code = authorize(&app, &s, "ok", None).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = callback(
        &app,
        "github",
        &[("code", &code), ("state", &s.state), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
    assert_eq!(r.body["message"], "Invalid OAuth state/nonce cookies");
}

#[tokio::test]
async fn state_is_stored_hashed_with_ttl_and_expired_rows_are_purged() {
    let (_fake, app) = setup().await;
    let db = app.owner_db().await;
    db.execute(
        "INSERT INTO oauth_states (state_hash, provider, code_verifier, nonce, expires_at) \
         VALUES ('stale', 'google', 'v', 'n', now() - interval '1 minute')",
        &[],
    )
    .await
    .expect("insert stale row");
    let s = start(&app, "google").await;
    let rows = db
        .query(
            "SELECT state_hash, provider, nonce, \
             extract(epoch FROM expires_at - now())::float8 FROM oauth_states",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "the stale row was purged");
    let (hash, provider, nonce, ttl): (String, String, String, f64) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_ne!(hash, s.state, "the state itself is not stored");
    assert_eq!(hash.len(), 64);
    assert_eq!(provider, "google");
    assert_eq!(Some(nonce), s.param("nonce"));
    assert!((590.0..=601.0).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn browser_mode_redirects_to_the_web_app() {
    let (_fake, app) = setup().await;
    let expect = |r: &Resp, pairs: &[(&str, &str)]| {
        assert_eq!(r.status, 302, "{:?}", r.body);
        let loc = location(r);
        assert_eq!(
            format!(
                "{}://{}{}",
                loc.scheme(),
                loc.host_str().unwrap_or(""),
                loc.path()
            ),
            format!("{WEB}/auth")
        );
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(query_of(&loc), want);
    };

    // A state failure before consuming: redirect, cookies kept.
    let s = start(&app, "google").await;
    let r = callback(
        &app,
        "google",
        &[("code", "ok"), ("state", "invalid")],
        Some(&s.cookies()),
    )
    .await;
    expect(
        &r,
        &[
            ("oauth", "error"),
            ("provider", "google"),
            ("code", "UNAUTHORIZED"),
        ],
    );
    assert!(r.set_cookie_line(STATE_COOKIE).is_none());

    // An exchange failure: redirect with the mapped code, cookies cleared.
    let r = callback(
        &app,
        "google",
        &[("code", scenario::BAD_CODE), ("state", &s.state)],
        Some(&s.cookies()),
    )
    .await;
    expect(
        &r,
        &[
            ("oauth", "error"),
            ("provider", "google"),
            ("code", "OAUTH_EXCHANGE_FAILED"),
        ],
    );
    assert_cleared(&r);

    // Success: redirect with the refresh cookie.
    let s = start(&app, "github").await;
    let code = authorize(&app, &s, "ok", None).await;
    let r = callback(
        &app,
        "github",
        &[("code", &code), ("state", &s.state)],
        Some(&s.cookies()),
    )
    .await;
    expect(&r, &[("oauth", "success"), ("provider", "github")]);
    assert_cleared(&r);
    let cookie = r.cookie("vespid_session").expect("refresh cookie");
    let me = app
        .get("/v1/me")
        .header("cookie", &format!("vespid_session={cookie}"))
        .send()
        .await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["user"]["email"], "github-ok@example.com");
}

#[tokio::test]
async fn provider_error_without_code_is_access_denied() {
    let (_fake, app) = setup().await;
    let s = start(&app, "google").await;
    let r = callback(
        &app,
        "google",
        &[("error", "access_denied"), ("state", &s.state)],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        query_of(&location(&r)),
        [
            ("oauth", "error"),
            ("provider", "google"),
            ("code", "OAUTH_ACCESS_DENIED")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let r = callback(
        &app,
        "github",
        &[("error", "access_denied"), ("mode", "json")],
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "OAUTH_ACCESS_DENIED"));
}

#[tokio::test]
async fn invalid_query_and_unknown_provider_are_400_json() {
    let (_fake, app) = setup().await;
    for (provider, step) in [("facebook", "start"), ("facebook", "callback")] {
        let r = app
            .get(&format!("/v1/auth/oauth/{provider}/{step}?mode=json"))
            .send()
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
        assert_eq!(r.body["message"], "Unsupported OAuth provider");
    }
    // Even in browser mode, a malformed callback query is a JSON 400 with details, not a redirect.
    for q in [
        "state=s",
        "code=c",
        "code=&state=s",
        "code=c&state=s&mode=xml",
        "",
    ] {
        let r = app
            .get(&format!("/v1/auth/oauth/google/callback?{q}"))
            .send()
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"), "{q}");
        assert_eq!(r.body["message"], "Invalid OAuth callback query");
        assert!(
            r.body["details"]["fieldErrors"].is_object(),
            "{q}: {:?}",
            r.body
        );
    }
    let r = app
        .get("/v1/auth/oauth/google/callback?state=s")
        .send()
        .await;
    assert!(r.body["details"]["fieldErrors"]["code"].is_array());
}

#[tokio::test]
async fn unconfigured_provider_is_503_without_cookies() {
    let app = spawn_with(Options::default()).await;
    for (provider, q) in [("google", "?mode=json"), ("github", "")] {
        let r = app
            .get(&format!("/v1/auth/oauth/{provider}/start{q}"))
            .send()
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "OAUTH_PROVIDER_NOT_CONFIGURED")
        );
        assert_eq!(
            r.body["message"],
            format!("OAuth provider is not configured: {provider}")
        );
        assert!(r.headers.get("set-cookie").is_none());
    }
    // The callback checks cookies first: unconfigured or not, missing cookies are 401.
    let r = callback(
        &app,
        "google",
        &[("code", "c"), ("state", "s"), ("mode", "json")],
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "UNAUTHORIZED"));
}

#[tokio::test]
async fn secure_cookies_when_configured() {
    let fake = FakeOAuth::start().await;
    let app = app_with(&fake, &[("COOKIE_SECURE", "true")]).await;
    let r = app
        .get("/v1/auth/oauth/github/start?mode=json")
        .send()
        .await;
    assert_eq!(r.status, 200);
    for name in [STATE_COOKIE, NONCE_COOKIE] {
        assert!(r
            .set_cookie_line(name)
            .is_some_and(|l| l.contains("Secure")));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Google (OIDC)

#[tokio::test]
async fn google_sign_in_creates_user_and_personal_workspace() {
    let (fake, app) = setup().await;
    let r = sign_in(&app, "google", "ok", Some("New.Person@Example.com")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["email"], "new.person@example.com");
    assert_eq!(user["displayName"], "Fake Google User");
    assert!(user.get("passwordHash").is_none());
    assert_eq!(r.body["session"]["userId"], user["id"]);
    let token = r.body["session"]["token"].as_str().expect("token");
    let me = app.get("/v1/me").bearer(token).send().await;
    assert_eq!(me.status, 200);
    let default_org = me.body["defaultOrgId"].as_str().expect("default org");
    let orgs = me.body["orgs"].as_array().expect("orgs");
    assert!(orgs
        .iter()
        .any(|o| o["id"] == default_org && o["roleKey"] == "owner"));
    // Signing in again is the same account and still one personal workspace.
    let again = sign_in(&app, "google", "ok2", Some("new.person@example.com")).await;
    assert_eq!(again.body["user"]["id"], user["id"]);
    let me = app
        .get("/v1/me")
        .bearer(again.body["session"]["token"].as_str().expect("token"))
        .send()
        .await;
    assert_eq!(me.body["orgs"].as_array().map(Vec::len), Some(1));
    // Discovery (with the JWKS) was fetched once and cached.
    assert_eq!(fake.discovery_calls(), 1);
}

#[tokio::test]
async fn google_email_from_userinfo_when_not_in_id_token() {
    let (_fake, app) = setup().await;
    let r = sign_in(
        &app,
        "google",
        scenario::EMAIL_IN_USERINFO,
        Some("info@example.com"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "info@example.com");
}

#[tokio::test]
async fn google_unverified_email_is_refused() {
    let (_fake, app) = setup().await;
    let r = sign_in(
        &app,
        "google",
        scenario::UNVERIFIED,
        Some("unv@example.com"),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "OAUTH_EMAIL_REQUIRED"),
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["message"],
        "OAuth provider did not return an email address"
    );
    assert_eq!(count_users(&app, "unv@example.com").await, 0);
}

#[tokio::test]
async fn google_id_token_nonce_mismatch_is_invalid_nonce() {
    let (_fake, app) = setup().await;
    let r = sign_in(&app, "google", scenario::WRONG_NONCE, None).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (401, "OAUTH_INVALID_NONCE"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["message"], "Invalid OAuth nonce");
    assert_cleared(&r);
}

#[tokio::test]
async fn google_id_token_with_unknown_key_or_audience_is_refused() {
    let (_fake, app) = setup().await;
    for code in [scenario::FORGED, scenario::WRONG_AUDIENCE] {
        let r = sign_in(&app, "google", code, Some("victim@example.com")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (401, "OAUTH_EXCHANGE_FAILED"),
            "{code}: {:?}",
            r.body
        );
    }
    assert_eq!(count_users(&app, "victim@example.com").await, 0);
}

// ---------------------------------------------------------------------------------------------------------
// GitHub (OAuth2)

#[tokio::test]
async fn github_sign_in_uses_primary_verified_email() {
    let (_fake, app) = setup().await;
    let s = start(&app, "github").await;
    assert_eq!(s.param("scope").as_deref(), Some("read:user user:email"));
    assert_eq!(s.param("code_challenge_method").as_deref(), Some("S256"));
    let code = authorize(&app, &s, "ok", Some("Octo@Example.com")).await;
    let r = callback(
        &app,
        "github",
        &[("code", &code), ("state", &s.state), ("mode", "json")],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["provider"], "github");
    assert_eq!(r.body["user"]["email"], "octo@example.com");
    assert_eq!(r.body["user"]["displayName"], "octo-fake");
}

#[tokio::test]
async fn github_falls_back_to_another_verified_email() {
    let (_fake, app) = setup().await;
    let r = sign_in(
        &app,
        "github",
        scenario::SECONDARY_VERIFIED,
        Some("v@example.com"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "v@example.com");
}

#[tokio::test]
async fn github_with_only_unverified_email_is_refused() {
    let (_fake, app) = setup().await;
    let r = sign_in(
        &app,
        "github",
        scenario::UNVERIFIED_ONLY,
        Some("u@example.com"),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "OAUTH_EMAIL_REQUIRED"),
        "{:?}",
        r.body
    );
    assert_eq!(count_users(&app, "u@example.com").await, 0);
}

#[tokio::test]
async fn github_exchange_and_profile_failures_are_exchange_failed() {
    let (_fake, app) = setup().await;
    let r = sign_in(&app, "github", scenario::USER_ERROR, None).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (401, "OAUTH_EXCHANGE_FAILED")
    );
    // GitHub reports a bad code with 200 and an `error` field.
    let s = start(&app, "github").await;
    let r = callback(
        &app,
        "github",
        &[
            ("code", scenario::BAD_CODE),
            ("state", &s.state),
            ("mode", "json"),
        ],
        Some(&s.cookies()),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (401, "OAUTH_EXCHANGE_FAILED")
    );
}

// ---------------------------------------------------------------------------------------------------------
// Linking

#[tokio::test]
async fn verified_email_signs_in_the_existing_password_account() {
    let (_fake, app) = setup().await;
    let existing = app.signup("linked").await;
    let upper = existing.email.to_uppercase();
    for provider in ["google", "github"] {
        let r = sign_in(&app, provider, &format!("link-{provider}"), Some(&upper)).await;
        assert_eq!(r.status, 200, "{provider}: {:?}", r.body);
        assert_eq!(
            r.body["user"]["id"].as_str(),
            Some(existing.id.to_string().as_str()),
            "{provider}"
        );
        let me = app
            .get("/v1/me")
            .bearer(r.body["session"]["token"].as_str().expect("token"))
            .send()
            .await;
        assert_eq!(
            me.body["defaultOrgId"].as_str(),
            Some(existing.personal_org.to_string().as_str())
        );
    }
    // The password still works.
    let r = app
        .post("/v1/auth/login")
        .json(serde_json::json!({ "email": existing.email, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(r.status, 200);
}
