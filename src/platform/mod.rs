//! Infrastructure that knows no domain: database, Redis, crypto helpers, HTTP plumbing.

pub mod cache;
pub mod crypto;
pub mod db;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod redis;
pub mod secret;
pub mod validation;
