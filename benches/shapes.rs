//! Workflow-shape benchmark driver (run it through `bench/shapes.sh`, which starts the server).
//!
//! Times what hostile or merely large workflows cost: creating (validating) a v3 "ladder" of 1,000 rungs,
//! a complete graph of 100 joins and a 5,000-node chain; and running chains of HTTP nodes (calls to a local
//! target) of 100 and 5,000 nodes, to show that a node costs the same in a long run as in a short one.

// Bench code may panic on what it did not expect: that is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn join(id: &str) -> Value {
    json!({"id": id, "type": "parallel.join"})
}

fn edge(n: usize, from: &str, to: &str) -> Value {
    json!({"id": format!("e{n}"), "from": from, "to": to})
}

fn v3(nodes: Map<String, Value>, edges: Vec<Value>) -> Value {
    json!({"version": "v3", "trigger": {"type": "trigger.manual"}, "graph": {"nodes": nodes, "edges": edges}})
}

fn ladder(k: usize) -> Value {
    let (mut nodes, mut edges) = (Map::new(), Vec::new());
    for i in 0..k {
        let (s, j) = (format!("s{i:05}"), format!("j{i:05}"));
        nodes.insert(s.clone(), join(&s));
        nodes.insert(j.clone(), join(&j));
        edges.push(edge(edges.len(), &s, &j));
        if i + 1 < k {
            edges.push(edge(edges.len(), &s, &format!("s{:05}", i + 1)));
        }
        if i > 0 {
            edges.push(edge(edges.len(), &format!("j{:05}", i - 1), &j));
        }
    }
    v3(nodes, edges)
}

fn complete(n: usize) -> Value {
    let (mut nodes, mut edges) = (Map::new(), Vec::new());
    for i in 0..n {
        let id = format!("n{i:03}");
        nodes.insert(id.clone(), join(&id));
        for j in i + 1..n {
            edges.push(edge(edges.len(), &id, &format!("n{j:03}")));
        }
    }
    v3(nodes, edges)
}

fn chain(n: usize, url: Option<&str>) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| match url {
            Some(u) => json!({"id": format!("n{i:05}"), "type": "http.request", "config": {"method": "GET", "url": u}}),
            None => json!({"id": format!("n{i:05}"), "type": "http.request"}),
        })
        .collect();
    json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes})
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    org: String,
}

impl Api {
    async fn create(&self, dsl: &Value) -> (String, Duration, usize) {
        let body = json!({"name": "shape", "dsl": dsl});
        let bytes = body.to_string().len();
        let started = Instant::now();
        let r: Value = self
            .http
            .post(format!("{}/v1/orgs/{}/workflows", self.base, self.org))
            .bearer_auth(&self.token)
            .header("x-org-id", &self.org)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let took = started.elapsed();
        let id = r["workflow"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("create: {r}"))
            .to_string();
        (id, took, bytes)
    }

    async fn run(&self, dsl: &Value) -> (Duration, usize) {
        let (wf, _, _) = self.create(dsl).await;
        let path = format!("{}/v1/orgs/{}/workflows/{wf}", self.base, self.org);
        self.http
            .post(format!("{path}/publish"))
            .bearer_auth(&self.token)
            .header("x-org-id", &self.org)
            .send()
            .await
            .unwrap();
        let started = Instant::now();
        let r: Value = self
            .http
            .post(format!("{path}/runs"))
            .bearer_auth(&self.token)
            .header("x-org-id", &self.org)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let run = r["run"]["id"].as_str().unwrap().to_string();
        loop {
            let r: Value = self
                .http
                .get(format!("{path}/runs/{run}"))
                .bearer_auth(&self.token)
                .header("x-org-id", &self.org)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match r["run"]["status"].as_str() {
                Some("succeeded") => {
                    let steps = r["run"]["output"]["steps"].as_array().map_or(0, Vec::len);
                    return (started.elapsed(), steps);
                }
                Some("failed") => panic!("run failed: {}", r["run"]["error"]),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "run did not finish"
            );
        }
    }
}

async fn target() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}/ok", listener.local_addr().unwrap());
    let server = HttpServer::new(|| {
        App::new().route(
            "/ok",
            web::to(|| async { HttpResponse::Ok().json(json!({"ok": true})) }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    addr
}

#[tokio::main]
async fn main() {
    let base = env("BENCH_BASE", "http://127.0.0.1:3903");
    let http = reqwest::Client::new();
    let email = format!("shapes-{}@example.com", uuid::Uuid::new_v4().simple());
    let r: Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": email, "password": "Password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["session"]["token"].as_str().unwrap().to_string();
    let me: Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = me["defaultOrgId"].as_str().unwrap().to_string();
    let api = Api {
        http,
        base,
        token,
        org,
    };
    println!("== creating (validating) workflows through the API");
    for (name, dsl) in [
        ("v3 ladder, 1,000 rungs (2,000 joins)", ladder(1000)),
        ("v3 complete graph, 100 joins (4,950 edges)", complete(100)),
        ("v2 chain, 5,000 nodes", chain(5000, None)),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let (_, took, b) = api.create(&dsl).await;
            times.push(took.as_secs_f64() * 1000.0);
            bytes = b;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<45} {:>7} KB   p50 {:>7.1} ms   max {:>7.1} ms",
            bytes / 1024,
            times[2],
            times[4]
        );
    }
    println!("== running chains of HTTP nodes (each calls a local target; every node is committed around)");
    let url = target().await;
    let mut per_node = Vec::new();
    for n in [100usize, 5000] {
        let (took, steps) = api.run(&chain(n, Some(&url))).await;
        assert_eq!(steps, n);
        let ms = took.as_secs_f64() * 1000.0;
        per_node.push(ms / n as f64);
        println!(
            "chain of {n:>5} HTTP nodes: {:>9.0} ms end to end, {:>6.2} ms per node",
            ms,
            ms / n as f64
        );
    }
    println!("== stub chain (pure nodes, one commit)");
    let (took, steps) = api.run(&chain(5000, None)).await;
    println!(
        "chain of {steps} stub nodes: {:.0} ms end to end",
        took.as_secs_f64() * 1000.0
    );
    println!(
        "per-node cost, 5,000-node chain / 100-node chain: {:.2}",
        per_node[1] / per_node[0]
    );
}
