//! Public metadata routes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::Meta;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/meta/capabilities", web::get().to(capabilities))
        .route("/v1/meta/connectors", web::get().to(connectors));
}

async fn capabilities(meta: web::Data<Meta>) -> HttpResponse {
    let p = meta.provider();
    HttpResponse::Ok().json(json!({
        "edition": p.edition(),
        "capabilities": meta.capabilities(),
        "provider": { "name": p.name(), "version": p.version() },
    }))
}

async fn connectors(meta: web::Data<Meta>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "connectors": meta.connectors() }))
}
