//! Public metadata routes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/meta/capabilities", web::get().to(capabilities))
        .route("/v1/meta/connectors", web::get().to(connectors));
}

async fn capabilities(state: web::Data<AppState>) -> HttpResponse {
    let p = state.provider.as_ref();
    HttpResponse::Ok().json(json!({
        "edition": p.edition(),
        "capabilities": super::capabilities(p),
        "provider": { "name": p.name(), "version": p.version() },
    }))
}

async fn connectors(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "connectors": super::connectors(state.provider.as_ref()) }))
}
