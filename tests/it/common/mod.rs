//! Test harness: one migrated template database per test process, cloned for every test; the real app
//! started in-process on 127.0.0.1:0 against it, talking to the real Redis under a per-test key prefix.

#![allow(dead_code)]

pub mod fake_llm;
pub mod routes;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;
use vespid::app::config::Config;
use vespid::app::state::AppState;
use vespid::domain::meta::provider::EnterpriseProvider;

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static CREATE_LOCK: Mutex<()> = Mutex::const_new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

pub const PASSWORD: &str = "Password123";

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn admin_url() -> String {
    env(
        "TEST_DATABASE_ADMIN_URL",
        "postgres://vespid_owner:vespid_owner@127.0.0.1:5432/postgres",
    )
}

/// `postgres://user:pass@host:port/<db>` with the database replaced.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{db}")
}

pub fn app_url(db: &str) -> String {
    with_db(
        &env(
            "DATABASE_URL",
            "postgres://vespid_app:vespid_app@127.0.0.1:5432/vespid",
        ),
        db,
    )
}

pub fn owner_url(db: &str) -> String {
    with_db(
        &env(
            "DATABASE_MIGRATE_URL",
            "postgres://vespid_owner:vespid_owner@127.0.0.1:5432/vespid",
        ),
        db,
    )
}

pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Test databases are named `vt_<pid>_…` or `vt_tpl_<pid>`: is that process still running?
fn owner_alive(db: &str) -> bool {
    let pid = db
        .trim_start_matches("vt_tpl_")
        .trim_start_matches("vt_")
        .split('_')
        .next()
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

async fn template() -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("vt_tpl_{}", std::process::id());
            let admin = pg(&admin_url()).await;
            // Leftovers of earlier runs.
            let old = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'vt\\_%'",
                    &[],
                )
                .await
                .expect("list databases");
            for row in old {
                let db: String = row.get(0);
                // Only databases of test processes that are gone: another run may be using its own.
                if owner_alive(&db) {
                    continue;
                }
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .await;
            }
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create template database");
            vespid::platform::db::migrate::run(&owner_url(&name))
                .await
                .expect("migrate template");
            name
        })
        .await
        .clone()
}

/// A fresh, migrated database for one test.
pub async fn fresh_db() -> String {
    let tpl = template().await;
    let name = format!(
        "vt_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let _guard = CREATE_LOCK.lock().await;
    let admin = pg(&admin_url()).await;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{tpl}\" STRATEGY FILE_COPY"
        ))
        .await
        .expect("clone template");
    name
}

pub struct TestApp {
    pub addr: String,
    pub db: String,
    pub config: Config,
    pub state: AppState,
    pub http: reqwest::Client,
}

#[derive(Default)]
pub struct Options {
    pub env: Vec<(String, String)>,
    pub provider: Option<Arc<dyn EnterpriseProvider>>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

pub async fn spawn() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    let db = fresh_db().await;
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("DATABASE_URL".into(), app_url(&db));
    vars.insert("DATABASE_MIGRATE_URL".into(), owner_url(&db));
    vars.insert(
        "REDIS_URL".into(),
        env("REDIS_URL", "redis://127.0.0.1:6379"),
    );
    vars.insert("REDIS_KEY_PREFIX".into(), format!("test:{db}:"));
    vars.insert("API_LOG_LEVEL".into(), env("TEST_LOG_LEVEL", "silent"));
    vars.insert("DATABASE_POOL_SIZE".into(), "4".into());
    for (k, v) in opts.env {
        vars.insert(k, v);
    }
    // Not a development install unless a test says so: no KEK is generated behind a test's back.
    if !vars.contains_key("VESPID_ENV") && !vars.contains_key("NODE_ENV") {
        vars.insert("VESPID_ENV".into(), "test".into());
    }
    let config = Config::load_with(None, |name| vars.get(name).cloned()).expect("test config");
    vespid::app::telemetry::init(&config);
    let state = AppState::build(config.clone(), opts.provider)
        .await
        .expect("app state");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let mut cfg = state.config.as_ref().clone();
    cfg.server.workers = 1;
    let server_state = AppState {
        config: Arc::new(cfg),
        ..state.clone()
    };
    let server = vespid::roles::api::server(server_state, listener).expect("server");
    tokio::spawn(server);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // Below the server's keep-alive (5 s), so an idle pooled connection the server is closing is
        // never reused (that race surfaces as "incomplete message").
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .expect("http client");
    TestApp {
        addr,
        db,
        config,
        state,
        http,
    }
}

/// What a request returned.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    /// The value of a cookie set by this response (`None` if not set).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie_line(name)
            .and_then(|l| l.split(';').next().map(str::to_string))
            .and_then(|kv| kv.split_once('=').map(|(_, v)| v.to_string()))
    }
    pub fn set_cookie_line(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A request under construction.
pub struct Req<'a> {
    app: &'a TestApp,
    builder: reqwest::RequestBuilder,
}

impl<'a> Req<'a> {
    pub fn bearer(mut self, token: &str) -> Self {
        self.builder = self.builder.bearer_auth(token);
        self
    }
    pub fn org(mut self, org: impl std::fmt::Display) -> Self {
        self.builder = self.builder.header("x-org-id", org.to_string());
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.builder = self.builder.header(k, v);
        self
    }
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header("cookie", format!("{name}={value}"));
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.builder = self.builder.json(&body);
        self
    }
    pub fn raw(mut self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }
    pub fn by(self, u: &User) -> Self {
        self.bearer(&u.token)
    }
    pub async fn send(self) -> Resp {
        let _ = self.app;
        let res = self.builder.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// A signed-up user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub session_id: Uuid,
    pub cookie: String,
    pub personal_org: Uuid,
}

impl TestApp {
    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            app: self,
            builder: self.http.request(method, format!("{}{}", self.addr, path)),
        }
    }
    pub fn get(&self, path: &str) -> Req<'_> {
        self.req(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Req<'_> {
        self.req(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> Req<'_> {
        self.req(Method::PUT, path)
    }
    pub fn delete(&self, path: &str) -> Req<'_> {
        self.req(Method::DELETE, path)
    }

    pub fn unique_email(&self, tag: &str) -> String {
        format!("{tag}-{}@example.com", Uuid::new_v4().simple())
    }

    pub async fn signup(&self, tag: &str) -> User {
        let email = self.unique_email(tag);
        self.signup_email(&email).await
    }

    pub async fn signup_email(&self, email: &str) -> User {
        let r = self
            .post("/v1/auth/signup")
            .json(json!({ "email": email, "password": PASSWORD }))
            .send()
            .await;
        assert_eq!(r.status, 201, "signup: {:?}", r.body);
        let token = r.body["session"]["token"]
            .as_str()
            .expect("token")
            .to_string();
        let me = self.get("/v1/me").bearer(&token).send().await;
        User {
            id: r.body["user"]["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("user id"),
            email: email.to_lowercase(),
            session_id: r.body["session"]["sessionId"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("session id"),
            cookie: r.cookie("vespid_session").expect("refresh cookie"),
            personal_org: me.body["defaultOrgId"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("org"),
            token,
        }
    }

    /// Creates an org owned by `owner`.
    pub async fn create_org(&self, owner: &User) -> Uuid {
        let slug = format!("org-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let r = self
            .post("/v1/orgs")
            .by(owner)
            .json(json!({ "name": "Test Org", "slug": slug }))
            .send()
            .await;
        assert_eq!(r.status, 201, "create org: {:?}", r.body);
        r.body["organization"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("org id")
    }

    /// Invites `user` into `org` with `role` and accepts; returns nothing, asserts success.
    pub async fn add_member(&self, org: Uuid, inviter: &User, user: &User, role: &str) {
        let r = self
            .post(&format!("/v1/orgs/{org}/invitations"))
            .by(inviter)
            .org(org)
            .json(json!({ "email": user.email, "roleKey": role }))
            .send()
            .await;
        assert_eq!(r.status, 201, "invite: {:?}", r.body);
        let token = r.body["invitation"]["token"]
            .as_str()
            .expect("token")
            .to_string();
        let r = self
            .post(&format!("/v1/invitations/{token}/accept"))
            .by(user)
            .send()
            .await;
        assert_eq!(r.status, 200, "accept: {:?}", r.body);
    }

    /// Owner-role connection to this test's database (bypasses nothing: FORCE RLS applies to it too).
    pub async fn owner_db(&self) -> tokio_postgres::Client {
        pg(&owner_url(&self.db)).await
    }

    /// The application role's connection to this test's database.
    pub async fn app_db(&self) -> tokio_postgres::Client {
        pg(&app_url(&self.db)).await
    }
}
