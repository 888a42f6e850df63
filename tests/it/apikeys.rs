//! API keys: created by owners and admins, shown once, stored hashed, listed by prefix, revoked at once on
//! every instance; a key works on the org routes its scopes allow (no `X-Org-Id` needed), never on the
//! routes that manage sessions, users, memberships or keys, never on another org, never once expired.
//! The walk of every scope against every route is in `authz.rs`.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{self, spawn, spawn_with, Options, Resp, TestApp, User};

/// Creates a key in `org` as `by`; returns the full key and the `apiKey` object.
pub(crate) async fn create_key(
    app: &TestApp,
    by: &User,
    org: Uuid,
    scopes: &[&str],
    expires_at: Option<&str>,
) -> (String, Value) {
    let name: String = format!("key {}", scopes.join(" "))
        .chars()
        .take(120)
        .collect();
    let mut body = json!({ "name": name, "scopes": scopes });
    if let Some(t) = expires_at {
        body["expiresAt"] = json!(t);
    }
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(by)
        .org(org)
        .json(body)
        .send()
        .await;
    assert_eq!(r.status, 201, "create key: {:?}", r.body);
    let key = r.body["key"].as_str().expect("key").to_string();
    (key, r.body["apiKey"].clone())
}

fn show(r: &Resp) -> String {
    format!("{} {}", r.status.as_u16(), r.body)
}

fn assert_code(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (status, code),
        "{what}: {}",
        show(r)
    );
}

async fn list_keys(app: &TestApp, by: &User, org: Uuid) -> Resp {
    app.get(&format!("/v1/orgs/{org}/api-keys"))
        .by(by)
        .org(org)
        .send()
        .await
}

async fn workflows_by_key(app: &TestApp, org: Uuid, key: &str) -> Resp {
    app.get(&format!("/v1/orgs/{org}/workflows"))
        .bearer(key)
        .send()
        .await
}

fn iso_in(secs: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn create_list_revoke_and_the_key_is_shown_once() {
    let app = spawn().await;
    let owner = app.signup("keys-owner").await;
    let org = app.create_org(&owner).await;
    let expires = iso_in(3600);
    let (key, view) = create_key(
        &app,
        &owner,
        org,
        &["workflows:read", "runs:write", "workflows:read"],
        Some(&expires),
    )
    .await;

    // Recognisable, naming its org and itself; the view carries no secret.
    let prefix = view["prefix"].as_str().expect("prefix").to_string();
    assert!(key.starts_with("vsk_"), "{key}");
    assert!(key.starts_with(&format!("{prefix}_")), "{key} / {prefix}");
    assert!(prefix.contains(&org.simple().to_string()));
    let id = view["id"].as_str().expect("id").to_string();
    assert!(prefix.ends_with(&id.replace('-', "")));
    assert_eq!(view["scopes"], json!(["workflows:read", "runs:write"]));
    assert_eq!(view["createdByUserId"], json!(owner.id));
    assert_eq!(view["lastUsedAt"], Value::Null);
    assert_eq!(view["revokedAt"], Value::Null);
    assert!(view["createdAt"].is_string() && view["expiresAt"].is_string());
    let fields: Vec<&str> = view
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for f in &fields {
        assert!(
            !f.to_lowercase().contains("hash") && *f != "key" && *f != "secret",
            "{f}"
        );
    }

    // Listed by prefix, never again in full.
    let r = list_keys(&app, &owner, org).await;
    assert_eq!(r.status, 200, "{}", show(&r));
    let keys = r.body["apiKeys"].as_array().expect("list");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["prefix"], json!(prefix));
    assert_eq!(keys[0]["name"], view["name"]);
    let secret = split_key(&key).1;
    assert!(
        !r.body.to_string().contains(secret),
        "listing shows the secret"
    );

    // Works without X-Org-Id on a route its scopes allow.
    let r = workflows_by_key(&app, org, &key).await;
    assert_eq!(r.status, 200, "{}", show(&r));

    // Revoked at once.
    let r = app
        .delete(&format!("/v1/orgs/{org}/api-keys/{id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), &r.body), (200, &json!({"ok": true})));
    assert_code(
        &workflows_by_key(&app, org, &key).await,
        401,
        "API_KEY_REVOKED",
        "revoked key",
    );
    let listed = list_keys(&app, &owner, org).await;
    assert!(listed.body["apiKeys"][0]["revokedAt"].is_string());
    // Revoking again keeps the first time; unknown ids are not found.
    let first = listed.body["apiKeys"][0]["revokedAt"].clone();
    let r = app
        .delete(&format!("/v1/orgs/{org}/api-keys/{id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    let again = list_keys(&app, &owner, org).await;
    assert_eq!(again.body["apiKeys"][0]["revokedAt"], first);
    for bad in [Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        let r = app
            .delete(&format!("/v1/orgs/{org}/api-keys/{bad}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_code(&r, 404, "API_KEY_NOT_FOUND", &bad);
    }
}

#[tokio::test]
async fn the_body_is_validated_with_field_errors() {
    let app = spawn().await;
    let owner = app.signup("keys-valid").await;
    let org = app.create_org(&owner).await;
    let cases = [
        (json!({"scopes": ["runs:read"]}), "name"),
        (json!({"name": "   ", "scopes": ["runs:read"]}), "name"),
        (
            json!({"name": "x".repeat(121), "scopes": ["runs:read"]}),
            "name",
        ),
        (json!({"name": "ci"}), "scopes"),
        (json!({"name": "ci", "scopes": []}), "scopes"),
        (json!({"name": "ci", "scopes": "runs:read"}), "scopes"),
        (
            json!({"name": "ci", "scopes": ["runs:read", "root"]}),
            "scopes",
        ),
        (
            json!({"name": "ci", "scopes": ["runs:read"], "expiresAt": "tomorrow"}),
            "expiresAt",
        ),
        (
            json!({"name": "ci", "scopes": ["runs:read"], "expiresAt": iso_in(-60)}),
            "expiresAt",
        ),
        (
            json!({"name": "ci", "scopes": ["runs:read"], "expiresAt": 12}),
            "expiresAt",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .post(&format!("/v1/orgs/{org}/api-keys"))
            .by(&owner)
            .org(org)
            .json(body.clone())
            .send()
            .await;
        assert_code(&r, 400, "BAD_REQUEST", &body.to_string());
        assert_eq!(r.body["message"], "Invalid API key payload");
        assert!(
            r.body["details"]["fieldErrors"][field].is_array(),
            "{body}: {}",
            show(&r)
        );
    }
    // The unknown scope's error names the allowed ones.
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "ci", "scopes": ["root"]}))
        .send()
        .await;
    assert!(r.body["details"]["fieldErrors"]["scopes"][0]
        .as_str()
        .is_some_and(|m| m.contains("workflows:write")));
    // `null` expiry means none.
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "ci", "scopes": ["org:read"], "expiresAt": null}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", show(&r));
    assert_eq!(r.body["apiKey"]["expiresAt"], Value::Null);
}

#[tokio::test]
async fn only_owners_and_admins_manage_keys() {
    let app = spawn().await;
    let owner = app.signup("keys-o").await;
    let admin = app.signup("keys-a").await;
    let member = app.signup("keys-m").await;
    let outsider = app.signup("keys-x").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    app.add_member(org, &owner, &member, "member").await;
    let (_, view) = create_key(&app, &admin, org, &["runs:read"], None).await;
    let id = view["id"].as_str().expect("id");

    let body = json!({"name": "m", "scopes": ["runs:read"]});
    for (who, status, code) in [
        (&member, 403, "FORBIDDEN"),
        (&outsider, 403, "ORG_ACCESS_DENIED"),
    ] {
        let r = app
            .post(&format!("/v1/orgs/{org}/api-keys"))
            .by(who)
            .org(org)
            .json(body.clone())
            .send()
            .await;
        assert_code(&r, status, code, "create");
        let r = list_keys(&app, who, org).await;
        assert_code(&r, status, code, "list");
        let r = app
            .delete(&format!("/v1/orgs/{org}/api-keys/{id}"))
            .by(who)
            .org(org)
            .send()
            .await;
        assert_code(&r, status, code, "revoke");
    }
    let r = list_keys(&app, &member, org).await;
    assert_eq!(r.body["message"], "Role is not allowed to manage API keys");
    // The admin's key is still there and live.
    let r = list_keys(&app, &owner, org).await;
    assert_eq!(r.body["apiKeys"][0]["revokedAt"], Value::Null);
}

#[tokio::test]
async fn keys_never_reach_session_user_membership_or_key_routes() {
    let app = spawn().await;
    let owner = app.signup("keys-deny").await;
    let org = app.create_org(&owner).await;
    let all = [
        "org:read",
        "org:write",
        "workflows:read",
        "workflows:write",
        "runs:read",
        "runs:write",
        "secrets:read",
        "secrets:write",
        "agents:read",
        "agents:admin",
        "usage:read",
    ];
    let (key, view) = create_key(&app, &owner, org, &all, None).await;
    let id = view["id"].as_str().expect("id");
    let creds = json!({"email": owner.email, "password": common::PASSWORD});
    let routes: Vec<(&str, String, Value)> = vec![
        ("GET", "/v1/me".into(), Value::Null),
        ("POST", "/v1/auth/logout".into(), Value::Null),
        ("POST", "/v1/auth/logout-all".into(), Value::Null),
        ("POST", "/v1/auth/login".into(), creds.clone()),
        (
            "POST",
            "/v1/auth/signup".into(),
            json!({"email": app.unique_email("k"), "password": common::PASSWORD}),
        ),
        ("POST", "/v1/auth/refresh".into(), Value::Null),
        (
            "GET",
            "/v1/auth/oauth/github/start?mode=json".into(),
            Value::Null,
        ),
        (
            "POST",
            "/v1/orgs".into(),
            json!({"name": "Key Org", "slug": format!("k-{}", &Uuid::new_v4().simple().to_string()[..10])}),
        ),
        (
            "POST",
            format!("/v1/orgs/{org}/invitations"),
            json!({"email": app.unique_email("i"), "roleKey": "member"}),
        ),
        (
            "POST",
            format!("/v1/orgs/{org}/members/{}/role", owner.id),
            json!({"roleKey": "member"}),
        ),
        (
            "POST",
            format!("/v1/invitations/{org}.{}/accept", Uuid::new_v4().simple()),
            Value::Null,
        ),
        (
            "POST",
            format!("/v1/orgs/{org}/api-keys"),
            json!({"name": "child", "scopes": ["runs:read"]}),
        ),
        ("GET", format!("/v1/orgs/{org}/api-keys"), Value::Null),
        (
            "DELETE",
            format!("/v1/orgs/{org}/api-keys/{id}"),
            Value::Null,
        ),
    ];
    for (method, path, body) in routes {
        let mut req = app
            .req(method.parse().expect("method"), &path)
            .bearer(&key)
            .org(org);
        if !body.is_null() {
            req = req.json(body);
        }
        let r = req.send().await;
        assert_code(&r, 403, "API_KEY_NOT_ALLOWED", &format!("{method} {path}"));
    }
    // Nothing happened: the key is live, no child key, the owner still owns the org and is signed in.
    assert_eq!(workflows_by_key(&app, org, &key).await.status, 200);
    let r = list_keys(&app, &owner, org).await;
    assert_eq!(r.body["apiKeys"].as_array().map(Vec::len), Some(1));
    let me = app.get("/v1/me").by(&owner).send().await;
    assert_eq!(me.status, 200);
    let role = me.body["orgs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["id"] == json!(org)))
        .map(|o| o["roleKey"].clone());
    assert_eq!(role, Some(json!("owner")));
    // A scope the key lacks is named.
    let (narrow, _) = create_key(&app, &owner, org, &["runs:read"], None).await;
    let r = app
        .get(&format!("/v1/orgs/{org}/secrets"))
        .bearer(&narrow)
        .send()
        .await;
    assert_code(&r, 403, "API_KEY_SCOPE_MISSING", "narrow key on secrets");
    assert_eq!(r.body["details"]["requiredScope"], "secrets:read");
}

#[tokio::test]
async fn a_key_names_its_org() {
    let app = spawn().await;
    let owner = app.signup("keys-org").await;
    let org = app.create_org(&owner).await;
    let other = app.create_org(&owner).await;
    let (key, _) = create_key(&app, &owner, org, &["workflows:read", "org:read"], None).await;

    // Another org's route, even one the creator owns: refused as for a non-member.
    let r = workflows_by_key(&app, other, &key).await;
    assert_code(&r, 403, "ORG_ACCESS_DENIED", "other org");
    let r = app
        .get(&format!("/v1/orgs/{other}/settings"))
        .bearer(&key)
        .org(other)
        .send()
        .await;
    assert_code(&r, 403, "ORG_ACCESS_DENIED", "other org with its header");
    // X-Org-Id is optional; when given it must be the key's org.
    let path = format!("/v1/orgs/{org}/settings");
    let r = app.get(&path).bearer(&key).org(org).send().await;
    assert_eq!(r.status, 200, "{}", show(&r));
    let r = app.get(&path).bearer(&key).org(other).send().await;
    assert_code(&r, 400, "INVALID_ORG_CONTEXT", "mismatching header");
    let r = app.get(&path).bearer(&key).org("nope").send().await;
    assert_code(&r, 400, "INVALID_ORG_CONTEXT", "malformed header");
    // A key made of parts of real ones is worthless.
    let (key2, _) = create_key(&app, &owner, other, &["workflows:read"], None).await;
    let (p1, s1) = split_key(&key);
    let (p2, _) = split_key(&key2);
    for forged in [
        format!("{p2}_{s1}"),
        format!("{p1}_{}", "A".repeat(s1.len())),
        format!("{p1}_"),
        "vsk_nope".to_string(),
    ] {
        let r = app.get(&path).bearer(&forged).send().await;
        assert_code(&r, 401, "API_KEY_INVALID", &forged);
    }
}

#[tokio::test]
async fn warn_mode_gives_keys_no_fallback_and_no_warning() {
    let app = spawn_with(Options::default().env("ORG_CONTEXT_ENFORCEMENT", "warn")).await;
    let owner = app.signup("keys-warn").await;
    let org = app.create_org(&owner).await;
    let (key, _) = create_key(&app, &owner, org, &["org:read"], None).await;
    let path = format!("/v1/orgs/{org}/settings");
    let r = app.get(&path).bearer(&key).send().await;
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-org-context-warning"), None);
    let r = app.get(&path).bearer(&key).org(Uuid::new_v4()).send().await;
    assert_code(
        &r,
        400,
        "INVALID_ORG_CONTEXT",
        "mismatching header in warn mode",
    );
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = spawn().await;
    let owner = app.signup("keys-exp").await;
    let org = app.create_org(&owner).await;
    let expires = Utc::now() + chrono::Duration::seconds(2);
    let (key, _) = create_key(
        &app,
        &owner,
        org,
        &["workflows:read"],
        Some(&expires.to_rfc3339_opts(SecondsFormat::Millis, true)),
    )
    .await;
    // Cached while valid; the cache does not outlive the expiry.
    let r = workflows_by_key(&app, org, &key).await;
    assert_eq!(r.status, 200, "{}", show(&r));
    let wait = (expires - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    assert_code(
        &workflows_by_key(&app, org, &key).await,
        401,
        "API_KEY_EXPIRED",
        "expired key",
    );
}

/// A second instance of the same deployment: same database, same Redis prefix.
async fn second_instance(first: &TestApp) -> TestApp {
    spawn_with(
        Options::default()
            .env("DATABASE_URL", &common::app_url(&first.db))
            .env("DATABASE_MIGRATE_URL", &common::owner_url(&first.db))
            .env("REDIS_KEY_PREFIX", &format!("test:{}:", first.db)),
    )
    .await
}

#[tokio::test]
async fn revocation_is_seen_by_another_instance_at_once() {
    let a = spawn().await;
    let b = second_instance(&a).await;
    let owner = a.signup("keys-multi").await;
    let org = a.create_org(&owner).await;
    let (key, view) = create_key(&a, &owner, org, &["workflows:read"], None).await;
    let (other, _) = create_key(&a, &owner, org, &["workflows:read"], None).await;
    // B has seen (and caches) both keys.
    for k in [&key, &other] {
        assert_eq!(workflows_by_key(&b, org, k).await.status, 200);
    }
    let id = view["id"].as_str().expect("id");
    let r = a
        .delete(&format!("/v1/orgs/{org}/api-keys/{id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    let revoked_at = Instant::now();
    // Pub/sub takes milliseconds; the cache TTL (30 s) is never waited for.
    let deadline = revoked_at + Duration::from_secs(2);
    let r = loop {
        let r = workflows_by_key(&b, org, &key).await;
        if r.status == 401 || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_code(
        &r,
        401,
        "API_KEY_REVOKED",
        "revoked key on the second instance",
    );
    eprintln!(
        "apikeys: revocation reached instance B after {:?}",
        revoked_at.elapsed()
    );
    assert_eq!(
        workflows_by_key(&b, org, &other).await.status,
        200,
        "other key unaffected"
    );
}

#[tokio::test]
async fn the_hash_at_rest_is_not_the_key_and_rls_hides_the_rows() {
    let app = spawn().await;
    let owner = app.signup("keys-rest").await;
    let org = app.create_org(&owner).await;
    let (key, view) = create_key(&app, &owner, org, &["runs:read"], None).await;
    let secret = split_key(&key).1.to_string();

    let db = app.app_db().await;
    // No org context: no rows.
    let n: i64 = db
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "api_keys visible without org context");
    db.batch_execute(&format!(
        "BEGIN; SELECT set_config('app.current_org_id', '{org}', true)"
    ))
    .await
    .expect("context");
    let row = db
        .query_one(
            "SELECT prefix, secret_hash, array_to_string(scopes, ','), creator_role, row_to_json(k)::text \
             FROM api_keys k",
            &[],
        )
        .await
        .expect("row");
    db.batch_execute("ROLLBACK").await.expect("rollback");
    let (prefix, hash, scopes, role, whole): (String, String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(prefix, view["prefix"].as_str().expect("prefix"));
    assert_ne!(hash, key);
    assert!(!whole.contains(&secret), "the secret is stored: {whole}");
    assert_eq!(hash, vespid::platform::crypto::sha256_hex(key.as_bytes()));
    assert_eq!((scopes.as_str(), role.as_str()), ("runs:read", "owner"));
}

#[tokio::test]
async fn last_use_is_recorded_in_batches_not_per_request() {
    let app = spawn().await;
    let owner = app.signup("keys-used").await;
    let org = app.create_org(&owner).await;
    let (key, _) = create_key(&app, &owner, org, &["workflows:read"], None).await;
    for _ in 0..5 {
        assert_eq!(workflows_by_key(&app, org, &key).await.status, 200);
    }
    // Nothing written by the requests themselves (the flush interval is 60 s by default).
    let r = list_keys(&app, &owner, org).await;
    assert_eq!(
        r.body["apiKeys"][0]["lastUsedAt"],
        Value::Null,
        "{}",
        show(&r)
    );
    app.state.api_keys.flush_last_used().await;
    let r = list_keys(&app, &owner, org).await;
    let used = r.body["apiKeys"][0]["lastUsedAt"]
        .as_str()
        .expect("lastUsedAt")
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&used).expect("time");
    assert!((Utc::now() - t.with_timezone(&Utc)).num_seconds() < 10);
    // A flush with nothing noted leaves it as it is.
    app.state.api_keys.flush_last_used().await;
    let r = list_keys(&app, &owner, org).await;
    assert_eq!(r.body["apiKeys"][0]["lastUsedAt"], json!(used));
}

#[tokio::test]
async fn the_background_flush_writes_last_use() {
    let app = spawn_with(Options::default().env("API_KEY_LAST_USED_FLUSH_SEC", "1")).await;
    let owner = app.signup("keys-flush").await;
    let org = app.create_org(&owner).await;
    let (key, _) = create_key(&app, &owner, org, &["workflows:read"], None).await;
    assert_eq!(workflows_by_key(&app, org, &key).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = list_keys(&app, &owner, org).await;
        if r.body["apiKeys"][0]["lastUsedAt"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lastUsedAt never written: {}",
            show(&r)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_acts_as_its_creator_and_never_above_their_role() {
    let app = spawn().await;
    let owner = app.signup("keys-role-o").await;
    let admin = app.signup("keys-role-a").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    let (key, _) = create_key(&app, &admin, org, &["workflows:write", "runs:write"], None).await;

    // Real work: the workflow is created by the key's creator.
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request"}]});
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .bearer(&key)
        .json(json!({"name": "by key", "dsl": dsl}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", show(&r));
    assert_eq!(r.body["workflow"]["createdByUserId"], json!(admin.id));

    // The creator is demoted to member: the key keeps only what a member may do.
    let r = app
        .post(&format!("/v1/orgs/{org}/members/{}/role", admin.id))
        .by(&owner)
        .org(org)
        .json(json!({"roleKey": "member"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", show(&r));
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .bearer(&key)
        .json(json!({"name": "by key", "dsl": dsl}))
        .send()
        .await;
    assert_code(
        &r,
        403,
        "FORBIDDEN",
        "demoted creator's key writing workflows",
    );
    assert_eq!(workflows_by_key(&app, org, &key).await.status, 200);
}

/// A key's public part (`vsk_` + 64 hex) and its secret. The secret is base64url and may itself contain
/// `_`, so the split is by position, not at the last `_`.
fn split_key(key: &str) -> (&str, &str) {
    assert_eq!(key.as_bytes().get(68), Some(&b'_'), "key format: {key}");
    (&key[..68], &key[69..])
}
