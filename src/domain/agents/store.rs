//! Queries for `organization_executors` and `executor_pairing_tokens`, always under the org's context.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use super::model::{ExecutorRow, PairingTokenRow};
use crate::domain::common::ids::{ExecutorId, OrgId, UserId};
use crate::platform::db::schema::{executor_pairing_tokens as pt, organization_executors as ex};

pub async fn insert_pairing_token(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    hash: &str,
    labels: &[String],
    expires_at: DateTime<Utc>,
    by_user: UserId,
) -> QueryResult<()> {
    diesel::insert_into(pt::table)
        .values((
            pt::organization_id.eq(org),
            pt::token_hash.eq(hash),
            pt::labels.eq(labels),
            pt::expires_at.eq(expires_at),
            pt::created_by_user_id.eq(by_user),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn pairing_token(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    hash: &str,
) -> QueryResult<Option<PairingTokenRow>> {
    pt::table
        .filter(pt::organization_id.eq(org))
        .filter(pt::token_hash.eq(hash))
        .select(PairingTokenRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Marks the token used if it is still unused and unexpired: `false` when another pairing won the race
/// (or it expired meanwhile), which keeps a token single-use.
pub async fn consume_pairing_token(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    hash: &str,
) -> QueryResult<bool> {
    let now = Utc::now();
    diesel::update(
        pt::table
            .filter(pt::organization_id.eq(org))
            .filter(pt::token_hash.eq(hash))
            .filter(pt::used_at.is_null())
            .filter(pt::expires_at.gt(now)),
    )
    .set(pt::used_at.eq(now))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

pub struct NewExecutor<'a> {
    pub org: OrgId,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub capabilities: Option<&'a Value>,
    pub labels: &'a [String],
    pub by_user: UserId,
}

pub async fn insert_executor(
    conn: &mut AsyncPgConnection,
    e: NewExecutor<'_>,
) -> QueryResult<ExecutorRow> {
    diesel::insert_into(ex::table)
        .values((
            ex::organization_id.eq(e.org),
            ex::name.eq(e.name),
            ex::token_hash.eq(e.token_hash),
            ex::capabilities.eq(e.capabilities),
            ex::labels.eq(e.labels),
            ex::created_by_user_id.eq(e.by_user),
        ))
        .returning(ExecutorRow::as_returning())
        .get_result(conn)
        .await
}

/// The org's executors, newest first.
pub async fn list(conn: &mut AsyncPgConnection, org: OrgId) -> QueryResult<Vec<ExecutorRow>> {
    ex::table
        .filter(ex::organization_id.eq(org))
        .select(ExecutorRow::as_select())
        .order((ex::created_at.desc(), ex::id.desc()))
        .load(conn)
        .await
}

/// Sets `revoked_at` (again, if it was set): `false` when the org has no such executor.
pub async fn revoke(conn: &mut AsyncPgConnection, org: OrgId, id: ExecutorId) -> QueryResult<bool> {
    diesel::update(
        ex::table
            .filter(ex::organization_id.eq(org))
            .filter(ex::id.eq(id)),
    )
    .set(ex::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

pub async fn set_labels(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: ExecutorId,
    labels: &[String],
) -> QueryResult<Option<Vec<String>>> {
    diesel::update(
        ex::table
            .filter(ex::organization_id.eq(org))
            .filter(ex::id.eq(id)),
    )
    .set(ex::labels.eq(labels))
    .returning(ex::labels)
    .get_result(conn)
    .await
    .optional()
}
