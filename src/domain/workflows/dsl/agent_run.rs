//! `agent.run` config (spec 1.4): the LLM agent loop run by the gateway brain, with its many defaults
//! (llm, execution, tools, limits, output) and the optional supervisor team.

use serde_json::{json, Value};

use super::execution::selector;
use super::fields::{text, up_to, Absent, Errors, Obj, Rule};

const PROMPT_MAX: usize = 200_000;

fn limits_default() -> Value {
    json!({
        "maxTurns": 8,
        "maxToolCalls": 20,
        "timeoutMs": 60_000,
        "maxOutputChars": 50_000,
        "maxRuntimeChars": 200_000,
    })
}

pub(super) fn config(config: &mut Obj<'_>, errors: &mut Errors) {
    config.opt(errors, "toolsetId", Rule::Uuid);
    config.object(errors, "llm", Absent::Required, llm);
    config.object(
        errors,
        "execution",
        Absent::Default(json!({"mode": "gateway"})),
        |execution, errors| {
            execution.or(errors, "mode", Rule::Literal("gateway"), "gateway");
            execution.object(errors, "selector", Absent::Skip, selector);
        },
    );
    config.object(errors, "engine", Absent::Skip, |engine, errors| {
        let engines = &["gateway.loop.v2", "gateway.claude.v2", "gateway.codex.v2"];
        engine.or(errors, "id", Rule::Enum(engines), "gateway.loop.v2");
    });
    config.object(errors, "prompt", Absent::Required, prompt);
    let tools_default = json!({"allow": [], "execution": "cloud"});
    config.object(
        errors,
        "tools",
        Absent::Default(tools_default),
        |tools, errors| {
            tools_fields(tools, errors, Rule::Enum(&["cloud", "executor"]));
        },
    );
    config.object(errors, "limits", Absent::Default(limits_default()), limits);
    config.object(
        errors,
        "output",
        Absent::Default(json!({"mode": "text"})),
        output,
    );
    config.object(errors, "team", Absent::Skip, team);
    vertex_needs_secret(config, errors);
}

fn llm(llm: &mut Obj<'_>, errors: &mut Errors) {
    let providers = &["openai", "anthropic", "gemini", "vertex"];
    llm.or(errors, "provider", Rule::Enum(providers), "openai");
    llm.or(errors, "model", text(1, 120), "gpt-4.1-mini");
    let auth_default = json!({"fallbackToEnv": true});
    llm.object(
        errors,
        "auth",
        Absent::Default(auth_default),
        |auth, errors| {
            auth.opt(errors, "secretId", Rule::Uuid);
            auth.or(errors, "fallbackToEnv", Rule::True, true);
        },
    );
}

/// Vertex has no environment fallback, so its service-account secret must be named in the DSL.
fn vertex_needs_secret(config: &Obj<'_>, errors: &mut Errors) {
    let provider = config.out("llm").and_then(|l| l.get("provider"));
    let secret_given = config
        .get("llm")
        .and_then(|l| l.get("auth"))
        .and_then(|a| a.get("secretId"))
        .is_some();
    if provider.and_then(Value::as_str) == Some("vertex") && !secret_given {
        let path = format!("{}.llm.auth.secretId", config.path());
        errors.push(&path, "vertex provider requires llm.auth.secretId");
    }
}

fn prompt(prompt: &mut Obj<'_>, errors: &mut Errors) {
    prompt.opt(errors, "system", up_to(PROMPT_MAX));
    prompt.req(errors, "instructions", text(1, PROMPT_MAX));
    prompt.opt(errors, "inputTemplate", up_to(PROMPT_MAX));
}

/// `tools` of the lead (`execution` cloud|executor) or of a teammate (`execution` literal cloud).
fn tools_fields(tools: &mut Obj<'_>, errors: &mut Errors, execution: Rule) {
    tools.strings(errors, "allow", Absent::Required, text(1, 120), usize::MAX);
    tools.or(errors, "execution", execution, "cloud");
    tools.object(errors, "authDefaults", Absent::Skip, |defaults, errors| {
        defaults.record(
            errors,
            "connectors",
            Absent::Skip,
            text(1, 80),
            |errors, _, path, value| {
                let mut connector = Obj::open(errors, path, Some(value))?;
                connector.req(errors, "secretId", Rule::Uuid);
                Some(connector.finish())
            },
        );
    });
}

fn limits(limits: &mut Obj<'_>, errors: &mut Errors) {
    let bounded = |min, max| Rule::Int { min, max };
    limits.or(errors, "maxTurns", bounded(1, 64), 8);
    limits.or(errors, "maxToolCalls", bounded(0, 200), 20);
    limits.or(errors, "timeoutMs", bounded(1000, 600_000), 60_000);
    limits.or(errors, "maxOutputChars", bounded(256, 1_000_000), 50_000);
    limits.or(errors, "maxRuntimeChars", bounded(1024, 2_000_000), 200_000);
}

fn output(output: &mut Obj<'_>, errors: &mut Errors) {
    output.or(errors, "mode", Rule::Enum(&["text", "json"]), "text");
    output.opt(errors, "jsonSchema", Rule::Any);
}

fn team(team: &mut Obj<'_>, errors: &mut Errors) {
    team.req(errors, "mode", Rule::Literal("supervisor"));
    team.or(errors, "maxParallel", Rule::Int { min: 1, max: 16 }, 3);
    let lead_modes = &["delegate_only", "normal"];
    team.or(errors, "leadMode", Rule::Enum(lead_modes), "normal");
    team.array(
        errors,
        "teammates",
        Absent::Required,
        (1, 32),
        |errors, path, value| {
            let mut teammate = Obj::open(errors, path, Some(value))?;
            teammate_fields(&mut teammate, errors);
            Some(teammate.finish())
        },
    );
}

/// A teammate: unlike the lead, `tools`, `limits` and `output` must be given (their fields default).
fn teammate_fields(teammate: &mut Obj<'_>, errors: &mut Errors) {
    teammate.req(errors, "id", text(1, 64));
    teammate.opt(errors, "displayName", text(1, 120));
    teammate.object(errors, "llm", Absent::Skip, |llm, errors| {
        llm.req(errors, "model", text(1, 120));
    });
    teammate.object(errors, "prompt", Absent::Required, prompt);
    teammate.object(errors, "tools", Absent::Required, |tools, errors| {
        tools_fields(tools, errors, Rule::Literal("cloud"));
    });
    teammate.object(errors, "limits", Absent::Required, limits);
    teammate.object(errors, "output", Absent::Required, output);
}
