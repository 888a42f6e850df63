//! Organizations and RBAC (spec identity 2, 7.4–7.7, 7.9): the `X-Org-Id` rule in both modes, invitations,
//! role changes and owner safety, org creation, the personal workspace, org settings, and a role × route matrix.

use std::fmt::Display;

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{spawn, spawn_with, Options, Resp, TestApp, User, PASSWORD};

fn sc(r: &Resp) -> (u16, &str) {
    (r.status.as_u16(), r.code())
}

fn msg(r: &Resp) -> &str {
    r.body["message"].as_str().unwrap_or("")
}

async fn invite(app: &TestApp, org: Uuid, by: &User, email: &str, role: &str) -> Resp {
    app.post(&format!("/v1/orgs/{org}/invitations"))
        .by(by)
        .org(org)
        .json(json!({ "email": email, "roleKey": role }))
        .send()
        .await
}

fn token_of(r: &Resp) -> String {
    r.body["invitation"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no invitation token: {:?}", r.body))
        .to_string()
}

/// Invites and returns the plaintext token, asserting 201.
async fn invite_token(app: &TestApp, org: Uuid, by: &User, email: &str, role: &str) -> String {
    let r = invite(app, org, by, email, role).await;
    assert_eq!(r.status, 201, "invite: {:?}", r.body);
    token_of(&r)
}

async fn accept(app: &TestApp, token: &str, user: &User) -> Resp {
    app.post(&format!("/v1/invitations/{token}/accept"))
        .by(user)
        .send()
        .await
}

async fn set_role(app: &TestApp, org: Uuid, by: &User, target: impl Display, role: &str) -> Resp {
    app.post(&format!("/v1/orgs/{org}/members/{target}/role"))
        .by(by)
        .org(org)
        .json(json!({ "roleKey": role }))
        .send()
        .await
}

async fn me(app: &TestApp, user: &User) -> Resp {
    let r = app.get("/v1/me").by(user).send().await;
    assert_eq!(r.status, 200, "me: {:?}", r.body);
    r
}

/// The caller's role in `org` according to `/v1/me` (`None` when not a member).
async fn role_in(app: &TestApp, user: &User, org: Uuid) -> Option<String> {
    let r = me(app, user).await;
    r.body["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .find(|o| o["id"] == org.to_string())
        .and_then(|o| o["roleKey"].as_str())
        .map(str::to_string)
}

/// An owner-role connection with a session-level RLS context (FORCE RLS binds the owner too).
async fn owner_ctx(app: &TestApp, user: Option<Uuid>, org: Option<Uuid>) -> tokio_postgres::Client {
    let db = app.owner_db().await;
    let user = user.map(|u| u.to_string()).unwrap_or_default();
    let org = org.map(|o| o.to_string()).unwrap_or_default();
    db.execute(
        "SELECT set_config('app.current_user_id', $1, false), set_config('app.current_org_id', $2, false)",
        &[&user, &org],
    )
    .await
    .expect("set context");
    db
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// An app with a KEK configured, so secrets can be written.
async fn spawn_with_kek() -> TestApp {
    spawn_with(
        Options::default()
            .env("SECRETS_KEK_ID", "test-kek-v1")
            // 32 bytes of 0x07.
            .env(
                "SECRETS_KEK_BASE64",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
    )
    .await
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 timestamp: {v}"))
        .with_timezone(&Utc)
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

// ---------------------------------------------------------------------------------------------------------
// 7.4 / 7.5: org context
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn strict_org_context() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let outsider = app.signup("outsider").await;
    let member = app.signup("member").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let path = format!("/v1/orgs/{org}/invitations");
    let body = json!({ "email": app.unique_email("x"), "roleKey": "member" });

    // Missing header.
    let r = app.post(&path).by(&owner).json(body.clone()).send().await;
    assert_eq!(sc(&r), (400, "ORG_CONTEXT_REQUIRED"), "{:?}", r.body);
    assert_eq!(msg(&r), "X-Org-Id header is required");
    assert!(r.header("x-org-context-warning").is_none());
    // Empty header counts as missing.
    let r = app
        .post(&path)
        .by(&owner)
        .org("")
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (400, "ORG_CONTEXT_REQUIRED"), "{:?}", r.body);
    // A random other UUID.
    let r = app
        .post(&path)
        .by(&owner)
        .org(Uuid::new_v4())
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{:?}", r.body);
    assert_eq!(msg(&r), "X-Org-Id does not match route organization id");
    // Malformed.
    let (long, simple) = (format!("{org}x"), org.simple().to_string());
    for bad in ["not-a-uuid", "1234", long.as_str(), simple.as_str()] {
        let r = app
            .post(&path)
            .by(&owner)
            .org(bad)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{bad}: {:?}", r.body);
        assert_eq!(msg(&r), "X-Org-Id must be a valid UUID", "{bad}");
    }
    // Hex case does not matter.
    let r = app
        .post(&path)
        .by(&owner)
        .org(org.to_string().to_uppercase())
        .json(body.clone())
        .send()
        .await;
    assert_eq!(r.status, 201, "upper-case header: {:?}", r.body);
    // Outsider with the right header.
    let r = app
        .post(&path)
        .by(&outsider)
        .org(org)
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"), "{:?}", r.body);
    assert_eq!(msg(&r), "You are not a member of this organization");
    // A non-existent org looks the same.
    let ghost = Uuid::new_v4();
    let r = app
        .post(&format!("/v1/orgs/{ghost}/invitations"))
        .by(&owner)
        .org(ghost)
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"), "{:?}", r.body);
    // Order: auth (401) before org context; org context (400) before role (403); role before body (400).
    let r = app.post(&path).json(body.clone()).send().await;
    assert_eq!(sc(&r), (401, "UNAUTHORIZED"), "{:?}", r.body);
    let r = app.post(&path).by(&member).json(body.clone()).send().await;
    assert_eq!(sc(&r), (400, "ORG_CONTEXT_REQUIRED"), "{:?}", r.body);
    let r = app
        .post(&path)
        .by(&member)
        .org(org)
        .json(json!({"email": "bad"}))
        .send()
        .await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    let r = app
        .post(&path)
        .by(&owner)
        .org(org)
        .json(json!({"email": "bad", "roleKey": "owner"}))
        .send()
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert_eq!(msg(&r), "Invalid invitation payload");
    assert!(
        r.body["details"]["fieldErrors"]["email"].is_array(),
        "{:?}",
        r.body
    );
    assert!(
        r.body["details"]["fieldErrors"]["roleKey"].is_array(),
        "{:?}",
        r.body
    );
    // Owner cannot be invited.
    let r = invite(&app, org, &owner, &app.unique_email("o"), "owner").await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert!(
        r.body["details"]["fieldErrors"]["roleKey"].is_array(),
        "{:?}",
        r.body
    );
}

/// 2.2 step 2: a repeated `X-Org-Id` reaches the original comma-joined, hence malformed.
#[tokio::test]
async fn repeated_org_header_is_malformed() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let path = format!("/v1/orgs/{org}/invitations");
    let body = json!({ "email": app.unique_email("x"), "roleKey": "member" });
    let r = app
        .post(&path)
        .by(&owner)
        .org(org)
        .org(org)
        .json(body)
        .send()
        .await;
    assert_eq!(
        sc(&r),
        (400, "INVALID_ORG_CONTEXT"),
        "repeated X-Org-Id: {:?}",
        r.body
    );
    assert_eq!(msg(&r), "X-Org-Id must be a valid UUID");
}

#[tokio::test]
async fn warn_mode_falls_back_but_enforces_membership() {
    let app = spawn_with(Options::default().env("ORG_CONTEXT_ENFORCEMENT", "warn")).await;
    let owner = app.signup("owner").await;
    let outsider = app.signup("outsider").await;
    let org = app.create_org(&owner).await;
    let path = format!("/v1/orgs/{org}/invitations");
    let body = || json!({ "email": app.unique_email("w"), "roleKey": "member" });

    // Missing header: falls back to the route org.
    let r = app.post(&path).by(&owner).json(body()).send().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["invitation"]["organizationId"], org.to_string());
    assert_eq!(
        r.header("x-org-context-warning").as_deref(),
        Some("ORG_CONTEXT_REQUIRED")
    );
    // Mismatching header.
    let r = app
        .post(&path)
        .by(&owner)
        .org(Uuid::new_v4())
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["invitation"]["organizationId"], org.to_string());
    assert!(
        r.header("x-org-context-warning")
            .is_some_and(|w| w.split(',').any(|c| c == "INVALID_ORG_CONTEXT")),
        "{:?}",
        r.headers
    );
    // Malformed header: the warning is ORG_CONTEXT_REQUIRED (2.2 step 2).
    let r = app
        .post(&path)
        .by(&owner)
        .org("nope")
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.header("x-org-context-warning").as_deref(),
        Some("ORG_CONTEXT_REQUIRED")
    );
    // Correct header: no warning.
    let r = app
        .post(&path)
        .by(&owner)
        .org(org)
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.header("x-org-context-warning").is_none());
    // Membership is still enforced.
    let r = app
        .post(&path)
        .by(&outsider)
        .org(org)
        .json(body())
        .send()
        .await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"), "{:?}", r.body);
    // The warning header is sent on every status.
    let r = app.post(&path).by(&outsider).json(body()).send().await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"), "{:?}", r.body);
    assert_eq!(
        r.header("x-org-context-warning").as_deref(),
        Some("ORG_CONTEXT_REQUIRED")
    );
    // Improve: a non-UUID route org is a 400, not a database error.
    let org_s = org.to_string();
    for header in [None, Some("not-a-uuid"), Some(org_s.as_str())] {
        let mut req = app
            .post("/v1/orgs/not-a-uuid/invitations")
            .by(&owner)
            .json(body());
        if let Some(h) = header {
            req = req.org(h);
        }
        let r = req.send().await;
        assert_eq!(
            sc(&r),
            (400, "INVALID_ORG_CONTEXT"),
            "{header:?}: {:?}",
            r.body
        );
    }
    let r = app
        .get("/v1/orgs/not-a-uuid/settings")
        .by(&owner)
        .send()
        .await;
    assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{:?}", r.body);
}

// ---------------------------------------------------------------------------------------------------------
// 7.6: invitations and RBAC
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn invite_before_signup_then_accept() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let email = format!("Late-{}@Example.com", Uuid::new_v4().simple());
    let before = Utc::now();
    let r = invite(&app, org, &owner, &email, "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let inv = &r.body["invitation"];
    assert_eq!(
        keys(inv),
        [
            "createdAt",
            "email",
            "expiresAt",
            "id",
            "invitedByUserId",
            "organizationId",
            "roleKey",
            "status",
            "token"
        ]
    );
    assert_eq!(inv["organizationId"], org.to_string());
    assert_eq!(inv["email"], email.to_lowercase());
    assert_eq!(inv["roleKey"], "member");
    assert_eq!(inv["invitedByUserId"], owner.id.to_string());
    assert_eq!(inv["status"], "pending");
    let ttl = ts(&inv["expiresAt"]) - ts(&inv["createdAt"]);
    assert!(
        (ttl - Duration::hours(72)).num_seconds().abs() <= 1,
        "ttl {ttl}"
    );
    assert!(ts(&inv["createdAt"]) >= before - Duration::seconds(5));
    let token = token_of(&r);
    let (prefix, secret) = token.split_once('.').expect("token has a dot");
    assert_eq!(prefix, org.to_string());
    // ≥ 128 random bits, base64url.
    assert!(secret.len() >= 22, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{secret}"
    );

    // The invitee signs up afterwards and accepts without X-Org-Id.
    let invitee = app.signup_email(&email).await;
    let r = accept(&app, &token, &invitee).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"]["accepted"], true);
    assert_eq!(r.body["result"]["organizationId"], org.to_string());
    assert_eq!(r.body["result"]["invitationId"], inv["id"]);
    assert!(r.body["result"]["membershipId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .is_some());
    assert_eq!(
        role_in(&app, &invitee, org).await.as_deref(),
        Some("member")
    );
    // Orgs are listed oldest first: the inviting org predates the invitee's personal workspace.
    let r = me(&app, &invitee).await;
    assert_eq!(r.body["defaultOrgId"], org.to_string());
    assert_eq!(r.body["orgs"][1]["id"], invitee.personal_org.to_string());

    // Another user accepting someone else's invitation.
    let token = invite_token(&app, org, &owner, &app.unique_email("someone"), "member").await;
    let other = app.signup("other").await;
    let r = accept(&app, &token, &other).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(
        msg(&r),
        "Invitation email does not match authenticated user"
    );
    assert_eq!(role_in(&app, &other, org).await, None);
    // Anonymous accept.
    let r = app
        .post(&format!("/v1/invitations/{token}/accept"))
        .send()
        .await;
    assert_eq!(sc(&r), (401, "UNAUTHORIZED"), "{:?}", r.body);
}

#[tokio::test]
async fn promotion_flow() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let a = app.signup("a").await;
    let b = app.signup("b").await;
    let org = app.create_org(&owner).await;
    for u in [&a, &b] {
        let token = invite_token(&app, org, &owner, &u.email, "member").await;
        let r = accept(&app, &token, u).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Members can neither invite nor change roles.
    let r = invite(&app, org, &a, &app.unique_email("n"), "member").await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(msg(&r), "Role is not allowed to invite members");
    let r = set_role(&app, org, &a, b.id, "admin").await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(msg(&r), "Role is not allowed to change membership roles");
    // Owner promotes A.
    let r = set_role(&app, org, &owner, a.id, "admin").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let m = &r.body["membership"];
    assert_eq!(
        keys(m),
        ["createdAt", "id", "organizationId", "roleKey", "userId"]
    );
    assert_eq!(m["roleKey"], "admin");
    assert_eq!(m["userId"], a.id.to_string());
    assert_eq!(m["organizationId"], org.to_string());
    // Admin A invites and promotes B.
    let r = invite(&app, org, &a, &app.unique_email("n"), "admin").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = set_role(&app, org, &a, b.id, "admin").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["membership"]["roleKey"], "admin");
    // Only an owner assigns owner.
    let r = set_role(&app, org, &a, b.id, "owner").await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(msg(&r), "Only owner can assign owner role");
    assert_eq!(role_in(&app, &b, org).await.as_deref(), Some("admin"));
    let r = set_role(&app, org, &owner, b.id, "owner").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["membership"]["roleKey"], "owner");
    assert_eq!(role_in(&app, &b, org).await.as_deref(), Some("owner"));
}

// ---------------------------------------------------------------------------------------------------------
// 7.9: invitation edge cases
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn expired_invitation_is_rejected() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let invitee = app.signup("invitee").await;
    let org = app.create_org(&owner).await;
    let r = invite(&app, org, &owner, &invitee.email, "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = token_of(&r);
    let id = r.body["invitation"]["id"].as_str().expect("id").to_string();
    let db = owner_ctx(&app, None, Some(org)).await;
    let n = db
        .execute(
            "UPDATE organization_invitations SET expires_at = now() - interval '1 minute' \
             WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("expire");
    assert_eq!(n, 1);
    let r = accept(&app, &token, &invitee).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert_eq!(msg(&r), "Invitation has expired");
    assert_eq!(role_in(&app, &invitee, org).await, None);
    let status: String = db
        .query_one(
            "SELECT status FROM organization_invitations WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("status")
        .get(0);
    assert_eq!(status, "pending");
}

#[tokio::test]
async fn reaccept_is_idempotent_and_existing_member_keeps_role() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let user = app.signup("user").await;
    let org = app.create_org(&owner).await;
    let token = invite_token(&app, org, &owner, &user.email, "admin").await;
    let first = accept(&app, &token, &user).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let again = accept(&app, &token, &user).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["result"], first.body["result"]);
    assert_eq!(role_in(&app, &user, org).await.as_deref(), Some("admin"));

    // A second invitation (as member) for an existing admin: accepted, role kept, same membership.
    let token = invite_token(&app, org, &owner, &user.email, "member").await;
    let r = accept(&app, &token, &user).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["result"]["membershipId"],
        first.body["result"]["membershipId"]
    );
    assert_ne!(
        r.body["result"]["invitationId"],
        first.body["result"]["invitationId"]
    );
    assert_eq!(role_in(&app, &user, org).await.as_deref(), Some("admin"));
    // Still able to act as admin.
    let r = invite(&app, org, &user, &app.unique_email("n"), "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let db = owner_ctx(&app, None, Some(org)).await;
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM memberships WHERE user_id = '{}'",
                user.id
            )
        )
        .await,
        1
    );
}

#[tokio::test]
async fn malformed_unknown_and_mismatched_tokens() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let user = app.signup("user").await;
    let org = app.create_org(&owner).await;
    let other_org = app.create_org(&owner).await;
    let simple = format!("{}.x", org.simple());
    for bad in ["not-a-uuid.x", "abc", "1234.5678", simple.as_str()] {
        let r = accept(&app, bad, &user).await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{bad}: {:?}", r.body);
        assert_eq!(msg(&r), "Invalid invitation token", "{bad}");
    }
    let r = accept(&app, &format!("{org}.unknown-secret"), &user).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
    assert_eq!(msg(&r), "Invitation not found");

    let token = invite_token(&app, org, &owner, &user.email, "member").await;
    // A token of another org's prefix but this secret is not found (the lookup uses the full token).
    let (_, secret) = token.split_once('.').expect("dot");
    let r = accept(&app, &format!("{other_org}.{secret}"), &user).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
    // X-Org-Id on accept must be a UUID and match the token's org.
    let path = format!("/v1/invitations/{token}/accept");
    let r = app.post(&path).by(&user).org(other_org).send().await;
    assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{:?}", r.body);
    assert_eq!(msg(&r), "X-Org-Id does not match invitation organization");
    let r = app.post(&path).by(&user).org("nope").send().await;
    assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{:?}", r.body);
    assert_eq!(msg(&r), "X-Org-Id must be a valid UUID");
    assert_eq!(role_in(&app, &user, org).await, None);
    let r = app.post(&path).by(&user).org(org).send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(role_in(&app, &user, org).await.as_deref(), Some("member"));
}

#[tokio::test]
async fn invitation_token_is_stored_only_as_a_hash() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let token = invite_token(&app, org, &owner, &app.unique_email("h"), "member").await;
    let (_, secret) = token.split_once('.').expect("dot");
    let db = owner_ctx(&app, None, Some(org)).await;
    let rows = db
        .query(
            "SELECT row_to_json(i)::text FROM organization_invitations i",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    for row in rows {
        let text: String = row.get(0);
        assert!(!text.contains(&token), "plaintext token stored: {text}");
        assert!(!text.contains(secret), "token secret stored: {text}");
    }
}

#[tokio::test]
async fn second_invitation_supersedes_the_first() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let user = app.signup("user").await;
    let org = app.create_org(&owner).await;
    let first = invite_token(&app, org, &owner, &user.email, "member").await;
    let second = invite_token(&app, org, &owner, &user.email.to_uppercase(), "admin").await;
    let db = owner_ctx(&app, None, Some(org)).await;
    let pending = db
        .query(
            "SELECT role_key FROM organization_invitations WHERE lower(email) = $1 AND status = 'pending'",
            &[&user.email],
        )
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].get::<_, String>(0), "admin");
    assert_eq!(
        count(&db, "SELECT count(*) FROM organization_invitations").await,
        2
    );
    // The superseded one can no longer be accepted; the current one can.
    let r = accept(&app, &first, &user).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert_eq!(msg(&r), "Invitation is not pending");
    assert_eq!(role_in(&app, &user, org).await, None);
    let r = accept(&app, &second, &user).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(role_in(&app, &user, org).await.as_deref(), Some("admin"));
    // After acceptance a new invitation for the same email is possible again (partial unique index).
    let third = invite_token(&app, org, &owner, &user.email, "member").await;
    let r = accept(&app, &third, &user).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

// ---------------------------------------------------------------------------------------------------------
// Role safety
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn role_safety() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let admin = app.signup("admin").await;
    let member = app.signup("member").await;
    let stranger = app.signup("stranger").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    app.add_member(org, &owner, &member, "member").await;

    // An admin cannot touch an owner.
    for role in ["admin", "member"] {
        let r = set_role(&app, org, &admin, owner.id, role).await;
        assert_eq!(sc(&r), (403, "FORBIDDEN"), "{role}: {:?}", r.body);
    }
    assert_eq!(role_in(&app, &owner, org).await.as_deref(), Some("owner"));
    // The last owner cannot demote themselves.
    for role in ["admin", "member"] {
        let r = set_role(&app, org, &owner, owner.id, role).await;
        assert_eq!(sc(&r), (409, "CONFLICT"), "{role}: {:?}", r.body);
    }
    assert_eq!(role_in(&app, &owner, org).await.as_deref(), Some("owner"));
    // Re-assigning owner to the last owner is harmless.
    let r = set_role(&app, org, &owner, owner.id, "owner").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // With two owners, one can demote the other.
    let r = set_role(&app, org, &owner, member.id, "owner").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = set_role(&app, org, &member, owner.id, "member").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["membership"]["roleKey"], "member");
    assert_eq!(role_in(&app, &owner, org).await.as_deref(), Some("member"));
    // …and now the remaining owner is the last one again.
    let r = set_role(&app, org, &member, member.id, "admin").await;
    assert_eq!(sc(&r), (409, "CONFLICT"), "{:?}", r.body);
    // Unknown members and bad bodies.
    let r = set_role(&app, org, &member, stranger.id, "admin").await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
    assert_eq!(msg(&r), "Membership not found");
    let r = set_role(&app, org, &member, Uuid::new_v4(), "member").await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
    let r = set_role(&app, org, &member, admin.id, "superuser").await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert_eq!(msg(&r), "Invalid role update payload");
}

// ---------------------------------------------------------------------------------------------------------
// Org creation and the personal workspace
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_org_shape_and_validation() {
    let app = spawn().await;
    let u = app.signup("creator").await;
    let slug = format!("acme-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let r = app
        .post("/v1/orgs")
        .by(&u)
        .json(json!({ "name": "Acme Inc", "slug": slug }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(keys(&r.body), ["membership", "organization"]);
    let org = &r.body["organization"];
    assert_eq!(keys(org), ["createdAt", "id", "name", "slug"]);
    let org_id: Uuid = org["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    assert_eq!(org["slug"], slug);
    assert_eq!(org["name"], "Acme Inc");
    ts(&org["createdAt"]);
    let m = &r.body["membership"];
    assert_eq!(
        keys(m),
        ["createdAt", "id", "organizationId", "roleKey", "userId"]
    );
    assert!(m["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .is_some());
    assert_eq!(m["organizationId"], org_id.to_string());
    assert_eq!(m["userId"], u.id.to_string());
    assert_eq!(m["roleKey"], "owner");
    ts(&m["createdAt"]);
    assert_eq!(role_in(&app, &u, org_id).await.as_deref(), Some("owner"));
    // A zero credit balance row.
    let r = app
        .get(&format!("/v1/orgs/{org_id}/billing/credits"))
        .by(&u)
        .org(org_id)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["credits"]["balanceCredits"], 0);
    assert!(r.body["credits"]["updatedAt"].is_string(), "{:?}", r.body);

    // Duplicate slug.
    let other = app.signup("other").await;
    let r = app
        .post("/v1/orgs")
        .by(&other)
        .json(json!({ "name": "Other", "slug": slug }))
        .send()
        .await;
    assert_eq!(sc(&r), (409, "CONFLICT"), "{:?}", r.body);
    assert_eq!(msg(&r), "Organization slug already exists");
    assert_eq!(
        me(&app, &other).await.body["orgs"].as_array().map(Vec::len),
        Some(1)
    );

    // Validation.
    let long = "a".repeat(51);
    let cases = [
        (json!({"name": "x", "slug": "good-slug"}), "name"),
        (
            json!({"name": "y".repeat(121), "slug": "good-slug"}),
            "name",
        ),
        (json!({"slug": "good-slug"}), "name"),
        (json!({"name": "Good", "slug": "Bad_Slug"}), "slug"),
        (json!({"name": "Good", "slug": "ab"}), "slug"),
        (json!({"name": "Good", "slug": long}), "slug"),
        (json!({"name": "Good", "slug": "has space"}), "slug"),
        (json!({"name": "Good"}), "slug"),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/orgs").by(&u).json(body.clone()).send().await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{body}: {:?}", r.body);
        assert_eq!(msg(&r), "Invalid organization payload", "{body}");
        assert!(
            r.body["details"]["fieldErrors"][field].is_array(),
            "{body}: {:?}",
            r.body
        );
    }
    // Auth comes first.
    let r = app
        .post("/v1/orgs")
        .json(json!({"name": "x", "slug": "!"}))
        .send()
        .await;
    assert_eq!(sc(&r), (401, "UNAUTHORIZED"), "{:?}", r.body);
}

#[tokio::test]
async fn personal_workspace_created_once_with_trial_credits() {
    let app = spawn().await;
    let u = app.signup("personal").await;
    let r = me(&app, &u).await;
    let orgs = r.body["orgs"].as_array().expect("orgs").clone();
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    let slug = format!("personal-{}", &u.id.simple().to_string()[..8]);
    assert_eq!(orgs[0]["id"], u.personal_org.to_string());
    assert_eq!(orgs[0]["name"], "Personal workspace");
    assert_eq!(orgs[0]["slug"], slug);
    assert_eq!(orgs[0]["roleKey"], "owner");
    assert_eq!(r.body["defaultOrgId"], u.personal_org.to_string());
    // A login and further /v1/me calls create nothing more.
    let r = app
        .post("/v1/auth/login")
        .json(json!({ "email": u.email, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = me(&app, &u).await;
    assert_eq!(r.body["orgs"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["defaultOrgId"], u.personal_org.to_string());
    // An org created later does not change the default (oldest first).
    let org = app.create_org(&u).await;
    let r = me(&app, &u).await;
    assert_eq!(r.body["defaultOrgId"], u.personal_org.to_string());
    assert_eq!(r.body["orgs"][1]["id"], org.to_string());

    // Credit balance and the trial grant.
    let r = app
        .get(&format!("/v1/orgs/{}/billing/credits", u.personal_org))
        .by(&u)
        .org(u.personal_org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["credits"]["balanceCredits"], 100);
    let db = owner_ctx(&app, None, Some(u.personal_org)).await;
    let rows = db
        .query(
            "SELECT delta_credits, reason, metadata::text, created_by_user_id::text \
             FROM organization_credit_ledger",
            &[],
        )
        .await
        .expect("ledger");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 100);
    assert_eq!(rows[0].get::<_, String>(1), "trial_grant");
    let meta: Value = serde_json::from_str(&rows[0].get::<_, String>(2)).expect("json");
    assert_eq!(meta, json!({"kind": "personal_workspace_bootstrap"}));
    assert_eq!(rows[0].get::<_, Option<String>>(3), Some(u.id.to_string()));
}

#[tokio::test]
async fn personal_workspace_is_not_duplicated_by_parallel_requests() {
    let app = spawn().await;
    let u = app.signup("racer").await;
    let me_path = "/v1/me";
    let login = json!({ "email": u.email, "password": PASSWORD });
    let mut personal = u.personal_org;
    for round in 0..5 {
        // Take the user back to "no membership": delete the personal workspace (cascades).
        let db = owner_ctx(&app, Some(u.id), Some(personal)).await;
        let n = db
            .execute(
                &format!("DELETE FROM organizations WHERE id = '{personal}'"),
                &[],
            )
            .await
            .expect("delete org");
        assert_eq!(n, 1, "round {round}");
        let db = owner_ctx(&app, Some(u.id), None).await;
        let mine = format!(
            "SELECT count(*) FROM memberships WHERE user_id = '{}'",
            u.id
        );
        assert_eq!(count(&db, &mine).await, 0, "round {round}");

        let (m1, m2, m3, l1, l2, l3) = tokio::join!(
            app.get(me_path).by(&u).send(),
            app.get(me_path).by(&u).send(),
            app.get(me_path).by(&u).send(),
            app.post("/v1/auth/login").json(login.clone()).send(),
            app.post("/v1/auth/login").json(login.clone()).send(),
            app.post("/v1/auth/login").json(login.clone()).send(),
        );
        for r in [&l1, &l2, &l3] {
            assert_eq!(r.status, 200, "round {round} login: {:?}", r.body);
        }
        let mut defaults = Vec::new();
        for r in [&m1, &m2, &m3] {
            assert_eq!(r.status, 200, "round {round} me: {:?}", r.body);
            assert_eq!(
                r.body["orgs"].as_array().map(Vec::len),
                Some(1),
                "round {round}: {:?}",
                r.body
            );
            defaults.push(r.body["defaultOrgId"].clone());
        }
        assert!(defaults.windows(2).all(|w| w[0] == w[1]), "{defaults:?}");
        assert_eq!(count(&db, &mine).await, 1, "round {round}");
        personal = me(&app, &u).await.body["defaultOrgId"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("default org");
        assert_eq!(
            Some(personal.to_string()),
            defaults[0].as_str().map(str::to_string)
        );
        let db = owner_ctx(&app, None, Some(personal)).await;
        assert_eq!(
            count(&db, "SELECT count(*) FROM organization_credit_ledger").await,
            1,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn personal_workspace_slug_collision_retries() {
    let app = spawn().await;
    let u = app.signup("collide").await;
    let other = app.signup("squatter").await;
    let slug = format!("personal-{}", &u.id.simple().to_string()[..8]);
    // Free the user of memberships, then let someone else take the personal slug.
    let db = owner_ctx(&app, Some(u.id), Some(u.personal_org)).await;
    let n = db
        .execute(
            &format!("DELETE FROM organizations WHERE id = '{}'", u.personal_org),
            &[],
        )
        .await
        .expect("delete");
    assert_eq!(n, 1);
    let r = app
        .post("/v1/orgs")
        .by(&other)
        .json(json!({ "name": "Squatter", "slug": slug }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = me(&app, &u).await;
    let orgs = r.body["orgs"].as_array().expect("orgs");
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    assert_eq!(orgs[0]["name"], "Personal workspace");
    assert_eq!(orgs[0]["roleKey"], "owner");
    let got = orgs[0]["slug"].as_str().expect("slug");
    let suffix = got
        .strip_prefix(&format!("{slug}-"))
        .unwrap_or_else(|| panic!("{got} does not extend {slug}"));
    assert!(
        suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "{got}"
    );
}

#[tokio::test]
async fn concurrent_accepts_create_one_membership() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    for i in 0..3 {
        let user = app.signup(&format!("twice{i}")).await;
        let token = invite_token(&app, org, &owner, &user.email, "member").await;
        let (r1, r2, r3) = tokio::join!(
            accept(&app, &token, &user),
            accept(&app, &token, &user),
            accept(&app, &token, &user),
        );
        for r in [&r1, &r2, &r3] {
            assert_eq!(r.status, 200, "{:?}", r.body);
            assert_eq!(r.body["result"], r1.body["result"]);
        }
        let db = owner_ctx(&app, None, Some(org)).await;
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM memberships WHERE user_id = '{}'",
                    user.id
                )
            )
            .await,
            1
        );
    }
}

#[tokio::test]
async fn concurrent_mutual_demotion_keeps_an_owner() {
    let app = spawn().await;
    let first = app.signup("first").await;
    let second = app.signup("second").await;
    let org = app.create_org(&first).await;
    app.add_member(org, &first, &second, "member").await;
    for round in 0..5 {
        let r = set_role(&app, org, &first, second.id, "owner").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = set_role(&app, org, &second, first.id, "owner").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let (r1, r2) = tokio::join!(
            set_role(&app, org, &first, second.id, "member"),
            set_role(&app, org, &second, first.id, "member"),
        );
        let oks = [&r1, &r2].iter().filter(|r| r.status == 200).count();
        assert!(
            oks <= 1,
            "round {round}: both owners demoted each other: {:?} / {:?}",
            r1.body,
            r2.body
        );
        let db = owner_ctx(&app, None, Some(org)).await;
        assert!(
            count(
                &db,
                "SELECT count(*) FROM memberships WHERE role_key = 'owner'"
            )
            .await
                >= 1,
            "round {round}: no owner left"
        );
        // Restore: whoever is still owner makes the other one owner again.
        let (boss, other) = if role_in(&app, &first, org).await.as_deref() == Some("owner") {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let r = set_role(&app, org, boss, other.id, "owner").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

#[tokio::test]
async fn no_trial_ledger_row_when_trial_credits_are_zero() {
    let app = spawn_with(Options::default().env("PERSONAL_TRIAL_CREDITS", "0")).await;
    let u = app.signup("notrial").await;
    let db = owner_ctx(&app, None, Some(u.personal_org)).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM organization_credit_ledger").await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM organization_credit_balances WHERE balance_credits = 0"
        )
        .await,
        1
    );
}

// ---------------------------------------------------------------------------------------------------------
// 7.7: org settings
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn org_settings() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let path = format!("/v1/orgs/{org}/settings");

    let r = app.get(&path).by(&owner).org(org).send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["settings"],
        json!({
            "tools": {"shellRunEnabled": false},
            "toolsets": {"defaultToolsetId": null},
            "llm": {"defaults": {
                "session": {"provider": null, "model": null},
                "workflowAgentRun": {"provider": null, "model": null, "secretId": null},
                "toolsetBuilder": {"provider": null, "model": null, "secretId": null},
            },
            "budget": {"monthlyTokens": null}},
        })
    );
    let r = app
        .put(&path)
        .by(&owner)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": true}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["tools"]["shellRunEnabled"], true);
    // Section-by-section merge keeps the earlier value.
    let r = app
        .put(&path)
        .by(&owner)
        .org(org)
        .json(json!({"llm": {"defaults": {"session": {"provider": "openai", "model": "gpt-4o"}}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["tools"]["shellRunEnabled"], true);
    assert_eq!(
        r.body["settings"]["llm"]["defaults"]["session"]["provider"],
        "openai"
    );

    let r = app.get(&path).by(&member).org(org).send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["tools"]["shellRunEnabled"], true);
    let r = app
        .put(&path)
        .by(&member)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": false}}))
        .send()
        .await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(msg(&r), "Role is not allowed to manage org settings");

    for body in [
        json!({"nope": 1}),
        json!({"tools": {"shellRunEnabled": true, "extra": 1}}),
        json!({"tools": {"shellRunEnabled": "yes"}}),
        json!({"llm": {"defaults": {"session": {"secretId": null}}}}),
        json!([1]),
    ] {
        let r = app
            .put(&path)
            .by(&owner)
            .org(org)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{body}: {:?}", r.body);
        assert_eq!(msg(&r), "Invalid org settings payload", "{body}");
    }
    let r = app.get(&path).by(&owner).org(org).send().await;
    assert_eq!(r.body["settings"]["tools"]["shellRunEnabled"], true);
}

// ---------------------------------------------------------------------------------------------------------
// Authorization matrix (2.1) and cross-tenant access
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Ok(u16),
    Forbidden(&'static str),
    Denied,
}

struct Route {
    name: &'static str,
    method: Method,
    /// `{secret}` is replaced by a secret id of the org, a different one per actor.
    path: String,
    body: Option<Value>,
    /// Expected outcome for owner, admin, member, outsider.
    want: [Want; 4],
}

/// Every org-scoped route against every role (2.1). The outsider sends the right `X-Org-Id`.
#[tokio::test]
async fn authz_matrix() {
    let app = spawn_with_kek().await;
    let owner = app.signup("owner").await;
    let admin = app.signup("admin").await;
    let member = app.signup("member").await;
    let outsider = app.signup("outsider").await;
    let target = app.signup("target").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    app.add_member(org, &owner, &member, "member").await;
    app.add_member(org, &owner, &target, "member").await;
    let base = format!("/v1/orgs/{org}");
    // One secret per actor, so a successful DELETE does not change the next actor's outcome.
    let mut secrets = Vec::new();
    for i in 0..4 {
        let r = app
            .post(&format!("{base}/secrets"))
            .by(&owner)
            .org(org)
            .json(json!({"connectorId": "github", "name": format!("seed-{i}"), "value": "v"}))
            .send()
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        secrets.push(r.body["secret"]["id"].as_str().expect("id").to_string());
    }

    use Want::{Denied, Forbidden, Ok};
    const INVITE: Want = Forbidden("Role is not allowed to invite members");
    const ROLES: Want = Forbidden("Role is not allowed to change membership roles");
    const SETTINGS: Want = Forbidden("Role is not allowed to manage org settings");
    const SECRETS: Want = Forbidden("Role is not allowed to manage secrets");
    let role_path = format!("{base}/members/{}/role", target.id);
    let route = |name, method, path: String, body: Option<Value>, want| Route {
        name,
        method,
        path,
        body,
        want,
    };
    let routes = [
        route(
            "invite member",
            Method::POST,
            format!("{base}/invitations"),
            Some(json!({"email": "", "roleKey": "member"})),
            [Ok(201), Ok(201), INVITE, Denied],
        ),
        route(
            "invite admin",
            Method::POST,
            format!("{base}/invitations"),
            Some(json!({"email": "", "roleKey": "admin"})),
            [Ok(201), Ok(201), INVITE, Denied],
        ),
        route(
            "role -> admin",
            Method::POST,
            role_path.clone(),
            Some(json!({"roleKey": "admin"})),
            [Ok(200), Ok(200), ROLES, Denied],
        ),
        route(
            "role -> member",
            Method::POST,
            role_path.clone(),
            Some(json!({"roleKey": "member"})),
            [Ok(200), Ok(200), ROLES, Denied],
        ),
        route(
            "get settings",
            Method::GET,
            format!("{base}/settings"),
            None,
            [Ok(200), Ok(200), Ok(200), Denied],
        ),
        route(
            "put settings",
            Method::PUT,
            format!("{base}/settings"),
            Some(json!({"tools": {"shellRunEnabled": true}})),
            [Ok(200), Ok(200), SETTINGS, Denied],
        ),
        route(
            "get credits",
            Method::GET,
            format!("{base}/billing/credits"),
            None,
            [Ok(200), Ok(200), Ok(200), Denied],
        ),
        route(
            "list secrets",
            Method::GET,
            format!("{base}/secrets"),
            None,
            [Ok(200), Ok(200), SECRETS, Denied],
        ),
        route(
            "create secret",
            Method::POST,
            format!("{base}/secrets"),
            Some(json!({"connectorId": "slack", "name": "", "value": "xoxb-1"})),
            [Ok(201), Ok(201), SECRETS, Denied],
        ),
        route(
            "rotate secret",
            Method::PUT,
            format!("{base}/secrets/{{secret}}"),
            Some(json!({"value": "rotated"})),
            [Ok(200), Ok(200), SECRETS, Denied],
        ),
        route(
            "delete secret",
            Method::DELETE,
            format!("{base}/secrets/{{secret}}"),
            None,
            [Ok(200), Ok(200), SECRETS, Denied],
        ),
        route(
            "role -> owner",
            Method::POST,
            role_path.clone(),
            Some(json!({"roleKey": "owner"})),
            [
                Ok(200),
                Forbidden("Only owner can assign owner role"),
                ROLES,
                Denied,
            ],
        ),
    ];
    let actors = [
        ("owner", &owner),
        ("admin", &admin),
        ("member", &member),
        ("outsider", &outsider),
    ];
    let mut failures = Vec::new();
    for route in &routes {
        for (((role, user), want), secret) in actors.iter().zip(route.want).zip(&secrets) {
            let path = route.path.replace("{secret}", secret);
            let mut req = app.req(route.method.clone(), &path).by(user).org(org);
            if let Some(mut body) = route.body.clone() {
                if body.get("email").is_some() {
                    body["email"] = json!(app.unique_email("m"));
                }
                if body.get("name").is_some() {
                    body["name"] = json!(format!("n-{}", Uuid::new_v4().simple()));
                }
                req = req.json(body);
            }
            let r = req.send().await;
            let ok = match want {
                Ok(status) => r.status.as_u16() == status,
                Forbidden(message) => sc(&r) == (403, "FORBIDDEN") && msg(&r) == message,
                Denied => sc(&r) == (403, "ORG_ACCESS_DENIED"),
            };
            if !ok {
                failures.push(format!(
                    "{} as {role}: want {want:?}, got {} {}",
                    route.name, r.status, r.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn cross_tenant_access_by_id() {
    let app = spawn_with_kek().await;
    let a = app.signup("a").await;
    let b = app.signup("b").await;
    let b_member = app.signup("bm").await;
    let org_a = app.create_org(&a).await;
    let org_b = app.create_org(&b).await;
    app.add_member(org_b, &b, &b_member, "member").await;
    let r = app
        .post(&format!("/v1/orgs/{org_b}/secrets"))
        .by(&b)
        .org(org_b)
        .json(json!({"connectorId": "github", "name": "token", "value": "ghp_b"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let b_secret = r.body["secret"]["id"].as_str().expect("id").to_string();
    let b_secret_updated = r.body["secret"]["updatedAt"].clone();

    // A's owner addresses org B directly (route and header agree).
    let base = format!("/v1/orgs/{org_b}");
    let attempts = [
        (
            Method::POST,
            format!("{base}/invitations"),
            Some(json!({"email": app.unique_email("x"), "roleKey": "admin"})),
        ),
        (
            Method::POST,
            format!("{base}/members/{}/role", b_member.id),
            Some(json!({"roleKey": "owner"})),
        ),
        (Method::GET, format!("{base}/settings"), None),
        (
            Method::PUT,
            format!("{base}/settings"),
            Some(json!({"tools": {"shellRunEnabled": true}})),
        ),
        (Method::GET, format!("{base}/billing/credits"), None),
        (Method::GET, format!("{base}/secrets"), None),
        (
            Method::POST,
            format!("{base}/secrets"),
            Some(json!({"connectorId": "slack", "name": "x", "value": "v"})),
        ),
        (
            Method::PUT,
            format!("{base}/secrets/{b_secret}"),
            Some(json!({"value": "stolen"})),
        ),
        (Method::DELETE, format!("{base}/secrets/{b_secret}"), None),
    ];
    for (method, path, body) in attempts {
        let mut req = app.req(method.clone(), &path).by(&a).org(org_b);
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = req.send().await;
        assert_eq!(
            sc(&r),
            (403, "ORG_ACCESS_DENIED"),
            "{method} {path}: {:?}",
            r.body
        );
    }
    // Header of A, route of B: strict mismatch.
    let r = app
        .get(&format!("{base}/settings"))
        .by(&a)
        .org(org_a)
        .send()
        .await;
    assert_eq!(sc(&r), (400, "INVALID_ORG_CONTEXT"), "{:?}", r.body);
    // A member of B through A's route: not found, and nothing changed in B.
    for target in [&b_member, &b] {
        let r = set_role(&app, org_a, &a, target.id, "admin").await;
        assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
        assert_eq!(msg(&r), "Membership not found");
    }
    assert_eq!(
        role_in(&app, &b_member, org_b).await.as_deref(),
        Some("member")
    );
    assert_eq!(role_in(&app, &b, org_b).await.as_deref(), Some("owner"));
    let r = app
        .get(&format!("{base}/settings"))
        .by(&b)
        .org(org_b)
        .send()
        .await;
    assert_eq!(r.body["settings"]["tools"]["shellRunEnabled"], false);
    // B's secret id through A's own route: invisible.
    let a_path = format!("/v1/orgs/{org_a}/secrets/{b_secret}");
    let r = app
        .put(&a_path)
        .by(&a)
        .org(org_a)
        .json(json!({"value": "stolen"}))
        .send()
        .await;
    assert_eq!(sc(&r), (404, "SECRET_NOT_FOUND"), "{:?}", r.body);
    let r = app.delete(&a_path).by(&a).org(org_a).send().await;
    assert_eq!(sc(&r), (404, "SECRET_NOT_FOUND"), "{:?}", r.body);
    let r = app
        .get(&format!("/v1/orgs/{org_a}/secrets"))
        .by(&a)
        .org(org_a)
        .send()
        .await;
    assert_eq!(r.body["secrets"], json!([]), "{:?}", r.body);
    let r = app
        .get(&format!("{base}/secrets"))
        .by(&b)
        .org(org_b)
        .send()
        .await;
    assert_eq!(
        r.body["secrets"][0]["id"],
        b_secret.as_str(),
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["secrets"][0]["updatedAt"], b_secret_updated,
        "rotated"
    );
    // A's invitation token cannot be redeemed as an org-B token.
    let token = invite_token(&app, org_a, &a, &b_member.email, "member").await;
    let (_, secret) = token.split_once('.').expect("dot");
    let r = accept(&app, &format!("{org_b}.{secret}"), &b_member).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
}

#[tokio::test]
async fn role_change_takes_effect_immediately() {
    let app = spawn().await;
    let owner = app.signup("owner").await;
    let admin = app.signup("admin").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    let settings = format!("/v1/orgs/{org}/settings");
    // Warm whatever the app caches for this membership.
    let r = invite(&app, org, &admin, &app.unique_email("n"), "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .put(&settings)
        .by(&admin)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": true}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let r = set_role(&app, org, &owner, admin.id, "member").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = invite(&app, org, &admin, &app.unique_email("n"), "member").await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    let r = app
        .put(&settings)
        .by(&admin)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": false}}))
        .send()
        .await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);

    // And back: promotion is immediate too.
    let r = set_role(&app, org, &owner, admin.id, "admin").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = invite(&app, org, &admin, &app.unique_email("n"), "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}
