//! Runs: creation and reading, the Redis run queue, the worker engine and run events.

pub mod executors;
