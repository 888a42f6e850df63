//! The parsed DSL: nodes with typed configs, edges, the plan the engine executes, and the two kinds of
//! failure.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::{self, NodeSpec, NodeType};

/// One node with its typed config.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub spec: NodeSpec,
}

impl Node {
    pub fn node_type(&self) -> NodeType {
        self.spec.node_type()
    }

    /// Whether the node runs remotely (on an executor / the gateway) rather than in the worker (spec 1.5).
    pub fn is_remote(&self) -> bool {
        let executor = |e: &Option<spec::Execution>| {
            e.as_ref()
                .is_some_and(|e| e.mode == spec::ExecutionMode::Executor)
        };
        match &self.spec {
            NodeSpec::AgentRun(_) => true,
            NodeSpec::AgentExecute(Some(c)) => executor(&c.execution),
            NodeSpec::ConnectorAction(c) => executor(&c.execution),
            _ => false,
        }
    }
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
    /// Beyond a configured size limit (`limit` names it: `nodes`, `edges` or `bytes`).
    TooLarge {
        limit: &'static str,
        max: usize,
        actual: usize,
    },
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
            DslError::TooLarge { .. } => "WORKFLOW_TOO_LARGE",
            DslError::Graph { code, .. } => code,
        }
    }
}

/// How large a document may be. Checked before anything else is parsed, so an oversized document costs
/// one pass over its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_edges: usize,
    /// Size of the document as compact JSON.
    pub max_bytes: usize,
}

impl Limits {
    /// No limits (documents already stored were accepted under the limits of their time).
    pub const NONE: Limits = Limits {
        max_nodes: usize::MAX,
        max_edges: usize::MAX,
        max_bytes: usize::MAX,
    };
}
