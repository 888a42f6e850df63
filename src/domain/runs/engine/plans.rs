//! Workflows parsed for execution, cached per process: the DSL of a published revision never changes (only
//! drafts are edited, and a published row stays published), so a run of a workflow seen before costs no
//! parsing and no validation. Keyed by id and version all the same, so a changed row would be parsed anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::graph::GraphIndex;
use crate::domain::common::ids::WorkflowId;
use crate::domain::workflows::dsl::{self, Plan};

/// Entries kept before the cache starts over (each holds one parsed document).
const CAPACITY: usize = 512;

/// A plan ready to run: the nodes, and for a v3 graph its edges indexed by node.
pub struct Executable {
    pub plan: Plan,
    pub graph: Option<GraphIndex>,
}

/// A workflow as parsed for execution, or the code of why its stored DSL no longer parses.
pub type ParsedPlan = Arc<Result<Executable, String>>;

#[derive(Default)]
pub struct Plans {
    cache: Mutex<HashMap<(WorkflowId, i32), ParsedPlan>>,
}

impl Plans {
    /// The plan of `workflow` at `version`, parsing `dsl` only the first time.
    pub fn get(&self, workflow: WorkflowId, version: i32, dsl: &Value) -> ParsedPlan {
        let key = (workflow, version);
        if let Some(found) = self.lock().get(&key) {
            return found.clone();
        }
        let parsed: ParsedPlan = Arc::new(
            dsl::parse(dsl)
                .map(|d| {
                    let graph = match &d.plan {
                        Plan::Graph(g) => Some(GraphIndex::new(g)),
                        Plan::Sequence(_) => None,
                    };
                    Executable {
                        plan: d.plan,
                        graph,
                    }
                })
                .map_err(|e| e.code().to_string()),
        );
        let mut cache = self.lock();
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(key, parsed.clone());
        parsed
    }

    /// A poisoned lock only means another thread panicked while inserting: the map itself is fine.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(WorkflowId, i32), ParsedPlan>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
