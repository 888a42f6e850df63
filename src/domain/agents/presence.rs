//! Where an executor's live presence lives, shared with the gateway: while an executor holds an
//! authenticated connection, the gateway instance serving it keeps its route record (with a TTL, so an
//! instance that dies without cleaning up is forgotten); revocation is announced on a channel so whichever
//! instance holds the socket closes it at once.

use serde::{Deserialize, Serialize};

use crate::domain::common::ids::{ExecutorId, OrgId};

/// The route record of a connected executor (inside the install's Redis namespace).
pub fn route_key(id: ExecutorId) -> String {
    format!("executor:route:{id}")
}

/// Channel on which revocations are announced to every gateway instance.
pub const REVOKED_CHANNEL: &str = "executors:revoked";

/// One revocation, as announced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub executor_id: ExecutorId,
    pub organization_id: OrgId,
}
