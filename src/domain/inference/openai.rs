//! OpenAI-compatible chat completions (`/v1/chat/completions`): OpenAI, OpenRouter, vLLM, llama.cpp
//! server, Ollama, DeepSeek. Native `function` tools, `tool_calls` answers, `role:"tool"` results; the
//! stream is SSE chunks ending with `data: [DONE]`, usage in a last chunk (`include_usage`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::retry::AttemptError;
use super::sse::SseEvent;
use super::{
    arguments_from_text, call_id_or_new, count, ChatRequest, DeltaSink, HttpCall, Message, Parsed,
    ToolCall, Usage,
};

pub(crate) fn request(req: &ChatRequest, base: &str, stream: bool) -> HttpCall {
    let messages: Vec<Value> = req.messages.iter().map(message).collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "temperature": 0,
    });
    let obj = body.as_object_mut();
    if let Some(obj) = obj {
        if let Some(max) = req.max_output_tokens {
            obj.insert("max_tokens".into(), json!(max));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            obj.insert("tools".into(), Value::Array(tools));
        }
        if stream {
            obj.insert("stream".into(), json!(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    HttpCall {
        url: format!("{base}/v1/chat/completions"),
        body,
    }
}

fn message(m: &Message) -> Value {
    match m {
        Message::System(text) => json!({"role": "system", "content": text}),
        Message::User(text) => json!({"role": "user", "content": text}),
        Message::Assistant { text, tool_calls } => {
            let mut msg = Map::new();
            msg.insert("role".into(), json!("assistant"));
            // With tool calls and no text, `content` is null (some servers refuse an empty string).
            let content = if text.is_empty() && !tool_calls.is_empty() {
                Value::Null
            } else {
                json!(text)
            };
            msg.insert("content".into(), content);
            if !tool_calls.is_empty() {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function", "function": {
                            "name": c.name, "arguments": arguments_text(&c.arguments)}})
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(msg)
        }
        Message::ToolResult {
            call_id, content, ..
        } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
    }
}

/// Arguments go back as the JSON text the model wrote (a raw string stays as it was).
fn arguments_text(v: &Value) -> String {
    match v {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn parse(v: &Value) -> Result<Parsed, AttemptError> {
    let invalid = |what: &str| AttemptError::Invalid(format!("chat completion: {what}"));
    let message = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or_else(|| invalid("no choices[0].message"))?;
    let text = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("content is not a string")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| invalid("tool_calls is not an array"))?;
        for c in calls {
            let f = c
                .get("function")
                .ok_or_else(|| invalid("tool call without function"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool call without name"))?;
            // Text per the API; some compatible servers send the object itself.
            let arguments = match f.get("arguments") {
                Some(Value::String(raw)) => arguments_from_text(raw),
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            tool_calls.push(ToolCall {
                id: call_id_or_new(c.get("id").and_then(Value::as_str)),
                name: name.to_string(),
                arguments,
            });
        }
    }
    Parsed {
        text,
        tool_calls,
        usage: usage(v.get("usage")),
    }
    .checked()
}

fn usage(u: Option<&Value>) -> Usage {
    Usage {
        input_tokens: count(u.and_then(|u| u.get("prompt_tokens"))),
        output_tokens: count(u.and_then(|u| u.get("completion_tokens"))),
    }
}

/// A tool call being assembled from its fragments.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
pub(crate) struct Stream {
    text: String,
    /// By the `index` the fragments carry.
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
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| AttemptError::Invalid(format!("stream chunk not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            // Mid-stream errors (OpenRouter and others) carry a code or nothing useful.
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            return Err(AttemptError::Status {
                status,
                retry_after: None,
                body: super::truncate(&err.to_string(), 300),
            });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = usage(Some(u));
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return Ok(());
        };
        for choice in choices {
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.text.push_str(text);
                sink.send(text);
            }
            for frag in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let index = frag.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call = self.calls.entry(index).or_default();
                if let Some(id) = frag.get("id").and_then(Value::as_str) {
                    call.id = id.to_string();
                }
                if let Some(f) = frag.get("function") {
                    if let Some(name) = f.get("name").and_then(Value::as_str) {
                        call.name.push_str(name);
                    }
                    if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                        call.arguments.push_str(args);
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<Parsed, AttemptError> {
        let tool_calls = self
            .calls
            .into_values()
            .filter(|c| !c.name.is_empty())
            .map(|c| ToolCall {
                id: call_id_or_new(Some(&c.id)),
                name: c.name,
                arguments: arguments_from_text(&c.arguments),
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
pub(crate) mod tests {
    use super::super::{Credential, Provider, ToolSpec};
    use super::*;

    pub(crate) fn sample_request(provider: Provider, tools: bool) -> ChatRequest {
        ChatRequest {
            provider,
            model: "m-1".into(),
            credential: Credential {
                api_key: zeroize::Zeroizing::new("k".into()),
                base_url: None,
            },
            messages: vec![
                Message::System("be brief".into()),
                Message::User("list files".into()),
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "shell_run".into(),
                        arguments: json!({"script": "ls"}),
                    }],
                },
                Message::ToolResult {
                    call_id: "call_1".into(),
                    name: "shell_run".into(),
                    content: "a.txt".into(),
                },
            ],
            tools: if tools {
                vec![ToolSpec {
                    name: "shell_run".into(),
                    description: "run a script".into(),
                    parameters: json!({"type": "object", "properties": {"script": {"type": "string"}}}),
                }]
            } else {
                vec![]
            },
            max_output_tokens: Some(256),
            deadline: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn request_body_with_tools_and_results() {
        let call = request(&sample_request(Provider::OpenAi, true), "http://h", true);
        assert_eq!(call.url, "http://h/v1/chat/completions");
        let b = call.body;
        assert_eq!(b["temperature"], 0);
        assert_eq!(b["max_tokens"], 256);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["tools"][0]["type"], "function");
        assert_eq!(b["tools"][0]["function"]["name"], "shell_run");
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"script\":\"ls\"}"
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "a.txt"})
        );
        let plain = request(&sample_request(Provider::OpenAi, false), "http://h", false).body;
        assert!(plain.get("tools").is_none() && plain.get("stream").is_none());
    }

    #[test]
    fn response_text_tools_usage() {
        let v = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c9", "type": "function", "function": {"name": "shell_run", "arguments": "{\"script\":\"pwd\"}"}}
        ]}}], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}});
        let p = parse(&v).unwrap();
        assert_eq!(p.text, "");
        assert_eq!(p.tool_calls[0].id, "c9");
        assert_eq!(p.tool_calls[0].arguments, json!({"script": "pwd"}));
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 7
            }
        );
        // Servers that send no id, or the arguments as an object.
        let v = json!({"choices": [{"message": {"tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
        ]}}]});
        let p = parse(&v).unwrap();
        assert!(p.tool_calls[0].id.starts_with("call_"));
        assert_eq!(p.tool_calls[0].arguments, json!({"a": 1}));
        let v = json!({"choices": [{"message": {"content": "hi"}}]});
        assert_eq!(parse(&v).unwrap().text, "hi");
        assert!(matches!(
            parse(&json!({"choices": [{"message": {"content": "  "}}]})),
            Err(AttemptError::Empty)
        ));
        assert!(matches!(
            parse(&json!({"choices": []})),
            Err(AttemptError::Invalid(_))
        ));
        assert!(matches!(
            parse(&json!({"choices": [{"message": {"content": 3}}]})),
            Err(AttemptError::Invalid(_))
        ));
    }

    #[test]
    fn stream_assembles_text_and_tool_fragments() {
        let mut s = Stream::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut sink = DeltaSink {
            tx: Some(tx),
            emitted: false,
        };
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"g","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            "[DONE]",
        ];
        for c in chunks {
            s.event(
                &SseEvent {
                    event: String::new(),
                    data: c.into(),
                },
                &mut sink,
            )
            .unwrap();
        }
        assert!(s.done && sink.emitted);
        let p = s.finish().unwrap();
        assert_eq!(p.text, "Hello");
        assert_eq!(rx.try_recv().unwrap(), "Hel");
        assert_eq!(rx.try_recv().unwrap(), "lo");
        assert_eq!(p.tool_calls.len(), 2);
        assert_eq!(p.tool_calls[0].arguments, json!({"a": 1}));
        assert_eq!(p.tool_calls[1].arguments, json!({}));
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 4
            }
        );
    }
}
