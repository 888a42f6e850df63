//! Runs: creation and reading, the worker engine on the Redis work queue, and run events.

pub mod engine;
pub mod executors;
pub mod intake;
pub mod model;
pub mod routes;
pub mod store;
pub mod worker;
