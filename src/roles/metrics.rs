//! The `METRICS_ADDR` listener: `/metrics` alone, for a private network, whatever roles the process runs
//! (a worker-only process has no other listener to be scraped on).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::app::state::AppState;
use crate::platform::http;
use crate::platform::metrics::http::configure;

/// Stopped by `serve` with the other servers.
pub fn server(state: &AppState, listener: TcpListener) -> std::io::Result<Server> {
    let metrics = web::Data::from(state.metrics.clone());
    let scrape = configure(state.metrics_access(true));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .wrap(from_fn(http::edge))
            .configure(scrape.clone())
            .default_service(web::to(http::not_found))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .client_request_timeout(Duration::from_secs(10));
    Ok(server.run())
}
