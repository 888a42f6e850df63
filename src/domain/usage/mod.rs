//! LLM usage and cost: every call to a language model is recorded (provider, model, tokens in and out,
//! latency, estimated cost) in the org's `llm_usage` rows; owners and admins read the aggregates by day,
//! model and session at `GET /v1/orgs/{orgId}/usage`; and an org's optional monthly token budget
//! (`llm.budget.monthlyTokens` in its settings) is checked before each call, over the current calendar
//! month in UTC.

pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use std::sync::Arc;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::OrgId;
use crate::domain::common::time::iso;
use crate::domain::orgs::Orgs;
use crate::platform::db::{self, PgPool, TenantCtx};
pub use error::UsageError;
use model::{
    month_start, usd, Budget, DayUsage, Filter, ModelUsage, SessionUsage, Totals, UsageRecord,
    UsageReport, TOP_SESSIONS,
};

/// What the usage service is built from.
pub struct UsageParts {
    pub db: PgPool,
    /// For the org's budget, from its (cached) settings.
    pub orgs: Arc<Orgs>,
}

pub struct UsageService {
    db: PgPool,
    orgs: Arc<Orgs>,
}

/// Work done on the recording transaction's connection after the usage row is inserted (see
/// [`UsageService::record_with`]).
pub type Also = Box<
    dyn for<'c> FnOnce(
            &'c mut AsyncPgConnection,
            &'c UsageRecord,
        ) -> BoxFuture<'c, diesel::QueryResult<()>>
        + Send,
>;

/// Writes one usage row on the caller's open transaction (as `audit::record` does): for a writer whose
/// own commit must carry the row (a session turn's answer and its last model call commit together).
pub async fn record_in(
    c: &mut diesel_async::AsyncPgConnection,
    r: &UsageRecord,
) -> diesel::QueryResult<()> {
    store::insert(c, r).await
}

impl UsageService {
    pub fn new(parts: UsageParts) -> Self {
        Self {
            db: parts.db,
            orgs: parts.orgs,
        }
    }

    /// Records one LLM call in its org, in one transaction.
    pub async fn record(&self, r: UsageRecord) -> Result<(), UsageError> {
        self.record_with(r, Box::new(|_, _| Box::pin(async { Ok(()) })))
            .await
    }

    /// Records one LLM call and runs `also` on the same transaction's connection, under the org's
    /// context, right after the insert: both commit or neither does. For the session's running totals
    /// (`UPDATE sessions SET llm_calls = llm_calls + 1, …`), which the sessions domain owns, so that a
    /// session's totals always equal the sum of its usage rows.
    pub async fn record_with(&self, r: UsageRecord, also: Also) -> Result<(), UsageError> {
        db::tenant_tx(&self.db, TenantCtx::org(r.org), |c| {
            async move {
                store::insert(c, &r).await?;
                also(c, &r).await?;
                Ok::<_, UsageError>(())
            }
            .scope_boxed()
        })
        .await
    }

    /// The org's budget and this calendar month's use of it.
    pub async fn budget(&self, org: OrgId) -> Result<Budget, UsageError> {
        let monthly = monthly_tokens(&self.orgs.stored_settings(org).await?);
        Ok(Budget::new(monthly, self.used_this_month(org).await?))
    }

    /// `Ok` when the org may make another LLM call: it has no budget, or this month's input and output
    /// tokens are still below it; else [`UsageError::BudgetExceeded`]. Without a budget no rows are read.
    pub async fn check_budget(&self, org: OrgId) -> Result<(), UsageError> {
        let Some(budget) = monthly_tokens(&self.orgs.stored_settings(org).await?) else {
            return Ok(());
        };
        let used = self.used_this_month(org).await?;
        if Budget::new(Some(budget), used).exhausted() {
            return Err(UsageError::BudgetExceeded { used, budget });
        }
        Ok(())
    }

    /// Input and output tokens of the org's calls this calendar month (UTC).
    async fn used_this_month(&self, org: OrgId) -> Result<i64, UsageError> {
        let since = month_start(Utc::now());
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                store::tokens_since(c, org, since)
                    .await
                    .map_err(UsageError::from)
            }
            .scope_boxed()
        })
        .await
    }

    /// The org's usage in the filter's window, aggregated by day, model and session, with its budget.
    pub async fn report(&self, ctx: &OrgCtx, filter: Filter) -> Result<UsageReport, UsageError> {
        let org = ctx.org_id;
        let monthly = monthly_tokens(&self.orgs.stored_settings(org).await?);
        let month = month_start(Utc::now());
        let window = filter.window;
        let (used, totals, days, models, sessions) = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let used = store::tokens_since(c, org, month).await?;
                let totals = store::totals(c, org, &filter).await?;
                let days = store::by_day(c, org, &filter).await?;
                let models = store::by_model(c, org, &filter).await?;
                let sessions = store::by_session(c, org, &filter, TOP_SESSIONS).await?;
                Ok::<_, UsageError>((used, totals, days, models, sessions))
            }
            .scope_boxed()
        })
        .await?;
        Ok(UsageReport {
            since: iso(window.since),
            until: iso(window.until),
            totals: Totals {
                calls: totals.calls,
                input_tokens: totals.input_tokens,
                output_tokens: totals.output_tokens,
                total_tokens: totals.input_tokens.saturating_add(totals.output_tokens),
                cost_usd: usd(totals.cost_micros),
                cost_micros: totals.cost_micros,
            },
            by_day: days
                .into_iter()
                .map(|d| DayUsage {
                    day: d.day,
                    calls: d.sums.calls,
                    input_tokens: d.sums.input_tokens,
                    output_tokens: d.sums.output_tokens,
                    cost_usd: usd(d.sums.cost_micros),
                })
                .collect(),
            by_model: models
                .into_iter()
                .map(|m| ModelUsage {
                    provider: m.provider,
                    model: m.model,
                    calls: m.sums.calls,
                    input_tokens: m.sums.input_tokens,
                    output_tokens: m.sums.output_tokens,
                    cost_usd: usd(m.sums.cost_micros),
                })
                .collect(),
            by_session: sessions
                .into_iter()
                .map(|s| SessionUsage {
                    session_id: s.session_id,
                    calls: s.sums.calls,
                    input_tokens: s.sums.input_tokens,
                    output_tokens: s.sums.output_tokens,
                    cost_usd: usd(s.sums.cost_micros),
                })
                .collect(),
            budget: Budget::new(monthly, used),
        })
    }
}

/// `llm.budget.monthlyTokens` of stored settings, when it is a positive integer (settings validation
/// accepts nothing else; anything else stored means no budget).
fn monthly_tokens(settings: &Value) -> Option<i64> {
    settings
        .pointer("/llm/budget/monthlyTokens")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 1)
}
