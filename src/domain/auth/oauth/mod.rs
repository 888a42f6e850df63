//! OAuth sign-in (Google OIDC, GitHub OAuth2). Placeholder until the OAuth work lands.

pub mod routes;

use std::sync::Arc;

use crate::app::config::Config;
use crate::platform::db::PgPool;

pub struct OAuthService {
    #[allow(dead_code)]
    config: Arc<Config>,
    #[allow(dead_code)]
    db: PgPool,
}

impl OAuthService {
    pub fn new(config: Arc<Config>, db: PgPool) -> Self {
        Self { config, db }
    }
}
