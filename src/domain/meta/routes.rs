//! Public metadata routes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{CatalogEntry, Meta};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/meta/capabilities", web::get().to(capabilities))
        .route("/v1/meta/connectors", web::get().to(connectors));
}

/// The edition, its capabilities and the enterprise provider in use. Public.
#[utoipa::path(
    get, path = "/v1/meta/capabilities", operation_id = "getCapabilities", tag = "meta",
    responses((status = 200, description = "Capabilities", body = CapabilitiesBody))
)]
async fn capabilities(meta: web::Data<Meta>) -> HttpResponse {
    let p = meta.provider();
    HttpResponse::Ok().json(json!({
        "edition": p.edition(),
        "capabilities": meta.capabilities(),
        "provider": { "name": p.name(), "version": p.version() },
    }))
}

/// The connector catalog. Public.
#[utoipa::path(
    get, path = "/v1/meta/connectors", operation_id = "listConnectors", tag = "meta",
    responses((status = 200, description = "Connectors", body = ConnectorList))
)]
async fn connectors(meta: web::Data<Meta>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "connectors": meta.connectors() }))
}

// Wire shapes of this module's bodies, for the OpenAPI document (the handlers build them with `json!`).

#[derive(utoipa::ToSchema)]
pub struct CapabilitiesBody {
    pub edition: String,
    pub capabilities: Vec<String>,
    pub provider: ProviderInfo,
}

#[derive(utoipa::ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    /// `null` when the provider has none (the community edition).
    pub version: Option<String>,
}

#[derive(utoipa::ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<CatalogEntry>,
}
