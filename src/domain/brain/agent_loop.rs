//! The one agent loop behind session turns and `agent.run` nodes: ask the model, run the tools it
//! calls on executors, feed the results back, until it answers or a limit stops it. What a turn writes
//! (events, usage) and how a tool reaches an executor is the caller's [`Host`]; the loop only decides.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::json_text::{self, Envelope};
use super::tools::{self, ShellInput};
use crate::domain::gateway::dispatch::DispatchResult;
use crate::domain::gateway::protocol::ResultStatus;
use crate::domain::inference::{
    ChatRequest, ChatResponse, Credential, Deltas, Inference, Message, Provider,
};

crate::text_enum! {
    /// How the model calls tools: the provider's own function calling, or the original's JSON envelopes
    /// in plain text (for endpoints without function calling).
    pub enum ToolCalling {
        Native = "native",
        Json = "json",
    }
}

crate::text_enum! {
    pub enum EventLevel {
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

/// The loop's bounds (gateway spec 4.3 defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_turns: u32,
    pub max_tool_calls: u32,
    pub timeout_ms: u64,
    pub max_output_chars: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_turns: 8,
            max_tool_calls: 20,
            timeout_ms: 60_000,
            max_output_chars: 50_000,
        }
    }
}

impl Limits {
    /// From a stored `limits` object: numeric keys within range are taken, anything else defaults.
    pub fn from_json(v: &Value) -> Self {
        let d = Self::default();
        let num = |k: &str, lo: u64, hi: u64| {
            v.get(k)
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite())
                .map(|n| (n.floor().max(0.0) as u64).clamp(lo, hi))
        };
        Self {
            max_turns: num("maxTurns", 1, 64).map_or(d.max_turns, |n| n as u32),
            max_tool_calls: num("maxToolCalls", 0, 200).map_or(d.max_tool_calls, |n| n as u32),
            timeout_ms: num("timeoutMs", 1000, 600_000).unwrap_or(d.timeout_ms),
            max_output_chars: num("maxOutputChars", 128, 2_000_000).unwrap_or(d.max_output_chars),
        }
    }

    fn max_tokens(&self) -> u32 {
        (self.max_output_chars / 4).clamp(64, 4096) as u32
    }
}

/// One loop's inputs.
pub struct LoopSpec {
    pub provider: Provider,
    pub model: String,
    pub credential: Credential,
    pub system: Option<String>,
    /// Earlier conversation (a session's previous turns).
    pub history: Vec<Message>,
    pub user: String,
    pub allow: Vec<String>,
    pub mode: ToolCalling,
    pub limits: Limits,
    /// Whether `shell.run` may run here: `Err(code)` is the loop's failure when the model calls it
    /// (the org's `tools.shellRunEnabled` is off, or a node that does not run tools on executors).
    pub shell_policy: Result<(), String>,
    /// The final answer must be JSON (an `agent.run` node's `output.mode: "json"`).
    pub json_output: bool,
}

/// What the loop asks of its caller.
pub trait Host: Send + Sync {
    /// Records one progress event (`agent_tool_call`, `agent_tool_result`, `agent_usage`).
    fn event(
        &self,
        event_type: &'static str,
        level: EventLevel,
        payload: Value,
    ) -> BoxFuture<'_, ()>;
    /// Runs one `shell.run` call on an executor.
    fn shell(
        &self,
        call_index: u32,
        input: ShellInput,
        timeout_ms: u64,
    ) -> BoxFuture<'_, DispatchResult>;
    /// Records one model call's usage.
    fn llm_call<'a>(
        &'a self,
        provider: Provider,
        model: &'a str,
        resp: &'a ChatResponse,
    ) -> BoxFuture<'a, ()>;
    /// `Err(code)` when the org may not spend more tokens.
    fn budget(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Where streamed assistant text goes (`None`: not streamed).
    fn deltas(&self) -> Option<Deltas>;
}

/// How a loop ended, with where its time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: Result<Value, String>,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub total_ms: f64,
    pub provider_ms: f64,
    pub tool_ms: f64,
}

impl Outcome {
    /// Time spent neither waiting on the provider nor on a tool: the brain's own overhead.
    pub fn overhead_ms(&self) -> f64 {
        (self.total_ms - self.provider_ms - self.tool_ms).max(0.0)
    }
}

struct Tally {
    started: Instant,
    llm_calls: u32,
    tool_calls: u32,
    provider_ms: f64,
    tool_ms: f64,
}

impl Tally {
    fn end(self, result: Result<Value, String>) -> Outcome {
        Outcome {
            result,
            llm_calls: self.llm_calls,
            tool_calls: self.tool_calls,
            total_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            provider_ms: self.provider_ms,
            tool_ms: self.tool_ms,
        }
    }
}

/// Runs the loop to its outcome. Never panics on what a model, a provider or an executor sends.
pub async fn run(inference: &dyn Inference, spec: LoopSpec, host: &dyn Host) -> Outcome {
    let mut tally = Tally {
        started: Instant::now(),
        llm_calls: 0,
        tool_calls: 0,
        provider_ms: 0.0,
        tool_ms: 0.0,
    };
    let result = drive(inference, &spec, host, &mut tally).await;
    tally.end(result)
}

async fn drive(
    inference: &dyn Inference,
    spec: &LoopSpec,
    host: &dyn Host,
    tally: &mut Tally,
) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.limits.timeout_ms);
    let mut messages = Vec::with_capacity(spec.history.len() + 4);
    let system = match spec.mode {
        ToolCalling::Native => spec.system.clone().filter(|s| !s.trim().is_empty()),
        ToolCalling::Json => Some(json_text::system_message(
            spec.system.as_deref(),
            &spec.allow,
        )),
    };
    if let Some(s) = system {
        messages.push(Message::System(s));
    }
    messages.extend(spec.history.iter().cloned());
    messages.push(Message::User(spec.user.clone()));
    let native_tools = match spec.mode {
        ToolCalling::Native => tools::specs(&spec.allow),
        ToolCalling::Json => Vec::new(),
    };
    let max_chars = spec.limits.max_output_chars as usize;
    for _ in 0..spec.limits.max_turns {
        if tokio::time::Instant::now() >= deadline {
            return Err("LLM_TIMEOUT".into());
        }
        host.budget().await?;
        let req = ChatRequest {
            provider: spec.provider,
            model: spec.model.clone(),
            credential: spec.credential.clone(),
            messages: messages.clone(),
            tools: native_tools.clone(),
            max_output_tokens: Some(spec.limits.max_tokens()),
            deadline,
        };
        let deltas = match spec.mode {
            ToolCalling::Native => host.deltas(),
            ToolCalling::Json => None,
        };
        let resp = inference
            .complete(req, deltas)
            .await
            .map_err(|e| e.code.clone())?;
        tally.llm_calls += 1;
        tally.provider_ms += resp.provider_ms as f64;
        host.llm_call(spec.provider, &spec.model, &resp).await;
        let text = truncate(&resp.text, max_chars);
        let calls: Vec<(Option<String>, String, Value)> = match spec.mode {
            ToolCalling::Native if resp.tool_calls.is_empty() => {
                return final_answer(Value::String(text), spec.json_output);
            }
            ToolCalling::Native => {
                messages.push(Message::Assistant {
                    text: text.clone(),
                    tool_calls: resp.tool_calls.clone(),
                });
                resp.tool_calls
                    .iter()
                    .map(|c| {
                        (
                            Some(c.id.clone()),
                            tools::tool_id(&c.name),
                            c.arguments.clone(),
                        )
                    })
                    .collect()
            }
            ToolCalling::Json => match json_text::parse(&text).map_err(str::to_string)? {
                Envelope::Final(output) => return final_answer(output, spec.json_output),
                Envelope::ToolCall { tool_id, input } => {
                    messages.push(Message::Assistant {
                        text: json_text::tool_call_message(&tool_id, &input),
                        tool_calls: Vec::new(),
                    });
                    vec![(None, tool_id, input)]
                }
            },
        };
        for (call_id, tool_id, input) in calls {
            if tally.tool_calls >= spec.limits.max_tool_calls {
                return Err("AGENT_MAX_TOOL_CALLS".into());
            }
            let index = tally.tool_calls;
            tally.tool_calls += 1;
            tools::check(&tool_id, &spec.allow, &spec.shell_policy)?;
            let shell = tools::shell_input(&input).map_err(str::to_string)?;
            host.event(
                "agent_tool_call",
                EventLevel::Info,
                json!({"callIndex": index, "toolId": tool_id, "input": tools::summary(&input, 4000)}),
            )
            .await;
            let remaining = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_millis() as u64;
            if remaining < 1000 {
                return Err("LLM_TIMEOUT".into());
            }
            let started = Instant::now();
            let result = host.shell(index, shell, remaining.min(600_000)).await;
            tally.tool_ms += started.elapsed().as_secs_f64() * 1000.0;
            let status = match result.status {
                ResultStatus::Succeeded => "succeeded",
                _ => "failed",
            };
            let output = result
                .output
                .as_ref()
                .map_or(Value::Null, |o| tools::summary(o, 20_000));
            let mut payload =
                json!({"callIndex": index, "toolId": tool_id, "status": status, "output": output});
            if let (Some(e), Some(obj)) = (&result.error, payload.as_object_mut()) {
                obj.insert("error".into(), json!(e));
            }
            let level = if status == "succeeded" {
                EventLevel::Info
            } else {
                EventLevel::Warn
            };
            host.event("agent_tool_result", level, payload).await;
            // A failed tool is the model's to handle: it reads the error and decides.
            match (&spec.mode, call_id) {
                (ToolCalling::Native, Some(id)) => messages.push(Message::ToolResult {
                    call_id: id,
                    name: tools::native_name(&tool_id),
                    content: json!({"status": status, "error": result.error, "output": output})
                        .to_string(),
                }),
                _ => messages.push(Message::User(json_text::tool_result_message(
                    &tool_id,
                    index,
                    status,
                    result.error.as_deref(),
                    &output,
                ))),
            }
        }
    }
    Err("AGENT_MAX_TURNS".into())
}

fn final_answer(output: Value, json_output: bool) -> Result<Value, String> {
    if !json_output {
        return Ok(output);
    }
    match output {
        Value::String(s) => {
            json_text::parse_json(&s).ok_or_else(|| "INVALID_AGENT_JSON_OUTPUT".into())
        }
        other => Ok(other),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures_util::FutureExt;

    use super::*;
    use crate::domain::inference::{InferenceError, ToolCall, Usage};

    type Scripted1 = Result<(String, Vec<ToolCall>), &'static str>;

    /// Answers from a script, and keeps what it was asked.
    struct Scripted {
        replies: Mutex<VecDeque<Scripted1>>,
        asked: Mutex<Vec<Vec<Message>>>,
    }

    impl Scripted {
        fn new(replies: Vec<Scripted1>) -> Self {
            Self {
                replies: Mutex::new(replies.into()),
                asked: Mutex::new(Vec::new()),
            }
        }
    }

    impl Inference for Scripted {
        fn complete<'a>(
            &'a self,
            req: ChatRequest,
            deltas: Option<Deltas>,
        ) -> BoxFuture<'a, Result<ChatResponse, InferenceError>> {
            self.asked.lock().unwrap().push(req.messages.clone());
            let next = self.replies.lock().unwrap().pop_front();
            async move {
                match next {
                    Some(Ok((text, tool_calls))) => {
                        if let Some(d) = deltas {
                            let _ = d.send(text.clone());
                        }
                        Ok(ChatResponse {
                            text,
                            tool_calls,
                            usage: Usage {
                                input_tokens: 10,
                                output_tokens: 3,
                            },
                            latency_ms: 1,
                            provider_ms: 1,
                            attempts: 1,
                        })
                    }
                    other => Err(InferenceError {
                        code: match other {
                            Some(Err(code)) => code.into(),
                            _ => "SCRIPT_EMPTY".into(),
                        },
                        retryable: false,
                        detail: String::new(),
                    }),
                }
            }
            .boxed()
        }
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<(String, Value)>>,
        shells: Mutex<Vec<String>>,
        calls: Mutex<u32>,
        deny_budget: bool,
    }

    impl Host for Recorder {
        fn event(&self, t: &'static str, _l: EventLevel, p: Value) -> BoxFuture<'_, ()> {
            self.events.lock().unwrap().push((t.to_string(), p));
            async {}.boxed()
        }
        fn shell(&self, _i: u32, input: ShellInput, _t: u64) -> BoxFuture<'_, DispatchResult> {
            self.shells.lock().unwrap().push(input.script.clone());
            let r = if input.script == "fail" {
                DispatchResult::failed("DOCKER_EXIT_CODE:1")
            } else {
                DispatchResult {
                    status: ResultStatus::Succeeded,
                    output: Some(json!({"stdout": format!("ran {}", input.script)})),
                    error: None,
                }
            };
            async move { r }.boxed()
        }
        fn llm_call<'a>(
            &'a self,
            _p: Provider,
            _m: &'a str,
            _r: &'a ChatResponse,
        ) -> BoxFuture<'a, ()> {
            *self.calls.lock().unwrap() += 1;
            async {}.boxed()
        }
        fn budget(&self) -> BoxFuture<'_, Result<(), String>> {
            let r = if self.deny_budget {
                Err("LLM_BUDGET_EXCEEDED".to_string())
            } else {
                Ok(())
            };
            async move { r }.boxed()
        }
        fn deltas(&self) -> Option<Deltas> {
            None
        }
    }

    fn spec(mode: ToolCalling) -> LoopSpec {
        LoopSpec {
            provider: Provider::OpenAi,
            model: "m".into(),
            credential: Credential {
                api_key: zeroize::Zeroizing::new("k".into()),
                base_url: None,
            },
            system: Some("sys".into()),
            history: vec![Message::User("earlier".into())],
            user: "do it".into(),
            allow: vec!["shell.run".into()],
            mode,
            limits: Limits::default(),
            shell_policy: Ok(()),
            json_output: false,
        }
    }

    fn call(id: &str, script: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "shell__run".into(),
            arguments: json!({ "script": script }),
        }
    }

    #[tokio::test]
    async fn native_tool_calls_run_in_order_and_feed_back() {
        let model = Scripted::new(vec![
            Ok((String::new(), vec![call("a", "one")])),
            Ok(("thinking".into(), vec![call("b", "fail")])),
            Ok(("done".into(), vec![])),
        ]);
        let host = Recorder::default();
        let out = run(&model, spec(ToolCalling::Native), &host).await;
        assert_eq!(out.result, Ok(json!("done")));
        assert_eq!((out.llm_calls, out.tool_calls), (3, 2));
        assert_eq!(*host.shells.lock().unwrap(), vec!["one", "fail"]);
        let kinds: Vec<String> = host
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.0.clone())
            .collect();
        assert_eq!(
            kinds,
            [
                "agent_tool_call",
                "agent_tool_result",
                "agent_tool_call",
                "agent_tool_result"
            ]
        );
        let events = host.events.lock().unwrap();
        assert_eq!(events[3].1["status"], "failed");
        assert_eq!(events[3].1["error"], "DOCKER_EXIT_CODE:1");
        // The third request carries both results, the failure included, after the history.
        let asked = model.asked.lock().unwrap();
        let last = &asked[2];
        assert!(matches!(&last[0], Message::System(s) if s == "sys"));
        assert!(matches!(&last[1], Message::User(s) if s == "earlier"));
        let results: Vec<&String> = last
            .iter()
            .filter_map(|m| match m {
                Message::ToolResult { content, .. } => Some(content),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 2);
        assert!(results[1].contains("DOCKER_EXIT_CODE:1"));
        assert_eq!(*host.calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn json_envelopes_drive_the_same_loop() {
        let model = Scripted::new(vec![
            Ok((
                r#"{"type":"tool_call","toolId":"shell.run","input":{"script":"ls"}}"#.into(),
                vec![],
            )),
            Ok((
                "```json\n{\"type\":\"final\",\"output\":{\"files\":2}}\n```".into(),
                vec![],
            )),
        ]);
        let host = Recorder::default();
        let out = run(&model, spec(ToolCalling::Json), &host).await;
        assert_eq!(out.result, Ok(json!({"files": 2})));
        let asked = model.asked.lock().unwrap();
        assert!(matches!(&asked[0][0], Message::System(s) if s.contains("Allowed tool ids")));
        assert!(
            matches!(asked[1].last(), Some(Message::User(s)) if s.contains("tool_result") && s.contains("ran ls"))
        );
    }

    #[tokio::test]
    async fn limits_policy_budget_and_provider_errors_end_the_loop_clearly() {
        let forever = || {
            (0..20)
                .map(|i| Ok((String::new(), vec![call(&i.to_string(), "x")])))
                .collect::<Vec<_>>()
        };
        let mut s = spec(ToolCalling::Native);
        s.limits.max_turns = 3;
        let out = run(&Scripted::new(forever()), s, &Recorder::default()).await;
        assert_eq!(out.result, Err("AGENT_MAX_TURNS".into()));
        let mut s = spec(ToolCalling::Native);
        s.limits.max_tool_calls = 2;
        let out = run(&Scripted::new(forever()), s, &Recorder::default()).await;
        assert_eq!(out.result, Err("AGENT_MAX_TOOL_CALLS".into()));
        let mut s = spec(ToolCalling::Native);
        s.shell_policy = Err("TOOL_POLICY_DENIED:shell.run".into());
        let host = Recorder::default();
        let out = run(&Scripted::new(forever()), s, &host).await;
        assert_eq!(out.result, Err("TOOL_POLICY_DENIED:shell.run".into()));
        assert!(host.shells.lock().unwrap().is_empty());
        let host = Recorder {
            deny_budget: true,
            ..Default::default()
        };
        let out = run(&Scripted::new(forever()), spec(ToolCalling::Native), &host).await;
        assert_eq!(out.result, Err("LLM_BUDGET_EXCEEDED".into()));
        let out = run(
            &Scripted::new(vec![Err("OPENAI_REQUEST_FAILED:503")]),
            spec(ToolCalling::Native),
            &Recorder::default(),
        )
        .await;
        assert_eq!(out.result, Err("OPENAI_REQUEST_FAILED:503".into()));
        let out = run(
            &Scripted::new(vec![Ok(("not json".into(), vec![]))]),
            spec(ToolCalling::Json),
            &Recorder::default(),
        )
        .await;
        assert_eq!(out.result, Err("INVALID_AGENT_OUTPUT".into()));
        let mut s = spec(ToolCalling::Native);
        s.json_output = true;
        let out = run(
            &Scripted::new(vec![Ok(("plain words".into(), vec![]))]),
            s,
            &Recorder::default(),
        )
        .await;
        assert_eq!(out.result, Err("INVALID_AGENT_JSON_OUTPUT".into()));
        let bad = ToolCall {
            id: "z".into(),
            name: "shell__run".into(),
            arguments: json!({"script": 5}),
        };
        let out = run(
            &Scripted::new(vec![Ok((String::new(), vec![bad]))]),
            spec(ToolCalling::Native),
            &Recorder::default(),
        )
        .await;
        assert_eq!(out.result, Err("INVALID_TOOL_INPUT".into()));
    }

    #[test]
    fn limits_are_read_within_range() {
        let l =
            Limits::from_json(&json!({"maxTurns": 1000, "maxToolCalls": 3.7, "timeoutMs": "x"}));
        assert_eq!(l.max_turns, 64);
        assert_eq!(l.max_tool_calls, 3);
        assert_eq!(l.timeout_ms, 60_000);
        assert_eq!(Limits::from_json(&Value::Null), Limits::default());
    }
}
