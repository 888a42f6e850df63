//! Remote execution end to end (gateway spec 2.2-2.9, workflows spec 6): a workflow node with
//! `execution.mode = "executor"` is recorded as blocked, dispatched through the gateway to a connected
//! executor (here a test client speaking the v2 frames byte for byte over a real WebSocket), and the
//! result is pushed to the continuation, which resumes the run at once. Also: failures and their codes,
//! results accepted only from the executor a call went to, an executor on another gateway instance, the
//! service-token routes, timeouts, and a dispatch lost between recording and sending.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::{Options, TestApp, User};
use crate::gateway::{connect, edge, hello, paired, Edge, Ws};
use crate::runs::{events, published, start_run, wait_terminal};
use vespid::app::state::AppState;
use vespid::domain::runs::continuation::Continuation;
use vespid::domain::runs::remote::{DispatchBody, DispatchError, RemoteDispatch};

fn opts() -> Options {
    crate::runs::opts()
        .env("WORKFLOW_RETRY_ATTEMPTS", "1")
        .env("WORKFLOW_CONTINUATION_POLL_MS", "100")
        .env("WORKFLOW_REDISPATCH_AFTER_MS", "500")
        .env("GATEWAY_DISCONNECT_GRACE_MS", "200")
}

/// A worker and a continuation for `state`, stopped when the sender drops.
fn start_roles(state: &AppState) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    vespid::domain::runs::worker::spawn(state.worker_parts(), rx.clone()).expect("worker");
    Arc::new(Continuation::new(state.continuation_parts())).spawn(rx);
    tx
}

/// An executor of `owner`'s org connected over a raw WebSocket (hello sent): (id, socket).
async fn executor(e: &Edge, owner: &User, labels: Value) -> (Uuid, Ws) {
    let (id, token) = paired(&e.app, owner, labels).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    ws.send(hello(id, owner.personal_org, json!([]), 4))
        .await
        .unwrap();
    wait_routed(&e.app, id).await;
    (id, ws)
}

async fn wait_routed(app: &TestApp, id: Uuid) {
    let redis = &app.state.redis;
    for _ in 0..100 {
        let raw: Option<String> = fred::interfaces::KeysInterface::get(
            &redis.client,
            redis.key(&format!("executor:route:{id}")),
        )
        .await
        .unwrap();
        if raw.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("executor {id} never routed");
}

/// The next `invoke_tool_v2` the executor receives (within `secs`), answering pings.
async fn next_invoke(ws: &mut Ws, secs: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no invoke in time")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "invoke_tool_v2" {
                    return v;
                }
            }
            Message::Ping(p) => ws.send(Message::Pong(p)).await.unwrap(),
            _ => {}
        }
    }
}

async fn send_result(ws: &mut Ws, request_id: &str, result: Value) {
    let mut frame = json!({"type": "tool_result_v2", "requestId": request_id});
    for (k, v) in result.as_object().unwrap() {
        frame[k] = v.clone();
    }
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

fn shell_dsl(selector: Option<Value>, timeout_ms: Option<u64>) -> Value {
    let mut execution = json!({"mode": "executor"});
    if let Some(s) = selector {
        execution["selector"] = s;
    }
    let mut config = json!({
        "execution": execution,
        "task": {"type": "shell", "script": "echo hello > a.txt && cat a.txt"},
    });
    if let Some(t) = timeout_ms {
        config["sandbox"] = json!({"timeoutMs": t});
    }
    json!({
        "version": "v2",
        "trigger": {"type": "trigger.manual"},
        "nodes": [
            {"id": "before", "type": "http.request"},
            {"id": "remote", "type": "agent.execute", "config": config},
            {"id": "after", "type": "http.request"},
        ],
    })
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            format!(
                "{}{}",
                e["eventType"].as_str().unwrap(),
                e["nodeId"]
                    .as_str()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn an_executor_node_runs_end_to_end_and_the_run_resumes_when_its_result_lands() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-e2e").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, Some(30_000))).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;

    let invoke = next_invoke(&mut ws, 10).await;
    // The frame as the spec shows it: policy, kind, payload (the node as written), no secret.
    assert_eq!(invoke["kind"], "agent.execute");
    assert_eq!(invoke["organizationId"], org.to_string());
    assert_eq!(invoke["userId"], owner.id.to_string());
    assert!(invoke.get("secret").is_none());
    assert_eq!(
        invoke["toolPolicy"],
        json!({"networkModeDefaultDeny": true, "networkMode": "none", "timeoutMs": 30000,
               "outputMaxChars": 200000,
               "mountsAllowlist": [{"containerPath": "/work", "mode": "rw"}, {"containerPath": "/tmp", "mode": "rw"}]})
    );
    assert_eq!(invoke["payload"]["nodeId"], "remote");
    assert_eq!(invoke["payload"]["runId"], run.to_string());
    assert_eq!(invoke["payload"]["attemptCount"], 1);
    assert_eq!(
        invoke["payload"]["node"],
        json!({"id": "remote", "type": "agent.execute", "config": {
            "task": {"type": "shell", "script": "echo hello > a.txt && cat a.txt"},
            "sandbox": {"timeoutMs": 30000},
            "execution": {"mode": "executor"}}})
    );
    let request_id = invoke["requestId"].as_str().unwrap();
    assert!(request_id.starts_with(&format!("{run}:")), "{request_id}");

    // While blocked the run stays running and holds no worker.
    let r = e
        .app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["run"]["status"], "running");

    let answered = Instant::now();
    send_result(
        &mut ws,
        request_id,
        json!({"status": "succeeded", "output": {"stdout": "hello\n", "exitCode": 0}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Pushed, not polled: far below the continuation's sweep of the original (2 s).
    assert!(answered.elapsed() < Duration::from_millis(1500));
    let steps = done["output"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["output"]["stdout"], "hello\n");

    let evs = events(&e.app, &owner, org, wf, run).await;
    assert_eq!(
        kinds(&evs),
        [
            "run_started",
            "node_started:before",
            "node_succeeded:before",
            "node_started:remote",
            "node_dispatched:remote",
            "remote_result_received:remote",
            "node_succeeded:remote",
            "node_started:after",
            "node_succeeded:after",
            "run_succeeded",
        ]
    );
    let dispatched = &evs[4]["payload"];
    assert_eq!(dispatched["requestId"], format!("{run}:remote:1"));
    assert_eq!(dispatched["kind"], "agent.execute");
    assert_eq!(evs[6]["payload"]["stdout"], "hello\n");
}

#[tokio::test]
async fn without_an_executor_the_run_fails_with_no_executor_available() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-none").await;
    let org = owner.personal_org;
    // Paired but not connected: not routable.
    let _ = paired(&e.app, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, None)).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "NO_EXECUTOR_AVAILABLE");
    let evs = events(&e.app, &owner, org, wf, run).await;
    let failed = evs
        .iter()
        .find(|e| e["eventType"] == "node_failed")
        .unwrap();
    assert_eq!(failed["nodeId"], "remote");
    assert_eq!(failed["message"], "NO_EXECUTOR_AVAILABLE");
}

#[tokio::test]
async fn a_result_from_another_executor_is_ignored_and_selectors_route_on_labels() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-foreign").await;
    let org = owner.personal_org;
    let (_gpu, mut gpu_ws) = executor(&e, &owner, json!(["gpu"])).await;
    let (_cpu, mut cpu_ws) = executor(&e, &owner, json!(["cpu"])).await;
    let wf = published(
        &e.app,
        &owner,
        org,
        shell_dsl(Some(json!({"tag": "gpu"})), None),
    )
    .await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let invoke = next_invoke(&mut gpu_ws, 10).await;
    let request_id = invoke["requestId"].as_str().unwrap();
    // Another executor of the same org claims the call: ignored.
    send_result(
        &mut cpu_ws,
        request_id,
        json!({"status": "succeeded", "output": {"forged": true}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = e
        .app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["run"]["status"], "running");
    send_result(
        &mut gpu_ws,
        request_id,
        json!({"status": "failed", "error": "HOST_EXIT_CODE:3", "output": {"exitCode": 3}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "HOST_EXIT_CODE:3");
    let steps = done["output"]["steps"].as_array().unwrap();
    assert_eq!(steps[1]["output"], json!({"exitCode": 3}));
    assert!(!done.to_string().contains("forged"));
}

#[tokio::test]
async fn an_executor_lost_mid_task_fails_the_call_with_agent_disconnected() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-lost").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, Some(60_000))).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let _ = next_invoke(&mut ws, 10).await;
    drop(ws);
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "AGENT_DISCONNECTED");
}

#[tokio::test]
async fn a_silent_executor_times_the_run_out() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-silent").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, Some(1000))).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let invoke = next_invoke(&mut ws, 10).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "NODE_EXECUTION_TIMEOUT");
    // A result after the timeout changes nothing.
    send_result(
        &mut ws,
        invoke["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evs = events(&e.app, &owner, org, wf, run).await;
    assert_eq!(
        evs.iter()
            .filter(|e| e["eventType"] == "remote_result_received")
            .count(),
        1
    );
}

#[tokio::test]
async fn an_executor_on_instance_a_runs_work_dispatched_through_instance_b() {
    let e = edge(opts()).await;
    let owner = e.app.signup("remote-ab").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    // Instance B: same database and Redis, its own gateway service; only B runs a worker.
    let mut config = e.app.config.clone();
    config.gateway.edge_id = format!("edge-b-{}", Uuid::new_v4().simple());
    let b = AppState::build(config, None).await.expect("instance b");
    assert_ne!(b.gateway.edge_id(), e.app.state.gateway.edge_id());
    let _roles = start_roles(&b);
    let wf = published(&e.app, &owner, org, shell_dsl(None, None)).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let invoke = next_invoke(&mut ws, 10).await;
    send_result(
        &mut ws,
        invoke["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {"via": "a"}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["steps"][1]["output"], json!({"via": "a"}));
}

/// Loses the first dispatch (as a crash between recording the block and sending it would), then
/// sends the rest.
struct LoseFirst {
    inner: Arc<dyn RemoteDispatch>,
    calls: AtomicUsize,
}

impl RemoteDispatch for LoseFirst {
    fn dispatch<'a>(&'a self, body: &'a DispatchBody) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(());
            }
            self.inner.dispatch(body).await
        })
    }
}

#[tokio::test]
async fn a_dispatch_lost_after_the_block_was_recorded_is_sent_again() {
    let e = edge(opts()).await;
    let owner = e.app.signup("remote-lost-dispatch").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let mut parts = e.app.state.worker_parts();
    let lose = Arc::new(LoseFirst {
        inner: parts.remote.clone(),
        calls: AtomicUsize::new(0),
    });
    parts.remote = lose.clone();
    let (tx, rx) = watch::channel(false);
    vespid::domain::runs::worker::spawn(parts, rx.clone()).expect("worker");
    Arc::new(Continuation::new(e.app.state.continuation_parts())).spawn(rx);
    let wf = published(&e.app, &owner, org, shell_dsl(None, None)).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let invoke = next_invoke(&mut ws, 10).await;
    assert_eq!(lose.calls.load(Ordering::SeqCst), 2);
    assert_eq!(invoke["payload"]["attemptCount"], 1);
    send_result(
        &mut ws,
        invoke["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {"ok": true}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attemptCount"], 1);
    drop(tx);
}

#[tokio::test]
async fn the_internal_routes_need_the_service_token_and_check_their_bodies() {
    let e = edge(opts().env("GATEWAY_SERVICE_TOKEN", "s3rvice-token-for-tests")).await;
    let owner = e.app.signup("remote-internal").await;
    let base = e
        .ws_url
        .replace("ws://", "http://")
        .replace("/ws/executor", "");
    let http = reqwest::Client::new();
    let body = json!({
        "organizationId": owner.personal_org, "requestedByUserId": owner.id,
        "runId": Uuid::new_v4(), "workflowId": Uuid::new_v4(), "nodeId": "n1",
        "nodeType": "agent.execute", "attemptCount": 1, "kind": "agent.execute", "payload": {},
        "timeoutMs": 5000,
    });
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.header("x-gateway-token", t);
        }
        r.send()
    };
    for token in [
        None,
        Some("dev-gateway-token"),
        Some("s3rvice-token-for-test"),
    ] {
        let r = post("/internal/v1/dispatch", token, body.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["code"], "UNAUTHORIZED");
        assert_eq!(b["message"], "Invalid gateway service token");
    }
    let token = Some("s3rvice-token-for-tests");
    let mut bad = body.clone();
    bad["attemptCount"] = json!(0);
    let r = post("/internal/v1/dispatch-async", token, bad)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["message"], "Invalid dispatch payload");

    // No executor: a 200 with exactly the failure (never a 503), then cached.
    let r = post("/internal/v1/dispatch", token, body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"status":"failed","error":"NO_EXECUTOR_AVAILABLE"}"#
    );
    let rid = format!("{}:n1:1", body["runId"].as_str().unwrap());
    let r = post("/internal/v1/dispatch-async", token, body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        b,
        json!({"requestId": rid, "dispatched": false, "cached": true})
    );
    let get = |path: String| {
        http.get(format!("{base}{path}"))
            .header("x-gateway-token", "s3rvice-token-for-tests")
            .send()
    };
    let r = get(format!("/internal/v1/results/{rid}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/internal/v1/results/short".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = get(format!("/internal/v1/results/{}:n1:1", Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "RESULT_NOT_READY");

    // A fresh async dispatch is accepted once; a repeat while it runs is not sent twice.
    let mut fresh = body.clone();
    fresh["runId"] = json!(Uuid::new_v4());
    fresh["executorSelector"] = json!({"pool": "byon"});
    let r = post("/internal/v1/dispatch-async", token, fresh.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["dispatched"], true);
}

/// The run's workspace row (version, lock held?), read in the org's context.
async fn workspace_row(app: &TestApp, org: Uuid, run: Uuid) -> Option<(i64, bool, String)> {
    let mut db = app.app_db().await;
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.current_org_id', $1, true)",
        &[&org.to_string()],
    )
    .await
    .unwrap();
    let row = tx
        .query_opt(
            "SELECT current_version, lock_token IS NOT NULL, current_object_key FROM execution_workspaces \
             WHERE owner_type = 'workflow_run' AND owner_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    row.map(|r| (r.get(0), r.get(1), r.get(2)))
}

fn two_remote_nodes() -> Value {
    let node = |id: &str| {
        json!({"id": id, "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "task": {"type": "shell", "script": "ls /work"}}})
    };
    json!({"version": "v2", "trigger": {"type": "trigger.manual"},
           "nodes": [node("first"), node("second")]})
}

#[tokio::test]
async fn workspace_snapshots_carry_a_runs_files_from_one_tool_call_to_the_next() {
    let dir = std::env::temp_dir().join(format!("vespid-ws-{}", Uuid::new_v4().simple()));
    let e = edge(opts().env("WORKSPACE_DIR", &dir.to_string_lossy())).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-ws").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, two_remote_nodes()).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let http = reqwest::Client::new();

    // First call: an empty workspace at version 0, an upload URL for version 1.
    let first = next_invoke(&mut ws, 10).await;
    let workspace = &first["workspace"];
    assert_eq!(workspace["version"], 0);
    assert_eq!(workspace["objectKey"], "");
    assert!(first["workspaceAccess"].get("downloadUrl").is_none());
    let upload = &first["workspaceAccess"]["upload"];
    assert_eq!(upload["version"], 1);
    let key = upload["objectKey"].as_str().unwrap().to_string();
    assert_eq!(
        key,
        format!(
            "workspaces/{org}/{}/v1.tar.zst",
            workspace["workspaceId"].as_str().unwrap()
        )
    );
    let url = upload["url"].as_str().unwrap();
    assert!(url.starts_with(
        &e.ws_url
            .replace("ws://", "http://")
            .replace("/ws/executor", "")
    ));
    // The signature covers the content type and the URL: anything else is a 403, like S3.
    let r = http
        .put(url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .put(url.replace("v1.tar.zst", "v2.tar.zst"))
        .header("content-type", "application/zstd")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .put(url)
        .header("content-type", "application/zstd")
        .body("snapshot-one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("etag").is_some());
    send_result(
        &mut ws,
        first["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {"n": 1},
               "workspace": {"workspaceId": workspace["workspaceId"], "version": 1, "objectKey": key}}),
    )
    .await;

    // Second call: version 1, downloadable.
    let second = next_invoke(&mut ws, 10).await;
    assert_eq!(second["workspace"]["version"], 1);
    assert_eq!(second["workspace"]["objectKey"], key);
    let download = second["workspaceAccess"]["downloadUrl"].as_str().unwrap();
    let got = http.get(download).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "snapshot-one");
    let tampered = download.replace("signature=", "signature=0");
    assert_eq!(http.get(tampered).send().await.unwrap().status(), 403);
    // This call brings no snapshot: the workspace stays at version 1 and its lock is released.
    send_result(
        &mut ws,
        second["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {"n": 2}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(workspace_row(&e.app, org, run).await, Some((1, false, key)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_call_releases_the_workspace_lock() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-ws-lock").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, Some(60_000))).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let _ = next_invoke(&mut ws, 10).await;
    let (version, locked, _) = workspace_row(&e.app, org, run).await.unwrap();
    assert_eq!((version, locked), (0, true));
    drop(ws);
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["error"], "AGENT_DISCONNECTED");
    assert_eq!(
        workspace_row(&e.app, org, run).await.map(|r| r.1),
        Some(false)
    );
}

#[tokio::test]
async fn with_an_s3_store_snapshots_go_through_presigned_s3_urls() {
    let endpoint = std::env::var("VESPID_TEST_S3_ENDPOINT")
        .expect("VESPID_TEST_S3_ENDPOINT: run the suite through scripts/test.sh (it starts moto)");
    let bucket = format!("vespid-ws-{}", Uuid::new_v4().simple());
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "bucket: {}", r.status());
    let e = edge(
        opts()
            .env("WORKSPACE_S3_BUCKET", &bucket)
            .env("WORKSPACE_S3_ENDPOINT", &endpoint)
            .env("WORKSPACE_S3_ACCESS_KEY_ID", "test")
            .env("WORKSPACE_S3_SECRET_ACCESS_KEY", "test"),
    )
    .await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-s3").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, two_remote_nodes()).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;

    let first = next_invoke(&mut ws, 10).await;
    let upload = &first["workspaceAccess"]["upload"];
    let key = upload["objectKey"].as_str().unwrap().to_string();
    let url = upload["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{endpoint}/{bucket}/{key}?")),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let r = http
        .put(url)
        .header("content-type", "application/zstd")
        .body("s3-snapshot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    send_result(
        &mut ws,
        first["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {},
               "workspace": {"workspaceId": first["workspace"]["workspaceId"], "version": 1, "objectKey": key}}),
    )
    .await;
    let second = next_invoke(&mut ws, 10).await;
    assert_eq!(second["workspace"]["version"], 1);
    let download = second["workspaceAccess"]["downloadUrl"].as_str().unwrap();
    let got = http.get(download).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "s3-snapshot");
    send_result(
        &mut ws,
        second["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(workspace_row(&e.app, org, run).await, Some((1, false, key)));
}

#[tokio::test]
async fn a_snapshot_claimed_but_never_uploaded_does_not_advance_the_workspace() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-ws-claim").await;
    let org = owner.personal_org;
    let (_id, mut ws) = executor(&e, &owner, json!([])).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, None)).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let invoke = next_invoke(&mut ws, 10).await;
    let key = invoke["workspaceAccess"]["upload"]["objectKey"].clone();
    // The executor says it uploaded version 1, but did not; and names another object.
    send_result(
        &mut ws,
        invoke["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {},
               "workspace": {"workspaceId": invoke["workspace"]["workspaceId"], "version": 1, "objectKey": key}}),
    )
    .await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        workspace_row(&e.app, org, run).await,
        Some((0, false, String::new()))
    );
}

/// A real `vespid agent connect` process (host backend, explicitly enabled) paired with `owner`'s org,
/// online; its work and config in a temporary directory.
async fn real_agent(e: &Edge, owner: &User, dir: &std::path::Path) -> crate::gateway::AgentProc {
    real_agent_with(e, owner, dir, "host").await
}

async fn real_agent_with(
    e: &Edge,
    owner: &User,
    dir: &std::path::Path,
    backend: &str,
) -> crate::gateway::AgentProc {
    real_agent_args(e, owner, dir, backend, &[]).await
}

async fn real_agent_args(
    e: &Edge,
    owner: &User,
    dir: &std::path::Path,
    backend: &str,
    extra: &[&str],
) -> crate::gateway::AgentProc {
    let org = owner.personal_org;
    let token = crate::agents::new_token(&e.app, owner, org).await;
    let config = dir.join("agent.json").to_string_lossy().to_string();
    let workdir = dir.join("work").to_string_lossy().to_string();
    let mut args = vec![
        "connect",
        "--pairing-token",
        &token,
        "--api-base",
        &e.app.addr,
        "--config-path",
        &config,
        "--exec-backend",
        backend,
        "--workdir-root",
        &workdir,
    ];
    args.extend_from_slice(extra);
    let agent = crate::gateway::AgentProc::spawn(&args);
    for _ in 0..200 {
        let r = e
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

fn script_dsl(script: &str) -> Value {
    json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "sh", "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "task": {"type": "shell", "script": script}}}]})
}

#[tokio::test]
async fn a_real_agent_runs_a_shell_node_and_a_connector_action_with_its_secret() {
    let gh = crate::fake_github::FakeGithub::start("ghp_agent_side_token");
    let kek = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let e = edge(
        opts()
            .env("GITHUB_API_BASE_URL", &gh.base)
            .env("SECRETS_KEK_ID", "k1")
            .env("SECRETS_KEK_BASE64", &kek),
    )
    .await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-real").await;
    let org = owner.personal_org;
    let dir = std::env::temp_dir().join(format!("vespid-real-{}", Uuid::new_v4().simple()));
    let agent = real_agent(&e, &owner, &dir).await;

    let wf = published(
        &e.app,
        &owner,
        org,
        script_dsl("echo hello-from-agent; echo oops >&2; id -u >/dev/null"),
    )
    .await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let out = &done["output"]["steps"][0]["output"];
    assert_eq!(out["backend"], "host");
    assert_eq!(out["exitCode"], 0);
    assert_eq!(out["stdout"], "hello-from-agent\n");
    assert_eq!(out["stderr"], "oops\n");

    // A failing script: its exit code, as the original names it.
    let wf = published(&e.app, &owner, org, script_dsl("exit 7")).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(20)).await;
    assert_eq!(done["error"], "HOST_EXIT_CODE:7", "{done}");

    // connector.action on the executor: the secret travels in that one invocation and nowhere else.
    let r = e
        .app
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "gh", "value": "ghp_agent_side_token"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.body["secret"]["id"].as_str().unwrap().to_string();
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "issue", "type": "connector.action", "config": {
            "connectorId": "github", "actionId": "issue.create",
            "input": {"repo": "octo/test", "title": "From the agent"},
            "auth": {"secretId": secret},
            "execution": {"mode": "executor"}}}]});
    let wf = published(&e.app, &owner, org, dsl).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["output"]["steps"][0]["output"]["issueNumber"].is_number());
    let evs = events(&e.app, &owner, org, wf, run).await;
    assert!(!serde_json::to_string(&evs)
        .unwrap()
        .contains("ghp_agent_side_token"));
    assert!(!done.to_string().contains("ghp_agent_side_token"));

    agent.terminate();
    let (_, stderr) = agent.exited(15).await;
    assert!(!stderr.contains("ghp_agent_side_token"), "secret logged");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_killed_mid_task_fails_the_run_and_frees_the_workspace() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-killed").await;
    let org = owner.personal_org;
    let dir = std::env::temp_dir().join(format!("vespid-kill-{}", Uuid::new_v4().simple()));
    let mut agent = real_agent(&e, &owner, &dir).await;
    let wf = published(&e.app, &owner, org, script_dsl("sleep 30")).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    // Wait until the task is running on the agent (its workspace is locked).
    for _ in 0..100 {
        if workspace_row(&e.app, org, run).await.is_some_and(|r| r.1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    agent.kill();
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "AGENT_DISCONNECTED");
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert_eq!(
        workspace_row(&e.app, org, run).await.map(|r| r.1),
        Some(false)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn calls_beyond_an_executors_max_in_flight_wait_for_a_slot() {
    let e = edge(opts()).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-capacity").await;
    let org = owner.personal_org;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.unwrap();
    // The agent allows one call at a time.
    ws.send(hello(id, org, json!([]), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_routed(&e.app, id).await;
    let wf = published(&e.app, &owner, org, shell_dsl(None, Some(30_000))).await;
    let a = start_run(&e.app, &owner, org, wf, json!({})).await;
    let b = start_run(&e.app, &owner, org, wf, json!({})).await;
    let first = next_invoke(&mut ws, 10).await;
    // The second call is held back while the first runs.
    let early = tokio::time::timeout(Duration::from_millis(500), next_invoke(&mut ws, 1)).await;
    assert!(early.is_err(), "a second call was sent beyond maxInFlight");
    send_result(
        &mut ws,
        first["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {}}),
    )
    .await;
    let second = next_invoke(&mut ws, 10).await;
    send_result(
        &mut ws,
        second["requestId"].as_str().unwrap(),
        json!({"status": "succeeded", "output": {}}),
    )
    .await;
    for run in [a, b] {
        let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(10)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
}

#[tokio::test]
async fn a_second_node_of_a_run_sees_the_files_the_first_wrote_through_a_real_agent() {
    let dir = std::env::temp_dir().join(format!("vespid-files-{}", Uuid::new_v4().simple()));
    let e = edge(opts().env("WORKSPACE_DIR", &dir.join("store").to_string_lossy())).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-files").await;
    let org = owner.personal_org;
    let agent = real_agent(&e, &owner, &dir).await;
    let node = |id: &str, script: &str| {
        json!({"id": id, "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "task": {"type": "shell", "script": script}}})
    };
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        node("write", "mkdir -p out && echo shared-bytes > out/f.txt"),
        node("read", "cat out/f.txt && echo more >> out/f.txt"),
        node("again", "cat out/f.txt"),
    ]});
    let wf = published(&e.app, &owner, org, dsl).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = done["output"]["steps"].as_array().unwrap();
    assert_eq!(steps[1]["output"]["stdout"], "shared-bytes\n");
    assert_eq!(steps[2]["output"]["stdout"], "shared-bytes\nmore\n");
    assert_eq!(
        workspace_row(&e.app, org, run).await.map(|r| (r.0, r.1)),
        Some((3, false))
    );
    agent.terminate();
    let _ = agent.exited(15).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sandbox provider as an operator would write one (here in Python, running the task on the host):
/// the task's context on stdin, the result on stdout.
const PY_PROVIDER: &str = r#"
import json, os, subprocess, sys
ctx = json.load(sys.stdin)
env = {"PATH": "/usr/bin:/bin"}
env.update(ctx["taskEnv"])
try:
    p = subprocess.run([ctx["shell"], "-c", ctx["script"]], cwd=ctx["workdirHostPath"], env=env,
                       capture_output=True, text=True, timeout=ctx["timeoutMs"] / 1000)
except subprocess.TimeoutExpired:
    print(json.dumps({"status": "failed", "error": "NODE_EXECUTION_TIMEOUT"}))
    sys.exit(0)
out = {"backend": "provider", "exitCode": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
       "network": ctx["networkMode"], "sawToken": "VESPID" in json.dumps(dict(os.environ))}
if p.returncode == 0:
    print(json.dumps({"status": "succeeded", "output": out}))
else:
    print(json.dumps({"status": "failed", "error": "PROVIDER_EXIT_CODE:%d" % p.returncode, "output": out}))
"#;

#[tokio::test]
async fn a_real_agent_runs_shell_nodes_through_an_external_sandbox_provider() {
    let dir = std::env::temp_dir().join(format!("vespid-provider-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let provider = dir.join("provider.py");
    std::fs::write(&provider, PY_PROVIDER).unwrap();
    let command = format!("python3 {}", provider.display());
    let e = edge(opts().env("WORKSPACE_DIR", &dir.join("store").to_string_lossy())).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-provider").await;
    let org = owner.personal_org;
    let agent = real_agent_args(
        &e,
        &owner,
        &dir,
        "provider",
        &["--sandbox-provider-command", &command],
    )
    .await;
    let node = |id: &str, script: &str| {
        json!({"id": id, "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "task": {"type": "shell", "script": script, "env": {"GREETING": "hello"}}}})
    };
    // Files written by one provider call are there for the next: the workspace is the agent's.
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        node("write", "echo \"$GREETING\" > f.txt"),
        node("read", "cat f.txt"),
    ]});
    let wf = published(&e.app, &owner, org, dsl).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = done["output"]["steps"].as_array().unwrap();
    let read = &steps[1]["output"];
    assert_eq!(read["backend"], "provider");
    assert_eq!(read["stdout"], "hello\n");
    // The provider is told the policy (no network), and nothing of the agent's environment.
    assert_eq!(read["network"], "none");
    assert_eq!(read["sawToken"], false);

    // A failing task fails the node with the provider's own code.
    let wf = published(&e.app, &owner, org, script_dsl("exit 5")).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "PROVIDER_EXIT_CODE:5", "{done}");
    agent.terminate();
    let _ = agent.exited(15).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn in_the_docker_sandbox_files_persist_and_escapes_are_contained() {
    let dir = std::env::temp_dir().join(format!("vespid-docker-{}", Uuid::new_v4().simple()));
    let e = edge(opts().env("WORKSPACE_DIR", &dir.join("store").to_string_lossy())).await;
    let _roles = start_roles(&e.app.state);
    let owner = e.app.signup("remote-docker").await;
    let org = owner.personal_org;
    let agent = real_agent_with(&e, &owner, &dir, "docker").await;
    let config = dir.join("agent.json").to_string_lossy().to_string();
    let node = |id: &str, script: &str, timeout: u64| {
        json!({"id": id, "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "sandbox": {"timeoutMs": timeout},
            "task": {"type": "shell", "script": script}}})
    };
    // Every escape must fail for the script to exit 0: writing outside /work, the agent's config and
    // token, any network interface but loopback, root.
    let escapes = format!(
        "! touch /etc/escaped 2>/dev/null && ! cat {config} 2>/dev/null && ! ls /root/.vespid 2>/dev/null \
         && [ \"$(ls /sys/class/net)\" = lo ] && [ \"$(id -u)\" != 0 ] && echo contained"
    );
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        node("write", "echo from-docker > f.txt && echo tmp > /tmp/t", 30_000),
        node("read", "cat f.txt", 30_000),
        node("escape", &escapes, 30_000),
    ]});
    let wf = published(&e.app, &owner, org, dsl).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = done["output"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["output"]["backend"], "docker");
    assert_eq!(steps[1]["output"]["stdout"], "from-docker\n");
    assert_eq!(steps[2]["output"]["stdout"], "contained\n");

    // Sleeping past the timeout is killed; huge output is capped.
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        node("flood", "yes | head -c 5000000; echo done", 30_000),
        node("sleep", "sleep 30", 1000),
    ]});
    let wf = published(&e.app, &owner, org, dsl).await;
    let run = start_run(&e.app, &owner, org, wf, json!({})).await;
    let started = Instant::now();
    let done = wait_terminal(&e.app, &owner, org, wf, run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "NODE_EXECUTION_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(25));
    let flood = &done["output"]["steps"][0]["output"];
    assert_eq!(flood["stdoutTruncated"], true);
    assert!(flood["stdout"].as_str().unwrap().len() <= 200_000);
    agent.terminate();
    let _ = agent.exited(20).await;
    let _ = std::fs::remove_dir_all(&dir);
}
