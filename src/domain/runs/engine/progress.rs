//! The picture of one run while it executes: its steps (indexed by node), the events not yet committed,
//! the resume cursor, and what its next write contains. Every operation here costs the same whatever the
//! run's size: steps are looked up by node, and the full `output` (which grows with the run) is written at
//! most about once a second; in between, checkpoints append only their new steps as rows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::graph::{self, GraphState};
use super::plans::{Executable, ParsedPlan};
use crate::domain::runs::executors::Outcome;
use crate::domain::runs::model::{
    EventKind, Level, NewEvent, Run, RunOutput, RunStatus, Step, StepStatus, Summary,
};
use crate::domain::runs::store::{NewStepRow, RunWrite};
use crate::domain::workflows::dsl::{Node, Plan};
use crate::platform::db::OpenTx;

/// Runs of up to this many steps write their whole `output` at every checkpoint (as the original does).
const FULL_OUTPUT_STEPS: usize = 64;
/// Longer runs rewrite it at most this often; the steps in between are durable as rows.
const OUTPUT_EVERY: Duration = Duration::from_secs(1);

/// Executed nodes in execution order, with an index by node id (its latest step).
#[derive(Debug, Default)]
pub struct StepLog {
    steps: Vec<Step>,
    by_node: HashMap<String, usize>,
    succeeded: usize,
    /// JSON size of the steps' outputs together (for the output cap).
    output_bytes: usize,
}

impl StepLog {
    /// The succeeded steps a resumed attempt starts from: those of the stored `output`, then checkpoint
    /// rows written since (a step already in the output is not repeated).
    pub fn resumed(output: Option<&Value>, rows: Vec<Step>) -> Self {
        let mut log = Self::default();
        for step in Step::succeeded_in(output).into_iter().chain(rows) {
            if step.succeeded() && log.get(&step.node_id).is_none() {
                log.push(step);
            }
        }
        log
    }

    pub fn get(&self, node: &str) -> Option<&Step> {
        self.by_node.get(node).and_then(|&i| self.steps.get(i))
    }

    pub fn push(&mut self, step: Step) {
        if step.succeeded() {
            self.succeeded += 1;
        }
        self.output_bytes += step.output.as_ref().map_or(0, json_len);
        self.by_node.insert(step.node_id.clone(), self.steps.len());
        self.steps.push(step);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter()
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn succeeded_count(&self) -> usize {
        self.succeeded
    }

    pub fn output_bytes(&self) -> usize {
        self.output_bytes
    }

    pub fn as_slice(&self) -> &[Step] {
        &self.steps
    }

    fn since(&self, from: usize) -> &[Step] {
        self.steps.get(from..).unwrap_or_default()
    }

    /// A field of a step's output (`Null` when absent).
    pub fn output_field<'a>(step: &'a Step, key: &str) -> &'a Value {
        step.output
            .as_ref()
            .and_then(|o| o.get(key))
            .unwrap_or(&Value::Null)
    }
}

/// The length of `v` as compact JSON, counted without building the text.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// The mutable picture of one run while it executes.
pub struct Progress {
    pub run: Run,
    pub plan: ParsedPlan,
    pub steps: StepLog,
    /// v3 only: which nodes may run next.
    pub graph: Option<GraphState>,
    pub runtime: Option<Value>,
    /// Events not yet committed; they go out with the next commit.
    pub pending: Vec<NewEvent>,
    /// Events of this attempt so far, committed or pending (for the event cap).
    pub events: usize,
    /// The resume cursor to store with the next commit.
    pub cursor: i32,
    /// The claim's transaction, still open: pure nodes run under it and the first commit closes it, so a
    /// run of pure nodes costs one commit from claim to finish.
    pub open: Option<OpenTx>,
    /// Part of a batch: stop before a node with effects (the batch commits, then the run goes on alone).
    pub batched: bool,
    /// Steps already durable (in the stored output or in checkpoint rows).
    persisted: usize,
    /// When the full output was last part of a write.
    output_written: Option<Instant>,
    /// Step rows exist for this run that the next full output write makes redundant (it deletes them).
    rows_written: bool,
    /// The remote result the resumed attempt has not consumed yet.
    remote: Option<Value>,
}

/// Where a run starts from.
pub struct Start {
    pub run: Run,
    pub plan: ParsedPlan,
    /// Checkpoint rows of the attempt being resumed (none for a new attempt).
    pub rows: Vec<Step>,
    /// Events the attempt already wrote.
    pub events: usize,
    pub open: Option<OpenTx>,
    pub batched: bool,
    /// The stored result of the remote node this attempt was blocked on (`{requestId, nodeId, result}`).
    pub remote: Option<Value>,
}

impl Progress {
    pub fn new(start: Start) -> Self {
        let Start {
            run,
            plan,
            rows,
            events,
            open,
            batched,
            remote,
        } = start;
        let output = run.output.as_ref();
        let rows_written = !rows.is_empty();
        let steps = StepLog::resumed(output, rows);
        let graph = match &*plan {
            Ok(Executable {
                plan: Plan::Graph(g),
                graph: Some(index),
            }) => Some(GraphState::new(g, index, &steps)),
            _ => None,
        };
        Self {
            runtime: output.and_then(|o| o.get("runtime")).cloned(),
            persisted: steps.len(),
            steps,
            graph,
            pending: Vec::new(),
            events,
            cursor: run.cursor_node_index,
            open,
            batched,
            output_written: None,
            rows_written,
            remote,
            plan,
            run,
        }
    }

    /// The outcome of `node`'s resume pass, if the stored remote result is its (spec 5.4): `succeeded`
    /// gives its output, `failed` its error (retried like any node failure), anything else
    /// `REMOTE_RESULT_INVALID`. Taken once.
    pub fn take_remote(&mut self, node: &str) -> Option<Outcome> {
        let stored = self
            .remote
            .take_if(|r| r.get("nodeId").and_then(Value::as_str) == Some(node))?;
        let result = stored.get("result").cloned().unwrap_or(Value::Null);
        let output = result.get("output").cloned();
        Some(match result.get("status").and_then(Value::as_str) {
            Some("succeeded") => Outcome::Succeeded(output.unwrap_or(Value::Null)),
            Some("failed") => Outcome::Failed {
                error: result
                    .get("error")
                    .and_then(Value::as_str)
                    .filter(|e| !e.is_empty())
                    .unwrap_or("REMOTE_EXECUTION_FAILED")
                    .to_string(),
                output,
                retryable: true,
            },
            _ => Outcome::fail("REMOTE_RESULT_INVALID", false),
        })
    }

    /// Records a succeeded step; in a graph, the edges it satisfies may make other nodes ready.
    pub fn record_success(&mut self, step: Step) {
        let key = step.node_id.clone();
        self.steps.push(step);
        let plan = self.plan.clone();
        if let (
            Ok(Executable {
                plan: Plan::Graph(g),
                graph: Some(index),
            }),
            Some(state),
        ) = (&*plan, self.graph.as_mut())
        {
            state.succeeded(g, index, &self.steps, &key);
        }
    }

    /// Whether the write that carries the full output should delete the run's step rows (and from then
    /// on, none are left).
    pub fn take_rows_to_clear(&mut self) -> bool {
        std::mem::take(&mut self.rows_written)
    }

    pub fn push_event(&mut self, e: NewEvent) {
        self.events += 1;
        self.pending.push(e);
    }

    pub fn event(&self, kind: EventKind, level: Level, node: Option<&Node>) -> NewEvent {
        event(&self.run, kind, level, node)
    }

    /// Brings `runtime.graphV3` up to date (v3 only): done when the output is about to be written.
    fn refresh_runtime(&mut self) {
        let plan = self.plan.clone();
        if let (
            Ok(Executable {
                plan: Plan::Graph(g),
                graph: Some(index),
            }),
            Some(state),
        ) = (&*plan, &self.graph)
        {
            let ready: Vec<&str> = state.ready().collect();
            self.runtime = Some(graph::runtime(
                self.runtime.as_ref(),
                g,
                index,
                &self.steps,
                ready,
            ));
        }
    }

    /// The full `output` (spec 3.6).
    pub fn output(&mut self, status: StepStatus, failed_node: Option<&str>) -> Value {
        self.refresh_runtime();
        self.output_written = Some(Instant::now());
        self.persisted = self.steps.len();
        let out = RunOutput {
            status,
            steps: self.steps.as_slice(),
            output: Summary {
                completed_node_count: self.steps.succeeded_count(),
                failed_node_id: failed_node,
            },
            runtime: self.runtime.as_ref(),
        };
        // Plain data (strings, numbers, JSON values): serialization cannot fail.
        serde_json::to_value(out).unwrap_or(Value::Null)
    }

    /// The progress so far as a write (the run stays `running` under its lease): the full output when the
    /// run is short or the last one is a second old, else only the steps since the last write, as rows.
    pub fn checkpoint(&mut self) -> RunWrite {
        let full = self.steps.len() <= FULL_OUTPUT_STEPS
            || self
                .output_written
                .is_none_or(|t| t.elapsed() >= OUTPUT_EVERY);
        if full {
            let output = self.output(StepStatus::Succeeded, None);
            return RunWrite::checkpoint(self.run.id, Some(output), self.cursor, Vec::new())
                .clearing_rows(self.take_rows_to_clear());
        }
        let rows = self
            .steps
            .since(self.persisted)
            .iter()
            .map(|s| NewStepRow {
                organization_id: self.run.organization_id,
                run_id: self.run.id,
                node_id: s.node_id.clone(),
                step: serde_json::to_value(s).unwrap_or(Value::Null),
            })
            .collect();
        self.persisted = self.steps.len();
        self.rows_written = true;
        RunWrite::checkpoint(self.run.id, None, self.cursor, rows)
    }
}

pub fn event(run: &Run, kind: EventKind, level: Level, node: Option<&Node>) -> NewEvent {
    NewEvent {
        organization_id: run.organization_id,
        workflow_id: run.workflow_id,
        run_id: run.id,
        attempt_count: run.attempt_count,
        event_type: kind,
        node_id: node.map(|n| n.id.clone()),
        node_type: node.map(Node::node_type),
        level,
        message: None,
        payload: None,
    }
}

/// How an attempt ends.
#[derive(Debug, Clone, Copy)]
pub enum EndKind {
    Succeeded,
    /// Another attempt at this time.
    Retry(DateTime<Utc>),
    Failed,
}

/// The end of an attempt, decided but not yet written.
pub struct End {
    pub kind: EndKind,
    pub error: Option<String>,
    pub output: Value,
    pub events: Vec<NewEvent>,
    /// The run has step rows, now redundant with this full output.
    pub clear_rows: bool,
}

impl End {
    /// The row write and the events, plus what to log once they are committed.
    pub fn split(self, run: crate::domain::common::ids::RunId) -> Ended {
        let now = Utc::now();
        let (status, next, finished) = match self.kind {
            EndKind::Succeeded => (RunStatus::Succeeded, None, Some(now)),
            EndKind::Retry(due) => (RunStatus::Queued, Some(due), None),
            EndKind::Failed => (RunStatus::Failed, None, Some(now)),
        };
        let error = match self.kind {
            EndKind::Succeeded => None,
            _ => self.error.clone(),
        };
        Ended {
            write: RunWrite::ended(run, status, self.output, error, next, finished)
                .clearing_rows(self.clear_rows),
            events: self.events,
            kind: self.kind,
            error: self.error,
        }
    }
}

/// An end ready to write.
pub struct Ended {
    pub write: RunWrite,
    pub events: Vec<NewEvent>,
    pub kind: EndKind,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(id: &str, ok: bool) -> Step {
        Step {
            node_id: id.into(),
            node_type: crate::domain::workflows::dsl::NodeType::HttpRequest,
            status: if ok {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            },
            output: Some(json!({"n": id})),
            error: None,
        }
    }

    #[test]
    fn resumed_steps_are_the_output_then_new_rows_once_each() {
        let output = json!({"steps": [
            serde_json::to_value(step("a", true)).unwrap(),
            serde_json::to_value(step("b", false)).unwrap(),
        ]});
        let log = StepLog::resumed(
            Some(&output),
            vec![step("a", true), step("c", true), step("d", false)],
        );
        let ids: Vec<_> = log.iter().map(|s| s.node_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(log.succeeded_count(), 2);
        assert!(log.get("b").is_none());
        assert_eq!(log.output_bytes(), 2 * json_len(&json!({"n": "a"})));
    }
}
