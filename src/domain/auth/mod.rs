//! Authentication: sign-up, login, sessions with rotating refresh tokens, access-token verification, and
//! the per-request resolution of the caller (bearer first, then the refresh cookie). Every way in (sign-up,
//! login, OAuth) also makes sure the user has a personal workspace, through the orgs service.

pub mod cache;
pub mod config;
pub mod error;
pub mod model;
#[cfg(feature = "oidc")]
pub mod oauth;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod store;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use futures_util::future::BoxFuture;

use crate::domain::apikeys::ApiKeys;
use crate::domain::common::access::{
    Authenticated, Authenticator, LookupError, Principal, API_KEY_PREFIX,
};
use crate::domain::common::ids::{SessionId, UserId};
use crate::domain::orgs::model::MyOrg;
use crate::domain::orgs::Orgs;
use crate::platform::crypto;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};
use crate::platform::redis::Redis;
use cache::{AuthCache, Forget};
use config::AuthConfig;
pub use error::AuthError;
use model::{ClientMeta, NewSession, NewUser, User};
use tokens::{SessionView, TokenKeys};

/// A freshly created or rotated session: the wire object and the refresh cookie value.
pub struct IssuedSession {
    pub session: SessionView,
    pub refresh_token: String,
}

/// What the auth service is built from.
pub struct AuthParts {
    pub config: AuthConfig,
    /// Cookies carry `Secure` (production, or forced by config).
    pub secure_cookies: bool,
    pub db: PgPool,
    pub redis: Redis,
    pub orgs: Arc<Orgs>,
    /// Resolves bearer credentials that are API keys.
    pub api_keys: Arc<ApiKeys>,
}

pub struct AuthService {
    keys: TokenKeys,
    cache: Arc<AuthCache>,
    limiter: ratelimit::LoginLimiter,
    config: AuthConfig,
    secure_cookies: bool,
    db: PgPool,
    redis: Redis,
    orgs: Arc<Orgs>,
    api_keys: Arc<ApiKeys>,
}

fn now() -> i64 {
    Utc::now().timestamp()
}

impl AuthService {
    pub fn new(parts: AuthParts) -> Self {
        let AuthParts {
            config,
            secure_cookies,
            db,
            redis,
            orgs,
            api_keys,
        } = parts;
        let cache = AuthCache::new(Duration::from_secs(config.session_cache_ttl_secs));
        cache.spawn_listener(&redis);
        Self {
            keys: TokenKeys::new(&config),
            limiter: ratelimit::LoginLimiter::new(redis.clone(), &config),
            cache,
            config,
            secure_cookies,
            db,
            redis,
            orgs,
            api_keys,
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// Creates the account (email lower-cased and trimmed), a first session and the personal workspace.
    pub async fn signup(
        &self,
        email: &str,
        password: String,
        display_name: Option<String>,
        meta: &ClientMeta,
    ) -> Result<(User, IssuedSession), AuthError> {
        let email = email.trim().to_lowercase();
        let hash = password::hash(password).await?;
        let id = UserId::random();
        let user = db::plain(&self.db, |c| {
            async move {
                store::insert_user(
                    c,
                    NewUser {
                        id,
                        email: &email,
                        password_hash: &hash,
                        display_name: display_name.as_deref(),
                    },
                )
                .await
                .map_err(AuthError::from)
            }
            .scope_boxed()
        })
        .await?
        .ok_or(AuthError::EmailTaken)?;
        self.signed_in(user, meta).await
    }

    /// Same answer for unknown email and wrong password, in about the same time; failures are throttled
    /// per account and per client IP.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        meta: &ClientMeta,
    ) -> Result<(User, IssuedSession), AuthError> {
        let email = email.trim().to_lowercase();
        let attempt = self.limiter.attempt(&email, meta.ip.as_deref()).await?;
        let lookup = email.clone();
        let user = db::plain(&self.db, |c| {
            async move {
                store::find_user_by_email(c, &lookup)
                    .await
                    .map_err(AuthError::from)
            }
            .scope_boxed()
        })
        .await?;
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_string());
        let verdict = password::verify(password.clone(), stored).await;
        let (user, needs_rehash) = match (user, verdict) {
            (Some(u), password::Verdict::Ok { needs_rehash }) => (u, needs_rehash),
            _ => {
                self.limiter
                    .record_failure(&email, meta.ip.as_deref(), attempt)
                    .await;
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.limiter
            .record_success(&email, meta.ip.as_deref(), attempt)
            .await;
        if needs_rehash {
            self.upgrade_hash(user.id, password).await;
        }
        self.signed_in(user, meta).await
    }

    /// Legacy scrypt hash: upgrade to argon2id now that we know the password. A failure only means the
    /// upgrade waits for the next login.
    async fn upgrade_hash(&self, id: UserId, password: String) {
        let upgraded = async {
            let new_hash = password::hash(password).await?;
            db::plain(&self.db, |c| {
                async move {
                    store::set_password_hash(c, id, &new_hash)
                        .await
                        .map_err(AuthError::from)
                }
                .scope_boxed()
            })
            .await
        }
        .await;
        if let Err(e) = upgraded {
            tracing::warn!(user_id = %id, error = %e, "legacy password hash not upgraded");
        }
    }

    /// Finds or creates the user of an OAuth login, then signs them in. Only verified emails reach here,
    /// so linking to an existing account by email is safe.
    pub async fn oauth_sign_in(
        &self,
        email: &str,
        display_name: Option<String>,
        meta: &ClientMeta,
    ) -> Result<(User, IssuedSession), AuthError> {
        let user = self.oauth_user(email, display_name).await?;
        self.signed_in(user, meta).await
    }

    /// A new session for a user who just proved who they are, and their personal workspace.
    async fn signed_in(
        &self,
        user: User,
        meta: &ClientMeta,
    ) -> Result<(User, IssuedSession), AuthError> {
        let issued = self.create_session(&user, meta).await?;
        self.orgs.ensure_personal_workspace(user.id).await?;
        Ok((user, issued))
    }

    async fn create_session(
        &self,
        user: &User,
        meta: &ClientMeta,
    ) -> Result<IssuedSession, AuthError> {
        let session_id = SessionId::random();
        let now_ts = now();
        let expires = now_ts + self.config.session_ttl_secs;
        let absolute = now_ts + self.config.session_absolute_ttl_secs;
        let refresh_token = self
            .keys
            .mint_refresh(session_id, user.id, expires.min(absolute));
        let hash = crypto::sha256_hex(refresh_token.as_bytes());
        let (user_id, meta) = (user.id, meta.clone());
        let expires_at = ts(expires.min(absolute));
        let absolute_at = ts(absolute);
        db::tenant_tx(&self.db, TenantCtx::user(user_id), |c| {
            async move {
                store::insert_session(
                    c,
                    NewSession {
                        id: session_id,
                        user_id,
                        refresh_token_hash: &hash,
                        expires_at,
                        absolute_expires_at: absolute_at,
                        user_agent: meta.user_agent.as_deref(),
                        ip: meta.ip.as_deref(),
                    },
                )
                .await
                .map_err(AuthError::from)
            }
            .scope_boxed()
        })
        .await?;
        Ok(IssuedSession {
            session: self
                .keys
                .mint_access(user.id, &user.email, session_id, now_ts),
            refresh_token,
        })
    }

    /// Resolves the caller: a valid bearer token of a live session, else a valid refresh cookie (without
    /// rotation; the caller then gets a fresh access token in `x-access-token`).
    pub async fn resolve(
        &self,
        bearer: Option<&str>,
        cookie: Option<&str>,
    ) -> Result<Option<Authenticated>, DbError> {
        if let Some(claims) = bearer.and_then(|t| self.keys.verify_access(t)) {
            if self.session_live(claims.sid, claims.sub).await?.is_some() {
                return Ok(Some(Authenticated {
                    principal: Principal {
                        user_id: claims.sub,
                        email: claims.email,
                        session_id: claims.sid,
                        via_cookie: false,
                        api_key: None,
                    },
                    minted_access_token: None,
                }));
            }
        }
        let Some(cookie) = cookie else {
            return Ok(None);
        };
        let Some(principal) = self.check_refresh_cookie(cookie).await? else {
            return Ok(None);
        };
        let minted = self
            .keys
            .mint_access(
                principal.user_id,
                &principal.email,
                principal.session_id,
                now(),
            )
            .token;
        Ok(Some(Authenticated {
            principal,
            minted_access_token: Some(minted),
        }))
    }

    /// A live session's refresh-token hash, from the cache or the database (which also marks it used: at
    /// most once per cache TTL, instead of on every request).
    async fn session_live(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<Option<String>, DbError> {
        if let Some((s, false)) = self.cache.session(session_id) {
            return Ok((s.user_id == user_id).then_some(s.refresh_token_hash));
        }
        let grace = self.config.refresh_reuse_grace_secs;
        let live = db::tenant_tx(&self.db, TenantCtx::user(user_id), |c| {
            async move {
                store::touch_live_session(c, session_id, user_id, grace)
                    .await
                    .map_err(DbError::from)
            }
            .scope_boxed()
        })
        .await?;
        Ok(live.map(|s| {
            let expires = s.expires_at.min(s.absolute_expires_at);
            self.cache
                .put_session(session_id, user_id, s.refresh_token_hash.clone(), expires);
            s.refresh_token_hash
        }))
    }

    /// Signature, expiry, live session and the stored hash (constant-time).
    async fn check_refresh_cookie(&self, cookie: &str) -> Result<Option<Principal>, DbError> {
        let Some(payload) = self.keys.verify_refresh(cookie, now()) else {
            return Ok(None);
        };
        let presented = crypto::sha256_hex(cookie.as_bytes());
        let Some(stored) = self
            .session_live(payload.session_id, payload.user_id)
            .await?
        else {
            return Ok(None);
        };
        if !crypto::ct_eq(presented.as_bytes(), stored.as_bytes()) {
            return Ok(None);
        }
        let Some(user) = self.find_user(payload.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(Principal {
            user_id: user.id,
            email: user.email,
            session_id: payload.session_id,
            via_cookie: true,
            api_key: None,
        }))
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, DbError> {
        db::plain(&self.db, |c| {
            async move { store::find_user(c, id).await.map_err(DbError::from) }.scope_boxed()
        })
        .await
    }

    /// `/v1/me`: the caller's account and orgs (creating the personal workspace if they have none).
    pub async fn me(&self, caller: &Principal) -> Result<(User, Vec<MyOrg>), AuthError> {
        let user = self
            .find_user(caller.user_id)
            .await?
            .ok_or(AuthError::SessionInvalid)?;
        let orgs = self.orgs.my_orgs(user.id).await?;
        Ok((user, orgs))
    }

    /// Rotates the refresh token (compare-and-swap on its hash). A correctly signed token that is no longer
    /// the current one means it was copied, and the session is revoked, unless it is the token the last
    /// rotation replaced, presented within the grace window: then it is a sibling request (a second browser
    /// tab refreshing at the same moment) and gets the same rotated session.
    pub async fn refresh(&self, cookie: &str) -> Result<(User, IssuedSession), AuthError> {
        let payload = self
            .keys
            .verify_refresh(cookie, now())
            .ok_or(AuthError::RefreshInvalid)?;
        let (sid, uid) = (payload.session_id, payload.user_id);
        let old_hash = crypto::sha256_hex(cookie.as_bytes());
        let user = self
            .find_user(uid)
            .await?
            .ok_or(AuthError::RefreshInvalid)?;
        let now_ts = now();
        let new_token_expiry = now_ts + self.config.session_ttl_secs;
        let grace = self.config.refresh_reuse_grace_secs;
        // Rotation reads the absolute cap inside the same transaction as the swap.
        let keys = &self.keys;
        let old = old_hash.clone();
        let outcome = db::tenant_tx(&self.db, TenantCtx::user(uid), |c| {
            async move {
                let Some(live) = store::rotation_state(c, sid, uid).await? else {
                    return Ok::<_, AuthError>(Rotation::Dead);
                };
                if !crypto::ct_eq(live.refresh_token_hash.as_bytes(), old.as_bytes()) {
                    if let Some(sibling) = sibling_token(keys, &live, &old, cookie, grace, now_ts) {
                        return Ok(sibling);
                    }
                    store::revoke_session(c, sid).await?;
                    return Ok(Rotation::Reused);
                }
                let expiry = new_token_expiry.min(live.absolute_expires_at.timestamp());
                let token = keys.mint_refresh(sid, uid, expiry);
                let new_hash = crypto::sha256_hex(token.as_bytes());
                let sealed =
                    crypto::seal_with_secret(GRACE_LABEL, cookie.as_bytes(), token.as_bytes());
                let rotated = store::rotate_refresh(
                    c,
                    store::Rotate {
                        session_id: sid,
                        user_id: uid,
                        old_hash: &old,
                        new_hash: &new_hash,
                        new_expires: ts(expiry),
                        grace_token: &sealed,
                    },
                )
                .await?;
                Ok(if rotated {
                    Rotation::Rotated {
                        token,
                        hash: new_hash,
                        expiry,
                    }
                } else {
                    Rotation::Dead
                })
            }
            .scope_boxed()
        })
        .await?;
        match outcome {
            Rotation::Rotated {
                token,
                hash,
                expiry,
            } => {
                // Other instances may still hold the old hash: they must forget it now.
                self.cache
                    .invalidate(&self.redis, Forget::Session(sid))
                    .await;
                self.cache.put_session(sid, uid, hash, ts(expiry));
                let session = self.keys.mint_access(uid, &user.email, sid, now_ts);
                Ok((
                    user,
                    IssuedSession {
                        session,
                        refresh_token: token,
                    },
                ))
            }
            Rotation::Sibling { token } => {
                let session = self.keys.mint_access(uid, &user.email, sid, now_ts);
                Ok((
                    user,
                    IssuedSession {
                        session,
                        refresh_token: token,
                    },
                ))
            }
            Rotation::Reused => {
                tracing::warn!(session_id = %sid, "superseded refresh token presented; session revoked");
                self.cache
                    .invalidate(&self.redis, Forget::Session(sid))
                    .await;
                Err(AuthError::RefreshInvalid)
            }
            Rotation::Dead => Err(AuthError::RefreshInvalid),
        }
    }

    pub async fn logout(&self, p: &Principal) -> Result<(), AuthError> {
        let (sid, uid) = (p.session_id, p.user_id);
        db::tenant_tx(&self.db, TenantCtx::user(uid), |c| {
            async move { store::revoke_session(c, sid).await.map_err(AuthError::from) }
                .scope_boxed()
        })
        .await?;
        self.cache
            .invalidate(&self.redis, Forget::Session(sid))
            .await;
        Ok(())
    }

    pub async fn logout_all(&self, p: &Principal) -> Result<usize, AuthError> {
        let uid = p.user_id;
        let n = db::tenant_tx(&self.db, TenantCtx::user(uid), |c| {
            async move {
                store::revoke_all_sessions(c, uid)
                    .await
                    .map_err(AuthError::from)
            }
            .scope_boxed()
        })
        .await?;
        self.cache.invalidate(&self.redis, Forget::User(uid)).await;
        Ok(n)
    }

    async fn oauth_user(
        &self,
        email: &str,
        display_name: Option<String>,
    ) -> Result<User, AuthError> {
        let email = email.trim().to_lowercase();
        let lookup = email.clone();
        let existing = db::plain(&self.db, |c| {
            async move {
                store::find_user_by_email(c, &lookup)
                    .await
                    .map_err(AuthError::from)
            }
            .scope_boxed()
        })
        .await?;
        if let Some(u) = existing {
            return Ok(u);
        }
        let hash = password::unusable_hash();
        let id = UserId::random();
        let lookup = email.clone();
        db::plain(&self.db, |c| {
            async move {
                let name = display_name
                    .as_deref()
                    .map(|n| n.chars().take(120).collect::<String>());
                match store::insert_user(
                    c,
                    NewUser {
                        id,
                        email: &email,
                        password_hash: &hash,
                        display_name: name.as_deref(),
                    },
                )
                .await?
                {
                    Some(u) => Ok(u),
                    // Lost a race with a concurrent sign-up of the same email: use that account.
                    None => {
                        store::find_user_by_email(c, &lookup)
                            .await?
                            .ok_or(AuthError::Inconsistent(
                                "user vanished after a conflicting insert",
                            ))
                    }
                }
            }
            .scope_boxed()
        })
        .await
    }
}

impl Authenticator for AuthService {
    fn authenticate<'a>(
        &'a self,
        bearer: Option<&'a str>,
        cookie: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, LookupError>> {
        Box::pin(async move {
            // An API key is the whole credential: refused means refused, with no fallback to a cookie.
            if let Some(key) = bearer.filter(|t| t.starts_with(API_KEY_PREFIX)) {
                let principal = self.api_keys.authenticate(key).await?;
                return Ok(Some(Authenticated {
                    principal,
                    minted_access_token: None,
                }));
            }
            Ok(self.resolve(bearer, cookie).await?)
        })
    }
}

enum Rotation {
    Rotated {
        token: String,
        hash: String,
        expiry: i64,
    },
    /// The presented token was replaced moments ago: the token that replaced it.
    Sibling {
        token: String,
    },
    Reused,
    Dead,
}

/// What the grace-window seal of a rotated token is derived for.
const GRACE_LABEL: &str = "vespid refresh grace v1";

/// The token that replaced `presented` (hash `old_hash`), if that rotation happened within `grace`
/// seconds and the sealed token opens with the presented one.
fn sibling_token(
    keys: &TokenKeys,
    live: &model::RotationState,
    old_hash: &str,
    presented: &str,
    grace: i64,
    now_ts: i64,
) -> Option<Rotation> {
    let previous = live.previous_refresh_token_hash.as_deref()?;
    let recent = live
        .rotated_at
        .is_some_and(|t| now_ts - t.timestamp() <= grace);
    if grace <= 0 || !recent || !crypto::ct_eq(previous.as_bytes(), old_hash.as_bytes()) {
        return None;
    }
    let sealed = live.grace_refresh_token.as_deref()?;
    let token = crypto::open_with_secret(GRACE_LABEL, presented.as_bytes(), sealed)?;
    let token = String::from_utf8(token).ok()?;
    // Still the current token of this session (nothing rotated it again since).
    let current = crypto::sha256_hex(token.as_bytes());
    if !crypto::ct_eq(current.as_bytes(), live.refresh_token_hash.as_bytes()) {
        return None;
    }
    keys.verify_refresh(&token, now_ts)?;
    Some(Rotation::Sibling { token })
}

fn ts(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_else(Utc::now)
}
