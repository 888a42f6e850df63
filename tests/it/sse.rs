//! Live run events (`…/runs/{runId}/events/stream`): Server-Sent Events with the paged API's cursor as
//! `id:`, every event in order, `Last-Event-ID` resuming without gaps or repeats, the stream ending with
//! the run, the paged route's access rules, and the per-org bound.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{self, TestApp, User};
use crate::runs::{events, opts, published, start_run, start_target, start_worker, wait_terminal};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// An open stream, read frame by frame.
struct Stream {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>,
    >,
    buf: String,
}

impl Stream {
    /// The next event (comments skipped); `None` when the server closed the stream.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.next()).await {
                Err(_) => panic!("no event within {within:?}; buffered: {:?}", self.buf),
                Ok(None) => {
                    assert!(self.buf.trim().is_empty(), "partial frame: {:?}", self.buf);
                    return None;
                }
                Ok(Some(chunk)) => {
                    let chunk = chunk.expect("stream chunk");
                    self.buf
                        .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
                }
            }
        }
    }

    /// Every event until the server closes the stream.
    async fn rest(&mut self) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(e) = self.next(Duration::from_secs(20)).await {
            out.push(e);
        }
        out
    }
}

fn stream_path(org: Uuid, wf: Uuid, run: Uuid) -> String {
    format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}/events/stream")
}

async fn open(
    app: &TestApp,
    user: &User,
    org: Uuid,
    path: &str,
    last_event_id: Option<&str>,
) -> Result<Stream, (u16, Value)> {
    let mut req = app
        .http
        .get(format!("{}{path}", app.addr))
        .bearer_auth(&user.token)
        .header("x-org-id", org.to_string())
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    if status != 200 {
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        return Err((status, body));
    }
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-cache")
    );
    Ok(Stream {
        body: Box::pin(res.bytes_stream()),
        buf: String::new(),
    })
}

/// A run that takes a few seconds: a stub, a quick call, a 3 s call, another stub.
async fn slow_workflow(app: &TestApp, owner: &User, org: Uuid, target: &str) -> Uuid {
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "first", "type": "http.request"},
        {"id": "quick", "type": "http.request", "config": {"method": "GET", "url": format!("{target}/ok/q")}},
        {"id": "slow", "type": "http.request", "config": {"method": "GET", "url": format!("{target}/slow/s")}},
        {"id": "last", "type": "http.request"},
    ]});
    published(app, owner, org, dsl).await
}

fn split_end(mut all: Vec<Sse>) -> (Vec<Sse>, Sse) {
    let end = all.pop().expect("an end event");
    assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
    assert!(end.id.is_none());
    assert!(
        all.iter().all(|e| e.event.is_none() && e.id.is_some()),
        "{all:?}"
    );
    (all, end)
}

#[tokio::test]
async fn stream_delivers_every_event_live_in_order_and_closes_when_the_run_ends() {
    // The fallback re-read is a minute away: every event must come through the Redis announcements.
    let app = common::spawn_with(opts().env("RUN_EVENTS_STREAM_POLL_MS", "60000")).await;
    let _worker = start_worker(&app);
    let (target, _hits) = start_target(0).await;
    let owner = app.signup("sse").await;
    let org = owner.personal_org;
    let wf = slow_workflow(&app, &owner, org, &target).await;
    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let mut s = open(&app, &owner, org, &stream_path(org, wf, run), None)
        .await
        .expect("stream");

    // Live: the slow node's start arrives while the run is still running.
    let mut seen = Vec::new();
    loop {
        let e = s.next(Duration::from_secs(10)).await.expect("event");
        let kind = e.json()["eventType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node = e.json()["nodeId"].as_str().unwrap_or_default().to_string();
        seen.push(e);
        if kind == "node_started" && node == "slow" {
            break;
        }
    }
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.body["run"]["status"], "running");
    seen.extend(s.rest().await);
    let (streamed, end) = split_end(seen);
    assert_eq!(end.json(), json!({"status": "succeeded"}));

    // The same events, in the same order and shape, as the paged API.
    let paged = events(&app, &owner, org, wf, run).await;
    let streamed_json: Vec<Value> = streamed.iter().map(Sse::json).collect();
    assert_eq!(streamed_json, paged);
    assert_eq!(
        streamed_json.last().map(|e| e["eventType"].clone()),
        Some(json!("run_succeeded"))
    );
    // Each id is the paged API's cursor of that event: the page after it starts with the next one.
    for (i, e) in streamed.iter().enumerate() {
        let r = app
            .get(&format!(
                "/v1/orgs/{org}/workflows/{wf}/runs/{run}/events?limit=1&cursor={}",
                e.id.as_deref().unwrap_or_default()
            ))
            .by(&owner)
            .org(org)
            .send()
            .await;
        let next = r.body["events"].get(0).cloned();
        assert_eq!(next, paged.get(i + 1).cloned(), "after event {i}");
    }

    // A finished run: the whole history at once, then the end.
    let s2 = open(&app, &owner, org, &stream_path(org, wf, run), None).await;
    let (again, _) = split_end(s2.expect("stream").rest().await);
    assert_eq!(again, streamed);
}

#[tokio::test]
async fn last_event_id_resumes_mid_run_without_gaps_or_repeats() {
    let app = common::spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let (target, _hits) = start_target(0).await;
    let owner = app.signup("sse-resume").await;
    let org = owner.personal_org;
    let wf = slow_workflow(&app, &owner, org, &target).await;
    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let path = stream_path(org, wf, run);

    // Three events, then the connection drops.
    let mut first = Vec::new();
    {
        let mut s = open(&app, &owner, org, &path, None).await.expect("stream");
        for _ in 0..3 {
            first.push(s.next(Duration::from_secs(10)).await.expect("event"));
        }
    }
    let last = first.last().and_then(|e| e.id.clone()).expect("id");
    let mut s = open(&app, &owner, org, &path, Some(&last))
        .await
        .expect("resumed stream");
    let (rest, end) = split_end(s.rest().await);
    assert_eq!(end.json(), json!({"status": "succeeded"}));
    let mut ids: Vec<String> = first
        .iter()
        .chain(&rest)
        .filter_map(|e| e.id.clone())
        .collect();
    let paged = events(&app, &owner, org, wf, run).await;
    let all: Vec<Value> = first.iter().chain(&rest).map(Sse::json).collect();
    assert_eq!(all, paged, "no gaps, no repeats, same order");
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n);

    // Resuming after the last event of a finished run: only the end.
    let last = rest.last().and_then(|e| e.id.clone()).expect("id");
    let mut s = open(&app, &owner, org, &path, Some(&last))
        .await
        .expect("stream");
    let (none, _) = split_end(s.rest().await);
    assert!(none.is_empty(), "{none:?}");
    // `?cursor=` works as the header does.
    let mid = paged_cursor(&first);
    let mut s = open(&app, &owner, org, &format!("{path}?cursor={mid}"), None)
        .await
        .expect("stream");
    let (from_cursor, _) = split_end(s.rest().await);
    assert_eq!(from_cursor.len(), paged.len() - 3);
    // A malformed cursor is refused as the paged route refuses it.
    let bad = base64_json(r#"{"id":"x"}"#);
    let e = open(&app, &owner, org, &path, Some(&bad)).await.err();
    assert_eq!(
        e.map(|(s, b)| (s, b["code"].clone())),
        Some((400, json!("BAD_REQUEST")))
    );
}

fn paged_cursor(events: &[Sse]) -> String {
    events.last().and_then(|e| e.id.clone()).expect("cursor")
}

fn base64_json(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn stream_access_is_the_paged_routes() {
    let app = common::spawn_with(opts()).await;
    let owner = app.signup("sse-owner").await;
    let outsider = app.signup("sse-outsider").await;
    let org = app.create_org(&owner).await;
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "stub", "type": "http.request"},
    ]});
    let wf = published(&app, &owner, org, dsl).await;
    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let paged = format!("/v1/orgs/{org}/workflows/{wf}/runs/{run}/events");
    let live = stream_path(org, wf, run);

    // A non-member: the same denial as the paged route.
    let p = app.get(&paged).by(&outsider).org(org).send().await;
    let e = open(&app, &outsider, org, &live, None).await.err();
    assert_eq!(p.status, 403, "{:?}", p.body);
    assert_eq!(
        e.map(|(s, b)| (s, b["code"].clone())),
        Some((p.status.as_u16(), p.body["code"].clone()))
    );
    // No credentials: 401 both.
    let p = app.get(&paged).org(org).send().await;
    let l = app.get(&live).org(org).send().await;
    assert_eq!((l.status, l.code()), (p.status, p.code()));
    assert_eq!(l.status, 401);
    // Unknown run, and a run of another workflow id: 404 NOT_FOUND.
    for path in [
        stream_path(org, wf, Uuid::new_v4()),
        stream_path(org, Uuid::new_v4(), run),
        format!("/v1/orgs/{org}/workflows/{wf}/runs/not-a-uuid/events/stream"),
    ] {
        let e = open(&app, &owner, org, &path, None).await.err();
        assert_eq!(
            e.map(|(s, b)| (s, b["code"].clone())),
            Some((404, json!("NOT_FOUND"))),
            "{path}"
        );
    }
    // The outsider's own org does not have this run either.
    let o = outsider.personal_org;
    let e = open(&app, &outsider, o, &stream_path(o, wf, run), None)
        .await
        .err();
    assert_eq!(e.map(|(s, _)| s), Some(404));
}

#[tokio::test]
async fn streams_are_bounded_per_org() {
    let app = common::spawn_with(opts().env("RUN_EVENTS_STREAM_MAX_PER_ORG", "1")).await;
    let _worker = start_worker(&app);
    let (target, _hits) = start_target(0).await;
    let owner = app.signup("sse-bound").await;
    let other = app.signup("sse-other").await;
    let org = owner.personal_org;
    let wf = slow_workflow(&app, &owner, org, &target).await;
    let run = start_run(&app, &owner, org, wf, json!({})).await;
    let path = stream_path(org, wf, run);
    let mut held = open(&app, &owner, org, &path, None)
        .await
        .expect("first stream");
    let e = open(&app, &owner, org, &path, None).await.err();
    assert_eq!(
        e.map(|(s, b)| (s, b["code"].clone())),
        Some((429, json!("TOO_MANY_STREAMS")))
    );
    // Another org is not affected.
    let dsl = json!({"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": [
        {"id": "stub", "type": "http.request"},
    ]});
    let owf = published(&app, &other, other.personal_org, dsl).await;
    let orun = start_run(&app, &other, other.personal_org, owf, json!({})).await;
    let mut s = open(
        &app,
        &other,
        other.personal_org,
        &stream_path(other.personal_org, owf, orun),
        None,
    )
    .await
    .expect("other org's stream");
    split_end(s.rest().await);
    // Once the first stream ends with its run, its slot is free again.
    split_end(held.rest().await);
    wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(15)).await;
    let mut again = None;
    for _ in 0..50 {
        match open(&app, &owner, org, &path, None).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err((429, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(other) => panic!("{other:?}"),
        }
    }
    split_end(again.expect("slot freed").rest().await);

    // A client that goes away frees its slot too (actix notices the closed connection; at the latest the
    // next heartbeat fails to go out).
    let run2 = start_run(&app, &owner, org, wf, json!({})).await;
    let path2 = stream_path(org, wf, run2);
    drop(open(&app, &owner, org, &path2, None).await.expect("stream"));
    let gone = Instant::now();
    let mut reopened = None;
    while gone.elapsed() < Duration::from_secs(20) {
        match open(&app, &owner, org, &path2, None).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err((429, _)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(
        reopened.is_some(),
        "the dropped stream's slot was never freed"
    );
}
