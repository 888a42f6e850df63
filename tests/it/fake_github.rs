//! A fake GitHub REST API on 127.0.0.1:0 speaking the issue-creation call the github connector makes:
//! `POST /repos/{owner}/{repo}/issues` with a bearer token, numbered issues from 101, and a record of
//! every request. The issue title picks failure behaviours (see [`scenario`]).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

pub mod scenario {
    /// Answers 500.
    pub const SERVER_ERROR: &str = "fail-500";
    /// Answers 201 with a body lacking `number` and `html_url`.
    pub const BAD_RESPONSE: &str = "bad-response";
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub owner: String,
    pub repo: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

struct Inner {
    base: String,
    token: String,
    next_number: Mutex<u64>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct FakeGithub {
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeGithub {
    /// Accepts only `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake github");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let inner = Arc::new(Inner {
            base: base.clone(),
            token: token.to_string(),
            next_number: Mutex::new(101),
            requests: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/repos/{owner}/{repo}/issues", web::post().to(create_issue))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self { base, inner }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("lock").clone()
    }
}

async fn create_issue(
    inner: web::Data<Inner>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (owner, repo) = path.into_inner();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect::<BTreeMap<_, _>>();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.requests.lock().expect("lock").push(Recorded {
        owner: owner.clone(),
        repo: repo.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let expected = format!("Bearer {}", inner.token);
    if headers.get("authorization") != Some(&expected) {
        return HttpResponse::Unauthorized().json(json!({
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest"
        }));
    }
    let Some(title) = body.get("title").and_then(Value::as_str) else {
        return HttpResponse::UnprocessableEntity().json(json!({"message": "Validation Failed"}));
    };
    match title {
        scenario::SERVER_ERROR => {
            return HttpResponse::InternalServerError().json(json!({"message": "boom"}))
        }
        scenario::BAD_RESPONSE => return HttpResponse::Created().json(json!({"id": 1})),
        _ => {}
    }
    let number = {
        let mut n = inner.next_number.lock().expect("lock");
        let current = *n;
        *n += 1;
        current
    };
    HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("{}/repos/{owner}/{repo}/issues/{number}", inner.base),
        ))
        .json(json!({
            "id": number * 1000,
            "number": number,
            "title": title,
            "url": format!("{}/repos/{owner}/{repo}/issues/{number}", inner.base),
            "html_url": format!("{}/{owner}/{repo}/issues/{number}", inner.base),
        }))
}
