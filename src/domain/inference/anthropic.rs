//! Anthropic messages (`/v1/messages`): the system prompt apart, content blocks (`text`, `tool_use`,
//! `tool_result`), consecutive same-role messages merged as the API requires; the stream is named SSE
//! events (`message_start`, `content_block_*`, `message_delta`). Blocks of other kinds are skipped.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::retry::AttemptError;
use super::sse::SseEvent;
use super::{
    arguments_from_text, call_id_or_new, count, ChatRequest, DeltaSink, HttpCall, Message, Parsed,
    ToolCall, Usage,
};

/// `max_tokens` is required by the API: this when the caller sets none.
const DEFAULT_MAX_TOKENS: u32 = 1024;

pub(crate) fn request(req: &ChatRequest, base: &str, stream: bool) -> HttpCall {
    let mut system: Vec<&str> = Vec::new();
    // (role, blocks), merged as they are pushed.
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match turns.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    };
    for m in &req.messages {
        match m {
            Message::System(text) => system.push(text),
            Message::User(text) => push("user", text_block(text)),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = text_block(text);
                blocks.extend(tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input_object(&c.arguments)})
                }));
                push("assistant", blocks);
            }
            Message::ToolResult {
                call_id, content, ..
            } => push(
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "temperature": 0,
    });
    if let Some(obj) = body.as_object_mut() {
        if !system.is_empty() {
            obj.insert("system".into(), json!(system.join("\n")));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
            obj.insert("tools".into(), Value::Array(tools));
        }
        if stream {
            obj.insert("stream".into(), json!(true));
        }
    }
    HttpCall {
        url: format!("{base}/v1/messages"),
        body,
    }
}

/// Anthropic refuses empty text blocks: empty text is no block.
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// `input` must be an object; raw (non-JSON) arguments are wrapped so the history stays sendable.
fn input_object(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        other => json!({"_raw": other}),
    }
}

pub(crate) fn parse(v: &Value) -> Result<Parsed, AttemptError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| AttemptError::Invalid("message: no content array".into()))?;
    let mut parsed = Parsed {
        usage: usage(v.get("usage")),
        ..Parsed::default()
    };
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| AttemptError::Invalid("text block without text".into()))?;
                parsed.text.push_str(text);
            }
            Some("tool_use") => {
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| AttemptError::Invalid("tool_use without name".into()))?;
                parsed.tool_calls.push(ToolCall {
                    id: call_id_or_new(b.get("id").and_then(Value::as_str)),
                    name: name.to_string(),
                    arguments: b.get("input").cloned().unwrap_or_else(|| json!({})),
                });
            }
            // thinking, redacted_thinking, server tool blocks, …: not ours to show.
            _ => {}
        }
    }
    parsed.checked()
}

fn usage(u: Option<&Value>) -> Usage {
    Usage {
        input_tokens: count(u.and_then(|u| u.get("input_tokens"))),
        output_tokens: count(u.and_then(|u| u.get("output_tokens"))),
    }
}

struct PartialCall {
    id: String,
    name: String,
    json: String,
}

#[derive(Default)]
pub(crate) struct Stream {
    text: String,
    /// `tool_use` blocks by their content index.
    calls: BTreeMap<u64, PartialCall>,
    usage: Usage,
    pub done: bool,
}

impl Stream {
    pub(crate) fn event(
        &mut self,
        ev: &SseEvent,
        sink: &mut DeltaSink,
    ) -> Result<(), AttemptError> {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| AttemptError::Invalid(format!("stream event not JSON: {e}")))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.event.as_str());
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let u = v.get("message").and_then(|m| m.get("usage"));
                self.usage = usage(u);
            }
            "content_block_start" => {
                let block = v.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let field = |k: &str| {
                        block
                            .and_then(|b| b.get(k))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    self.calls.insert(
                        index,
                        PartialCall {
                            id: field("id"),
                            name: field("name"),
                            json: String::new(),
                        },
                    );
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                            self.text.push_str(t);
                            sink.send(t);
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .and_then(|d| d.get("partial_json"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if let Some(call) = self.calls.get_mut(&index) {
                            call.json.push_str(part);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(out) = v
                    .get("usage")
                    .and_then(|u| u.get("output_tokens"))
                    .and_then(Value::as_u64)
                {
                    self.usage.output_tokens = out;
                }
                // Some compatible servers only report input here.
                if let Some(inp) = v
                    .get("usage")
                    .and_then(|u| u.get("input_tokens"))
                    .and_then(Value::as_u64)
                {
                    self.usage.input_tokens = self.usage.input_tokens.max(inp);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let kind = v
                    .get("error")
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(AttemptError::Status {
                    status,
                    retry_after: None,
                    body: super::truncate(&v.to_string(), 300),
                });
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<Parsed, AttemptError> {
        let tool_calls = self
            .calls
            .into_values()
            .map(|c| ToolCall {
                id: call_id_or_new(Some(&c.id)),
                name: c.name,
                arguments: arguments_from_text(&c.json),
            })
            .collect();
        Parsed {
            text: self.text,
            tool_calls,
            usage: self.usage,
        }
        .checked()
    }
}

#[cfg(test)]
mod tests {
    use super::super::openai::tests::sample_request;
    use super::super::Provider;
    use super::*;

    #[test]
    fn request_merges_roles_and_separates_system() {
        let mut req = sample_request(Provider::Anthropic, true);
        req.max_output_tokens = None;
        req.messages.push(Message::User("and now?".into()));
        let call = request(&req, "http://h", false);
        assert_eq!(call.url, "http://h/v1/messages");
        let b = call.body;
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["temperature"], 0);
        assert_eq!(b["tools"][0]["input_schema"]["type"], "object");
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(msgs[0]["role"], "user");
        assert_eq!(
            msgs[1]["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "shell_run", "input": {"script": "ls"}}])
        );
        // The tool result and the next user text share one user turn.
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"})
        );
        assert_eq!(
            msgs[2]["content"][1],
            json!({"type": "text", "text": "and now?"})
        );
        assert!(
            request(&sample_request(Provider::Anthropic, false), "h", false)
                .body
                .get("tools")
                .is_none()
        );
    }

    #[test]
    fn response_skips_unknown_blocks() {
        let v = json!({"content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "tu_1", "name": "shell_run", "input": {"script": "ls"}}
        ], "usage": {"input_tokens": 20, "output_tokens": 9}});
        let p = parse(&v).unwrap();
        assert_eq!(p.text, "Let me look.");
        assert_eq!(p.tool_calls[0].id, "tu_1");
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 20,
                output_tokens: 9
            }
        );
        assert!(matches!(
            parse(&json!({"content": []})),
            Err(AttemptError::Empty)
        ));
        assert!(matches!(
            parse(&json!({"type": "message"})),
            Err(AttemptError::Invalid(_))
        ));
    }

    #[test]
    fn stream_events() {
        let mut s = Stream::default();
        let mut sink = DeltaSink {
            tx: None,
            emitted: false,
        };
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu","name":"f","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"2}"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":15}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        for (event, data) in events {
            s.event(
                &SseEvent {
                    event: event.into(),
                    data: data.into(),
                },
                &mut sink,
            )
            .unwrap();
        }
        assert!(s.done);
        let p = s.finish().unwrap();
        assert_eq!(p.text, "Hi there");
        assert_eq!(p.tool_calls[0].arguments, json!({"x": 2}));
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 25,
                output_tokens: 15
            }
        );
        let mut s = Stream::default();
        let err = s.event(
            &SseEvent {
                event: "error".into(),
                data: r#"{"type":"error","error":{"type":"overloaded_error"}}"#.into(),
            },
            &mut sink,
        );
        assert!(matches!(err, Err(AttemptError::Status { status: 529, .. })));
    }
}
