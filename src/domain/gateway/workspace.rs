//! Execution workspaces (gateway spec 2.8 steps 2-3 and 9): the row of a run's (or session's) workspace,
//! the lock a tool call holds on it (with an expiry, so a dead gateway cannot hold it forever), and the
//! compare-and-set commit of the version an executor uploaded. Every query runs under the org's context
//! (strict RLS).

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::domain::common::ids::OrgId;
use crate::platform::db::schema::execution_workspaces as ew;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};

crate::text_enum! {
    /// Whose files a workspace holds.
    pub enum OwnerType {
        WorkflowRun = "workflow_run",
        Session = "session",
    }
}

/// A locked workspace, as a tool call sees it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: Uuid,
    pub org: OrgId,
    pub version: i64,
    /// `""` until a first version is committed.
    pub object_key: String,
    pub etag: Option<String>,
    token: String,
}

impl Lease {
    /// Where the next version goes.
    pub fn next_key(&self) -> String {
        format!(
            "workspaces/{}/{}/v{}.tar.zst",
            self.org,
            self.id,
            self.version + 1
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("WORKSPACE_LOCKED")]
    Locked,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for WorkspaceError {
    fn from(e: diesel::result::Error) -> Self {
        WorkspaceError::Db(e.into())
    }
}

/// Gets (or creates) the owner's workspace and locks it for `lock_secs`; `Locked` while another tool
/// call holds an unexpired lock.
pub async fn acquire(
    pool: &PgPool,
    org: OrgId,
    owner_type: OwnerType,
    owner_id: Uuid,
    lock_secs: i64,
) -> Result<Lease, WorkspaceError> {
    let token = crate::platform::crypto::random_token(16);
    db::tenant_tx(pool, TenantCtx::org(org), |c| {
        async move {
            diesel::insert_into(ew::table)
                .values((
                    ew::organization_id.eq(org),
                    ew::owner_type.eq(owner_type.as_str()),
                    ew::owner_id.eq(owner_id),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            let now = Utc::now();
            let locked: Option<(Uuid, i64, String, Option<String>)> = diesel::update(
                ew::table
                    .filter(ew::organization_id.eq(org))
                    .filter(ew::owner_type.eq(owner_type.as_str()))
                    .filter(ew::owner_id.eq(owner_id))
                    .filter(
                        ew::lock_expires_at
                            .is_null()
                            .or(ew::lock_expires_at.lt(now)),
                    ),
            )
            .set((
                ew::lock_token.eq(Some(&token)),
                ew::lock_expires_at.eq(Some(now + chrono::Duration::seconds(lock_secs))),
                ew::updated_at.eq(now),
            ))
            .returning((
                ew::id,
                ew::current_version,
                ew::current_object_key,
                ew::current_etag,
            ))
            .get_result(c)
            .await
            .optional()?;
            let (id, version, object_key, etag) = locked.ok_or(WorkspaceError::Locked)?;
            Ok(Lease {
                id,
                org,
                version,
                object_key,
                etag,
                token: token.clone(),
            })
        }
        .scope_boxed()
    })
    .await
}

/// Commits the version the executor uploaded and releases the lock, if the workspace is still at the
/// leased version and still ours (compare-and-set); `false` = `WORKSPACE_VERSION_CONFLICT`.
pub async fn commit(
    pool: &PgPool,
    lease: &Lease,
    object_key: &str,
    etag: Option<&str>,
) -> Result<bool, DbError> {
    let (id, version, token) = (lease.id, lease.version, lease.token.clone());
    db::tenant_tx(pool, TenantCtx::org(lease.org), |c| {
        async move {
            let n = diesel::update(
                ew::table
                    .filter(ew::id.eq(id))
                    .filter(ew::current_version.eq(version))
                    .filter(ew::lock_token.eq(&token)),
            )
            .set((
                ew::current_version.eq(version + 1),
                ew::current_object_key.eq(object_key),
                ew::current_etag.eq(etag),
                ew::lock_token.eq(None::<String>),
                ew::lock_expires_at.eq(None::<chrono::DateTime<Utc>>),
                ew::updated_at.eq(Utc::now()),
            ))
            .execute(c)
            .await
            .map_err(DbError::from)?;
            Ok(n == 1)
        }
        .scope_boxed()
    })
    .await
}

/// Releases the lock without a new version (the call failed, timed out, or brought no snapshot).
pub async fn release(pool: &PgPool, lease: &Lease) {
    let (id, token) = (lease.id, lease.token.clone());
    let done = db::tenant_tx(pool, TenantCtx::org(lease.org), |c| {
        async move {
            diesel::update(
                ew::table
                    .filter(ew::id.eq(id))
                    .filter(ew::lock_token.eq(&token)),
            )
            .set((
                ew::lock_token.eq(None::<String>),
                ew::lock_expires_at.eq(None::<chrono::DateTime<Utc>>),
            ))
            .execute(c)
            .await
            .map_err(DbError::from)
        }
        .scope_boxed()
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(workspace_id = %id, error = %e, "workspace lock not released (it expires)");
    }
}
