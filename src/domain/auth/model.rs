//! Users and sessions as stored and as shown.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::domain::common::ids::{SessionId, UserId};
use crate::domain::common::time::iso;
use crate::platform::db::schema::{auth_sessions, users};

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = users)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub display_name: Option<&'a str>,
}

/// The `user` object on the wire: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = User)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            created_at: iso(u.created_at),
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = auth_sessions)]
pub struct NewSession<'a> {
    pub id: SessionId,
    pub user_id: UserId,
    pub refresh_token_hash: &'a str,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// What the auth check needs to know about a live session.
#[derive(Debug, Clone, Queryable)]
pub struct LiveSession {
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

/// A session as a refresh sees it (see `store::rotation_state`).
#[derive(Debug, Clone, Queryable)]
pub struct RotationState {
    pub refresh_token_hash: String,
    pub absolute_expires_at: DateTime<Utc>,
    pub previous_refresh_token_hash: Option<String>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub grace_refresh_token: Option<Vec<u8>>,
}

/// Where a request came from, recorded on its session.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}
