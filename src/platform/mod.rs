//! Infrastructure that knows no domain: database, Redis, crypto helpers, HTTP plumbing.

pub mod crypto;
pub mod db;
pub mod http;
pub mod queue;
pub mod redis;
