//! The audit log: every audited mutation leaves exactly one row (with who, what, on which target), a
//! refused or failed mutation leaves none, decrypts for a run are recorded, only owners and admins read
//! it, filters and paging work, rows cannot be changed by the application, and retention prunes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{spawn_with, Options, TestApp, User};
use crate::runs::{published, start_run, start_target, start_worker, wait_terminal};

async fn entries(app: &TestApp, owner: &User, org: Uuid, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let r = app
            .get(&format!("/v1/orgs/{org}/audit?limit=3{query}{c}"))
            .by(owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        all.extend(r.body["entries"].as_array().cloned().unwrap_or_default());
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

fn counts(list: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in list {
        *m.entry(e["action"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn every_audited_mutation_leaves_exactly_one_row_and_failures_none() {
    let kek = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let app = spawn_with(
        crate::runs::opts()
            .env("SECRETS_KEK_ID", "audit-kek")
            .env("SECRETS_KEK_BASE64", &kek),
    )
    .await;
    let _worker = start_worker(&app);
    let owner = app.signup("audit-owner").await;
    let member = app.signup("audit-member").await;
    let org = app.create_org(&owner).await;
    let o = |path: &str| format!("/v1/orgs/{org}{path}");

    // Settings, an invitation accepted, a role change.
    let r = app
        .put(&o("/settings"))
        .by(&owner)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": true}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.add_member(org, &owner, &member, "member").await;
    let r = app
        .post(&o(&format!("/members/{}/role", member.id)))
        .by(&owner)
        .org(org)
        .json(json!({"roleKey": "admin"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Refused and failed mutations: the last owner demoting themselves, a duplicate secret, an unknown
    // secret deleted. None leaves a row.
    let r = app
        .post(&o(&format!("/members/{}/role", owner.id)))
        .by(&owner)
        .org(org)
        .json(json!({"roleKey": "member"}))
        .send()
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    // A secret created, updated, a duplicate refused, another deleted, an unknown one not deleted.
    let mk =
        |name: &str| json!({"connectorId": "github", "name": name, "value": "ghp_audit_value_123"});
    let r = app
        .post(&o("/secrets"))
        .by(&owner)
        .org(org)
        .json(mk("api-token"))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.body["secret"]["id"].as_str().unwrap().to_string();
    let r = app
        .post(&o("/secrets"))
        .by(&owner)
        .org(org)
        .json(mk("api-token"))
        .send()
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = app
        .put(&o(&format!("/secrets/{secret}")))
        .by(&owner)
        .org(org)
        .json(json!({"value": "ghp_audit_value_456"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(&o("/secrets"))
        .by(&owner)
        .org(org)
        .json(mk("doomed"))
        .send()
        .await;
    let doomed = r.body["secret"]["id"].as_str().unwrap().to_string();
    let r = app
        .delete(&o(&format!("/secrets/{doomed}")))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .delete(&o(&format!("/secrets/{}", Uuid::new_v4())))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // A workflow published whose run decrypts the secret once.
    let (target, _t) = start_target(0).await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "call", "type": "http.request", "config": {"method": "GET", "url": format!("{target}/ok/a"),
         "headers": {"authorization": "Bearer {{secret:api-token}}"}}}]});
    let wf = published(&app, &owner, org, dsl).await;
    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // An executor: a pairing token, the pairing, labels, the revocation.
    let token = crate::agents::new_token(&app, &owner, org).await;
    let r = app
        .post("/v1/agents/pair")
        .json(json!({"pairingToken": token, "name": "box", "agentVersion": "1"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let agent = r.body["agentId"]
        .as_str()
        .or(r.body["executorId"].as_str())
        .unwrap()
        .to_string();
    let r = app
        .put(&o(&format!("/executors/{agent}/labels")))
        .by(&owner)
        .org(org)
        .json(json!({"labels": ["gpu"]}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(&o(&format!("/agents/{agent}/revoke")))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // An API key created, revoked twice (the second changes nothing).
    let r = app
        .post(&o("/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "ci", "scopes": ["runs:read"]}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key_id = r.body["apiKey"]["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = app
            .delete(&o(&format!("/api-keys/{key_id}")))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    let list = entries(&app, &owner, org, "").await;
    let want: BTreeMap<String, usize> = [
        ("org.create", 1),
        ("org.settings.update", 1),
        ("invitation.create", 1),
        ("invitation.accept", 1),
        ("member.role.change", 1),
        ("secret.create", 2),
        ("secret.update", 1),
        ("secret.delete", 1),
        ("secret.decrypt", 1),
        ("workflow.publish", 1),
        ("agent.pairing_token.create", 1),
        ("agent.pair", 1),
        ("agent.labels.update", 1),
        ("agent.revoke", 1),
        ("api_key.create", 1),
        ("api_key.revoke", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(counts(&list), want, "{list:#?}");
    // Paging newest first without repeats (ids unique, times descending).
    let ids: std::collections::HashSet<&str> =
        list.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), list.len());
    assert!(list
        .windows(2)
        .all(|w| w[0]["createdAt"].as_str() >= w[1]["createdAt"].as_str()));
    // Who and what: the role change names both sides; the decrypt names the run and is the platform's.
    let role = list
        .iter()
        .find(|e| e["action"] == "member.role.change")
        .unwrap();
    assert_eq!(role["actorUserId"], owner.id.to_string());
    assert_eq!(role["details"]["from"], "member");
    assert_eq!(role["details"]["to"], "admin");
    let decrypt = list
        .iter()
        .find(|e| e["action"] == "secret.decrypt")
        .unwrap();
    assert_eq!(decrypt["actorType"], "system");
    assert_eq!(decrypt["targetId"], secret);
    assert_eq!(decrypt["details"]["runId"], run.to_string());
    // No secret value anywhere in the log.
    let text = serde_json::to_string(&list).unwrap();
    assert!(
        !text.contains("ghp_audit_value"),
        "a secret value leaked into the audit log"
    );

    // Filters.
    let only = entries(&app, &owner, org, "&action=secret.create").await;
    assert_eq!(only.len(), 2);
    let by_member = entries(&app, &owner, org, &format!("&actorUserId={}", member.id)).await;
    assert_eq!(counts(&by_member).get("invitation.accept"), Some(&1));
    assert_eq!(by_member.len(), 1, "{by_member:?}");
    for bad in [
        "&action=nope",
        "&actorUserId=x",
        "&since=yesterday",
        "&limit=0",
    ] {
        let r = app
            .get(&format!("/v1/orgs/{org}/audit?{}", &bad[1..]))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
    }
}

#[tokio::test]
async fn only_owners_and_admins_read_it_and_the_application_cannot_rewrite_it() {
    let app = spawn_with(Options::default()).await;
    let owner = app.signup("audit-o").await;
    let member = app.signup("audit-m").await;
    let outsider = app.signup("audit-x").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let path = format!("/v1/orgs/{org}/audit");
    let r = app.get(&path).by(&member).org(org).send().await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = app.get(&path).by(&outsider).org(org).send().await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = app.get(&path).send().await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    // Another org's log is not this org's: the outsider's own org shows only its own creation.
    let theirs = entries(&app, &outsider, outsider.personal_org, "").await;
    assert!(theirs
        .iter()
        .all(|e| e["organizationId"] == outsider.personal_org.to_string()));

    // The application role may add rows, never change or remove them.
    let db = app.app_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .unwrap();
    for sql in [
        "UPDATE audit_log SET action = 'forged'",
        "DELETE FROM audit_log",
    ] {
        let err = db.batch_execute(sql).await.expect_err(sql);
        assert!(
            format!("{err:?}").contains("permission denied"),
            "{sql}: {err:?}"
        );
    }
    // Setting the retention flag gains the application nothing either.
    db.batch_execute("SELECT set_config('app.audit_retention', 'on', false)")
        .await
        .unwrap();
    let err = db
        .batch_execute("DELETE FROM audit_log")
        .await
        .expect_err("delete");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");

    // Retention: a row past it goes, the others stay.
    let owner_db = app.owner_db().await;
    owner_db
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('app.current_org_id', '{org}', true); \
             UPDATE audit_log SET created_at = now() - interval '400 days' \
             WHERE id = (SELECT id FROM audit_log WHERE organization_id = '{org}' AND action = 'org.create'); COMMIT;"
        ))
        .await
        .unwrap();
    let before = entries(&app, &owner, org, "").await.len();
    let row = db
        .query_one(
            "SELECT app.prune_audit_log(now() - interval '365 days', 100)",
            &[],
        )
        .await
        .unwrap();
    let pruned: i32 = row.get(0);
    assert!(pruned >= 1);
    let after = entries(&app, &owner, org, "").await;
    assert_eq!(after.len(), before - 1);
    assert!(after.iter().all(|e| e["action"] != "org.create"));
}
