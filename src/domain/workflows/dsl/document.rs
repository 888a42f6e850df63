//! The document level: `version` dispatch, the v2 node list and the v3 graph, the id rules our
//! implementation adds (unique v2 ids, v3 key = id), and assembly of the normalised JSON and the plan.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::fields::{text, type_name, Absent, Errors, Obj, Rule};
use super::graph;
use super::model::{DslError, Edge, EdgeKind, Graph, Plan, WorkflowDsl};
use super::nodes::{parse_node, parse_trigger};

const NAME_MAX: usize = 120;

pub(super) fn parse_document(doc: &Value) -> Result<WorkflowDsl, DslError> {
    let mut errors = Errors::default();
    let version = doc.get("version");
    let parsed = match version.and_then(Value::as_str) {
        Some("v2") => parse_v2(doc, &mut errors),
        Some("v3") => parse_v3(doc, &mut errors),
        _ if !doc.is_object() => {
            let message = format!(
                "Invalid input: expected object, received {}",
                type_name(Some(doc))
            );
            errors.push("", message);
            None
        }
        _ => {
            let received = match version {
                Some(Value::String(s)) => format!("'{s}'"),
                other => type_name(other).to_owned(),
            };
            let message = format!(
                "Invalid input: expected a document with version 'v2' or 'v3', received version {received}"
            );
            errors.push("", message);
            None
        }
    };
    match parsed {
        Some(parsed) if errors.is_empty() => {
            if let Plan::Graph(graph) = &parsed.plan {
                graph::validate(graph)?;
            }
            Ok(parsed)
        }
        _ => Err(DslError::Invalid(errors.into_messages())),
    }
}

/// The fields shared by v2 and v3: `version` and `trigger`.
fn open_root<'a>(doc: &'a Value, errors: &mut Errors, version: &str) -> Option<Obj<'a>> {
    let mut root = Obj::open(errors, String::new(), Some(doc))?;
    root.put("version", Value::String(version.to_owned()));
    root.object(errors, "trigger", Absent::Required, parse_trigger);
    Some(root)
}

fn parse_v2(doc: &Value, errors: &mut Errors) -> Option<WorkflowDsl> {
    let mut root = open_root(doc, errors, "v2")?;
    let mut nodes = Vec::new();
    root.array(
        errors,
        "nodes",
        Absent::Required,
        (1, usize::MAX),
        |errors, path, value| {
            let parsed = parse_node(errors, path, value)?;
            nodes.extend(parsed.node);
            Some(parsed.json)
        },
    );
    reject_duplicate_ids(root.get("nodes"), errors);
    Some(WorkflowDsl {
        normalized: root.finish(),
        plan: Plan::Sequence(nodes),
    })
}

/// Improve (spec 1.1): ids name steps and events, so a repeated id would make them ambiguous.
fn reject_duplicate_ids(nodes: Option<&Value>, errors: &mut Errors) {
    let Some(Value::Array(nodes)) = nodes else {
        return;
    };
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let Some(id) = node.get("id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(first) = first_seen.get(id) {
            let path = format!("nodes[{index}].id");
            errors.push(
                &path,
                format!("Duplicate node id '{id}' (already used by nodes[{first}])"),
            );
        } else {
            first_seen.insert(id, index);
        }
    }
}

fn parse_v3(doc: &Value, errors: &mut Errors) -> Option<WorkflowDsl> {
    let mut root = open_root(doc, errors, "v3")?;
    let mut graph = Graph {
        nodes: BTreeMap::new(),
        edges: Vec::new(),
    };
    root.object(errors, "graph", Absent::Required, |graph_obj, errors| {
        graph_obj.record(
            errors,
            "nodes",
            Absent::Required,
            text(1, NAME_MAX),
            |errors, key, path, value| {
                let parsed = parse_node(errors, path.clone(), value)?;
                if parsed.id != key {
                    let message = format!("Node id '{}' must equal its key '{key}'", parsed.id);
                    errors.push(&format!("{path}.id"), message);
                }
                if let Some(node) = parsed.node {
                    graph.nodes.insert(key.to_owned(), node);
                }
                Some(parsed.json)
            },
        );
        graph_obj.array(
            errors,
            "edges",
            Absent::Required,
            (0, usize::MAX),
            |errors, path, value| {
                let (edge, normalised) = parse_edge(errors, path, value)?;
                graph.edges.push(edge);
                Some(normalised)
            },
        );
    });
    Some(WorkflowDsl {
        normalized: root.finish(),
        plan: Plan::Graph(graph),
    })
}

/// One edge; an absent `kind` stays absent in the JSON and means `always`.
fn parse_edge(errors: &mut Errors, path: String, value: &Value) -> Option<(Edge, Value)> {
    let mut edge = Obj::open(errors, path, Some(value))?;
    let id = edge.req(errors, "id", text(1, NAME_MAX));
    let from = edge.req(errors, "from", text(1, NAME_MAX));
    let to = edge.req(errors, "to", text(1, NAME_MAX));
    let kinds = &["always", "cond_true", "cond_false"];
    let kind = match edge.get("kind") {
        None => Some(EdgeKind::Always),
        Some(_) => match edge.opt(errors, "kind", Rule::Enum(kinds)) {
            Some(Value::String(k)) if k == "cond_true" => Some(EdgeKind::CondTrue),
            Some(Value::String(k)) if k == "cond_false" => Some(EdgeKind::CondFalse),
            Some(_) => Some(EdgeKind::Always),
            None => None,
        },
    };
    let as_string = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let typed = Edge {
        id: as_string(id)?,
        from: as_string(from)?,
        to: as_string(to)?,
        kind: kind?,
    };
    Some((typed, edge.finish()))
}
