//! Queries for `api_keys`, always under the org's context.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::model::{ApiKeyRow, KeyAuthRow};
use crate::domain::common::access::Role;
use crate::domain::common::ids::{ApiKeyId, OrgId, UserId};
use crate::platform::db::schema::api_keys as k;

pub struct NewKeyRow<'a> {
    pub id: ApiKeyId,
    pub org: OrgId,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a str,
    pub scopes: &'a [String],
    pub creator_role: Role,
    pub by_user: UserId,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: NewKeyRow<'_>) -> QueryResult<ApiKeyRow> {
    diesel::insert_into(k::table)
        .values((
            k::id.eq(new.id),
            k::organization_id.eq(new.org),
            k::name.eq(new.name),
            k::prefix.eq(new.prefix),
            k::secret_hash.eq(new.secret_hash),
            k::scopes.eq(new.scopes),
            k::creator_role.eq(new.creator_role),
            k::created_by_user_id.eq(new.by_user),
            k::expires_at.eq(new.expires_at),
        ))
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// The org's keys, newest first (revoked ones too: the record of who could call the API).
pub async fn list(conn: &mut AsyncPgConnection, org: OrgId) -> QueryResult<Vec<ApiKeyRow>> {
    k::table
        .filter(k::organization_id.eq(org))
        .select(ApiKeyRow::as_select())
        .order((k::created_at.desc(), k::id.desc()))
        .load(conn)
        .await
}

/// Revokes the key (a second revocation keeps the first time): `false` when the org has no such key.
pub async fn revoke(conn: &mut AsyncPgConnection, org: OrgId, id: ApiKeyId) -> QueryResult<bool> {
    let revoked_at =
        diesel::dsl::sql::<diesel::sql_types::Nullable<Timestamptz>>("coalesce(revoked_at, now())");
    diesel::update(
        k::table
            .filter(k::organization_id.eq(org))
            .filter(k::id.eq(id)),
    )
    .set(k::revoked_at.eq(revoked_at))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// What authenticating the key needs, found by id under its org.
pub async fn for_auth(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: ApiKeyId,
) -> QueryResult<Option<KeyAuthRow>> {
    k::table
        .filter(k::organization_id.eq(org))
        .filter(k::id.eq(id))
        .select(KeyAuthRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Records when each key was last used, in one statement; a time never moves backwards (another
/// instance may have written a later one).
pub async fn touch_last_used(
    conn: &mut AsyncPgConnection,
    used: &[(ApiKeyId, DateTime<Utc>)],
) -> QueryResult<usize> {
    let ids: Vec<uuid::Uuid> = used.iter().map(|(id, _)| id.uuid()).collect();
    let times: Vec<DateTime<Utc>> = used.iter().map(|(_, t)| *t).collect();
    diesel::sql_query(
        "UPDATE api_keys AS k SET last_used_at = greatest(coalesce(k.last_used_at, u.t), u.t) \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, t) WHERE k.id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await
}
