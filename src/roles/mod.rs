//! Roles wire components; they hold no logic. `--role=all` = api, worker, continuation, gateway.

pub mod api;
pub mod background;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod role;

use std::net::TcpListener;

use crate::app::config::Config;
use crate::app::state::{AppState, StartError};
use crate::platform::db::migrate;
pub use role::{Role, Roles};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Server(std::io::Error),
    #[error("stored connector secrets use KEK id(s) {0} that the keyring does not have: set SECRETS_KEK_ID/SECRETS_KEK_BASE64 (and SECRETS_KEK_PREVIOUS while rotating)")]
    MissingKek(String),
    #[error("cannot check stored secrets' keys: {0}")]
    KekCheck(String),
    #[error("secret rotation: {0}")]
    Rotate(String),
    #[error(transparent)]
    Background(#[from] background::BackgroundError),
}

/// Refuses to run with a keyring that cannot decrypt the secrets already stored.
async fn check_keyring(state: &AppState) -> Result<(), ServeError> {
    let unknown = state
        .secrets
        .unknown_keks()
        .await
        .map_err(|e| ServeError::KekCheck(e.to_string()))?;
    if !unknown.is_empty() {
        return Err(ServeError::MissingKek(unknown.join(", ")));
    }
    if let Some(e) = state.secrets.not_configured_reason() {
        tracing::warn!(
            reason = e,
            "no usable secrets KEK: secret writes answer 503 SECRETS_NOT_CONFIGURED"
        );
    }
    Ok(())
}

/// `vespid secrets rotate`.
pub async fn rotate_secrets(config: Config) -> Result<(), ServeError> {
    let owner_url = if config.database.migrate_url.is_empty() {
        config.database.url.expose().to_string()
    } else {
        config.database.migrate_url.expose().to_string()
    };
    let state = AppState::build(config, None).await?;
    let owner = crate::platform::db::build_pool(&owner_url, 1, std::time::Duration::from_secs(5))
        .map_err(|e| ServeError::Rotate(e.to_string()))?;
    let report = state
        .secrets
        .rotate_all(&owner)
        .await
        .map_err(|e| ServeError::Rotate(e.to_string()))?;
    println!(
        "re-wrapped {} secret(s) in {} org(s); {} failed",
        report.rewrapped, report.orgs, report.failed
    );
    state.redis.quit().await;
    if report.failed > 0 {
        return Err(ServeError::Rotate(format!(
            "{} secret(s) could not be re-wrapped",
            report.failed
        )));
    }
    Ok(())
}

/// Runs the selected roles until SIGINT/SIGTERM.
pub async fn serve(config: Config, roles: Roles, run_migrations: bool) -> Result<(), ServeError> {
    if run_migrations {
        let url = if config.database.migrate_url.is_empty() {
            config.database.url.expose().to_string()
        } else {
            config.database.migrate_url.expose().to_string()
        };
        let applied = migrate::run(&url).await?;
        tracing::info!(applied = applied.len(), "migrations applied");
    }
    let names: Vec<&str> = roles.0.iter().map(|r| r.name()).collect();
    tracing::info!(roles = %names.join(","), version = env!("CARGO_PKG_VERSION"), "vespid starting");
    let state = AppState::build(config, None).await?;
    check_keyring(&state).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = Vec::new();
    for role in &roles.0 {
        if !matches!(*role, Role::Api | Role::Gateway) {
            background.push(background::spawn(*role, state.clone(), stop_rx.clone())?);
        }
    }
    let gateway = if roles.0.contains(&Role::Gateway) {
        let addr = format!(
            "{}:{}",
            state.config.gateway.host, state.config.gateway.port
        );
        let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
        let bound = listener.local_addr().map_or(addr, |a| a.to_string());
        tracing::info!(addr = %bound, edge_id = state.gateway.edge_id(), "gateway listening");
        let server = gateway::server(&state, listener).map_err(ServeError::Server)?;
        let handle = server.handle();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "gateway server failed");
            }
        });
        Some(handle)
    } else {
        None
    };
    let metrics = if state.config.metrics.addr.is_empty() {
        None
    } else {
        let addr = state.config.metrics.addr.clone();
        let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
        tracing::info!(%addr, "metrics listening");
        let server = metrics::server(&state, listener).map_err(ServeError::Server)?;
        let handle = server.handle();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
        Some(handle)
    };
    if roles.0.contains(&Role::Api) {
        let addr = format!("{}:{}", state.config.server.host, state.config.server.port);
        let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
        tracing::info!(%addr, "api listening");
        // actix handles SIGINT/SIGTERM itself: stops accepting, drains in-flight requests, then returns.
        api::server(state.clone(), listener)
            .map_err(ServeError::Server)?
            .await
            .map_err(ServeError::Server)?;
    } else {
        crate::app::shutdown::signal().await;
    }
    tracing::info!("shutting down");
    if let Some(handle) = metrics {
        handle.stop(true).await;
    }
    if let Some(handle) = gateway {
        // Executor sockets never end by themselves: close them, then stop the server gracefully.
        state
            .gateway
            .close_all(crate::domain::gateway::CloseWhy::Shutdown);
        handle.stop(true).await;
    }
    // Background roles stop taking work and hand back what they hold, within the grace period.
    let _ = stop_tx.send(true);
    let grace = std::time::Duration::from_secs(state.config.server.shutdown_grace_secs + 2);
    for handle in background {
        let abort = handle.abort_handle();
        if tokio::time::timeout(grace, handle).await.is_err() {
            abort.abort();
        }
    }
    state.redis.quit().await;
    Ok(())
}
