//! Where a node runs: `execution` (mode) and the executor `selector`, shared by `agent.execute`,
//! `connector.action` and `agent.run`.

use super::fields::{text, Absent, Errors, Obj, Rule};

const EXECUTION_MODES: &[&str] = &["cloud", "executor"];

/// Executor selector. Our decision: `pool` is never defaulted (the gateway resolves an absent pool).
pub(super) fn selector(selector: &mut Obj<'_>, errors: &mut Errors) {
    selector.opt(errors, "pool", Rule::Enum(&["managed", "byon"]));
    selector.strings(errors, "labels", Absent::Skip, text(1, 64), 50);
    selector.opt(errors, "group", text(1, 64));
    selector.opt(errors, "tag", text(1, 64));
    selector.opt(errors, "executorId", Rule::Uuid);
}

/// `execution` of `agent.execute` / `connector.action`: `mode` defaults to `default_mode` when the
/// object is given; `selector` stays as given.
pub(super) fn execution(config: &mut Obj<'_>, errors: &mut Errors, default_mode: &'static str) {
    config.object(errors, "execution", Absent::Skip, |execution, errors| {
        execution.or(errors, "mode", Rule::Enum(EXECUTION_MODES), default_mode);
        execution.object(errors, "selector", Absent::Skip, selector);
    });
}
