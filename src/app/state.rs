//! `AppState`: what the roles share: config, the PostgreSQL pool, the Redis client, and every domain
//! service, each built here from the narrow parts it needs. This is the only place that knows them all.

use std::sync::Arc;
use std::time::Duration;

use crate::app::config::Config;
use crate::app::dev_kek;
use crate::app::remote::LocalGateway;
use crate::domain::agents::{Agents, AgentsParts};
use crate::domain::apikeys::{ApiKeys, ApiKeysParts};
use crate::domain::audit::Audit;
#[cfg(feature = "oidc")]
use crate::domain::auth::oauth::{OAuthParts, OAuthService};
use crate::domain::auth::{AuthParts, AuthService};
use crate::domain::brain::{Brain, BrainParts};
use crate::domain::common::access::AccessConfig;
use crate::domain::gateway::objects::{LocalObjects, ObjectStore, S3Objects};
use crate::domain::gateway::{Gateway, GatewayParts};
use crate::domain::inference::InferenceClient;
use crate::domain::meta::provider::{self, EnterpriseProvider};
use crate::domain::meta::Meta;
use crate::domain::orgs::{Orgs, OrgsParts};
use crate::domain::runs::continuation::ContinuationParts;
use crate::domain::runs::live::{LiveEvents, StreamLimits};
use crate::domain::runs::metrics::RunMetrics;
use crate::domain::runs::remote::{HttpDispatch, NoGateway, RemoteDispatch};
use crate::domain::runs::worker::WorkerParts;
use crate::domain::runs::{Runs, RunsParts};
use crate::domain::secrets::{Secrets, SecretsParts};
use crate::domain::sessions::client::ClientEdge;
use crate::domain::sessions::Sessions;
use crate::domain::triggers::{Triggers, TriggersParts};
use crate::domain::usage::{UsageParts, UsageService};
use crate::domain::workflows::dsl::Limits;
use crate::domain::workflows::Workflows;
use crate::platform::crypto::envelope::Keyring;
use crate::platform::db::{self, PgPool};
use crate::platform::metrics::{self, Metrics, MetricsError};
use crate::platform::queue::WorkQueue;
use crate::platform::redis::Redis;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: Redis,
    pub meta: Arc<Meta>,
    pub auth: Arc<AuthService>,
    #[cfg(feature = "oidc")]
    pub oauth: Arc<OAuthService>,
    pub orgs: Arc<Orgs>,
    pub secrets: Arc<Secrets>,
    pub workflows: Arc<Workflows>,
    pub runs: Arc<Runs>,
    pub agents: Arc<Agents>,
    pub gateway: Arc<Gateway>,
    pub triggers: Arc<Triggers>,
    pub audit: Arc<Audit>,
    /// This process's metrics registry (each in-process test app has its own).
    pub metrics: Arc<Metrics>,
    pub run_metrics: Arc<RunMetrics>,
    /// Announcements of committed run events, for live streams on every instance.
    pub live: Arc<LiveEvents>,
    pub api_keys: Arc<ApiKeys>,
    /// LLM usage: recording, the monthly budget, the usage report.
    pub usage: Arc<UsageService>,
    /// Interactive agent sessions (REST, event log, publication).
    pub sessions: Arc<Sessions>,
    /// The control-client sockets' shared state (hub, lookups, turn scheduler) of this process.
    pub session_clients: Arc<ClientEdge>,
    /// Session turns and `agent.run` nodes (run where the gateway role runs).
    pub brain: Arc<Brain>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] crate::platform::redis::RedisError),
    #[error("config key `secrets.kek_previous` (env SECRETS_KEK_PREVIOUS): {0}")]
    Keyring(String),
    #[error(transparent)]
    DevKek(#[from] dev_kek::DevKekError),
    #[error("config keys `workspace.s3_*`: {0}")]
    Workspace(String),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
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
        let mut config = config;
        dev_kek::apply(&mut config)?;
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
        let meta = Arc::new(Meta::new(provider));
        let keyring = Arc::new(
            Keyring::new(
                &config.secrets.kek_id,
                config.secrets.kek_base64.expose(),
                config.secrets.kek_previous.expose(),
            )
            .map_err(StartError::Keyring)?,
        );
        let orgs = Arc::new(Orgs::new(OrgsParts {
            config: config.orgs.clone(),
            cache_ttl: Duration::from_secs(config.auth.session_cache_ttl_secs),
            db: db.clone(),
            redis: redis.clone(),
        }));
        let api_keys = Arc::new(ApiKeys::new(ApiKeysParts {
            config: config.api_keys.clone(),
            cache_ttl: Duration::from_secs(config.auth.session_cache_ttl_secs),
            db: db.clone(),
            redis: redis.clone(),
        }));
        let auth = Arc::new(AuthService::new(AuthParts {
            config: config.auth.clone(),
            secure_cookies: config.cookie_secure(),
            db: db.clone(),
            redis: redis.clone(),
            orgs: orgs.clone(),
            api_keys: api_keys.clone(),
        }));
        let secrets = Arc::new(Secrets::new(SecretsParts {
            db: db.clone(),
            keyring,
            allowed_connectors: meta.allowed_secret_connectors(),
        }));
        let metrics = Metrics::new()?;
        metrics::infra::watch_pool(&metrics, &db)?;
        metrics::infra::watch_redis(&metrics, &redis)?;
        let run_metrics = RunMetrics::register(
            &metrics,
            Self::work_queue(&config, &redis),
            config.metrics.queue_top_orgs,
        )?;
        let live = LiveEvents::new(
            redis.clone(),
            StreamLimits {
                per_process: config.workflows.events_stream_max,
                per_org: config.workflows.events_stream_max_per_org,
                fallback_poll: Duration::from_millis(config.workflows.events_stream_poll_ms),
            },
        );
        let runs = Arc::new(Runs::new(RunsParts {
            db: db.clone(),
            queue: Self::work_queue(&config, &redis),
            enqueue_timeout: Duration::from_millis(config.workflows.enqueue_timeout_ms),
            retry_attempts: config.workflows.retry_attempts,
            live: live.clone(),
        }));
        let triggers = Arc::new(Triggers::new(TriggersParts {
            config: Arc::new(config.triggers.clone()),
            db: db.clone(),
            redis: redis.clone(),
            queue: Self::work_queue(&config, &redis),
            retry_attempts: config.workflows.retry_attempts,
            enqueue_timeout: Duration::from_millis(config.workflows.enqueue_timeout_ms),
        }));
        let audit = Arc::new(Audit::new(db.clone(), config.audit.retention_days));
        let usage = Arc::new(UsageService::new(UsageParts {
            db: db.clone(),
            orgs: orgs.clone(),
        }));
        let agents = Arc::new(Agents::new(AgentsParts {
            config: config.agents.clone(),
            db: db.clone(),
            redis: redis.clone(),
        }));
        let gateway = Arc::new(Gateway::new(GatewayParts {
            config: config.gateway.clone(),
            agents: agents.clone(),
            orgs: orgs.clone(),
            redis: redis.clone(),
            db: db.clone(),
            objects: object_store(&config)?,
        }));
        crate::domain::gateway::metrics::register(&metrics, gateway.clone())?;
        let sessions = Arc::new(Sessions::new(db.clone(), redis.clone(), secrets.clone()));
        let session_clients = Arc::new(
            ClientEdge::new(sessions.clone(), auth.clone(), orgs.clone())
                .with_recheck(Duration::from_millis(config.sessions.client_recheck_ms)),
        );
        let brain = Brain::new(BrainParts {
            config: config.brain.clone(),
            inference: Arc::new(InferenceClient::new(config.inference.clone())),
            inference_config: config.inference.clone(),
            sessions: sessions.clone(),
            usage: usage.clone(),
            gateway: gateway.clone(),
            secrets: secrets.clone(),
            orgs: orgs.clone(),
            runs: runs.clone(),
            redis: redis.clone(),
            metrics: metrics.clone(),
        })?;
        // The brain runs `agent.run` dispatches and answers what control clients send.
        gateway.set_agent_runner(brain.clone());
        session_clients.set_scheduler(brain.clone());
        Ok(Self {
            #[cfg(feature = "oidc")]
            oauth: Arc::new(OAuthService::new(OAuthParts {
                config: config.oauth.clone(),
                state_secret: config.auth.oauth_state_secret.clone(),
                context_ttl_secs: config.auth.oauth_context_ttl_secs,
                web_base_url: config.web.base_url.clone(),
                db: db.clone(),
            })),
            workflows: Arc::new(Workflows::new(
                db.clone(),
                Limits {
                    max_nodes: config.workflows.dsl_max_nodes,
                    max_edges: config.workflows.dsl_max_edges,
                    max_bytes: config.workflows.dsl_max_bytes,
                },
            )),
            config,
            db,
            redis,
            meta,
            auth,
            orgs,
            secrets,
            runs,
            agents,
            gateway,
            triggers,
            audit,
            metrics,
            run_metrics,
            live,
            api_keys,
            usage,
            sessions,
            session_clients,
            brain,
        })
    }

    /// Who may scrape `/metrics` on a listener (`dedicated`: the `METRICS_ADDR` one).
    pub fn metrics_access(&self, dedicated: bool) -> metrics::http::MetricsAccess {
        metrics::http::MetricsAccess {
            token: self.config.metrics.token.clone(),
            dedicated,
        }
    }

    fn work_queue(config: &Config, redis: &Redis) -> WorkQueue {
        WorkQueue::new(redis, &config.workflows.queue_name)
    }

    /// What the request extractors need to know (cookie name, web origin, org-context enforcement).
    pub fn access_config(&self) -> AccessConfig {
        AccessConfig {
            session_cookie_name: self.config.auth.session_cookie_name.clone(),
            web_origin: self.config.web.base_url.clone(),
            enforcement: self.config.orgs.context_enforcement,
        }
    }

    /// Where this process's worker dispatches remote nodes: the gateway at `GATEWAY_HTTP_URL` when one
    /// is configured, else the gateway service in this process (it reaches executors connected to any
    /// gateway instance through Redis, and listens for their replies).
    pub fn remote_dispatch(&self) -> Result<Arc<dyn RemoteDispatch>, reqwest::Error> {
        let url = &self.config.workflows.gateway_http_url;
        if url.is_empty() {
            self.gateway.listen();
            return Ok(Arc::new(LocalGateway(self.gateway.clone())));
        }
        Ok(Arc::new(HttpDispatch::new(
            url,
            self.config.gateway.service_token.clone(),
        )?))
    }

    /// What the continuation role is built from.
    pub fn continuation_parts(&self) -> ContinuationParts {
        ContinuationParts {
            config: Arc::new(self.config.workflows.clone()),
            db: self.db.clone(),
            redis: self.redis.clone(),
            queue: Self::work_queue(&self.config, &self.redis),
            live: self.live.clone(),
        }
    }

    /// What a run worker is built from.
    pub fn worker_parts(&self) -> WorkerParts {
        WorkerParts {
            config: Arc::new(self.config.workflows.clone()),
            shutdown_grace: Duration::from_secs(self.config.server.shutdown_grace_secs),
            db: self.db.clone(),
            queue: Self::work_queue(&self.config, &self.redis),
            orgs: self.orgs.clone(),
            secrets: self.secrets.clone(),
            remote: self
                .remote_dispatch()
                .unwrap_or_else(|_| Arc::new(NoGateway)),
            metrics: self.run_metrics.clone(),
            live: self.live.clone(),
        }
    }
}

/// The workspace snapshot store: S3 when `WORKSPACE_S3_BUCKET` is set, else the local directory.
fn object_store(config: &Config) -> Result<ObjectStore, StartError> {
    let w = &config.workspace;
    let expires = Duration::from_secs(w.presign_expires_secs);
    if !w.s3_bucket.is_empty() {
        let s3 = S3Objects::new(
            &w.s3_bucket,
            &w.s3_region,
            &w.s3_endpoint,
            &w.s3_access_key_id,
            w.s3_secret_access_key.expose(),
            expires,
        )
        .map_err(|e| StartError::Workspace(e.to_string()))?;
        return Ok(ObjectStore::S3(s3));
    }
    Ok(ObjectStore::Local(LocalObjects::new(
        std::path::PathBuf::from(&w.dir),
        workspace_public_url(config),
        config.gateway.service_token.expose().as_bytes(),
        expires,
        w.max_bytes,
    )))
}

/// Where executors reach the gateway over HTTP: configured, or the pair response's WebSocket URL with its
/// scheme made HTTP and its path dropped.
fn workspace_public_url(config: &Config) -> String {
    if !config.workspace.public_url.is_empty() {
        return config.workspace.public_url.clone();
    }
    match url::Url::parse(&config.agents.gateway_ws_url) {
        Ok(mut u) => {
            let scheme = if u.scheme() == "wss" { "https" } else { "http" };
            let _ = u.set_scheme(scheme);
            u.set_path("");
            u.set_query(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => format!("http://localhost:{}", config.gateway.port),
    }
}
