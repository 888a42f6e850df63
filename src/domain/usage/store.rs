//! The `llm_usage` queries: the insert, the month's token sum for the budget, and the report's
//! aggregates (grouped in SQL, never summed in Rust).

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::model::{Filter, UsageRecord};
use crate::domain::common::ids::{OrgId, RunId};

pub async fn insert(c: &mut AsyncPgConnection, r: &UsageRecord) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO llm_usage (organization_id, session_id, run_id, node_id, provider, model, \
         input_tokens, output_tokens, latency_ms, cost_micros) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind::<SqlUuid, _>(r.org)
    .bind::<Nullable<SqlUuid>, _>(r.session_id)
    .bind::<Nullable<SqlUuid>, _>(r.run_id.map(RunId::uuid))
    .bind::<Nullable<Text>, _>(r.node_id.as_deref())
    .bind::<Text, _>(&r.provider)
    .bind::<Text, _>(&r.model)
    .bind::<BigInt, _>(r.input_tokens.max(0))
    .bind::<BigInt, _>(r.output_tokens.max(0))
    .bind::<BigInt, _>(r.latency_ms.max(0))
    .bind::<BigInt, _>(r.cost_micros.max(0))
    .execute(c)
    .await
    .map(|_| ())
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Input plus output tokens of the org's calls since `since` (an index-only scan of
/// `llm_usage_org_created_idx`).
pub async fn tokens_since(
    c: &mut AsyncPgConnection,
    org: OrgId,
    since: DateTime<Utc>,
) -> diesel::QueryResult<i64> {
    let rows: Vec<Sum> = diesel::sql_query(
        "SELECT COALESCE(SUM(input_tokens + output_tokens), 0)::bigint AS n \
         FROM llm_usage WHERE organization_id = $1 AND created_at >= $2",
    )
    .bind::<SqlUuid, _>(org)
    .bind::<Timestamptz, _>(since)
    .load(c)
    .await?;
    Ok(rows.into_iter().next().map_or(0, |r| r.n))
}

/// The rows a report covers: `$1` the org, `$2..$3` the window, then the optional filters (a NULL
/// parameter matches everything).
const MATCHING: &str = "FROM llm_usage \
     WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 \
       AND ($4::uuid IS NULL OR session_id = $4) \
       AND ($5::text IS NULL OR model = $5) \
       AND ($6::text IS NULL OR provider = $6)";

/// Binds the parameters of [`MATCHING`] to a query of `$sql`.
macro_rules! matching {
    ($sql:expr, $org:expr, $f:expr) => {
        diesel::sql_query($sql)
            .bind::<SqlUuid, _>($org)
            .bind::<Timestamptz, _>($f.window.since)
            .bind::<Timestamptz, _>($f.window.until)
            .bind::<Nullable<SqlUuid>, _>($f.session_id)
            .bind::<Nullable<Text>, _>($f.model.as_deref())
            .bind::<Nullable<Text>, _>($f.provider.as_deref())
    };
}

/// Sums over a group.
const SUMS: &str = "COUNT(*)::bigint AS calls, \
     COALESCE(SUM(input_tokens), 0)::bigint AS input_tokens, \
     COALESCE(SUM(output_tokens), 0)::bigint AS output_tokens, \
     COALESCE(SUM(cost_micros), 0)::bigint AS cost_micros";

#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Sums {
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    #[diesel(sql_type = BigInt)]
    pub input_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub output_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub cost_micros: i64,
}

pub async fn totals(
    c: &mut AsyncPgConnection,
    org: OrgId,
    f: &Filter,
) -> diesel::QueryResult<Sums> {
    let rows: Vec<Sums> = matching!(format!("SELECT {SUMS} {MATCHING}"), org, f)
        .load(c)
        .await?;
    Ok(rows.into_iter().next().unwrap_or(Sums {
        calls: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_micros: 0,
    }))
}

#[derive(Debug, QueryableByName)]
pub struct DayRow {
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(embed)]
    pub sums: Sums,
}

/// Per UTC day with calls, oldest first.
pub async fn by_day(
    c: &mut AsyncPgConnection,
    org: OrgId,
    f: &Filter,
) -> diesel::QueryResult<Vec<DayRow>> {
    matching!(
        format!(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, {SUMS} {MATCHING} \
             GROUP BY 1 ORDER BY 1"
        ),
        org,
        f
    )
    .load(c)
    .await
}

#[derive(Debug, QueryableByName)]
pub struct ModelRow {
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Text)]
    pub model: String,
    #[diesel(embed)]
    pub sums: Sums,
}

/// Per provider and model, most tokens first.
pub async fn by_model(
    c: &mut AsyncPgConnection,
    org: OrgId,
    f: &Filter,
) -> diesel::QueryResult<Vec<ModelRow>> {
    matching!(
        format!(
            "SELECT provider, model, {SUMS} {MATCHING} GROUP BY provider, model \
             ORDER BY SUM(input_tokens + output_tokens) DESC, provider, model"
        ),
        org,
        f
    )
    .load(c)
    .await
}

#[derive(Debug, QueryableByName)]
pub struct SessionRow {
    #[diesel(sql_type = SqlUuid)]
    pub session_id: uuid::Uuid,
    #[diesel(embed)]
    pub sums: Sums,
}

/// Per session (calls made by sessions only), the `limit` with the most tokens, most first.
pub async fn by_session(
    c: &mut AsyncPgConnection,
    org: OrgId,
    f: &Filter,
    limit: i64,
) -> diesel::QueryResult<Vec<SessionRow>> {
    matching!(
        format!(
            "SELECT session_id, {SUMS} {MATCHING} AND session_id IS NOT NULL GROUP BY session_id \
             ORDER BY SUM(input_tokens + output_tokens) DESC, session_id LIMIT $7"
        ),
        org,
        f
    )
    .bind::<BigInt, _>(limit)
    .load(c)
    .await
}
