//! The gateway role: the executor WebSocket edge, the control clients' `/ws/client`, and the internal dispatch routes on their own listener
//! (`GATEWAY_HOST`/`GATEWAY_PORT`), so that only `/ws/*` needs exposing; and the listeners that close
//! revoked executors' sockets and carry tool calls and replies between instances.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::app::state::AppState;
use crate::domain::{gateway, sessions};
use crate::platform::http;

/// The gateway's HTTP server. Signals are handled by `serve`, which stops it with the other roles.
pub fn server(state: &AppState, listener: TcpListener) -> std::io::Result<Server> {
    state.gateway.listen();
    state.session_clients.listen();
    state.brain.spawn_sweeper();
    let data = web::Data::from(state.gateway.clone());
    let clients = web::Data::from(state.session_clients.clone());
    let grace = state.config.server.shutdown_grace_secs;
    let metrics = web::Data::from(state.metrics.clone());
    let scrape = crate::platform::metrics::http::configure(state.metrics_access(false));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(clients.clone())
            .app_data(metrics.clone())
            // Dispatch bodies up to 1 MiB (the original's limit).
            .app_data(web::PayloadConfig::new(1 << 20))
            .wrap(from_fn(http::edge))
            .configure(gateway::routes::configure)
            .configure(sessions::socket_routes::configure)
            .configure(scrape.clone())
            .default_service(web::to(http::not_found))
    })
    .on_connect(http::no_delay)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(grace)
    .client_request_timeout(Duration::from_secs(10));
    Ok(server.run())
}
