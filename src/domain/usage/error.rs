//! What can go wrong recording and reading LLM usage, in domain terms; `routes.rs` maps each to HTTP.

use crate::domain::orgs::OrgError;
use crate::platform::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The org's monthly token budget is spent: no more LLM calls until the next calendar month (UTC)
    /// or a larger budget.
    #[error("monthly token budget exhausted: {used} of {budget} tokens used this month")]
    BudgetExceeded { used: i64, budget: i64 },
    /// The org's settings (for its budget) could not be read.
    #[error(transparent)]
    Settings(#[from] OrgError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl UsageError {
    /// The stable code of a spent budget, for events and error answers.
    pub const BUDGET_EXCEEDED: &'static str = "LLM_BUDGET_EXCEEDED";
}

impl From<diesel::result::Error> for UsageError {
    fn from(e: diesel::result::Error) -> Self {
        UsageError::Db(e.into())
    }
}
