//! `AppState`: what every role shares: config, PostgreSQL pool, Redis client and the domain services.

use std::sync::Arc;
use std::time::Duration;

use crate::app::config::Config;
use crate::domain::auth::AuthService;
use crate::domain::meta::provider::{self, EnterpriseProvider};
use crate::domain::runs::intake::RunIntake;
use crate::platform::crypto::envelope::Keyring;
use crate::platform::db::{self, PgPool};
use crate::platform::queue::WorkQueue;
use crate::platform::redis::Redis;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: Redis,
    pub auth: Arc<AuthService>,
    pub provider: Arc<dyn EnterpriseProvider>,
    pub secrets: Arc<Keyring>,
    /// Run creation (group commit; see `domain::runs::intake`).
    pub runs: RunIntake,
    #[cfg(feature = "oidc")]
    pub oauth: Arc<crate::domain::auth::oauth::OAuthService>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] crate::platform::redis::RedisError),
    #[error("config key `secrets.kek_previous` (env SECRETS_KEK_PREVIOUS): {0}")]
    Keyring(String),
    #[error("the application database role `{0}` bypasses row-level security (superuser or BYPASSRLS); production refuses it")]
    RlsBypass(String),
}

impl AppState {
    /// Connects to PostgreSQL and Redis and builds the services. `provider` overrides the configured one
    /// (tests inject an enterprise provider this way).
    pub async fn build(
        config: Config,
        provider: Option<Arc<dyn EnterpriseProvider>>,
    ) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let wait = Duration::from_millis(config.database.connect_timeout_ms);
        let db = db::build_pool(
            config.database.url.expose(),
            config.database.pool_size,
            wait,
        )?;
        match db::current_role_facts(&db).await {
            Ok(f) if f.rolsuper || f.rolbypassrls => {
                tracing::error!(role = %f.rolname, "application database role bypasses row-level security");
                if config.is_production() {
                    return Err(StartError::RlsBypass(f.rolname));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not check the application database role"),
        }
        let redis = Redis::connect(
            config.redis.url.expose(),
            &config.redis.key_prefix,
            Duration::from_millis(config.redis.timeout_ms),
        )
        .await?;
        let provider =
            provider.unwrap_or_else(|| provider::load(&config.enterprise.provider_module));
        let secrets = Arc::new(
            Keyring::new(
                &config.secrets.kek_id,
                config.secrets.kek_base64.expose(),
                config.secrets.kek_previous.expose(),
            )
            .map_err(StartError::Keyring)?,
        );
        let auth = Arc::new(AuthService::new(config.clone(), db.clone(), redis.clone()));
        let runs = RunIntake::spawn(
            db.clone(),
            WorkQueue::new(&redis, &config.workflows.queue_name),
            Duration::from_millis(config.workflows.enqueue_timeout_ms),
        );
        Ok(Self {
            runs,
            #[cfg(feature = "oidc")]
            oauth: Arc::new(crate::domain::auth::oauth::OAuthService::new(
                config.clone(),
                db.clone(),
            )),
            config,
            db,
            redis,
            auth,
            provider,
            secrets,
        })
    }
}
