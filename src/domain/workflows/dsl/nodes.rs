//! Triggers and nodes (spec 1.3, 1.4): one parser per node type, each writing the normalised config.
//! `agent.run`, the largest, lives in `agent_run.rs`.

use serde_json::{json, Value};

use super::agent_run;
use super::execution::execution;
use super::fields::{text, up_to, Absent, Errors, Obj, Rule, NON_EMPTY};
use super::model::Node;
use super::spec::{NodeSpec, NodeType};

const TRIGGER_TYPES: &[&str] = &["trigger.manual", "trigger.webhook", "trigger.cron"];

const NODE_TYPES: &[&str] = &[
    "http.request",
    "agent.run",
    "agent.execute",
    "connector.action",
    "connector.github.issue.create",
    "condition",
    "parallel.join",
];

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const CONDITION_OPS: &[&str] = &["eq", "neq", "contains", "exists", "gt", "gte", "lt", "lte"];
const SCRIPT_MAX: usize = 200_000;

/// Reads the `type` discriminator; an unknown or missing value is one error at `<path>.type`.
fn discriminator(
    errors: &mut Errors,
    obj: &mut Obj<'_>,
    allowed: &'static [&'static str],
) -> Option<&'static str> {
    let value = obj.get("type");
    let found = value
        .and_then(Value::as_str)
        .and_then(|t| allowed.iter().copied().find(|a| *a == t));
    match found {
        Some(kind) => {
            obj.put("type", Value::String(kind.to_owned()));
            Some(kind)
        }
        None => {
            let expected = allowed
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" | ");
            let received = match value {
                Some(Value::String(s)) => format!("'{s}'"),
                other => super::fields::type_name(other).to_owned(),
            };
            let message =
                format!("Invalid discriminator value. Expected {expected}, received {received}");
            errors.push(&obj.path_of("type"), message);
            None
        }
    }
}

/// `trigger`: manual (config dropped), webhook `{token}`, cron `{cron}`.
pub(super) fn parse_trigger(trigger: &mut Obj<'_>, errors: &mut Errors) {
    let key = match discriminator(errors, trigger, TRIGGER_TYPES) {
        Some("trigger.webhook") => "token",
        Some("trigger.cron") => "cron",
        _ => return,
    };
    trigger.object(errors, "config", Absent::Required, |config, errors| {
        let value = config.req(errors, key, NON_EMPTY);
        if key == "cron" {
            cron_schedule(config, errors, value);
        }
    });
}

/// Ours, not the original's (which stored the text unparsed): a schedule fires, so one that cannot
/// fire is refused when the workflow is saved, with the reason, instead of silently never running.
/// `timezone` (optional, IANA) is the zone the ticks are computed in.
fn cron_schedule(config: &mut Obj<'_>, errors: &mut Errors, cron: Option<Value>) {
    let zone = config.opt(errors, "timezone", text(1, 64));
    let Some(Value::String(expression)) = cron else {
        return;
    };
    let zone = zone.as_ref().and_then(Value::as_str);
    match crate::domain::triggers::schedule::Schedule::parse(&expression, zone) {
        Ok(_) => {}
        Err(e @ crate::domain::triggers::schedule::ScheduleError::TimeZone(_)) => {
            errors.push(&config.path_of("timezone"), e.to_string())
        }
        Err(e) => errors.push(&config.path_of("cron"), e.to_string()),
    }
}

/// A node as parsed: its id, the typed node when its config passed the schema, and its normalised JSON.
pub(super) struct Parsed {
    pub(super) id: String,
    pub(super) node: Option<Node>,
    pub(super) json: Value,
}

/// One node (`{id, type, config?}`); `None` when its `id` or `type` is unusable.
pub(super) fn parse_node(errors: &mut Errors, path: String, value: &Value) -> Option<Parsed> {
    let before = errors.len();
    let mut node = Obj::open(errors, path, Some(value))?;
    let id = node.req(errors, "id", NON_EMPTY);
    let node_type = discriminator(errors, &mut node, NODE_TYPES)?;
    let absent = match node_type {
        "agent.run" | "connector.action" | "connector.github.issue.create" => Absent::Required,
        "parallel.join" => Absent::Default(json!({"mode": "all", "failFast": true})),
        _ => Absent::Skip,
    };
    node.object(errors, "config", absent, |config, errors| match node_type {
        "http.request" => http_request(config, errors),
        "agent.run" => agent_run::config(config, errors),
        "agent.execute" => agent_execute(config, errors),
        "connector.action" => connector_action(config, errors),
        "connector.github.issue.create" => github_issue_create(config, errors),
        "condition" => condition(config, errors),
        _ => parallel_join(config, errors),
    });
    let id = id?.as_str()?.to_owned();
    let config = node.out("config").cloned();
    let config_path = node.path_of("config");
    let mut normalised = json!({"id": id, "type": node_type});
    if let (Some(config), Value::Object(map)) = (&config, &mut normalised) {
        map.insert("config".into(), config.clone());
    }
    // The typed view is read only from a config that passed the schema (a partial one would only
    // repeat its errors).
    let node = if errors.len() > before {
        None
    } else {
        let kind = NodeType::parse(node_type)?;
        match NodeSpec::read(kind, config.as_ref()) {
            Ok(spec) => Some(Node {
                id: id.clone(),
                spec,
            }),
            Err(message) => {
                errors.push(&config_path, message);
                None
            }
        }
    };
    Some(Parsed {
        id,
        node,
        json: normalised,
    })
}

fn http_request(config: &mut Obj<'_>, errors: &mut Errors) {
    config.req(errors, "method", Rule::Enum(HTTP_METHODS));
    config.req(errors, "url", text(1, 2000));
    config.string_map(errors, "headers");
    config.opt(errors, "body", Rule::Any);
    // Ours (Decisions): a non-2xx status fails the node unless this is false.
    config.opt(errors, "failOnStatus", Rule::Bool);
}

fn agent_execute(config: &mut Obj<'_>, errors: &mut Errors) {
    execution(config, errors, "executor");
    config.object(errors, "task", Absent::Skip, |task, errors| {
        task.req(errors, "type", Rule::Literal("shell"));
        task.req(errors, "script", text(1, SCRIPT_MAX));
        task.opt(errors, "shell", Rule::Enum(&["sh", "bash"]));
        task.string_map(errors, "env");
    });
    config.object(errors, "sandbox", Absent::Skip, |sandbox, errors| {
        let backends = &["docker", "host", "provider"];
        sandbox.opt(errors, "backend", Rule::Enum(backends));
        sandbox.opt(errors, "network", Rule::Enum(&["none", "enabled"]));
        let timeout = Rule::Int {
            min: 1000,
            max: 600_000,
        };
        sandbox.opt(errors, "timeoutMs", timeout);
        sandbox.object(errors, "docker", Absent::Skip, |docker, errors| {
            docker.opt(errors, "image", NON_EMPTY);
        });
        sandbox.strings(
            errors,
            "envPassthroughAllowlist",
            Absent::Skip,
            NON_EMPTY,
            50,
        );
    });
}

/// `auth: {secretId}` with a required UUID.
fn secret_auth(config: &mut Obj<'_>, errors: &mut Errors) {
    config.object(errors, "auth", Absent::Required, |auth, errors| {
        auth.req(errors, "secretId", Rule::Uuid);
    });
}

fn connector_action(config: &mut Obj<'_>, errors: &mut Errors) {
    config.req(errors, "connectorId", NON_EMPTY);
    config.req(errors, "actionId", NON_EMPTY);
    config.opt(errors, "input", Rule::Any);
    secret_auth(config, errors);
    execution(config, errors, "cloud");
}

fn github_issue_create(config: &mut Obj<'_>, errors: &mut Errors) {
    config.req(errors, "repo", Rule::RepoName);
    config.req(errors, "title", text(1, 256));
    config.opt(errors, "body", up_to(SCRIPT_MAX));
    secret_auth(config, errors);
}

fn condition(config: &mut Obj<'_>, errors: &mut Errors) {
    config.req(errors, "path", text(1, 500));
    config.req(errors, "op", Rule::Enum(CONDITION_OPS));
    config.opt(errors, "value", Rule::Scalar);
}

fn parallel_join(config: &mut Obj<'_>, errors: &mut Errors) {
    config.or(errors, "mode", Rule::Literal("all"), "all");
    config.or(errors, "failFast", Rule::Bool, true);
}
