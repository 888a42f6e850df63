//! PostgreSQL access: the application pool, the tenant-context transaction helper and embedded migrations.

pub mod migrate;
pub mod schema;
pub mod text_enum;

use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::scoped_futures::ScopedBoxFuture;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use uuid::Uuid;

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn = Object<AsyncPgConnection>;

/// Failures of the database layer that callers map to HTTP (503 for "cannot reach the database").
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

impl DbError {
    /// True when the error means "try again later" rather than "this request is wrong".
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                _,
            )) => true,
            DbError::Query(diesel::result::Error::DatabaseError(_, info)) => {
                // Admin shutdown / connection failure states surface as "unable to send" or similar.
                info.message().contains("connection closed")
            }
            _ => false,
        }
    }
}

pub fn build_pool(url: &str, size: usize, wait_timeout: Duration) -> Result<PgPool, DbError> {
    let mut config = ManagerConfig::default();
    // `Fast` skips a round trip per checkout; a dead connection is detected on use and dropped.
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait_timeout))
        .create_timeout(Some(wait_timeout))
        .recycle_timeout(Some(wait_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

pub async fn conn(pool: &PgPool) -> Result<PgConn, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// The row-level-security context of one transaction. It cannot be empty: code that would query tenant
/// tables without a context cannot build one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantCtx {
    user: Option<Uuid>,
    org: Option<Uuid>,
}

impl TenantCtx {
    /// User-scoped work: own sessions, own memberships and orgs (discovery).
    pub fn user(user: impl Into<Uuid>) -> Self {
        Self {
            user: Some(user.into()),
            org: None,
        }
    }
    /// Org-scoped work by a background role (worker, gateway) acting for the org.
    pub fn org(org: impl Into<Uuid>) -> Self {
        Self {
            user: None,
            org: Some(org.into()),
        }
    }
    /// A user acting inside one org.
    pub fn user_org(user: impl Into<Uuid>, org: impl Into<Uuid>) -> Self {
        Self {
            user: Some(user.into()),
            org: Some(org.into()),
        }
    }
}

/// Sets the transaction-local RLS context (`set_config(…, true)`), so pooled connections never leak it.
/// Inside [`tenant_tx`] it may be called again to switch context within the same transaction.
pub async fn set_context(conn: &mut AsyncPgConnection, ctx: TenantCtx) -> diesel::QueryResult<()> {
    let user = ctx.user.map(|u| u.to_string()).unwrap_or_default();
    let org = ctx.org.map(|o| o.to_string()).unwrap_or_default();
    diesel::sql_query(
        "SELECT set_config('app.current_user_id', $1, true), set_config('app.current_org_id', $2, true)",
    )
    .bind::<Text, _>(user)
    .bind::<Text, _>(org)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Runs `f` in one transaction with the tenant context set first. The only way domain code touches
/// tenant tables.
pub async fn tenant_tx<'a, R, E, F>(pool: &PgPool, ctx: TenantCtx, f: F) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<R, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<DbError> + Send + 'a,
    R: Send + 'a,
{
    let mut tx = OpenTx::begin(pool, ctx).await?;
    match f(tx.conn()).await {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            tx.rollback().await;
            Err(e)
        }
    }
}

/// A tenant transaction kept open across several steps, for work that wants one commit where it would
/// otherwise need several. Dropping it without [`OpenTx::commit`] leaves the connection marked as inside a
/// transaction, so the pool discards it and PostgreSQL rolls the work back.
pub struct OpenTx {
    conn: PgConn,
}

impl OpenTx {
    pub async fn begin(pool: &PgPool, ctx: TenantCtx) -> Result<Self, DbError> {
        let mut conn = conn(pool).await?;
        // BEGIN and the context travel in one round trip. The ids are UUIDs formatted by `uuid` (hex and
        // dashes only), so inlining them cannot inject SQL. The transaction manager tracks the depth and
        // marks BEGIN/COMMIT/ROLLBACK in flight, so a future dropped mid-way (a client that went away) leaves
        // the connection marked broken and the pool discards it instead of handing it on (see the test
        // `rls::a_transaction_cancelled_midway_never_reaches_the_next_caller`).
        let sql = format!(
            "BEGIN; SELECT set_config('app.current_user_id', '{}', true), set_config('app.current_org_id', '{}', true)",
            ctx.user.map(|u| u.to_string()).unwrap_or_default(),
            ctx.org.map(|o| o.to_string()).unwrap_or_default(),
        );
        AnsiTransactionManager::begin_transaction_sql(&mut *conn, &sql).await?;
        Ok(Self { conn })
    }

    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        AnsiTransactionManager::commit_transaction(&mut *self.conn).await?;
        Ok(())
    }

    /// A failed rollback leaves the manager broken; the pool then drops the connection.
    pub async fn rollback(mut self) {
        let _ = AnsiTransactionManager::rollback_transaction(&mut *self.conn).await;
    }
}

/// For tables without RLS (`users`, `oauth_states`): a plain pooled connection.
pub async fn plain<'a, R, E, F>(pool: &PgPool, f: F) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<R, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<DbError> + Send + 'a,
    R: Send + 'a,
{
    let mut conn = conn(pool).await?;
    f(&mut conn).await
}

/// What the app role may do, read from the catalog: start-up refuses a role that bypasses RLS.
#[derive(Debug, diesel::QueryableByName)]
pub struct RoleFacts {
    #[diesel(sql_type = Text)]
    pub rolname: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub rolsuper: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub rolbypassrls: bool,
}

pub async fn current_role_facts(pool: &PgPool) -> Result<RoleFacts, DbError> {
    let mut conn = conn(pool).await?;
    let facts = diesel::sql_query(
        "SELECT rolname::text AS rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .get_result::<RoleFacts>(&mut conn)
    .await?;
    Ok(facts)
}

pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = conn(pool).await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
