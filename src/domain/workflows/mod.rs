//! Workflows: the DSL, revisioned workflow rows and their REST endpoints.

pub mod dsl;
