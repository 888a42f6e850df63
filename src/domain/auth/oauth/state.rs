//! The pending-flow state: rows of `oauth_states` (keyed by the SHA-256 of the state, single use) and the
//! signed `vespid_oauth_state` / `vespid_oauth_nonce` cookie values.

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use super::model::{Flow, Provider};
use crate::platform::crypto;
use crate::platform::db::schema::oauth_states;
use crate::platform::db::{self, DbError, PgPool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    State,
    Nonce,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Nonce => "nonce",
        }
    }
}

/// The original's refresh-token payload shape, reused for the OAuth cookies.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CookiePayload {
    session_id: String,
    user_id: String,
    token_nonce: String,
    expires_at: i64,
}

const COOKIE_USER: &str = "oauth";

pub fn sign_cookie(key: &[u8], value: &str, kind: Kind, expires_at: i64) -> String {
    crypto::sign(
        key,
        &CookiePayload {
            session_id: value.to_string(),
            user_id: COOKIE_USER.to_string(),
            token_nonce: kind.tag().to_string(),
            expires_at,
        },
    )
}

/// The value inside a cookie of `kind` when its signature is right and it has not expired.
pub fn verify_cookie(key: &[u8], token: &str, kind: Kind, now: i64) -> Option<String> {
    let p: CookiePayload = crypto::verify(key, token)?;
    (p.user_id == COOKIE_USER
        && p.token_nonce == kind.tag()
        && p.expires_at > now
        && !p.session_id.is_empty())
    .then_some(p.session_id)
}

#[derive(Debug, Queryable)]
pub struct StateRow {
    pub provider: String,
    pub code_verifier: String,
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

fn state_hash(state: &str) -> String {
    crypto::sha256_hex(state.as_bytes())
}

pub async fn insert(
    pool: &PgPool,
    provider: Provider,
    flow: &Flow,
    expires_at: i64,
) -> Result<(), DbError> {
    let hash = state_hash(&flow.state);
    let verifier = flow.code_verifier.clone();
    let nonce = flow.nonce.clone();
    let expires = Utc
        .timestamp_opt(expires_at, 0)
        .single()
        .unwrap_or_else(Utc::now);
    db::plain(pool, |c| {
        async move {
            diesel::insert_into(oauth_states::table)
                .values((
                    oauth_states::state_hash.eq(hash),
                    oauth_states::provider.eq(provider.as_str()),
                    oauth_states::code_verifier.eq(verifier),
                    oauth_states::nonce.eq(nonce),
                    oauth_states::expires_at.eq(expires),
                ))
                .execute(c)
                .await
                .map(|_| ())
                .map_err(DbError::from)
        }
        .scope_boxed()
    })
    .await
}

/// Deletes and returns the row of `state` (single use: a replay finds nothing).
pub async fn take(pool: &PgPool, state: &str) -> Result<Option<StateRow>, DbError> {
    let hash = state_hash(state);
    db::plain(pool, |c| {
        async move {
            diesel::delete(oauth_states::table.find(hash))
                .returning((
                    oauth_states::provider,
                    oauth_states::code_verifier,
                    oauth_states::nonce,
                    oauth_states::expires_at,
                ))
                .get_result::<StateRow>(c)
                .await
                .optional()
                .map_err(DbError::from)
        }
        .scope_boxed()
    })
    .await
}

pub async fn purge_expired(pool: &PgPool) -> Result<usize, DbError> {
    db::plain(pool, |c| {
        async move {
            diesel::delete(oauth_states::table.filter(oauth_states::expires_at.lt(Utc::now())))
                .execute(c)
                .await
                .map_err(DbError::from)
        }
        .scope_boxed()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_bound_to_kind_key_and_expiry() {
        let t = sign_cookie(b"k", "abc", Kind::State, 100);
        assert_eq!(
            verify_cookie(b"k", &t, Kind::State, 99).as_deref(),
            Some("abc")
        );
        assert_eq!(verify_cookie(b"k", &t, Kind::Nonce, 99), None);
        assert_eq!(verify_cookie(b"other", &t, Kind::State, 99), None);
        assert_eq!(verify_cookie(b"k", &t, Kind::State, 100), None);
        assert_eq!(verify_cookie(b"k", "tampered", Kind::State, 99), None);
    }
}
