//! Hostile input: documents built to make validation or execution super-linear, workflows past the size
//! limits, runs whose events or outputs would grow without bound, NUL characters, and slow bodies. Each
//! would have taken the server down (or answered 500) before; the timings themselves live in `bench/`.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::common::{self, Options, TestApp, User};
use crate::runs::{opts, published, start_run, start_target, start_worker, wait_terminal};

fn join(id: &str) -> Value {
    json!({"id": id, "type": "parallel.join"})
}

fn edge(id: usize, from: &str, to: &str) -> Value {
    json!({"id": format!("e{id}"), "from": from, "to": to})
}

fn v3(nodes: Map<String, Value>, edges: Vec<Value>) -> Value {
    json!({"version": "v3", "trigger": {"type": "trigger.manual"}, "graph": {"nodes": nodes, "edges": edges}})
}

/// Spine `s_i -> s_{i+1}`, rungs `s_i -> j_i`, joins `j_{i-1} -> j_i`: every spine node fans out.
fn ladder(k: usize, remote_at: Option<usize>) -> Value {
    let mut nodes = Map::new();
    let mut edges = Vec::new();
    for i in 0..k {
        let s = format!("s{i:04}");
        let j = format!("j{i:04}");
        let spine = if remote_at == Some(i) {
            json!({"id": s, "type": "agent.execute", "config": {"execution": {"mode": "executor"}}})
        } else {
            join(&s)
        };
        nodes.insert(s.clone(), spine);
        nodes.insert(j.clone(), join(&j));
        edges.push(edge(edges.len(), &s, &j));
        if i + 1 < k {
            edges.push(edge(edges.len(), &s, &format!("s{:04}", i + 1)));
        }
        if i > 0 {
            edges.push(edge(edges.len(), &format!("j{:04}", i - 1), &j));
        }
    }
    v3(nodes, edges)
}

/// `n` joins, an edge from every node to every later one.
fn complete(n: usize) -> Value {
    let mut nodes = Map::new();
    let mut edges = Vec::new();
    for i in 0..n {
        let id = format!("n{i:03}");
        nodes.insert(id.clone(), join(&id));
        for j in i + 1..n {
            edges.push(edge(edges.len(), &id, &format!("n{j:03}")));
        }
    }
    v3(nodes, edges)
}

async fn create(app: &TestApp, owner: &User, dsl: Value) -> common::Resp {
    let org = owner.personal_org;
    app.post(&format!("/v1/orgs/{org}/workflows"))
        .by(owner)
        .org(org)
        .json(json!({"name": "hostile", "dsl": dsl}))
        .send()
        .await
}

/// Before: a ladder of 1,000 rungs took about two minutes of CPU to validate and a complete graph of 100
/// joins six seconds, on an HTTP worker thread. Now both are linear; the generous deadline only catches
/// a return of the super-linear walk.
#[tokio::test]
async fn ladder_and_complete_graphs_validate_in_linear_time() {
    let app = common::spawn().await;
    let owner = app.signup("dos").await;
    for (what, dsl) in [("ladder", ladder(1000, None)), ("complete", complete(100))] {
        let r = tokio::time::timeout(Duration::from_secs(10), create(&app, &owner, dsl))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"));
        assert_eq!(r.status, 201, "{what}: {:?}", r.body);
    }
    // The fast path still names the node the rule reports.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        create(&app, &owner, ladder(1000, Some(700))),
    )
    .await
    .expect("answer in time");
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "PARALLEL_REMOTE_NOT_SUPPORTED"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["details"]["issues"][0]["nodeId"], "s0700");
}

#[tokio::test]
async fn workflows_past_the_limits_are_refused_naming_the_limit() {
    let app = common::spawn_with(
        Options::default()
            .env("WORKFLOW_MAX_NODES", "10")
            .env("WORKFLOW_MAX_EDGES", "12")
            .env("WORKFLOW_MAX_BYTES", "4000"),
    )
    .await;
    let owner = app.signup("limits").await;
    let chain = |n: usize| {
        let nodes: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("n{i}"), "type": "http.request"}))
            .collect();
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes})
    };
    assert_eq!(create(&app, &owner, chain(10)).await.status, 201);
    let r = create(&app, &owner, chain(11)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "WORKFLOW_TOO_LARGE"));
    assert_eq!(
        r.body["details"],
        json!({"limit": "nodes", "max": 10, "actual": 11})
    );
    let r = create(&app, &owner, complete(6)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "WORKFLOW_TOO_LARGE"));
    assert_eq!(r.body["details"]["limit"], "edges");
    let big = json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request", "config": {"method": "POST", "url": "https://x.test/", "body": "x".repeat(5000)}}]});
    let r = create(&app, &owner, big).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "WORKFLOW_TOO_LARGE"));
    assert_eq!(r.body["details"]["limit"], "bytes");
}

/// A long chain of nodes with effects runs to the end with every step and event recorded: checkpoints
/// append their steps instead of rewriting the whole output. Before, a chain of 5,000 never finished.
#[tokio::test]
async fn a_long_chain_of_http_nodes_runs_to_the_end() {
    const N: usize = 1000;
    let (target, hits) = start_target(0).await;
    let app = common::spawn_with(opts()).await;
    let owner = app.signup("chain").await;
    let org = owner.personal_org;
    let nodes: Vec<Value> = (0..N)
        .map(|i| {
            json!({"id": format!("n{i:04}"), "type": "http.request",
                   "config": {"method": "GET", "url": format!("{target}/ok/chain")}})
        })
        .collect();
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes}),
    )
    .await;
    let _worker = start_worker(&app);
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "succeeded", "{}", done["error"]);
    assert_eq!(hits.hits("chain"), N, "every node ran once");
    let steps = done["output"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), N);
    assert_eq!(steps[N - 1]["nodeId"], format!("n{:04}", N - 1));
    assert_eq!(done["output"]["output"]["completedNodeCount"], N);
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .expect("ctx");
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM workflow_run_events WHERE run_id = $1::text::uuid",
            &[&run.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        events,
        2 * N as i64 + 2,
        "run_started, 2 per node, run_succeeded"
    );
}

#[tokio::test]
async fn runs_past_their_event_or_output_caps_fail_clearly() {
    let (target, _) = start_target(0).await;
    let app = common::spawn_with(
        opts()
            .env("WORKFLOW_RUN_MAX_EVENTS", "8")
            .env("WORKFLOW_RUN_OUTPUT_MAX_BYTES", "300"),
    )
    .await;
    let owner = app.signup("caps").await;
    let org = owner.personal_org;
    let _worker = start_worker(&app);
    // Ten stub nodes: two events each, so the cap of 8 is passed at the fifth node.
    let nodes: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("n{i}"), "type": "http.request"}))
        .collect();
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes}),
    )
    .await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(
        (done["status"].as_str(), done["error"].as_str()),
        (Some("failed"), Some("RUN_EVENT_LIMIT_EXCEEDED")),
        "{done}"
    );
    assert_eq!(done["attemptCount"], 1, "not retried");
    // Two real responses of ~200 bytes each pass the output cap of 300.
    let node = |id: &str| json!({"id": id, "type": "http.request", "config": {"method": "GET", "url": format!("{target}/ok/caps")}});
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [node("a"), node("b"), node("c")]}),
    )
    .await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(
        (done["status"].as_str(), done["error"].as_str()),
        (Some("failed"), Some("RUN_OUTPUT_LIMIT_EXCEEDED")),
        "{done}"
    );
    assert_eq!(done["attemptCount"], 1, "not retried");
}

/// PostgreSQL cannot store U+0000 in text or JSON: every way in answers 400 naming the field, never 500.
#[tokio::test]
async fn nul_characters_are_refused_naming_the_field() {
    let app = common::spawn_with(Options::default().env("SECRETS_KEK_ID", "k1").env(
        "SECRETS_KEK_BASE64",
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    ))
    .await;
    let r = app
        .post("/v1/auth/signup")
        .json(json!({"email": app.unique_email("nul"), "password": "Password123", "displayName": "a\u{0}b"}))
        .send()
        .await;
    assert_nul(&r, "displayName");
    let owner = app.signup("nul").await;
    let org = owner.personal_org;
    let r = app
        .post("/v1/orgs")
        .by(&owner)
        .json(json!({"name": "x\u{0}y", "slug": "nul-org"}))
        .send()
        .await;
    assert_nul(&r, "name");
    let r = app
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "t\u{0}", "value": "v"}))
        .send()
        .await;
    assert_nul(&r, "name");
    let r = app
        .get(&format!("/v1/orgs/{org}/secrets?connectorId=%00"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_nul(&r, "connectorId");
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request", "config": {"method": "GET", "url": "https://x.test/\u{0}"}}]});
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "wf", "dsl": dsl}))
        .send()
        .await;
    assert_nul(&r, "dsl.nodes[0].config.url");
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [{"id": "n", "type": "http.request"}]}),
    )
    .await;
    let r = app
        .put(&format!("/v1/orgs/{org}/workflows/{wf}"))
        .by(&owner)
        .org(org)
        .json(json!({"editorState": {"k\u{0}": 1}}))
        .send()
        .await;
    assert_nul(&r, "editorState.k\u{0}");
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
        .by(&owner)
        .org(org)
        .json(json!({"input": {"list": ["ok", "bad\u{0}"]}}))
        .send()
        .await;
    assert_nul(&r, "input.list[1]");
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows?cursor=%00"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_nul(&r, "cursor");
}

#[track_caller]
fn assert_nul(r: &common::Resp, field: &str) {
    assert_eq!(r.status, 400, "{field}: {:?}", r.body);
    assert!(
        r.body["details"]["fieldErrors"][field].is_array(),
        "{field} not named: {:?}",
        r.body
    );
}

/// A client that announces a body and never sends it all is answered 408 in the envelope, instead of
/// holding the connection forever.
#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    let app = common::spawn_with(Options::default().env("BODY_READ_TIMEOUT_MS", "500")).await;
    let addr = app.addr.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\":",
        )
        .expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if String::from_utf8_lossy(&buf).contains("REQUEST_TIMEOUT") {
                break;
            }
        }
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{answer}");
}
