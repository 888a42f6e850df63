//! v3 graph constraints (spec 1.7), checked after schema validation in the spec's order; the first
//! failure wins. Iteration orders follow the original so that the same node or edge is reported.

use std::collections::{HashMap, HashSet, VecDeque};

use super::model::{DslError, Edge, EdgeKind, Graph, Node};
use super::spec::{Execution, ExecutionMode, NodeSpec, NodeType};

fn failure(code: &'static str, message: String) -> DslError {
    DslError::Graph {
        code,
        message,
        node_id: None,
        edge_id: None,
    }
}

fn node_failure(code: &'static str, message: String, node_id: &str) -> DslError {
    DslError::Graph {
        code,
        message,
        node_id: Some(node_id.to_owned()),
        edge_id: None,
    }
}

fn edge_failure(message: String, edge_id: &str) -> DslError {
    DslError::Graph {
        code: "GRAPH_EDGE_INVALID",
        message,
        node_id: None,
        edge_id: Some(edge_id.to_owned()),
    }
}

/// Edges by endpoint, in array order.
struct Adjacency<'g> {
    outgoing: HashMap<&'g str, Vec<&'g Edge>>,
    incoming: HashMap<&'g str, Vec<&'g Edge>>,
}

impl<'g> Adjacency<'g> {
    fn outgoing(&self, node: &str) -> &[&'g Edge] {
        self.outgoing.get(node).map_or(&[], Vec::as_slice)
    }

    fn incoming(&self, node: &str) -> &[&'g Edge] {
        self.incoming.get(node).map_or(&[], Vec::as_slice)
    }
}

pub(super) fn validate(graph: &Graph) -> Result<(), DslError> {
    if graph.nodes.is_empty() {
        let message = "Graph must include at least one node".to_owned();
        return Err(failure("GRAPH_NODE_MISSING", message));
    }
    let adjacency = edges(graph)?;
    conditions(graph, &adjacency)?;
    acyclic(graph, &adjacency)?;
    parallel_regions(graph, &adjacency)
}

/// Edge ids are unique and every edge connects existing nodes.
fn edges(graph: &Graph) -> Result<Adjacency<'_>, DslError> {
    let mut seen = HashSet::new();
    let mut adjacency = Adjacency {
        outgoing: HashMap::new(),
        incoming: HashMap::new(),
    };
    for edge in &graph.edges {
        if !seen.insert(edge.id.as_str()) {
            return Err(edge_failure(
                format!("Duplicate edge id: {}", edge.id),
                &edge.id,
            ));
        }
        if !graph.nodes.contains_key(&edge.from) || !graph.nodes.contains_key(&edge.to) {
            let message = format!("Edge must connect existing nodes: {}", edge.id);
            return Err(edge_failure(message, &edge.id));
        }
        let outgoing = adjacency.outgoing.entry(edge.from.as_str()).or_default();
        outgoing.push(edge);
        adjacency
            .incoming
            .entry(edge.to.as_str())
            .or_default()
            .push(edge);
    }
    Ok(adjacency)
}

/// A condition has exactly two outgoing edges: one `cond_true`, one `cond_false`.
fn conditions(graph: &Graph, adjacency: &Adjacency<'_>) -> Result<(), DslError> {
    for (key, node) in &graph.nodes {
        if node.node_type() != NodeType::Condition {
            continue;
        }
        let out = adjacency.outgoing(key);
        let count = |kind| out.iter().filter(|e| e.kind == kind).count();
        let valid =
            out.len() == 2 && count(EdgeKind::CondTrue) == 1 && count(EdgeKind::CondFalse) == 1;
        if !valid {
            let message = format!(
                "Condition node {key} must have exactly one cond_true and one cond_false outgoing edge"
            );
            return Err(node_failure("CONDITION_EDGE_CONSTRAINTS", message, key));
        }
    }
    Ok(())
}

/// Kahn's algorithm: every node must be visited (self-loops count as cycles).
fn acyclic(graph: &Graph, adjacency: &Adjacency<'_>) -> Result<(), DslError> {
    if topological_order(graph, adjacency).len() == graph.nodes.len() {
        Ok(())
    } else {
        let message = "Graph must be a DAG (cycles are not supported in v3 MVP)".to_owned();
        Err(failure("GRAPH_CYCLE_DETECTED", message))
    }
}

/// The validator's (stricter) reading of "remote": an `agent.execute` without `execution` counts too.
fn is_remote_in_region(node: &Node) -> bool {
    let executor = |e: &Execution| e.mode == ExecutionMode::Executor;
    match &node.spec {
        NodeSpec::AgentRun(_) => true,
        NodeSpec::AgentExecute(c) => c
            .as_ref()
            .and_then(|c| c.execution.as_ref())
            .is_none_or(executor),
        NodeSpec::ConnectorAction(c) => c.execution.as_ref().is_some_and(executor),
        _ => false,
    }
}

/// A set that remembers insertion order (the original iterates JS `Set`s).
#[derive(Default)]
struct OrderedSet<'g> {
    order: Vec<&'g str>,
    members: HashSet<&'g str>,
}

impl<'g> OrderedSet<'g> {
    fn insert(&mut self, key: &'g str) -> bool {
        let added = self.members.insert(key);
        if added {
            self.order.push(key);
        }
        added
    }

    fn contains(&self, key: &str) -> bool {
        self.members.contains(key)
    }
}

/// Ancestors of `target` (target excluded unless it lies on a cycle, which cannot happen here).
fn ancestors<'g>(adjacency: &Adjacency<'g>, target: &'g str) -> OrderedSet<'g> {
    let mut seen = OrderedSet::default();
    let mut stack = vec![target];
    while let Some(current) = stack.pop() {
        for edge in adjacency.incoming(current) {
            if seen.insert(edge.from.as_str()) {
                stack.push(edge.from.as_str());
            }
        }
    }
    seen
}

/// `start` and every node reachable from it over any edge kind.
fn reachable_from<'g>(adjacency: &Adjacency<'g>, start: &'g str) -> OrderedSet<'g> {
    let mut seen = OrderedSet::default();
    seen.insert(start);
    let mut stack = vec![start];
    while let Some(current) = stack.pop() {
        for edge in adjacency.outgoing(current) {
            if seen.insert(edge.to.as_str()) {
                stack.push(edge.to.as_str());
            }
        }
    }
    seen
}

/// No remote node between a fan-out (≥ 2 `always` edges) and a `parallel.join` it feeds.
///
/// A remote node K breaks the rule for join J when K is an ancestor of J and lies on a branch of a
/// fan-out (reachable from the target of a fan-out's `always` edge); the fan-out is then an ancestor of J
/// too. So the check is linear: mark the nodes on fan-out branches (one forward pass), find the first
/// join in key order with such a remote ancestor (one pass in topological order), and only then walk that
/// join's ancestors in the original's order to name the node it reported.
fn parallel_regions(graph: &Graph, adjacency: &Adjacency<'_>) -> Result<(), DslError> {
    let fan_out = |key: &str| -> Vec<&Edge> {
        let always: Vec<&Edge> = adjacency
            .outgoing(key)
            .iter()
            .copied()
            .filter(|e| e.kind == EdgeKind::Always)
            .collect();
        if always.len() >= 2 {
            always
        } else {
            Vec::new()
        }
    };
    // Nodes on a fan-out branch.
    let mut on_branch: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = Vec::new();
    for key in graph.nodes.keys() {
        for edge in fan_out(key) {
            if on_branch.insert(edge.to.as_str()) {
                stack.push(edge.to.as_str());
            }
        }
    }
    while let Some(current) = stack.pop() {
        for edge in adjacency.outgoing(current) {
            if on_branch.insert(edge.to.as_str()) {
                stack.push(edge.to.as_str());
            }
        }
    }
    let offending = |key: &str| {
        on_branch.contains(key) && graph.nodes.get(key).is_some_and(is_remote_in_region)
    };
    // Which nodes have an offending ancestor (the graph is acyclic: Kahn's order settles each once).
    let mut behind_offender: HashSet<&str> = HashSet::new();
    for key in topological_order(graph, adjacency) {
        for edge in adjacency.outgoing(key) {
            if offending(key) || behind_offender.contains(key) {
                behind_offender.insert(edge.to.as_str());
            }
        }
    }
    let first_join = graph.nodes.iter().find(|(key, node)| {
        node.node_type() == NodeType::ParallelJoin && behind_offender.contains(key.as_str())
    });
    let Some((join, _)) = first_join else {
        return Ok(());
    };
    // Name the node the original names: its walk order, skipping branches that cannot reach an offender.
    let can_reach_join = ancestors(adjacency, join);
    let hits: Vec<&str> = can_reach_join
        .order
        .iter()
        .copied()
        .filter(|key| *key != join.as_str() && offending(key))
        .collect();
    let mut leads_to_hit: HashSet<&str> = hits.iter().copied().collect();
    let mut stack = hits;
    while let Some(current) = stack.pop() {
        for edge in adjacency.incoming(current) {
            if leads_to_hit.insert(edge.from.as_str()) {
                stack.push(edge.from.as_str());
            }
        }
    }
    for &root in &can_reach_join.order {
        for edge in fan_out(root) {
            if !leads_to_hit.contains(edge.to.as_str()) {
                continue;
            }
            let branch = reachable_from(adjacency, &edge.to);
            let found = branch.order.iter().find(|&&key| {
                key != join.as_str()
                    && can_reach_join.contains(key)
                    && graph.nodes.get(key).is_some_and(is_remote_in_region)
            });
            if let Some(key) = found {
                let message = format!(
                    "Remote execution is not supported inside parallel regions in v3 MVP (node {key})"
                );
                return Err(node_failure("PARALLEL_REMOTE_NOT_SUPPORTED", message, key));
            }
        }
    }
    Ok(())
}

/// Nodes in an order where every edge points forward; nodes on a cycle (and after one) are left out.
fn topological_order<'g>(graph: &'g Graph, adjacency: &Adjacency<'g>) -> Vec<&'g str> {
    let mut in_degree: HashMap<&str, usize> = graph.nodes.keys().map(|k| (k.as_str(), 0)).collect();
    for edge in &graph.edges {
        *in_degree.entry(edge.to.as_str()).or_default() += 1;
    }
    let mut queue: VecDeque<&str> = graph
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|k| in_degree.get(k) == Some(&0))
        .collect();
    let mut order = Vec::with_capacity(graph.nodes.len());
    while let Some(key) = queue.pop_front() {
        order.push(key);
        for edge in adjacency.outgoing(key) {
            if let Some(degree) = in_degree.get_mut(edge.to.as_str()) {
                *degree = degree.saturating_sub(1);
                if *degree == 0 {
                    queue.push_back(edge.to.as_str());
                }
            }
        }
    }
    order
}

/// Fuzzing the validator: random DAGs of joins, conditions, remote and local nodes. The linear
/// parallel-region check must report exactly what the original's walk reports (kept here as the
/// reference), and no document may take long.
#[cfg(test)]
mod fuzz {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::domain::workflows::dsl::spec::{AgentExecute, Join};

    /// The original's walk: for every join, every ancestor with a fan-out, every fan-out edge, the first
    /// remote node of that branch that can reach the join.
    fn reference(graph: &Graph, adjacency: &Adjacency<'_>) -> Result<(), DslError> {
        let joins = graph
            .nodes
            .iter()
            .filter(|(_, node)| node.node_type() == NodeType::ParallelJoin);
        for (join, _) in joins {
            let can_reach_join = ancestors(adjacency, join);
            for &root in &can_reach_join.order {
                let fan_out: Vec<_> = adjacency
                    .outgoing(root)
                    .iter()
                    .filter(|e| e.kind == EdgeKind::Always)
                    .collect();
                if fan_out.len() < 2 {
                    continue;
                }
                for edge in fan_out {
                    let branch = reachable_from(adjacency, &edge.to);
                    let region = branch
                        .order
                        .iter()
                        .filter(|&&key| key != join && can_reach_join.contains(key));
                    for &key in region {
                        if graph.nodes.get(key).is_some_and(is_remote_in_region) {
                            let message = format!(
                                "Remote execution is not supported inside parallel regions in v3 MVP (node {key})"
                            );
                            return Err(node_failure(
                                "PARALLEL_REMOTE_NOT_SUPPORTED",
                                message,
                                key,
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn node(id: &str, kind: u8) -> Node {
        let spec = match kind % 3 {
            0 => NodeSpec::ParallelJoin(Join {
                mode: "all".into(),
                fail_fast: true,
            }),
            1 => NodeSpec::AgentExecute(None::<AgentExecute>),
            _ => NodeSpec::HttpRequest(None),
        };
        Node {
            id: id.into(),
            spec,
        }
    }

    /// A DAG: edges only go from a lower to a higher node number.
    fn dag(max_nodes: usize) -> impl Strategy<Value = Graph> {
        (2..max_nodes)
            .prop_flat_map(|n| {
                (
                    proptest::collection::vec(any::<u8>(), n),
                    proptest::collection::vec((0..n, 0..n, any::<bool>()), 0..n * 3),
                )
            })
            .prop_map(|(kinds, pairs)| {
                let mut nodes = BTreeMap::new();
                for (i, k) in kinds.iter().enumerate() {
                    let id = format!("n{i:04}");
                    nodes.insert(id.clone(), node(&id, *k));
                }
                let mut edges = Vec::new();
                for (a, b, cond) in pairs {
                    if a >= b {
                        continue;
                    }
                    let kind = if cond && edges.len() % 2 == 0 {
                        EdgeKind::CondTrue
                    } else {
                        EdgeKind::Always
                    };
                    edges.push(Edge {
                        id: format!("e{}", edges.len()),
                        from: format!("n{a:04}"),
                        to: format!("n{b:04}"),
                        kind,
                    });
                }
                Graph { nodes, edges }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn parallel_regions_report_what_the_original_reports(graph in dag(40)) {
            let adjacency = edges(&graph).expect("valid edges");
            prop_assert_eq!(parallel_regions(&graph, &adjacency), reference(&graph, &adjacency));
        }

        #[test]
        fn large_graphs_validate_quickly(graph in dag(3000)) {
            let started = Instant::now();
            let _ = validate(&graph);
            prop_assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        }
    }
}
