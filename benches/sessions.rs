//! Session-turn benchmark driver (run it through `bench/sessions.sh`, which starts the server with its
//! OpenAI-compatible endpoint pointed at the fake provider this driver serves).
//!
//! The fake provider streams each answer (first chunk at once, the rest after `PROVIDER_MS`), recording
//! when it wrote the first chunk; a control client joined over `/ws/client` sends messages one at a
//! time and records when the first `session_delta_v2` of each turn arrives. Reported:
//! - first token to client: provider's first chunk written → the client holds it, p50/p99
//!   (target p50 < 10 ms);
//! - turn overhead: the brain's own time per turn (the agent loop's wall time minus provider and tool
//!   time, from the turn's `agent_message`), p50/p99 (target p50 < 5 ms);
//! - the whole turn outside the provider, as a client sees it: send to answer, minus the time the
//!   provider was busy with the request;
//! - send to answer: `session_send` → `agent_message` at the client, for context.

// Bench code may panic on what it did not expect: that is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

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

/// Per answer, in order: when the request arrived, when the first chunk was written, when the last was.
type FirstChunks = Arc<Mutex<Vec<(Instant, Instant, Instant)>>>;

/// Reads one HTTP request (headers and a Content-Length body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

/// An OpenAI-compatible streaming chat endpoint: one answer per request, in five chunks.
async fn fake_provider(listener: TcpListener, firsts: FirstChunks, provider_ms: u64) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let firsts = firsts.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            while read_request(&mut sock).await.is_some() {
                let arrived = Instant::now();
                let mut first = arrived;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let words = ["Hello", " from", " the", " fake", " model."];
                for (i, w) in words.iter().enumerate() {
                    let data = json!({"choices": [{"index": 0, "delta": {"content": w}}]});
                    let event = format!("data: {data}\n\n");
                    let framed = format!("{:x}\r\n{event}\r\n", event.len());
                    if sock.write_all(framed.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                    if i == 0 {
                        first = Instant::now();
                        tokio::time::sleep(Duration::from_millis(provider_ms)).await;
                    }
                }
                let usage = json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}});
                let tail = format!("data: {usage}\n\ndata: [DONE]\n\n");
                let framed = format!("{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len());
                if sock.write_all(framed.as_bytes()).await.is_err() {
                    return;
                }
                let _ = sock.flush().await;
                firsts
                    .lock()
                    .unwrap()
                    .push((arrived, first, Instant::now()));
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = env("BENCH_BASE", "http://127.0.0.1:3905");
    let ws_base = env("BENCH_WS", "ws://127.0.0.1:3906");
    let turns: usize = env("TURNS", "200").parse()?;
    let provider_ms: u64 = env("PROVIDER_MS", "5").parse()?;
    let fake_addr = env("BENCH_FAKE_LLM", "127.0.0.1:3907");
    let firsts: FirstChunks = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(&fake_addr).await?;
    tokio::spawn(fake_provider(listener, firsts.clone(), provider_ms));

    let http = reqwest::Client::new();
    let email = format!(
        "bench-sessions-{}@example.com",
        uuid::Uuid::new_v4().simple()
    );
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
    let created: Value = http
        .post(format!("{base}/v1/orgs/{org}/sessions"))
        .bearer_auth(&token)
        .header("x-org-id", &org)
        .json(
            &json!({"title": "bench", "llm": {"provider": "openai", "model": "gpt-4.1-mini"},
                      "prompt": {"instructions": "Answer briefly."}, "tools": {"allow": []}}),
        )
        .send()
        .await?
        .json()
        .await?;
    let session = created["session"]["id"]
        .as_str()
        .ok_or_else(|| format!("no session: {created}"))?
        .to_string();

    let mut req = format!("{ws_base}/ws/client?orgId={org}").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(WsMessage::text(
        json!({"type": "session_join", "sessionId": session}).to_string(),
    ))
    .await?;

    let mut first_token = Vec::new();
    let mut overhead = Vec::new();
    let mut answer = Vec::new();
    let mut outside = Vec::new();
    let mut failed = 0;
    for i in 0..turns {
        let before = firsts.lock().unwrap().len();
        let sent = Instant::now();
        tx.send(WsMessage::text(
            json!({"type": "session_send", "sessionId": session, "message": format!("hi {i}")})
                .to_string(),
        ))
        .await?;
        let mut got_delta = false;
        let mut delta_at = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline.into(), rx.next()).await;
            let Ok(Some(Ok(WsMessage::Text(text)))) = next else {
                if next.is_err() {
                    return Err(format!("turn {i} timed out").into());
                }
                continue;
            };
            let at = Instant::now();
            let frame: Value = serde_json::from_str(&text)?;
            match frame["type"].as_str() {
                Some("session_delta_v2") if !got_delta => {
                    got_delta = true;
                    delta_at = Some(at);
                }
                Some("session_event_v2") if frame["eventType"] == "agent_message" => {
                    answer.push(sent.elapsed().as_secs_f64() * 1000.0);
                    // The provider's record is complete once its answer was read.
                    let span = firsts.lock().unwrap().get(before).copied();
                    if let (Some((arrived, first, last)), Some(d)) = (span, delta_at) {
                        first_token.push(d.saturating_duration_since(first).as_secs_f64() * 1000.0);
                        let provider = last.saturating_duration_since(arrived);
                        let whole = at.saturating_duration_since(sent);
                        outside.push(whole.saturating_sub(provider).as_secs_f64() * 1000.0);
                    }
                    if let Some(o) = frame["payload"]["turn"]["overheadMs"].as_f64() {
                        overhead.push(o);
                    }
                    break;
                }
                Some("session_event_v2") if frame["eventType"] == "error" => {
                    failed += 1;
                    eprintln!("turn {i} failed: {}", frame["payload"]);
                    break;
                }
                _ => {}
            }
        }
    }
    for v in [&mut first_token, &mut overhead, &mut answer, &mut outside] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!(
        "{turns} turns ({failed} failed), fake provider streaming 5 chunks with {provider_ms} ms after the first"
    );
    println!(
        "first token to client: p50 {:.2} ms, p99 {:.2} ms (target p50 < 10 ms; {} samples)",
        pct(&first_token, 0.5),
        pct(&first_token, 0.99),
        first_token.len()
    );
    println!(
        "turn overhead (outside provider and tools): p50 {:.2} ms, p99 {:.2} ms (target p50 < 5 ms)",
        pct(&overhead, 0.5),
        pct(&overhead, 0.99)
    );
    println!(
        "whole turn outside the provider, client send to client holding the answer (socket in, message \
         stored, brain, answer stored and fanned out): p50 {:.2} ms, p99 {:.2} ms",
        pct(&outside, 0.5),
        pct(&outside, 0.99)
    );
    println!(
        "send to agent_message at the client: p50 {:.1} ms, p99 {:.1} ms",
        pct(&answer, 0.5),
        pct(&answer, 0.99)
    );
    Ok(())
}
