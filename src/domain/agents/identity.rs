//! Who holds an executor token: how the gateway authenticates a connecting agent, keeps its
//! `last_seen_at`, and re-reads its revocation and routing labels while it stays connected.
//!
//! A BYON token is `<orgId>.<secret>`: it is looked up under that org's context (strict RLS). A managed
//! token is `<executorId>.<secret>`, looked up among the operator's managed executors.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AgentError, Agents};
use crate::domain::common::ids::{ExecutorId, OrgId};
use crate::platform::crypto;
use crate::platform::db::schema::{managed_executors as me, organization_executors as ex};
use crate::platform::db::{self, TenantCtx};

/// Which executors a node may be routed to: an org's own (`byon`) or the operator's shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Byon,
    Managed,
}

/// What an executor can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolKind {
    #[serde(rename = "connector.action")]
    ConnectorAction,
    #[serde(rename = "agent.execute")]
    AgentExecute,
}

impl ToolKind {
    pub const ALL: [ToolKind; 2] = [ToolKind::ConnectorAction, ToolKind::AgentExecute];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "connector.action" => Some(Self::ConnectorAction),
            "agent.execute" => Some(Self::AgentExecute),
            _ => None,
        }
    }
}

/// An authenticated executor, as the gateway routes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorIdentity {
    pub id: ExecutorId,
    pub pool: Pool,
    /// The owning org (BYON); `None` for managed executors.
    pub org: Option<OrgId>,
    pub name: String,
    /// Routing labels: the control plane's only (never what the agent says about itself).
    pub labels: Vec<String>,
    /// The most concurrent tool calls the gateway sends it (what the agent reports can only lower it).
    pub max_in_flight: u32,
    pub kinds: Vec<ToolKind>,
}

/// `capabilities.kinds` restricted to the known kinds; none left means all.
fn kinds_of(capabilities: Option<&Value>) -> Vec<ToolKind> {
    let kinds: Vec<ToolKind> = capabilities
        .and_then(|c| c.get("kinds"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(ToolKind::parse)
                .collect()
        })
        .unwrap_or_default();
    if kinds.is_empty() {
        ToolKind::ALL.to_vec()
    } else {
        kinds
    }
}

/// BYON: `capabilities.maxInFlight` floored and clamped to 1..=200, default 10.
fn byon_max_in_flight(capabilities: Option<&Value>) -> u32 {
    capabilities
        .and_then(|c| c.get("maxInFlight"))
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite())
        .map_or(10, |n| n.floor().clamp(1.0, 200.0) as u32)
}

#[derive(Queryable)]
struct ByonRow {
    id: ExecutorId,
    organization_id: OrgId,
    name: String,
    token_hash: String,
    capabilities: Option<Value>,
    labels: Vec<String>,
}

#[derive(Queryable)]
struct ManagedRow {
    id: ExecutorId,
    name: String,
    token_hash: Option<String>,
    capabilities: Option<Value>,
    labels: Vec<String>,
    max_in_flight: i32,
}

impl Agents {
    /// The live executor `token` belongs to; `None` for an unknown, malformed or revoked token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ExecutorIdentity>, AgentError> {
        // The prefix: the org of a BYON token, the executor itself for a managed one.
        let Some(org) = super::model::token_org(token) else {
            return Ok(None);
        };
        let hash = super::model::token_hash(token);
        if let Some(found) = self.managed_by_token(org.uuid(), &hash).await? {
            return Ok(Some(found));
        }
        let row = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            let hash = hash.clone();
            async move {
                ex::table
                    .filter(ex::organization_id.eq(org))
                    .filter(ex::token_hash.eq(hash))
                    .filter(ex::revoked_at.is_null())
                    .select((
                        ex::id,
                        ex::organization_id,
                        ex::name,
                        ex::token_hash,
                        ex::capabilities,
                        ex::labels,
                    ))
                    .first::<ByonRow>(c)
                    .await
                    .optional()
                    .map_err(AgentError::from)
            }
            .scope_boxed()
        })
        .await?;
        Ok(row
            .filter(|r| crypto::ct_eq(r.token_hash.as_bytes(), hash.as_bytes()))
            .map(|r| ExecutorIdentity {
                id: r.id,
                pool: Pool::Byon,
                org: Some(r.organization_id),
                name: r.name,
                labels: r.labels,
                max_in_flight: byon_max_in_flight(r.capabilities.as_ref()),
                kinds: kinds_of(r.capabilities.as_ref()),
            }))
    }

    async fn managed_by_token(
        &self,
        prefix: uuid::Uuid,
        hash: &str,
    ) -> Result<Option<ExecutorIdentity>, AgentError> {
        let wanted = hash.to_string();
        let row = db::plain(&self.db, |c| {
            async move {
                me::table
                    .filter(me::token_hash.eq(wanted))
                    .filter(me::revoked_at.is_null())
                    .select((
                        me::id,
                        me::name,
                        me::token_hash,
                        me::capabilities,
                        me::labels,
                        me::max_in_flight,
                    ))
                    .first::<ManagedRow>(c)
                    .await
                    .optional()
                    .map_err(AgentError::from)
            }
            .scope_boxed()
        })
        .await?;
        // The prefix of a managed token is the executor's own id; the hash is compared in constant
        // time although the index found the row by it.
        Ok(row
            .filter(|r| r.id.uuid() == prefix)
            .filter(|r| {
                r.token_hash
                    .as_deref()
                    .is_some_and(|h| crypto::ct_eq(h.as_bytes(), hash.as_bytes()))
            })
            .map(|r| ExecutorIdentity {
                id: r.id,
                pool: Pool::Managed,
                org: None,
                name: r.name,
                labels: r.labels,
                max_in_flight: u32::try_from(r.max_in_flight.max(1)).unwrap_or(1),
                kinds: kinds_of(r.capabilities.as_ref()),
            }))
    }

    /// The executor as it is now: its current routing labels, or `None` once revoked (or deleted). The
    /// gateway asks on every hello, so a revocation or a label change reaches a live connection within
    /// one hello period even if its announcement was missed.
    pub async fn current_labels(
        &self,
        who: &ExecutorIdentity,
    ) -> Result<Option<Vec<String>>, AgentError> {
        let id = who.id;
        match who.org {
            Some(org) => {
                db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
                    async move {
                        ex::table
                            .filter(ex::organization_id.eq(org))
                            .filter(ex::id.eq(id))
                            .filter(ex::revoked_at.is_null())
                            .select(ex::labels)
                            .first::<Vec<String>>(c)
                            .await
                            .optional()
                            .map_err(AgentError::from)
                    }
                    .scope_boxed()
                })
                .await
            }
            None => {
                db::plain(&self.db, |c| {
                    async move {
                        me::table
                            .filter(me::id.eq(id))
                            .filter(me::revoked_at.is_null())
                            .select(me::labels)
                            .first::<Vec<String>>(c)
                            .await
                            .optional()
                            .map_err(AgentError::from)
                    }
                    .scope_boxed()
                })
                .await
            }
        }
    }

    /// Best effort `last_seen_at = now()` (on connect and on each hello); a failure is logged.
    pub async fn touch(&self, who: &ExecutorIdentity) {
        let (id, now) = (who.id, Utc::now());
        let done = match who.org {
            Some(org) => {
                db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
                    async move {
                        diesel::update(
                            ex::table
                                .filter(ex::organization_id.eq(org))
                                .filter(ex::id.eq(id)),
                        )
                        .set(ex::last_seen_at.eq(now))
                        .execute(c)
                        .await
                        .map_err(AgentError::from)
                    }
                    .scope_boxed()
                })
                .await
            }
            None => {
                db::plain(&self.db, |c| {
                    async move {
                        diesel::update(me::table.filter(me::id.eq(id)))
                            .set(me::last_seen_at.eq(now))
                            .execute(c)
                            .await
                            .map_err(AgentError::from)
                    }
                    .scope_boxed()
                })
                .await
            }
        };
        if let Err(e) = done {
            tracing::warn!(executor_id = %id, error = %e, "executor last_seen_at not updated");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_default_to_all_and_unknown_ones_are_dropped() {
        assert_eq!(kinds_of(None), ToolKind::ALL.to_vec());
        assert_eq!(
            kinds_of(Some(&json!({"kinds": ["agent.run", "agent.execute"]}))),
            vec![ToolKind::AgentExecute]
        );
        assert_eq!(
            kinds_of(Some(&json!({"kinds": ["x"]}))),
            ToolKind::ALL.to_vec()
        );
    }

    #[test]
    fn byon_in_flight_is_floored_and_clamped() {
        assert_eq!(byon_max_in_flight(None), 10);
        assert_eq!(byon_max_in_flight(Some(&json!({"maxInFlight": 3.9}))), 3);
        assert_eq!(byon_max_in_flight(Some(&json!({"maxInFlight": 0}))), 1);
        assert_eq!(byon_max_in_flight(Some(&json!({"maxInFlight": 1000}))), 200);
        assert_eq!(byon_max_in_flight(Some(&json!({"maxInFlight": "5"}))), 10);
    }
}
