//! What every domain shares and no single domain owns: typed ids, the caller and its org access, the
//! access table, the request extractors, paging and wire timestamps. It imports no domain.

pub mod access;
pub mod extract;
pub mod ids;
pub mod page;
pub mod policy;
pub mod scope;
pub mod time;
