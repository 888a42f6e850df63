//! `/metrics`: protected by METRICS_TOKEN on the API listener (404 there without one), parsed as the
//! Prometheus text format, and its counters move as requests and runs happen.

use std::io::BufRead;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

use crate::common::{self, TestApp};
use crate::runs::{opts, published, start_run, start_target, start_worker, wait_terminal};

const TOKEN: &str = "metrics-token-for-tests";

async fn scrape(app: &TestApp) -> Scrape {
    let res = app
        .http
        .get(format!("{}/metrics", app.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = res.text().await.expect("body");
    Scrape::parse(text.as_bytes().lines()).expect("prometheus text format")
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn counter(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        None => 0.0,
        Some(other) => panic!("{metric} is not a counter: {other:?}"),
    }
}

/// Observations in a histogram (its `+Inf` bucket).
fn observations(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        None => 0.0,
        Some(other) => panic!("{metric} is not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_are_token_protected_parse_and_move_with_requests_and_runs() {
    let app = common::spawn_with(opts().env("METRICS_TOKEN", TOKEN)).await;
    let _worker = start_worker(&app);
    let (target, _hits) = start_target(0).await;

    // Denied without the token or with a wrong one, in the API's error envelope.
    let r = app.get("/metrics").send().await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.code(), "UNAUTHORIZED");
    let r = app
        .get("/metrics")
        .bearer("metrics-token-for-test")
        .send()
        .await;
    assert_eq!(r.status, 401);

    let owner = app.signup("metrics").await;
    let org = owner.personal_org;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "call", "type": "http.request", "config": {"method": "GET", "url": format!("{target}/ok/m")}},
    ]});
    let wf = published(&app, &owner, org, dsl).await;

    let before = scrape(&app).await;
    let route = "/v1/orgs/:orgId/workflows/:workflowId/runs/:runId";
    let get_ok = [("route", route), ("method", "GET"), ("status", "200")];
    let succeeded = [("outcome", "succeeded")];
    assert!(
        find(&before, "vespid_runs_ended_total", &succeeded).is_none()
            || counter(&before, "vespid_runs_ended_total", &succeeded) == 0.0
    );

    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Exactly three more GETs of the run by the template, whatever wait_terminal did.
    for _ in 0..3 {
        let r = app
            .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 200);
    }
    let mid = scrape(&app).await;
    for _ in 0..3 {
        app.get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
    }
    let after = scrape(&app).await;

    let gets = counter(&after, "vespid_http_requests_total", &get_ok)
        - counter(&mid, "vespid_http_requests_total", &get_ok);
    assert_eq!(gets, 3.0, "requests by route template");
    assert!(counter(&mid, "vespid_http_requests_total", &get_ok) >= 3.0);
    let created = [
        ("route", "/v1/orgs/:orgId/workflows/:workflowId/runs"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(
        counter(&after, "vespid_http_requests_total", &created)
            - counter(&before, "vespid_http_requests_total", &created),
        1.0
    );
    assert!(
        observations(
            &after,
            "vespid_http_request_duration_seconds",
            &[("route", route), ("method", "GET")]
        ) >= 6.0
    );
    // Raw paths never become labels: the run id appears in no label value.
    let run_id = run.to_string();
    assert!(after
        .samples
        .iter()
        .all(|s| s.labels.values().all(|v| !v.contains(&run_id))));
    // Unknown paths share one label.
    let r = app.get(&format!("/nope/{run_id}")).send().await;
    assert_eq!(r.status, 404);
    let unmatched = scrape(&app).await;
    assert!(
        counter(
            &unmatched,
            "vespid_http_requests_total",
            &[("route", "<unmatched>")]
        ) >= 1.0
    );

    // The run: one more success, one more duration observation, a queue wait.
    assert_eq!(
        counter(&after, "vespid_runs_ended_total", &succeeded)
            - counter(&before, "vespid_runs_ended_total", &succeeded),
        1.0
    );
    assert_eq!(
        observations(&after, "vespid_run_attempt_duration_seconds", &succeeded)
            - observations(&before, "vespid_run_attempt_duration_seconds", &succeeded),
        1.0
    );
    assert!(observations(&after, "vespid_run_queue_wait_seconds", &[]) >= 1.0);

    // Scrape-time gauges are present.
    assert!(counter(&after, "vespid_worker_slots", &[]) >= 1.0);
    assert!(find(&after, "vespid_worker_slots_in_use", &[]).is_some());
    assert!(counter(&after, "vespid_db_pool_max_connections", &[]) >= 1.0);
    assert!(find(&after, "vespid_db_pool_connections", &[("state", "in_use")]).is_some());
    assert_eq!(counter(&after, "vespid_redis_connected", &[]), 1.0);
    assert!(find(&after, "vespid_queue_ready", &[("org", "other")]).is_some());
    assert!(find(&after, "vespid_queue_inflight", &[]).is_some());
    assert!(find(&after, "vespid_gateway_executors_connected", &[]).is_some());
    assert!(find(&after, "vespid_gateway_tasks_in_flight", &[]).is_some());

    // The Grafana dashboard only charts metrics that exist.
    let dashboard = include_str!("../../deploy/grafana/vespid.json");
    let known: std::collections::HashSet<&str> =
        after.samples.iter().map(|s| s.metric.as_str()).collect();
    let mut rest = dashboard;
    let mut charted = 0;
    while let Some(at) = rest.find("vespid_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            known.contains(base),
            "the dashboard charts {name}, which /metrics lacks"
        );
        charted += 1;
    }
    assert!(charted >= 20, "{charted}");
}

#[tokio::test]
async fn queue_depth_is_reported_per_org_with_other_for_the_rest() {
    // No worker: the runs stay queued. Two orgs, top 1: the deeper org by id, the other as `other`.
    let app = common::spawn_with(
        opts()
            .env("METRICS_TOKEN", TOKEN)
            .env("METRICS_QUEUE_TOP_ORGS", "1"),
    )
    .await;
    let a = app.signup("qa").await;
    let b = app.signup("qb").await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "stub", "type": "http.request"},
    ]});
    let wa = published(&app, &a, a.personal_org, dsl.clone()).await;
    let wb = published(&app, &b, b.personal_org, dsl).await;
    for _ in 0..3 {
        start_run(&app, &a, a.personal_org, wa, json!({})).await;
    }
    start_run(&app, &b, b.personal_org, wb, json!({})).await;
    let s = scrape(&app).await;
    let org_a = a.personal_org.to_string();
    assert_eq!(counter(&s, "vespid_queue_ready", &[("org", &org_a)]), 3.0);
    assert_eq!(counter(&s, "vespid_queue_ready", &[("org", "other")]), 1.0);
    let age = counter(
        &s,
        "vespid_queue_oldest_ready_age_seconds",
        &[("org", &org_a)],
    );
    assert!((0.0..60.0).contains(&age), "{age}");
    let org_b = b.personal_org.to_string();
    assert!(find(&s, "vespid_queue_ready", &[("org", &org_b)]).is_none());
}

#[tokio::test]
async fn without_a_token_the_api_listener_hides_metrics() {
    let app = common::spawn().await;
    let r = app.get("/metrics").send().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "NOT_FOUND");
    let r = app.get("/metrics").bearer("anything").send().await;
    assert_eq!(r.status, 404);
}
