//! The workflow DSL (v2 node list, v3 graph): parsing into normalised JSON (defaults filled, unknown keys
//! dropped) plus the typed view the engine executes (`model`, `spec`). The entry points are [`parse`] and
//! [`parse_node`]; the implementation lives in the sibling modules.

mod agent_run;
mod document;
mod execution;
mod fields;
mod graph;
pub mod model;
mod nodes;
mod size;
pub mod spec;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use model::{DslError, Edge, EdgeKind, Graph, Limits, Node, Plan, WorkflowDsl};
pub use spec::{NodeSpec, NodeType};

/// Parses and normalises a DSL document (v2 or v3) already known to fit (a stored one).
pub fn parse(doc: &Value) -> Result<WorkflowDsl, DslError> {
    document::parse_document(doc)
}

/// Parses a new document: first the size limits (nodes, edges, bytes), then as [`parse`]. Linear in the
/// document's size.
pub fn parse_within(doc: &Value, limits: &Limits) -> Result<WorkflowDsl, DslError> {
    size::check(doc, limits)?;
    document::parse_document(doc)
}

/// Parses one node (`{id, type, config?}`) on its own, as it would be inside a document: the schema
/// messages on failure.
pub fn parse_node(value: &Value) -> Result<Node, Vec<String>> {
    let mut errors = fields::Errors::default();
    let parsed = nodes::parse_node(&mut errors, "node".into(), value);
    match parsed.and_then(|p| p.node) {
        Some(node) if errors.is_empty() => Ok(node),
        _ => Err(errors.into_messages()),
    }
}
