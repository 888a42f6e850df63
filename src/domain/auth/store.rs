//! Queries for users (no RLS) and auth sessions (user context).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::model::{LiveSession, NewSession, NewUser, RotationState, User};
use crate::domain::common::ids::{SessionId, UserId};
use crate::platform::db::schema::{auth_sessions, users};

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub async fn find_user_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<User>> {
    users::table
        .filter(lower(users::email).eq(email.to_lowercase()))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn find_user(conn: &mut AsyncPgConnection, id: UserId) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

/// Inserts unless the email (case-insensitively) exists; `None` means it did.
pub async fn insert_user(
    conn: &mut AsyncPgConnection,
    new: NewUser<'_>,
) -> QueryResult<Option<User>> {
    diesel::sql_query(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES ($1, $2, $3, $4) \
         ON CONFLICT ((lower(email))) DO NOTHING \
         RETURNING id, email, password_hash, display_name, created_at",
    )
    .bind::<diesel::sql_types::Uuid, _>(new.id)
    .bind::<diesel::sql_types::Text, _>(new.email)
    .bind::<diesel::sql_types::Text, _>(new.password_hash)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(new.display_name)
    .get_result::<User>(conn)
    .await
    .optional()
}

pub async fn set_password_hash(
    conn: &mut AsyncPgConnection,
    id: UserId,
    hash: &str,
) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::password_hash.eq(hash))
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn insert_session(conn: &mut AsyncPgConnection, new: NewSession<'_>) -> QueryResult<()> {
    diesel::insert_into(auth_sessions::table)
        .values(new)
        .on_conflict(on_constraint("auth_sessions_pkey"))
        .do_nothing()
        .execute(conn)
        .await
        .map(|_| ())
}

/// Marks a live session used and returns it; `None` when revoked, expired or unknown. The sealed token of
/// the last rotation is dropped once its grace window (`grace_secs`) is over: it is only there for a
/// sibling refresh within the window.
pub async fn touch_live_session(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
    user_id: UserId,
    grace_secs: i64,
) -> QueryResult<Option<LiveSession>> {
    let now = Utc::now();
    let window_start = now - chrono::Duration::seconds(grace_secs.max(0));
    let grace_token = diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Bytea>>(
        "CASE WHEN rotated_at > ",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(window_start)
    .sql(" THEN grace_refresh_token END");
    diesel::update(
        auth_sessions::table
            .filter(auth_sessions::id.eq(session_id))
            .filter(auth_sessions::user_id.eq(user_id))
            .filter(auth_sessions::revoked_at.is_null())
            .filter(auth_sessions::expires_at.gt(now))
            .filter(auth_sessions::absolute_expires_at.gt(now)),
    )
    .set((
        auth_sessions::last_used_at.eq(now),
        auth_sessions::grace_refresh_token.eq(grace_token),
    ))
    .returning((
        auth_sessions::refresh_token_hash,
        auth_sessions::expires_at,
        auth_sessions::absolute_expires_at,
    ))
    .get_result(conn)
    .await
    .optional()
}

/// A live session as refresh sees it: the current hash, the one it replaced, when, and the sealed token of
/// that rotation. `None` when revoked, expired or unknown.
pub async fn rotation_state(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
    user_id: UserId,
) -> QueryResult<Option<RotationState>> {
    let now = Utc::now();
    auth_sessions::table
        .filter(auth_sessions::id.eq(session_id))
        .filter(auth_sessions::user_id.eq(user_id))
        .filter(auth_sessions::revoked_at.is_null())
        .filter(auth_sessions::expires_at.gt(now))
        .filter(auth_sessions::absolute_expires_at.gt(now))
        .select((
            auth_sessions::refresh_token_hash,
            auth_sessions::absolute_expires_at,
            auth_sessions::previous_refresh_token_hash,
            auth_sessions::rotated_at,
            auth_sessions::grace_refresh_token,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// A rotation: the new hash and expiry, and what a sibling request within the grace window needs.
pub struct Rotate<'a> {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub old_hash: &'a str,
    pub new_hash: &'a str,
    pub new_expires: DateTime<Utc>,
    /// The new token, sealed under a key derived from the old one.
    pub grace_token: &'a [u8],
}

/// Compare-and-swap rotation: succeeds only while `old_hash` is still current, so two parallel refreshes
/// with the same token cannot both rotate.
pub async fn rotate_refresh(conn: &mut AsyncPgConnection, r: Rotate<'_>) -> QueryResult<bool> {
    let now = Utc::now();
    let n = diesel::update(
        auth_sessions::table
            .filter(auth_sessions::id.eq(r.session_id))
            .filter(auth_sessions::user_id.eq(r.user_id))
            .filter(auth_sessions::refresh_token_hash.eq(r.old_hash))
            .filter(auth_sessions::revoked_at.is_null())
            .filter(auth_sessions::expires_at.gt(now))
            .filter(auth_sessions::absolute_expires_at.gt(now)),
    )
    .set((
        auth_sessions::refresh_token_hash.eq(r.new_hash),
        auth_sessions::expires_at.eq(r.new_expires),
        auth_sessions::last_used_at.eq(now),
        auth_sessions::previous_refresh_token_hash.eq(Some(r.old_hash)),
        auth_sessions::rotated_at.eq(Some(now)),
        auth_sessions::grace_refresh_token.eq(Some(r.grace_token)),
    ))
    .execute(conn)
    .await?;
    Ok(n == 1)
}

pub async fn session_expiry(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
) -> QueryResult<Option<DateTime<Utc>>> {
    auth_sessions::table
        .find(session_id)
        .select(auth_sessions::expires_at)
        .first(conn)
        .await
        .optional()
}

pub async fn revoke_session(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
) -> QueryResult<usize> {
    diesel::update(
        auth_sessions::table
            .filter(auth_sessions::id.eq(session_id))
            .filter(auth_sessions::revoked_at.is_null()),
    )
    .set(auth_sessions::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
}

pub async fn revoke_all_sessions(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
) -> QueryResult<usize> {
    diesel::update(
        auth_sessions::table
            .filter(auth_sessions::user_id.eq(user_id))
            .filter(auth_sessions::revoked_at.is_null()),
    )
    .set(auth_sessions::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
}
