//! The gateway's executor edge over a real WebSocket (spec gateway §2.4 and its Decisions): token
//! authentication before the upgrade, live presence (`online` exactly while connected), hellos checked
//! against the token and routed on control-plane labels only, revocation closing a live socket, pings,
//! and a newer connection replacing an older one.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::common::{spawn_with, Options, TestApp, User};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) struct Edge {
    pub(crate) app: TestApp,
    pub(crate) ws_url: String,
}

/// The api (TestApp) and a gateway on its own port, the pair response pointing at it.
pub(crate) async fn edge(opts: Options) -> Edge {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_url = format!("ws://{}/ws/executor", listener.local_addr().unwrap());
    let app = spawn_with(opts.env("GATEWAY_WS_URL", &ws_url)).await;
    let server = vespid::roles::gateway::server(&app.state, listener).unwrap();
    tokio::spawn(server);
    Edge { app, ws_url }
}

/// Pairs an executor in `owner`'s personal org with `labels` chosen at pairing; (id, token).
pub(crate) async fn paired(app: &TestApp, owner: &User, labels: Value) -> (Uuid, String) {
    let org = owner.personal_org;
    let r = crate::agents::pairing_token(app, owner, org, Some(json!({ "labels": labels }))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .post("/v1/agents/pair")
        .json(json!({
            "pairingToken": r.body["token"],
            "name": "edge-box",
            "agentVersion": "0.1.0",
            "capabilities": { "kinds": ["agent.execute", "connector.action"], "maxInFlight": 6 },
        }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (
        r.body["executorId"].as_str().unwrap().parse().unwrap(),
        r.body["executorToken"].as_str().unwrap().to_string(),
    )
}

pub(crate) async fn connect(url: &str, token: Option<&str>) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn refused_status(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

pub(crate) fn hello(id: Uuid, org: Uuid, labels: Value, max_in_flight: u32) -> Message {
    Message::text(
        json!({
            "type": "executor_hello_v2",
            "executorVersion": "0.1.0",
            "executorId": id,
            "pool": "byon",
            "organizationId": org,
            "name": "edge-box",
            "labels": labels,
            "maxInFlight": max_in_flight,
            "kinds": ["agent.execute"],
        })
        .to_string(),
    )
}

async fn status_of(app: &TestApp, owner: &User, id: Uuid) -> Value {
    let org = owner.personal_org;
    let r = app
        .get(&format!("/v1/orgs/{org}/executors"))
        .by(owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200);
    r.body["executors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.to_string())
        .cloned()
        .expect("listed")
}

/// Polls the listing until `status` (within 3 s).
async fn wait_status(app: &TestApp, owner: &User, id: Uuid, status: &str) -> Value {
    for _ in 0..60 {
        let e = status_of(app, owner, id).await;
        if e["status"] == status {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{id} never became {status}: {}",
        status_of(app, owner, id).await
    );
}

async fn route(app: &TestApp, id: Uuid) -> Option<Value> {
    let redis = &app.state.redis;
    let raw: Option<String> = fred::interfaces::KeysInterface::get(
        &redis.client,
        redis.key(&format!("executor:route:{id}")),
    )
    .await
    .unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

/// The close frame the server sends (within 3 s), skipping pings.
async fn closed_with(ws: &mut Ws) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close within 3 s");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame.reason.to_string(),
            Some(Ok(Message::Close(None))) | None => return String::new(),
            Some(Ok(_)) => continue,
            Some(Err(_)) => return String::new(),
        }
    }
}

#[tokio::test]
async fn a_connected_executor_is_online_and_routed_on_control_plane_labels() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-online").await;
    let org = owner.personal_org;
    let (id, token) = paired(&e.app, &owner, json!(["gpu"])).await;
    assert_eq!(status_of(&e.app, &owner, id).await["status"], "offline");

    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    // Online from the upgrade on, before any hello; seen now.
    let listed = wait_status(&e.app, &owner, id, "online").await;
    assert!(listed["lastSeenAt"].is_string());
    let r = route(&e.app, id).await.expect("route record");
    assert_eq!(r["labels"], json!(["gpu"]));
    assert_eq!(r["maxInFlight"], 6);
    assert_eq!(r["organizationId"], org.to_string());

    // The hello lowers maxInFlight and names kinds; its labels are only reported.
    ws.send(hello(id, org, json!(["self-promoted"]), 4))
        .await
        .unwrap();
    let mut seen = None;
    for _ in 0..40 {
        let r = route(&e.app, id).await.expect("route record");
        if r["maxInFlight"] == 4 {
            seen = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = seen.expect("hello applied");
    assert_eq!(
        r["labels"],
        json!(["gpu"]),
        "self-reported labels never route"
    );
    assert_eq!(r["kinds"], json!(["agent.execute"]));

    // A label change reaches the route with the next hello, without a reconnect.
    let put = e
        .app
        .put(&format!("/v1/orgs/{org}/executors/{id}/labels"))
        .by(&owner)
        .org(org)
        .json(json!({ "labels": ["linux"] }))
        .send()
        .await;
    assert_eq!(put.status, 200);
    ws.send(hello(id, org, json!([]), 4)).await.unwrap();
    let mut relabeled = false;
    for _ in 0..40 {
        if route(&e.app, id).await.expect("route")["labels"] == json!(["linux"]) {
            relabeled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relabeled, "labels re-read on hello");

    ws.close(None).await.unwrap();
    drop(ws);
    wait_status(&e.app, &owner, id, "offline").await;
    assert!(route(&e.app, id).await.is_none(), "route removed on close");
}

#[tokio::test]
async fn wrong_foreign_or_revoked_tokens_are_refused_before_the_upgrade() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-refuse").await;
    let other = e.app.signup("gw-other").await;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let secret = token.split_once('.').unwrap().1;

    assert_eq!(refused_status(connect(&e.ws_url, None).await), 401);
    assert_eq!(
        refused_status(connect(&e.ws_url, Some("garbage")).await),
        401
    );
    let wrong = format!("{}.{}", owner.personal_org, "x".repeat(43));
    assert_eq!(refused_status(connect(&e.ws_url, Some(&wrong)).await), 401);
    // The right secret under another org's prefix.
    let foreign = format!("{}.{secret}", other.personal_org);
    assert_eq!(
        refused_status(connect(&e.ws_url, Some(&foreign)).await),
        401
    );

    let org = owner.personal_org;
    let r = crate::agents::revoke(&e.app, &owner, org, "executors", &id.to_string()).await;
    assert_eq!(r.status, 200);
    assert_eq!(refused_status(connect(&e.ws_url, Some(&token)).await), 401);
}

#[tokio::test]
async fn revocation_closes_a_live_socket_at_once() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-revoke").await;
    let org = owner.personal_org;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    wait_status(&e.app, &owner, id, "online").await;
    // The subscription is made when the gateway starts; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = crate::agents::revoke(&e.app, &owner, org, "agents", &id.to_string()).await;
    assert_eq!(r.status, 200);
    assert_eq!(closed_with(&mut ws).await, "EXECUTOR_REVOKED");
    assert_eq!(status_of(&e.app, &owner, id).await["status"], "revoked");
    assert!(route(&e.app, id).await.is_none());
}

#[tokio::test]
async fn a_hello_naming_another_executor_closes_the_socket() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-mismatch").await;
    let org = owner.personal_org;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    ws.send(hello(Uuid::new_v4(), org, json!([]), 1))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut ws).await, "HELLO_MISMATCH");
    wait_status(&e.app, &owner, id, "offline").await;

    // Another org in the hello is refused the same way.
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    ws.send(hello(id, Uuid::new_v4(), json!([]), 1))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut ws).await, "HELLO_MISMATCH");
}

#[tokio::test]
async fn an_executor_that_stops_answering_pings_is_dropped() {
    let e = edge(Options::default().env("GATEWAY_PING_INTERVAL_MS", "200")).await;
    let owner = e.app.signup("gw-ping").await;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    // A client that never reads never answers a ping.
    let ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    wait_status(&e.app, &owner, id, "online").await;
    wait_status(&e.app, &owner, id, "offline").await;
    drop(ws);

    // One that reads (and so answers pings) stays.
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    let reader = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
        ws
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status_of(&e.app, &owner, id).await["status"], "online");
    drop(reader.await.unwrap());
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older_and_keeps_its_route() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-replace").await;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut first = connect(&e.ws_url, Some(&token)).await.expect("connect");
    wait_status(&e.app, &owner, id, "online").await;
    let first_conn = route(&e.app, id).await.expect("route")["conn"].clone();
    let mut second = connect(&e.ws_url, Some(&token)).await.expect("connect");
    assert_eq!(
        closed_with(&mut first).await,
        "REPLACED_BY_NEWER_CONNECTION"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The older connection's close did not take the newer one's route with it.
    let r = route(&e.app, id).await.expect("route kept");
    assert_ne!(r["conn"], first_conn);
    assert_eq!(status_of(&e.app, &owner, id).await["status"], "online");
    second.close(None).await.unwrap();
    wait_status(&e.app, &owner, id, "offline").await;
}

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_vespid");

/// A `vespid agent …` child process, its stderr collected.
pub(crate) struct AgentProc {
    child: std::process::Child,
    err: std::thread::JoinHandle<String>,
}

impl AgentProc {
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let mut child = std::process::Command::new(BIN)
            .arg("agent")
            .args(args)
            .env("VESPID_AGENT_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn vespid agent");
        let mut pipe = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
            s
        });
        Self { child, err }
    }

    /// Waits (up to `secs`) for the process to exit: its status and stderr.
    pub(crate) async fn exited(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        for _ in 0..secs * 20 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.err.join().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "agent did not exit within {secs} s: {}",
            self.err.join().unwrap()
        );
    }

    /// SIGKILL: the agent dies without a word (as on a crash or power loss).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(&self) {
        let pid = self.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

async fn listed_ids(app: &TestApp, owner: &User) -> Vec<Value> {
    let org = owner.personal_org;
    app.get(&format!("/v1/orgs/{org}/agents"))
        .by(owner)
        .org(org)
        .send()
        .await
        .body["executors"]
        .as_array()
        .unwrap()
        .clone()
}

/// One command pairs a machine: the real `vespid agent connect` process pairs, writes its config
/// (0600), connects and shows online; SIGTERM stops it cleanly (offline at once); `start` runs again
/// from the file; a revoked agent is disconnected and stops with a clear error.
#[tokio::test]
async fn vespid_agent_connect_pairs_and_runs_in_one_command() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-agent").await;
    let org = owner.personal_org;
    let token = crate::agents::new_token(&e.app, &owner, org).await;
    let dir = std::env::temp_dir().join(format!("vespid-agent-{}", Uuid::new_v4().simple()));
    let config_path = dir.join("agent.json");
    let config_arg = config_path.to_string_lossy().to_string();

    let agent = AgentProc::spawn(&[
        "connect",
        "--pairing-token",
        &token,
        "--api-base",
        &e.app.addr,
        "--name",
        "laptop",
        "--tags",
        "gpu, linux",
        "--config-path",
        &config_arg,
    ]);
    let mut id = None;
    for _ in 0..200 {
        let listed = listed_ids(&e.app, &owner).await;
        if let Some(x) = listed.iter().find(|x| x["status"] == "online") {
            id = Some(x["id"].as_str().unwrap().parse::<Uuid>().unwrap());
            assert_eq!(x["name"], "laptop");
            assert_eq!(x["reportedLabels"], json!(["gpu", "linux"]));
            assert_eq!(x["labels"], json!([]));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = id.expect("the agent never showed online");

    // The config: the original's keys, owner-only.
    let meta = std::fs::metadata(&config_path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["executorId"], id.to_string());
    assert_eq!(config["organizationId"], org.to_string());
    assert_eq!(config["pool"], "byon");
    assert_eq!(config["gatewayWsUrl"], e.ws_url);
    assert!(config["executorToken"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{org}.")));

    agent.terminate();
    let (status, stderr) = agent.exited(10).await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        !stderr.contains(config["executorToken"].as_str().unwrap()),
        "token logged"
    );
    wait_status(&e.app, &owner, id, "offline").await;

    // `start` from the file.
    let agent = AgentProc::spawn(&["start", "--config-path", &config_arg]);
    wait_status(&e.app, &owner, id, "online").await;
    let r = crate::agents::revoke(&e.app, &owner, org, "agents", &id.to_string()).await;
    assert_eq!(r.status, 200);
    let (status, stderr) = agent.exited(15).await;
    assert!(!status.success());
    assert!(stderr.contains("EXECUTOR_TOKEN_REFUSED"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn vespid_agent_connect_with_a_bad_token_says_why() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-agent-bad").await;
    let dir = std::env::temp_dir().join(format!("vespid-agent-{}", Uuid::new_v4().simple()));
    let config_arg = dir.join("agent.json").to_string_lossy().to_string();
    let bad = format!("{}.nope", owner.personal_org);
    let agent = AgentProc::spawn(&[
        "connect",
        "--pairing-token",
        &bad,
        "--api-base",
        &e.app.addr,
        "--config-path",
        &config_arg,
    ]);
    let (status, stderr) = agent.exited(10).await;
    assert!(!status.success());
    assert!(stderr.contains("PAIRING_TOKEN_INVALID"), "{stderr}");
    assert!(!dir.join("agent.json").exists());
}

/// On shutdown the gateway closes its executors' sockets (they reconnect elsewhere or later) instead of
/// holding the process for the grace period.
#[tokio::test]
async fn shutdown_closes_every_executor_socket() {
    let e = edge(Options::default()).await;
    let owner = e.app.signup("gw-shutdown").await;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    wait_status(&e.app, &owner, id, "online").await;
    assert_eq!(e.app.state.gateway.connected(), 1);
    e.app
        .state
        .gateway
        .close_all(vespid::domain::gateway::CloseWhy::Shutdown);
    assert_eq!(closed_with(&mut ws).await, "GATEWAY_SHUTDOWN");
    wait_status(&e.app, &owner, id, "offline").await;
    assert_eq!(e.app.state.gateway.connected(), 0);
}

/// A revocation whose announcement never came (here: written straight to the database) still closes
/// the socket: revocation is re-read every few pings, hello or not.
#[tokio::test]
async fn a_missed_revocation_still_closes_the_socket() {
    let e = edge(Options::default().env("GATEWAY_PING_INTERVAL_MS", "200")).await;
    let owner = e.app.signup("gw-missed").await;
    let org = owner.personal_org;
    let (id, token) = paired(&e.app, &owner, json!([])).await;
    let mut ws = connect(&e.ws_url, Some(&token)).await.expect("connect");
    wait_status(&e.app, &owner, id, "online").await;
    let db = e.app.owner_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false); \
         UPDATE organization_executors SET revoked_at = now() WHERE id = '{id}'"
    ))
    .await
    .unwrap();
    assert_eq!(closed_with(&mut ws).await, "EXECUTOR_REVOKED");
    assert!(route(&e.app, id).await.is_none());
}
