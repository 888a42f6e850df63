//! Executors (node agents) over the REST API (spec gateway §1, §7.2): pairing tokens, pairing, listing
//! with live status, revocation, labels; the denials, the races and what is stored.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{spawn, spawn_with, Options, Resp, TestApp, User};

/// `POST …/agents/{id}/revoke` (or the `executors` alias) by `by` in `org`.
pub(crate) async fn revoke(app: &TestApp, by: &User, org: Uuid, alias: &str, id: &str) -> Resp {
    app.post(&format!("/v1/orgs/{org}/{alias}/{id}/revoke"))
        .by(by)
        .org(org)
        .send()
        .await
}

pub(crate) async fn pairing_token(
    app: &TestApp,
    by: &User,
    org: Uuid,
    body: Option<Value>,
) -> Resp {
    let req = app
        .post(&format!("/v1/orgs/{org}/agents/pairing-tokens"))
        .by(by)
        .org(org);
    match body {
        Some(b) => req.json(b).send().await,
        None => req.send().await,
    }
}

pub(crate) async fn new_token(app: &TestApp, by: &User, org: Uuid) -> String {
    let r = pairing_token(app, by, org, None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

async fn pair(app: &TestApp, token: &str, capabilities: Option<Value>) -> Resp {
    let mut body = json!({ "pairingToken": token, "name": "build-box", "agentVersion": "0.1.0" });
    if let Some(c) = capabilities {
        body["capabilities"] = c;
    }
    app.post("/v1/executors/pair").json(body).send().await
}

async fn list(app: &TestApp, by: &User, org: Uuid, alias: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/orgs/{org}/{alias}"))
        .by(by)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["executors"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {list:?}"))
}

#[tokio::test]
async fn pairing_lifecycle_matches_the_original() {
    let app = spawn().await;
    let owner = app.signup("agents-owner").await;
    let org = owner.personal_org;

    let r = pairing_token(&app, &owner, org, None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with(&format!("{org}.")), "{token}");
    assert_eq!(token.len() - 37, 32, "24 random bytes as base64url");
    let expires: chrono::DateTime<chrono::Utc> =
        r.body["expiresAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15));

    let r = pair(
        &app,
        &token,
        Some(json!({ "kinds": ["agent.execute"], "labels": ["self-chosen", 7] })),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["organizationId"], org.to_string());
    let id = r.body["executorId"].as_str().unwrap().to_string();
    let executor_token = r.body["executorToken"].as_str().unwrap();
    assert!(executor_token.starts_with(&format!("{org}.")));
    assert_eq!(
        executor_token.len() - 37,
        43,
        "32 random bytes as base64url"
    );
    assert!(r.body["gatewayWsUrl"].as_str().unwrap().len() > 5);

    for alias in ["agents", "executors"] {
        let listed = list(&app, &owner, org, alias).await;
        let e = find(&listed, &id);
        assert_eq!(e["name"], "build-box");
        // Paired but never connected: offline, never seen.
        assert_eq!(e["status"], "offline");
        assert_eq!(e["lastSeenAt"], Value::Null);
        assert_eq!(e["revokedAt"], Value::Null);
        assert_eq!(e["labels"], json!([]));
        // Self-reported labels are shown, never routed on.
        assert_eq!(e["reportedLabels"], json!(["self-chosen"]));
    }

    // Single use.
    let r = pair(&app, &token, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "PAIRING_TOKEN_INVALID");
    assert_eq!(r.body["message"], "Pairing token has already been used");

    let r = revoke(&app, &owner, org, "agents", &id.to_string()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({ "ok": true }));
    let listed = list(&app, &owner, org, "executors").await;
    let e = find(&listed, &id);
    assert_eq!(e["status"], "revoked");
    assert!(e["revokedAt"].is_string());
    // Revoking again just sets it again.
    let r = revoke(&app, &owner, org, "executors", &id.to_string()).await;
    assert_eq!(r.status, 200);

    // Only hashes are stored.
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .unwrap();
    let hashes: Vec<String> = db
        .query(
            "SELECT token_hash FROM executor_pairing_tokens UNION ALL SELECT token_hash FROM organization_executors",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sha = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
    assert_eq!(hashes, vec![sha(&token), sha(executor_token)]);
}

#[tokio::test]
async fn admin_chosen_labels_become_routing_labels_at_pairing() {
    let app = spawn().await;
    let owner = app.signup("agents-labels").await;
    let org = owner.personal_org;
    let r = pairing_token(
        &app,
        &owner,
        org,
        Some(json!({ "labels": [" gpu ", "gpu", "linux", "  "] })),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    let r = pair(&app, &token, Some(json!({ "labels": ["other"] }))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["executorId"].as_str().unwrap().to_string();
    let listed = list(&app, &owner, org, "agents").await;
    assert_eq!(find(&listed, &id)["labels"], json!(["gpu", "linux"]));
    assert_eq!(find(&listed, &id)["reportedLabels"], json!(["other"]));

    // An empty JSON object and a body-less POST both work (the original ignored the body).
    assert_eq!(
        pairing_token(&app, &owner, org, Some(json!({})))
            .await
            .status,
        201
    );
    for bad in [
        json!({ "labels": "gpu" }),
        json!({ "labels": [1] }),
        json!({ "labels": [""] }),
        json!({ "labels": ["x".repeat(65)] }),
        json!({ "labels": (0..51).map(|i| format!("l{i}")).collect::<Vec<_>>() }),
    ] {
        let r = pairing_token(&app, &owner, org, Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert_eq!(r.code(), "BAD_REQUEST");
        assert_eq!(r.body["message"], "Invalid pairing token payload");
        assert!(
            r.body["details"]["fieldErrors"]["labels"].is_array(),
            "{:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn pairing_checks_the_body_first_then_the_token() {
    let app = spawn().await;
    let owner = app.signup("agents-pair").await;
    let org = owner.personal_org;
    let token = new_token(&app, &owner, org).await;

    // Bad bodies are refused before any token check (even with a valid token).
    for (body, field) in [
        (
            json!({ "pairingToken": token, "agentVersion": "1" }),
            "name",
        ),
        (
            json!({ "pairingToken": token, "name": "x".repeat(121), "agentVersion": "1" }),
            "name",
        ),
        (
            json!({ "pairingToken": token, "name": "n", "agentVersion": "" }),
            "agentVersion",
        ),
        (
            json!({ "pairingToken": "", "name": "n", "agentVersion": "1" }),
            "pairingToken",
        ),
        (
            json!({ "pairingToken": token, "name": "n", "agentVersion": "1", "capabilities": [] }),
            "capabilities",
        ),
        (
            json!({ "pairingToken": token, "name": "n", "agentVersion": "1", "capabilities": null }),
            "capabilities",
        ),
    ] {
        let r = app.post("/v1/agents/pair").json(body.clone()).send().await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "BAD_REQUEST");
        assert_eq!(r.body["message"], "Invalid agent pairing payload");
        assert!(
            r.body["details"]["fieldErrors"][field].is_array(),
            "{:?}",
            r.body
        );
    }
    let r = app.post("/v1/agents/pair").json(json!([1])).send().await;
    assert_eq!(r.status, 400);

    for (bad, message) in [
        ("no-dot-at-all".to_string(), "Pairing token is malformed"),
        (
            format!("{}.abc", Uuid::new_v4().simple()),
            "Pairing token is malformed",
        ),
        (format!("{org}.not-the-secret"), "Pairing token is invalid"),
        // The right secret under another org's prefix is another token.
        (
            format!("{}.{}", Uuid::new_v4(), token.split_once('.').unwrap().1),
            "Pairing token is invalid",
        ),
    ] {
        let r = pair(&app, &bad, None).await;
        assert_eq!(r.status, 401, "{bad}: {:?}", r.body);
        assert_eq!(r.code(), "PAIRING_TOKEN_INVALID");
        assert_eq!(r.body["message"], message);
    }

    // Expired: 400, and the token stays unused.
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false); \
         UPDATE executor_pairing_tokens SET expires_at = now() - interval '1 second'"
    ))
    .await
    .unwrap();
    let r = pair(&app, &token, None).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.code(), "PAIRING_TOKEN_EXPIRED");
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM executor_pairing_tokens WHERE used_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = db
        .query_one("SELECT count(*) FROM organization_executors", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no executor from refused pairings");
}

#[tokio::test]
async fn parallel_pairings_with_one_token_make_one_executor() {
    let app = spawn().await;
    let owner = app.signup("agents-race").await;
    let org = owner.personal_org;
    let token = new_token(&app, &owner, org).await;
    let tries = (0..12).map(|_| pair(&app, &token, None));
    let results = futures_util::future::join_all(tries).await;
    let won = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        won,
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 401, "{:?}", r.body);
        assert_eq!(r.code(), "PAIRING_TOKEN_INVALID");
    }
    assert_eq!(list(&app, &owner, org, "agents").await.len(), 1);
}

#[tokio::test]
async fn failed_pairings_are_throttled_per_client_and_valid_ones_never_count() {
    let app = spawn_with(
        Options::default()
            .env("EXECUTOR_PAIR_MAX_FAILURES", "3")
            .env("EXECUTOR_PAIR_FAILURE_WINDOW_SEC", "60"),
    )
    .await;
    let owner = app.signup("agents-throttle").await;
    let org = owner.personal_org;
    // Valid pairings, more than the failure limit: none is throttled.
    for _ in 0..4 {
        let token = new_token(&app, &owner, org).await;
        assert_eq!(pair(&app, &token, None).await.status, 201);
    }
    for _ in 0..3 {
        let r = pair(&app, &format!("{org}.guess"), None).await;
        assert_eq!(r.status, 401);
    }
    let r = pair(&app, &format!("{org}.guess"), None).await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.code(), "RATE_LIMITED");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The counter has its TTL.
    let key = app.state.redis.key("rl:pair:127.0.0.1");
    let ttl: i64 = fred::interfaces::KeysInterface::ttl(&app.state.redis.client, key)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn only_the_orgs_admins_manage_its_executors() {
    let app = spawn().await;
    let owner = app.signup("agents-a").await;
    let other = app.signup("agents-b").await;
    let member = app.signup("agents-m").await;
    let org = owner.personal_org;
    app.add_member(org, &owner, &member, "member").await;
    let token = new_token(&app, &owner, org).await;
    let id = pair(&app, &token, None).await.body["executorId"]
        .as_str()
        .unwrap()
        .to_string();

    // A member is refused with the spec's message.
    let r = app
        .get(&format!("/v1/orgs/{org}/agents"))
        .by(&member)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "FORBIDDEN");
    assert_eq!(r.body["message"], "Role is not allowed to manage executors");

    // Another org's admin cannot see, revoke or relabel it through their own org.
    let theirs = other.personal_org;
    assert!(list(&app, &other, theirs, "executors").await.is_empty());
    let r = revoke(&app, &other, theirs, "executors", &id.to_string()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "AGENT_NOT_FOUND");
    let r = app
        .put(&format!("/v1/orgs/{theirs}/executors/{id}/labels"))
        .by(&other)
        .org(theirs)
        .json(json!({ "labels": ["mine"] }))
        .send()
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        find(&list(&app, &owner, org, "agents").await, &id)["status"],
        "offline"
    );

    // A non-UUID id is not found, not a 500.
    let r = revoke(&app, &owner, org, "agents", "not-a-uuid").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "AGENT_NOT_FOUND");
}

#[tokio::test]
async fn labels_are_normalized_and_tags_are_their_alias() {
    let app = spawn().await;
    let owner = app.signup("agents-relabel").await;
    let org = owner.personal_org;
    let token = new_token(&app, &owner, org).await;
    let id = pair(&app, &token, None).await.body["executorId"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |path: String, body: Value| {
        let app = &app;
        let owner = &owner;
        async move { app.put(&path).by(owner).org(org).json(body).send().await }
    };
    let labels = format!("/v1/orgs/{org}/executors/{id}/labels");
    let tags = format!("/v1/orgs/{org}/agents/{id}/tags");

    let r = put(labels.clone(), json!({ "labels": [" a ", "a", "b", "  "] })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({ "ok": true, "executor": { "id": id, "labels": ["a", "b"] } })
    );
    assert_eq!(
        find(&list(&app, &owner, org, "agents").await, &id)["labels"],
        json!(["a", "b"])
    );

    let r = put(tags.clone(), json!({ "tags": ["x"] })).await;
    assert_eq!(r.body["executor"]["labels"], json!(["x"]));
    // Not an array: no tags.
    let r = put(tags.clone(), json!({ "tags": "x" })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["executor"]["labels"], json!([]));

    for bad in [
        json!({}),
        json!({ "labels": "a" }),
        json!({ "labels": [""] }),
        json!({ "labels": ["y".repeat(65)] }),
        json!({ "labels": (0..51).map(|i| format!("l{i}")).collect::<Vec<_>>() }),
    ] {
        let r = put(labels.clone(), bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body["message"], "Invalid labels payload");
    }
    let r = put(
        format!("/v1/orgs/{org}/executors/{}/labels", Uuid::new_v4()),
        json!({ "labels": [] }),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "AGENT_NOT_FOUND");
}

/// Presence is the gateway's route record: while it exists the executor lists `online`. Revocation
/// drops the record and announces itself so the instance holding the socket closes it.
#[tokio::test]
async fn revocation_drops_presence_and_is_announced() {
    let app = spawn().await;
    let owner = app.signup("agents-presence").await;
    let org = owner.personal_org;
    let token = new_token(&app, &owner, org).await;
    let id: Uuid = pair(&app, &token, None).await.body["executorId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let redis = &app.state.redis;
    let route = redis.key(&format!("executor:route:{id}"));
    let _: () = fred::interfaces::KeysInterface::set(
        &redis.client,
        &route,
        "{}",
        Some(fred::types::Expiration::EX(60)),
        None,
        false,
    )
    .await
    .unwrap();
    let listed = list(&app, &owner, org, "agents").await;
    assert_eq!(find(&listed, &id.to_string())["status"], "online");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    redis.listen(
        "executors:revoked",
        move |m| {
            let _ = tx.send(m.to_string());
        },
        || {},
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = revoke(&app, &owner, org, "agents", &id.to_string()).await;
    assert_eq!(r.status, 200);
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("revocation announced")
        .unwrap();
    let msg: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(msg, json!({ "executorId": id, "organizationId": org }));
    let exists: i64 = fred::interfaces::KeysInterface::exists(&redis.client, &route)
        .await
        .unwrap();
    assert_eq!(exists, 0, "route record dropped");
    let listed = list(&app, &owner, org, "agents").await;
    assert_eq!(find(&listed, &id.to_string())["status"], "revoked");
}

/// Parallel bad pairings cannot all slip past a check made while the count was low: each is counted
/// before its token is looked up.
#[tokio::test]
async fn parallel_bad_pairings_are_counted_before_they_are_checked() {
    let app = spawn_with(Options::default().env("EXECUTOR_PAIR_MAX_FAILURES", "3")).await;
    let owner = app.signup("agents-burst").await;
    let bad = format!("{}.guess", owner.personal_org);
    let answers = futures_util::future::join_all((0..20).map(|_| pair(&app, &bad, None))).await;
    let tried = answers.iter().filter(|r| r.status == 401).count();
    let throttled = answers.iter().filter(|r| r.status == 429).count();
    assert_eq!((tried, throttled), (3, 17));
    // A valid pairing from the same client is refused while it is over the limit; the count holds.
    let token = new_token(&app, &owner, owner.personal_org).await;
    assert_eq!(pair(&app, &token, None).await.status, 429);
    let key = app.state.redis.key("rl:pair:127.0.0.1");
    let n: i64 = fred::interfaces::KeysInterface::get(&app.state.redis.client, key)
        .await
        .unwrap();
    assert_eq!(n, 3, "refused attempts are not counted");
}
