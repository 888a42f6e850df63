//! The inference client against the fake provider, for each protocol: text, native tool calls fed back,
//! streaming deltas, retries (429 with Retry-After, 5xx), malformed answers, deadlines, where the key goes
//! and that usage is what the provider reported.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::time::Instant;
use vespid::domain::inference::{
    ChatRequest, ChatResponse, Credential, Inference, InferenceClient, InferenceConfig,
    InferenceError, Message, Provider, ToolSpec, Usage,
};

use crate::common::fake_llm::{FakeLlm, Protocol, Reply};

const KEY: &str = "sk-test-key-0123456789";
const ALL: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];

fn client(fake: &FakeLlm, max_attempts: u32) -> InferenceClient {
    InferenceClient::new(InferenceConfig {
        openai_base_url: fake.base.clone(),
        anthropic_base_url: fake.base.clone(),
        gemini_base_url: fake.base.clone(),
        timeout_ms: 10_000,
        connect_timeout_ms: 1000,
        max_attempts,
        ..InferenceConfig::default()
    })
}

fn request(
    provider: Provider,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    deadline_ms: u64,
) -> ChatRequest {
    ChatRequest {
        provider,
        model: "fake-model-1".into(),
        credential: Credential {
            api_key: zeroize::Zeroizing::new(KEY.to_string()),
            base_url: None,
        },
        messages,
        tools,
        max_output_tokens: Some(200),
        deadline: Instant::now() + Duration::from_millis(deadline_ms),
    }
}

fn hello(provider: Provider, deadline_ms: u64) -> ChatRequest {
    request(
        provider,
        vec![
            Message::System("Be brief.".into()),
            Message::User("Say hello.".into()),
        ],
        vec![],
        deadline_ms,
    )
}

fn shell_tool() -> ToolSpec {
    ToolSpec {
        name: "shell_run".into(),
        description: "Run a shell script on the executor".into(),
        parameters: json!({"type": "object", "properties": {"script": {"type": "string"}}, "required": ["script"]}),
    }
}

fn assert_usage_matches(fake: &FakeLlm, usage: Usage) {
    let t = fake.totals();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (t.input_tokens, t.output_tokens),
        "usage must be what the provider reported"
    );
}

/// Runs `f` once per protocol, each against its own fake, all at once (timing tests stay short).
async fn each_protocol<F, Fut>(f: F)
where
    F: Fn(Provider, FakeLlm) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    join_all(ALL.map(|p| f(p, FakeLlm::start()))).await;
}

async fn complete(c: &InferenceClient, req: ChatRequest) -> Result<ChatResponse, InferenceError> {
    c.complete(req, None).await
}

#[tokio::test]
async fn text_chat_for_each_protocol() {
    each_protocol(|p, fake| async move {
        fake.push(Reply::text("Hello there."));
        let resp = complete(&client(&fake, 4), hello(p, 5000)).await.unwrap();
        assert_eq!(resp.text, "Hello there.", "{p}");
        assert!(resp.tool_calls.is_empty());
        assert_eq!(resp.attempts, 1);
        assert!(resp.latency_ms >= resp.provider_ms);
        assert_usage_matches(&fake, resp.usage);
        assert_eq!(
            resp.usage.input_tokens,
            10 + if p == Provider::OpenAi { 2 } else { 1 }
        );

        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert!(!r.stream);
        assert!(
            r.body.get("tools").is_none(),
            "plain text mode sends no tools"
        );
        match p {
            Provider::OpenAi => {
                assert_eq!(r.path, "/v1/chat/completions");
                assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
                assert_eq!(r.body["temperature"], 0);
                assert_eq!(r.body["max_tokens"], 200);
                assert_eq!(
                    r.body["messages"][0],
                    json!({"role": "system", "content": "Be brief."})
                );
            }
            Provider::Anthropic => {
                assert_eq!(r.path, "/v1/messages");
                assert_eq!(r.headers["x-api-key"], KEY);
                assert_eq!(r.headers["anthropic-version"], "2023-06-01");
                assert!(!r.headers.contains_key("authorization"));
                assert_eq!(r.body["system"], "Be brief.");
                assert_eq!(r.body["max_tokens"], 200);
            }
            Provider::Gemini => {
                assert_eq!(r.path, "/v1beta/models/fake-model-1:generateContent");
                assert_eq!(
                    r.headers["x-goog-api-key"], KEY,
                    "the Gemini key goes in a header"
                );
                assert!(
                    !r.query.contains(KEY) && !r.query.contains("key="),
                    "never in the query: {}",
                    r.query
                );
                assert_eq!(r.body["systemInstruction"]["parts"][0]["text"], "Be brief.");
                assert_eq!(r.body["generationConfig"]["temperature"], 0);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn native_tool_call_round_trip() {
    each_protocol(|p, fake| async move {
        let c = client(&fake, 4);
        fake.script([
            Reply::tool("shell_run", json!({"script": "echo hi > a.txt"})),
            Reply::text("Wrote a.txt."),
        ]);
        let mut messages = vec![Message::User("Write a file.".into())];
        let first = complete(&c, request(p, messages.clone(), vec![shell_tool()], 5000))
            .await
            .unwrap();
        assert_eq!(first.tool_calls.len(), 1, "{p}");
        let call = first.tool_calls[0].clone();
        assert_eq!(call.name, "shell_run");
        assert_eq!(call.arguments, json!({"script": "echo hi > a.txt"}));
        assert!(!call.id.is_empty());

        messages.push(Message::Assistant {
            text: first.text.clone(),
            tool_calls: vec![call.clone()],
        });
        messages.push(Message::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: "exit 0".into(),
        });
        let second = complete(&c, request(p, messages, vec![shell_tool()], 5000))
            .await
            .unwrap();
        assert_eq!(second.text, "Wrote a.txt.");
        let total = Usage {
            input_tokens: first.usage.input_tokens + second.usage.input_tokens,
            output_tokens: first.usage.output_tokens + second.usage.output_tokens,
        };
        assert_usage_matches(&fake, total);

        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        let (one, two) = (&reqs[0].body, &reqs[1].body);
        match p {
            Provider::OpenAi => {
                assert_eq!(one["tools"][0]["function"]["name"], "shell_run");
                let msgs = two["messages"].as_array().unwrap();
                assert_eq!(msgs[1]["tool_calls"][0]["id"], json!(call.id));
                assert_eq!(
                    msgs[2],
                    json!({"role": "tool", "tool_call_id": call.id, "content": "exit 0"})
                );
            }
            Provider::Anthropic => {
                assert_eq!(
                    one["tools"][0]["input_schema"]["required"],
                    json!(["script"])
                );
                let msgs = two["messages"].as_array().unwrap();
                assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
                assert_eq!(
                    msgs[2]["content"][0],
                    json!({"type": "tool_result", "tool_use_id": call.id, "content": "exit 0"})
                );
            }
            Provider::Gemini => {
                assert_eq!(
                    one["tools"][0]["functionDeclarations"][0]["name"],
                    "shell_run"
                );
                let contents = two["contents"].as_array().unwrap();
                assert_eq!(contents[1]["parts"][0]["functionCall"]["name"], "shell_run");
                assert_eq!(
                    contents[2]["parts"][0]["functionResponse"],
                    json!({"name": "shell_run", "response": {"content": "exit 0"}})
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn streaming_deltas_arrive_in_order() {
    each_protocol(|p, fake| async move {
        let c = client(&fake, 4);
        let text = "The quick brown fox jumps over the lazy dog.";
        fake.push(Reply::text(text));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let resp = c.complete(hello(p, 5000), Some(tx)).await.unwrap();
        let mut deltas = Vec::new();
        while let Ok(d) = rx.try_recv() {
            deltas.push(d);
        }
        assert!(deltas.len() >= 3, "{p}: text comes in pieces: {deltas:?}");
        assert_eq!(deltas.concat(), text);
        assert_eq!(resp.text, text);
        assert_usage_matches(&fake, resp.usage);
        assert_eq!(fake.first_chunk_times().len(), 1);
        let r = &fake.requests()[0];
        assert!(r.stream, "{p}: deltas mean a streamed request");
        match p {
            Provider::OpenAi => assert_eq!(r.body["stream_options"]["include_usage"], true),
            Provider::Anthropic => assert_eq!(r.body["stream"], true),
            Provider::Gemini => {
                assert_eq!(r.path, "/v1beta/models/fake-model-1:streamGenerateContent");
                assert_eq!(r.query, "alt=sse");
                assert_eq!(r.headers["x-goog-api-key"], KEY);
            }
        }

        // A streamed answer with text and two tool calls (fragments assembled by index).
        fake.push(Reply::ToolCalls {
            text: "Running both.".into(),
            calls: vec![
                ("shell_run".into(), json!({"script": "ls -la"})),
                ("shell_run".into(), json!({"script": "pwd"})),
            ],
        });
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let req = request(
            p,
            vec![Message::User("go".into())],
            vec![shell_tool()],
            5000,
        );
        let before = fake.totals();
        let resp = c.complete(req, Some(tx)).await.unwrap();
        let after = fake.totals();
        assert_eq!(
            resp.usage.input_tokens,
            after.input_tokens - before.input_tokens
        );
        assert_eq!(
            resp.usage.output_tokens,
            after.output_tokens - before.output_tokens
        );
        assert_eq!(resp.text, "Running both.");
        let args: Vec<Value> = resp
            .tool_calls
            .iter()
            .map(|c| c.arguments.clone())
            .collect();
        assert_eq!(
            args,
            vec![json!({"script": "ls -la"}), json!({"script": "pwd"})],
            "{p}"
        );
        assert_ne!(resp.tool_calls[0].id, resp.tool_calls[1].id);
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_failed_after_text_is_not_retried() {
    each_protocol(|p, fake| async move {
        fake.script([
            Reply::BrokenStream("partial answer".into()),
            Reply::text("a repeat"),
        ]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let e = client(&fake, 4)
            .complete(hello(p, 5000), Some(tx))
            .await
            .unwrap_err();
        assert!(
            e.code
                .starts_with(&format!("{}_REQUEST_FAILED:5", p.code_prefix())),
            "{p}: {}",
            e.code
        );
        assert_eq!(
            fake.requests().len(),
            1,
            "text already reached the caller: no second attempt"
        );
        let mut got = String::new();
        while let Ok(d) = rx.try_recv() {
            got.push_str(&d);
        }
        assert_eq!(got, "partial answer");
    })
    .await;
}

#[tokio::test]
async fn rate_limited_with_retry_after_then_success() {
    each_protocol(|p, fake| async move {
        fake.script([
            Reply::Status {
                code: 429,
                retry_after: Some(1),
            },
            Reply::text("after the wait"),
        ]);
        let started = std::time::Instant::now();
        let resp = complete(&client(&fake, 4), hello(p, 5000)).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{p}: Retry-After honoured"
        );
        assert!(started.elapsed() < Duration::from_millis(2500));
        assert_eq!(resp.attempts, 2);
        assert_eq!(resp.text, "after the wait");
        assert!(resp.latency_ms >= 1000);
        assert!(
            resp.provider_ms < resp.latency_ms,
            "the wait is not provider time"
        );
    })
    .await;
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_now() {
    each_protocol(|p, fake| async move {
        fake.push(Reply::Status {
            code: 429,
            retry_after: Some(30),
        });
        let started = std::time::Instant::now();
        let e = complete(&client(&fake, 4), hello(p, 3000))
            .await
            .unwrap_err();
        assert_eq!(e.code, format!("{}_REQUEST_FAILED:429", p.code_prefix()));
        assert!(e.retryable);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no sleeping into the deadline"
        );
        assert_eq!(fake.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn server_error_then_success() {
    each_protocol(|p, fake| async move {
        fake.script([
            Reply::status(500),
            Reply::status(503),
            Reply::text("recovered"),
        ]);
        let resp = complete(&client(&fake, 4), hello(p, 5000)).await.unwrap();
        assert_eq!(resp.attempts, 3, "{p}");
        assert_eq!(resp.text, "recovered");
        assert_usage_matches(&fake, resp.usage);
    })
    .await;
}

#[tokio::test]
async fn server_error_forever_fails_after_max_attempts() {
    each_protocol(|p, fake| async move {
        fake.script((0..10).map(|_| Reply::status(500)));
        let e = complete(&client(&fake, 3), hello(p, 5000))
            .await
            .unwrap_err();
        assert_eq!(e.code, format!("{}_REQUEST_FAILED:500", p.code_prefix()));
        assert_eq!(e.to_string(), e.code);
        assert_eq!(
            fake.requests().len(),
            3,
            "{p}: max_attempts bounds the attempts"
        );
        assert!(!e.detail.contains(KEY));
    })
    .await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    each_protocol(|p, fake| async move {
        fake.push(Reply::status(401));
        let e = complete(&client(&fake, 4), hello(p, 5000))
            .await
            .unwrap_err();
        assert_eq!(e.code, format!("{}_REQUEST_FAILED:401", p.code_prefix()));
        assert!(!e.retryable);
        assert!(
            e.detail.len() <= 400 && !e.detail.contains(KEY),
            "{}",
            e.detail
        );
        assert_eq!(fake.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn malformed_answers_are_invalid() {
    each_protocol(|p, fake| async move {
        let c = client(&fake, 4);
        fake.script([Reply::Malformed, Reply::Malformed]);
        let e = complete(&c, hello(p, 5000)).await.unwrap_err();
        assert_eq!(e.code, format!("{}_RESPONSE_INVALID", p.code_prefix()));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let e = c.complete(hello(p, 5000), Some(tx)).await.unwrap_err();
        assert_eq!(
            e.code,
            format!("{}_RESPONSE_INVALID", p.code_prefix()),
            "streamed"
        );
        assert_eq!(fake.requests().len(), 2, "not retried");
        // No text and no tool call.
        fake.push(Reply::text(""));
        let e = complete(&c, hello(p, 5000)).await.unwrap_err();
        assert_eq!(e.code, format!("{}_RESPONSE_EMPTY", p.code_prefix()));
    })
    .await;
}

#[tokio::test]
async fn slow_beyond_the_deadline_times_out() {
    each_protocol(|p, fake| async move {
        let c = client(&fake, 4);
        fake.push(Reply::slow(3000, Reply::text("too late")));
        let started = std::time::Instant::now();
        let e = complete(&c, hello(p, 400)).await.unwrap_err();
        assert_eq!(e.code, "LLM_TIMEOUT", "{p}");
        assert!(started.elapsed() >= Duration::from_millis(390));
        assert!(started.elapsed() < Duration::from_millis(1500));
        // Streaming too, and a deadline already past.
        fake.push(Reply::slow(3000, Reply::text("too late")));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let e = c.complete(hello(p, 300), Some(tx)).await.unwrap_err();
        assert_eq!(e.code, "LLM_TIMEOUT");
        let e = complete(&c, hello(p, 0)).await.unwrap_err();
        assert_eq!(e.code, "LLM_TIMEOUT");
    })
    .await;
}

#[tokio::test]
async fn credential_base_url_wins_over_config() {
    let configured = FakeLlm::start();
    let own = FakeLlm::start();
    let c = client(&configured, 2);
    for p in ALL {
        let mut req = hello(p, 5000);
        req.credential.base_url = Some(format!("{}/", own.base));
        let resp = complete(&c, req).await.unwrap();
        assert_eq!(resp.text, "Hello from the fake model.");
    }
    assert!(configured.requests().is_empty());
    let protocols: Vec<Protocol> = own.requests().iter().map(|r| r.protocol).collect();
    assert_eq!(
        protocols,
        vec![Protocol::OpenAi, Protocol::Anthropic, Protocol::Gemini]
    );
}

#[tokio::test]
async fn unreachable_provider_is_unavailable() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = InferenceClient::new(InferenceConfig {
        openai_base_url: format!("http://127.0.0.1:{port}"),
        max_attempts: 2,
        ..InferenceConfig::default()
    });
    let e = complete(&c, hello(Provider::OpenAi, 3000))
        .await
        .unwrap_err();
    assert_eq!(e.code, "OPENAI_UNAVAILABLE");
    assert!(e.retryable);
}

#[tokio::test]
async fn cost_from_the_price_table() {
    let c = InferenceClient::new(InferenceConfig {
        prices: "openai/fake-model=1:2".into(),
        ..InferenceConfig::default()
    });
    let u = Usage {
        input_tokens: 1000,
        output_tokens: 500,
    };
    assert_eq!(
        c.prices().cost_micros(Provider::OpenAi, "fake-model-1", &u),
        2000
    );
    assert_eq!(
        c.prices().cost_micros(Provider::Gemini, "fake-model-1", &u),
        0
    );
}
