//! Composition root: configuration, shared state, telemetry and shutdown.

pub mod config;
pub mod dev_kek;
pub mod remote;
pub mod shutdown;
pub mod state;
pub mod telemetry;
