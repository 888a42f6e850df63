//! Connector secrets (identity spec §4, §7.8, §7.9): write-only values, envelope encryption bound to the org,
//! owner/admin only, KEK rotation.

use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;
use vespid::domain::secrets::{SecretError, Secrets, SecretsParts};
use vespid::platform::crypto::envelope::Keyring;

use crate::common::{self, Options, TestApp};

fn kek(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

async fn app_with_kek() -> TestApp {
    common::spawn_with(
        Options::default()
            .env("SECRETS_KEK_ID", "test-kek-v1")
            .env("SECRETS_KEK_BASE64", &kek(7)),
    )
    .await
}

fn no_value(v: &Value) {
    assert!(v.get("value").is_none(), "value leaked: {v}");
    assert!(v.get("kekId").is_none(), "kek id leaked: {v}");
}

#[tokio::test]
async fn crud_roles_and_shapes() {
    let app = app_with_kek().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let base = format!("/v1/orgs/{org}/secrets");

    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": "ghp_test_token"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["secret"]["connectorId"], "github");
    assert_eq!(r.body["secret"]["name"], "token");
    no_value(&r.body["secret"]);
    let first = r.body["secret"]["id"].as_str().expect("id").to_string();

    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "llm.openai", "name": "openai", "value": "sk-test"}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["secret"]["connectorId"].as_str()),
        (201, Some("llm.openai"))
    );

    let r = app.get(&base).by(&owner).org(org).send().await;
    assert_eq!(r.status, 200);
    let list = r.body["secrets"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["connectorId"], "github", "sorted by connectorId");
    list.iter().for_each(no_value);
    assert!(!r.body.to_string().contains("ghp_test_token"));

    let r = app
        .get(&format!("{base}?connectorId=llm.openai"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["secrets"].as_array().map(Vec::len), Some(1));
    let r = app
        .get(&format!("{base}?connectorId="))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));

    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": "again"}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (409, "SECRET_ALREADY_EXISTS")
    );

    // Members may not manage secrets at all, reading included.
    for r in [
        app.post(&base)
            .by(&member)
            .org(org)
            .json(json!({"connectorId": "github", "name": "m", "value": "x"}))
            .send()
            .await,
        app.get(&base).by(&member).org(org).send().await,
        app.put(&format!("{base}/{first}"))
            .by(&member)
            .org(org)
            .json(json!({"value": "x"}))
            .send()
            .await,
        app.delete(&format!("{base}/{first}"))
            .by(&member)
            .org(org)
            .send()
            .await,
    ] {
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "FORBIDDEN"),
            "{:?}",
            r.body
        );
    }

    let r = app
        .put(&format!("{base}/{first}"))
        .by(&owner)
        .org(org)
        .json(json!({"value": "ghp_rotated"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    no_value(&r.body["secret"]);
    assert_ne!(r.body["secret"]["updatedAt"], r.body["secret"]["createdAt"]);

    let r = app
        .delete(&format!("{base}/{first}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), &r.body), (200, &json!({"ok": true})));
    let r = app
        .delete(&format!("{base}/{first}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "SECRET_NOT_FOUND"));
    // The same connector + name can be created again at once.
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": "ghp_new"}))
        .send()
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn validation_order_and_errors() {
    let app = app_with_kek().await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let base = format!("/v1/orgs/{org}/secrets");
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "t", "value": "   "}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "SECRET_VALUE_REQUIRED")
    );
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "nope", "name": "t", "value": "v"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
    assert_eq!(r.body["details"]["connectorId"], "nope");
    assert_eq!(
        r.body["details"]["allowed"],
        json!([
            "jira",
            "github",
            "slack",
            "email",
            "llm.openai",
            "llm.anthropic",
            "llm.gemini",
            "llm.vertex.oauth"
        ])
    );
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
    assert!(r.body["details"]["fieldErrors"]["value"].is_array());
    let big = "x".repeat(64 * 1024 + 1);
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "t", "value": big}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
    // Org context before body validation.
    let r = app.post(&base).by(&owner).json(json!({})).send().await;
    assert_eq!(r.code(), "ORG_CONTEXT_REQUIRED");
    // Non-UUID secret id: 404, not 500.
    let r = app
        .put(&format!("{base}/not-a-uuid"))
        .by(&owner)
        .org(org)
        .json(json!({"value": "v"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "SECRET_NOT_FOUND"));
    let r = app
        .put(&format!("{base}/{}", Uuid::new_v4()))
        .by(&owner)
        .org(org)
        .json(json!({"value": "v"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "SECRET_NOT_FOUND"));
}

#[tokio::test]
async fn without_kek_writes_fail_but_list_and_delete_work() {
    let app = common::spawn().await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let base = format!("/v1/orgs/{org}/secrets");
    let r = app
        .post(&base)
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "t", "value": "v"}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (503, "SECRETS_NOT_CONFIGURED")
    );
    let r = app
        .put(&format!("{base}/{}", Uuid::new_v4()))
        .by(&owner)
        .org(org)
        .json(json!({"value": "v"}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (503, "SECRETS_NOT_CONFIGURED")
    );
    let r = app.get(&base).by(&owner).org(org).send().await;
    assert_eq!((r.status.as_u16(), &r.body), (200, &json!({"secrets": []})));
    let r = app
        .delete(&format!("{base}/{}", Uuid::new_v4()))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.code(), "SECRET_NOT_FOUND");
}

/// Reads the raw row as the owner role (FORCE RLS: it needs the org context too).
async fn raw_row(app: &TestApp, org: Uuid) -> (String, Vec<u8>, Vec<u8>, Uuid) {
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .expect("ctx");
    let row = db
        .query_one(
            "SELECT kek_id, secret_ciphertext, dek_ciphertext, id FROM connector_secrets LIMIT 1",
            &[],
        )
        .await
        .expect("row");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn stored_as_ciphertext_bound_to_its_org() {
    let app = app_with_kek().await;
    let a = app.signup("a").await;
    let b = app.signup("b").await;
    let (org_a, org_b) = (a.personal_org, b.personal_org);
    let value = "ghp_super_secret_value_123";
    let r = app
        .post(&format!("/v1/orgs/{org_a}/secrets"))
        .by(&a)
        .org(org_a)
        .json(json!({"connectorId": "github", "name": "token", "value": value}))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let id: Uuid = r.body["secret"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");

    let (kek_id, ct, dek, _) = raw_row(&app, org_a).await;
    assert_eq!(kek_id, "test-kek-v1");
    assert!(
        !ct.windows(value.len()).any(|w| w == value.as_bytes()),
        "plaintext stored"
    );
    assert_eq!(dek.len(), 32, "wrapped DEK without its tag");

    // The runtime can reveal it in its own org...
    let (org_a, org_b, id) = (org_a.into(), org_b.into(), id.into());
    let plain = app
        .state
        .secrets
        .reveal(org_a, id)
        .await
        .expect("reveal")
        .value;
    assert_eq!(plain.as_str(), value);
    // ...but not through another org's context (RLS: not found).
    assert!(matches!(
        app.state.secrets.reveal(org_b, id).await,
        Err(SecretError::NotFound)
    ));
    // Moving the ciphertext row to org B (someone with DB write access) makes it undecryptable: AAD.
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "BEGIN; SELECT set_config('app.current_org_id', '{org_a}', true); \
         ALTER TABLE connector_secrets NO FORCE ROW LEVEL SECURITY; \
         UPDATE connector_secrets SET organization_id = '{org_b}' WHERE id = '{id}'; \
         ALTER TABLE connector_secrets FORCE ROW LEVEL SECURITY; COMMIT;"
    ))
    .await
    .expect("move row");
    assert!(matches!(
        app.state.secrets.reveal(org_b, id).await,
        Err(SecretError::Crypto(_))
    ));
    // B's admin cannot touch A's secret through B's routes, nor A's routes.
    let r = app
        .get(&format!("/v1/orgs/{org_a}/secrets"))
        .by(&b)
        .org(org_a)
        .send()
        .await;
    assert_eq!(r.code(), "ORG_ACCESS_DENIED");
}

#[tokio::test]
async fn kek_rotation_rewraps_and_old_key_can_be_dropped() {
    let app = app_with_kek().await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let r = app
            .post(&format!("/v1/orgs/{org}/secrets"))
            .by(&owner)
            .org(org)
            .json(json!({"connectorId": "slack", "name": name, "value": format!("v-{name}")}))
            .send()
            .await;
        assert_eq!(r.status, 201);
        ids.push(
            r.body["secret"]["id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .expect("id"),
        );
    }
    let (_, ct_before, _, _) = raw_row(&app, org).await;

    // A keyring that lacks the old key: start-up would refuse it.
    let new_only = with_keyring(
        &app,
        Keyring::new("test-kek-v2", &kek(9), "").expect("ring"),
    );
    assert_eq!(
        new_only.unknown_keks().await.expect("check"),
        ["test-kek-v1"]
    );

    // Rotate: new active key, old one decrypt-only; the owner role lists the orgs to visit.
    let owner = vespid::platform::db::build_pool(
        &common::owner_url(&app.db),
        1,
        std::time::Duration::from_secs(5),
    )
    .expect("owner pool");
    let ring = with_keyring(
        &app,
        Keyring::new("test-kek-v2", &kek(9), &format!("test-kek-v1:{}", kek(7))).expect("ring"),
    );
    let report = ring.rotate_all(&owner).await.expect("rotate");
    assert_eq!((report.orgs, report.rewrapped, report.failed), (1, 3, 0));
    // Idempotent: nothing left to do.
    let again = ring.rotate_all(&owner).await.expect("rotate again");
    assert_eq!((again.orgs, again.rewrapped), (0, 0));

    // The app role can ask which key ids are in use, but cannot list orgs across tenants.
    let app_db = app.app_db().await;
    let err = app_db
        .query("SELECT * FROM secret_kek_refs", &[])
        .await
        .expect_err("denied");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    let (kek_id, ct_after, _, _) = raw_row(&app, org).await;
    assert_eq!(kek_id, "test-kek-v2");
    assert_eq!(ct_before, ct_after, "only the DEK is re-wrapped");
    assert!(new_only.unknown_keks().await.expect("check").is_empty());
    for (id, name) in ids.iter().zip(["a", "b", "c"]) {
        let v = new_only
            .reveal(org.into(), (*id).into())
            .await
            .expect("reveal with new key only")
            .value;
        assert_eq!(v.as_str(), format!("v-{name}"));
    }
}

/// The secrets service of this app's database under another keyring (what a restart with new keys sees).
fn with_keyring(app: &TestApp, keyring: Keyring) -> Secrets {
    Secrets::new(SecretsParts {
        db: app.state.db.clone(),
        keyring: std::sync::Arc::new(keyring),
        allowed_connectors: Vec::new(),
    })
}

/// Development installs without a KEK generate one, kept in a 0600 file: the secret written with it reads
/// back with exactly that key, and a later start reuses the file instead of inventing another key.
/// Production never invents one: secret writes answer 503 and no file appears.
#[tokio::test]
async fn development_generates_a_local_kek_and_production_never_does() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vespid-devkek-{}", Uuid::new_v4().simple()));
    let file = dir.join("dev-kek");
    let path = file.to_string_lossy().to_string();
    let dev = common::spawn_with(
        Options::default()
            .env("VESPID_ENV", "development")
            .env("SECRETS_DEV_KEK_FILE", &path),
    )
    .await;
    let owner = dev.signup("dev").await;
    let org = owner.personal_org;
    let r = dev
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": "ghp_first_run"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id: Uuid = r.body["secret"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let mode = std::fs::metadata(&file)
        .expect("kek file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "kek file mode {mode:o}");
    let key = std::fs::read_to_string(&file).expect("read kek");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .expect("base64");
    assert_eq!(raw.len(), 32);

    // The file's key is the one that sealed the secret.
    let from_file = with_keyring(
        &dev,
        Keyring::new("dev-kek-v1", key.trim(), "").expect("ring"),
    );
    let v = from_file
        .reveal(org.into(), id.into())
        .await
        .expect("reveal with the file's key")
        .value;
    assert_eq!(v.as_str(), "ghp_first_run");

    // A later start of this install reuses the key.
    let vars = [
        ("VESPID_ENV", "development".to_string()),
        ("SECRETS_DEV_KEK_FILE", path.clone()),
    ];
    let mut again = vespid::app::config::Config::load_with(None, |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    vespid::app::dev_kek::apply(&mut again).expect("reuse");
    assert_eq!(again.secrets.kek_base64.expose(), key.trim());

    // Production: no key is invented.
    let long = "production-grade-secret-0123456789abcdef";
    let prod_file = dir.join("never");
    let prod = common::spawn_with(
        Options::default()
            .env("VESPID_ENV", "production")
            .env("AUTH_TOKEN_SECRET", long)
            .env("OAUTH_STATE_SECRET", &format!("{long}-oauth"))
            .env("SECRETS_DEV_KEK_FILE", &prod_file.to_string_lossy())
            .env("GATEWAY_SERVICE_TOKEN", &format!("{long}-gateway")),
    )
    .await;
    let owner = prod.signup("prod").await;
    let org = owner.personal_org;
    let r = prod
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": "ghp_x"}))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (503, "SECRETS_NOT_CONFIGURED")
    );
    assert!(!prod_file.exists(), "production wrote a key file");
    let _ = std::fs::remove_dir_all(&dir);
}
