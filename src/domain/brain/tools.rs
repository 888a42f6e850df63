//! The tools an agent may call, as the model sees them (native function declarations) and as the
//! gateway runs them. Only `shell.run` reaches an executor today; connector and team tools are refused
//! with the original's codes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::inference::ToolSpec;

pub const SHELL_RUN: &str = "shell.run";

/// A tool id as a native function name: providers allow `[A-Za-z0-9_-]` only, so `.` becomes `__`.
pub fn native_name(tool_id: &str) -> String {
    tool_id.replace('.', "__")
}

/// The tool id a native function name stands for.
pub fn tool_id(native: &str) -> String {
    native.replace("__", ".")
}

/// The declarations offered to the model: the allowed tools this brain can run.
pub fn specs(allow: &[String]) -> Vec<ToolSpec> {
    allow
        .iter()
        .filter(|t| t.as_str() == SHELL_RUN)
        .map(|_| ToolSpec {
            name: native_name(SHELL_RUN),
            description: "Run a shell script on the user's paired machine, in a sandbox with no \
                          network by default. The working directory persists between calls: files \
                          written by one call are there for the next. Returns stdout, stderr and \
                          the exit code."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "script": {"type": "string", "description": "The script to run."},
                    "shell": {"type": "string", "enum": ["sh", "bash"]},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "required": ["script"],
                "additionalProperties": false
            }),
        })
        .collect()
}

/// `shell.run`'s input (gateway spec 5.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShellInput {
    pub script: String,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub sandbox: Option<Value>,
    #[serde(default)]
    pub selector: Option<Value>,
}

/// Why a tool call cannot run, as the loop's failure code.
pub fn check(tool_id: &str, allow: &[String], shell: &Result<(), String>) -> Result<(), String> {
    if !allow.iter().any(|a| a == tool_id) {
        return Err(format!("TOOL_NOT_ALLOWED:{tool_id}"));
    }
    match tool_id {
        SHELL_RUN => shell.clone(),
        "team.delegate" | "team.map" => Err("TEAM_NOT_CONFIGURED".into()),
        other => Err(format!("TOOL_NOT_SUPPORTED:{other}")),
    }
}

/// Reads `shell.run`'s input: a script of 1..=200000 chars, a known shell, string env values.
pub fn shell_input(input: &Value) -> Result<ShellInput, &'static str> {
    let parsed: ShellInput =
        serde_json::from_value(input.clone()).map_err(|_| "INVALID_TOOL_INPUT")?;
    let len = parsed.script.chars().count();
    if len == 0 || len > 200_000 {
        return Err("INVALID_TOOL_INPUT");
    }
    if parsed
        .shell
        .as_deref()
        .is_some_and(|s| s != "sh" && s != "bash")
    {
        return Err("INVALID_TOOL_INPUT");
    }
    if parsed.env.len() > 100 || parsed.env.keys().any(|k| !valid_env_name(k)) {
        return Err("INVALID_TOOL_INPUT");
    }
    Ok(parsed)
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The executor payload of a shell call (the node an `agent.execute` executor runs, gateway spec 3.4).
pub fn shell_payload(
    node_id: &str,
    input: &ShellInput,
    run_id: uuid::Uuid,
    workflow_id: uuid::Uuid,
    attempt: u32,
) -> Value {
    let mut task = serde_json::Map::new();
    task.insert("type".into(), json!("shell"));
    task.insert("script".into(), json!(input.script));
    if let Some(s) = &input.shell {
        task.insert("shell".into(), json!(s));
    }
    if !input.env.is_empty() {
        task.insert("env".into(), json!(input.env));
    }
    let mut config = serde_json::Map::new();
    config.insert("task".into(), Value::Object(task));
    // Only the sandbox keys an executor reads; a passthrough allow-list is never honoured for agents.
    if let Some(s) = input.sandbox.as_ref().and_then(Value::as_object) {
        let mut sandbox = serde_json::Map::new();
        for key in ["backend", "network", "timeoutMs"] {
            if let Some(v) = s.get(key) {
                sandbox.insert(key.into(), v.clone());
            }
        }
        if let Some(image) = s.get("docker").and_then(|d| d.get("image")) {
            sandbox.insert("docker".into(), json!({ "image": image }));
        }
        config.insert("sandbox".into(), Value::Object(sandbox));
    }
    config.insert("execution".into(), json!({"mode": "executor"}));
    json!({
        "nodeId": node_id,
        "node": {"id": node_id, "type": "agent.execute", "config": Value::Object(config)},
        "runId": run_id,
        "workflowId": workflow_id,
        "attemptCount": attempt,
    })
}

/// A JSON value cut to `max` chars of its text (the spec's summary bounds: 4000 for inputs, 20000 for
/// outputs).
pub fn summary(value: &Value, max: usize) -> Value {
    let text = value.to_string();
    if text.chars().count() <= max {
        return value.clone();
    }
    let cut: String = text.chars().take(max).collect();
    json!({"truncated": true, "preview": cut})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_names_round_trip() {
        assert_eq!(native_name("shell.run"), "shell__run");
        assert_eq!(tool_id("shell__run"), "shell.run");
        assert_eq!(specs(&["shell.run".into(), "other".into()]).len(), 1);
        assert!(specs(&[]).is_empty());
    }

    #[test]
    fn calls_are_checked_against_allow_list_and_policy() {
        let allow = vec!["shell.run".to_string(), "team.map".into(), "x.y".into()];
        let on = Ok(());
        let off = Err("TOOL_POLICY_DENIED:shell.run".to_string());
        assert_eq!(check("shell.run", &allow, &on), Ok(()));
        assert_eq!(check("shell.run", &allow, &off), off);
        assert_eq!(
            check("connector.github.x", &allow, &on),
            Err("TOOL_NOT_ALLOWED:connector.github.x".into())
        );
        assert_eq!(
            check("team.map", &allow, &on),
            Err("TEAM_NOT_CONFIGURED".into())
        );
        assert_eq!(
            check("x.y", &allow, &on),
            Err("TOOL_NOT_SUPPORTED:x.y".into())
        );
    }

    #[test]
    fn shell_input_is_validated() {
        assert!(shell_input(&json!({"script": "ls"})).is_ok());
        assert!(shell_input(&json!({"script": ""})).is_err());
        assert!(shell_input(&json!({"script": "ls", "shell": "zsh"})).is_err());
        assert!(shell_input(&json!({"script": "ls", "env": {"1A": "x"}})).is_err());
        assert!(shell_input(&json!({"script": "ls", "extra": 1})).is_err());
        let p = shell_payload(
            "agent:tool:0",
            &shell_input(&json!({"script": "ls", "sandbox": {"network": "none", "envPassthroughAllowlist": ["HOME"]}})).unwrap(),
            uuid::Uuid::nil(),
            uuid::Uuid::nil(),
            1,
        );
        assert_eq!(p["node"]["config"]["task"]["script"], "ls");
        assert_eq!(p["node"]["config"]["sandbox"], json!({"network": "none"}));
        assert_eq!(p["node"]["config"]["execution"]["mode"], "executor");
    }
}
