//! A fake LLM provider on 127.0.0.1:0 speaking the three protocols the inference client does, at their
//! real paths: OpenAI chat completions (`/v1/chat/completions`), Anthropic messages (`/v1/messages`) and
//! Gemini (`/v1beta/models/{model}:generateContent` / `:streamGenerateContent`). Replies come from a
//! script, one per request (a default text when it is empty); every request is recorded; every answer
//! reports usage (input = 10 + number of messages, output = 5 + answer length / 4) and the fake keeps the
//! running total. Streams send text in several chunks with small pauses and note when the first chunk
//! left, for first-token latency measurements.

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    /// A single tool call.
    ToolCall {
        name: String,
        arguments: Value,
    },
    /// Several tool calls in one answer, optionally with text before them.
    ToolCalls {
        text: String,
        calls: Vec<(String, Value)>,
    },
    /// A bare status (JSON error body), with a `Retry-After` in seconds if given.
    Status {
        code: u16,
        retry_after: Option<u64>,
    },
    /// 200 with a body (or a stream event) that is not JSON.
    Malformed,
    /// Waits before answering (before the headers, streamed or not).
    Slow {
        delay_ms: u64,
        then: Box<Reply>,
    },
    /// Streamed: this text, then the protocol's in-stream error event (a provider failing mid-answer).
    /// Not streamed: a plain 500.
    BrokenStream(String),
}

impl Reply {
    pub fn text(s: &str) -> Self {
        Reply::Text(s.to_string())
    }
    pub fn tool(name: &str, arguments: Value) -> Self {
        Reply::ToolCall {
            name: name.to_string(),
            arguments,
        }
    }
    pub fn status(code: u16) -> Self {
        Reply::Status {
            code,
            retry_after: None,
        }
    }
    pub fn slow(delay_ms: u64, then: Reply) -> Self {
        Reply::Slow {
            delay_ms,
            then: Box::new(then),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
    Gemini,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub protocol: Protocol,
    pub path: String,
    pub query: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub stream: bool,
}

/// Tokens the fake reported, summed over every answer that carried usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

struct State {
    script: VecDeque<Reply>,
    default_text: String,
    requests: Vec<Recorded>,
    totals: Totals,
    first_chunks: Vec<Instant>,
    chunk_delay: Duration,
}

pub struct FakeLlm {
    /// `http://127.0.0.1:<port>`: the base URL of all three protocols.
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl FakeLlm {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake llm");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            default_text: "Hello from the fake model.".into(),
            requests: Vec::new(),
            totals: Totals::default(),
            first_chunks: Vec::new(),
            chunk_delay: Duration::from_millis(5),
        }));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/v1/chat/completions", web::post().to(handle))
                .route("/v1/messages", web::post().to(handle))
                .route("/v1beta/models/{call}", web::post().to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self { base, state }
    }

    /// Appends replies to the script.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    pub fn push(&self, reply: Reply) {
        self.lock().script.push_back(reply);
    }

    /// The text answered when the script is empty.
    pub fn set_default_text(&self, text: &str) {
        self.lock().default_text = text.to_string();
    }

    /// The pause between streamed chunks (5 ms by default).
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.lock().chunk_delay = delay;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    /// When the first chunk of each stream was written, in order of streams.
    pub fn first_chunk_times(&self) -> Vec<Instant> {
        self.lock().first_chunks.clone()
    }

    pub fn remaining_script(&self) -> usize {
        self.lock().script.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake llm state")
    }
}

async fn handle(state: web::Data<Mutex<State>>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let path = req.path().to_string();
    let protocol = if path.starts_with("/v1beta/") {
        Protocol::Gemini
    } else if path == "/v1/messages" {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = match protocol {
        Protocol::Gemini => path.ends_with(":streamGenerateContent"),
        _ => body.get("stream").and_then(Value::as_bool) == Some(true),
    };
    let messages = match protocol {
        Protocol::Gemini => &body["contents"],
        _ => &body["messages"],
    }
    .as_array()
    .map_or(0, Vec::len) as u64;
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let (mut reply, chunk_delay) = {
        let mut s = state.lock().expect("state");
        s.requests.push(Recorded {
            protocol,
            path: path.clone(),
            query: req.query_string().to_string(),
            headers,
            body: body.clone(),
            stream,
        });
        let reply = s
            .script
            .pop_front()
            .unwrap_or_else(|| Reply::Text(s.default_text.clone()));
        (reply, s.chunk_delay)
    };
    while let Reply::Slow { delay_ms, then } = reply {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        reply = *then;
    }
    let (text, calls) = match reply {
        Reply::Status { code, retry_after } => {
            let status = actix_web::http::StatusCode::from_u16(code).expect("status");
            let mut resp = HttpResponse::build(status);
            if let Some(secs) = retry_after {
                resp.insert_header(("retry-after", secs.to_string()));
            }
            return resp.json(
                json!({"error": {"message": format!("fake status {code}"), "type": "fake"}}),
            );
        }
        Reply::Malformed => {
            return if stream {
                HttpResponse::Ok()
                    .content_type("text/event-stream")
                    .body("data: {\"choices\": [oops\n\n")
            } else {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body("{\"choices\": [oops")
            };
        }
        Reply::BrokenStream(_) if !stream => {
            return HttpResponse::InternalServerError().json(json!({"error": {"message": "fake"}}));
        }
        Reply::BrokenStream(text) => {
            let mut frames: Vec<String> = split_text(&text)
                .iter()
                .map(|p| match protocol {
                    Protocol::OpenAi => {
                        sse(&json!({"choices": [{"index": 0, "delta": {"content": p}}]}))
                    }
                    Protocol::Anthropic => named(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": p}}),
                    ),
                    Protocol::Gemini => {
                        sse(&json!({"candidates": [{"content": {"parts": [{"text": p}]}}]}))
                    }
                })
                .collect();
            frames.push(match protocol {
                Protocol::OpenAi => sse(&json!({"error": {"message": "fake failure", "code": 500}})),
                Protocol::Anthropic => named(
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "fake"}}),
                ),
                Protocol::Gemini => sse(&json!({"error": {"code": 503, "message": "fake", "status": "UNAVAILABLE"}})),
            });
            return stream_frames(state.into_inner(), frames, chunk_delay);
        }
        Reply::Text(text) => (text, Vec::new()),
        Reply::ToolCall { name, arguments } => (String::new(), vec![(name, arguments)]),
        Reply::ToolCalls { text, calls } => (text, calls),
        Reply::Slow { .. } => unreachable!("unwrapped above"),
    };
    let answer_len = text.len()
        + calls
            .iter()
            .map(|(n, a)| n.len() + a.to_string().len())
            .sum::<usize>();
    let usage = (10 + messages, 5 + answer_len as u64 / 4);
    {
        let mut s = state.lock().expect("state");
        s.totals.calls += 1;
        s.totals.input_tokens += usage.0;
        s.totals.output_tokens += usage.1;
    }
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    if !stream {
        let answer = match protocol {
            Protocol::OpenAi => openai_answer(&model, &text, &calls, usage),
            Protocol::Anthropic => anthropic_answer(&model, &text, &calls, usage),
            Protocol::Gemini => gemini_answer(&text, &calls, usage),
        };
        return HttpResponse::Ok().json(answer);
    }
    let pieces = split_text(&text);
    let frames = match protocol {
        Protocol::OpenAi => openai_frames(&model, &pieces, &calls, usage),
        Protocol::Anthropic => anthropic_frames(&model, &pieces, &calls, usage),
        Protocol::Gemini => gemini_frames(&pieces, &calls, usage),
    };
    stream_frames(state.into_inner(), frames, chunk_delay)
}

/// Sends `frames` as an SSE body, pausing between them, noting when the first one left.
fn stream_frames(
    state: Arc<Mutex<State>>,
    frames: Vec<String>,
    chunk_delay: Duration,
) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(chunk_delay).await;
            }
            if tx.send(Bytes::from(frame)).is_err() {
                return;
            }
            if i == 0 {
                state
                    .lock()
                    .expect("state")
                    .first_chunks
                    .push(Instant::now());
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

/// Text in about three pieces (on character boundaries); none when the text is empty.
fn split_text(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn call_id(i: usize) -> String {
    format!("call_fake_{i}")
}

fn openai_answer(model: &str, text: &str, calls: &[(String, Value)], (i, o): (u64, u64)) -> Value {
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(n, (name, args))| {
                json!({"id": call_id(n), "type": "function",
                       "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
    }
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}
    })
}

fn sse(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn openai_frames(
    model: &str,
    pieces: &[String],
    calls: &[(String, Value)],
    (i, o): (u64, u64),
) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        sse(
            &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for p in pieces {
        frames.push(chunk(json!({"content": p}), Value::Null));
    }
    for (n, (name, args)) in calls.iter().enumerate() {
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        frames.push(chunk(
            json!({"tool_calls": [{"index": n, "id": call_id(n), "type": "function",
                                   "function": {"name": name, "arguments": a}}]}),
            Value::Null,
        ));
        frames.push(chunk(
            json!({"tool_calls": [{"index": n, "function": {"arguments": b}}]}),
            Value::Null,
        ));
    }
    frames.push(chunk(
        json!({}),
        json!(if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }),
    ));
    frames.push(sse(&json!({"id": "chatcmpl-fake", "choices": [],
                            "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}})));
    frames.push("data: [DONE]\n\n".into());
    frames
}

fn anthropic_answer(
    model: &str,
    text: &str,
    calls: &[(String, Value)],
    (i, o): (u64, u64),
) -> Value {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for (n, (name, args)) in calls.iter().enumerate() {
        content.push(json!({"type": "tool_use", "id": call_id(n), "name": name, "input": args}));
    }
    json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
        "usage": {"input_tokens": i, "output_tokens": o}
    })
}

fn named(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn anthropic_frames(
    model: &str,
    pieces: &[String],
    calls: &[(String, Value)],
    (i, o): (u64, u64),
) -> Vec<String> {
    let mut frames = vec![named(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
               "model": model, "content": [], "usage": {"input_tokens": i, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if !pieces.is_empty() {
        frames.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        frames.push(named("ping", json!({"type": "ping"})));
        for p in pieces {
            frames.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        frames.push(named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    for (n, (name, args)) in calls.iter().enumerate() {
        let at = index + n;
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        frames.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": at,
                   "content_block": {"type": "tool_use", "id": call_id(n), "name": name, "input": {}}}),
        ));
        for part in [a, b] {
            frames.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": at,
                       "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        frames.push(named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": at}),
        ));
    }
    frames.push(named(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" }},
               "usage": {"output_tokens": o}}),
    ));
    frames.push(named("message_stop", json!({"type": "message_stop"})));
    frames
}

fn gemini_usage((i, o): (u64, u64)) -> Value {
    json!({"promptTokenCount": i, "candidatesTokenCount": o, "totalTokenCount": i + o})
}

fn gemini_answer(text: &str, calls: &[(String, Value)], usage: (u64, u64)) -> Value {
    let mut parts = Vec::new();
    if !text.is_empty() {
        parts.push(json!({"text": text}));
    }
    for (name, args) in calls {
        parts.push(json!({"functionCall": {"name": name, "args": args}}));
    }
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": gemini_usage(usage),
        "modelVersion": "fake"
    })
}

/// Gemini separates its SSE events with CRLF pairs, so the fake does too.
fn gemini_frames(pieces: &[String], calls: &[(String, Value)], usage: (u64, u64)) -> Vec<String> {
    let frame = |parts: Value, last: bool| {
        let mut v =
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}]});
        if last {
            v["candidates"][0]["finishReason"] = json!("STOP");
            v["usageMetadata"] = gemini_usage(usage);
        } else {
            v["usageMetadata"] = json!({"promptTokenCount": usage.0});
        }
        format!("data: {v}\r\n\r\n")
    };
    let mut frames: Vec<String> = Vec::new();
    let total = pieces.len() + usize::from(!calls.is_empty());
    for (n, p) in pieces.iter().enumerate() {
        frames.push(frame(json!([{"text": p}]), n + 1 == total));
    }
    if !calls.is_empty() {
        let parts: Vec<Value> = calls
            .iter()
            .map(|(name, args)| json!({"functionCall": {"name": name, "args": args}}))
            .collect();
        frames.push(frame(Value::Array(parts), true));
    }
    frames
}
