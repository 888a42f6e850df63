//! API keys for REST clients and CI jobs: owners and admins create org-scoped keys with scopes and an
//! optional expiry, see them listed by prefix, and revoke them at once on every instance. A key is shown
//! once; only its SHA-256 is stored. Authenticating a key (the auth service asks, per request) reads an
//! in-memory cache invalidated over Redis, and notes the use for a batched last-used write.
//!
//! A key acts inside its org as the member who created it, at the lowest of: the role its scopes call
//! for, that member's role when the key was created, and that member's current role (the org context
//! applies the last one). Its scopes are checked against the access table on every route.

pub mod cache;
pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod store;
pub mod usage;

use crate::domain::audit::{self, Action, Entry};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;

use crate::domain::common::access::{KeyGrant, KeyRefusal, LookupError, OrgCtx, Principal};
use crate::domain::common::ids::{ApiKeyId, OrgId, SessionId};
use crate::domain::common::scope::Scopes;
use crate::platform::crypto;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};
use crate::platform::redis::Redis;
use cache::{KeyCache, KeyRecord};
use config::ApiKeysConfig;
pub use error::ApiKeyError;
use model::{ApiKeyRow, CreatedKey, NewApiKey};
use usage::LastUsed;

/// What the API keys service is built from.
pub struct ApiKeysParts {
    pub config: ApiKeysConfig,
    /// How long a key is served from memory between checks (revocations do not wait for it).
    pub cache_ttl: Duration,
    pub db: PgPool,
    pub redis: Redis,
}

pub struct ApiKeys {
    db: PgPool,
    redis: Redis,
    cache: Arc<KeyCache>,
    last_used: Arc<LastUsed>,
}

impl ApiKeys {
    /// Builds the service and starts its cache listener and last-used flusher.
    pub fn new(parts: ApiKeysParts) -> Self {
        let cache = KeyCache::new(parts.cache_ttl);
        cache.spawn_listener(&parts.redis);
        let last_used = Arc::new(LastUsed::default());
        last_used.spawn_flusher(
            parts.db.clone(),
            Duration::from_secs(parts.config.last_used_flush_secs.max(1)),
        );
        Self {
            db: parts.db,
            redis: parts.redis,
            cache,
            last_used,
        }
    }

    /// A new key of the caller's org. The caller's role is recorded as the most the key may ever act as;
    /// scopes that need more than the caller has are refused.
    pub async fn create(&self, ctx: &OrgCtx, new: NewApiKey) -> Result<CreatedKey, ApiKeyError> {
        ctx.require(
            new.scopes.role(),
            "Role is not allowed to grant these scopes",
        )?;
        let (org, user, role) = (ctx.org_id, ctx.user.user_id, ctx.role);
        let id = ApiKeyId::random();
        let key = model::new_key(org, id);
        let prefix = model::prefix(org, id);
        let hash = model::key_hash(&key);
        let scopes: Vec<String> = new.scopes.iter().map(|s| s.as_str().to_string()).collect();
        let row = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let row = store::insert(
                    c,
                    store::NewKeyRow {
                        id,
                        org,
                        name: &new.name,
                        prefix: &prefix,
                        secret_hash: &hash,
                        scopes: &scopes,
                        creator_role: role,
                        by_user: user,
                        expires_at: new.expires_at,
                    },
                )
                .await?;
                let entry = Entry::by(user, org, Action::ApiKeyCreate, "api_key")
                    .target(id)
                    .details(
                        serde_json::json!({"name": new.name, "prefix": prefix, "scopes": scopes}),
                    );
                audit::record(c, &entry).await?;
                Ok::<_, ApiKeyError>(row)
            }
            .scope_boxed()
        })
        .await?;
        tracing::info!(org_id = %org, api_key_id = %id, user_id = %user, "API key created");
        Ok(CreatedKey { row, key })
    }

    /// The org's keys, newest first.
    pub async fn list(&self, ctx: &OrgCtx) -> Result<Vec<ApiKeyRow>, ApiKeyError> {
        let org = ctx.org_id;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { store::list(c, org).await.map_err(ApiKeyError::from) }.scope_boxed()
        })
        .await
    }

    /// Revokes the key now, here and (over Redis) on every other instance.
    pub async fn revoke(&self, ctx: &OrgCtx, id: ApiKeyId) -> Result<(), ApiKeyError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        let found = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                // Revoking a revoked key changes nothing and is not recorded again.
                let before = store::for_auth(c, org, id).await?;
                let found = store::revoke(c, org, id).await?;
                if found && before.is_some_and(|k| k.revoked_at.is_none()) {
                    let entry = Entry::by(user, org, Action::ApiKeyRevoke, "api_key").target(id);
                    audit::record(c, &entry).await?;
                }
                Ok::<_, ApiKeyError>(found)
            }
            .scope_boxed()
        })
        .await?;
        if !found {
            return Err(ApiKeyError::NotFound);
        }
        self.cache.invalidate(&self.redis, id).await;
        tracing::info!(org_id = %org, api_key_id = %id, user_id = %ctx.user.user_id, "API key revoked");
        Ok(())
    }

    /// The caller a presented key stands for: refused when it is malformed, unknown, does not match
    /// (constant-time), is revoked or has expired.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, LookupError> {
        let (org, id) = model::parse(key).ok_or(KeyRefusal::Invalid)?;
        let presented = crypto::sha256(key.as_bytes());
        let record = match self.cache.get(id) {
            Some((record, false)) => record,
            _ => match self.load(org, id).await? {
                Some((record, epoch)) => {
                    self.cache.put(id, record.clone(), epoch);
                    record
                }
                None => return Err(KeyRefusal::Invalid.into()),
            },
        };
        if record.org != org || !crypto::ct_eq(&presented, &record.digest) {
            return Err(KeyRefusal::Invalid.into());
        }
        if record.revoked {
            return Err(KeyRefusal::Revoked.into());
        }
        if record.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(KeyRefusal::Expired.into());
        }
        self.last_used.mark(id, org, &record.noted);
        Ok(Principal {
            user_id: record.creator,
            email: String::new(),
            session_id: SessionId::from_uuid(uuid::Uuid::nil()),
            via_cookie: false,
            api_key: Some(KeyGrant {
                key_id: id,
                org_id: org,
                scopes: record.scopes,
                role: record.scopes.role().lower(record.creator_role),
            }),
        })
    }

    /// The key as stored, with the cache epoch taken before reading it.
    async fn load(&self, org: OrgId, id: ApiKeyId) -> Result<Option<(KeyRecord, u64)>, DbError> {
        let epoch = self.cache.epoch();
        let row = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { store::for_auth(c, org, id).await.map_err(DbError::from) }.scope_boxed()
        })
        .await?;
        Ok(row.map(|r| {
            // A stored hash that is not 64 hex digits never matches (all zeros is no key's digest).
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&r.secret_hash, &mut digest).is_err() {
                digest = [0u8; 32];
            }
            let record = KeyRecord {
                org: r.organization_id,
                digest,
                scopes: Scopes::from_names(r.scopes.iter().map(String::as_str)),
                creator_role: r.creator_role,
                creator: r.created_by_user_id,
                expires_at: r.expires_at,
                revoked: r.revoked_at.is_some(),
                noted: Arc::default(),
            };
            (record, epoch)
        }))
    }

    /// Writes the noted last-used times now (also done every flush interval in the background).
    pub async fn flush_last_used(&self) {
        self.last_used.flush(&self.db).await;
    }
}
