//! Row-level security at the SQL level (spec identity 3, 7.9), connected as the restricted application role
//! after creating tenants through the API. Every probe runs in its own transaction with
//! `set_config(…, true)`, as the application does, and is rolled back unless it says otherwise.

use std::collections::BTreeSet;

use base64::Engine;
use serde_json::json;
use tokio_postgres::{Client, Error, Row};
use uuid::Uuid;

use crate::common::{spawn, spawn_with, Options, TestApp, User, PASSWORD};

/// Tenant tables keyed by organization, with their org column.
const ORG_TABLES: [(&str, &str); 15] = [
    ("organizations", "id"),
    ("memberships", "organization_id"),
    ("organization_invitations", "organization_id"),
    ("connector_secrets", "organization_id"),
    ("organization_credit_balances", "organization_id"),
    ("organization_credit_ledger", "organization_id"),
    ("organization_executors", "organization_id"),
    ("executor_pairing_tokens", "organization_id"),
    ("execution_workspaces", "organization_id"),
    ("workflow_cron_ticks", "organization_id"),
    ("webhook_deliveries", "organization_id"),
    ("audit_log", "organization_id"),
    ("llm_usage", "organization_id"),
    ("agent_sessions", "organization_id"),
    ("agent_session_events", "organization_id"),
];

const ALL_TABLES: [&str; 16] = [
    "organizations",
    "memberships",
    "organization_invitations",
    "auth_sessions",
    "connector_secrets",
    "organization_credit_balances",
    "organization_credit_ledger",
    "organization_executors",
    "executor_pairing_tokens",
    "execution_workspaces",
    "workflow_cron_ticks",
    "webhook_deliveries",
    "audit_log",
    "llm_usage",
    "agent_sessions",
    "agent_session_events",
];

const SET_CTX: &str =
    "SELECT set_config('app.current_user_id', $1, true), set_config('app.current_org_id', $2, true)";

fn sqlstate(e: &Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// Runs one statement in a transaction with the given context (`""` = unset); commits only if asked.
async fn run_tx(
    db: &mut Client,
    user: &str,
    org: &str,
    sql: &str,
    commit: bool,
) -> Result<Vec<Row>, Error> {
    let tx = db.transaction().await.expect("begin");
    tx.execute(SET_CTX, &[&user, &org]).await.expect("context");
    let res = tx.query(sql, &[]).await;
    if commit && res.is_ok() {
        tx.commit().await.expect("commit");
    } else {
        let _ = tx.rollback().await;
    }
    res
}

async fn rows(db: &mut Client, user: &str, org: &str, sql: &str) -> Vec<Row> {
    run_tx(db, user, org, sql, false)
        .await
        .unwrap_or_else(|e| panic!("[user={user} org={org}] {sql}: {e}"))
}

async fn count(db: &mut Client, user: &str, org: &str, sql: &str) -> i64 {
    rows(db, user, org, sql).await[0].get(0)
}

/// Rows affected by an UPDATE/DELETE (`… RETURNING 1`).
async fn affected(db: &mut Client, user: &str, org: &str, sql: &str, commit: bool) -> usize {
    run_tx(db, user, org, sql, commit)
        .await
        .unwrap_or_else(|e| panic!("[user={user} org={org}] {sql}: {e}"))
        .len()
}

async fn error_state(db: &mut Client, user: &str, org: &str, sql: &str) -> String {
    match run_tx(db, user, org, sql, false).await {
        Ok(r) => panic!(
            "[user={user} org={org}] {sql}: succeeded with {} rows",
            r.len()
        ),
        Err(e) => sqlstate(&e).unwrap_or("<none>").to_string(),
    }
}

fn texts(rows: &[Row]) -> BTreeSet<String> {
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// Two tenants built through the API: A (owner `a`) and B (owner `b`), `m` a member of both, a pending
/// invitation and a connector secret in each, sessions for everyone; plus a ledger row per org.
struct Fixture {
    app: TestApp,
    a: User,
    b: User,
    m: User,
    org_a: Uuid,
    org_b: Uuid,
}

async fn fixture() -> Fixture {
    let kek = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let app = spawn_with(
        Options::default()
            .env("SECRETS_KEK_ID", "test-kek-v1")
            .env("SECRETS_KEK_BASE64", &kek),
    )
    .await;
    let a = app.signup("rls-a").await;
    let b = app.signup("rls-b").await;
    let m = app.signup("rls-m").await;
    // A second session for `a`.
    let r = app
        .post("/v1/auth/login")
        .json(json!({ "email": a.email, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let org_a = app.create_org(&a).await;
    let org_b = app.create_org(&b).await;
    app.add_member(org_a, &a, &m, "member").await;
    app.add_member(org_b, &b, &m, "member").await;
    for (org, owner) in [(org_a, &a), (org_b, &b)] {
        let r = app
            .post(&format!("/v1/orgs/{org}/invitations"))
            .by(owner)
            .org(org)
            .json(json!({ "email": app.unique_email("pending"), "roleKey": "member" }))
            .send()
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = app
            .post(&format!("/v1/orgs/{org}/secrets"))
            .by(owner)
            .org(org)
            .json(json!({ "connectorId": "github", "name": "token", "value": "ghp_test_token" }))
            .send()
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        // An executor paired (its token used) and a pairing token left unused.
        let token = crate::agents::new_token(&app, owner, org).await;
        let r = app
            .post("/v1/agents/pair")
            .json(json!({ "pairingToken": token, "name": "box", "agentVersion": "1" }))
            .send()
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        crate::agents::new_token(&app, owner, org).await;
        // An agent session (with its first event).
        crate::sessions::create_session(&app, owner, org).await;
        // No API writes ledger rows of a created org yet: one through the owner role, in the org's context.
        let mut db = app.owner_db().await;
        let tx = db.transaction().await.expect("begin");
        tx.execute(SET_CTX, &[&owner.id.to_string(), &org.to_string()])
            .await
            .expect("context");
        tx.execute(
            &format!(
                "INSERT INTO organization_credit_ledger (organization_id, delta_credits, reason) \
                 VALUES ('{org}', 5, 'test')"
            ),
            &[],
        )
        .await
        .expect("seed ledger");
        // A workspace, as the gateway creates one for a run's first tool call.
        tx.execute(
            &format!(
                "INSERT INTO execution_workspaces (organization_id, owner_type, owner_id) \
                 VALUES ('{org}', 'workflow_run', gen_random_uuid())"
            ),
            &[],
        )
        .await
        .expect("seed workspace");
        // A cron tick and a webhook delivery, as the triggers write them.
        tx.execute(
            &format!(
                "INSERT INTO workflow_cron_ticks (family_id, organization_id, last_tick_at) \
                 VALUES (gen_random_uuid(), '{org}', now())"
            ),
            &[],
        )
        .await
        .expect("seed cron tick");
        tx.execute(
            &format!(
                "INSERT INTO webhook_deliveries (organization_id, family_id, idempotency_key, run_id) \
                 VALUES ('{org}', gen_random_uuid(), 'k', gen_random_uuid())"
            ),
            &[],
        )
        .await
        .expect("seed delivery");
        // An LLM call, as the usage service records one.
        tx.execute(
            &format!(
                "INSERT INTO llm_usage (organization_id, provider, model, input_tokens, output_tokens, \
                   latency_ms, cost_micros) VALUES ('{org}', 'openai', 'gpt-4o', 1, 1, 1, 1)"
            ),
            &[],
        )
        .await
        .expect("seed usage");
        tx.commit().await.expect("commit");
    }
    Fixture {
        app,
        a,
        b,
        m,
        org_a,
        org_b,
    }
}

#[tokio::test]
async fn app_role_cannot_bypass_rls() {
    let app = spawn().await;
    let mut db = app.app_db().await;
    let row = db
        .query_one(
            "SELECT rolsuper, rolbypassrls, current_user::text FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("role facts");
    let (superuser, bypass, me): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
    assert!(!superuser, "{me} is superuser");
    assert!(!bypass, "{me} has BYPASSRLS");
    for table in ALL_TABLES {
        let row = db
            .query_one(
                "SELECT t.tableowner::text, t.rowsecurity, c.relforcerowsecurity, \
                   pg_has_role(current_user, t.tableowner, 'MEMBER') \
                 FROM pg_tables t JOIN pg_class c ON c.oid = ('public.' || t.tablename)::regclass \
                 WHERE t.schemaname = 'public' AND t.tablename = $1",
                &[&table],
            )
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        let (owner, rls, force, member): (String, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_ne!(owner, me, "{table} is owned by the app role");
        assert!(!member, "{me} is a member of {table}'s owner {owner}");
        assert!(rls, "{table}: row level security disabled");
        assert!(force, "{table}: FORCE ROW LEVEL SECURITY missing");
    }
    // Nothing the app role could use to step around the policies.
    for sql in [
        "ALTER TABLE organizations DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY organizations_tenant_isolation_all ON organizations",
        "SET LOCAL ROLE vespid_owner",
    ] {
        assert_eq!(error_state(&mut db, "", "", sql).await, "42501", "{sql}");
    }
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL row_security = off")
        .await
        .expect("set");
    let e = tx
        .query("SELECT * FROM organizations", &[])
        .await
        .expect_err("row_security=off must not bypass policies");
    assert_eq!(sqlstate(&e), Some("42501"), "{e}");
}

#[tokio::test]
async fn no_context_sees_nothing() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    for table in ALL_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&mut db, "", "", &sql).await, 0, "{table}");
        // Never set at all (no transaction, no set_config).
        let n: i64 = db.query_one(&sql, &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "{table} without any set_config");
    }
    // Writes without context touch nothing, inserts are refused.
    assert_eq!(
        affected(
            &mut db,
            "",
            "",
            "UPDATE organizations SET name = 'x' RETURNING 1",
            false
        )
        .await,
        0
    );
    assert_eq!(
        affected(
            &mut db,
            "",
            "",
            "DELETE FROM memberships RETURNING 1",
            false
        )
        .await,
        0
    );
    let insert = format!(
        "INSERT INTO organizations (id, slug, name) VALUES ('{}', 'no-ctx-{}', 'x')",
        Uuid::new_v4(),
        Uuid::new_v4().simple()
    );
    assert_eq!(error_state(&mut db, "", "", &insert).await, "42501");
}

#[tokio::test]
async fn user_context_discovers_own_memberships_and_orgs() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    let cases = [
        (&f.a, vec![f.a.personal_org, f.org_a]),
        (&f.b, vec![f.b.personal_org, f.org_b]),
        (&f.m, vec![f.m.personal_org, f.org_a, f.org_b]),
    ];
    for (user, orgs) in cases {
        let uid = user.id.to_string();
        let want: BTreeSet<String> = orgs.iter().map(Uuid::to_string).collect();
        let ms = rows(
            &mut db,
            &uid,
            "",
            "SELECT organization_id::text, user_id::text FROM memberships",
        )
        .await;
        assert_eq!(ms.len(), want.len(), "{}: memberships", user.email);
        assert!(ms.iter().all(|r| r.get::<_, String>(1) == uid));
        assert_eq!(texts(&ms), want, "{}: membership orgs", user.email);
        let os = rows(&mut db, &uid, "", "SELECT id::text FROM organizations").await;
        assert_eq!(texts(&os), want, "{}: orgs", user.email);
        assert_eq!(os.len(), want.len());
        // No discovery for the other tenant tables.
        for table in [
            "organization_invitations",
            "connector_secrets",
            "organization_credit_balances",
            "organization_credit_ledger",
        ] {
            let sql = format!("SELECT count(*) FROM {table}");
            assert_eq!(count(&mut db, &uid, "", &sql).await, 0, "{table}");
        }
        // Own sessions only.
        let ss = rows(&mut db, &uid, "", "SELECT user_id::text FROM auth_sessions").await;
        assert!(!ss.is_empty(), "{}: no sessions", user.email);
        assert!(ss.iter().all(|r| r.get::<_, String>(0) == uid));
    }
    assert_eq!(
        count(
            &mut db,
            &f.a.id.to_string(),
            "",
            "SELECT count(*) FROM auth_sessions"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn org_context_isolates_tenants() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    let (a, b) = (f.org_a.to_string(), f.org_b.to_string());
    // Org context alone, a member of both orgs, and the owner of B: all confined to A.
    for user in [String::new(), f.m.id.to_string(), f.b.id.to_string()] {
        for (table, col) in ORG_TABLES {
            let theirs = format!("SELECT count(*) FROM {table} WHERE {col} = '{b}'");
            assert_eq!(
                count(&mut db, &user, &a, &theirs).await,
                0,
                "{table} [{user}]"
            );
            let ours = format!("SELECT count(*) FROM {table} WHERE {col} = '{a}'");
            let all = format!("SELECT count(*) FROM {table}");
            let n = count(&mut db, &user, &a, &ours).await;
            assert!(n > 0, "{table} [{user}]: A's rows invisible in A's context");
            assert_eq!(
                count(&mut db, &user, &a, &all).await,
                n,
                "{table} [{user}]: rows of other orgs visible"
            );
        }
        let os = rows(&mut db, &user, &a, "SELECT id::text FROM organizations").await;
        assert_eq!(texts(&os), BTreeSet::from([a.clone()]), "[{user}]");
    }
    // A member of both: memberships show A's rows only (not their own in B or the personal workspace).
    let ms = rows(
        &mut db,
        &f.m.id.to_string(),
        &a,
        "SELECT organization_id::text FROM memberships",
    )
    .await;
    assert_eq!(ms.len(), 2, "a and m in A");
    assert_eq!(texts(&ms), BTreeSet::from([a.clone()]));
    // Org context does not open sessions.
    assert_eq!(
        count(&mut db, "", &a, "SELECT count(*) FROM auth_sessions").await,
        0
    );
}

#[tokio::test]
async fn cross_tenant_writes_are_refused() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    let (a, b) = (f.org_a.to_string(), f.org_b.to_string());
    let (ua, ub) = (f.a.id.to_string(), f.b.id.to_string());
    let updates = [
        ("organizations", "id", "name = 'pwned'"),
        ("memberships", "organization_id", "role_key = 'member'"),
        (
            "organization_invitations",
            "organization_id",
            "status = 'revoked'",
        ),
        ("connector_secrets", "organization_id", "name = 'pwned'"),
        (
            "organization_credit_balances",
            "organization_id",
            "balance_credits = 1000000",
        ),
        (
            "organization_credit_ledger",
            "organization_id",
            "delta_credits = 1000000",
        ),
        ("agent_sessions", "organization_id", "title = 'pwned'"),
    ];
    let inserts = [
        format!(
            "INSERT INTO organizations (id, slug, name) VALUES ('{}', 'evil-{}', 'Evil')",
            Uuid::new_v4(),
            Uuid::new_v4().simple()
        ),
        format!(
            "INSERT INTO memberships (organization_id, user_id, role_key) VALUES ('{b}', '{}', 'owner')",
            f.m.id
        ),
        format!(
            "INSERT INTO organization_invitations (organization_id, email, role_key, invited_by_user_id, \
               token, expires_at) VALUES ('{b}', 'evil@example.com', 'admin', '{ua}', 'evil', now() + interval '1 day')"
        ),
        format!(
            "INSERT INTO connector_secrets (organization_id, connector_id, name, kek_id, dek_ciphertext, \
               dek_iv, dek_tag, secret_ciphertext, secret_iv, secret_tag, created_by_user_id, updated_by_user_id) \
             VALUES ('{b}', 'slack', 'evil', 'k', '', '', '', '', '', '', '{ua}', '{ua}')"
        ),
        format!(
            "INSERT INTO organization_credit_balances (organization_id, balance_credits) VALUES ('{b}', 1)"
        ),
        format!(
            "INSERT INTO organization_credit_ledger (organization_id, delta_credits, reason) \
             VALUES ('{b}', 1000000, 'evil')"
        ),
        format!(
            "INSERT INTO llm_usage (organization_id, provider, model, input_tokens, output_tokens, \
               latency_ms, cost_micros) VALUES ('{b}', 'openai', 'gpt-4o', 1, 1, 1, 1)"
        ),
        format!(
            "INSERT INTO agent_sessions (organization_id, created_by_user_id, prompt_instructions) \
             VALUES ('{b}', '{ua}', 'evil')"
        ),
        format!(
            "INSERT INTO agent_session_events (organization_id, session_id, seq, event_type) \
             VALUES ('{b}', gen_random_uuid(), 99, 'agent_message')"
        ),
    ];
    for user in [String::new(), f.m.id.to_string(), ub.clone()] {
        for (table, col, set) in updates {
            let sql = format!("UPDATE {table} SET {set} WHERE {col} = '{b}' RETURNING 1");
            assert_eq!(
                affected(&mut db, &user, &a, &sql, false).await,
                0,
                "{sql} [{user}]"
            );
            let sql = format!("DELETE FROM {table} WHERE {col} = '{b}' RETURNING 1");
            assert_eq!(
                affected(&mut db, &user, &a, &sql, false).await,
                0,
                "{sql} [{user}]"
            );
        }
        for sql in &inserts {
            assert_eq!(
                error_state(&mut db, &user, &a, sql).await,
                "42501",
                "{sql} [{user}]"
            );
        }
        // Moving one of A's rows into B.
        for (table, col, _) in updates {
            let sql = format!("UPDATE {table} SET {col} = '{b}' WHERE {col} = '{a}'");
            assert_eq!(
                error_state(&mut db, &user, &a, &sql).await,
                "42501",
                "{sql} [{user}]"
            );
        }
    }
    // The same writes inside A's own context do work (the policies are not simply closed).
    let sql = format!(
        "UPDATE connector_secrets SET name = 'renamed' WHERE organization_id = '{a}' RETURNING 1"
    );
    assert_eq!(affected(&mut db, "", &a, &sql, false).await, 1);
    let sql = format!(
        "INSERT INTO organization_credit_ledger (organization_id, delta_credits, reason) \
         VALUES ('{a}', 1, 'ok') RETURNING 1"
    );
    assert_eq!(affected(&mut db, "", &a, &sql, false).await, 1);
    // B is intact (checked in B's own context).
    let name = rows(&mut db, &ub, &b, "SELECT name FROM organizations").await;
    assert_eq!(name.len(), 1);
    assert_eq!(name[0].get::<_, String>(0), "Test Org");
    assert_eq!(
        count(
            &mut db,
            "",
            &b,
            "SELECT count(*) FROM organization_invitations WHERE status = 'pending'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn malformed_context_is_an_error() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    let a = f.org_a.to_string();
    for (table, _) in ORG_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            error_state(&mut db, "", "not-a-uuid", &sql).await,
            "22P02",
            "{table}"
        );
    }
    for table in ["auth_sessions", "memberships", "organizations"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            error_state(&mut db, "not-a-uuid", "", &sql).await,
            "22P02",
            "{table}"
        );
    }
    // A bad user id next to a good org id still fails on the user-scoped table.
    assert_eq!(
        error_state(&mut db, "nope", &a, "SELECT count(*) FROM auth_sessions").await,
        "22P02"
    );
}

#[tokio::test]
async fn sessions_are_isolated_per_user() {
    let f = fixture().await;
    let mut db = f.app.app_db().await;
    let (ua, ub) = (f.a.id.to_string(), f.b.id.to_string());
    let a_sessions = format!("SELECT count(*) FROM auth_sessions WHERE user_id = '{ua}'");
    assert_eq!(count(&mut db, &ua, "", &a_sessions).await, 2);
    // B sees none of A's sessions, only their own.
    assert_eq!(count(&mut db, &ub, "", &a_sessions).await, 0);
    let mine = rows(&mut db, &ub, "", "SELECT user_id::text FROM auth_sessions").await;
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|r| r.get::<_, String>(0) == ub));
    // B cannot revoke or delete A's sessions (committed attempts).
    let revoke =
        format!("UPDATE auth_sessions SET revoked_at = now() WHERE user_id = '{ua}' RETURNING 1");
    assert_eq!(affected(&mut db, &ub, "", &revoke, true).await, 0);
    let delete = format!("DELETE FROM auth_sessions WHERE user_id = '{ua}' RETURNING 1");
    assert_eq!(affected(&mut db, &ub, "", &delete, true).await, 0);
    // Org context (even A's own org) does not grant access to sessions.
    assert_eq!(
        affected(&mut db, "", &f.org_a.to_string(), &revoke, true).await,
        0
    );
    // B cannot plant a session for A, nor hand one of theirs over.
    let plant = format!(
        "INSERT INTO auth_sessions (user_id, refresh_token_hash, expires_at, absolute_expires_at) \
         VALUES ('{ua}', 'planted-{}', now() + interval '1 day', now() + interval '1 day')",
        Uuid::new_v4().simple()
    );
    assert_eq!(error_state(&mut db, &ub, "", &plant).await, "42501");
    let hand_over = format!("UPDATE auth_sessions SET user_id = '{ua}' WHERE user_id = '{ub}'");
    assert_eq!(error_state(&mut db, &ub, "", &hand_over).await, "42501");
    // A's sessions are untouched, and A's token still works.
    assert_eq!(count(&mut db, &ua, "", &a_sessions).await, 2);
    assert_eq!(
        count(
            &mut db,
            &ua,
            "",
            "SELECT count(*) FROM auth_sessions WHERE revoked_at IS NOT NULL"
        )
        .await,
        0
    );
    let r = f.app.get("/v1/me").by(&f.a).send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn owner_role_is_bound_by_force_rls() {
    let f = fixture().await;
    let mut db = f.app.owner_db().await;
    let row = db
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("role facts");
    assert!(!row.get::<_, bool>(0) && !row.get::<_, bool>(1));
    for table in ALL_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        let n: i64 = db.query_one(&sql, &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "owner sees {table} without context");
        assert_eq!(count(&mut db, "", "", &sql).await, 0, "{table}");
    }
    let a = f.org_a.to_string();
    let os = rows(&mut db, "", &a, "SELECT id::text FROM organizations").await;
    assert_eq!(texts(&os), BTreeSet::from([a.clone()]));
    let sql = format!(
        "SELECT count(*) FROM memberships WHERE organization_id = '{}'",
        f.org_b
    );
    assert_eq!(count(&mut db, "", &a, &sql).await, 0);
}

#[derive(diesel::QueryableByName)]
struct Session {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    org: String,
}

/// A request cancelled in the middle of a tenant transaction (its client went away) must not hand the
/// half-used session to the next caller: the pool discards that connection, so the next transaction gets a
/// fresh backend with nothing of the previous context.
#[tokio::test]
async fn a_transaction_cancelled_midway_never_reaches_the_next_caller() {
    use diesel_async::scoped_futures::ScopedFutureExt;
    use diesel_async::RunQueryDsl;
    use vespid::platform::db::{self, DbError, TenantCtx};

    let app = spawn().await;
    // One connection, so the next transaction would get the same one if it were handed back.
    let pool = db::build_pool(
        app.state.config.database.url.expose(),
        1,
        std::time::Duration::from_secs(5),
    )
    .expect("pool");
    let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
    let probe = |org: Uuid, sleep: f64| {
        let pool = pool.clone();
        async move {
            db::tenant_tx(&pool, TenantCtx::org(org), |c| {
                async move {
                    diesel::sql_query("SELECT pg_sleep($1)")
                        .bind::<diesel::sql_types::Double, _>(sleep)
                        .execute(c)
                        .await?;
                    diesel::sql_query(
                        "SELECT pg_backend_pid() AS pid, current_setting('app.current_org_id') AS org",
                    )
                    .get_result::<Session>(c)
                    .await
                    .map_err(DbError::from)
                }
                .scope_boxed()
            })
            .await
        }
    };
    let first = probe(org_a, 0.0).await.expect("first");
    assert_eq!(first.org, org_a.to_string());
    // Dropped while PostgreSQL sleeps inside the transaction.
    let cancelled =
        tokio::time::timeout(std::time::Duration::from_millis(100), probe(org_a, 2.0)).await;
    assert!(cancelled.is_err(), "the probe should have been cancelled");
    let next = probe(org_b, 0.0).await.expect("next");
    assert_eq!(next.org, org_b.to_string());
    assert_ne!(
        next.pid, first.pid,
        "the cancelled transaction's connection went back to the pool"
    );
}
