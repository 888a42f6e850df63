//! `agent.execute` and `agent.run`: the cloud stub runs here; a remote `agent.execute` blocks the run on
//! an executor (spec 5.2), and `agent.run` blocks it on the gateway brain (spec 5.6).

use serde_json::{json, Map, Value};

use super::context::{Block, BlockKind, ExecCtx, Outcome};
use crate::domain::workflows::dsl::spec::{AgentExecute, AgentRun, Selector};

/// `agent.execute`: no `execution` (or mode `cloud`) is the stub; mode `executor` is dispatched.
pub fn execute(ctx: &ExecCtx<'_>, config: Option<&AgentExecute>) -> Outcome {
    let node = ctx.node;
    let Some(cfg) = config.filter(|_| node.is_remote()) else {
        return Outcome::Succeeded(
            json!({"accepted": true, "taskId": format!("{}-task", node.id)}),
        );
    };
    Outcome::Blocked(Block {
        kind: BlockKind::AgentExecute,
        payload: json!({
            "nodeId": node.id,
            "node": node_json(&node.id, cfg),
            "runId": ctx.run_id,
            "workflowId": ctx.workflow_id,
            "attemptCount": ctx.attempt,
        }),
        selector: cfg
            .execution
            .as_ref()
            .and_then(|e| e.selector.as_ref())
            .map(selector_json),
        secret: None,
        timeout_ms: cfg.sandbox.as_ref().and_then(|s| s.timeout_ms),
    })
}

/// `agent.run` always runs in the gateway brain (workflows spec 5.6): the run blocks on it like on an
/// executor, and the brain's final `{status, output|error}` comes back as the dispatch result. The LLM
/// credential travels by id only (`secretRefs`); the brain decrypts it, never the worker. The block's
/// wait is the node's own time limit plus a margin for the brain to answer (the brain's loop stops at
/// the limit itself).
pub fn run(ctx: &ExecCtx<'_>, cfg: &AgentRun) -> Outcome {
    let node = ctx.node;
    let steps: Vec<Value> = ctx
        .steps
        .iter()
        .map(|s| {
            json!({
                "nodeId": s.node_id,
                "nodeType": s.node_type,
                "status": s.status,
                "output": s.output,
            })
        })
        .collect();
    let mut config = match serde_json::to_value(cfg) {
        Ok(v) => v,
        Err(_) => return Outcome::fail("INVALID_AGENT_CONFIG", false),
    };
    // Provider forced by the engine (spec 5.6).
    let forced = match cfg.engine.as_ref().map(|e| e.id.as_str()) {
        Some("gateway.codex.v2") => Some("openai"),
        Some("gateway.claude.v2") => Some("anthropic"),
        _ => None,
    };
    if let (Some(p), Some(llm)) = (forced, config.get_mut("llm")) {
        llm["provider"] = json!(p);
    }
    let timeout_ms = cfg.limits.timeout_ms.clamp(1000, 600_000);
    Outcome::Blocked(Block {
        kind: BlockKind::AgentRun,
        payload: json!({
            "nodeId": node.id,
            "node": {"id": node.id, "type": "agent.run", "config": config},
            "runId": ctx.run_id,
            "workflowId": ctx.workflow_id,
            "attemptCount": ctx.attempt,
            "runInput": ctx.run_input,
            "steps": steps,
            "secretRefs": {"llmSecretId": cfg.llm.auth.secret_id},
        }),
        selector: cfg.execution.selector.as_ref().map(selector_json),
        secret: None,
        timeout_ms: Some((timeout_ms + 10_000).min(600_000)),
    })
}

/// The node as the executor reads it (spec 3.4): only the keys that are set, never `null` (the original
/// agent's schema refuses a `null` where a key may be absent).
fn node_json(id: &str, cfg: &AgentExecute) -> Value {
    let mut config = Map::new();
    if let Some(task) = &cfg.task {
        let mut t = Map::new();
        t.insert("type".into(), json!("shell"));
        t.insert("script".into(), json!(task.script));
        if let Some(shell) = &task.shell {
            t.insert("shell".into(), json!(shell));
        }
        if !task.env.is_empty() {
            t.insert("env".into(), json!(task.env));
        }
        config.insert("task".into(), Value::Object(t));
    }
    if let Some(sandbox) = &cfg.sandbox {
        let mut s = Map::new();
        if let Some(b) = &sandbox.backend {
            s.insert("backend".into(), json!(b));
        }
        if let Some(n) = &sandbox.network {
            s.insert("network".into(), json!(n));
        }
        if let Some(t) = sandbox.timeout_ms {
            s.insert("timeoutMs".into(), json!(t));
        }
        if let Some(image) = sandbox.docker.as_ref().and_then(|d| d.image.as_ref()) {
            s.insert("docker".into(), json!({ "image": image }));
        }
        if !sandbox.env_passthrough_allowlist.is_empty() {
            s.insert(
                "envPassthroughAllowlist".into(),
                json!(sandbox.env_passthrough_allowlist),
            );
        }
        config.insert("sandbox".into(), Value::Object(s));
    }
    if let Some(exec) = &cfg.execution {
        let mut e = Map::new();
        e.insert("mode".into(), json!("executor"));
        if let Some(sel) = &exec.selector {
            e.insert("selector".into(), selector_json(sel));
        }
        config.insert("execution".into(), Value::Object(e));
    }
    json!({"id": id, "type": "agent.execute", "config": Value::Object(config)})
}

/// A selector as the dispatch carries it (absent keys left out: the gateway resolves a missing pool).
pub fn selector_json(sel: &Selector) -> Value {
    let mut m = Map::new();
    if let Some(p) = &sel.pool {
        m.insert("pool".into(), json!(p));
    }
    if !sel.labels.is_empty() {
        m.insert("labels".into(), json!(sel.labels));
    }
    if let Some(g) = &sel.group {
        m.insert("group".into(), json!(g));
    }
    if let Some(t) = &sel.tag {
        m.insert("tag".into(), json!(t));
    }
    if let Some(id) = sel.executor_id {
        m.insert("executorId".into(), json!(id));
    }
    Value::Object(m)
}
