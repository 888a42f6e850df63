//! Executors (node agents) an org pairs with its own machines: single-use pairing tokens, pairing,
//! listing with live status, revocation and routing labels. Tokens are `<orgId>.<secret>`, stored only
//! as SHA-256 hex and shown once. The gateway (next to it) serves the connections; this service owns
//! the rows and reads presence from the route records the gateway keeps.

pub mod config;
pub mod error;
pub mod identity;
pub mod model;
pub mod presence;
pub mod routes;
pub mod store;
pub mod throttle;

use crate::domain::audit::{self, Action, Entry};
use crate::domain::common::time::iso;
use serde_json::json;
use std::collections::HashSet;
use std::net::IpAddr;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use fred::interfaces::KeysInterface;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::ExecutorId;
use crate::platform::crypto;
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::redis::Redis;
use config::AgentsConfig;
pub use error::AgentError;
use model::{ExecutorView, IssuedPairingToken, PairRequest, Paired};
use presence::Revoked;
use throttle::PairLimiter;

/// What the agents service is built from.
pub struct AgentsParts {
    pub config: AgentsConfig,
    pub db: PgPool,
    pub redis: Redis,
}

pub struct Agents {
    config: AgentsConfig,
    db: PgPool,
    redis: Redis,
    limiter: PairLimiter,
}

impl Agents {
    pub fn new(parts: AgentsParts) -> Self {
        let limiter = PairLimiter::new(
            parts.redis.clone(),
            parts.config.pair_max_failures,
            parts.config.pair_failure_window_secs,
        );
        Self {
            config: parts.config,
            db: parts.db,
            redis: parts.redis,
            limiter,
        }
    }

    /// A single-use pairing token for the caller's org; `labels` (already normalized) become the
    /// executor's routing labels when it pairs.
    pub async fn issue_pairing_token(
        &self,
        ctx: &OrgCtx,
        labels: Vec<String>,
    ) -> Result<IssuedPairingToken, AgentError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        let token = model::new_token(org, model::PAIRING_SECRET_BYTES);
        let hash = model::token_hash(&token);
        let ttl = i64::try_from(self.config.pairing_token_ttl_secs).unwrap_or(i64::MAX);
        let expires_at = Utc::now() + chrono::Duration::seconds(ttl.min(365 * 86_400));
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::insert_pairing_token(c, org, &hash, &labels, expires_at, user).await?;
                let entry = Entry::by(user, org, Action::AgentPairingTokenCreate, "pairing_token")
                    .details(json!({"labels": labels, "expiresAt": iso(expires_at)}));
                audit::record(c, &entry).await?;
                Ok::<_, AgentError>(())
            }
            .scope_boxed()
        })
        .await?;
        Ok(IssuedPairingToken { token, expires_at })
    }

    /// Trades a pairing token for an executor and its token. The token is consumed and the executor
    /// created in one transaction (a failed insert does not burn the token); a client whose pairings keep
    /// failing is throttled, valid pairings never count.
    pub async fn pair(
        &self,
        req: PairRequest,
        client: Option<IpAddr>,
    ) -> Result<Paired, AgentError> {
        self.limiter
            .attempt(client)
            .await
            .map_err(|retry_after_secs| AgentError::Throttled { retry_after_secs })?;
        let result = self.pair_unthrottled(req).await;
        let clients_fault = matches!(
            result,
            Err(AgentError::PairingTokenMalformed
                | AgentError::PairingTokenInvalid
                | AgentError::PairingTokenUsed
                | AgentError::PairingTokenExpired)
        );
        if !clients_fault {
            self.limiter.not_a_failure(client).await;
        }
        result
    }

    async fn pair_unthrottled(&self, req: PairRequest) -> Result<Paired, AgentError> {
        let org = model::token_org(&req.pairing_token).ok_or(AgentError::PairingTokenMalformed)?;
        let hash = model::token_hash(&req.pairing_token);
        let executor_token = model::new_token(org, model::EXECUTOR_SECRET_BYTES);
        let executor_hash = model::token_hash(&executor_token);
        let row = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let token = store::pairing_token(c, org, &hash)
                    .await?
                    // The index found it by hash; the comparison is constant-time all the same.
                    .filter(|t| crypto::ct_eq(t.token_hash.as_bytes(), hash.as_bytes()))
                    .ok_or(AgentError::PairingTokenInvalid)?;
                if token.used_at.is_some() {
                    return Err(AgentError::PairingTokenUsed);
                }
                if token.expires_at <= Utc::now() {
                    return Err(AgentError::PairingTokenExpired);
                }
                if !store::consume_pairing_token(c, org, &hash).await? {
                    return Err(AgentError::PairingTokenInvalid);
                }
                let new = store::NewExecutor {
                    org,
                    name: &req.name,
                    token_hash: &executor_hash,
                    capabilities: req.capabilities.as_ref(),
                    labels: &token.labels,
                    by_user: token.created_by_user_id,
                };
                let row = store::insert_executor(c, new).await?;
                // Done by the pairing agent with a token an admin issued: the platform's act, for
                // the admin who issued the token.
                let entry = Entry::system(org, Action::AgentPair, "executor")
                    .target(row.id)
                    .details(json!({"name": row.name, "issuedBy": token.created_by_user_id}));
                audit::record(c, &entry).await?;
                Ok::<_, AgentError>(row)
            }
            .scope_boxed()
        })
        .await?;
        tracing::info!(org_id = %org, executor_id = %row.id, name = %row.name, "executor paired");
        Ok(Paired {
            executor_id: row.id,
            executor_token,
            organization_id: org,
            gateway_ws_url: self.config.gateway_ws_url.clone(),
        })
    }

    /// The org's executors, newest first, each `online` while it holds a gateway connection.
    pub async fn list(&self, ctx: &OrgCtx) -> Result<Vec<ExecutorView>, AgentError> {
        let org = ctx.org_id;
        let rows = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { store::list(c, org).await.map_err(AgentError::from) }.scope_boxed()
        })
        .await?;
        let live = self
            .connected(rows.iter().filter(|r| r.revoked_at.is_none()).map(|r| r.id))
            .await;
        Ok(rows.iter().map(|r| r.view(live.contains(&r.id))).collect())
    }

    /// Which of `ids` hold a gateway connection now (their route record exists). Presence that cannot be
    /// read shows as offline rather than failing the listing.
    async fn connected(&self, ids: impl Iterator<Item = ExecutorId>) -> HashSet<ExecutorId> {
        let ids: Vec<ExecutorId> = ids.collect();
        if ids.is_empty() {
            return HashSet::new();
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.redis.key(&presence::route_key(*id)))
            .collect();
        let found: Result<Vec<Option<String>>, _> = self.redis.client.mget(keys).await;
        match found {
            Ok(values) => ids
                .into_iter()
                .zip(values)
                .filter_map(|(id, v)| v.map(|_| id))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "executor presence unavailable; listing them offline");
                HashSet::new()
            }
        }
    }

    /// Revokes the executor: its token stops working, and the gateway instance holding its socket is told
    /// to close it; its route record is dropped so nothing routes to it meanwhile.
    pub async fn revoke(&self, ctx: &OrgCtx, id: ExecutorId) -> Result<(), AgentError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        let found = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let found = store::revoke(c, org, id).await?;
                if found {
                    let entry = Entry::by(user, org, Action::AgentRevoke, "executor").target(id);
                    audit::record(c, &entry).await?;
                }
                Ok::<_, AgentError>(found)
            }
            .scope_boxed()
        })
        .await?;
        if !found {
            return Err(AgentError::NotFound);
        }
        tracing::info!(org_id = %org, executor_id = %id, "executor revoked");
        let key = self.redis.key(&presence::route_key(id));
        if let Err(e) = self.redis.client.del::<i64, _>(key).await {
            tracing::warn!(error = %e, executor_id = %id, "route record of a revoked executor not removed");
        }
        let notice = Revoked {
            executor_id: id,
            organization_id: org,
        };
        match serde_json::to_string(&notice) {
            Ok(msg) => {
                if let Err(e) = self.redis.publish(presence::REVOKED_CHANNEL, msg).await {
                    // The gateway also re-checks revocation on every hello (15 s), which bounds this.
                    tracing::warn!(error = %e, executor_id = %id, "revocation not announced");
                }
            }
            Err(e) => tracing::error!(error = %e, "revocation notice not encodable"),
        }
        Ok(())
    }

    /// Replaces the executor's routing labels (already normalized); answers the stored labels.
    pub async fn set_labels(
        &self,
        ctx: &OrgCtx,
        id: ExecutorId,
        labels: Vec<String>,
    ) -> Result<Vec<String>, AgentError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let stored = store::set_labels(c, org, id, &labels)
                    .await?
                    .ok_or(AgentError::NotFound)?;
                let entry = Entry::by(user, org, Action::AgentLabelsUpdate, "executor")
                    .target(id)
                    .details(json!({"labels": stored}));
                audit::record(c, &entry).await?;
                Ok(stored)
            }
            .scope_boxed()
        })
        .await
    }
}
