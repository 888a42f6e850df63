//! Node executors (workflows spec 5 and the `http.request` Decision) called directly with the real
//! `ExecDeps` of a test app: `http.request` against a local target server (echo, text, big, slow, status,
//! redirect endpoints), the target policy, secret header references, and the github connector against
//! the fake GitHub.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;
use vespid::app::config::WorkflowsConfig;
use vespid::domain::runs::executors::{execute, BlockKind, ExecCtx, ExecDeps, Outcome};
use vespid::domain::workflows::dsl::{self, Node};

use crate::common::{self, Options, TestApp, User};
use crate::fake_github::{scenario, FakeGithub};

const GH_TOKEN: &str = "ghp_fake_token_for_tests";

fn kek() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

fn options() -> Options {
    Options::default()
        .env("HTTP_NODE_ALLOW_HOSTS", "127.0.0.1")
        .env("SECRETS_KEK_ID", "k1")
        .env("SECRETS_KEK_BASE64", &kek())
}

async fn app() -> TestApp {
    common::spawn_with(options()).await
}

fn deps(app: &TestApp) -> ExecDeps {
    deps_with(app, |_| {})
}

/// The app's dependencies with some workflow settings changed (timeouts, caps, allowlist).
fn deps_with(app: &TestApp, tweak: impl FnOnce(&mut WorkflowsConfig)) -> ExecDeps {
    let mut config = app.state.config.workflows.clone();
    tweak(&mut config);
    ExecDeps {
        config: Arc::new(config),
        secrets: app.state.secrets.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

/// Runs one node of `node_type` with `config` as node `n1` of a fresh run.
async fn run_node(deps: &ExecDeps, org: Uuid, node_type: &str, config: Option<Value>) -> Outcome {
    run_in(deps, org, Uuid::new_v4(), node_type, config).await
}

async fn run_in(
    deps: &ExecDeps,
    org: Uuid,
    run_id: Uuid,
    node_type: &str,
    config: Option<Value>,
) -> Outcome {
    let node = node(node_type, config).unwrap_or_else(|e| panic!("{node_type}: {e:?}"));
    let input = json!({});
    let settings = json!({});
    let ctx = ExecCtx {
        org_id: org.into(),
        workflow_id: Uuid::new_v4().into(),
        run_id: run_id.into(),
        attempt: 1,
        requested_by: Uuid::new_v4().into(),
        node: &node,
        run_input: &input,
        steps: &[],
        settings: &settings,
    };
    execute(deps, &ctx).await
}

/// Node `n1` as the DSL reads it (typed config), or the DSL's refusal.
fn node(node_type: &str, config: Option<Value>) -> Result<Node, Vec<String>> {
    let mut doc = json!({"id": "n1", "type": node_type});
    if let (Some(c), Some(obj)) = (config, doc.as_object_mut()) {
        obj.insert("config".into(), c);
    }
    dsl::parse_node(&doc)
}

/// A config the DSL refuses: it can never be saved, so it never reaches an executor.
#[track_caller]
fn refused(node_type: &str, config: Option<Value>) {
    assert!(
        node(node_type, config.clone()).is_err(),
        "{node_type} {config:?} should be refused"
    );
}

#[track_caller]
fn succeeded(o: Outcome) -> Value {
    match o {
        Outcome::Succeeded(v) => v,
        other => panic!("expected success, got {other:?}"),
    }
}

/// `(error, retryable, output)` of a failed outcome.
#[track_caller]
fn failed(o: Outcome) -> (String, bool, Option<Value>) {
    match o {
        Outcome::Failed {
            error,
            output,
            retryable,
        } => (error, retryable, output),
        other => panic!("expected failure, got {other:?}"),
    }
}

#[track_caller]
fn fails_with(o: Outcome, code: &str, retryable: bool) {
    let (error, retry, _) = failed(o);
    assert_eq!((error.as_str(), retry), (code, retryable));
}

async fn create_secret(
    app: &TestApp,
    owner: &User,
    org: Uuid,
    connector: &str,
    name: &str,
    value: &str,
) -> Uuid {
    let r = app
        .post(&format!("/v1/orgs/{org}/secrets"))
        .by(owner)
        .org(org)
        .json(json!({"connectorId": connector, "name": name, "value": value}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["secret"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("secret id")
}

// ---------------------------------------------------------------------------------------------------
// Local target server

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

struct Target {
    base: String,
    port: u16,
    seen: Arc<Seen>,
}

impl Target {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind target");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let data = web::Data::from(seen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/echo", web::route().to(echo))
                .route("/text", web::get().to(text))
                .route("/big", web::get().to(big))
                .route("/big-json", web::get().to(big_json))
                .route("/slow", web::get().to(slow))
                .route("/status/{code}", web::route().to(status))
                .route("/redirect/{n}", web::route().to(redirect_chain))
                .route("/to", web::route().to(redirect_to))
                .route("/see-other", web::route().to(see_other))
                .route("/temporary", web::route().to(temporary))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.seen.requests.lock().expect("lock").len()
    }

    fn last_headers(&self) -> BTreeMap<String, String> {
        self.seen
            .requests
            .lock()
            .expect("lock")
            .last()
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    }
}

fn headers_of(req: &HttpRequest) -> BTreeMap<String, String> {
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn record(seen: &Seen, req: &HttpRequest) {
    seen.requests
        .lock()
        .expect("lock")
        .push((req.path().to_string(), headers_of(req)));
}

async fn echo(seen: web::Data<Seen>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    record(&seen, &req);
    HttpResponse::Ok()
        .insert_header(("X-Echo", "yes"))
        .json(json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers_of(&req),
            "body": String::from_utf8_lossy(&body),
        }))
}

async fn text(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("hello, world")
}

async fn big(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("x".repeat(50_000))
}

async fn big_json(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    let items: Vec<u32> = (0..20_000).collect();
    HttpResponse::Ok().json(items)
}

async fn slow(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    tokio::time::sleep(Duration::from_secs(3)).await;
    HttpResponse::Ok().body("late")
}

async fn status(seen: web::Data<Seen>, req: HttpRequest, code: web::Path<u16>) -> HttpResponse {
    record(&seen, &req);
    let code = actix_web::http::StatusCode::from_u16(code.into_inner()).expect("status");
    HttpResponse::build(code).json(json!({"code": code.as_u16(), "query": req.query_string()}))
}

fn found(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// `/redirect/{n}`: n redirects (relative locations) before answering like `/echo`.
async fn redirect_chain(
    seen: web::Data<Seen>,
    req: HttpRequest,
    n: web::Path<u32>,
    body: web::Bytes,
) -> HttpResponse {
    match n.into_inner() {
        0 => echo(seen, req, body).await,
        n => {
            record(&seen, &req);
            found(&format!("/redirect/{}", n - 1))
        }
    }
}

/// `/to?url=…`: one redirect to an absolute location.
async fn redirect_to(
    seen: web::Data<Seen>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    record(&seen, &req);
    found(q.get("url").map(String::as_str).unwrap_or("/echo"))
}

async fn see_other(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/echo"))
        .finish()
}

async fn temporary(seen: web::Data<Seen>, req: HttpRequest) -> HttpResponse {
    record(&seen, &req);
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/echo"))
        .finish()
}

fn get(url: &str) -> Option<Value> {
    Some(json!({"method": "GET", "url": url}))
}

// ---------------------------------------------------------------------------------------------------
// http.request

#[tokio::test]
async fn http_request_stub_and_json_round_trip() {
    let app = app().await;
    let deps = deps(&app);
    let t = Target::start();
    let org = Uuid::new_v4();

    let out = succeeded(run_node(&deps, org, "http.request", None).await);
    assert_eq!(out, json!({"accepted": true, "requestId": "n1-request"}));
    assert_eq!(t.hits(), 0);

    let out = succeeded(
        run_node(
            &deps,
            org,
            "http.request",
            Some(json!({"method": "POST", "url": t.url("/echo?q=1"),
                "headers": {"X-Custom": "v1"}, "body": {"a": [1, 2]}})),
        )
        .await,
    );
    assert_eq!(out["status"], 200);
    assert!(out["durationMs"].is_u64(), "{out}");
    assert!(out.get("truncated").is_none());
    assert_eq!(out["headers"]["x-echo"], "yes", "names lower-cased");
    assert!(out["headers"]["content-type"]
        .as_str()
        .is_some_and(|c| c.starts_with("application/json")));
    let body = &out["body"];
    assert_eq!(body["method"], "POST");
    assert_eq!(body["query"], "q=1");
    assert_eq!(body["body"], r#"{"a":[1,2]}"#);
    assert_eq!(body["headers"]["x-custom"], "v1");
    assert_eq!(body["headers"]["content-type"], "application/json");
    assert_eq!(body["headers"]["user-agent"], "vespid-worker");
    assert_eq!(
        out.as_object().map(|o| o.len()),
        Some(4),
        "exactly status, headers, body, durationMs: {out}"
    );

    // A string body is sent as text; an explicit content type wins.
    let out = succeeded(
        run_node(
            &deps,
            org,
            "http.request",
            Some(json!({"method": "PUT", "url": t.url("/echo"), "body": "plain words"})),
        )
        .await,
    );
    assert_eq!(out["body"]["body"], "plain words");
    assert_eq!(
        out["body"]["headers"]["content-type"],
        "text/plain; charset=utf-8"
    );
    let out = succeeded(
        run_node(
            &deps,
            org,
            "http.request",
            Some(
                json!({"method": "POST", "url": t.url("/echo"), "body": "<a/>",
                "headers": {"content-type": "application/xml"}}),
            ),
        )
        .await,
    );
    assert_eq!(out["body"]["headers"]["content-type"], "application/xml");

    // HEAD: no body.
    let out = succeeded(
        run_node(
            &deps,
            org,
            "http.request",
            Some(json!({"method": "HEAD", "url": t.url("/echo")})),
        )
        .await,
    );
    assert_eq!(
        (out["status"].as_u64(), out["body"].as_str()),
        (Some(200), Some(""))
    );

    // Bad configs are refused when saved (shape) or fail deterministically (values).
    refused(
        "http.request",
        Some(json!({"method": "get", "url": t.url("/echo")})),
    );
    refused("http.request", Some(json!({"method": "GET"})));
    for cfg in [
        json!({"method": "GET", "url": "not a url"}),
        json!({"method": "GET", "url": t.url("/echo"), "headers": {"bad header": "x"}}),
        json!({"method": "GET", "url": t.url("/echo"), "headers": {"x": "line\nbreak"}}),
    ] {
        fails_with(
            run_node(&deps, org, "http.request", Some(cfg)).await,
            "INVALID_NODE_CONFIG",
            false,
        );
    }
}

#[tokio::test]
async fn http_request_text_and_size_cap() {
    let app = app().await;
    let t = Target::start();
    let org = Uuid::new_v4();

    let out = succeeded(run_node(&deps(&app), org, "http.request", get(&t.url("/text"))).await);
    assert_eq!(out["body"], "hello, world");
    assert_eq!(out["headers"]["content-type"], "text/plain; charset=utf-8");

    let capped = deps_with(&app, |w| w.http_max_response_bytes = 1000);
    let out = succeeded(run_node(&capped, org, "http.request", get(&t.url("/big"))).await);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["body"], "x".repeat(1000));
    // A cut JSON body is not parsed: it stays text.
    let out = succeeded(run_node(&capped, org, "http.request", get(&t.url("/big-json"))).await);
    assert_eq!(out["truncated"], true);
    let text = out["body"].as_str().expect("text body");
    assert_eq!(text.len(), 1000);
    assert!(text.starts_with("[0,1,2,"));
    // Under the cap: parsed, no flag.
    let out = succeeded(run_node(&deps(&app), org, "http.request", get(&t.url("/big-json"))).await);
    assert!(out.get("truncated").is_none());
    assert_eq!(out["body"].as_array().map(Vec::len), Some(20_000));
}

#[tokio::test]
async fn http_request_timeout() {
    let app = app().await;
    let t = Target::start();
    let quick = deps_with(&app, |w| w.http_timeout_ms = 300);
    let started = Instant::now();
    fails_with(
        run_node(&quick, Uuid::new_v4(), "http.request", get(&t.url("/slow"))).await,
        "HTTP_TIMEOUT",
        true,
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_request_status_codes_and_network_errors() {
    let app = app().await;
    let deps = deps(&app);
    let t = Target::start();
    let org = Uuid::new_v4();

    for (code, retryable) in [
        (500, true),
        (503, true),
        (429, true),
        (408, true),
        (404, false),
        (401, false),
    ] {
        let (error, retry, output) = failed(
            run_node(
                &deps,
                org,
                "http.request",
                get(&t.url(&format!("/status/{code}"))),
            )
            .await,
        );
        assert_eq!((error, retry), (format!("HTTP_STATUS_{code}"), retryable));
        let output = output.expect("output attached");
        assert_eq!(output["status"], code);
        assert_eq!(output["body"], json!({"code": code, "query": ""}));
    }
    let out = succeeded(
        run_node(
            &deps,
            org,
            "http.request",
            Some(json!({"method": "GET", "url": t.url("/status/404"), "failOnStatus": false})),
        )
        .await,
    );
    assert_eq!(out["status"], 404);

    // Nothing listens there: a transient network failure.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    fails_with(
        run_node(
            &deps,
            org,
            "http.request",
            get(&format!("http://127.0.0.1:{port}/")),
        )
        .await,
        "HTTP_REQUEST_FAILED",
        true,
    );
}

#[tokio::test]
async fn http_request_redirects_are_followed_and_rechecked() {
    let app = app().await;
    let deps = deps(&app);
    let t = Target::start();
    let org = Uuid::new_v4();

    let out = succeeded(run_node(&deps, org, "http.request", get(&t.url("/redirect/5"))).await);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"]["path"], "/redirect/0");
    fails_with(
        run_node(&deps, org, "http.request", get(&t.url("/redirect/6"))).await,
        "HTTP_TOO_MANY_REDIRECTS",
        false,
    );

    // 303 turns a POST into a bodiless GET; 307 keeps both.
    let post = |path: &str| Some(json!({"method": "POST", "url": t.url(path), "body": {"k": 1}}));
    let out = succeeded(run_node(&deps, org, "http.request", post("/see-other")).await);
    assert_eq!(
        (out["body"]["method"].as_str(), out["body"]["body"].as_str()),
        (Some("GET"), Some(""))
    );
    assert!(out["body"]["headers"].get("content-type").is_none());
    let out = succeeded(run_node(&deps, org, "http.request", post("/temporary")).await);
    assert_eq!(
        (out["body"]["method"].as_str(), out["body"]["body"].as_str()),
        (Some("POST"), Some(r#"{"k":1}"#))
    );

    // A hop to a refused address is refused before any connection is made.
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fd00::1]/",
        "http://127.0.0.2/",
        "file:///etc/passwd",
    ] {
        let url = format!("{}?url={}", t.url("/to"), urlencode(target));
        let started = Instant::now();
        fails_with(
            run_node(&deps, org, "http.request", get(&url)).await,
            "HTTP_TARGET_FORBIDDEN",
            false,
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{target}: no connect attempt"
        );
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn http_request_refuses_private_targets_without_allowlist() {
    let app = app().await;
    let t = Target::start();
    let org = Uuid::new_v4();
    let strict = deps_with(&app, |w| w.http_allow_hosts = String::new());

    for url in [
        t.url("/echo"),
        format!("http://localhost:{}/echo", t.port),
        format!("http://[::1]:{}/echo", t.port),
        format!("http://[::ffff:127.0.0.1]:{}/echo", t.port),
        format!("http://2130706433:{}/echo", t.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "ftp://127.0.0.1/x".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        fails_with(
            run_node(&strict, org, "http.request", get(&url)).await,
            "HTTP_TARGET_FORBIDDEN",
            false,
        );
    }
    assert_eq!(t.hits(), 0, "nothing reached the loopback server");

    // Allowed by hostname, by CIDR, and (the app's own setting) by IP.
    let by_name = deps_with(&app, |w| w.http_allow_hosts = "LOCALHOST".into());
    let out = succeeded(
        run_node(
            &by_name,
            org,
            "http.request",
            get(&format!("http://localhost:{}/text", t.port)),
        )
        .await,
    );
    assert_eq!(out["body"], "hello, world");
    fails_with(
        run_node(&by_name, org, "http.request", get(&t.url("/text"))).await,
        "HTTP_TARGET_FORBIDDEN",
        false,
    );
    let by_cidr = deps_with(&app, |w| {
        w.http_allow_hosts = "10.0.0.0/8, 127.0.0.0/8".into()
    });
    succeeded(run_node(&by_cidr, org, "http.request", get(&t.url("/text"))).await);
    // A redirect from an allowed host onward to a refused one is still refused.
    let url = format!("{}?url={}", t.url("/to"), urlencode("http://192.168.1.1/"));
    fails_with(
        run_node(&by_cidr, org, "http.request", get(&url)).await,
        "HTTP_TARGET_FORBIDDEN",
        false,
    );
}

#[tokio::test]
async fn http_request_secret_headers_are_resolved_and_never_output() {
    let app = app().await;
    let deps = deps(&app);
    let t = Target::start();
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let value = "tok-s3cret-value-123";
    create_secret(&app, &owner, org, "jira", "api-token", value).await;

    let outcome = run_node(
        &deps,
        org,
        "http.request",
        Some(json!({"method": "GET", "url": t.url("/echo"),
            "headers": {"authorization": "Bearer {{secret:api-token}}", "x-key": "{{secret: api-token }}",
                        "x-plain": "visible"}})),
    )
    .await;
    assert!(!format!("{outcome:?}").contains(value), "{outcome:?}");
    let out = succeeded(outcome);
    let sent = t.last_headers();
    assert_eq!(
        sent.get("authorization").map(String::as_str),
        Some("Bearer tok-s3cret-value-123")
    );
    assert_eq!(sent.get("x-key").map(String::as_str), Some(value));
    assert_eq!(out["body"]["headers"]["authorization"], "Bearer ***");
    assert_eq!(out["body"]["headers"]["x-key"], "***");
    assert_eq!(out["body"]["headers"]["x-plain"], "visible");

    // Failing responses are scrubbed too.
    let (_, _, output) = failed(
        run_node(
            &deps,
            org,
            "http.request",
            Some(
                json!({"method": "GET", "url": format!("{}?echo={value}", t.url("/status/400")),
                "headers": {"x-key": "{{secret:api-token}}"}}),
            ),
        )
        .await,
    );
    let output = output.expect("output");
    assert!(
        output["body"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("***")),
        "{output}"
    );
    assert!(!output.to_string().contains(value));

    // Unknown name; another org's secret is invisible; a name used by two connectors is ambiguous.
    let hdr = |name: &str| {
        Some(json!({"method": "GET", "url": t.url("/echo"),
            "headers": {"x-key": format!("{{{{secret:{name}}}}}")}}))
    };
    fails_with(
        run_node(&deps, org, "http.request", hdr("nope")).await,
        "SECRET_NOT_FOUND",
        false,
    );
    let other = app.create_org(&owner).await;
    fails_with(
        run_node(&deps, other, "http.request", hdr("api-token")).await,
        "SECRET_NOT_FOUND",
        false,
    );
    create_secret(&app, &owner, org, "github", "api-token", "another-value").await;
    fails_with(
        run_node(&deps, org, "http.request", hdr("api-token")).await,
        "SECRET_AMBIGUOUS",
        false,
    );
}

// ---------------------------------------------------------------------------------------------------
// connector.action / connector.github.issue.create

fn issue_action(secret: Uuid, input: Value) -> Option<Value> {
    Some(
        json!({"connectorId": "github", "actionId": "issue.create", "input": input,
        "auth": {"secretId": secret}}),
    )
}

#[tokio::test]
async fn github_issue_create_in_cloud_mode() {
    let gh = FakeGithub::start(GH_TOKEN);
    let app = common::spawn_with(options().env("GITHUB_API_BASE_URL", &gh.base)).await;
    let deps = deps(&app);
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let secret = create_secret(&app, &owner, org, "github", "token", GH_TOKEN).await;
    let run_id = Uuid::new_v4();

    let outcome = run_in(
        &deps,
        org,
        run_id,
        "connector.action",
        issue_action(
            secret,
            json!({"repo": "octo/test", "title": "Hello", "body": "World"}),
        ),
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded(
            json!({"issueNumber": 101, "url": format!("{}/octo/test/issues/101", gh.base)})
        )
    );
    let reqs = gh.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.owner.as_str(), r.repo.as_str()), ("octo", "test"));
    assert_eq!(r.body, json!({"title": "Hello", "body": "World"}));
    let h = |k: &str| r.headers.get(k).map(String::as_str);
    assert_eq!(
        h("authorization"),
        Some(format!("Bearer {GH_TOKEN}").as_str())
    );
    assert_eq!(h("accept"), Some("application/vnd.github+json"));
    assert_eq!(h("content-type"), Some("application/json"));
    assert_eq!(h("user-agent"), Some("vespid-worker"));
    assert_eq!(
        h("x-idempotency-key"),
        Some(format!("{run_id}:n1").as_str())
    );

    // The legacy node: same call, `body` omitted when absent.
    let out = succeeded(
        run_node(
            &deps,
            org,
            "connector.github.issue.create",
            Some(
                json!({"repo": "octo/legacy", "title": "Old style", "auth": {"secretId": secret}}),
            ),
        )
        .await,
    );
    assert_eq!(out["issueNumber"], 102);
    assert_eq!(out["url"], format!("{}/octo/legacy/issues/102", gh.base));
    let last = gh.requests().pop().expect("request");
    assert_eq!(last.body, json!({"title": "Old style"}));
    refused(
        "connector.github.issue.create",
        Some(json!({"repo": "no-slash", "title": "x", "auth": {"secretId": secret}})),
    );
    // The DSL counts chars, the original UTF-16 units: a title within the one but not the other is
    // refused when the node runs.
    fails_with(
        run_node(
            &deps,
            org,
            "connector.github.issue.create",
            Some(json!({"repo": "o/r", "title": "😀".repeat(129), "auth": {"secretId": secret}})),
        )
        .await,
        "INVALID_NODE_CONFIG",
        false,
    );
}

#[tokio::test]
async fn github_issue_create_failures() {
    let gh = FakeGithub::start(GH_TOKEN);
    let app = common::spawn_with(options().env("GITHUB_API_BASE_URL", &gh.base)).await;
    let deps = deps(&app);
    let owner = app.signup("owner").await;
    let org = app.create_org(&owner).await;
    let good = create_secret(&app, &owner, org, "github", "token", GH_TOKEN).await;
    let wrong = create_secret(&app, &owner, org, "github", "stale", "ghp_revoked").await;
    let slack = create_secret(&app, &owner, org, "slack", "token", "xoxb-1").await;
    let input = json!({"repo": "octo/test", "title": "T"});
    let act = |cfg: Option<Value>| run_node(&deps, org, "connector.action", cfg);

    fails_with(
        act(issue_action(wrong, input.clone())).await,
        "GITHUB_REQUEST_FAILED:401",
        false,
    );
    fails_with(
        act(issue_action(
            good,
            json!({"repo": "octo/test", "title": scenario::SERVER_ERROR}),
        ))
        .await,
        "GITHUB_REQUEST_FAILED:500",
        true,
    );
    fails_with(
        act(issue_action(
            good,
            json!({"repo": "octo/test", "title": scenario::BAD_RESPONSE}),
        ))
        .await,
        "GITHUB_RESPONSE_INVALID",
        false,
    );
    fails_with(
        act(issue_action(Uuid::new_v4(), input.clone())).await,
        "SECRET_NOT_FOUND",
        false,
    );
    fails_with(
        act(issue_action(slack, input.clone())).await,
        "SECRET_CONNECTOR_MISMATCH",
        false,
    );
    // Another org cannot use this org's secret.
    let other = app.create_org(&owner).await;
    fails_with(
        run_node(
            &deps,
            other,
            "connector.action",
            issue_action(good, input.clone()),
        )
        .await,
        "SECRET_NOT_FOUND",
        false,
    );
    fails_with(
        act(Some(
            json!({"connectorId": "slack", "actionId": "post.message", "input": {},
            "auth": {"secretId": slack}}),
        ))
        .await,
        "ACTION_NOT_SUPPORTED:slack:post.message",
        false,
    );
    for bad in [
        json!({"repo": "octo", "title": "T"}),
        json!({"repo": "o/r"}),
        json!(null),
    ] {
        fails_with(
            act(issue_action(good, bad)).await,
            "INVALID_ACTION_INPUT",
            false,
        );
    }
    refused(
        "connector.action",
        Some(json!({"connectorId": "github", "actionId": "issue.create", "input": input})),
    );
    // Executor mode: the action is dispatched with its secret (in this one invocation only).
    match act(Some(
        json!({"connectorId": "github", "actionId": "issue.create", "input": input,
        "auth": {"secretId": good}, "execution": {"mode": "executor", "selector": {"tag": "gh"}}}),
    ))
    .await
    {
        Outcome::Blocked(b) => {
            assert_eq!(b.kind, BlockKind::ConnectorAction);
            assert_eq!(b.payload["connectorId"], "github");
            assert_eq!(b.payload["actionId"], "issue.create");
            assert_eq!(b.payload["input"], input);
            assert_eq!(b.payload["env"]["githubApiBaseUrl"], gh.base);
            assert_eq!(b.selector, Some(json!({"tag": "gh"})));
            assert_eq!(b.secret.as_ref().map(|s| s.expose()), Some(GH_TOKEN));
            assert!(!format!("{b:?}").contains(GH_TOKEN));
        }
        other => panic!("expected a block, got {other:?}"),
    }
    // Only the failing scenarios and the 401 reached GitHub; none created an issue.
    assert_eq!(gh.requests().len(), 3);

    // GitHub unreachable: transient.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let deps_down = deps_with(&app, |w| w.github_api_base_url = down);
    fails_with(
        run_node(
            &deps_down,
            org,
            "connector.action",
            issue_action(good, input.clone()),
        )
        .await,
        "HTTP_REQUEST_FAILED",
        true,
    );
}

// ---------------------------------------------------------------------------------------------------
// agent.*, v2 stubs, unknown types

#[tokio::test]
async fn agents_stubs_and_unknown_types() {
    let app = app().await;
    let deps = deps(&app);
    let org = Uuid::new_v4();
    let task = json!({"accepted": true, "taskId": "n1-task"});

    assert_eq!(
        succeeded(run_node(&deps, org, "agent.execute", None).await),
        task
    );
    assert_eq!(
        succeeded(
            run_node(
                &deps,
                org,
                "agent.execute",
                Some(json!({"task": {"type": "shell", "script": "echo hi"}}))
            )
            .await
        ),
        task
    );
    assert_eq!(
        succeeded(
            run_node(
                &deps,
                org,
                "agent.execute",
                Some(json!({"execution": {"mode": "cloud"}}))
            )
            .await
        ),
        task
    );
    match run_node(
        &deps,
        org,
        "agent.execute",
        Some(json!({"execution": {"mode": "executor", "selector": {"pool": "byon"}}})),
    )
    .await
    {
        Outcome::Blocked(b) => {
            assert_eq!(b.kind, BlockKind::AgentExecute);
            assert_eq!(b.selector, Some(json!({"pool": "byon"})));
            assert!(b.secret.is_none());
            assert_eq!(b.payload["nodeId"], "n1");
            assert_eq!(b.payload["attemptCount"], 1);
            assert_eq!(
                b.payload["node"],
                json!({"id": "n1", "type": "agent.execute",
                       "config": {"execution": {"mode": "executor", "selector": {"pool": "byon"}}}})
            );
        }
        other => panic!("expected a block, got {other:?}"),
    }
    // `agent.run` blocks on the brain; the credential travels by id only.
    let secret_id = uuid::Uuid::new_v4();
    match run_node(
        &deps,
        org,
        "agent.run",
        Some(
            json!({"llm": {"model": "m", "auth": {"secretId": secret_id}},
                    "engine": {"id": "gateway.claude.v2"},
                    "prompt": {"instructions": "x"}, "limits": {"timeoutMs": 5000}}),
        ),
    )
    .await
    {
        Outcome::Blocked(b) => {
            assert_eq!(b.kind, BlockKind::AgentRun);
            assert!(b.secret.is_none());
            assert_eq!(b.timeout_ms, Some(15_000));
            assert_eq!(b.payload["secretRefs"]["llmSecretId"], json!(secret_id));
            assert_eq!(b.payload["node"]["config"]["llm"]["provider"], "anthropic");
            assert_eq!(b.payload["node"]["config"]["prompt"]["instructions"], "x");
        }
        other => panic!("expected a block, got {other:?}"),
    }
    assert_eq!(
        succeeded(
            run_node(
                &deps,
                org,
                "condition",
                Some(json!({"path": "a", "op": "exists"}))
            )
            .await
        ),
        json!({"branch": "true"})
    );
    assert_eq!(
        succeeded(run_node(&deps, org, "parallel.join", None).await),
        json!({"joined": true})
    );
    // An unknown node type cannot be saved, so no executor is ever looked up for one.
    refused("webhook.send", None);
}
