//! Runs end to end: API creates and enqueues, a real worker (in-process or a separate `vespid` process)
//! executes against PostgreSQL and Redis; retries, resume from the failed node, v3 routing, crash recovery,
//! and the queue being down.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::common::{self, Options, TestApp, User};

const BIN: &str = env!("CARGO_BIN_EXE_vespid");

/// A local HTTP target: `/ok/{name}` counts hits, `/flaky/{name}` fails (500) the first `n` hits,
/// `/slow/{name}` answers after 3 s.
#[derive(Clone, Default)]
pub(crate) struct Target {
    hits: Arc<dashmap::DashMap<String, usize>>,
    fail_first: Arc<AtomicUsize>,
}

impl Target {
    pub(crate) fn hits(&self, name: &str) -> usize {
        self.hits.get(name).map(|v| *v).unwrap_or(0)
    }

    /// Waits (up to 15 s) until `name` was hit at least `n` times, i.e. that many calls are in flight or done.
    async fn wait_for(&self, name: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.hits(name) < n {
            assert!(
                Instant::now() < deadline,
                "{name} reached {} of {n} hits",
                self.hits(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) async fn start_target(fail_first: usize) -> (String, Target) {
    let target = Target::default();
    target.fail_first.store(fail_first, Ordering::SeqCst);
    let t = target.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        let t = t.clone();
        App::new()
            .app_data(web::Data::new(t))
            .route(
                "/ok/{name}",
                web::to(|t: web::Data<Target>, p: web::Path<String>| async move {
                    *t.hits.entry(p.into_inner()).or_insert(0) += 1;
                    HttpResponse::Ok().json(json!({"ok": true}))
                }),
            )
            .route(
                "/flaky/{name}",
                web::to(|t: web::Data<Target>, p: web::Path<String>| async move {
                    let mut n = t.hits.entry(p.into_inner()).or_insert(0);
                    *n += 1;
                    if *n <= t.fail_first.load(Ordering::SeqCst) {
                        HttpResponse::InternalServerError().json(json!({"ok": false}))
                    } else {
                        HttpResponse::Ok().json(json!({"ok": true, "hit": *n}))
                    }
                }),
            )
            .route(
                "/slow/{name}",
                web::to(|t: web::Data<Target>, p: web::Path<String>| async move {
                    *t.hits.entry(p.into_inner()).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    HttpResponse::Ok().json(json!({"slow": true}))
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (addr, target)
}

pub(crate) fn opts() -> Options {
    Options::default()
        .env("HTTP_NODE_ALLOW_HOSTS", "127.0.0.1")
        .env("WORKFLOW_RETRY_BACKOFF_MS", "1000")
        .env("WORKFLOW_LEASE_SEC", "2")
        .env("WORKFLOW_REAPER_INTERVAL_MS", "200")
        .env("WORKFLOW_STALE_QUEUED_SEC", "1")
}

/// Starts an in-process worker for this app; stopped when the returned sender is dropped or set.
pub(crate) fn start_worker(app: &TestApp) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    vespid::domain::runs::worker::spawn(app.state.worker_parts(), rx).expect("worker");
    tx
}

pub(crate) async fn published(app: &TestApp, owner: &User, org: Uuid, dsl: Value) -> Uuid {
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .by(owner)
        .org(org)
        .json(json!({"name": "wf", "dsl": dsl}))
        .send()
        .await;
    assert_eq!(r.status, 201, "create workflow: {:?}", r.body);
    let id: Uuid = r.body["workflow"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{id}/publish"))
        .by(owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "publish: {:?}", r.body);
    id
}

pub(crate) async fn start_run(
    app: &TestApp,
    user: &User,
    org: Uuid,
    wf: Uuid,
    input: Value,
) -> Uuid {
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
        .by(user)
        .org(org)
        .json(json!({"input": input}))
        .send()
        .await;
    assert_eq!(r.status, 201, "run: {:?}", r.body);
    assert_eq!(r.body["run"]["status"], "queued");
    assert_eq!(r.body["run"]["attemptCount"], 0);
    r.body["run"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("run id")
}

async fn run_json(app: &TestApp, user: &User, org: Uuid, wf: Uuid, run: Uuid) -> Value {
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
        .by(user)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["run"].clone()
}

pub(crate) async fn wait_terminal(
    app: &TestApp,
    user: &User,
    org: Uuid,
    wf: Uuid,
    run: Uuid,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = run_json(app, user, org, wf, run).await;
        if r["status"] == "succeeded" || r["status"] == "failed" {
            return r;
        }
        assert!(Instant::now() < deadline, "run did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn events(
    app: &TestApp,
    user: &User,
    org: Uuid,
    wf: Uuid,
    run: Uuid,
) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let r = app
            .get(&format!(
                "/v1/orgs/{org}/workflows/{wf}/runs/{run}/events?limit=3{q}"
            ))
            .by(user)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            assert!(r.body["nextCursor"].is_null());
            return all;
        }
        all.extend(page);
        cursor = r.body["nextCursor"].as_str().map(str::to_string);
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["nodeId"].as_str() {
            Some(n) => format!("{}:{n}", e["eventType"].as_str().unwrap_or("")),
            None => e["eventType"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

fn http_node(id: &str, url: String) -> Value {
    json!({"id": id, "type": "http.request", "config": {"method": "GET", "url": url}})
}

#[tokio::test]
async fn run_lifecycle_happy_path_with_events_and_roles() {
    let app = common::spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let (target, hits) = start_target(0).await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let outsider = app.signup("outsider").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &member, "member").await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "stub", "type": "http.request"},
        http_node("call", format!("{target}/ok/call")),
        {"id": "task", "type": "agent.execute"},
    ]});
    // Not published yet: 409.
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "draft", "dsl": dsl}))
        .send()
        .await;
    let draft = r.body["workflow"]["id"].as_str().expect("id").to_string();
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{draft}/runs"))
        .by(&member)
        .org(org)
        .json(json!({}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "CONFLICT"));

    let wf = published(&app, &owner, org, dsl).await;
    let run = start_run(&app, &member, org, wf, json!({"x": 1})).await;
    let done = wait_terminal(&app, &member, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attemptCount"], 1);
    assert_eq!(done["input"], json!({"x": 1}));
    assert_eq!(done["output"]["status"], "succeeded");
    assert_eq!(
        done["output"]["output"],
        json!({"completedNodeCount": 3, "failedNodeId": null})
    );
    assert_eq!(
        done["output"]["steps"][0]["output"],
        json!({"accepted": true, "requestId": "stub-request"})
    );
    assert_eq!(done["output"]["steps"][1]["output"]["status"], 200);
    assert_eq!(
        done["output"]["steps"][2]["output"],
        json!({"accepted": true, "taskId": "task-task"})
    );
    assert!(done["finishedAt"].is_string() && done["startedAt"].is_string());
    assert_eq!(hits.hits("call"), 1);
    let evs = events(&app, &member, org, wf, run).await;
    assert_eq!(
        kinds(&evs),
        [
            "run_started",
            "node_started:stub",
            "node_succeeded:stub",
            "node_started:call",
            "node_succeeded:call",
            "node_started:task",
            "node_succeeded:task",
            "run_succeeded"
        ]
    );
    assert!(evs.iter().all(|e| e["attemptCount"] == 1));
    assert_eq!(evs[7]["payload"], json!({"completedNodeCount": 3}));

    // Listing runs; an outsider sees nothing of it.
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs?limit=10"))
        .by(&member)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["runs"][0]["id"], run.to_string());
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}/events"))
        .by(&outsider)
        .org(org)
        .send()
        .await;
    assert_eq!(r.code(), "ORG_ACCESS_DENIED");
    // Cross-tenant by id: the outsider's own org does not have this workflow or run.
    let o = outsider.personal_org;
    let r = app
        .get(&format!("/v1/orgs/{o}/workflows/{wf}/runs/{run}"))
        .by(&outsider)
        .org(o)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    let r = app
        .post(&format!("/v1/orgs/{o}/workflows/{wf}/runs"))
        .by(&outsider)
        .org(o)
        .json(json!({}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/not-a-uuid"))
        .by(&member)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    // Body validated before org context; bad limits.
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
        .by(&member)
        .json(json!([1]))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs?limit=0"))
        .by(&member)
        .org(org)
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "BAD_REQUEST"));
}

#[tokio::test]
async fn retry_resumes_from_the_failed_node_and_deterministic_errors_fail_at_once() {
    let app = common::spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let (target, hits) = start_target(1).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
            http_node("first", format!("{target}/ok/first")),
            http_node("flaky", format!("{target}/flaky/flaky")),
        ]}),
    )
    .await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attemptCount"], 2);
    assert_eq!(
        hits.hits("first"),
        1,
        "a node that succeeded must not run again on retry"
    );
    assert_eq!(hits.hits("flaky"), 2);
    let k = kinds(&events(&app, &owner, org, wf, run).await);
    assert_eq!(
        k,
        [
            "run_started",
            "node_started:first",
            "node_succeeded:first",
            "node_started:flaky",
            "node_failed:flaky",
            "run_retried",
            "run_started",
            "node_started:flaky",
            "node_succeeded:flaky",
            "run_succeeded"
        ]
    );

    // A forbidden target is a deterministic failure: no retries, failed node recorded.
    let wf = published(&app, &owner, org, json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "meta", "type": "http.request", "config": {"method": "GET", "url": "http://169.254.169.254/latest"}},
    ]})).await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attemptCount"], 1);
    assert_eq!(done["error"], "HTTP_TARGET_FORBIDDEN");
    assert_eq!(done["output"]["status"], "failed");
    assert_eq!(done["output"]["output"]["failedNodeId"], "meta");
    let k = kinds(&events(&app, &owner, org, wf, run).await);
    assert_eq!(
        k,
        [
            "run_started",
            "node_started:meta",
            "node_failed:meta",
            "run_failed"
        ]
    );
}

#[tokio::test]
async fn attempts_run_out() {
    let app = common::spawn_with(opts().env("WORKFLOW_RETRY_ATTEMPTS", "2")).await;
    let _worker = start_worker(&app);
    let (target, _) = start_target(100).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
            http_node("down", format!("{target}/flaky/down")),
        ]}),
    )
    .await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(20)).await;
    assert_eq!(
        (
            done["status"].as_str(),
            done["attemptCount"].as_i64(),
            done["maxAttempts"].as_i64()
        ),
        (Some("failed"), Some(2), Some(2))
    );
    assert_eq!(done["error"], "HTTP_STATUS_500");
    let k = kinds(&events(&app, &owner, org, wf, run).await);
    assert_eq!(k.iter().filter(|e| *e == "run_retried").count(), 1);
    assert_eq!(k.last().map(String::as_str), Some("run_failed"));
}

#[tokio::test]
async fn v3_condition_routes_and_skips() {
    let app = common::spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(&app, &owner, org, json!({"version": "v3", "trigger": {"type": "trigger.manual"}, "graph": {
        "nodes": {
            "root": {"id": "root", "type": "http.request"},
            "cond": {"id": "cond", "type": "condition", "config": {"path": "$.flag", "op": "eq", "value": true}},
            "a": {"id": "a", "type": "http.request"},
            "b": {"id": "b", "type": "http.request"}
        },
        "edges": [
            {"id": "e1", "from": "root", "to": "cond"},
            {"id": "e2", "from": "cond", "to": "a", "kind": "cond_true"},
            {"id": "e3", "from": "cond", "to": "b", "kind": "cond_false"}
        ]}})).await;
    let run = start_run(&app, &owner, org, wf, json!({"flag": true})).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps: Vec<&str> = done["output"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["nodeId"].as_str())
        .collect();
    assert_eq!(steps, ["root", "cond", "a"]);
    assert_eq!(done["output"]["steps"][1]["output"]["result"], true);
    assert_eq!(
        done["output"]["runtime"]["graphV3"]["skipped"]["b"]["reasonCode"],
        "DEPENDENCIES_NOT_SATISFIED"
    );
    let k = kinds(&events(&app, &owner, org, wf, run).await);
    assert!(k.contains(&"node_skipped:b".to_string()), "{k:?}");
}

#[tokio::test]
async fn queue_down_answers_503_and_leaves_no_run() {
    // A Redis of our own, so stopping it does not disturb other tests.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut redis = start_redis(port);
    let app =
        common::spawn_with(opts().env("REDIS_URL", &format!("redis://127.0.0.1:{port}"))).await;
    let _worker = start_worker(&app);
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request"}]}),
    )
    .await;
    let other = app.signup("other").await;
    let other_org = other.personal_org;
    let other_wf = published(
        &app,
        &other,
        other_org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request"}]}),
    )
    .await;
    let _ = redis.kill();
    let _ = redis.wait();
    // Several tenants at once (group commit batches them together): every answer is a fast 503.
    let started = Instant::now();
    let mut creates = Vec::new();
    for _ in 0..3 {
        for (user, org, wf) in [(&owner, org, wf), (&other, other_org, other_wf)] {
            creates.push(
                app.post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
                    .by(user)
                    .org(org)
                    .json(json!({}))
                    .send(),
            );
        }
    }
    for r in futures_util::future::join_all(creates).await {
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "QUEUE_UNAVAILABLE"),
            "{:?}",
            r.body
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "503s took {:?}",
        started.elapsed()
    );
    for (user, org, wf) in [(&owner, org, wf), (&other, other_org, other_wf)] {
        let r = app
            .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
            .by(user)
            .org(org)
            .send()
            .await;
        assert_eq!(r.body["runs"], json!([]), "no run row may remain");
    }

    // Redis back: the worker, idle through the outage, reconnects and drains new runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut redis = start_redis(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    let run = loop {
        let r = app
            .post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
            .by(&owner)
            .org(org)
            .json(json!({}))
            .send()
            .await;
        if r.status == 201 {
            break r.body["run"]["id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .expect("id");
        }
        assert!(
            Instant::now() < deadline,
            "API did not recover: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded");
    let _ = redis.kill();
    let _ = redis.wait();
}

fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::test]
async fn a_stranded_queued_run_is_picked_up_by_the_sweeper() {
    let app = common::spawn_with(opts()).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"},
        "nodes": [{"id": "n", "type": "http.request"}]}),
    )
    .await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    // Simulate a crash between insert and enqueue: the queue entry is gone. The queue must have held the
    // run under these keys, and must not after: if the key names drift, this fails instead of passing
    // without testing anything.
    let queue = vespid::platform::queue::WorkQueue::new(&app.state.redis, "workflow-runs");
    assert!(
        queue.contains(org, run).await.expect("queue"),
        "the run was enqueued"
    );
    let q = format!("test:{}:workflow-runs:", app.db);
    let redis = app.state.redis.client.clone();
    let mut deleted = 0;
    for key in ["pending", "orgs", &format!("org:{org}"), "signal"] {
        let n: i64 = fred::interfaces::KeysInterface::del(&redis, format!("{q}{key}"))
            .await
            .expect("del");
        deleted += n;
    }
    assert!(deleted >= 2, "queue keys deleted: {deleted}");
    assert!(
        !queue.contains(org, run).await.expect("queue"),
        "the queue entry is gone"
    );
    let _worker = start_worker(&app);
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded");
}

/// A `vespid serve --role=worker` process for this app's database and Redis namespace.
fn worker_process(app: &TestApp) -> Child {
    Command::new(BIN)
        .args(["serve", "--role=worker", "--no-migrate"])
        .env("VESPID_ENV", "test")
        .env("DATABASE_URL", common::app_url(&app.db))
        .env("REDIS_KEY_PREFIX", format!("test:{}:", app.db))
        .env("HTTP_NODE_ALLOW_HOSTS", "127.0.0.1")
        .env("WORKFLOW_LEASE_SEC", "2")
        .env("WORKFLOW_REAPER_INTERVAL_MS", "200")
        .env("API_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker")
}

#[tokio::test]
async fn worker_killed_mid_run_another_finishes_without_repeating_nodes() {
    let app = common::spawn_with(opts()).await;
    let (target, hits) = start_target(0).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
            http_node("first", format!("{target}/ok/first")),
            http_node("slow", format!("{target}/slow/slow")),
            http_node("last", format!("{target}/ok/last")),
        ]}),
    )
    .await;
    let mut victim = worker_process(&app);
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    // Wait until the slow node is in flight, then SIGKILL the worker.
    hits.wait_for("slow", 1).await;
    let _ = victim.kill();
    let _ = victim.wait();
    let mut survivor = worker_process(&app);
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(30)).await;
    let _ = survivor.kill();
    let _ = survivor.wait();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["attemptCount"], 1,
        "a crash does not consume an attempt"
    );
    assert_eq!(
        hits.hits("first"),
        1,
        "a node that succeeded before the crash must not run again"
    );
    assert_eq!(hits.hits("last"), 1);
    let k = kinds(&events(&app, &owner, org, wf, run).await);
    assert_eq!(
        k.iter().filter(|e| *e == "node_started:slow").count(),
        2,
        "the re-execution is visible: {k:?}"
    );
    assert_eq!(k.iter().filter(|e| *e == "run_started").count(), 1);
}

/// A long run keeps its progress between full writes of its output as step rows: a worker killed past
/// them hands over to another that runs none of the recorded nodes again, and the finished run's output
/// lists every node once, in order, with the rows gone.
#[tokio::test]
async fn a_long_run_resumes_from_its_step_rows_after_a_crash() {
    const BEFORE: usize = 200;
    let app = common::spawn_with(opts()).await;
    let (target, hits) = start_target(0).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let mut nodes: Vec<Value> = (0..BEFORE)
        .map(|i| http_node(&format!("n{i:03}"), format!("{target}/ok/n{i:03}")))
        .collect();
    nodes.push(http_node("slow", format!("{target}/slow/slow")));
    nodes.extend((0..20).map(|i| http_node(&format!("z{i:02}"), format!("{target}/ok/z{i:02}"))));
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes}),
    )
    .await;
    let mut victim = worker_process(&app);
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    hits.wait_for("slow", 1).await;
    let _ = victim.kill();
    let _ = victim.wait();
    // Past the first 64 steps, progress since the last full output write (at most about a second ago)
    // lives in step rows.
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .expect("ctx");
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM workflow_run_steps WHERE run_id = $1::text::uuid",
            &[&run.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    // Usually some: unless a full output write happened to fall on the very last checkpoint.
    eprintln!("step rows left by the crashed worker: {rows}");
    let mut survivor = worker_process(&app);
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(60)).await;
    let _ = survivor.kill();
    let _ = survivor.wait();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attemptCount"], 1);
    for i in 0..BEFORE {
        assert_eq!(hits.hits(&format!("n{i:03}")), 1, "n{i:03} ran again");
    }
    assert_eq!(
        hits.hits("slow"),
        2,
        "the node in flight at the crash runs again"
    );
    let steps: Vec<String> = done["output"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["nodeId"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..BEFORE)
        .map(|i| format!("n{i:03}"))
        .chain(std::iter::once("slow".to_string()))
        .chain((0..20).map(|i| format!("z{i:02}")))
        .collect();
    assert_eq!(steps, expected);
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM workflow_run_steps WHERE run_id = $1::text::uuid",
            &[&run.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the end's full output made the rows redundant");
}

/// Restarts the shared PostgreSQL cluster, so it runs alone: `scripts/test.sh` runs the ignored tests
/// after the rest, one at a time.
#[tokio::test]
#[ignore = "restarts PostgreSQL; run alone (scripts/test.sh does)"]
async fn postgres_restart_while_runs_are_in_flight() {
    let app = common::spawn_with(opts().env("DATABASE_POOL_SIZE", "8")).await;
    let _worker = start_worker(&app);
    let (target, hits) = start_target(0).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
            http_node("first", format!("{target}/ok/first")),
            http_node("slow", format!("{target}/slow/slow")),
            http_node("last", format!("{target}/ok/last")),
        ]}),
    )
    .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(start_run(&app, &owner, org, wf, Value::Null).await);
    }
    hits.wait_for("slow", 3).await;
    let cluster = std::env::var("TEST_PG_CLUSTER").unwrap_or_else(|_| "15 main".into());
    let mut args: Vec<&str> = cluster.split_whitespace().collect();
    args.extend(["restart", "-m", "fast"]);
    let status = Command::new("pg_ctlcluster")
        .args(&args)
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restart failed");
    for run in runs {
        let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(
            done["attemptCount"], 1,
            "a database outage does not consume attempts: {done}"
        );
    }
    assert_eq!(
        hits.hits("first"),
        3,
        "first nodes checkpointed before the restart must not repeat"
    );
}

#[tokio::test]
async fn sigterm_hands_claimed_work_back() {
    let app = common::spawn_with(opts()).await;
    let (target, hits) = start_target(0).await;
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let wf = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
            http_node("slow", format!("{target}/slow/slow")),
            http_node("last", format!("{target}/ok/last")),
        ]}),
    )
    .await;
    let mut first = worker_process(&app);
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    hits.wait_for("slow", 1).await;
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    // The in-flight node finishes, the run is handed back at the node boundary, the process exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = first.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        hits.hits("last"),
        0,
        "the stopping worker must not start new nodes"
    );
    let r = run_json(&app, &owner, org, wf, run).await;
    assert_eq!(r["status"], "running", "handed back, not finished: {r}");
    let mut second = worker_process(&app);
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(20)).await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!((hits.hits("slow"), hits.hits("last")), (1, 1));
    assert_eq!(done["attemptCount"], 1);
}

#[tokio::test]
async fn queue_is_fair_across_orgs_dedups_and_recovers_expired_leases() {
    let app = common::spawn().await;
    let q = vespid::platform::queue::WorkQueue::new(&app.state.redis, "fairness");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let backlog: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    for id in &backlog {
        assert!(q.enqueue(a, *id).await.expect("enqueue"));
    }
    assert!(
        !q.enqueue(a, backlog[0]).await.expect("enqueue"),
        "an id is queued once"
    );
    let late = Uuid::new_v4();
    q.enqueue(b, late).await.expect("enqueue");
    let lease = Duration::from_secs(30);
    let first = q.claim(lease).await.expect("claim").expect("item");
    let second = q.claim(lease).await.expect("claim").expect("item");
    assert_eq!(first, (a, backlog[0]));
    assert_eq!(
        second,
        (b, late),
        "org B's single run is not starved by org A's backlog"
    );
    // A claim whose lease lapses (worker died) comes back; an acked one does not.
    let short = q
        .claim(Duration::from_millis(1))
        .await
        .expect("claim")
        .expect("item");
    q.ack(first.0, first.1).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (_, expired) = q.promote().await.expect("promote");
    assert!(expired >= 1, "expired lease promoted");
    assert!(q.contains(short.0, short.1).await.expect("contains"));
    // Delayed items wait for their time.
    let later = Uuid::new_v4();
    q.enqueue_at(b, later, chrono::Utc::now().timestamp_millis() + 60_000)
        .await
        .expect("delay");
    q.promote().await.expect("promote");
    let mut seen = Vec::new();
    while let Some((_, id)) = q.claim(lease).await.expect("claim") {
        seen.push(id);
    }
    assert!(!seen.contains(&later), "not due yet");
    assert!(seen.contains(&short.1));
    assert_eq!(seen.len(), 49, "the rest of the backlog, once each");
}

#[tokio::test]
async fn workflow_tables_are_isolated_at_the_sql_level() {
    let app = common::spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let a = app.signup("a").await;
    let b = app.signup("b").await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [{"id": "n", "type": "http.request"}]});
    let mut ids = Vec::new();
    for u in [&a, &b] {
        let org = u.personal_org;
        let wf = published(&app, u, org, dsl.clone()).await;
        let run = start_run(&app, u, org, wf, Value::Null).await;
        wait_terminal(&app, u, org, wf, run, Duration::from_secs(15)).await;
        ids.push((org, wf, run));
    }
    let (org_a, _, run_a) = ids[0];
    let (org_b, wf_b, _) = ids[1];
    let mut db = app.app_db().await;
    for table in ["workflows", "workflow_runs", "workflow_run_events"] {
        // No context: nothing.
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "{table} without context");
        // Org A's context: only A's rows, and B's rows cannot be touched.
        let tx = db.transaction().await.expect("tx");
        tx.execute(
            "SELECT set_config('app.current_org_id', $1, true)",
            &[&org_a.to_string()],
        )
        .await
        .expect("ctx");
        let other: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE organization_id <> $1::text::uuid"),
                &[&org_a.to_string()],
            )
            .await
            .expect("count")
            .get(0);
        let own: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(other, 0, "{table}: another org's rows visible");
        assert!(own > 0, "{table}: own rows invisible");
        let updated = tx
            .execute(
                &format!("UPDATE {table} SET organization_id = organization_id WHERE organization_id = $1::text::uuid"),
                &[&org_b.to_string()],
            )
            .await
            .expect("update");
        assert_eq!(updated, 0, "{table}: updated another org's rows");
        let _ = tx.rollback().await;
    }
    // Writing into org B under org A's context is refused.
    let tx = db.transaction().await.expect("tx");
    tx.execute(
        "SELECT set_config('app.current_org_id', $1, true)",
        &[&org_a.to_string()],
    )
    .await
    .expect("ctx");
    let err = tx
        .execute(
            "INSERT INTO workflow_run_events (organization_id, workflow_id, run_id, event_type) \
             VALUES ($1::text::uuid, $2::text::uuid, $3::text::uuid, 'x')",
            &[&org_b.to_string(), &wf_b.to_string(), &run_a.to_string()],
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    let _ = tx.rollback().await;
    // The reaper's index is not readable by the app role; only the definer function is.
    let err = db
        .query("SELECT * FROM workflow_run_index", &[])
        .await
        .expect_err("denied");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    db.query("SELECT * FROM app.stranded_runs(now(), 10)", &[])
        .await
        .expect("definer function callable");
}

/// An app talking to a fake GitHub, with a worker, an owner and a stored GitHub token secret.
struct GithubSetup {
    github: crate::fake_github::FakeGithub,
    app: TestApp,
    owner: User,
    org: Uuid,
    secret: Uuid,
    _worker: watch::Sender<bool>,
}

async fn github_setup(token: &str) -> GithubSetup {
    use base64::Engine as _;
    let github = crate::fake_github::FakeGithub::start(token);
    let app = common::spawn_with(
        opts()
            .env("GITHUB_API_BASE_URL", &github.base)
            .env("SECRETS_KEK_ID", "k1")
            .env(
                "SECRETS_KEK_BASE64",
                &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            ),
    )
    .await;
    let _worker = start_worker(&app);
    let owner = app.signup("owner").await;
    let org = owner.personal_org;
    let r = app
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(&owner)
        .org(org)
        .json(json!({"connectorId": "github", "name": "token", "value": token}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.body["secret"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("secret id");
    GithubSetup {
        github,
        app,
        owner,
        org,
        secret,
        _worker,
    }
}

/// The integration flow of the original (`workflow-async.integration.test.ts`): a cloud GitHub
/// `connector.action` with a real encrypted secret plus an `agent.execute` without config, through API and
/// worker; the token reaches GitHub and never appears in the run or its events.
#[tokio::test]
async fn connector_action_with_a_secret_end_to_end() {
    let token = "ghp_e2e_token_never_in_events_123";
    let GithubSetup {
        github,
        app,
        owner,
        org,
        secret,
        _worker,
    } = github_setup(token).await;
    let wf = published(&app, &owner, org, json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "issue", "type": "connector.action", "config": {"connectorId": "github", "actionId": "issue.create",
            "input": {"repo": "octo/test", "title": "Nightly failed"}, "auth": {"secretId": secret}}},
        {"id": "agent", "type": "agent.execute"},
    ]})).await;
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["attemptCount"].as_i64() >= Some(1));
    let evs = events(&app, &owner, org, wf, run).await;
    let issue = evs
        .iter()
        .find(|e| e["eventType"] == "node_succeeded" && e["nodeId"] == "issue")
        .expect("issue node succeeded");
    assert!(issue["payload"]["issueNumber"].is_number(), "{issue}");
    assert!(issue["payload"]["url"].is_string());
    let agent = evs
        .iter()
        .find(|e| e["eventType"] == "node_succeeded" && e["nodeId"] == "agent")
        .expect("agent");
    assert!(agent["payload"]["taskId"]
        .as_str()
        .is_some_and(|t| t.contains("-task") && !t.contains("enterprise")));
    let requests = github.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {token}"))
    );
    let everything = format!("{done}{}", Value::Array(evs));
    assert!(
        !everything.contains(token),
        "the token leaked into the run or its events"
    );
}

/// One decryption path: a run's node gets its secret from the same secrets service the API and the
/// tests use. With the stored ciphertext tampered, both the service and the next run refuse it the same way
/// (authenticated encryption), and the run fails deterministically without calling GitHub.
#[tokio::test]
async fn runs_decrypt_through_the_secrets_service_and_refuse_a_tampered_secret() {
    let token = "ghp_one_path_token_456";
    let GithubSetup {
        github,
        app,
        owner,
        org,
        secret,
        _worker,
    } = github_setup(token).await;
    let wf = published(&app, &owner, org, json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "issue", "type": "connector.action", "config": {"connectorId": "github", "actionId": "issue.create",
            "input": {"repo": "octo/test", "title": "One path"}, "auth": {"secretId": secret}}},
    ]})).await;

    // The service the worker holds reveals the value, and a run uses it.
    let revealed = app
        .state
        .secrets
        .reveal(org.into(), secret.into())
        .await
        .expect("reveal");
    assert_eq!(revealed.value.as_str(), token);
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(github.requests().len(), 1);

    // Tamper with the ciphertext (someone with database write access): the service and the run agree.
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "BEGIN; SELECT set_config('app.current_org_id', '{org}', true); \
         UPDATE connector_secrets SET secret_ciphertext = set_byte(secret_ciphertext, 0, \
           (get_byte(secret_ciphertext, 0) + 1) % 256) WHERE id = '{secret}'; COMMIT;"
    ))
    .await
    .expect("tamper");
    assert!(matches!(
        app.state.secrets.reveal(org.into(), secret.into()).await,
        Err(vespid::domain::secrets::SecretError::Crypto(_))
    ));
    let run = start_run(&app, &owner, org, wf, Value::Null).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "SECRET_DECRYPT_FAILED", "{done}");
    assert_eq!(
        done["attemptCount"], 1,
        "a key problem is not retried: {done}"
    );
    assert_eq!(github.requests().len(), 1, "nothing reached GitHub");
}

/// Runs waiting together are claimed together: one statement starts a batch of an org's runs, their pure
/// nodes run in memory, runs reaching a node with effects continue alone, and one commit ends the rest.
/// Every run must still get exactly its own history, every effect must happen once, and concurrent creates
/// (group commit) must answer each request for itself.
#[tokio::test]
async fn concurrent_runs_are_created_and_executed_in_batches_each_with_its_own_history() {
    let app = common::spawn_with(opts()).await;
    let (target, hits) = start_target(0).await;
    let a = app.signup("batch-a").await;
    let b = app.signup("batch-b").await;
    let pure = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "one", "type": "http.request"}, {"id": "two", "type": "agent.execute"}, {"id": "three", "type": "http.request"},
    ]});
    let mixed = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "stub", "type": "http.request"}, http_node("call", format!("{target}/ok/call")), {"id": "task", "type": "agent.execute"},
    ]});
    let (org_a, org_b) = (a.personal_org, b.personal_org);
    let wf_a = published(&app, &a, org_a, pure.clone()).await;
    let wf_b = published(&app, &b, org_b, mixed.clone()).await;
    let draft = app
        .post(&format!("/v1/orgs/{org_a}/workflows"))
        .by(&a)
        .org(org_a)
        .json(json!({"name": "draft", "dsl": pure}))
        .send()
        .await;
    let draft: Uuid = draft.body["workflow"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("draft id");

    // All at once, before any worker runs, so the queue holds a backlog to batch.
    let create = |user: &'static str, org: Uuid, wf: Uuid, i: usize| {
        let who = if user == "a" { &a } else { &b };
        app.post(&format!("/v1/orgs/{org}/workflows/{wf}/runs"))
            .by(who)
            .org(org)
            .json(json!({"input": {"i": i}}))
            .send()
    };
    let mut requests = Vec::new();
    for i in 0..12 {
        requests.push(create("a", org_a, wf_a, i));
        requests.push(create("b", org_b, wf_b, i));
    }
    requests.push(create("a", org_a, draft, 99));
    requests.push(create("a", org_a, Uuid::new_v4(), 100));
    let answers = futures_util::future::join_all(requests).await;
    let (runs, refused) = answers.split_at(24);
    assert_eq!(
        (refused[0].status.as_u16(), refused[1].status.as_u16()),
        (409, 404),
        "a draft and an unknown workflow among the batch get their own answers"
    );
    let mut ids = Vec::new();
    for (n, r) in runs.iter().enumerate() {
        assert_eq!(r.status, 201, "{:?}", r.body);
        let (user, org, wf) = if n % 2 == 0 {
            (&a, org_a, wf_a)
        } else {
            (&b, org_b, wf_b)
        };
        assert_eq!(r.body["run"]["organizationId"], org.to_string());
        assert_eq!(r.body["run"]["input"]["i"], n / 2);
        let id: Uuid = r.body["run"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        ids.push((user, org, wf, id));
    }

    let _worker = start_worker(&app);
    for &(user, org, wf, run) in &ids {
        let done = wait_terminal(&app, user, org, wf, run, Duration::from_secs(20)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attemptCount"], 1);
        assert_eq!(done["output"]["output"]["completedNodeCount"], 3);
        let nodes = if wf == wf_a {
            ["one", "two", "three"]
        } else {
            ["stub", "call", "task"]
        };
        let mut expected = vec!["run_started".to_string()];
        for n in nodes {
            expected.push(format!("node_started:{n}"));
            expected.push(format!("node_succeeded:{n}"));
        }
        expected.push("run_succeeded".into());
        let evs = events(&app, user, org, wf, run).await;
        assert_eq!(kinds(&evs), expected, "run {run}");
        assert!(evs.iter().all(|e| e["runId"] == run.to_string()));
    }
    assert_eq!(
        hits.hits("call"),
        12,
        "each run's HTTP call happened exactly once"
    );

    // The batch path really ran: runs started by one claim share their `started_at`.
    let db = app.owner_db().await;
    for org in [org_a, org_b] {
        db.execute(
            "SELECT set_config('app.current_org_id', $1, false)",
            &[&org.to_string()],
        )
        .await
        .expect("context");
        let claims: i64 = db
            .query_one("SELECT count(DISTINCT started_at) FROM workflow_runs", &[])
            .await
            .expect("count")
            .get(0);
        assert!(claims < 12, "org {org}: 12 runs took {claims} claims");
    }
}
