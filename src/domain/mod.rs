//! Domains: each folder owns its model, queries, service functions and routes.

pub mod agents;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod brain;
pub mod common;
pub mod gateway;
pub mod inference;
pub mod meta;
pub mod orgs;
pub mod runs;
pub mod secrets;
pub mod sessions;
pub mod triggers;
pub mod usage;
pub mod workflows;
