//! The audit log's queries.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use super::{Entry, Filter};
use crate::domain::common::ids::{OrgId, UserId};

pub async fn insert(c: &mut AsyncPgConnection, e: &Entry) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO audit_log (organization_id, actor_user_id, actor_type, action, target_type, \
         target_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind::<SqlUuid, _>(e.org)
    .bind::<Nullable<SqlUuid>, _>(e.actor)
    .bind::<Text, _>(e.actor_type.as_str())
    .bind::<Text, _>(e.action.as_str())
    .bind::<Text, _>(e.target_type)
    .bind::<Nullable<Text>, _>(e.target_id.as_deref())
    .bind::<Jsonb, _>(&e.details)
    .execute(c)
    .await
    .map(|_| ())
}

#[derive(Debug, QueryableByName)]
pub struct Row {
    #[diesel(sql_type = SqlUuid)]
    pub id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub organization_id: OrgId,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub actor_user_id: Option<UserId>,
    #[diesel(sql_type = Text)]
    pub actor_type: String,
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Text)]
    pub target_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub target_id: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub details: Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Newest first; every filter optional (a NULL parameter matches everything).
pub async fn list(
    c: &mut AsyncPgConnection,
    org: OrgId,
    f: &Filter,
) -> diesel::QueryResult<Vec<Row>> {
    let (before_t, before_id) = match f.before {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    diesel::sql_query(
        "SELECT id, organization_id, actor_user_id, actor_type, action, target_type, target_id, \
                details, created_at \
         FROM audit_log \
         WHERE organization_id = $1 \
           AND ($2::text IS NULL OR action = $2) \
           AND ($3::uuid IS NULL OR actor_user_id = $3) \
           AND ($4::text IS NULL OR target_type = $4) \
           AND ($5::timestamptz IS NULL OR created_at >= $5) \
           AND ($6::timestamptz IS NULL OR created_at < $6) \
           AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid)) \
         ORDER BY created_at DESC, id DESC LIMIT $9",
    )
    .bind::<SqlUuid, _>(org)
    .bind::<Nullable<Text>, _>(f.action.map(|a| a.as_str()))
    .bind::<Nullable<SqlUuid>, _>(f.actor)
    .bind::<Nullable<Text>, _>(f.target_type.as_deref())
    .bind::<Nullable<Timestamptz>, _>(f.since)
    .bind::<Nullable<Timestamptz>, _>(f.until)
    .bind::<Nullable<Timestamptz>, _>(before_t)
    .bind::<Nullable<SqlUuid>, _>(before_id)
    .bind::<diesel::sql_types::BigInt, _>(f.limit)
    .load(c)
    .await
}

#[derive(QueryableByName)]
struct Pruned {
    #[diesel(sql_type = Integer)]
    n: i32,
}

pub async fn prune(
    c: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    max_rows: i32,
) -> diesel::QueryResult<i32> {
    let rows: Vec<Pruned> = diesel::sql_query("SELECT app.prune_audit_log($1, $2) AS n")
        .bind::<Timestamptz, _>(before)
        .bind::<Integer, _>(max_rows)
        .load(c)
        .await?;
    Ok(rows.into_iter().next().map_or(0, |r| r.n))
}
