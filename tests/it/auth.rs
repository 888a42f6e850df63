//! Authentication (spec identity.md §0, §1, §6, §7.1, §7.9): sign-up, login, rate limiting, refresh rotation
//! with theft detection, session lifetimes, logout(-all), access-token verification, CSRF on cookie auth,
//! secrets at rest, legacy scrypt hashes, `/v1/me`, and the no-credentials-in-logs rule.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::common::{self, spawn, spawn_with, Options, Resp, TestApp, PASSWORD};

const COOKIE: &str = "vespid_session";
const WEB: &str = "http://localhost:3000";
const EVIL: &str = "http://evil.example";

// ---------------------------------------------------------------------------------------------------------
// helpers

fn st(r: &Resp) -> u16 {
    r.status.as_u16()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn token_of(r: &Resp) -> String {
    r.body["session"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no session.token in {:?}", r.body))
        .to_string()
}

fn session_id_of(r: &Resp) -> String {
    r.body["session"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session.sessionId in {:?}", r.body))
        .to_string()
}

fn user_id_of(r: &Resp) -> String {
    r.body["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user.id in {:?}", r.body))
        .to_string()
}

fn cookie_of(r: &Resp) -> String {
    r.cookie(COOKIE)
        .unwrap_or_else(|| panic!("no {COOKIE} cookie set: {:?}", r.headers))
}

fn slug() -> String {
    format!("org-{}", &Uuid::new_v4().simple().to_string()[..12])
}

async fn signup_raw(app: &TestApp, email: &str, password: &str) -> Resp {
    app.post("/v1/auth/signup")
        .json(json!({ "email": email, "password": password }))
        .send()
        .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Resp {
    app.post("/v1/auth/login")
        .json(json!({ "email": email, "password": password }))
        .send()
        .await
}

/// `POST /v1/auth/refresh` with only the cookie, no body, no content type (as the web client sends it).
async fn refresh(app: &TestApp, cookie: &str) -> Resp {
    app.post("/v1/auth/refresh")
        .cookie(COOKIE, cookie)
        .send()
        .await
}

async fn me_bearer(app: &TestApp, token: &str) -> Resp {
    app.get("/v1/me").bearer(token).send().await
}

async fn me_cookie(app: &TestApp, cookie: &str) -> Resp {
    app.get("/v1/me").cookie(COOKIE, cookie).send().await
}

fn assert_unauthorized(r: &Resp, what: &str) {
    assert_eq!(
        (st(r), r.code()),
        (401, "UNAUTHORIZED"),
        "{what}: {:?}",
        r.body
    );
}

/// An owner connection whose session acts as `user_id` (auth_sessions has FORCE RLS, even for its owner).
async fn owner_as_user(app: &TestApp, user_id: &str) -> tokio_postgres::Client {
    let db = app.owner_db().await;
    db.execute(
        "SELECT set_config('app.current_user_id', $1, false)",
        &[&user_id],
    )
    .await
    .expect("set user context");
    db
}

/// A JWT's payload as JSON (no verification).
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

/// Signs `claims` with HS256 and `secret`, with the given key id.
fn sign_jwt(claims: &Value, secret: &str, kid: Option<String>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid;
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode jwt")
}

/// The token with one character in the middle of its last (signature) segment changed.
fn flip_signature_char(token: &str) -> String {
    let cut = token.rfind('.').expect("dot") + 1;
    let mut bytes = token.as_bytes().to_vec();
    let i = cut + (bytes.len() - cut) / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("utf8")
}

// ---------------------------------------------------------------------------------------------------------
// §7.1 signup / login / sessions

#[tokio::test]
async fn signup_returns_session_and_sets_refresh_cookie() {
    let app = spawn().await;
    let email = app.unique_email("signup");
    let r = app
        .post("/v1/auth/signup")
        .json(json!({ "email": email, "password": PASSWORD, "displayName": "Ada" }))
        .send()
        .await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    let s = &r.body["session"];
    assert!(token_of(&r).len() > 10, "{s}");
    assert_eq!(s["tokenType"], "access");
    assert_eq!(s["email"], email.as_str());
    assert_eq!(s["userId"], r.body["user"]["id"]);
    assert!(Uuid::parse_str(s["sessionId"].as_str().expect("sessionId")).is_ok());
    let (iat, exp) = (
        s["issuedAt"].as_i64().expect("issuedAt"),
        s["expiresAt"].as_i64().expect("expiresAt"),
    );
    assert_eq!(exp - iat, 900, "default ACCESS_TOKEN_TTL_SEC");
    let u = &r.body["user"];
    assert_eq!(u["email"], email.as_str());
    assert_eq!(u["displayName"], "Ada");
    assert!(u["createdAt"].as_str().is_some_and(|t| t.contains('T')));
    let keys: Vec<&String> = u.as_object().expect("user object").keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "user is exactly {{id,email,displayName,createdAt}}: {u}"
    );

    let line = r.set_cookie_line(COOKIE).expect("refresh cookie set");
    let attrs: Vec<String> = line.split(';').map(|a| a.trim().to_string()).collect();
    let value = cookie_of(&r);
    assert!(!value.is_empty());
    for want in ["HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=604800"] {
        assert!(
            attrs.iter().any(|a| a.eq_ignore_ascii_case(want)),
            "{want} missing in {line}"
        );
    }
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("Secure")),
        "no Secure in development: {line}"
    );
    // The token and the cookie work.
    assert_eq!(st(&me_bearer(&app, &token_of(&r)).await), 200);
    assert_eq!(st(&me_cookie(&app, &value).await), 200);
}

#[tokio::test]
async fn login_wrong_password_401_right_password_200() {
    let app = spawn().await;
    let u = app.signup("login").await;
    let r = login(&app, &u.email, "Password124").await;
    assert_unauthorized(&r, "wrong password");
    assert_eq!(r.body["message"], "Invalid credentials");
    assert!(r.cookie(COOKIE).is_none(), "no cookie on failure");

    // Email matching is case-insensitive.
    let r = login(&app, &u.email.to_uppercase(), PASSWORD).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert!(token_of(&r).len() > 10);
    assert_eq!(user_id_of(&r), u.id.to_string());
    assert_ne!(
        session_id_of(&r),
        u.session_id.to_string(),
        "login opens a new session"
    );
    assert!(r.cookie(COOKIE).is_some_and(|c| !c.is_empty()));
    assert_eq!(st(&me_bearer(&app, &token_of(&r)).await), 200);
}

#[tokio::test]
async fn cookie_only_create_org_returns_working_access_token() {
    let app = spawn().await;
    let u = app.signup("cookieorg").await;
    let r = app
        .post("/v1/orgs")
        .cookie(COOKIE, &u.cookie)
        .json(json!({ "name": "Cookie Org", "slug": slug() }))
        .send()
        .await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    assert_eq!(r.body["membership"]["roleKey"], "owner");
    let minted = r.header("x-access-token").expect("x-access-token header");
    assert!(minted.len() > 10);
    // The minted header is itself a working bearer token of the same session.
    let m = me_bearer(&app, &minted).await;
    assert_eq!(st(&m), 200, "{:?}", m.body);
    assert_eq!(m.body["user"]["id"], u.id.to_string());
    let claims = jwt_claims(&minted);
    assert!(
        claims.to_string().contains(&u.session_id.to_string()),
        "minted token carries the cookie's session: {claims}"
    );
    let r = app
        .post("/v1/orgs")
        .bearer(&minted)
        .json(json!({ "name": "Bearer Org", "slug": slug() }))
        .send()
        .await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    // Bearer-authenticated responses carry no minted token.
    assert!(r.header("x-access-token").is_none());
}

#[tokio::test]
async fn refresh_with_cookie_returns_new_session_for_same_session_id() {
    let app = spawn().await;
    let u = app.signup("refresh").await;
    // Bring the session close to its end: refreshing slides it to now + SESSION_TTL_SEC.
    let db = owner_as_user(&app, &u.id.to_string()).await;
    let n = db
        .execute(
            "UPDATE auth_sessions SET expires_at = now() + interval '1 hour', \
                    last_used_at = now() - interval '1 day' WHERE id = $1::text::uuid",
            &[&u.session_id.to_string()],
        )
        .await
        .expect("shorten session");
    assert_eq!(n, 1);
    let r = refresh(&app, &u.cookie).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert_eq!(session_id_of(&r), u.session_id.to_string());
    assert_eq!(user_id_of(&r), u.id.to_string());
    let row = db
        .query_one(
            "SELECT expires_at > now() + interval '6 days', last_used_at > now() - interval '1 minute', \
                    refresh_token_hash FROM auth_sessions WHERE id = $1::text::uuid",
            &[&u.session_id.to_string()],
        )
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0), "expires_at slid forward");
    assert!(row.get::<_, bool>(1), "last_used_at updated");
    assert_eq!(row.get::<_, String>(2), sha256_hex(&cookie_of(&r)));
    assert_eq!(r.body["user"]["email"], u.email.as_str());
    let new_cookie = cookie_of(&r);
    assert_ne!(new_cookie, u.cookie, "refresh rotates the cookie");
    let line = r.set_cookie_line(COOKIE).expect("cookie line");
    assert!(line.contains("Max-Age=604800"), "{line}");
    assert_eq!(st(&me_bearer(&app, &token_of(&r)).await), 200);
    // The session stays active: the earlier access token still works.
    assert_eq!(st(&me_bearer(&app, &u.token).await), 200);
    // And the new cookie refreshes again.
    assert_eq!(st(&refresh(&app, &new_cookie).await), 200);
}

#[tokio::test]
async fn logout_revokes_bearer_everywhere_and_clears_cookie() {
    let app = spawn().await;
    let u = app.signup("logout").await;
    // Anonymous logout.
    let r = app.post("/v1/auth/logout").send().await;
    assert_unauthorized(&r, "anonymous logout");

    let r = app.post("/v1/auth/logout").bearer(&u.token).send().await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert_eq!(r.body, json!({ "ok": true }));
    let line = r.set_cookie_line(COOKIE).expect("cookie cleared");
    assert_eq!(r.cookie(COOKIE).as_deref(), Some(""), "{line}");
    assert!(line.contains("Path=/"), "{line}");
    assert!(line.contains("SameSite=Lax"), "{line}");
    assert!(
        line.contains("Max-Age=0") || line.contains("Expires="),
        "expired cookie: {line}"
    );

    let r = app
        .post("/v1/orgs")
        .bearer(&u.token)
        .json(json!({ "name": "After Logout", "slug": slug() }))
        .send()
        .await;
    assert_unauthorized(&r, "POST /v1/orgs after logout");
    assert_unauthorized(&me_bearer(&app, &u.token).await, "GET /v1/me after logout");
    assert_unauthorized(&refresh(&app, &u.cookie).await, "refresh after logout");
    assert_unauthorized(&me_cookie(&app, &u.cookie).await, "cookie after logout");
}

#[tokio::test]
async fn logout_with_cookie_only() {
    let app = spawn().await;
    let u = app.signup("logoutcookie").await;
    let r = app
        .post("/v1/auth/logout")
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert_unauthorized(
        &me_bearer(&app, &u.token).await,
        "bearer after cookie logout",
    );
    assert_unauthorized(
        &refresh(&app, &u.cookie).await,
        "cookie after cookie logout",
    );
}

// ---------------------------------------------------------------------------------------------------------
// signup validation

#[tokio::test]
async fn signup_rejects_invalid_payloads_with_field_details() {
    let app = spawn().await;
    let good = app.unique_email("val");
    for (body, field) in [
        (
            json!({ "email": "not-an-email", "password": PASSWORD }),
            "email",
        ),
        (json!({ "email": good, "password": "Passw0r" }), "password"),
        (
            json!({ "email": good, "password": PASSWORD, "displayName": null }),
            "displayName",
        ),
        (
            json!({ "email": good, "password": PASSWORD, "displayName": "" }),
            "displayName",
        ),
        (
            json!({ "email": good, "password": PASSWORD, "displayName": "x".repeat(121) }),
            "displayName",
        ),
        (json!({ "email": good }), "password"),
        (json!({ "password": PASSWORD }), "email"),
        (json!({ "email": good, "password": 12345678 }), "password"),
        (json!({ "email": null, "password": PASSWORD }), "email"),
        (
            json!({ "email": format!(" {good}"), "password": PASSWORD }),
            "email",
        ),
    ] {
        let r = app.post("/v1/auth/signup").json(body.clone()).send().await;
        assert_eq!(
            (st(&r), r.code()),
            (400, "BAD_REQUEST"),
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.body["message"], "Invalid signup payload", "{body}");
        assert!(
            r.body["details"]["fieldErrors"][field].is_array(),
            "{body}: fieldErrors.{field} expected in {:?}",
            r.body
        );
        assert!(r.body["details"]["formErrors"].is_array(), "{:?}", r.body);
    }
    // Wrong shapes: validation failures with details, not framework codes.
    for body in [json!([]), json!("x"), json!(1), Value::Null] {
        let r = app.post("/v1/auth/signup").json(body.clone()).send().await;
        assert_eq!(
            (st(&r), r.code()),
            (400, "BAD_REQUEST"),
            "{body}: {:?}",
            r.body
        );
        assert!(r.body["details"]["formErrors"].is_array(), "{:?}", r.body);
    }
    // Nothing was created by the failures; 8 characters and unknown keys are fine.
    let r = app
        .post("/v1/auth/signup")
        .json(json!({ "email": good, "password": "12345678", "extra": true, "displayName": "D" }))
        .send()
        .await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
}

#[tokio::test]
async fn signup_password_capped_at_1024_bytes() {
    let app = spawn().await;
    let r = signup_raw(&app, &app.unique_email("cap"), &"a".repeat(1025)).await;
    assert_eq!((st(&r), r.code()), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert!(
        r.body["details"]["fieldErrors"]["password"].is_array(),
        "{:?}",
        r.body
    );
    // Bytes, not characters: 513 two-byte characters are 1026 bytes.
    let r = signup_raw(&app, &app.unique_email("cap"), &"é".repeat(513)).await;
    assert_eq!((st(&r), r.code()), (400, "BAD_REQUEST"), "{:?}", r.body);
    // Exactly 1024 bytes is allowed, and works for login.
    let email = app.unique_email("cap");
    let long = "b".repeat(1024);
    let r = signup_raw(&app, &email, &long).await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    assert_eq!(st(&login(&app, &email, &long).await), 200);
    // Login refuses oversized passwords before hashing too.
    let r = login(&app, &email, &"b".repeat(1025)).await;
    assert_eq!((st(&r), r.code()), (400, "BAD_REQUEST"), "{:?}", r.body);
}

#[tokio::test]
async fn signup_duplicate_email_any_case_conflicts_and_email_is_stored_lower_cased() {
    let app = spawn().await;
    let tag = Uuid::new_v4().simple().to_string();
    let mixed = format!("Mixed.Case-{tag}@Example.COM");
    let r = signup_raw(&app, &mixed, PASSWORD).await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    let lower = mixed.to_lowercase();
    assert_eq!(r.body["user"]["email"], lower.as_str());
    assert_eq!(r.body["session"]["email"], lower.as_str());

    for dup in [mixed.clone(), lower.clone(), mixed.to_uppercase()] {
        let r = signup_raw(&app, &dup, PASSWORD).await;
        assert_eq!((st(&r), r.code()), (409, "CONFLICT"), "{dup}: {:?}", r.body);
        assert_eq!(r.body["message"], "Email already registered");
    }

    let db = app.owner_db().await;
    let rows = db
        .query("SELECT email FROM users WHERE lower(email) = $1", &[&lower])
        .await
        .expect("query users");
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert_eq!(stored, lower);
}

#[tokio::test]
async fn concurrent_duplicate_signups_give_one_201_and_one_409() {
    let app = spawn().await;
    let email = app.unique_email("race");
    let upper = email.to_uppercase();
    let (a, b) = tokio::join!(
        signup_raw(&app, &email, PASSWORD),
        signup_raw(&app, &upper, PASSWORD)
    );
    let mut statuses = [st(&a), st(&b)];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{:?} / {:?}", a.body, b.body);
    let loser = if st(&a) == 409 { &a } else { &b };
    assert_eq!(loser.code(), "CONFLICT");
}

// ---------------------------------------------------------------------------------------------------------
// login

#[tokio::test]
async fn login_unknown_email_and_wrong_password_answer_identically() {
    let app = spawn().await;
    let u = app.signup("enum").await;
    let wrong = login(&app, &u.email, "Wrong-password-1").await;
    let unknown = login(&app, &app.unique_email("nobody"), "Wrong-password-1").await;
    assert_unauthorized(&wrong, "wrong password");
    assert_eq!(st(&wrong), st(&unknown));
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        wrong.body,
        json!({ "code": "UNAUTHORIZED", "message": "Invalid credentials" })
    );
    assert_eq!(wrong.cookie(COOKIE), unknown.cookie(COOKIE));
}

#[tokio::test]
async fn login_rejects_missing_or_wrong_shape_body() {
    let app = spawn().await;
    // No body at all.
    let r = app.post("/v1/auth/login").send().await;
    assert_eq!((st(&r), r.code()), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert_eq!(r.body["message"], "Invalid login payload");
    for body in [
        json!([]),
        json!({}),
        json!({ "email": "x@example.com" }),
        json!({ "email": "nope", "password": PASSWORD }),
        json!({ "email": "x@example.com", "password": "" }),
        json!({ "email": "x@example.com", "password": null }),
    ] {
        let r = app.post("/v1/auth/login").json(body.clone()).send().await;
        assert_eq!(
            (st(&r), r.code()),
            (400, "BAD_REQUEST"),
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.body["message"], "Invalid login payload", "{body}");
        assert!(
            r.body["details"]["fieldErrors"].is_object(),
            "{body}: {:?}",
            r.body
        );
    }
    // Malformed JSON keeps the framework code.
    let r = app
        .post("/v1/auth/login")
        .raw("application/json", "{nope")
        .send()
        .await;
    assert_eq!(
        (st(&r), r.code()),
        (400, "FST_ERR_CTP_INVALID_JSON_BODY"),
        "{:?}",
        r.body
    );
}

// ---------------------------------------------------------------------------------------------------------
// rate limiting (Improve)

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing: {:?}", r.headers))
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After not numeric: {e}"))
}

#[tokio::test]
async fn login_rate_limited_after_max_failures_even_with_right_password() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("rl").await;
    for i in 0..3 {
        let r = login(&app, &u.email, "Wrong-password-1").await;
        assert_unauthorized(&r, &format!("failure {i}"));
    }
    let r = login(&app, &u.email, PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    let secs = retry_after(&r);
    assert!(
        (1..=900).contains(&secs),
        "Retry-After {secs} within the window"
    );
    assert!(r.cookie(COOKIE).is_none());
    // Still limited on the next try, with any email case.
    let r = login(&app, &u.email.to_uppercase(), PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    // Existing sessions are unaffected by the limiter.
    assert_eq!(st(&me_bearer(&app, &u.token).await), 200);
}

#[tokio::test]
async fn login_rate_limit_per_ip_spans_accounts() {
    // Failures are spread over three accounts (one each: no account reaches the limit), so only the per-IP
    // counter can reach 3; a fourth account from the same IP is then refused although its password is right.
    let app = spawn_with(
        Options::default()
            .env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_MAX_FAILURES_PER_IP", "3"),
    )
    .await;
    let (a, b, c, d) = (
        app.signup("ipa").await,
        app.signup("ipb").await,
        app.signup("ipc").await,
        app.signup("ipd").await,
    );
    for u in [&a, &b] {
        assert_unauthorized(&login(&app, &u.email, "Wrong-password-1").await, "failure");
    }
    // Two IP failures so far: below the limit, a different account still logs in.
    assert_eq!(st(&login(&app, &d.email, PASSWORD).await), 200);
    assert_unauthorized(&login(&app, &c.email, "Wrong-password-1").await, "failure");
    // The address is now over its limit: an account it never logged in to is refused although the
    // password is right...
    let e = app.signup("ipe-first").await;
    let r = login(&app, &e.email, PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    retry_after(&r);
    // ...while the account that logged in from it before keeps working.
    assert_eq!(st(&login(&app, &d.email, PASSWORD).await), 200);
    // Signing up is never throttled by the login limiter.
    let r = signup_raw(&app, &app.unique_email("ipe"), PASSWORD).await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
}

/// A login from a given client address (the peer is a trusted proxy that says so in X-Forwarded-For).
async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> Resp {
    app.post("/v1/auth/login")
        .header("x-forwarded-for", ip)
        .json(json!({ "email": email, "password": password }))
        .send()
        .await
}

/// Knowing an email is not enough to lock its owner out: the guessing client is throttled, the owner on
/// another address is not. A slower account-wide ceiling stops guessing spread over many addresses, but
/// not clients that logged in to the account before. Every counter has a TTL.
#[tokio::test]
async fn guessing_throttles_the_guesser_not_the_owner() {
    let app = spawn_with(
        Options::default()
            .env("TRUSTED_PROXIES", "127.0.0.1/32, ::1")
            .env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_ACCOUNT_MAX_FAILURES", "6"),
    )
    .await;
    let u = app.signup("victim").await;
    let owner_ip = "198.51.100.1";
    assert_eq!(
        st(&login_from(&app, owner_ip, &u.email, PASSWORD).await),
        200
    );

    let guesser = "203.0.113.1";
    for i in 0..3 {
        let r = login_from(&app, guesser, &u.email, "Wrong-password-1").await;
        assert_unauthorized(&r, &format!("guess {i}"));
    }
    let r = login_from(&app, guesser, &u.email, PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    retry_after(&r);
    // The owner, elsewhere, is not locked out; nor is a first-time client below the account ceiling.
    assert_eq!(
        st(&login_from(&app, owner_ip, &u.email, PASSWORD).await),
        200
    );
    assert_eq!(
        st(&login_from(&app, "198.51.100.2", &u.email, PASSWORD).await),
        200
    );

    // Guessing spread over addresses (each below the per-client limit) reaches the account ceiling (6):
    // the 3 failures above and three more here. Attempts count, successes take theirs back, and a
    // throttled attempt (it never reached the password check) is not a failure.
    for ip in ["203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        let r = login_from(&app, ip, &u.email, "Wrong-password-1").await;
        assert_unauthorized(&r, ip);
    }
    let r = login_from(&app, "203.0.113.9", &u.email, PASSWORD).await;
    assert_eq!(
        (st(&r), r.code()),
        (429, "RATE_LIMITED"),
        "a new client past the account ceiling: {:?}",
        r.body
    );
    // Clients that logged in before keep working.
    assert_eq!(
        st(&login_from(&app, owner_ip, &u.email, PASSWORD).await),
        200
    );
    assert_eq!(
        st(&login_from(&app, "198.51.100.2", &u.email, PASSWORD).await),
        200
    );

    // No counter is left without a TTL.
    let account = hex::encode(Sha256::digest(u.email.as_bytes()));
    let redis = &app.state.redis;
    for key in [
        format!("rl:login:acct:{account}"),
        format!("rl:login:acctip:{account}:{guesser}"),
        format!("rl:login:ip:{guesser}"),
    ] {
        let ttl: i64 = fred::interfaces::KeysInterface::ttl(&redis.client, redis.key(&key))
            .await
            .expect("ttl");
        assert!(ttl > 0, "{key} has TTL {ttl}");
    }
}

/// Parallel guesses cannot all slip past a check made while the counter was low: each attempt is counted
/// before its password is checked.
#[tokio::test]
async fn parallel_guesses_are_counted_before_they_are_checked() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("burst").await;
    let answers =
        futures_util::future::join_all((0..20).map(|_| login(&app, &u.email, "Wrong-password-1")))
            .await;
    let tried = answers.iter().filter(|r| st(r) == 401).count();
    let throttled = answers.iter().filter(|r| st(r) == 429).count();
    assert_eq!(
        (tried, throttled),
        (3, 17),
        "only 3 guesses reach the password check"
    );
}

/// A client that has logged in to the account from its address is not counted ahead: its own parallel
/// logins never throttle each other, while its failures still meet its limit. Refused attempts are not
/// failures.
#[tokio::test]
async fn a_trusted_clients_parallel_logins_do_not_throttle_each_other() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("busy").await;
    assert_eq!(st(&login(&app, &u.email, PASSWORD).await), 200);
    let answers =
        futures_util::future::join_all((0..20).map(|_| login(&app, &u.email, PASSWORD))).await;
    let ok = answers.iter().filter(|r| st(r) == 200).count();
    assert_eq!(ok, 20, "{:?}", answers.iter().map(st).collect::<Vec<_>>());

    for i in 0..3 {
        assert_unauthorized(
            &login(&app, &u.email, "Wrong-password-1").await,
            &format!("failure {i}"),
        );
    }
    for _ in 0..4 {
        let r = login(&app, &u.email, PASSWORD).await;
        assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    }
    let account = hex::encode(Sha256::digest(u.email.as_bytes()));
    let redis = &app.state.redis;
    let key = redis.key(&format!("rl:login:acctip:{account}:127.0.0.1"));
    let n: i64 = fred::interfaces::KeysInterface::get(&redis.client, key)
        .await
        .expect("counter");
    assert_eq!(n, 3, "refused attempts are not counted as failures");
}

/// A burst of guesses from a trusted client's address cannot all slip past one check: at most 64 are
/// in flight at once, so the failures stay bounded by the limit plus that.
#[tokio::test]
async fn a_burst_of_guesses_from_a_trusted_address_stays_bounded() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("nat").await;
    assert_eq!(st(&login(&app, &u.email, PASSWORD).await), 200);
    let answers =
        futures_util::future::join_all((0..100).map(|_| login(&app, &u.email, "Wrong-password-1")))
            .await;
    let tried = answers.iter().filter(|r| st(r) == 401).count();
    let throttled = answers.iter().filter(|r| st(r) == 429).count();
    assert_eq!(tried + throttled, 100);
    assert!(
        tried <= 3 + 64,
        "{tried} guesses reached the password check"
    );
    assert!(throttled >= 33, "{throttled}");
}

/// X-Forwarded-For counts only from a trusted proxy: from anyone else it is ignored, so a guesser cannot
/// dodge the per-client limit by inventing addresses.
#[tokio::test]
async fn forwarded_addresses_are_ignored_from_untrusted_peers() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("spoof").await;
    for i in 0..3 {
        let ip = format!("203.0.113.{}", 10 + i);
        let r = login_from(&app, &ip, &u.email, "Wrong-password-1").await;
        assert_unauthorized(&r, &ip);
    }
    let r = login_from(&app, "203.0.113.99", &u.email, PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
}

#[tokio::test]
async fn successful_logins_are_not_counted() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3")).await;
    let u = app.signup("okrl").await;
    for i in 0..5 {
        let r = login(&app, &u.email, PASSWORD).await;
        assert_eq!(st(&r), 200, "login {i}: {:?}", r.body);
    }
    // Two failures after five successes are still below the limit.
    for _ in 0..2 {
        assert_unauthorized(&login(&app, &u.email, "Wrong-password-1").await, "failure");
    }
    assert_eq!(st(&login(&app, &u.email, PASSWORD).await), 200);
}

#[tokio::test]
async fn default_login_limit_is_at_least_ten_failures() {
    let app = spawn().await;
    let u = app.signup("default-rl").await;
    for i in 0..9 {
        assert_unauthorized(
            &login(&app, &u.email, "Wrong-password-1").await,
            &format!("failure {i}"),
        );
    }
    let r = login(&app, &u.email, PASSWORD).await;
    assert_eq!(
        st(&r),
        200,
        "9 failures must not lock (N >= 10): {:?}",
        r.body
    );
}

// ---------------------------------------------------------------------------------------------------------
// refresh rotation (§1.3 Improve, §7.9)

#[tokio::test]
async fn superseded_refresh_cookie_fails_and_revokes_the_session() {
    let app = spawn_with(Options::default().env("REFRESH_REUSE_GRACE_SEC", "1")).await;
    let u = app.signup("theft").await;
    let r = refresh(&app, &u.cookie).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    let new_cookie = cookie_of(&r);
    let new_token = token_of(&r);
    assert_ne!(new_cookie, u.cookie);
    // Both access tokens of the session work (and are now cached by the server).
    assert_eq!(st(&me_bearer(&app, &new_token).await), 200);
    assert_eq!(st(&me_bearer(&app, &u.token).await), 200);

    // Past the grace window (1 s; rotation times compare in whole seconds), the old, correctly signed
    // but superseded cookie: rejected...
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = refresh(&app, &u.cookie).await;
    assert_unauthorized(&r, "superseded refresh cookie");
    assert_eq!(r.body["message"], "Refresh token is invalid or expired");
    // ...and treated as theft: the whole session is revoked.
    assert_unauthorized(&refresh(&app, &new_cookie).await, "new cookie after reuse");
    assert_unauthorized(
        &me_cookie(&app, &new_cookie).await,
        "new cookie as auth after reuse",
    );
    assert_unauthorized(
        &me_bearer(&app, &new_token).await,
        "new access token after reuse",
    );
    assert_unauthorized(
        &me_bearer(&app, &u.token).await,
        "old access token after reuse",
    );

    let db = owner_as_user(&app, &u.id.to_string()).await;
    let row = db
        .query_one(
            "SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE id = $1::text::uuid",
            &[&u.session_id.to_string()],
        )
        .await
        .expect("session row");
    assert!(row.get::<_, bool>(0), "session row marked revoked");
}

#[tokio::test]
async fn theft_revocation_does_not_touch_other_sessions() {
    let app = spawn_with(Options::default().env("REFRESH_REUSE_GRACE_SEC", "0")).await;
    let u = app.signup("theft2").await;
    let other = login(&app, &u.email, PASSWORD).await;
    assert_eq!(st(&other), 200);
    let r = refresh(&app, &u.cookie).await;
    assert_eq!(st(&r), 200);
    assert_unauthorized(&refresh(&app, &u.cookie).await, "reuse");
    assert_eq!(st(&me_bearer(&app, &token_of(&other)).await), 200);
    assert_eq!(st(&refresh(&app, &cookie_of(&other)).await), 200);
}

#[tokio::test]
async fn refresh_without_or_with_garbage_cookie_is_401() {
    let app = spawn().await;
    let u = app.signup("garbage").await;
    let r = app.post("/v1/auth/refresh").send().await;
    assert_unauthorized(&r, "no cookie");
    assert_eq!(r.body["message"], "Session cookie is required");
    let r = app.post("/v1/auth/refresh").cookie(COOKIE, "").send().await;
    assert_unauthorized(&r, "empty cookie");

    let (payload, sig) = u.cookie.split_once('.').expect("cookie is <p>.<s>");
    let mut forged_payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    forged_payload["expiresAt"] = json!(forged_payload["expiresAt"].as_i64().unwrap_or(0) + 1);
    let forged = format!(
        "{}.{sig}",
        URL_SAFE_NO_PAD.encode(forged_payload.to_string())
    );
    for bad in [
        "garbage".to_string(),
        "a.b".to_string(),
        "a.b.c".to_string(),
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
        forged,
        u.token.clone(),
    ] {
        let r = refresh(&app, &bad).await;
        assert_unauthorized(&r, &format!("cookie {bad}"));
        assert_eq!(
            r.body["message"], "Refresh token is invalid or expired",
            "{bad}"
        );
        assert!(r.cookie(COOKIE).is_none_or(|c| c.is_empty()), "{bad}");
    }
    // Garbage did not hurt the real session.
    assert_eq!(st(&refresh(&app, &u.cookie).await), 200);
}

/// Two browser tabs refreshing with the same cookie at the same moment (here 50): one rotation happens
/// and every request gets its result, so nobody is logged out. Without the grace window only one wins.
#[tokio::test]
async fn parallel_refreshes_with_one_cookie_share_one_rotation() {
    let app = spawn().await;
    let u = app.signup("parallel").await;
    let answers = futures_util::future::join_all((0..50).map(|_| refresh(&app, &u.cookie))).await;
    let cookies: std::collections::HashSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(st(r), 200, "{:?}", r.body);
            cookie_of(r)
        })
        .collect();
    assert_eq!(cookies.len(), 1, "one rotated cookie for all: {cookies:?}");
    let current = cookies.into_iter().next().unwrap_or_default();
    assert_ne!(current, u.cookie);
    assert_eq!(st(&me_cookie(&app, &current).await), 200);
    assert_eq!(st(&refresh(&app, &current).await), 200, "and it rotates on");

    let app = spawn_with(Options::default().env("REFRESH_REUSE_GRACE_SEC", "0")).await;
    let u = app.signup("parallel-strict").await;
    let (a, b) = tokio::join!(refresh(&app, &u.cookie), refresh(&app, &u.cookie));
    let mut statuses = [st(&a), st(&b)];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{:?} / {:?}", a.body, b.body);
    let loser = if st(&a) == 401 { &a } else { &b };
    assert_eq!(loser.code(), "UNAUTHORIZED");
}

#[tokio::test]
async fn absolute_session_lifetime_caps_sliding_refresh() {
    let app = spawn_with(Options::default().env("SESSION_ABSOLUTE_TTL_SEC", "4")).await;
    let email = app.unique_email("absolute");
    let r = signup_raw(&app, &email, PASSWORD).await;
    // Server timestamps are whole seconds: the session ends between 3 and 4 s after the signup request.
    let signed_up = Instant::now();
    assert_eq!(st(&r), 201, "{:?}", r.body);
    let (uid, sid) = (user_id_of(&r), session_id_of(&r));
    let r = refresh(&app, &cookie_of(&r)).await;
    assert_eq!(
        st(&r),
        200,
        "refresh within the absolute lifetime: {:?}",
        r.body
    );
    let (cookie, token) = (cookie_of(&r), token_of(&r));
    assert_eq!(st(&me_bearer(&app, &token).await), 200);
    // The sliding renewal did not extend the session past its absolute end.
    let db = owner_as_user(&app, &uid).await;
    let capped: bool = db
        .query_one(
            "SELECT expires_at <= absolute_expires_at \
                    AND absolute_expires_at <= created_at + interval '5 seconds' \
             FROM auth_sessions WHERE id = $1::text::uuid",
            &[&sid],
        )
        .await
        .expect("row")
        .get(0);
    assert!(capped, "expires_at capped by absolute_expires_at");

    tokio::time::sleep(
        (signed_up + Duration::from_millis(4300)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_unauthorized(
        &refresh(&app, &cookie).await,
        "refresh after absolute expiry",
    );
    assert_unauthorized(
        &me_bearer(&app, &token).await,
        "access token after absolute expiry",
    );
    assert_unauthorized(
        &me_cookie(&app, &cookie).await,
        "cookie auth after absolute expiry",
    );
}

// ---------------------------------------------------------------------------------------------------------
// logout-all, expiry, token verification

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_user_only() {
    let app = spawn().await;
    let u = app.signup("all").await;
    let other = app.signup("bystander").await;
    let l1 = login(&app, &u.email, PASSWORD).await;
    let l2 = login(&app, &u.email, PASSWORD).await;
    assert_eq!((st(&l1), st(&l2)), (200, 200));
    let tokens = [u.token.clone(), token_of(&l1), token_of(&l2)];
    let cookies = [u.cookie.clone(), cookie_of(&l1), cookie_of(&l2)];
    // Warm every session (the server may cache live sessions).
    for t in &tokens {
        assert_eq!(st(&me_bearer(&app, t).await), 200);
    }

    let r = app
        .post("/v1/auth/logout-all")
        .bearer(&tokens[1])
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert_eq!(r.body, json!({ "ok": true, "revokedCount": 3 }));
    assert_eq!(r.cookie(COOKIE).as_deref(), Some(""), "cookie cleared");

    for (i, t) in tokens.iter().enumerate() {
        assert_unauthorized(&me_bearer(&app, t).await, &format!("bearer {i}"));
    }
    for (i, c) in cookies.iter().enumerate() {
        assert_unauthorized(&me_cookie(&app, c).await, &format!("cookie auth {i}"));
        assert_unauthorized(&refresh(&app, c).await, &format!("refresh {i}"));
    }
    assert_eq!(st(&me_bearer(&app, &other.token).await), 200);
    assert_eq!(st(&refresh(&app, &other.cookie).await), 200);

    // Already revoked sessions are not counted again; a new login is unaffected.
    let l3 = login(&app, &u.email, PASSWORD).await;
    let r = app
        .post("/v1/auth/logout-all")
        .bearer(&token_of(&l3))
        .send()
        .await;
    assert_eq!(r.body, json!({ "ok": true, "revokedCount": 1 }));
    assert_unauthorized(
        &app.post("/v1/auth/logout-all").send().await,
        "anonymous logout-all",
    );
}

#[tokio::test]
async fn expired_session_is_rejected() {
    let app = spawn().await;
    let r = signup_raw(&app, &app.unique_email("expired"), PASSWORD).await;
    assert_eq!(st(&r), 201);
    let (token, cookie, uid, sid) = (
        token_of(&r),
        cookie_of(&r),
        user_id_of(&r),
        session_id_of(&r),
    );
    let db = owner_as_user(&app, &uid).await;
    let n = db
        .execute(
            "UPDATE auth_sessions SET expires_at = now() - interval '1 minute' WHERE id = $1::text::uuid",
            &[&sid],
        )
        .await
        .expect("expire session");
    assert_eq!(n, 1);
    assert_unauthorized(
        &me_bearer(&app, &token).await,
        "access token of expired session",
    );
    assert_unauthorized(&me_cookie(&app, &cookie).await, "cookie of expired session");
    assert_unauthorized(&refresh(&app, &cookie).await, "refresh of expired session");
}

const KNOWN_SECRET: &str = "it-access-secret-0123456789abcdef0123456789";

#[tokio::test]
async fn tampered_or_foreign_access_tokens_are_rejected() {
    let app = spawn_with(Options::default().env("AUTH_TOKEN_SECRET", KNOWN_SECRET)).await;
    let u = app.signup("tamper").await;
    let kid = jsonwebtoken::decode_header(&u.token)
        .expect("jwt header")
        .kid;
    assert!(kid.is_some(), "access tokens carry a key id");
    let claims = jwt_claims(&u.token);

    // Controls: the real token, and the same claims re-signed with the right key, are accepted.
    assert_eq!(st(&me_bearer(&app, &u.token).await), 200);
    let resigned = sign_jwt(&claims, KNOWN_SECRET, kid.clone());
    assert_eq!(
        st(&me_bearer(&app, &resigned).await),
        200,
        "forging helper is sound"
    );

    let mut bad: Vec<(&str, String)> = vec![
        ("flipped signature char", flip_signature_char(&u.token)),
        (
            "other secret, same kid",
            sign_jwt(&claims, "another-secret-entirely-0123456789", kid.clone()),
        ),
        ("truncated", u.token[..u.token.len() - 4].to_string()),
        ("garbage", "not.a.token".to_string()),
        ("refresh cookie as bearer", u.cookie.clone()),
    ];
    // Payload swapped without re-signing.
    let mut swapped = claims.clone();
    swapped["email"] = json!("mallory@example.com");
    let parts: Vec<&str> = u.token.split('.').collect();
    bad.push((
        "payload changed, old signature",
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(swapped.to_string()),
            parts[2]
        ),
    ));
    // alg=none.
    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string());
    bad.push(("alg none", format!("{none_header}.{}.", parts[1])));
    // Correct key but expired.
    let mut expired = claims.clone();
    let now = chrono::Utc::now().timestamp();
    expired["iat"] = json!(now - 2000);
    expired["exp"] = json!(now - 1000);
    bad.push(("expired", sign_jwt(&expired, KNOWN_SECRET, kid.clone())));
    // Correct key, but not an access token.
    let not_access: Value =
        serde_json::from_str(&claims.to_string().replace("\"access\"", "\"refresh\""))
            .expect("json");
    assert_ne!(not_access, claims, "claims carry the access type");
    bad.push((
        "wrong token type",
        sign_jwt(&not_access, KNOWN_SECRET, kid.clone()),
    ));
    // Correct key, but a session that does not exist.
    let ghost: Value = serde_json::from_str(
        &claims
            .to_string()
            .replace(&u.session_id.to_string(), &Uuid::new_v4().to_string()),
    )
    .expect("json");
    assert_ne!(ghost, claims, "claims carry the session id");
    bad.push((
        "unknown session",
        sign_jwt(&ghost, KNOWN_SECRET, kid.clone()),
    ));

    for (what, token) in &bad {
        assert_unauthorized(&me_bearer(&app, token).await, what);
        let r = app
            .post("/v1/orgs")
            .bearer(token)
            .json(json!({ "name": "Forged", "slug": slug() }))
            .send()
            .await;
        assert_unauthorized(&r, what);
    }
}

#[tokio::test]
async fn authorization_scheme_handling() {
    let app = spawn().await;
    let u = app.signup("scheme").await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = app
            .get("/v1/me")
            .header("authorization", &format!("{scheme} {}", u.token))
            .send()
            .await;
        assert_eq!(st(&r), 200, "scheme {scheme}: {:?}", r.body);
    }
    // Basic is anonymous; so is a bearer with two spaces or no token.
    for value in [
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Bearer  {}", u.token),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        u.token.clone(),
    ] {
        let r = app
            .get("/v1/me")
            .header("authorization", &value)
            .send()
            .await;
        assert_unauthorized(&r, &value);
    }
    // An invalid bearer falls back to a valid cookie (§0.1 step 2), which mints a fresh token.
    let r = app
        .get("/v1/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert!(r.header("x-access-token").is_some());
    let r = app
        .get("/v1/me")
        .bearer("garbage.token.value")
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert!(r.header("x-access-token").is_some());
}

#[tokio::test]
async fn access_token_key_rotation_across_instances() {
    // Two secrets: A (old) and B (new). Instances share one database and one Redis prefix.
    const A: &str = "rotation-secret-A-0123456789abcdef0123";
    const B: &str = "rotation-secret-B-0123456789abcdef0123";
    const R: &str = "rotation-refresh-secret-0123456789abcdef";
    let old = spawn_with(
        Options::default()
            .env("AUTH_TOKEN_SECRET", A)
            .env("REFRESH_TOKEN_SECRET", R),
    )
    .await;
    let shared = |o: Options| {
        o.env("DATABASE_URL", &common::app_url(&old.db))
            .env("DATABASE_MIGRATE_URL", &common::owner_url(&old.db))
            .env("REDIS_KEY_PREFIX", &format!("test:{}:", old.db))
            .env("REFRESH_TOKEN_SECRET", R)
    };
    let rotating = spawn_with(shared(
        Options::default()
            .env("AUTH_TOKEN_SECRET", B)
            .env("AUTH_TOKEN_SECRET_PREVIOUS", A),
    ))
    .await;
    let rotated = spawn_with(shared(Options::default().env("AUTH_TOKEN_SECRET", B))).await;

    let u = old.signup("rotate").await;
    // The new key still accepts tokens of the previous one.
    let r = me_bearer(&rotating, &u.token).await;
    assert_eq!(
        st(&r),
        200,
        "old-key token on the rotating instance: {:?}",
        r.body
    );
    // New tokens are signed with the new key.
    let r = refresh(&rotating, &u.cookie).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    let new_token = token_of(&r);
    assert_ne!(
        jsonwebtoken::decode_header(&new_token).expect("hdr").kid,
        jsonwebtoken::decode_header(&u.token).expect("hdr").kid,
        "the key id names the signing key"
    );
    assert_eq!(st(&me_bearer(&rotating, &new_token).await), 200);
    assert_eq!(st(&me_bearer(&rotated, &new_token).await), 200);
    // Once the previous key is dropped, its tokens are refused.
    assert_unauthorized(
        &me_bearer(&rotated, &u.token).await,
        "old-key token after rotation",
    );
    // An instance that never had key B refuses its tokens.
    assert_unauthorized(
        &me_bearer(&old, &new_token).await,
        "new-key token on old instance",
    );
}

/// A second instance of the same deployment: same database, same Redis prefix.
async fn second_instance(first: &TestApp, opts: Options) -> TestApp {
    spawn_with(
        opts.env("DATABASE_URL", &common::app_url(&first.db))
            .env("DATABASE_MIGRATE_URL", &common::owner_url(&first.db))
            .env("REDIS_KEY_PREFIX", &format!("test:{}:", first.db)),
    )
    .await
}

/// Polls `f` for up to 2 s until it gives `want` (instances learn revocations over Redis pub/sub, which takes
/// milliseconds, not the cache TTL). Returns the last answer.
async fn poll_for<F, Fut>(want: u16, mut f: F) -> Resp
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = f().await;
        if st(&r) == want || Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn eventually<F, Fut>(want: u16, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let r = poll_for(want, f).await;
    assert_eq!(
        st(&r),
        want,
        "{what}: expected {want}, still {} after 2 s: {:?}",
        st(&r),
        r.body
    );
}

#[tokio::test]
async fn revocations_reach_other_instances() {
    let a = spawn_with(Options::default().env("REFRESH_REUSE_GRACE_SEC", "0")).await;
    let b = second_instance(&a, Options::default()).await;
    let u = a.signup("multi").await;
    let l = login(&a, &u.email, PASSWORD).await;
    let v = a.signup("multi-theft").await;
    let w = a.signup("multi-all").await;
    let w2 = token_of(&login(&a, &w.email, PASSWORD).await);
    // Instance B has seen (and may cache) every session.
    for t in [&u.token, &token_of(&l), &v.token, &w.token, &w2] {
        assert_eq!(st(&me_bearer(&b, t).await), 200);
    }

    // Logout on A.
    assert_eq!(
        st(&a.post("/v1/auth/logout").bearer(&u.token).send().await),
        200
    );
    eventually(401, "logged-out token on B", || me_bearer(&b, &u.token)).await;
    assert_eq!(
        st(&me_bearer(&b, &token_of(&l)).await),
        200,
        "other session unaffected"
    );

    // Theft detection on A.
    let r = refresh(&a, &v.cookie).await;
    assert_eq!(st(&r), 200);
    assert_unauthorized(&refresh(&a, &v.cookie).await, "reuse");
    eventually(401, "token of a stolen session on B", || {
        me_bearer(&b, &v.token)
    })
    .await;

    // logout-all on A.
    let r = a.post("/v1/auth/logout-all").bearer(&w.token).send().await;
    assert_eq!(r.body["revokedCount"], 2, "{:?}", r.body);
    eventually(401, "logout-all, first session on B", || {
        me_bearer(&b, &w.token)
    })
    .await;
    eventually(401, "logout-all, second session on B", || {
        me_bearer(&b, &w2)
    })
    .await;
}

#[tokio::test]
async fn rotation_on_one_instance_is_seen_by_another() {
    let a = spawn().await;
    let b = second_instance(&a, Options::default()).await;
    let u = a.signup("multi-rotate").await;
    // B knows the session with its first refresh token.
    assert_eq!(st(&me_cookie(&b, &u.cookie).await), 200);
    assert_eq!(st(&me_bearer(&b, &u.token).await), 200);

    let r = refresh(&a, &u.cookie).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    let new_cookie = cookie_of(&r);
    // The current cookie authenticates on B, the superseded one does not.
    let current = poll_for(200, || me_cookie(&b, &new_cookie)).await;
    let superseded = poll_for(401, || me_cookie(&b, &u.cookie)).await;
    assert_eq!(
        (st(&current), st(&superseded)),
        (200, 401),
        "on instance B after rotating on A: current cookie {:?}, superseded cookie {:?}",
        current.body,
        superseded.body
    );
    // Refreshing on B with the current cookie works.
    let r = refresh(&b, &new_cookie).await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
}

#[tokio::test]
async fn unusable_or_malformed_password_hashes_never_verify() {
    // Many failures on purpose: keep the limiter out of the way.
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "1000")).await;
    let db = app.owner_db().await;
    let salt = "00112233445566778899aabbccddeeff";
    for (i, stored) in [
        "!oauth-only!abcdefghijklmnopqrstuvwxyz".to_string(),
        "garbage".to_string(),
        String::new(),
        "$argon2id$v=19$m=19456,t=2,p=1$broken".to_string(),
        format!("{salt}:"),
        format!("{salt}:zz"),
        format!("{salt}:{}", "00".repeat(32)),
        format!("short:{}", "00".repeat(64)),
        format!(
            "{}:{}",
            salt.to_uppercase().replace('0', "G"),
            "00".repeat(64)
        ),
    ]
    .iter()
    .enumerate()
    {
        let email = app.unique_email(&format!("badhash{i}"));
        db.execute(
            "INSERT INTO users (email, password_hash) VALUES ($1, $2)",
            &[&email, stored],
        )
        .await
        .expect("insert user");
        for pw in [PASSWORD, "x", stored.as_str()] {
            if pw.is_empty() {
                continue;
            }
            let r = login(&app, &email, pw).await;
            assert_eq!(
                r.body,
                json!({ "code": "UNAUTHORIZED", "message": "Invalid credentials" }),
                "hash {stored:?}, password {pw:?}"
            );
        }
    }
}

#[tokio::test]
async fn custom_cookie_name_and_session_ttl() {
    let app = spawn_with(
        Options::default()
            .env("SESSION_COOKIE_NAME", "my_sess")
            .env("SESSION_TTL_SEC", "3600"),
    )
    .await;
    let r = signup_raw(&app, &app.unique_email("cname"), PASSWORD).await;
    assert_eq!(st(&r), 201);
    assert!(r.cookie(COOKIE).is_none(), "default name not used");
    let line = r.set_cookie_line("my_sess").expect("custom cookie");
    assert!(line.contains("Max-Age=3600"), "{line}");
    let cookie = r.cookie("my_sess").expect("value");
    let (uid, sid) = (user_id_of(&r), session_id_of(&r));
    let db = owner_as_user(&app, &uid).await;
    let ok: bool = db
        .query_one(
            "SELECT expires_at BETWEEN now() + interval '3500 seconds' AND now() + interval '3700 seconds' \
             FROM auth_sessions WHERE id = $1::text::uuid",
            &[&sid],
        )
        .await
        .expect("row")
        .get(0);
    assert!(ok, "expires_at = now + SESSION_TTL_SEC");
    // Refresh reads the configured name only.
    let r = app
        .post("/v1/auth/refresh")
        .cookie(COOKIE, &cookie)
        .send()
        .await;
    assert_unauthorized(&r, "cookie under the default name");
    assert_eq!(r.body["message"], "Session cookie is required");
    let r = app
        .post("/v1/auth/refresh")
        .cookie("my_sess", &cookie)
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    assert!(r.set_cookie_line("my_sess").is_some());
    let r = app
        .get("/v1/me")
        .cookie("my_sess", &r.cookie("my_sess").expect("rotated"))
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
}

#[tokio::test]
async fn login_limit_lifts_after_the_window() {
    let app = spawn_with(
        Options::default()
            .env("LOGIN_MAX_FAILURES", "2")
            .env("LOGIN_FAILURE_WINDOW_SEC", "1"),
    )
    .await;
    let u = app.signup("window").await;
    for _ in 0..2 {
        assert_unauthorized(&login(&app, &u.email, "Wrong-password-1").await, "failure");
    }
    let r = login(&app, &u.email, PASSWORD).await;
    assert_eq!((st(&r), r.code()), (429, "RATE_LIMITED"), "{:?}", r.body);
    let secs = retry_after(&r);
    assert_eq!(secs, 1, "Retry-After within the 1 s window");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = login(&app, &u.email, PASSWORD).await;
    assert_eq!(st(&r), 200, "after Retry-After: {:?}", r.body);
}

// ---------------------------------------------------------------------------------------------------------
// CSRF on cookie authentication (Improve)

#[tokio::test]
async fn cookie_authenticated_writes_require_the_web_origin() {
    let app = spawn().await;
    let u = app.signup("csrf").await;
    let create =
        |origin_header: Option<(&'static str, &'static str)>, cookie: bool, bearer: bool| {
            let mut req = app
                .post("/v1/orgs")
                .json(json!({ "name": "Csrf Org", "slug": slug() }));
            if let Some((k, v)) = origin_header {
                req = req.header(k, v);
            }
            if cookie {
                req = req.cookie(COOKIE, &u.cookie);
            }
            if bearer {
                req = req.bearer(&u.token);
            }
            req.send()
        };
    let r = create(Some(("origin", EVIL)), true, false).await;
    assert_eq!(
        (st(&r), r.code()),
        (403, "FORBIDDEN"),
        "foreign Origin: {:?}",
        r.body
    );
    let r = create(Some(("referer", "http://evil.example/page")), true, false).await;
    assert_eq!(
        (st(&r), r.code()),
        (403, "FORBIDDEN"),
        "foreign Referer: {:?}",
        r.body
    );
    let r = create(Some(("origin", WEB)), true, false).await;
    assert_eq!(st(&r), 201, "own Origin: {:?}", r.body);
    let r = create(
        Some(("referer", "http://localhost:3000/orgs/new")),
        true,
        false,
    )
    .await;
    assert_eq!(st(&r), 201, "own Referer: {:?}", r.body);
    let r = create(None, true, false).await;
    assert_eq!(st(&r), 201, "no Origin (non-browser client): {:?}", r.body);
    let r = create(Some(("origin", "null")), true, false).await;
    assert_eq!(
        (st(&r), r.code()),
        (403, "FORBIDDEN"),
        "Origin: null: {:?}",
        r.body
    );
    // Origin wins over Referer.
    let r = app
        .post("/v1/orgs")
        .header("origin", EVIL)
        .header("referer", "http://localhost:3000/orgs/new")
        .cookie(COOKIE, &u.cookie)
        .json(json!({ "name": "Csrf Org", "slug": slug() }))
        .send()
        .await;
    assert_eq!((st(&r), r.code()), (403, "FORBIDDEN"), "{:?}", r.body);
    // Other unsafe methods too.
    let org = u.personal_org;
    let r = app
        .put(&format!("/v1/orgs/{org}/settings"))
        .org(org)
        .header("origin", EVIL)
        .cookie(COOKIE, &u.cookie)
        .json(json!({ "tools": { "shellRunEnabled": true } }))
        .send()
        .await;
    assert_eq!((st(&r), r.code()), (403, "FORBIDDEN"), "PUT: {:?}", r.body);
    // Bearer authentication is not affected by a foreign Origin.
    let r = create(Some(("origin", EVIL)), false, true).await;
    assert_eq!(st(&r), 201, "bearer with foreign Origin: {:?}", r.body);
    let r = create(Some(("origin", EVIL)), true, true).await;
    assert_eq!(
        st(&r),
        201,
        "bearer+cookie with foreign Origin: {:?}",
        r.body
    );
    // Safe methods are not affected.
    let r = app
        .get("/v1/me")
        .header("origin", EVIL)
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    // Cross-site cookie logout is refused, and the session survives it.
    let r = app
        .post("/v1/auth/logout")
        .header("origin", EVIL)
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!((st(&r), r.code()), (403, "FORBIDDEN"), "{:?}", r.body);
    let r = app
        .post("/v1/auth/logout-all")
        .header("origin", EVIL)
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!((st(&r), r.code()), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(st(&me_bearer(&app, &u.token).await), 200);
}

#[tokio::test]
async fn cross_site_refresh_is_refused_without_rotating() {
    // POST /v1/auth/refresh is authenticated by the cookie alone: an unsafe, cookie-authenticated request.
    let app = spawn().await;
    let u = app.signup("csrf-refresh").await;
    let r = app
        .post("/v1/auth/refresh")
        .header("origin", EVIL)
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!((st(&r), r.code()), (403, "FORBIDDEN"), "{:?}", r.body);
    assert!(r.cookie(COOKIE).is_none());
    let r = app
        .post("/v1/auth/refresh")
        .header("origin", WEB)
        .cookie(COOKIE, &u.cookie)
        .send()
        .await;
    assert_eq!(
        st(&r),
        200,
        "the refused request did not rotate: {:?}",
        r.body
    );
}

// ---------------------------------------------------------------------------------------------------------
// secrets at rest, legacy hashes

#[tokio::test]
async fn refresh_tokens_and_passwords_are_hashed_at_rest() {
    let app = spawn().await;
    let email = app.unique_email("rest");
    let r = app
        .post("/v1/auth/signup")
        .header("user-agent", "vespid-it/1.0")
        .json(json!({ "email": email, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(st(&r), 201);
    let (uid, sid, cookie, token) = (
        user_id_of(&r),
        session_id_of(&r),
        cookie_of(&r),
        token_of(&r),
    );
    let db = owner_as_user(&app, &uid).await;
    let row = db
        .query_one(
            "SELECT refresh_token_hash, user_agent, ip, \
                    expires_at > now() + interval '6 days', absolute_expires_at >= expires_at \
             FROM auth_sessions WHERE id = $1::text::uuid",
            &[&sid],
        )
        .await
        .expect("session row");
    assert_eq!(row.get::<_, String>(0), sha256_hex(&cookie));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("vespid-it/1.0")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("127.0.0.1")
    );
    assert!(row.get::<_, bool>(3), "expires_at = now + SESSION_TTL_SEC");
    assert!(row.get::<_, bool>(4));

    let all = |db: tokio_postgres::Client| async move {
        db.query_one(
            "SELECT coalesce(string_agg(row_to_json(s)::text, ' '), '') FROM auth_sessions s",
            &[],
        )
        .await
        .expect("dump")
        .get::<_, String>(0)
    };
    let dump = all(db).await;
    let sig = cookie.rsplit('.').next().expect("sig");
    assert!(!dump.contains(&cookie), "cookie stored in clear: {dump}");
    assert!(!dump.contains(sig), "cookie signature stored: {dump}");
    assert!(!dump.contains(&token), "access token stored: {dump}");

    // After rotation the row holds the new cookie's hash, and neither cookie in clear.
    let r = refresh(&app, &cookie).await;
    assert_eq!(st(&r), 200);
    let new_cookie = cookie_of(&r);
    let db = owner_as_user(&app, &uid).await;
    let hash: String = db
        .query_one(
            "SELECT refresh_token_hash FROM auth_sessions WHERE id = $1::text::uuid",
            &[&sid],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(hash, sha256_hex(&new_cookie));
    let dump = all(db).await;
    assert!(
        !dump.contains(&new_cookie) && !dump.contains(&cookie),
        "{dump}"
    );

    let db = app.owner_db().await;
    let row = db
        .query_one(
            "SELECT password_hash, row_to_json(u)::text FROM users u WHERE id = $1::text::uuid",
            &[&uid],
        )
        .await
        .expect("user row");
    let hash: String = row.get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!row.get::<_, String>(1).contains(PASSWORD));
}

#[tokio::test]
async fn legacy_scrypt_hash_logs_in_and_is_upgraded_to_argon2id() {
    let app = spawn().await;
    let email = app.unique_email("legacy");
    let salt = Uuid::new_v4().simple().to_string(); // 32 lowercase hex characters
    assert_eq!(salt.len(), 32);
    let params = scrypt::Params::new(14, 8, 1, 64).expect("params");
    let mut dk = [0u8; 64];
    scrypt::scrypt(PASSWORD.as_bytes(), salt.as_bytes(), &params, &mut dk).expect("scrypt");
    let stored = format!("{salt}:{}", hex::encode(dk));
    let id = Uuid::new_v4().to_string();
    let db = app.owner_db().await;
    db.execute(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES ($1::text::uuid, $2, $3, 'Legacy')",
        &[&id, &email, &stored],
    )
    .await
    .expect("insert legacy user");

    // A wrong password does not verify and changes nothing.
    assert_unauthorized(
        &login(&app, &email, "Password124").await,
        "wrong password, legacy hash",
    );
    assert_eq!(password_hash_of(&db, &id).await, stored);

    let r = login(&app, &email, PASSWORD).await;
    assert_eq!(st(&r), 200, "legacy login: {:?}", r.body);
    assert_eq!(user_id_of(&r), id);
    assert_eq!(r.body["user"]["displayName"], "Legacy");
    let upgraded = password_hash_of(&db, &id).await;
    assert!(upgraded.starts_with("$argon2id$"), "rehashed: {upgraded}");
    // The new hash works, the old format is gone.
    assert_eq!(st(&login(&app, &email, PASSWORD).await), 200);
    assert_unauthorized(
        &login(&app, &email, "Password124").await,
        "wrong password, new hash",
    );
    // The imported user got a personal workspace on login.
    let m = me_bearer(&app, &token_of(&r)).await;
    assert_eq!(st(&m), 200);
    assert!(m.body["defaultOrgId"].is_string(), "{:?}", m.body);
}

async fn password_hash_of(db: &tokio_postgres::Client, id: &str) -> String {
    db.query_one(
        "SELECT password_hash FROM users WHERE id = $1::text::uuid",
        &[&id],
    )
    .await
    .expect("user")
    .get(0)
}

// ---------------------------------------------------------------------------------------------------------
// GET /v1/me

#[tokio::test]
async fn me_after_signup_lists_the_personal_workspace() {
    let app = spawn().await;
    let r = signup_raw(&app, &app.unique_email("me"), PASSWORD).await;
    assert_eq!(st(&r), 201);
    let (token, uid) = (token_of(&r), user_id_of(&r));
    let m = me_bearer(&app, &token).await;
    assert_eq!(st(&m), 200, "{:?}", m.body);
    assert_eq!(m.body["user"]["id"], uid.as_str());
    assert!(
        m.body["user"].get("passwordHash").is_none()
            && m.body["user"].get("password_hash").is_none()
    );
    let default = m.body["defaultOrgId"]
        .as_str()
        .expect("defaultOrgId string")
        .to_string();
    let orgs = m.body["orgs"].as_array().expect("orgs").clone();
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    let org = orgs
        .iter()
        .find(|o| o["id"] == default.as_str())
        .expect("default org listed");
    assert_eq!(org["roleKey"], "owner");
    assert_eq!(org["name"], "Personal workspace");
    assert_eq!(org["slug"], format!("personal-{}", &uid[..8]));

    // Idempotent; a newer org does not become the default.
    let r = app
        .post("/v1/orgs")
        .bearer(&token)
        .json(json!({ "name": "Second", "slug": slug() }))
        .send()
        .await;
    assert_eq!(st(&r), 201);
    let m = me_bearer(&app, &token).await;
    assert_eq!(m.body["orgs"].as_array().map(Vec::len), Some(2));
    assert_eq!(m.body["defaultOrgId"], default.as_str());
    assert_eq!(
        m.body["orgs"][0]["id"],
        default.as_str(),
        "ordered by creation"
    );
}

#[tokio::test]
async fn me_requires_authentication() {
    let app = spawn().await;
    let r = app.get("/v1/me").send().await;
    assert_unauthorized(&r, "anonymous /v1/me");
    assert_eq!(
        r.body,
        json!({ "code": "UNAUTHORIZED", "message": "Unauthorized" })
    );
    assert_unauthorized(&me_bearer(&app, "nope").await, "bad bearer");
    assert_unauthorized(&me_cookie(&app, "nope").await, "bad cookie");
}

// ---------------------------------------------------------------------------------------------------------
// cookie Secure attribute

#[tokio::test]
async fn refresh_cookie_is_secure_in_production_or_when_configured() {
    let long = "production-grade-secret-0123456789abcdef";
    let prod = spawn_with(
        Options::default()
            .env("NODE_ENV", "production")
            .env("AUTH_TOKEN_SECRET", long)
            .env("OAUTH_STATE_SECRET", &format!("{long}-oauth"))
            .env("REFRESH_TOKEN_SECRET", &format!("{long}-refresh"))
            .env("GATEWAY_SERVICE_TOKEN", &format!("{long}-gateway")),
    )
    .await;
    let dev_secure = spawn_with(Options::default().env("COOKIE_SECURE", "true")).await;
    for (what, app) in [("production", &prod), ("COOKIE_SECURE=true", &dev_secure)] {
        let r = signup_raw(app, &app.unique_email("secure"), PASSWORD).await;
        assert_eq!(st(&r), 201, "{what}: {:?}", r.body);
        let line = r.set_cookie_line(COOKIE).expect("cookie");
        assert!(
            line.split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("Secure")),
            "{what}: {line}"
        );
        let r = app
            .post("/v1/auth/logout")
            .bearer(&token_of(&r))
            .send()
            .await;
        let line = r.set_cookie_line(COOKIE).expect("cleared cookie");
        assert!(
            line.split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("Secure")),
            "{what}, clearing: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Logs (§7.9): no credentials in any log line, at debug level. The in-process harness shares one global
// tracing subscriber, so this runs the real binary as a child process and reads its output.

struct Child {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(body) = body {
            b = b.json(&body);
        }
        let res = b.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }
}

#[tokio::test]
async fn logs_never_contain_credentials() {
    let db = common::fresh_db().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let log = std::env::temp_dir().join(format!("vespid-auth-log-{}.log", Uuid::new_v4()));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("clone");
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vespid"))
        .args(["serve", "--role", "api", "--no-migrate"])
        .env_clear()
        .env("DATABASE_URL", common::app_url(&db))
        .env("DATABASE_MIGRATE_URL", common::owner_url(&db))
        .env("DATABASE_POOL_SIZE", "4")
        .env("REDIS_URL", redis)
        .env("REDIS_KEY_PREFIX", format!("test:{db}:"))
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("HTTP_WORKERS", "1")
        .env("API_LOG_LEVEL", "debug")
        .env("LOG_FORMAT", "json")
        .env("LOGIN_MAX_FAILURES", "2")
        .env("REFRESH_REUSE_GRACE_SEC", "0")
        .env("SECRETS_KEK_ID", "test-kek-v1")
        .env(
            "SECRETS_KEK_BASE64",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start vespid");
    let mut child = Child { child, log };
    let api = Remote {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            panic!(
                "vespid exited with {status}: {}",
                std::fs::read_to_string(&child.log).unwrap_or_default()
            );
        }
        if let Ok(r) = api.http.get(format!("{}/healthz", api.base)).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "vespid did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    use reqwest::Method;
    let pw1 = "Log-Secret-Password-One-7f3a";
    let pw2 = "Log-Secret-Password-Two-91bc";
    let wrong = "Log-Wrong-Password-4d2e";
    let e1 = format!("log1-{}@example.com", Uuid::new_v4().simple());
    let e2 = format!("log2-{}@example.com", Uuid::new_v4().simple());
    let mut secrets: Vec<(String, String)> = vec![
        ("password 1".into(), pw1.into()),
        ("password 2".into(), pw2.into()),
        ("wrong password".into(), wrong.into()),
    ];
    let mut remember = |what: &str, v: String| {
        secrets.push((what.to_string(), v.clone()));
        if let Some(sig) = v.rsplit('.').next().filter(|s| s.len() >= 20) {
            secrets.push((format!("{what} (signature)"), sig.to_string()));
        }
    };

    let s1 = api
        .send(
            Method::POST,
            "/v1/auth/signup",
            Some(json!({ "email": e1, "password": pw1 })),
            &[],
        )
        .await;
    assert_eq!(st(&s1), 201, "{:?}", s1.body);
    let (t1, c1) = (token_of(&s1), cookie_of(&s1));
    remember("signup token", t1.clone());
    remember("signup cookie", c1.clone());
    let l1 = api
        .send(
            Method::POST,
            "/v1/auth/login",
            Some(json!({ "email": e1, "password": pw1 })),
            &[],
        )
        .await;
    assert_eq!(st(&l1), 200, "{:?}", l1.body);
    remember("login token", token_of(&l1));
    remember("login cookie", cookie_of(&l1));
    let bearer1 = format!("Bearer {t1}");
    let cookie1 = format!("{COOKIE}={c1}");
    let me = api
        .send(Method::GET, "/v1/me", None, &[("authorization", &bearer1)])
        .await;
    assert_eq!(st(&me), 200);
    let org = me.body["defaultOrgId"].as_str().expect("org").to_string();
    // Cookie auth: minted access token.
    let m = api
        .send(
            Method::POST,
            "/v1/orgs",
            Some(json!({ "name": "Log Org", "slug": slug() })),
            &[("cookie", &cookie1)],
        )
        .await;
    assert_eq!(st(&m), 201, "{:?}", m.body);
    remember("minted token", m.header("x-access-token").expect("minted"));
    // Rotation, then reuse (theft path logs a warning).
    let rf = api
        .send(
            Method::POST,
            "/v1/auth/refresh",
            None,
            &[("cookie", &cookie1)],
        )
        .await;
    assert_eq!(st(&rf), 200, "{:?}", rf.body);
    remember("refreshed token", token_of(&rf));
    remember("refreshed cookie", cookie_of(&rf));
    let reuse = api
        .send(
            Method::POST,
            "/v1/auth/refresh",
            None,
            &[("cookie", &cookie1)],
        )
        .await;
    assert_eq!(st(&reuse), 401);
    // Invitation token, and a failing accept with a made-up token.
    let l1_bearer = format!("Bearer {}", token_of(&l1));
    let inv = api
        .send(
            Method::POST,
            &format!("/v1/orgs/{org}/invitations"),
            Some(json!({ "email": e2, "roleKey": "member" })),
            &[("authorization", &l1_bearer), ("x-org-id", &org)],
        )
        .await;
    assert_eq!(st(&inv), 201, "{:?}", inv.body);
    let inv_token = inv.body["invitation"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    secrets.push(("invitation token".into(), inv_token.clone()));
    if let Some((_, rest)) = inv_token.split_once('.') {
        secrets.push(("invitation token secret part".into(), rest.to_string()));
    }
    let s2 = api
        .send(
            Method::POST,
            "/v1/auth/signup",
            Some(json!({ "email": e2, "password": pw2 })),
            &[],
        )
        .await;
    assert_eq!(st(&s2), 201);
    let bearer2 = format!("Bearer {}", token_of(&s2));
    secrets.push(("signup 2 token".into(), token_of(&s2)));
    let fake_secret = format!("fakeinvite{}", Uuid::new_v4().simple());
    secrets.push(("made-up invitation token".into(), fake_secret.clone()));
    let r = api
        .send(
            Method::POST,
            &format!("/v1/invitations/{org}.{fake_secret}/accept"),
            None,
            &[("authorization", &bearer2)],
        )
        .await;
    assert_eq!(st(&r), 404, "{:?}", r.body);
    let r = api
        .send(
            Method::POST,
            &format!("/v1/invitations/{inv_token}/accept"),
            None,
            &[("authorization", &bearer2)],
        )
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    // Connector secret values, created and rotated.
    let secret1 = format!("ghp_log_secret_{}", Uuid::new_v4().simple());
    let secret2 = format!("ghp_log_rotated_{}", Uuid::new_v4().simple());
    secrets.push(("secret value".into(), secret1.clone()));
    secrets.push(("rotated secret value".into(), secret2.clone()));
    let r = api
        .send(
            Method::POST,
            &format!("/v1/orgs/{org}/secrets"),
            Some(json!({ "connectorId": "github", "name": "token", "value": secret1 })),
            &[("authorization", &l1_bearer), ("x-org-id", &org)],
        )
        .await;
    assert_eq!(st(&r), 201, "{:?}", r.body);
    let secret_id = r.body["secret"]["id"]
        .as_str()
        .expect("secret id")
        .to_string();
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/orgs/{org}/secrets/{secret_id}"),
            Some(json!({ "value": secret2 })),
            &[("authorization", &l1_bearer), ("x-org-id", &org)],
        )
        .await;
    assert_eq!(st(&r), 200, "{:?}", r.body);
    // A failing OAuth callback (logged as oauth_callback_failed) must not log the code.
    let code = format!("oauthcode{}", Uuid::new_v4().simple());
    secrets.push(("OAuth code".into(), code.clone()));
    let r = api
        .send(
            Method::GET,
            &format!("/v1/auth/oauth/google/callback?code={code}&state=s{code}&mode=json"),
            None,
            &[],
        )
        .await;
    assert_eq!(st(&r), 401, "{:?}", r.body);
    // Failed logins up to the limit (rate-limit warning).
    for _ in 0..2 {
        let r = api
            .send(
                Method::POST,
                "/v1/auth/login",
                Some(json!({ "email": e1, "password": wrong })),
                &[],
            )
            .await;
        assert_eq!(st(&r), 401);
    }
    let r = api
        .send(
            Method::POST,
            "/v1/auth/login",
            Some(json!({ "email": e1, "password": pw1 })),
            &[],
        )
        .await;
    assert_eq!(st(&r), 429, "{:?}", r.body);
    // Logout.
    let r = api
        .send(
            Method::POST,
            "/v1/auth/logout",
            None,
            &[("authorization", &bearer2)],
        )
        .await;
    assert_eq!(st(&r), 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.child.kill();
    let _ = child.child.wait();
    let text = std::fs::read_to_string(&child.log).expect("read log");
    // The capture works: debug request lines and the warnings are there.
    assert!(text.lines().count() > 10, "too few log lines:\n{text}");
    assert!(
        text.contains("login_rate_limited"),
        "rate-limit warning missing:\n{text}"
    );
    assert!(
        text.contains("oauth_callback_failed"),
        "OAuth failure event missing:\n{text}"
    );
    assert!(
        text.contains("/v1/auth/refresh"),
        "debug request lines missing:\n{text}"
    );
    assert!(
        text.contains("invitation_accept_failed"),
        "accept warning missing:\n{text}"
    );
    let mut leaks = Vec::new();
    for (what, value) in &secrets {
        // In clear, and as the decimal byte list that debug-printed query parameters use.
        let bytes = value
            .bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        for (form, needle) in [("", value.as_str()), (" (as bytes)", bytes.as_str())] {
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                let line: String = line.chars().take(600).collect();
                leaks.push(format!("{what}{form} in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "credentials in logs:\n{}",
        leaks.join("\n")
    );
}
