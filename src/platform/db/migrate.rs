//! Embedded diesel migrations, applied under a PostgreSQL advisory lock so that several instances starting
//! together do not race.

use diesel::Connection;
use diesel::RunQueryDsl;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Arbitrary constant shared by every instance: "vespid migrations".
const MIGRATION_LOCK_KEY: i64 = 0x7665_7370_6964_6d67;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Run(String),
    #[error("migration task panicked")]
    Join,
}

/// Applies pending migrations; returns the names of those applied.
pub async fn run(url: &str) -> Result<Vec<String>, MigrateError> {
    let url = url.to_string();
    // The harness is synchronous; run it on a blocking thread with the async connection wrapped.
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| MigrateError::Connect(e.to_string()))?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|e| MigrateError::Run(e.to_string()))?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.iter().map(|v| v.to_string()).collect::<Vec<_>>())
            .map_err(|e| MigrateError::Run(e.to_string()));
        // Unlock even on failure; the session ending would release it too.
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn);
        result
    })
    .await
    .map_err(|_| MigrateError::Join)?
}
