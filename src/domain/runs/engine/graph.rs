//! v3 graph execution (workflows spec 3.5) in time linear in nodes + edges: the edges are indexed by node
//! once per plan, and the set of ready nodes is kept up to date as steps succeed instead of being
//! recomputed over the whole graph before every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::progress::StepLog;
use crate::domain::workflows::dsl::{Edge, EdgeKind, Graph, NodeSpec};

/// Edge positions (in document order) by source and by target node.
pub struct GraphIndex {
    outgoing: HashMap<String, Vec<usize>>,
    incoming: HashMap<String, Vec<usize>>,
}

impl GraphIndex {
    pub fn new(graph: &Graph) -> Self {
        let mut outgoing: HashMap<String, Vec<usize>> = HashMap::new();
        let mut incoming: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, edge) in graph.edges.iter().enumerate() {
            outgoing.entry(edge.from.clone()).or_default().push(i);
            incoming.entry(edge.to.clone()).or_default().push(i);
        }
        Self { outgoing, incoming }
    }

    fn edges<'g>(
        graph: &'g Graph,
        positions: Option<&'g Vec<usize>>,
    ) -> impl Iterator<Item = &'g Edge> + 'g {
        positions
            .into_iter()
            .flatten()
            .filter_map(|&i| graph.edges.get(i))
    }

    pub fn outgoing<'g>(
        &'g self,
        graph: &'g Graph,
        key: &str,
    ) -> impl Iterator<Item = &'g Edge> + 'g {
        Self::edges(graph, self.outgoing.get(key))
    }

    pub fn incoming<'g>(
        &'g self,
        graph: &'g Graph,
        key: &str,
    ) -> impl Iterator<Item = &'g Edge> + 'g {
        Self::edges(graph, self.incoming.get(key))
    }
}

/// Why an edge is (not) satisfied: `OK`, `UPSTREAM_NOT_SUCCEEDED`, `CONDITION_RESULT_MISSING`,
/// `CONDITION_NOT_MET`.
pub fn edge_reason(steps: &StepLog, edge: &Edge) -> &'static str {
    let Some(step) = steps.get(&edge.from).filter(|s| s.succeeded()) else {
        return "UPSTREAM_NOT_SUCCEEDED";
    };
    let want = match edge.kind {
        EdgeKind::Always => return "OK",
        EdgeKind::CondTrue => true,
        EdgeKind::CondFalse => false,
    };
    match StepLog::output_field(step, "result").as_bool() {
        None => "CONDITION_RESULT_MISSING",
        Some(r) if r == want => "OK",
        Some(_) => "CONDITION_NOT_MET",
    }
}

fn kind_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Always => "always",
        EdgeKind::CondTrue => "cond_true",
        EdgeKind::CondFalse => "cond_false",
    }
}

/// Which nodes may run: a node is ready when it has no step and every incoming edge is satisfied. Edges
/// only become satisfied when their source succeeds, so counting the unsatisfied ones per node is enough.
pub struct GraphState {
    unsatisfied: HashMap<String, usize>,
    /// Key order: among ready nodes the first runs (deterministic).
    ready: BTreeSet<String>,
}

impl GraphState {
    /// The state of a run whose steps so far are `steps` (empty, or resumed).
    pub fn new(graph: &Graph, index: &GraphIndex, steps: &StepLog) -> Self {
        let mut unsatisfied = HashMap::new();
        let mut ready = BTreeSet::new();
        for key in graph.nodes.keys() {
            if steps.get(key).is_some() {
                continue;
            }
            let blocked = index
                .incoming(graph, key)
                .filter(|e| edge_reason(steps, e) != "OK")
                .count();
            if blocked == 0 {
                ready.insert(key.clone());
            } else {
                unsatisfied.insert(key.clone(), blocked);
            }
        }
        Self { unsatisfied, ready }
    }

    /// The next node to run, taken off the ready set.
    pub fn next(&mut self) -> Option<String> {
        self.ready.pop_first()
    }

    /// A node taken by [`GraphState::next`] that did not run after all (its run yielded first).
    pub fn put_back(&mut self, key: String) {
        self.ready.insert(key);
    }

    pub fn ready(&self) -> impl Iterator<Item = &str> {
        self.ready.iter().map(String::as_str)
    }

    /// `key` succeeded (its step is in `steps`): the edges it satisfies count down their targets.
    pub fn succeeded(&mut self, graph: &Graph, index: &GraphIndex, steps: &StepLog, key: &str) {
        for edge in index.outgoing(graph, key) {
            if edge_reason(steps, edge) != "OK" || steps.get(&edge.to).is_some() {
                continue;
            }
            if let Some(left) = self.unsatisfied.get_mut(&edge.to) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.unsatisfied.remove(&edge.to);
                    self.ready.insert(edge.to.clone());
                }
            }
        }
    }
}

/// A join's output: how many incoming edges it has and how many are satisfied, sources in edge order.
pub fn join_output(graph: &Graph, index: &GraphIndex, id: &str, steps: &StepLog) -> Value {
    let incoming: Vec<&str> = index.incoming(graph, id).map(|e| e.from.as_str()).collect();
    let satisfied = index
        .incoming(graph, id)
        .filter(|e| edge_reason(steps, e) == "OK")
        .count();
    json!({"joined": true, "requiredIncoming": incoming.len(), "satisfiedIncoming": satisfied, "incomingFrom": incoming})
}

/// Why a node without a step did not run.
pub fn skip_reason(graph: &Graph, index: &GraphIndex, id: &str, steps: &StepLog) -> Value {
    let reached = index
        .incoming(graph, id)
        .any(|e| steps.get(&e.from).is_some());
    let blockers: Vec<Value> = index
        .incoming(graph, id)
        .filter_map(|e| {
            let reason = edge_reason(steps, e);
            (reason != "OK")
                .then(|| json!({"from": e.from, "kind": kind_name(e.kind), "reasonCode": reason}))
        })
        .collect();
    json!({
        "reasonCode": if reached { "DEPENDENCIES_NOT_SATISFIED" } else { "NOT_REACHED" },
        "blockers": blockers,
    })
}

/// `runtime.graphV3`: what completed, what is ready, condition results and join states. Built when the
/// run's output is written, not after every node.
pub fn runtime(
    previous: Option<&Value>,
    graph: &Graph,
    index: &GraphIndex,
    steps: &StepLog,
    ready: Vec<&str>,
) -> Value {
    let mut conditions = BTreeMap::new();
    let mut joins = BTreeMap::new();
    for (key, node) in &graph.nodes {
        match node.spec {
            NodeSpec::Condition(_) => {
                if let Some(s) = steps.get(key) {
                    let explain = StepLog::output_field(s, "explain");
                    let field = |k: &str| explain.get(k).cloned().unwrap_or(Value::Null);
                    conditions.insert(key.clone(), json!({
                        "result": StepLog::output_field(s, "result"), "path": field("path"), "op": field("op"), "expected": field("expected"),
                    }));
                }
            }
            NodeSpec::ParallelJoin(_) => {
                let incoming: Vec<Value> = index
                    .incoming(graph, key)
                    .map(|e| {
                        let reason = edge_reason(steps, e);
                        json!({"from": e.from, "kind": kind_name(e.kind), "satisfied": reason == "OK", "reasonCode": reason})
                    })
                    .collect();
                let satisfied = incoming
                    .iter()
                    .filter(|i| i.get("satisfied") == Some(&Value::Bool(true)))
                    .count();
                joins.insert(key.clone(), json!({"requiredIncoming": incoming.len(), "satisfiedIncoming": satisfied, "incoming": incoming}));
            }
            _ => {}
        }
    }
    let completed: Vec<&str> = steps.iter().map(|s| s.node_id.as_str()).collect();
    let mut rt = match previous {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    };
    rt.insert(
        "graphV3".into(),
        json!({"completedNodeIds": completed, "readyNodeIds": ready, "conditions": conditions, "joins": joins}),
    );
    Value::Object(rt)
}
