//! Vespid: a self-hostable, multi-tenant automation platform in one binary.
//! Dependencies point one way: roles -> domain -> platform.

pub mod app;
pub mod domain;
pub mod node_agent;
pub mod platform;
pub mod roles;
