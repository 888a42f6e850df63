//! The api role: the actix-web server and its routes.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::app::state::AppState;
use crate::domain::common::access::{Authenticator, Memberships};
use crate::domain::common::extract::api_key_gate;
use crate::domain::{
    agents, apikeys, audit, auth, meta, orgs, runs, secrets, sessions, triggers, usage, workflows,
};
use crate::platform::db;
use crate::platform::http::body::BodyConfig;
use crate::platform::http::client_ip::{ForwardedHeader, TrustedProxies};
use crate::platform::http::openapi::{docs, openapi_json, OkBody, Published};
use crate::platform::http::{self, CorsOrigin};

/// All routes, for the server and for in-process tests.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/v1/openapi.json", web::get().to(openapi_json))
        .route("/docs", web::get().to(docs));
    auth::routes::configure(cfg);
    #[cfg(feature = "oidc")]
    auth::oauth::routes::configure(cfg);
    orgs::routes::configure(cfg);
    meta::routes::configure(cfg);
    secrets::routes::configure(cfg);
    runs::routes::configure(cfg);
    workflows::routes::configure(cfg);
    agents::routes::configure(cfg);
    triggers::routes::configure(cfg);
    audit::routes::configure(cfg);
    apikeys::routes::configure(cfg);
    usage::routes::configure(cfg);
    sessions::routes::configure(cfg);
}

/// Every service a handler or extractor may ask for, as app data.
fn services(state: &AppState) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let state = state.clone();
    let access = web::Data::new(state.access_config());
    // Validated when the config was loaded.
    let proxies = web::Data::new(
        TrustedProxies::parse(&state.config.server.trusted_proxies)
            .unwrap_or_default()
            .with_header(
                ForwardedHeader::parse(&state.config.server.trusted_proxy_header)
                    .unwrap_or_default(),
            ),
    );
    let body = web::Data::new(BodyConfig {
        read_timeout: Duration::from_millis(state.config.server.body_read_timeout_ms),
    });
    let authenticator: web::Data<dyn Authenticator> =
        web::Data::from(state.auth.clone() as std::sync::Arc<dyn Authenticator>);
    let memberships: web::Data<dyn Memberships> =
        web::Data::from(state.orgs.clone() as std::sync::Arc<dyn Memberships>);
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state.clone()))
            .app_data(web::Data::from(state.metrics.clone()))
            .app_data(body.clone())
            .app_data(proxies.clone())
            .app_data(access.clone())
            .app_data(authenticator.clone())
            .app_data(memberships.clone())
            .app_data(web::Data::from(state.meta.clone()))
            .app_data(web::Data::from(state.auth.clone()))
            .app_data(web::Data::from(state.orgs.clone()))
            .app_data(web::Data::from(state.secrets.clone()))
            .app_data(web::Data::from(state.workflows.clone()))
            .app_data(web::Data::from(state.runs.clone()))
            .app_data(web::Data::from(state.agents.clone()))
            .app_data(web::Data::from(state.triggers.clone()))
            .app_data(web::Data::from(state.audit.clone()))
            .app_data(web::Data::from(state.api_keys.clone()))
            .app_data(web::Data::from(state.usage.clone()))
            .app_data(web::Data::from(state.sessions.clone()));
        #[cfg(feature = "oidc")]
        cfg.app_data(web::Data::from(state.oauth.clone()));
    }
}

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "meta",
    responses((status = 200, description = "`{ok: true}`", body = OkBody))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// Readiness: PostgreSQL and Redis each answer within the configured bounds.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "meta",
    responses(
        (status = 200, description = "Both answer", body = Readiness),
        (status = 503, description = "One does not (this body, not the error envelope)", body = Readiness),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (pg, redis) = tokio::join!(db::ping(&state.db), state.redis.ping());
    let (pg_ok, redis_ok) = (pg.is_ok(), redis.is_ok());
    let body = json!({
        "ok": pg_ok && redis_ok,
        "postgres": if pg_ok { "ok" } else { "unavailable" },
        "redis": if redis_ok { "ok" } else { "unavailable" },
    });
    if pg_ok && redis_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The body of `/readyz`.
#[derive(utoipa::ToSchema)]
pub struct Readiness {
    pub ok: bool,
    /// `ok` or `unavailable`.
    pub postgres: String,
    /// `ok` or `unavailable`.
    pub redis: String,
}

pub fn server(state: AppState, listener: TcpListener) -> std::io::Result<Server> {
    // The API description, rendered once for every worker.
    let published =
        web::Data::new(Published::new(&super::openapi::document()).map_err(std::io::Error::other)?);
    let workers = state.config.server.workers;
    let grace = state.config.server.shutdown_grace_secs;
    let services = services(&state);
    let metrics = crate::platform::metrics::http::configure(state.metrics_access(false));
    // Live event streams wake on announcements from every instance.
    state.runs.listen();
    let cors = web::Data::new(CorsOrigin(
        state.config.web.base_url.trim_end_matches('/').to_string(),
    ));
    let mut server = HttpServer::new(move || {
        App::new()
            .configure(services.clone())
            .app_data(cors.clone())
            .app_data(published.clone())
            .app_data(http::query_config("Invalid query"))
            .wrap(from_fn(api_key_gate))
            .wrap(from_fn(http::edge))
            .configure(routes)
            .configure(metrics.clone())
            .default_service(web::to(http::not_found))
    })
    .on_connect(http::no_delay)
    .listen(listener)?
    .shutdown_timeout(grace)
    .client_request_timeout(Duration::from_secs(10));
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.run())
}
