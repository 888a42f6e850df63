//! The workflow DSL (v2 node list, v3 graph): parsing into normalised JSON (defaults filled, unknown keys
//! dropped) plus the typed view the engine executes. CONTRACT FILE: the types and `parse`'s signature are
//! used by the API and the engine; the implementation lives in the sibling modules.

mod agent_run;
mod document;
mod fields;
mod graph;
mod nodes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

/// One node, normalised. `config` is the normalised config object (absent when the DSL had none and the
/// type has no default).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub node_type: String,
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Always,
    CondTrue,
    CondFalse,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Keyed by node key (always equal to the node's id: mismatches are rejected).
    pub nodes: BTreeMap<String, Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// v2: nodes in array order.
    Sequence(Vec<Node>),
    /// v3: a DAG that passed the graph constraints.
    Graph(Graph),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDsl {
    /// What is stored in `workflows.dsl` and returned by the API.
    pub normalized: Value,
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DslError {
    /// Schema failure: human messages, each prefixed with the JSON path (e.g. `nodes[0].config.method: …`).
    /// Reported as 400 BAD_REQUEST with `details.fieldErrors.dsl = messages`.
    Invalid(Vec<String>),
    /// A v3 graph constraint (spec 1.7): 400 with `code`, and `details.issues = [{code, message, nodeId?, edgeId?}]`.
    Graph {
        code: &'static str,
        message: String,
        node_id: Option<String>,
        edge_id: Option<String>,
    },
}

impl DslError {
    /// The error code a run records when its stored DSL no longer parses.
    pub fn code(&self) -> &str {
        match self {
            DslError::Invalid(_) => "INVALID_WORKFLOW_DSL",
            DslError::Graph { code, .. } => code,
        }
    }
}

/// Parses and normalises a DSL document (v2 or v3).
pub fn parse(doc: &Value) -> Result<WorkflowDsl, DslError> {
    document::parse_document(doc)
}

/// Whether a node runs remotely (on an executor / the gateway) rather than in the worker (spec 1.5).
pub fn is_remote(node: &Node) -> bool {
    let mode = node
        .config
        .as_ref()
        .and_then(|c| c.get("execution"))
        .and_then(|e| e.get("mode"))
        .and_then(Value::as_str);
    match node.node_type.as_str() {
        "agent.run" => true,
        "agent.execute" => mode == Some("executor"),
        "connector.action" => mode == Some("executor"),
        _ => false,
    }
}
