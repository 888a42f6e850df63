//! Integration tests: one binary (links once), a module per area. Each test gets its own database cloned
//! from a migrated template and its own app on an ephemeral port.

// Test and bench code may panic on what it did not expect: that is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

mod agents;
mod apikeys;
mod audit;
mod auth;
mod authz;
mod basics;
mod brain;
mod executors;
mod fake_github;
mod fake_oauth;
mod gateway;
mod hostile;
mod inference;
mod metrics;
mod oauth;
mod openapi;
mod orgs;
mod process;
mod remote;
mod rls;
mod runs;
mod secrets;
mod sessions;
mod sse;
mod triggers;
mod usage;
mod workflows;
