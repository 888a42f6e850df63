//! The audit log: who changed what in an org, and when. Every audited mutation writes its row with
//! [`record`] in its own transaction (so a mutation that rolls back leaves none, and one that commits
//! always has one); owners and admins read the log at `GET /v1/orgs/{orgId}/audit`, newest first, with
//! filters and cursor paging. Rows are append-only for the application; retention
//! (`AUDIT_RETENTION_DAYS`) is applied by the continuation role through a definer function.

pub mod routes;
pub mod store;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::{OrgId, UserId};
use crate::domain::common::time::iso;
use crate::platform::db::{self, DbError, PgPool};

crate::text_enum! {
    /// What was done. Named `<object>.<verb>`.
    pub enum Action {
        OrgCreate = "org.create",
        OrgSettingsUpdate = "org.settings.update",
        MemberRoleChange = "member.role.change",
        InvitationCreate = "invitation.create",
        InvitationAccept = "invitation.accept",
        SecretCreate = "secret.create",
        SecretUpdate = "secret.update",
        SecretDelete = "secret.delete",
        /// A connector secret decrypted for a run (by the worker).
        SecretDecrypt = "secret.decrypt",
        WorkflowPublish = "workflow.publish",
        AgentPairingTokenCreate = "agent.pairing_token.create",
        AgentPair = "agent.pair",
        AgentRevoke = "agent.revoke",
        AgentLabelsUpdate = "agent.labels.update",
        ApiKeyCreate = "api_key.create",
        ApiKeyRevoke = "api_key.revoke",
        SessionCreate = "session.create",
    }
}

crate::text_enum! {
    /// Who did it: a signed-in user, or the platform itself (a run's worker, a pairing agent).
    pub enum ActorType {
        User = "user",
        System = "system",
    }
}

/// One row to write.
#[derive(Debug, Clone)]
pub struct Entry {
    pub org: OrgId,
    pub actor: Option<UserId>,
    pub actor_type: ActorType,
    pub action: Action,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    /// Never a secret value: names, ids, roles, what changed.
    pub details: Value,
}

impl Entry {
    /// A user's action in an org.
    pub fn by(user: UserId, org: OrgId, action: Action, target_type: &'static str) -> Self {
        Self {
            org,
            actor: Some(user),
            actor_type: ActorType::User,
            action,
            target_type,
            target_id: None,
            details: Value::Object(Default::default()),
        }
    }

    /// The platform's own action in an org.
    pub fn system(org: OrgId, action: Action, target_type: &'static str) -> Self {
        Self {
            org,
            actor: None,
            actor_type: ActorType::System,
            action,
            target_type,
            target_id: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn target(mut self, id: impl std::fmt::Display) -> Self {
        self.target_id = Some(id.to_string());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Writes `entry` on `c`, inside the caller's transaction.
pub async fn record(c: &mut AsyncPgConnection, entry: &Entry) -> diesel::QueryResult<()> {
    store::insert(c, entry).await
}

/// A row as shown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: uuid::Uuid,
    pub organization_id: OrgId,
    pub actor_user_id: Option<UserId>,
    pub actor_type: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub details: Value,
    pub created_at: String,
}

/// What a reader asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<Action>,
    pub actor: Option<UserId>,
    pub target_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// After this `(created_at, id)`, in the newest-first order.
    pub before: Option<(DateTime<Utc>, uuid::Uuid)>,
}

pub struct Audit {
    db: PgPool,
    retention_days: u64,
}

impl Audit {
    pub fn new(db: PgPool, retention_days: u64) -> Self {
        Self { db, retention_days }
    }

    /// A page of the org's log, newest first, and the cursor of its last row when more may follow.
    pub async fn list(
        &self,
        ctx: &OrgCtx,
        filter: Filter,
    ) -> Result<(Vec<AuditView>, Option<String>), DbError> {
        let org = ctx.org_id;
        let limit = filter.limit;
        let rows = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { store::list(c, org, &filter).await.map_err(DbError::from) }.scope_boxed()
        })
        .await?;
        let next = if i64::try_from(rows.len()).unwrap_or(0) >= limit {
            rows.last()
                .map(|r| crate::domain::common::page::encode(r.created_at, r.id))
        } else {
            None
        };
        Ok((
            rows.into_iter()
                .map(|r| AuditView {
                    id: r.id,
                    organization_id: r.organization_id,
                    actor_user_id: r.actor_user_id,
                    actor_type: r.actor_type,
                    action: r.action,
                    target_type: r.target_type,
                    target_id: r.target_id,
                    details: r.details,
                    created_at: iso(r.created_at),
                })
                .collect(),
            next,
        ))
    }

    /// Deletes rows past the retention, in slices, every hour (0 days = keep forever).
    pub fn spawn_retention(
        self: std::sync::Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            if self.retention_days == 0 {
                return;
            }
            loop {
                let days = i64::try_from(self.retention_days).unwrap_or(i64::MAX / 86_400);
                let before = Utc::now() - chrono::Duration::days(days.min(365_000));
                match db::conn(&self.db).await {
                    Ok(mut c) => {
                        // Slices keep each delete short; stop when one comes back short.
                        for _ in 0..100 {
                            match store::prune(&mut c, before, 5000).await {
                                Ok(n) if n >= 5000 => continue,
                                Ok(_) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "audit retention failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "audit retention: no database"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        })
    }
}
