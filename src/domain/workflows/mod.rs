//! Workflows: the DSL, revisioned workflow rows and their REST endpoints.

pub mod cursor;
pub mod dsl;
pub mod model;
pub mod routes;
pub mod service;
pub mod store;
