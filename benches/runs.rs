//! Run-throughput benchmark driver (run it through `bench/runs.sh`, which starts the servers).
//!
//! Signs up, publishes a 3-node workflow of cheap nodes, creates `RUNS` runs through the API with
//! `CONCURRENCY` parallel clients, waits until all succeeded, then reads the runs' timestamps from
//! PostgreSQL: end-to-end runs/s, enqueue-to-started p50/p99, and per-node overhead.

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

/// Creates and publishes a v2 workflow of `nodes` cheap nodes (stubbed HTTP calls and cloud agent steps).
async fn publish(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    org: &str,
    nodes: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    let list: Vec<Value> = (0..nodes)
        .map(|i| {
            let kind = if i % 3 == 1 {
                "agent.execute"
            } else {
                "http.request"
            };
            json!({"id": format!("n{i}"), "type": kind})
        })
        .collect();
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": list});
    let wf: Value = http
        .post(format!("{base}/v1/orgs/{org}/workflows"))
        .bearer_auth(token)
        .header("x-org-id", org)
        .json(&json!({"name": format!("bench-{nodes}"), "dsl": dsl}))
        .send()
        .await?
        .json()
        .await?;
    let id = wf["workflow"]["id"]
        .as_str()
        .ok_or_else(|| format!("create workflow: {wf}"))?
        .to_string();
    http.post(format!("{base}/v1/orgs/{org}/workflows/{id}/publish"))
        .bearer_auth(token)
        .header("x-org-id", org)
        .send()
        .await?;
    Ok(id)
}

/// Creates `n` runs of `wf` one at a time (5 ms apart) and returns their enqueue-to-started and execution
/// times in ms, each sorted.
async fn probe(
    http: &reqwest::Client,
    db: &tokio_postgres::Client,
    base: &str,
    token: &str,
    org: &str,
    wf: &str,
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>), Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r: Value = http
            .post(format!("{base}/v1/orgs/{org}/workflows/{wf}/runs"))
            .bearer_auth(token)
            .header("x-org-id", org)
            .json(&json!({"input": {"probe": true}}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = r["run"]["id"].as_str() {
            ids.push(id.to_string());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut queue, mut exec) = (Vec::new(), Vec::new());
    for id in &ids {
        let row = db
            .query_one(
                "SELECT (extract(epoch FROM (started_at - created_at)) * 1000)::float8, \
                        (extract(epoch FROM (finished_at - started_at)) * 1000)::float8 \
                 FROM workflow_runs WHERE id = $1::text::uuid",
                &[id],
            )
            .await?;
        if let Some(v) = row.get::<_, Option<f64>>(0) {
            queue.push(v);
        }
        if let Some(v) = row.get::<_, Option<f64>>(1) {
            exec.push(v);
        }
    }
    queue.sort_by(|a, b| a.total_cmp(b));
    exec.sort_by(|a, b| a.total_cmp(b));
    Ok((queue, exec))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = env("BENCH_BASE", "http://127.0.0.1:3901");
    let owner_url = env(
        "BENCH_OWNER_DB",
        "postgres://vespid_owner:vespid_owner@127.0.0.1:5432/vespid",
    );
    let runs: usize = env("RUNS", "3000").parse()?;
    let conc: usize = env("CONCURRENCY", "32").parse()?;
    let http = reqwest::Client::new();

    let email = format!("bench-runs-{}@example.com", uuid::Uuid::new_v4().simple());
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
    let wf = publish(&http, &base, &token, &org, 3).await?;
    let started = Instant::now();
    let started_wall = chrono::Utc::now();
    let per = runs / conc;
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, base, token, org, wf) = (
            http.clone(),
            base.clone(),
            token.clone(),
            org.clone(),
            wf.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..per {
                let r = http
                    .post(format!("{base}/v1/orgs/{org}/workflows/{wf}/runs"))
                    .bearer_auth(&token)
                    .header("x-org-id", &org)
                    .json(&json!({"input": {"n": 1}}))
                    .send()
                    .await;
                if !matches!(r, Ok(ref r) if r.status().as_u16() == 201) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut create_failed = 0;
    for t in tasks {
        create_failed += t.await?;
    }
    let created = per * conc - create_failed;
    let create_secs = started.elapsed().as_secs_f64();

    let (db, conn) = tokio_postgres::connect(&owner_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await?;
    // Poll gently (a count over thousands of runs is real load on the database we measure), and take the
    // end time from the last run's `finished_at`, so the polling interval does not blur the figure.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row = db
            .query_one("SELECT count(*) FILTER (WHERE status IN ('succeeded','failed')) FROM workflow_runs WHERE workflow_id = $1::text::uuid", &[&wf])
            .await?;
        let done: i64 = row.get(0);
        if done as usize >= created || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last: Option<f64> = db
        .query_one(
            "SELECT extract(epoch FROM max(finished_at))::float8 FROM workflow_runs WHERE workflow_id = $1::text::uuid",
            &[&wf],
        )
        .await?
        .get(0);
    let start_epoch = started_wall.timestamp_micros() as f64 / 1e6;
    let total_secs = last
        .map(|t| t - start_epoch)
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let rows = db
        .query(
            "SELECT (extract(epoch FROM (started_at - created_at)) * 1000)::float8, (extract(epoch FROM (finished_at - started_at)) * 1000)::float8, status \
             FROM workflow_runs WHERE workflow_id = $1::text::uuid",
            &[&wf],
        )
        .await?;
    let mut queue_ms: Vec<f64> = Vec::new();
    let mut exec_ms: Vec<f64> = Vec::new();
    let mut succeeded = 0;
    for r in &rows {
        let q: Option<f64> = r.get(0);
        let e: Option<f64> = r.get(1);
        if let Some(q) = q {
            queue_ms.push(q);
        }
        if let Some(e) = e {
            exec_ms.push(e);
        }
        if r.get::<_, String>(2) == "succeeded" {
            succeeded += 1;
        }
    }
    queue_ms.sort_by(|a, b| a.total_cmp(b));
    exec_ms.sort_by(|a, b| a.total_cmp(b));
    // Probes without a backlog: runs created one at a time, so enqueue-to-started is the queue's own
    // latency rather than waiting behind thousands of earlier runs. A second workflow with 13 nodes gives
    // the marginal cost of a node: the difference in execution time over the 10 extra nodes, which leaves
    // out what every run pays once (its claim and its final write).
    let probes: usize = env("LATENCY_RUNS", "200").parse()?;
    let (probe_q, probe_e3) = probe(&http, &db, &base, &token, &org, &wf, probes).await?;
    let wf13 = publish(&http, &base, &token, &org, 13).await?;
    let (_, probe_e13) = probe(&http, &db, &base, &token, &org, &wf13, probes).await?;

    println!("runs created: {created} (failed to create: {create_failed}) in {create_secs:.2}s with {conc} clients");
    println!(
        "runs succeeded: {succeeded}/{created} in {total_secs:.2}s => {:.0} runs/s end to end",
        succeeded as f64 / total_secs
    );
    println!(
        "enqueue-to-started under the burst (includes waiting behind the backlog): p50 {:.2} ms, p99 {:.2} ms",
        pct(&queue_ms, 0.5),
        pct(&queue_ms, 0.99)
    );
    println!(
        "enqueue-to-started without backlog ({} runs created one at a time): p50 {:.2} ms, p99 {:.2} ms",
        probe_q.len(),
        pct(&probe_q, 0.5),
        pct(&probe_q, 0.99)
    );
    println!(
        "run execution under the burst (3 nodes; includes waiting for CPU behind the backlog): p50 {:.2} ms, p99 {:.2} ms",
        pct(&exec_ms, 0.5),
        pct(&exec_ms, 0.99),
    );
    println!(
        "run execution without backlog: 3 nodes p50 {:.2} ms, 13 nodes p50 {:.2} ms",
        pct(&probe_e3, 0.5),
        pct(&probe_e13, 0.5),
    );
    println!(
        "per-node overhead p50: {:.3} ms marginal ((13-node - 3-node) / 10); {:.3} ms all-in (3-node run / 3)",
        (pct(&probe_e13, 0.5) - pct(&probe_e3, 0.5)) / 10.0,
        pct(&probe_e3, 0.5) / 3.0,
    );
    Ok(())
}
