//! Agent sessions (gateway spec §4.1, §4.2): the REST routes (shapes, validation, paging, 404s, members
//! only, tenant isolation), the event log's internal operations, and the control-client socket
//! `/ws/client` over a real WebSocket: refusals before the upgrade, replay from the end or a cursor,
//! sends (deduplicated by idempotency key), errors, deltas, gap filling, and two gateway instances whose
//! clients each see every event once, in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;
use vespid::app::state::AppState;
use vespid::domain::common::ids::{AgentSessionId, OrgId};
use vespid::domain::sessions::model::{Level, NewEvent};
use vespid::domain::sessions::TurnScheduler;

use crate::common::{spawn_with, Options, TestApp, User};
use crate::gateway::Ws;

fn opts() -> Options {
    let kek = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    // The socket and the log are under test here, not the brain (tests/it/brain.rs): nobody answers.
    Options::default()
        .env("SECRETS_KEK_ID", "test-kek-v1")
        .env("SECRETS_KEK_BASE64", &kek)
        .env("BRAIN_SWEEP_INTERVAL_MS", "3600000")
}

/// The api and a gateway on its own port; the control-client URL.
struct Env {
    app: TestApp,
    ws: String,
}

fn serve_gateway(state: &AppState) -> String {
    state
        .session_clients
        .set_scheduler(std::sync::Arc::new(vespid::domain::sessions::NoTurns));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws/client", listener.local_addr().unwrap());
    let server = vespid::roles::gateway::server(state, listener).unwrap();
    tokio::spawn(server);
    url
}

async fn env() -> Env {
    let app = spawn_with(opts()).await;
    let ws = serve_gateway(&app.state);
    Env { app, ws }
}

fn body() -> Value {
    json!({
        "title": "Debug the build",
        "llm": { "provider": "anthropic", "model": "claude-sonnet-4" },
        "prompt": { "system": "You are careful.", "instructions": "Help with the build." },
        "tools": { "allow": ["shell.run"] },
    })
}

/// Creates a session in `org` as `user`; the session object.
pub(crate) async fn create_session(app: &TestApp, user: &User, org: Uuid) -> Value {
    let r = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .by(user)
        .org(org)
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["session"].clone()
}

fn sid(session: &Value) -> AgentSessionId {
    AgentSessionId::from(session["id"].as_str().unwrap().parse::<Uuid>().unwrap())
}

async fn append_n(state: &AppState, org: Uuid, session: AgentSessionId, n: usize) {
    for i in 0..n {
        state
            .sessions
            .append(
                OrgId::from(org),
                session,
                NewEvent::info("agent_message", json!({ "message": format!("m{i}") })),
            )
            .await
            .unwrap();
    }
}

async fn connect(url: &str, token: Option<&str>, org: Option<&str>) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    if let Some(o) = org {
        req.headers_mut()
            .insert("x-org-id", HeaderValue::from_str(o).unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn client(e: &Env, user: &User, org: Uuid) -> Ws {
    connect(&e.ws, Some(&user.token), Some(&org.to_string()))
        .await
        .unwrap()
}

fn refused(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text frame, within 5 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// No text frame for `ms`.
async fn quiet(ws: &mut Ws, ms: u64) {
    if let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(ms), ws.next()).await
    {
        panic!("unexpected frame {t}");
    }
}

/// The seqs of the next `n` event frames (asserting they are events of `session`).
async fn seqs(ws: &mut Ws, session: AgentSessionId, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let f = next(ws).await;
        assert_eq!(f["type"], "session_event_v2", "{f}");
        assert_eq!(f["sessionId"], session.to_string(), "{f}");
        out.push(f["seq"].as_i64().unwrap());
    }
    out
}

fn join(session: AgentSessionId) -> Value {
    json!({ "type": "session_join", "sessionId": session })
}

#[tokio::test]
async fn create_get_and_events_have_the_spec_shapes() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("sess-owner").await;
    let org = app.create_org(&owner).await;
    let s = create_session(app, &owner, org).await;
    assert_eq!(s["organizationId"], org.to_string());
    assert_eq!(s["createdByUserId"], owner.id.to_string());
    assert_eq!(s["title"], "Debug the build");
    assert_eq!(s["status"], "active");
    assert_eq!(s["pinnedAgentId"], Value::Null);
    // No selector: no pool (the org's own connected executors first, then the managed pool).
    assert_eq!(s["executorSelector"], json!({}));
    assert_eq!(s["selectorTag"], Value::Null);
    assert_eq!(s["engineId"], "gateway.loop.v2");
    assert_eq!(s["toolsetId"], Value::Null);
    assert_eq!(s["llmProvider"], "anthropic");
    assert_eq!(s["llmModel"], "claude-sonnet-4");
    assert_eq!(s["llmSecretId"], Value::Null);
    assert_eq!(s["toolCalling"], "native");
    assert_eq!(s["toolsAllow"], json!(["shell.run"]));
    assert_eq!(
        s["limits"],
        json!({ "maxTurns": 8, "maxToolCalls": 20, "timeoutMs": 60000, "maxOutputChars": 50000, "maxRuntimeChars": 200000 })
    );
    assert_eq!(s["promptSystem"], "You are careful.");
    assert_eq!(s["promptInstructions"], "Help with the build.");
    assert_eq!(
        s["usage"],
        json!({ "calls": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": 0.0 })
    );
    for hidden in ["runtime", "workspaceId", "answeredSeq", "lastSeq"] {
        assert!(s.get(hidden).is_none(), "{hidden} shown");
    }
    let id = s["id"].as_str().unwrap();
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["session"], s);
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{id}/events"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["nextCursor"], Value::Null);
    let ev = &r.body["events"][0];
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(ev["seq"], 0);
    assert_eq!(ev["eventType"], "session_created");
    assert_eq!(ev["level"], "info");
    assert_eq!(ev["sessionId"], id);
    assert_eq!(ev["organizationId"], org.to_string());
    assert_eq!(
        ev["payload"],
        json!({ "engineId": "gateway.loop.v2", "llm": { "provider": "anthropic", "model": "claude-sonnet-4" } })
    );
    // Not found: not a UUID (both routes), unknown (get), and an unknown session's events are empty.
    for path in ["nope", "nope/events"] {
        let r = app
            .get(&format!("/v1/orgs/{org}/sessions/{path}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            (r.code(), r.body["message"].as_str()),
            ("NOT_FOUND", Some("Session not found"))
        );
    }
    let unknown = Uuid::new_v4();
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{unknown}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{unknown}/events"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["events"], json!([]));
    // Audited in the creation's transaction.
    let r = app
        .get(&format!("/v1/orgs/{org}/audit?action=session.create"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let entries = r.body["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|x| x["action"] == "session.create" && x["targetId"] == id),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn bodies_are_validated_and_secrets_and_toolsets_checked() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("sess-val").await;
    let org = app.create_org(&owner).await;
    let other = app.signup("sess-val-other").await;
    let other_org = app.create_org(&other).await;
    let post = |b: Value| {
        app.post(&format!("/v1/orgs/{org}/sessions"))
            .by(&owner)
            .org(org)
            .json(b)
    };
    let with = |path: &[&str], v: Value| {
        let mut b = body();
        let mut cur = &mut b;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*k] = v.clone();
            } else {
                cur = &mut cur[*k];
            }
        }
        b
    };
    let without = |k: &str| {
        let mut b = body();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let bad = [
        without("llm"),
        without("prompt"),
        without("tools"),
        with(&["engineId"], json!("gateway.nope.v2")),
        with(&["llm", "provider"], json!("mistral")),
        with(&["llm", "model"], json!("")),
        with(&["llm", "toolCalling"], json!("xml")),
        with(&["prompt", "instructions"], json!("")),
        with(&["title"], json!("x".repeat(201))),
        with(&["tools", "allow"], json!([""])),
        with(&["toolsetId"], json!("not-a-uuid")),
        with(&["executorSelector"], json!({ "pool": "cloud" })),
        with(&["limits"], json!({ "maxTurns": 65 })),
        with(&["limits"], json!({ "timeoutMs": 100 })),
        with(&["limits"], json!({ "whatever": 1 })),
        with(&["llm", "auth"], json!({ "secretId": "nope" })),
        json!([]),
    ];
    for b in bad {
        let r = post(b.clone()).send().await;
        assert_eq!(r.status, 400, "{b}: {:?}", r.body);
        assert_eq!(r.code(), "BAD_REQUEST", "{b}");
        assert_eq!(r.body["message"], "Invalid session payload", "{b}");
    }
    // Limits are stored complete; a selector with its tag and group copied.
    let r = post(with(
        &["limits"],
        json!({ "maxTurns": 2, "maxToolCalls": 0 }),
    ))
    .send()
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["session"]["limits"]["maxTurns"], 2);
    assert_eq!(r.body["session"]["limits"]["timeoutMs"], 60000);
    let r = post(with(
        &["executorSelector"],
        json!({ "pool": "byon", "tag": "gpu", "group": "lab", "labels": ["a"] }),
    ))
    .send()
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["session"]["selectorTag"], "gpu");
    assert_eq!(r.body["session"]["selectorGroup"], "lab");
    assert_eq!(r.body["session"]["executorSelector"]["pool"], "byon");
    let r = post(with(&["executorSelector"], json!({ "tag": "gpu" })))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["session"]["executorSelector"],
        json!({ "tag": "gpu" })
    );
    // No toolsets exist: any toolset id names none of the org's.
    let r = post(with(&["toolsetId"], json!(Uuid::new_v4())))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "TOOLSET_NOT_FOUND"));
    // A provider key: the org's own secret only.
    let mk_secret = |user: &User, o: Uuid| {
        let user = user.clone();
        async move {
            let r = app
                .post(&format!("/v1/orgs/{o}/secrets"))
                .by(&user)
                .org(o)
                .json(json!({ "connectorId": "github", "name": "llm-key", "value": "sk-test-123" }))
                .send()
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body["secret"]["id"].as_str().unwrap().to_string()
        }
    };
    let theirs = mk_secret(&other, other_org).await;
    let r = post(with(&["llm", "auth"], json!({ "secretId": theirs })))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "SECRET_NOT_FOUND"));
    let ours = mk_secret(&owner, org).await;
    let mut b = with(&["llm", "auth"], json!({ "secretId": ours }));
    b["llm"]["toolCalling"] = json!("json");
    let r = post(b).send().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["session"]["llmSecretId"], ours);
    assert_eq!(r.body["session"]["toolCalling"], "json");
    assert!(!r.body.to_string().contains("sk-test-123"));
}

#[tokio::test]
async fn lists_and_events_page_without_repeats() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("sess-page").await;
    let org = app.create_org(&owner).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create_session(app, &owner, org).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let r = app
            .get(&format!("/v1/orgs/{org}/sessions?limit=2{q}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        seen.extend(
            r.body["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].clone()),
        );
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    // A bad cursor is the first page; limits are clamped.
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions?cursor=%%%&limit=999"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["sessions"].as_array().unwrap().len(), 5);
    // An append moves a session to the front.
    let first = sid(&json!({ "id": ids[4] }));
    append_n(&app.state, org, first, 7).await;
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions?limit=1"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["sessions"][0]["id"], ids[4]);
    // Events: 8 (created + 7) in pages of 3.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let r = app
            .get(&format!(
                "/v1/orgs/{org}/sessions/{first}/events?limit=3{q}"
            ))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        seqs.extend(
            r.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap()),
        );
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seqs, (0..8).collect::<Vec<i64>>());
}

#[tokio::test]
async fn members_only_and_other_orgs_sessions_are_invisible() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("sess-m-owner").await;
    let member = app.signup("sess-m-member").await;
    let outsider = app.signup("sess-m-out").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let s = create_session(app, &member, org).await;
    let id = s["id"].as_str().unwrap();
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "any member reads any session of the org");
    for path in [
        format!("/v1/orgs/{org}/sessions"),
        format!("/v1/orgs/{org}/sessions/{id}"),
        format!("/v1/orgs/{org}/sessions/{id}/events"),
    ] {
        let r = app.get(&path).by(&outsider).org(org).send().await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "ORG_ACCESS_DENIED"),
            "{path}"
        );
    }
    let r = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .by(&outsider)
        .org(org)
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 403);
    // The outsider's own org does not see it.
    let theirs = outsider.personal_org;
    let r = app
        .get(&format!("/v1/orgs/{theirs}/sessions/{id}"))
        .by(&outsider)
        .org(theirs)
        .send()
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .get(&format!("/v1/orgs/{theirs}/sessions/{id}/events"))
        .by(&outsider)
        .org(theirs)
        .send()
        .await;
    assert_eq!(r.body["events"], json!([]));
    let r = app
        .get(&format!("/v1/orgs/{theirs}/sessions"))
        .by(&outsider)
        .org(theirs)
        .send()
        .await;
    assert_eq!(r.body["sessions"], json!([]));
    // API keys: `sessions:read` reads, `sessions:write` also creates.
    let key = |scopes: Value| {
        let owner = owner.clone();
        async move {
            let r = app
                .post(&format!("/v1/orgs/{org}/api-keys"))
                .by(&owner)
                .org(org)
                .json(json!({ "name": "k", "scopes": scopes }))
                .send()
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body["key"].as_str().unwrap().to_string()
        }
    };
    let read = key(json!(["sessions:read"])).await;
    let write = key(json!(["sessions:write"])).await;
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{id}"))
        .bearer(&read)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .bearer(&read)
        .json(body())
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (403, "API_KEY_SCOPE_MISSING")
    );
    let r = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .bearer(&write)
        .json(body())
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[tokio::test]
async fn the_socket_refuses_before_the_upgrade() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("ws-auth").await;
    let outsider = app.signup("ws-out").await;
    let org = app.create_org(&owner).await;
    let o = org.to_string();
    assert_eq!(refused(connect(&e.ws, None, Some(&o)).await), 401);
    assert_eq!(
        refused(connect(&e.ws, Some("garbage"), Some(&o)).await),
        401
    );
    assert_eq!(
        refused(connect(&e.ws, Some("vsk_nope"), Some(&o)).await),
        401
    );
    assert_eq!(
        refused(connect(&e.ws, Some(&outsider.token), Some(&o)).await),
        403
    );
    assert_eq!(
        refused(connect(&e.ws, Some(&owner.token), Some("not-a-uuid")).await),
        403
    );
    assert_eq!(refused(connect(&e.ws, Some(&owner.token), None).await), 403);
    // Browsers: token and org in the query.
    let url = format!("{}?orgId={o}&access_token={}", e.ws, owner.token);
    let mut ws = connect(&url, None, None).await.unwrap();
    send(&mut ws, join(AgentSessionId::random())).await;
    assert_eq!(next(&mut ws).await["code"], "SESSION_NOT_FOUND");
    // An API key needs a sessions scope and its own org.
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({ "name": "k", "scopes": ["runs:read"] }))
        .send()
        .await;
    let runs_key = r.body["key"].as_str().unwrap().to_string();
    assert_eq!(
        refused(connect(&e.ws, Some(&runs_key), Some(&o)).await),
        403
    );
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({ "name": "k", "scopes": ["sessions:read"] }))
        .send()
        .await;
    let read_key = r.body["key"].as_str().unwrap().to_string();
    let mut ws = connect(&e.ws, Some(&read_key), Some(&o)).await.unwrap();
    let s = sid(&create_session(app, &owner, org).await);
    send(
        &mut ws,
        json!({ "type": "session_send", "sessionId": s, "message": "hi" }),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "FORBIDDEN");
    let theirs = outsider.personal_org.to_string();
    assert_eq!(
        refused(connect(&e.ws, Some(&read_key), Some(&theirs)).await),
        403
    );
}

#[tokio::test]
async fn join_replays_the_last_200_or_from_a_cursor_then_goes_live() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("ws-join").await;
    let org = app.create_org(&owner).await;
    let s = sid(&create_session(app, &owner, org).await);
    append_n(&app.state, org, s, 250).await;
    let mut ws = client(&e, &owner, org).await;
    send(&mut ws, join(s)).await;
    let got = seqs(&mut ws, s, 200).await;
    assert_eq!(got, (51..=250).collect::<Vec<i64>>());
    quiet(&mut ws, 200).await;
    // Live after the replay.
    append_n(&app.state, org, s, 1).await;
    assert_eq!(seqs(&mut ws, s, 1).await, vec![251]);
    // A cursor (the last seq seen) replays only what is newer, across pages.
    let mut ws2 = client(&e, &owner, org).await;
    send(
        &mut ws2,
        json!({ "type": "session_join", "sessionId": s, "cursor": 245 }),
    )
    .await;
    assert_eq!(
        seqs(&mut ws2, s, 6).await,
        (246..=251).collect::<Vec<i64>>()
    );
    quiet(&mut ws2, 200).await;
    let mut ws3 = client(&e, &owner, org).await;
    send(
        &mut ws3,
        json!({ "type": "session_join", "sessionId": s, "cursor": -1 }),
    )
    .await;
    let all = seqs(&mut ws3, s, 252).await;
    assert_eq!(all, (0..=251).collect::<Vec<i64>>());
    // The REST events cursor works too.
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{s}/events?limit=249"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    let cursor = r.body["nextCursor"].as_str().unwrap().to_string();
    let mut ws4 = client(&e, &owner, org).await;
    send(
        &mut ws4,
        json!({ "type": "session_join", "sessionId": s, "cursor": cursor }),
    )
    .await;
    assert_eq!(seqs(&mut ws4, s, 3).await, vec![249, 250, 251]);
    quiet(&mut ws4, 200).await;
    // A replay longer than a page goes out page by page, with live events in order between them.
    append_n(&app.state, org, s, 300).await;
    let mut ws5 = client(&e, &owner, org).await;
    send(
        &mut ws5,
        json!({ "type": "session_join", "sessionId": s, "cursor": -1 }),
    )
    .await;
    append_n(&app.state, org, s, 3).await;
    let all = seqs(&mut ws5, s, 555).await;
    assert_eq!(all, (0..=554).collect::<Vec<i64>>());
    quiet(&mut ws5, 200).await;
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(OrgId, AgentSessionId)>>);

impl TurnScheduler for Recorder {
    fn wake(&self, org: OrgId, session: AgentSessionId) {
        self.0.lock().unwrap().push((org, session));
    }
}

#[tokio::test]
async fn send_appends_once_wakes_the_brain_and_dedupes_by_key() {
    let e = env().await;
    let app = &e.app;
    let recorder = Arc::new(Recorder::default());
    app.state.session_clients.set_scheduler(recorder.clone());
    let owner = app.signup("ws-send").await;
    let member = app.signup("ws-send-m").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let s = sid(&create_session(app, &owner, org).await);
    let mut watcher = client(&e, &owner, org).await;
    send(&mut watcher, join(s)).await;
    assert_eq!(seqs(&mut watcher, s, 1).await, vec![0]);
    // The sender is joined too: it sees its own message once, like everyone else.
    let mut sender = client(&e, &member, org).await;
    send(&mut sender, join(s)).await;
    assert_eq!(seqs(&mut sender, s, 1).await, vec![0]);
    let msg = json!({ "type": "session_send", "sessionId": s, "message": "hello", "idempotencyKey": "k-1" });
    send(&mut sender, msg.clone()).await;
    for ws in [&mut watcher, &mut sender] {
        let f = next(ws).await;
        assert_eq!(f["type"], "session_event_v2");
        assert_eq!(f["seq"], 1);
        assert_eq!(f["eventType"], "user_message");
        assert_eq!(f["level"], "info");
        assert_eq!(f["payload"], json!({ "message": "hello" }));
        assert!(f["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    // The same key again: nothing new.
    send(&mut sender, msg).await;
    quiet(&mut watcher, 300).await;
    quiet(&mut sender, 100).await;
    let r = app
        .get(&format!("/v1/orgs/{org}/sessions/{s}/events"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    let types: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["session_created", "user_message"]);
    // Joining is not required to send; another key appends.
    let mut loose = client(&e, &owner, org).await;
    send(&mut loose, json!({ "type": "session_send", "sessionId": s, "message": "again", "idempotencyKey": "k-2" })).await;
    assert_eq!(seqs(&mut watcher, s, 1).await, vec![2]);
    quiet(&mut loose, 200).await;
    let woken = recorder.0.lock().unwrap().clone();
    assert!(woken.len() >= 2);
    assert!(woken.iter().all(|w| *w == (OrgId::from(org), s)));
    // The brain's view: the first unanswered message, then the next after answering.
    let st = &app.state.sessions;
    let o = OrgId::from(org);
    assert_eq!(st.next_pending(o, s).await.unwrap().unwrap().seq, 1);
    assert_eq!(st.pending_sessions().await.unwrap(), vec![(o, s)]);
    st.mark_answered(o, s, 1).await.unwrap();
    assert_eq!(st.next_pending(o, s).await.unwrap().unwrap().seq, 2);
    st.mark_answered(o, s, 2).await.unwrap();
    assert!(st.next_pending(o, s).await.unwrap().is_none());
    assert!(st.pending_sessions().await.unwrap().is_empty());
    // The index behind `pending_sessions` is the definer function's alone.
    let db = app.app_db().await;
    let err = db
        .query("SELECT * FROM agent_session_pending", &[])
        .await
        .expect_err("the app role cannot read the index");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let t = st.transcript(o, s, 3, 2).await.unwrap();
    assert_eq!(t.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
}

#[tokio::test]
async fn bad_frames_and_unknown_sessions_get_session_errors() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("ws-err").await;
    let other = app.signup("ws-err-o").await;
    let org = app.create_org(&owner).await;
    let theirs = sid(&create_session(app, &other, other.personal_org).await);
    let mut ws = client(&e, &owner, org).await;
    let join_bad = [
        json!({ "type": "session_join" }),
        json!({ "type": "session_join", "sessionId": "nope" }),
        json!({ "type": "session_join", "sessionId": Uuid::new_v4(), "cursor": {} }),
    ];
    for f in join_bad {
        send(&mut ws, f.clone()).await;
        let r = next(&mut ws).await;
        assert_eq!(
            r,
            json!({ "type": "session_error", "code": "BAD_REQUEST", "message": "Invalid session_join payload" }),
            "{f}"
        );
    }
    let s = Uuid::new_v4();
    let send_bad = [
        json!({ "type": "session_send", "sessionId": s }),
        json!({ "type": "session_send", "sessionId": s, "message": "" }),
        json!({ "type": "session_send", "sessionId": s, "message": "x".repeat(50_001) }),
        json!({ "type": "session_send", "sessionId": s, "message": 5 }),
        json!({ "type": "session_send", "sessionId": "x", "message": "hi" }),
        json!({ "type": "session_send", "sessionId": s, "message": "hi", "idempotencyKey": "" }),
    ];
    for f in send_bad {
        send(&mut ws, f.clone()).await;
        let r = next(&mut ws).await;
        assert_eq!(
            r,
            json!({ "type": "session_error", "code": "BAD_REQUEST", "message": "Invalid session_send payload" }),
        );
    }
    // Unknown sessions, and another org's, are not found; other frame types are ignored.
    for id in [AgentSessionId::from(s), theirs] {
        send(&mut ws, join(id)).await;
        let expected = json!({ "type": "session_error", "sessionId": id, "code": "SESSION_NOT_FOUND", "message": "Session not found" });
        assert_eq!(next(&mut ws).await, expected);
        send(
            &mut ws,
            json!({ "type": "session_send", "sessionId": id, "message": "hi" }),
        )
        .await;
        assert_eq!(next(&mut ws).await, expected);
    }
    send(&mut ws, json!({ "type": "client_hello" })).await;
    ws.send(Message::text("not json")).await.unwrap();
    quiet(&mut ws, 200).await;
    // The other org's session got nothing.
    let n = app
        .state
        .sessions
        .transcript(OrgId::from(other.personal_org), theirs, i32::MAX, 10)
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn gaps_are_filled_from_the_database_and_deltas_pass_through() {
    let e = env().await;
    let app = &e.app;
    let owner = app.signup("ws-gap").await;
    let org = app.create_org(&owner).await;
    let o = OrgId::from(org);
    let s = sid(&create_session(app, &owner, org).await);
    let mut ws = client(&e, &owner, org).await;
    send(&mut ws, join(s)).await;
    assert_eq!(seqs(&mut ws, s, 1).await, vec![0]);
    let st = &app.state.sessions;
    // Two events whose publications are lost, then one published: all three, in order, once.
    for _ in 0..2 {
        st.append_unpublished(o, s, NewEvent::info("agent_tool_call", json!({})))
            .await
            .unwrap();
    }
    quiet(&mut ws, 200).await;
    st.append(
        o,
        s,
        NewEvent {
            event_type: "error".into(),
            level: Level::Error,
            payload: json!({ "code": "LLM_TIMEOUT" }),
        },
    )
    .await
    .unwrap();
    assert_eq!(seqs(&mut ws, s, 3).await, vec![1, 2, 3]);
    quiet(&mut ws, 200).await;
    // Deltas of the joined session only.
    st.publish_delta(o, s, 3, 0, "Hel").await;
    let other = sid(&create_session(app, &owner, org).await);
    st.publish_delta(o, other, 1, 0, "no").await;
    st.publish_delta(o, s, 3, 1, "lo").await;
    assert_eq!(
        next(&mut ws).await,
        json!({ "type": "session_delta_v2", "sessionId": s, "turnSeq": 3, "index": 0, "delta": "Hel" })
    );
    assert_eq!(next(&mut ws).await["delta"], "lo");
    // Switching sessions: only the new one's events.
    send(&mut ws, join(other)).await;
    assert_eq!(seqs(&mut ws, other, 1).await, vec![0]);
    append_n(&app.state, org, s, 1).await;
    append_n(&app.state, org, other, 1).await;
    assert_eq!(seqs(&mut ws, other, 1).await, vec![1]);
    quiet(&mut ws, 200).await;
}

#[tokio::test]
async fn clients_on_two_gateway_instances_see_every_event_once_in_order() {
    let e = env().await;
    let app = &e.app;
    let second = AppState::build(app.config.clone(), None)
        .await
        .expect("second instance");
    let ws2_url = serve_gateway(&second);
    let owner = app.signup("ws-two").await;
    let org = app.create_org(&owner).await;
    let o = OrgId::from(org);
    let s = sid(&create_session(app, &owner, org).await);
    let mut a = client(&e, &owner, org).await;
    let mut b = connect(&ws2_url, Some(&owner.token), Some(&org.to_string()))
        .await
        .unwrap();
    send(&mut a, join(s)).await;
    send(&mut b, join(s)).await;
    assert_eq!(seqs(&mut a, s, 1).await, vec![0]);
    assert_eq!(seqs(&mut b, s, 1).await, vec![0]);
    // Both instances append concurrently (as two brains and two sockets would), some publications lost.
    let (s1, s2) = (app.state.sessions.clone(), second.sessions.clone());
    let w1 = tokio::spawn(async move {
        for i in 0..40 {
            let ev = NewEvent::info("agent_message", json!({ "i": i }));
            if i % 7 == 3 {
                s1.append_unpublished(o, s, ev).await.unwrap();
            } else {
                s1.append(o, s, ev).await.unwrap();
            }
        }
    });
    let w2 = tokio::spawn(async move {
        for i in 0..40 {
            s2.append(o, s, NewEvent::info("agent_message", json!({ "j": i })))
                .await
                .unwrap();
        }
    });
    w1.await.unwrap();
    w2.await.unwrap();
    // The last event is published (writer 2 publishes everything), so every gap closes.
    let want: Vec<i64> = (1..=80).collect();
    assert_eq!(seqs(&mut a, s, 80).await, want);
    assert_eq!(seqs(&mut b, s, 80).await, want);
    quiet(&mut a, 300).await;
    quiet(&mut b, 100).await;
    // A message sent through instance B reaches the client on A.
    send(
        &mut b,
        json!({ "type": "session_send", "sessionId": s, "message": "from b" }),
    )
    .await;
    let f = next(&mut a).await;
    assert_eq!(
        (f["seq"].as_i64(), f["eventType"].as_str()),
        (Some(81), Some("user_message"))
    );
    assert_eq!(seqs(&mut b, s, 1).await, vec![81]);
}

#[tokio::test]
async fn a_revoked_api_key_is_closed_at_the_next_check() {
    let app = spawn_with(opts().env("SESSIONS_CLIENT_RECHECK_MS", "200")).await;
    let e = Env {
        ws: serve_gateway(&app.state),
        app,
    };
    let app = &e.app;
    let owner = app.signup("ws-revoke").await;
    let org = app.create_org(&owner).await;
    let r = app
        .post(&format!("/v1/orgs/{org}/api-keys"))
        .by(&owner)
        .org(org)
        .json(json!({ "name": "k", "scopes": ["sessions:write"] }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (key, key_id) = (
        r.body["key"].as_str().unwrap().to_string(),
        r.body["apiKey"]["id"].as_str().unwrap().to_string(),
    );
    let s = sid(&create_session(app, &owner, org).await);
    let mut ws = connect(&e.ws, Some(&key), Some(&org.to_string()))
        .await
        .unwrap();
    send(&mut ws, join(s)).await;
    assert_eq!(seqs(&mut ws, s, 1).await, vec![0]);
    // Checks pass while the key holds (the socket stays, sends work).
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(
        &mut ws,
        json!({ "type": "session_send", "sessionId": s, "message": "hi" }),
    )
    .await;
    assert_eq!(seqs(&mut ws, s, 1).await, vec![1]);
    let r = app
        .delete(&format!("/v1/orgs/{org}/api-keys/{key_id}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(closed, Some(1008), "policy violation");
    // And the key no longer opens one.
    assert_eq!(
        refused(connect(&e.ws, Some(&key), Some(&org.to_string())).await),
        401
    );
}
