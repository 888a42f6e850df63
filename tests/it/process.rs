//! The `vespid` binary as a user runs it: CLI, config errors, migrate, serve with JSON logs that never
//! carry credentials, and graceful shutdown on SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_vespid");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `vespid serve` child on a free port, its output drained in the background (a full pipe would block
/// its logging and so the server).
struct Served {
    child: std::process::Child,
    base: String,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

impl Served {
    fn start(role: &str, db: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", role])
            .env("DATABASE_URL", common::app_url(db))
            .env("DATABASE_MIGRATE_URL", common::owner_url(db))
            .env("REDIS_KEY_PREFIX", format!("test:{db}:"))
            .env("API_HOST", "127.0.0.1")
            .env("API_PORT", port.to_string())
            // Any free port: parallel tests each run a gateway too.
            .env("GATEWAY_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", "0")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn vespid");
        let out = drain(child.stdout.take().expect("stdout"));
        let err = drain(child.stderr.take().expect("stderr"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            out,
            err,
        }
    }

    async fn wait_up(&self, http: &reqwest::Client) {
        for _ in 0..100 {
            if http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not come up");
    }

    /// SIGTERM, then the exit status (`None` if it did not stop within 15 s: killed) and all output.
    fn stop(mut self) -> (Option<std::process::ExitStatus>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut exited = None;
        for _ in 0..150 {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut logs = self.out.join().expect("stdout reader");
        logs.push_str(&self.err.join().expect("stderr reader"));
        (exited, logs)
    }
}

#[test]
fn help_explains_roles_and_bad_config_names_the_key() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["api", "worker", "continuation", "gateway", "all"] {
        assert!(text.contains(word), "help lacks {word}: {text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--role=all"])
        .env("ORG_CONTEXT_ENFORCEMENT", "sometimes")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ORG_CONTEXT_ENFORCEMENT") && err.contains("orgs.context_enforcement"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--role=api,nope"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["serve"])
        .env("VESPID_ENV", "production")
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "production must refuse default secrets"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.token_secret"));
}

#[tokio::test]
async fn serve_logs_json_without_credentials_and_stops_gracefully() {
    let db = common::fresh_db().await;
    let served = Served::start(
        "--role=all",
        &db,
        &[
            ("API_LOG_LEVEL", "debug"),
            ("SECRETS_KEK_ID", "k1"),
            (
                "SECRETS_KEK_BASE64",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
        ],
    );
    let base = served.base.clone();
    let http = reqwest::Client::new();
    served.wait_up(&http).await;

    // Exercise flows that handle credentials.
    let password = "Sup3r-Secret-Passw0rd";
    let email = format!("logs-{}@example.com", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("signup");
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = r.json().await.expect("json");
    let token = body["session"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let refresh = cookie.split(';').next().unwrap_or_default().to_string();
    let me: Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let org = me["defaultOrgId"].as_str().expect("org").to_string();
    let _ = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": "wrong-password"}))
        .send()
        .await;
    let _ = http
        .post(format!("{base}/v1/auth/refresh"))
        .header("cookie", &refresh)
        .send()
        .await;
    let inv: Value = http
        .post(format!("{base}/v1/orgs/{org}/invitations"))
        .bearer_auth(&token)
        .header("x-org-id", &org)
        .json(&json!({"email": "someone@example.com", "roleKey": "member"}))
        .send()
        .await
        .expect("invite")
        .json()
        .await
        .expect("json");
    let invite_token = inv["invitation"]["token"]
        .as_str()
        .expect("invite token")
        .to_string();
    // Accept as the wrong user: logs invitation_accept_failed, which must not carry the whole token.
    let _ = http
        .post(format!("{base}/v1/invitations/{invite_token}/accept"))
        .bearer_auth(&token)
        .send()
        .await;
    let secret_value = "ghp_log_canary_value_42";
    let _ = http
        .post(format!("{base}/v1/orgs/{org}/secrets"))
        .bearer_auth(&token)
        .header("x-org-id", &org)
        .json(&json!({"connectorId": "github", "name": "t", "value": secret_value}))
        .send()
        .await;
    // Outsider access: org_context_access_denied event.
    let other_org = uuid::Uuid::new_v4();
    let _ = http
        .get(format!("{base}/v1/orgs/{other_org}/settings"))
        .bearer_auth(&token)
        .header("x-org-id", other_org.to_string())
        .send()
        .await;

    // SIGTERM: graceful stop with exit code 0.
    let (exited, logs) = served.stop();
    let status = exited.expect("vespid did not stop within 15 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{logs}");

    let refresh_value = refresh.split_once('=').map(|(_, v)| v).unwrap_or_default();
    for (what, needle) in [
        ("password", password),
        ("access token", token.as_str()),
        ("refresh token", refresh_value),
        ("invitation token", invite_token.as_str()),
        ("secret value", secret_value),
    ] {
        assert!(!needle.is_empty());
        assert!(!logs.contains(needle), "{what} leaked into logs");
    }
    // Every line is JSON; the spec's events carry their exact names and fields.
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let denied = lines
        .iter()
        .find(|l| l["event"] == "org_context_access_denied")
        .expect("org_context_access_denied logged");
    for field in ["userId", "orgId", "requestId", "path", "method"] {
        assert!(denied.get(field).is_some(), "{field} missing: {denied}");
    }
    assert_eq!(denied["path"], "/v1/orgs/{orgId}/settings");
    let failed = lines
        .iter()
        .find(|l| l["event"] == "invitation_accept_failed")
        .expect("invitation_accept_failed logged");
    assert_eq!(failed["reasonCode"], "FORBIDDEN");
    assert_eq!(failed["tokenPrefix"].as_str().map(str::len), Some(8));
    assert!(
        lines
            .iter()
            .any(|l| l["request_id"].is_string() || l["span"]["request_id"].is_string()),
        "request ids in spans"
    );
}

#[tokio::test]
async fn migrate_command_is_idempotent() {
    let admin = common::pg(&common::admin_url()).await;
    let db = format!(
        "vt_{}_migrate_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .expect("create");
    let total = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    let first = format!("{total} migration(s) applied");
    for expected in [first.as_str(), "0 migration(s) applied"] {
        let out = Command::new(BIN)
            .arg("migrate")
            .env("DATABASE_MIGRATE_URL", common::owner_url(&db))
            .env("API_LOG_LEVEL", "silent")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(expected), "{text}");
    }
    let _ = admin
        .batch_execute(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .await;
}

/// A newcomer's first run: `vespid serve` as `scripts/dev.sh` starts it (development, no KEK configured)
/// says in its log that it generated a development KEK and where, and a connector secret can be stored.
#[tokio::test]
async fn first_development_start_generates_a_kek_and_says_so() {
    let db = common::fresh_db().await;
    let dir = std::env::temp_dir().join(format!("vespid-first-{}", uuid::Uuid::new_v4().simple()));
    let kek_file = dir.join("dev-kek");
    let kek_path = kek_file.to_string_lossy().to_string();
    let served = Served::start(
        "--role=api",
        &db,
        &[
            ("VESPID_ENV", "development"),
            ("SECRETS_DEV_KEK_FILE", &kek_path),
            ("API_LOG_LEVEL", "info"),
        ],
    );
    let base = served.base.clone();
    let http = reqwest::Client::new();
    served.wait_up(&http).await;
    let email = format!("first-{}@example.com", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": email, "password": "Password123"}))
        .send()
        .await
        .expect("signup");
    let body: Value = r.json().await.expect("json");
    let token = body["session"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let me: Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let org = me["defaultOrgId"].as_str().expect("org").to_string();
    let r = http
        .post(format!("{base}/v1/orgs/{org}/secrets"))
        .bearer_auth(&token)
        .header("x-org-id", &org)
        .json(&json!({"connectorId": "github", "name": "token", "value": "ghp_first"}))
        .send()
        .await
        .expect("secret");
    assert_eq!(r.status(), 201);
    let (_, logs) = served.stop();
    let line = logs
        .lines()
        .find(|l| l.contains("development install"))
        .unwrap_or_else(|| panic!("no development KEK warning in: {logs}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&kek_path), "{line}");
    assert!(kek_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker-only process has no API listener: `METRICS_ADDR` gives it one that serves `/metrics` alone
/// (open without a token), and the token is asked for there too once set.
#[tokio::test]
async fn a_worker_is_scraped_on_its_own_metrics_listener() {
    let db = common::fresh_db().await;
    let kek = [
        ("SECRETS_KEK_ID", "k1"),
        (
            "SECRETS_KEK_BASE64",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ),
    ];
    let http = reqwest::Client::new();
    for token in ["", "a-metrics-token-of-some-length"] {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = kek.to_vec();
        env.push(("METRICS_ADDR", &addr));
        env.push(("METRICS_TOKEN", token));
        let served = Served::start("--role=worker", &db, &env);
        let url = format!("http://{addr}/metrics");
        let mut up = None;
        for _ in 0..100 {
            if let Ok(r) = http.get(&url).bearer_auth(token).send().await {
                up = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = up.expect("metrics listener up");
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("body");
        assert!(text.contains("vespid_worker_slots "), "{text}");
        assert!(text.contains("vespid_db_pool_max_connections"), "{text}");
        let anonymous = http.get(&url).send().await.expect("request").status();
        assert_eq!(anonymous, if token.is_empty() { 200 } else { 401 });
        let other = http
            .get(format!("http://{addr}/v1/meta/capabilities"))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(other, 404, "the metrics listener serves nothing else");
        let (exited, logs) = served.stop();
        assert!(exited.is_some_and(|s| s.success()), "{logs}");
    }
}

/// The provider key of a session and of an `agent.run` node goes to the provider and nowhere else: not
/// into the server's logs (at debug level), whatever the turn does (a tool that cannot run, a provider
/// that refuses the key, a success).
#[tokio::test]
async fn provider_keys_never_reach_the_logs() {
    use crate::common::fake_llm::{FakeLlm, Reply};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let fake = FakeLlm::start();
    let db = common::fresh_db().await;
    let gw_port = free_port().to_string();
    let served = Served::start(
        "--role=all",
        &db,
        &[
            ("API_LOG_LEVEL", "debug"),
            ("GATEWAY_PORT", gw_port.as_str()),
            ("SECRETS_KEK_ID", "k1"),
            (
                "SECRETS_KEK_BASE64",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
            ("INFERENCE_OPENAI_BASE_URL", &fake.base),
            ("INFERENCE_MAX_ATTEMPTS", "1"),
        ],
    );
    let base = served.base.clone();
    let http = reqwest::Client::new();
    served.wait_up(&http).await;
    let email = format!("keys-{}@example.com", uuid::Uuid::new_v4().simple());
    let body: Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": email, "password": "Password123"}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    let token = body["session"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let me: Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let org = me["defaultOrgId"].as_str().expect("org").to_string();
    let post = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("x-org-id", &org)
            .json(&body)
            .send()
    };
    let canary = format!("sk-log-canary-{}", uuid::Uuid::new_v4().simple());
    let secret: Value = post(
        format!("/v1/orgs/{org}/secrets"),
        json!({"connectorId": "llm.openai", "name": "openai", "value": canary}),
    )
    .await
    .expect("secret")
    .json()
    .await
    .expect("json");
    let secret_id = secret["secret"]["id"]
        .as_str()
        .expect("secret id")
        .to_string();
    let session: Value = post(
        format!("/v1/orgs/{org}/sessions"),
        json!({"llm": {"provider": "openai", "model": "m", "auth": {"secretId": secret_id}},
               "prompt": {"instructions": "x"}, "tools": {"allow": ["shell.run"]}}),
    )
    .await
    .expect("session")
    .json()
    .await
    .expect("json");
    let session = session["session"]["id"]
        .as_str()
        .expect("session id")
        .to_string();
    // Turn 1: a tool that cannot run (shell is off for the org), turn 2: the provider refuses the key,
    // turn 3: an answer.
    fake.script([
        Reply::tool("shell__run", json!({"script": "env"})),
        Reply::status(401),
        Reply::text("fine"),
    ]);
    let mut req = format!("ws://127.0.0.1:{gw_port}/ws/client?orgId={org}")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket");
    ws.send(Message::text(
        json!({"type": "session_join", "sessionId": session}).to_string(),
    ))
    .await
    .expect("join");
    let mut ended = Vec::new();
    for m in ["one", "two", "three"] {
        ws.send(Message::text(
            json!({"type": "session_send", "sessionId": session, "message": m}).to_string(),
        ))
        .await
        .expect("send");
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .expect("a turn ended in time")
                .expect("socket open")
                .expect("frame");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).expect("json");
            if v["type"] == "session_event_v2"
                && matches!(v["eventType"].as_str(), Some("agent_message" | "error"))
            {
                ended.push(v);
                break;
            }
        }
    }
    assert_eq!(ended[0]["payload"]["code"], "TOOL_POLICY_DENIED:shell.run");
    assert_eq!(ended[1]["payload"]["code"], "OPENAI_REQUEST_FAILED:401");
    assert_eq!(ended[2]["payload"]["message"], "fine");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.headers.get("authorization") == Some(&format!("Bearer {canary}"))),
        "every call carried the key (the grep below can fail)"
    );
    let (_, logs) = served.stop();
    assert!(logs.contains("session_turn_ended"), "turns were logged");
    assert!(
        !logs.contains(&canary),
        "the provider key leaked into the logs"
    );
}
