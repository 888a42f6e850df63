//! Remote-execution benchmark driver (run it through `bench/remote.sh`, which starts the server).
//!
//! Signs up, pairs a real `vespid agent` (host backend, explicitly enabled) in one command, publishes a
//! workflow of one remote node (`agent.execute` with the script `true`), then measures:
//! - latency: runs created one at a time, enqueue (`created_at`) to `succeeded` (`finished_at`), p50/p99,
//!   read from PostgreSQL so client polling does not blur it;
//! - throughput: many runs at once through that one agent, remote tasks per second end to end.

// Test and bench code may panic on what it did not expect: that is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    token: String,
    org: String,
}

impl Ctx {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-org-id", &self.org)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn wait_done(db: &tokio_postgres::Client, wf: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row = db
            .query_one("SELECT count(*) FILTER (WHERE status IN ('succeeded','failed')) FROM workflow_runs WHERE workflow_id = $1::text::uuid", &[&wf])
            .await
            .unwrap();
        let done: i64 = row.get(0);
        if done as usize >= n || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = env("BENCH_BASE", "http://127.0.0.1:3903");
    let bin = env("BENCH_BIN", "target/release/vespid");
    let owner_url = env(
        "BENCH_OWNER_DB",
        "postgres://vespid_owner:vespid_owner@127.0.0.1:5432/vespid",
    );
    let latency_runs: usize = env("LATENCY_RUNS", "200").parse()?;
    let runs: usize = env("RUNS", "2000").parse()?;
    let conc: usize = env("CONCURRENCY", "16").parse()?;
    let http = reqwest::Client::new();
    let email = format!("bench-remote-{}@example.com", uuid::Uuid::new_v4().simple());
    let s: Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": email, "password": "Password123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = s["session"]["token"]
        .as_str()
        .ok_or("no token")?
        .to_string();
    let me: Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let org = me["defaultOrgId"].as_str().ok_or("no org")?.to_string();
    let ctx = Ctx {
        http: http.clone(),
        base: base.clone(),
        token,
        org: org.clone(),
    };

    // One command pairs the machine.
    let pairing = ctx
        .post(&format!("/v1/orgs/{org}/agents/pairing-tokens"), json!({}))
        .await;
    let pairing = pairing["token"].as_str().ok_or("no pairing token")?;
    let dir = std::env::temp_dir().join(format!(
        "vespid-bench-agent-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut agent = std::process::Command::new(&bin)
        .args([
            "agent",
            "connect",
            "--pairing-token",
            pairing,
            "--api-base",
            &base,
        ])
        .args(["--config-path", &dir.join("agent.json").to_string_lossy()])
        .args([
            "--exec-backend",
            "host",
            "--workdir-root",
            &dir.join("work").to_string_lossy(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let online = Instant::now();
    loop {
        let list: Value = http
            .get(format!("{base}/v1/orgs/{org}/agents"))
            .bearer_auth(&ctx.token)
            .header("x-org-id", &org)
            .send()
            .await?
            .json()
            .await?;
        if list["executors"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["status"] == "online"))
        {
            break;
        }
        if online.elapsed() > Duration::from_secs(30) {
            let _ = agent.kill();
            return Err("the agent never came online".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "agent paired and online in {:.0} ms (one command: vespid agent connect)",
        online.elapsed().as_secs_f64() * 1000.0
    );

    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "remote", "type": "agent.execute", "config": {
            "execution": {"mode": "executor"},
            "task": {"type": "shell", "script": "true"}}}]});
    let wf = ctx
        .post(
            &format!("/v1/orgs/{org}/workflows"),
            json!({"name": "bench-remote", "dsl": dsl}),
        )
        .await;
    let wf = wf["workflow"]["id"]
        .as_str()
        .ok_or("no workflow")?
        .to_string();
    ctx.post(&format!("/v1/orgs/{org}/workflows/{wf}/publish"), json!({}))
        .await;

    let (db, conn) = tokio_postgres::connect(&owner_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await?;

    // Latency: one at a time, each waited for (no queueing behind another run).
    let mut ids = Vec::new();
    for _ in 0..latency_runs {
        let r = ctx
            .post(
                &format!("/v1/orgs/{org}/workflows/{wf}/runs"),
                json!({"input": {}}),
            )
            .await;
        let id = r["run"]["id"].as_str().ok_or("no run")?.to_string();
        let t = Instant::now();
        loop {
            let row = db
                .query_one(
                    "SELECT status FROM workflow_runs WHERE id = $1::text::uuid",
                    &[&id],
                )
                .await?;
            let status: String = row.get(0);
            if status == "succeeded" || status == "failed" || t.elapsed() > Duration::from_secs(30)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids.push(id);
    }
    let mut lat = Vec::new();
    let mut ok = 0;
    for id in &ids {
        let row = db
            .query_one(
                "SELECT (extract(epoch FROM (finished_at - created_at)) * 1000)::float8, status \
                 FROM workflow_runs WHERE id = $1::text::uuid",
                &[id],
            )
            .await?;
        if let Some(v) = row.get::<_, Option<f64>>(0) {
            lat.push(v);
        }
        if row.get::<_, String>(1) == "succeeded" {
            ok += 1;
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "one remote no-op node, enqueue to succeeded ({ok}/{} succeeded): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ids.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // Throughput: many runs at once through the one agent.
    let started_wall = chrono::Utc::now();
    let per = runs / conc;
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, base, token, org, wf) = (
            http.clone(),
            base.clone(),
            ctx.token.clone(),
            org.clone(),
            wf.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let _ = http
                    .post(format!("{base}/v1/orgs/{org}/workflows/{wf}/runs"))
                    .bearer_auth(&token)
                    .header("x-org-id", &org)
                    .json(&json!({"input": {}}))
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    wait_done(&db, &wf, latency_runs + per * conc).await;
    let row = db
        .query_one(
            "SELECT extract(epoch FROM max(finished_at))::float8, count(*) FILTER (WHERE status = 'succeeded') \
             FROM workflow_runs WHERE workflow_id = $1::text::uuid AND created_at >= to_timestamp($2)",
            &[&wf, &(started_wall.timestamp_micros() as f64 / 1e6)],
        )
        .await?;
    let last: Option<f64> = row.get(0);
    let succeeded: i64 = row.get(1);
    let secs = last.unwrap_or(0.0) - started_wall.timestamp_micros() as f64 / 1e6;
    println!(
        "throughput: {succeeded}/{} runs succeeded in {secs:.2} s => {:.0} remote tasks/s through one agent (host backend, `true`, {conc} clients)",
        per * conc,
        succeeded as f64 / secs
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
