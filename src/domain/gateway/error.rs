//! What can go wrong at the gateway, in domain terms.

use crate::domain::agents::AgentError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No live executor holds this token.
    #[error("invalid executor token")]
    InvalidToken,
    #[error(transparent)]
    Agents(#[from] AgentError),
    /// Redis (results, markers) unreachable.
    #[error("gateway state unavailable: {0}")]
    Unavailable(String),
}
