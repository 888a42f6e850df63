//! The original's tool-calling format (gateway spec 5.4), for models or endpoints without native tool
//! calling: the model answers exactly one JSON object, `{"type":"final","output":…}` or
//! `{"type":"tool_call","toolId":…,"input":{…}}`, and tool results come back as user messages.

use serde_json::{json, Map, Value};

/// What one reply asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    Final(Value),
    ToolCall { tool_id: String, input: Value },
}

/// The system message: the custom text, the envelope rules and the allowed tool ids.
pub fn system_message(custom: Option<&str>, tools: &[String]) -> String {
    let mut parts = Vec::new();
    if let Some(c) = custom.filter(|c| !c.trim().is_empty()) {
        parts.push(c.to_string());
    }
    parts.push(
        "You are a Vespid agent. Reply with exactly one JSON object and nothing else.".to_string(),
    );
    parts.push(
        "To answer: {\"type\":\"final\",\"output\":<any JSON>}. To use a tool: \
         {\"type\":\"tool_call\",\"toolId\":\"<toolId>\",\"input\":{...}}."
            .to_string(),
    );
    parts.push(format!(
        "Allowed tool ids: {}",
        serde_json::to_string(tools).unwrap_or_else(|_| "[]".into())
    ));
    parts.join("\n\n")
}

/// A tool call as replayed to the model (the assistant's own envelope).
pub fn tool_call_message(tool_id: &str, input: &Value) -> String {
    json!({"type": "tool_call", "toolId": tool_id, "input": input}).to_string()
}

/// A tool result as the model reads it (a user message).
pub fn tool_result_message(
    tool_id: &str,
    call_index: u32,
    status: &str,
    error: Option<&str>,
    output: &Value,
) -> String {
    let mut m = Map::new();
    m.insert("type".into(), json!("tool_result"));
    m.insert("toolId".into(), json!(tool_id));
    m.insert("callIndex".into(), json!(call_index));
    m.insert("status".into(), json!(status));
    if let Some(e) = error {
        m.insert("error".into(), json!(e));
    }
    m.insert("output".into(), output.clone());
    Value::Object(m).to_string()
}

/// Reads a reply: the whole text as JSON; else the inside of a single ```json fence; else the span from
/// the first `{` to the last `}`. It must be an object with a non-empty string `type`.
pub fn parse(reply: &str) -> Result<Envelope, &'static str> {
    let text = reply.trim();
    let value = serde_json::from_str::<Value>(text)
        .ok()
        .or_else(|| fenced(text).and_then(|inner| serde_json::from_str(inner).ok()))
        .or_else(|| {
            let start = text.find('{')?;
            let end = text.rfind('}')?;
            (start < end)
                .then(|| serde_json::from_str(&text[start..=end]).ok())
                .flatten()
        })
        .ok_or("INVALID_AGENT_OUTPUT")?;
    let obj = value.as_object().ok_or("INVALID_AGENT_OUTPUT")?;
    match obj.get("type").and_then(Value::as_str) {
        Some("final") => Ok(Envelope::Final(
            obj.get("output").cloned().unwrap_or(Value::Null),
        )),
        Some("tool_call") => {
            let tool_id = obj
                .get("toolId")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or("INVALID_AGENT_OUTPUT")?;
            let input = obj.get("input").cloned().unwrap_or_else(|| json!({}));
            if !input.is_object() {
                return Err("INVALID_TOOL_INPUT");
            }
            Ok(Envelope::ToolCall {
                tool_id: tool_id.to_string(),
                input,
            })
        }
        Some(t) if !t.is_empty() => Err("INVALID_AGENT_OUTPUT"),
        _ => Err("INVALID_AGENT_OUTPUT"),
    }
}

/// A final answer that must be JSON: the text itself, or the inside of one fence.
pub fn parse_json(text: &str) -> Option<Value> {
    let text = text.trim();
    serde_json::from_str(text)
        .ok()
        .or_else(|| fenced(text).and_then(|inner| serde_json::from_str(inner).ok()))
}

/// The inside of a reply that is one fenced block (```json or bare ```).
fn fenced(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?;
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    let inner = rest.strip_suffix("```")?;
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_json_fenced_or_embedded() {
        assert_eq!(
            parse(r#"{"type":"final","output":"hi"}"#),
            Ok(Envelope::Final(json!("hi")))
        );
        assert_eq!(
            parse("```json\n{\"type\":\"tool_call\",\"toolId\":\"shell.run\",\"input\":{\"script\":\"ls\"}}\n```"),
            Ok(Envelope::ToolCall {
                tool_id: "shell.run".into(),
                input: json!({"script": "ls"})
            })
        );
        assert_eq!(
            parse("Sure! {\"type\":\"final\",\"output\":{\"a\":1}} hope that helps"),
            Ok(Envelope::Final(json!({"a": 1})))
        );
        assert_eq!(parse("no json here"), Err("INVALID_AGENT_OUTPUT"));
        assert_eq!(parse(r#"{"output":1}"#), Err("INVALID_AGENT_OUTPUT"));
        assert_eq!(parse(r#"[1,2]"#), Err("INVALID_AGENT_OUTPUT"));
        assert_eq!(
            parse(r#"{"type":"tool_call","toolId":"shell.run","input":"ls"}"#),
            Err("INVALID_TOOL_INPUT")
        );
        assert_eq!(
            parse(r#"{"type":"tool_call","input":{}}"#),
            Err("INVALID_AGENT_OUTPUT")
        );
    }

    #[test]
    fn the_system_message_names_the_envelopes_and_tools() {
        let s = system_message(Some("Be brief."), &["shell.run".into()]);
        assert!(s.starts_with("Be brief."));
        assert!(s.contains(r#""type":"final""#));
        assert!(s.contains(r#"["shell.run"]"#));
        let r = tool_result_message("shell.run", 0, "failed", Some("E"), &json!(null));
        let v: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["error"], "E");
        assert_eq!(v["callIndex"], 0);
    }
}
