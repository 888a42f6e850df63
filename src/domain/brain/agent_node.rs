//! `agent.run` nodes (workflows spec 5.6): the run blocks on the node, the gateway hands the dispatch
//! here, the loop runs with the node's model, prompt, tools and limits, and its final answer is the
//! dispatch result. Each tool call and result is written to the run's events as it happens.

use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};
use tracing::Instrument;

use super::agent_loop::{self, EventLevel, Host, Limits, LoopSpec};
use super::tools::{self, ShellInput};
use super::Brain;
use crate::domain::common::ids::{OrgId, RunId};
use crate::domain::gateway::dispatch::{DispatchRequest, DispatchResult};
use crate::domain::gateway::protocol::ResultStatus;
use crate::domain::gateway::workspace::OwnerType;
use crate::domain::gateway::AgentRunner;
use crate::domain::inference::{ChatResponse, Deltas, Provider};
use crate::domain::runs::model::{EventKind, Level};
use crate::domain::workflows::dsl::spec::AgentRun;

impl AgentRunner for Brain {
    fn run_agent<'a>(&'a self, req: &'a DispatchRequest) -> BoxFuture<'a, DispatchResult> {
        let span = tracing::info_span!("agent_run", org_id = %req.organization_id, run_id = %req.run_id, node_id = %req.node_id);
        async move {
            let Some(me) = self.me.upgrade() else {
                return DispatchResult::failed("BRAIN_NOT_AVAILABLE");
            };
            let Ok(_slot) = me.slots.clone().acquire_owned().await else {
                return DispatchResult::failed("BRAIN_NOT_AVAILABLE");
            };
            match me.agent_node(req).await {
                Ok(output) => DispatchResult {
                    status: ResultStatus::Succeeded,
                    output: Some(output),
                    error: None,
                },
                Err(code) => DispatchResult::failed(code),
            }
        }
        .instrument(span)
        .boxed()
    }
}

impl Brain {
    async fn agent_node(self: &Arc<Self>, req: &DispatchRequest) -> Result<Value, String> {
        let org = OrgId::from(req.organization_id);
        let run = RunId::from(req.run_id);
        let payload = &req.payload;
        let cfg: AgentRun = payload
            .pointer("/node/config")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .ok_or("INVALID_AGENT_CONFIG")?;
        let node_id = payload
            .get("nodeId")
            .and_then(Value::as_str)
            .unwrap_or(&req.node_id)
            .to_string();
        let provider: Provider = cfg
            .llm
            .provider
            .parse()
            .map_err(|_| "LLM_PROVIDER_NOT_SUPPORTED".to_string())?;
        let settings = self.orgs.stored_settings(org).await.unwrap_or(Value::Null);
        // The node's own secret, else the org's default for agent nodes, else the operator's key.
        let secret = cfg.llm.auth.secret_id.or_else(|| {
            settings
                .pointer("/llm/defaults/workflowAgentRun/secretId")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
        });
        let credential = self
            .credential(
                org,
                provider,
                secret.map(Into::into),
                cfg.llm.auth.fallback_to_env,
                Some(run),
            )
            .await?;
        let shell_policy = if cfg.tools.execution.as_str() != "executor" {
            Err("SHELL_TOOL_REQUIRES_EXECUTOR_EXECUTION".to_string())
        } else if settings
            .pointer("/tools/shellRunEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            Ok(())
        } else {
            Err("TOOL_POLICY_DENIED:shell.run".to_string())
        };
        let user = user_message(&cfg, payload);
        let spec = LoopSpec {
            provider,
            model: cfg.llm.model.clone(),
            credential,
            system: cfg.prompt.system.clone(),
            history: Vec::new(),
            user,
            allow: cfg.tools.allow.clone(),
            mode: self.config.tool_calling,
            limits: Limits {
                max_turns: cfg.limits.max_turns.max(1),
                max_tool_calls: cfg.limits.max_tool_calls,
                timeout_ms: cfg.limits.timeout_ms.clamp(1000, 600_000),
                max_output_chars: cfg.limits.max_output_chars.max(128),
            },
            shell_policy,
            json_output: cfg.output.mode == "json",
        };
        let host = NodeHost {
            brain: Arc::clone(self),
            org,
            run,
            request: req.clone(),
            node_id,
        };
        let outcome = agent_loop::run(self.inference.as_ref(), spec, &host).await;
        self.metrics.ended("agent.run", &outcome);
        outcome.result
    }
}

/// The user message of a node (gateway spec 5.4): the instructions, the run's input and the steps so
/// far as pretty JSON, then the rendered `inputTemplate`.
fn user_message(cfg: &AgentRun, payload: &Value) -> String {
    let run_input = payload.get("runInput").cloned().unwrap_or(Value::Null);
    let steps = payload.get("steps").cloned().unwrap_or_else(|| json!([]));
    let body = json!({
        "instructions": cfg.prompt.instructions,
        "runInput": run_input,
        "steps": steps,
    });
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    if let Some(t) = cfg.prompt.input_template.as_deref() {
        let rendered = t
            .replace("{{runInput}}", &run_input.to_string())
            .replace("{{steps}}", &steps.to_string());
        text.push_str("\n\n");
        text.push_str(&rendered);
    }
    text
}

struct NodeHost {
    brain: Arc<Brain>,
    org: OrgId,
    run: RunId,
    request: DispatchRequest,
    node_id: String,
}

impl Host for NodeHost {
    fn event(
        &self,
        event_type: &'static str,
        level: EventLevel,
        payload: Value,
    ) -> BoxFuture<'_, ()> {
        async move {
            let kind = match event_type {
                "agent_tool_call" => EventKind::AgentToolCall,
                "agent_tool_result" => EventKind::AgentToolResult,
                _ => return,
            };
            let level = match level {
                EventLevel::Info => Level::Info,
                EventLevel::Warn => Level::Warn,
                EventLevel::Error => Level::Error,
            };
            let written = self
                .brain
                .runs
                .record_remote_progress(
                    self.org,
                    self.run,
                    &self.request.request_id(),
                    self.request.attempt_count as i32,
                    &self.node_id,
                    vec![(kind, level, payload)],
                )
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "agent.run progress not recorded");
            }
        }
        .boxed()
    }

    fn shell(
        &self,
        call_index: u32,
        input: ShellInput,
        timeout_ms: u64,
    ) -> BoxFuture<'_, DispatchResult> {
        async move {
            let r = &self.request;
            let node_id = format!("{}:tool:{call_index}", self.node_id);
            let req = DispatchRequest {
                organization_id: r.organization_id,
                requested_by_user_id: r.requested_by_user_id,
                run_id: r.run_id,
                workflow_id: r.workflow_id,
                node_id: node_id.clone(),
                node_type: "agent.execute".into(),
                attempt_count: r.attempt_count,
                kind: "agent.execute".into(),
                payload: tools::shell_payload(
                    &node_id,
                    &input,
                    r.run_id,
                    r.workflow_id,
                    r.attempt_count,
                ),
                secret: None,
                executor_selector: None,
                timeout_ms: Some(timeout_ms.clamp(1000, 600_000)),
            };
            self.brain
                .shell_call(
                    req,
                    &input,
                    r.executor_selector.clone(),
                    OwnerType::WorkflowRun,
                    r.run_id,
                )
                .await
        }
        .boxed()
    }

    fn llm_call<'a>(
        &'a self,
        provider: Provider,
        model: &'a str,
        resp: &'a ChatResponse,
    ) -> BoxFuture<'a, ()> {
        async move {
            self.brain
                .record_usage(
                    self.org,
                    None,
                    Some((self.run, self.node_id.clone())),
                    provider,
                    model,
                    resp,
                )
                .await;
        }
        .boxed()
    }

    fn budget(&self) -> BoxFuture<'_, Result<(), String>> {
        self.brain.budget(self.org).boxed()
    }

    fn deltas(&self) -> Option<Deltas> {
        None
    }
}
