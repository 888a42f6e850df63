//! Google Gemini (`/v1beta/models/<model>:generateContent`, streamed through `:streamGenerateContent?alt=sse`).
//! The key travels in `x-goog-api-key`, never in the query string (query strings end up in logs).
//! `systemInstruction`, `functionDeclarations`, `functionCall`/`functionResponse` parts; Gemini gives
//! calls no id, so one is made up per call.

use serde_json::{json, Value};

use super::retry::AttemptError;
use super::sse::SseEvent;
use super::{
    call_id_or_new, count, ChatRequest, DeltaSink, HttpCall, Message, Parsed, ToolCall, Usage,
};

pub(crate) fn request(req: &ChatRequest, base: &str, stream: bool) -> HttpCall {
    let mut system: Vec<&str> = Vec::new();
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, parts: Vec<Value>| {
        if parts.is_empty() {
            return;
        }
        match contents.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    };
    for m in &req.messages {
        match m {
            Message::System(text) => system.push(text),
            Message::User(text) => push("user", vec![json!({"text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                parts.extend(
                    tool_calls
                        .iter()
                        .map(|c| json!({"functionCall": {"name": c.name, "args": args_object(&c.arguments)}})),
                );
                push("model", parts);
            }
            Message::ToolResult { name, content, .. } => push(
                "user",
                vec![json!({"functionResponse": {"name": name, "response": {"content": content}}})],
            ),
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut generation = json!({"temperature": 0});
    if let (Some(max), Some(g)) = (req.max_output_tokens, generation.as_object_mut()) {
        g.insert("maxOutputTokens".into(), json!(max));
    }
    let mut body = json!({"contents": contents, "generationConfig": generation});
    if let Some(obj) = body.as_object_mut() {
        if !system.is_empty() {
            obj.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system.join("\n\n")}]}),
            );
        }
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description, "parameters": schema(&t.parameters)})
                })
                .collect();
            obj.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
    }
    let model = path_segment(req.model.strip_prefix("models/").unwrap_or(&req.model));
    let url = if stream {
        format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/v1beta/models/{model}:generateContent")
    };
    HttpCall { url, body }
}

fn args_object(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        other => json!({"_raw": other}),
    }
}

/// Gemini takes an OpenAPI subset of JSON Schema and refuses keys it does not know.
fn schema(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "$schema" | "$id" | "additionalProperties"))
                .map(|(k, v)| (k.clone(), schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(schema).collect()),
        other => other.clone(),
    }
}

/// The model name as one URL path segment: anything unusual is percent-encoded, so a model name cannot
/// change the path or add a query.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads one `GenerateContentResponse` (a whole answer, or one chunk of a stream) into `into`.
fn read_chunk(
    v: &Value,
    into: &mut Parsed,
    sink: &mut DeltaSink,
    whole: bool,
) -> Result<(), AttemptError> {
    if !v.is_object() {
        return Err(AttemptError::Invalid("answer is not an object".into()));
    }
    if let Some(u) = v.get("usageMetadata") {
        // Thinking tokens are billed as output.
        into.usage = Usage {
            input_tokens: count(u.get("promptTokenCount")),
            output_tokens: count(u.get("candidatesTokenCount"))
                + count(u.get("thoughtsTokenCount")),
        };
    }
    let candidate = v
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let Some(candidate) = candidate else {
        // A blocked prompt has feedback and no candidates; a stream's last chunk may carry only usage.
        if whole && v.get("promptFeedback").is_none() {
            return Err(AttemptError::Invalid("no candidates".into()));
        }
        return Ok(());
    };
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for part in parts {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            into.text.push_str(text);
            sink.send(text);
        } else if let Some(call) = part.get("functionCall") {
            let name = call
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| AttemptError::Invalid("functionCall without name".into()))?;
            into.tool_calls.push(ToolCall {
                id: call_id_or_new(call.get("id").and_then(Value::as_str)),
                name: name.to_string(),
                arguments: call.get("args").cloned().unwrap_or_else(|| json!({})),
            });
        }
    }
    Ok(())
}

pub(crate) fn parse(v: &Value) -> Result<Parsed, AttemptError> {
    let mut parsed = Parsed::default();
    let mut no_sink = DeltaSink {
        tx: None,
        emitted: false,
    };
    read_chunk(v, &mut parsed, &mut no_sink, true)?;
    parsed.checked()
}

#[derive(Default)]
pub(crate) struct Stream {
    parsed: Parsed,
}

impl Stream {
    pub(crate) fn event(
        &mut self,
        ev: &SseEvent,
        sink: &mut DeltaSink,
    ) -> Result<(), AttemptError> {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| AttemptError::Invalid(format!("stream chunk not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
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
        read_chunk(&v, &mut self.parsed, sink, false)
    }

    pub(crate) fn finish(self) -> Result<Parsed, AttemptError> {
        self.parsed.checked()
    }
}

#[cfg(test)]
mod tests {
    use super::super::openai::tests::sample_request;
    use super::super::Provider;
    use super::*;

    #[test]
    fn request_body_and_paths() {
        let mut req = sample_request(Provider::Gemini, true);
        req.tools[0].parameters["additionalProperties"] = json!(false);
        let call = request(&req, "http://h", false);
        assert_eq!(call.url, "http://h/v1beta/models/m-1:generateContent");
        let b = &call.body;
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(
            b["generationConfig"],
            json!({"temperature": 0, "maxOutputTokens": 256})
        );
        let decl = &b["tools"][0]["functionDeclarations"][0];
        assert_eq!(decl["name"], "shell_run");
        assert!(decl["parameters"].get("additionalProperties").is_none());
        assert_eq!(
            b["contents"][0],
            json!({"role": "user", "parts": [{"text": "list files"}]})
        );
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(
            b["contents"][1]["parts"][0]["functionCall"],
            json!({"name": "shell_run", "args": {"script": "ls"}})
        );
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "shell_run", "response": {"content": "a.txt"}})
        );
        assert!(!call.url.contains("key="));
        req.model = "models/x?key=1/../y".into();
        let streamed = request(&req, "http://h", true);
        assert_eq!(
            streamed.url,
            "http://h/v1beta/models/x%3Fkey%3D1%2F..%2Fy:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn response_text_calls_usage() {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking", "thought": true},
            {"text": "Running it."},
            {"functionCall": {"name": "shell_run", "args": {"script": "ls"}}}
        ]}}], "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13}});
        let p = parse(&v).unwrap();
        assert_eq!(p.text, "Running it.");
        assert_eq!(p.tool_calls[0].name, "shell_run");
        assert!(p.tool_calls[0].id.starts_with("call_"));
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 8,
                output_tokens: 5
            }
        );
        assert!(matches!(
            parse(&json!({"promptFeedback": {"blockReason": "SAFETY"}})),
            Err(AttemptError::Empty)
        ));
        assert!(matches!(
            parse(&json!({"foo": 1})),
            Err(AttemptError::Invalid(_))
        ));
        assert!(matches!(parse(&json!([1])), Err(AttemptError::Invalid(_))));
    }

    #[test]
    fn stream_chunks_accumulate() {
        let mut s = Stream::default();
        let mut sink = DeltaSink {
            tx: None,
            emitted: false,
        };
        for data in [
            r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":4}}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}"#,
        ] {
            s.event(
                &SseEvent {
                    event: String::new(),
                    data: data.into(),
                },
                &mut sink,
            )
            .unwrap();
        }
        let p = s.finish().unwrap();
        assert_eq!(p.text, "Hello");
        assert_eq!(
            p.usage,
            Usage {
                input_tokens: 4,
                output_tokens: 2
            }
        );
    }
}
