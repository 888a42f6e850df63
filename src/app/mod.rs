//! Composition root: configuration, shared state, telemetry and shutdown.

pub mod config;
pub mod shutdown;
pub mod state;
pub mod telemetry;
