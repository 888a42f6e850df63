//! The brain end to end (gateway spec 4.2-4.3, 5; workflows spec 5.6): session turns answered by a fake
//! provider speaking the real protocols, tool calls run by a real `vespid agent` (Docker sandbox where
//! the machine has Docker), control clients over `/ws/client` on one or two gateway instances,
//! `agent.run` nodes, usage and budget, and provider credentials that never leave the brain.

use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::fake_llm::{FakeLlm, Protocol, Reply};
use crate::common::{spawn_with, Options, TestApp, User};
use crate::gateway::{AgentProc, Ws};

/// A TestApp (api) and a gateway listener of its own (executor and control-client sockets).
struct Stack {
    app: TestApp,
    gateway: String,
}

fn opts(fake: &FakeLlm) -> Options {
    Options::default()
        .env("SECRETS_KEK_ID", "brain-kek")
        .env(
            "SECRETS_KEK_BASE64",
            &base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
        )
        .env("INFERENCE_OPENAI_BASE_URL", &fake.base)
        .env("INFERENCE_ANTHROPIC_BASE_URL", &fake.base)
        .env("INFERENCE_GEMINI_BASE_URL", &fake.base)
        .env("INFERENCE_MAX_ATTEMPTS", "2")
        .env("BRAIN_SWEEP_INTERVAL_MS", "200")
        .env("WORKFLOW_RETRY_ATTEMPTS", "1")
        .env("WORKFLOW_CONTINUATION_POLL_MS", "100")
}

async fn stack(opts: Options) -> Stack {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = format!("ws://{}", listener.local_addr().unwrap());
    let app = spawn_with(opts.env("GATEWAY_WS_URL", &format!("{gateway}/ws/executor"))).await;
    let server = vespid::roles::gateway::server(&app.state, listener).unwrap();
    tokio::spawn(server);
    Stack { app, gateway }
}

/// A second gateway instance over the same database and Redis as `first` (its own AppState).
async fn second_instance(first: &Stack, opts: Options) -> String {
    let mut config = first.app.config.clone();
    config.gateway.edge_id = String::new();
    let _ = opts;
    let state = vespid::app::state::AppState::build(config, None)
        .await
        .expect("second state");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = vespid::roles::gateway::server(&state, listener).unwrap();
    tokio::spawn(server);
    url
}

async fn enable_shell(app: &TestApp, owner: &User, org: Uuid) {
    let r = app
        .put(&format!("/v1/orgs/{org}/settings"))
        .by(owner)
        .org(org)
        .json(json!({"tools": {"shellRunEnabled": true}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn llm_secret(
    app: &TestApp,
    owner: &User,
    org: Uuid,
    connector: &str,
    value: &str,
) -> String {
    let r = app
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(owner)
        .org(org)
        .json(json!({"connectorId": connector, "name": format!("key-{}", Uuid::new_v4().simple()), "value": value}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["secret"]["id"].as_str().unwrap().to_string()
}

async fn create_session(app: &TestApp, owner: &User, org: Uuid, body: Value) -> String {
    let r = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .by(owner)
        .org(org)
        .json(body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["session"]["id"].as_str().unwrap().to_string()
}

async fn client(gateway: &str, owner: &User, org: Uuid) -> Ws {
    let mut req = format!("{gateway}/ws/client?orgId={org}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", owner.token).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("client socket");
    ws
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Frames until an `agent_message` or `error` event ends a turn (or `within` passes): (events, deltas).
async fn until_turn_ends(ws: &mut Ws, within: Duration) -> (Vec<Value>, Vec<Value>) {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    let mut deltas = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, ws.next()).await;
        let Ok(Some(Ok(msg))) = next else {
            panic!("turn did not end in time; events so far: {events:?}");
        };
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            Some("session_delta_v2") => deltas.push(frame),
            Some("session_event_v2") => {
                let end = matches!(frame["eventType"].as_str(), Some("agent_message" | "error"));
                events.push(frame);
                if end {
                    return (events, deltas);
                }
            }
            _ => {}
        }
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn session_events(app: &TestApp, owner: &User, org: Uuid, session: &str) -> Vec<Value> {
    let r = app
        .get(&format!(
            "/v1/orgs/{org}/sessions/{session}/events?limit=500"
        ))
        .by(owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

/// A worker and a continuation for `state`, stopped when the sender drops.
fn start_roles(state: &vespid::app::state::AppState) -> tokio::sync::watch::Sender<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    vespid::domain::runs::worker::spawn(state.worker_parts(), rx.clone()).expect("worker");
    std::sync::Arc::new(vespid::domain::runs::continuation::Continuation::new(
        state.continuation_parts(),
    ))
    .spawn(rx);
    tx
}

fn docker_available() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A real `vespid agent connect` paired with `owner`'s org, online.
async fn real_agent(s: &Stack, owner: &User, dir: &std::path::Path, backend: &str) -> AgentProc {
    let org = owner.personal_org;
    let token = crate::agents::new_token(&s.app, owner, org).await;
    let config = dir.join("agent.json").to_string_lossy().to_string();
    let workdir = dir.join("work").to_string_lossy().to_string();
    let agent = AgentProc::spawn(&[
        "connect",
        "--pairing-token",
        &token,
        "--api-base",
        &s.app.addr,
        "--config-path",
        &config,
        "--exec-backend",
        backend,
        "--workdir-root",
        &workdir,
    ]);
    for _ in 0..200 {
        let r = s
            .app
            .get(&format!("/v1/orgs/{org}/agents"))
            .by(owner)
            .org(org)
            .send()
            .await;
        if r.body["executors"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["status"] == "online"))
        {
            return agent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent never came online");
}

fn session_body(provider: &str, allow: Value) -> Value {
    json!({"title": "t", "llm": {"provider": provider, "model": "m-1"},
           "prompt": {"system": "Be brief.", "instructions": "Help the user."},
           "tools": {"allow": allow}, "limits": {"timeoutMs": 60000}})
}

#[tokio::test]
async fn a_turn_with_two_tool_calls_runs_them_on_a_real_agent_and_streams_its_answer() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake).env("OPENAI_API_KEY", "sk-env-fallback")).await;
    let owner = s.app.signup("brain-turn").await;
    let org = owner.personal_org;
    enable_shell(&s.app, &owner, org).await;
    let dir = std::env::temp_dir().join(format!("vespid-brain-{}", Uuid::new_v4().simple()));
    let backend = if docker_available() { "docker" } else { "host" };
    let _agent = real_agent(&s, &owner, &dir, backend).await;
    let session = create_session(
        &s.app,
        &owner,
        org,
        session_body("openai", json!(["shell.run"])),
    )
    .await;
    fake.script([
        Reply::tool(
            "shell__run",
            json!({"script": "echo first-call > note.txt"}),
        ),
        Reply::tool("shell__run", json!({"script": "cat note.txt"})),
        Reply::text("The note says first-call."),
    ]);
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "write then read"}),
    )
    .await;
    let (events, deltas) = until_turn_ends(&mut ws, Duration::from_secs(90)).await;
    let kinds = types(&events);
    let from_user = kinds
        .iter()
        .position(|k| k == "user_message")
        .expect("user_message");
    assert_eq!(
        kinds[from_user..],
        [
            "user_message",
            "agent_turn_started",
            "agent_tool_call",
            "agent_tool_result",
            "agent_tool_call",
            "agent_tool_result",
            "agent_message"
        ],
        "{events:#?}"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs in order, no gaps: {seqs:?}"
    );
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventType"] == "agent_tool_result")
        .collect();
    assert_eq!(
        results[0]["payload"]["status"], "succeeded",
        "{:?}",
        results[0]
    );
    // The second call sees the file the first wrote: the session's workspace carried it over.
    assert_eq!(
        results[1]["payload"]["output"]["stdout"], "first-call\n",
        "{:?}",
        results[1]
    );
    let answer = events.last().unwrap();
    assert_eq!(answer["payload"]["message"], "The note says first-call.");
    // The answer streamed as deltas, in order, adding up to the message.
    let text: String = deltas
        .iter()
        .map(|d| d["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(text, "The note says first-call.");
    let idx: Vec<i64> = deltas
        .iter()
        .map(|d| d["index"].as_i64().unwrap())
        .collect();
    assert!(idx.windows(2).all(|w| w[1] > w[0]), "{idx:?}");
    // The model saw the tool results (the second request carries the first result).
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[2].body.to_string().contains("first-call"));
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some("Bearer sk-env-fallback")
    );
    // Usage: the session's totals equal what the provider reported.
    let totals = fake.totals();
    let r = s
        .app
        .get(&format!("/v1/orgs/{org}/sessions/{session}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    let usage = &r.body["session"]["usage"];
    assert_eq!(usage["calls"], 3, "{usage}");
    assert_eq!(usage["inputTokens"].as_u64(), Some(totals.input_tokens));
    assert_eq!(usage["outputTokens"].as_u64(), Some(totals.output_tokens));
    let r = s
        .app
        .get(&format!("/v1/orgs/{org}/usage"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["usage"]["totals"]["inputTokens"].as_u64(),
        Some(totals.input_tokens)
    );
    assert_eq!(
        r.body["usage"]["totals"]["outputTokens"].as_u64(),
        Some(totals.output_tokens)
    );
    assert_eq!(
        r.body["usage"]["bySession"][0]["sessionId"],
        session.as_str()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_provider_outage_fails_the_turn_clearly_and_the_next_turn_works_for_each_protocol() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake)).await;
    let owner = s.app.signup("brain-outage").await;
    let org = owner.personal_org;
    for (provider, connector, code) in [
        ("openai", "llm.openai", "OPENAI_REQUEST_FAILED:503"),
        ("anthropic", "llm.anthropic", "ANTHROPIC_REQUEST_FAILED:503"),
        ("gemini", "llm.gemini", "GEMINI_REQUEST_FAILED:503"),
    ] {
        let secret = llm_secret(&s.app, &owner, org, connector, "k-123").await;
        let mut body = session_body(provider, json!([]));
        body["llm"]["auth"] = json!({"secretId": secret});
        let session = create_session(&s.app, &owner, org, body).await;
        let mut ws = client(&s.gateway, &owner, org).await;
        send(
            &mut ws,
            json!({"type": "session_join", "sessionId": session}),
        )
        .await;
        fake.script([Reply::status(503), Reply::status(503)]);
        send(
            &mut ws,
            json!({"type": "session_send", "sessionId": session, "message": "hello?"}),
        )
        .await;
        let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
        let last = events.last().unwrap();
        assert_eq!(last["eventType"], "error", "{provider}: {events:?}");
        assert_eq!(last["level"], "error");
        assert_eq!(last["payload"]["code"], code);
        fake.script([Reply::text("back again")]);
        send(
            &mut ws,
            json!({"type": "session_send", "sessionId": session, "message": "now?"}),
        )
        .await;
        let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
        let last = events.last().unwrap();
        assert_eq!(last["eventType"], "agent_message", "{provider}: {events:?}");
        assert_eq!(last["payload"]["message"], "back again");
        // The second turn's model saw the earlier exchange.
        let req = fake.requests().last().unwrap().clone();
        assert!(
            req.body.to_string().contains("hello?"),
            "{provider}: {}",
            req.body
        );
    }
    // No credential at all: a clear code, not a crash; the session stays usable.
    let session = create_session(&s.app, &owner, org, session_body("openai", json!([]))).await;
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "x"}),
    )
    .await;
    let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(
        events.last().unwrap()["payload"]["code"],
        "LLM_AUTH_NOT_CONFIGURED"
    );
}

#[tokio::test]
async fn messages_sent_during_a_turn_are_queued_and_answered_in_order() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake).env("OPENAI_API_KEY", "sk-x")).await;
    let owner = s.app.signup("brain-queue").await;
    let org = owner.personal_org;
    let session = create_session(&s.app, &owner, org, session_body("openai", json!([]))).await;
    fake.script([
        Reply::slow(400, Reply::text("answer one")),
        Reply::text("answer two"),
        Reply::text("answer three"),
    ]);
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    for m in ["one", "two", "three"] {
        send(
            &mut ws,
            json!({"type": "session_send", "sessionId": session, "message": m}),
        )
        .await;
    }
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
        let last = events.last().unwrap().clone();
        assert_eq!(last["eventType"], "agent_message", "{events:?}");
        answers.push(last["payload"]["message"].as_str().unwrap().to_string());
    }
    assert_eq!(answers, ["answer one", "answer two", "answer three"]);
    let all = session_events(&s.app, &owner, org, &session).await;
    let users = all
        .iter()
        .filter(|e| e["eventType"] == "user_message")
        .count();
    assert_eq!(users, 3);
    // Each answer's turn names the message it answered, in order.
    let answered: Vec<i64> = all
        .iter()
        .filter(|e| e["eventType"] == "agent_message")
        .map(|e| e["payload"]["turn"]["messageSeq"].as_i64().unwrap())
        .collect();
    let user_seqs: Vec<i64> = all
        .iter()
        .filter(|e| e["eventType"] == "user_message")
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(answered, user_seqs);
}

#[tokio::test]
async fn two_clients_on_two_gateway_instances_see_every_event_once_in_order() {
    let fake = FakeLlm::start();
    let o = opts(&fake).env("OPENAI_API_KEY", "sk-x");
    let s = stack(o).await;
    let other = second_instance(&s, Options::default()).await;
    let owner = s.app.signup("brain-fanout").await;
    let org = owner.personal_org;
    let session = create_session(&s.app, &owner, org, session_body("openai", json!([]))).await;
    let mut a = client(&s.gateway, &owner, org).await;
    let mut b = client(&other, &owner, org).await;
    send(
        &mut a,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    send(
        &mut b,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    fake.script([Reply::text("one"), Reply::text("two")]);
    // Client A sends on instance 1, client B on instance 2.
    send(
        &mut a,
        json!({"type": "session_send", "sessionId": session, "message": "from a"}),
    )
    .await;
    let (ea1, _) = until_turn_ends(&mut a, Duration::from_secs(30)).await;
    let (eb1, _) = until_turn_ends(&mut b, Duration::from_secs(30)).await;
    send(
        &mut b,
        json!({"type": "session_send", "sessionId": session, "message": "from b"}),
    )
    .await;
    let (ea2, _) = until_turn_ends(&mut a, Duration::from_secs(30)).await;
    let (eb2, _) = until_turn_ends(&mut b, Duration::from_secs(30)).await;
    let seqs = |evs: &[Value]| {
        evs.iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let a_all: Vec<i64> = [seqs(&ea1), seqs(&ea2)].concat();
    let b_all: Vec<i64> = [seqs(&eb1), seqs(&eb2)].concat();
    assert_eq!(a_all, b_all, "both clients saw the same events");
    let stored: Vec<i64> = session_events(&s.app, &owner, org, &session)
        .await
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(a_all, stored, "every event exactly once, in order");
}

#[tokio::test]
async fn an_agent_run_node_completes_with_its_tool_calls_in_the_run_events() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake)).await;
    let _roles = start_roles(&s.app.state);
    let owner = s.app.signup("brain-node").await;
    let org = owner.personal_org;
    enable_shell(&s.app, &owner, org).await;
    let secret = llm_secret(&s.app, &owner, org, "llm.anthropic", "sk-ant-node").await;
    let dir = std::env::temp_dir().join(format!("vespid-brain-node-{}", Uuid::new_v4().simple()));
    let backend = if docker_available() { "docker" } else { "host" };
    let _agent = real_agent(&s, &owner, &dir, backend).await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "agent", "type": "agent.run", "config": {
            "llm": {"provider": "anthropic", "model": "claude-x", "auth": {"secretId": secret}},
            "prompt": {"instructions": "Count the files."},
            "tools": {"allow": ["shell.run"], "execution": "executor"},
            "limits": {"timeoutMs": 60000},
            "output": {"mode": "json"}}}]});
    let wf = crate::runs::published(&s.app, &owner, org, dsl).await;
    fake.script([
        Reply::tool(
            "shell__run",
            json!({"script": "echo a > a.txt; ls | wc -l"}),
        ),
        Reply::text("{\"files\": 1}"),
    ]);
    let run = crate::runs::start_run(&s.app, &owner, org, wf, json!({"dir": "x"})).await;
    let done =
        crate::runs::wait_terminal(&s.app, &owner, org, wf, run, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let evs = crate::runs::events(&s.app, &owner, org, wf, run).await;
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["eventType"].as_str()).collect();
    let call = kinds
        .iter()
        .position(|k| *k == "agent_tool_call")
        .expect("tool call event");
    assert_eq!(kinds[call + 1], "agent_tool_result", "{kinds:?}");
    let result = &evs[call + 1];
    assert_eq!(result["payload"]["status"], "succeeded", "{result}");
    assert_eq!(result["nodeId"], "agent");
    let succeeded = evs
        .iter()
        .find(|e| e["eventType"] == "node_succeeded")
        .expect("node_succeeded");
    assert_eq!(succeeded["payload"], json!({"files": 1}), "{succeeded}");
    // The model got the run's input and the tool's answer; the key went to the provider only.
    let reqs = fake.requests();
    assert_eq!(reqs[0].protocol, Protocol::Anthropic);
    assert_eq!(
        reqs[0].headers.get("x-api-key").map(String::as_str),
        Some("sk-ant-node")
    );
    assert!(reqs[0].body.to_string().contains("Count the files."));
    assert!(reqs[1].body.to_string().contains("tool_result"));
    // Usage rows carry the run.
    let r = s
        .app
        .get(&format!("/v1/orgs/{org}/usage"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["usage"]["totals"]["calls"], 2, "{:?}", r.body);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn provider_credentials_never_reach_events_frames_or_responses() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake)).await;
    let owner = s.app.signup("brain-canary").await;
    let org = owner.personal_org;
    enable_shell(&s.app, &owner, org).await;
    let canary = format!("sk-canary-{}", Uuid::new_v4().simple());
    let secret = llm_secret(&s.app, &owner, org, "llm.openai", &canary).await;
    // A test executor that records every frame it receives, byte for byte.
    let (exec_id, token) = crate::gateway::paired(&s.app, &owner, json!([])).await;
    let mut exec = crate::gateway::connect(&format!("{}/ws/executor", s.gateway), Some(&token))
        .await
        .expect("executor");
    exec.send(crate::gateway::hello(exec_id, org, json!([]), 4))
        .await
        .unwrap();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = frames.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = exec.next().await {
            let Message::Text(text) = msg else { continue };
            seen.lock().unwrap().push(text.to_string());
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if v["type"] == "invoke_tool_v2" {
                let reply = json!({"type": "tool_result_v2", "requestId": v["requestId"],
                                   "status": "succeeded", "output": {"stdout": "env printed\n"}});
                let _ = exec.send(Message::text(reply.to_string())).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut body = session_body("openai", json!(["shell.run"]));
    body["llm"]["auth"] = json!({"secretId": secret});
    let session = create_session(&s.app, &owner, org, body).await;
    fake.script([
        Reply::tool("shell__run", json!({"script": "env"})),
        Reply::text("done"),
    ]);
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "print env"}),
    )
    .await;
    let (events, deltas) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(
        events.last().unwrap()["eventType"],
        "agent_message",
        "{events:?}"
    );
    // Positive control: the key did reach the provider, so the greps below can fail.
    assert_eq!(
        fake.requests()[0].headers.get("authorization").cloned(),
        Some(format!("Bearer {canary}"))
    );
    let frames = frames.lock().unwrap().clone();
    assert!(
        frames.iter().any(|f| f.contains("invoke_tool_v2")),
        "the tool ran on the executor"
    );
    let mut haystack = vec![
        serde_json::to_string(&events).unwrap(),
        serde_json::to_string(&deltas).unwrap(),
    ];
    haystack.extend(frames);
    for path in [
        format!("/v1/orgs/{org}/sessions/{session}"),
        format!("/v1/orgs/{org}/sessions"),
        format!("/v1/orgs/{org}/sessions/{session}/events?limit=500"),
        format!("/v1/orgs/{org}/usage"),
        format!("/v1/orgs/{org}/secrets"),
        format!("/v1/orgs/{org}/audit"),
    ] {
        let r = s.app.get(&path).by(&owner).org(org).send().await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        haystack.push(r.body.to_string());
    }
    // Everything the database holds about the session and its usage.
    let db = s.app.owner_db().await;
    for q in [
        "SELECT coalesce(string_agg(t::text, ''), '') FROM agent_session_events t",
        "SELECT coalesce(string_agg(t::text, ''), '') FROM agent_sessions t",
        "SELECT coalesce(string_agg(t::text, ''), '') FROM llm_usage t",
    ] {
        let row = db.query_one(q, &[]).await.unwrap();
        haystack.push(row.get::<_, String>(0));
    }
    for h in &haystack {
        assert!(!h.contains(&canary), "the provider key leaked: {h}");
    }
}

#[tokio::test]
async fn a_spent_token_budget_fails_turns_clearly() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake).env("OPENAI_API_KEY", "sk-x")).await;
    let owner = s.app.signup("brain-budget").await;
    let org = owner.personal_org;
    let r = s
        .app
        .put(&format!("/v1/orgs/{org}/settings"))
        .by(&owner)
        .org(org)
        .json(json!({"llm": {"budget": {"monthlyTokens": 20}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let session = create_session(&s.app, &owner, org, session_body("openai", json!([]))).await;
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    fake.script([Reply::text(
        "a fairly long answer that costs output tokens to produce",
    )]);
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "one"}),
    )
    .await;
    let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(events.last().unwrap()["eventType"], "agent_message");
    let calls = fake.totals().calls;
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "two"}),
    )
    .await;
    let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(
        events.last().unwrap()["payload"]["code"],
        "LLM_BUDGET_EXCEEDED"
    );
    assert_eq!(
        fake.totals().calls,
        calls,
        "no provider call once the budget is spent"
    );
}

#[tokio::test]
async fn a_message_left_unanswered_is_picked_up_by_the_sweep() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake).env("OPENAI_API_KEY", "sk-x")).await;
    let owner = s.app.signup("brain-sweep").await;
    let org = owner.personal_org;
    let session = create_session(&s.app, &owner, org, session_body("openai", json!([]))).await;
    fake.script([Reply::text("found you")]);
    // A message stored without waking any brain (as if the instance that took it died at once).
    s.app
        .state
        .sessions
        .send(
            org.into(),
            owner.id.into(),
            session.parse::<Uuid>().unwrap().into(),
            "anyone?".into(),
            None,
        )
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let evs = session_events(&s.app, &owner, org, &session).await;
        if let Some(a) = evs.iter().find(|e| e["eventType"] == "agent_message") {
            assert_eq!(a["payload"]["message"], "found you");
            break;
        }
        assert!(Instant::now() < deadline, "never answered: {evs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_original_json_envelopes_work_for_endpoints_without_tool_calling() {
    let fake = FakeLlm::start();
    let s = stack(opts(&fake).env("OPENAI_API_KEY", "sk-x")).await;
    let owner = s.app.signup("brain-json").await;
    let org = owner.personal_org;
    enable_shell(&s.app, &owner, org).await;
    let (exec_id, token) = crate::gateway::paired(&s.app, &owner, json!([])).await;
    let mut exec = crate::gateway::connect(&format!("{}/ws/executor", s.gateway), Some(&token))
        .await
        .expect("executor");
    exec.send(crate::gateway::hello(exec_id, org, json!([]), 4))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = exec.next().await {
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if v["type"] == "invoke_tool_v2" {
                let script = v["payload"]["node"]["config"]["task"]["script"].clone();
                let reply = json!({"type": "tool_result_v2", "requestId": v["requestId"],
                                   "status": "succeeded", "output": {"stdout": format!("ran {script}")}});
                let _ = exec.send(Message::text(reply.to_string())).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut body = session_body("openai", json!(["shell.run"]));
    body["llm"]["toolCalling"] = json!("json");
    let session = create_session(&s.app, &owner, org, body).await;
    fake.script([
        Reply::text(r#"{"type":"tool_call","toolId":"shell.run","input":{"script":"uname"}}"#),
        Reply::text("```json\n{\"type\":\"final\",\"output\":\"it is linux\"}\n```"),
    ]);
    let mut ws = client(&s.gateway, &owner, org).await;
    send(
        &mut ws,
        json!({"type": "session_join", "sessionId": session}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "session_send", "sessionId": session, "message": "which os?"}),
    )
    .await;
    let (events, _) = until_turn_ends(&mut ws, Duration::from_secs(30)).await;
    let last = events.last().unwrap();
    assert_eq!(last["payload"]["message"], "it is linux", "{events:?}");
    let result = events
        .iter()
        .find(|e| e["eventType"] == "agent_tool_result")
        .expect("tool result");
    assert_eq!(result["payload"]["output"]["stdout"], "ran \"uname\"");
    let reqs = fake.requests();
    assert!(
        reqs[0].body.get("tools").is_none(),
        "no native tools in JSON mode"
    );
    assert!(reqs[0].body.to_string().contains("Allowed tool ids"));
    assert!(reqs[1].body.to_string().contains("tool_result"));
}
