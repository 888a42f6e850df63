//! The triggers' queries: the cross-org reads go through definer functions that return only what the
//! scheduler and the webhook route need; everything else runs under the org's context.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use crate::domain::common::ids::{OrgId, RunId, UserId, WorkflowId};

/// The latest published revision of a family whose trigger is cron.
#[derive(Debug, Clone, QueryableByName)]
pub struct CronWorkflow {
    #[diesel(sql_type = SqlUuid)]
    pub workflow_id: WorkflowId,
    #[diesel(sql_type = SqlUuid)]
    pub organization_id: OrgId,
    #[diesel(sql_type = SqlUuid)]
    pub family_id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub created_by_user_id: UserId,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub trigger: Option<Value>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub published_at: Option<DateTime<Utc>>,
}

pub async fn cron_workflows(c: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<CronWorkflow>> {
    diesel::sql_query(
        "SELECT workflow_id, organization_id, family_id, created_by_user_id, trigger, published_at \
         FROM app.cron_workflows()",
    )
    .load(c)
    .await
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    #[allow(dead_code)]
    family_id: uuid::Uuid,
}

/// Takes `tick` for the family if no run was started for it or a later tick yet (compare-and-set).
pub async fn claim_tick(
    c: &mut AsyncPgConnection,
    org: OrgId,
    family: uuid::Uuid,
    tick: DateTime<Utc>,
    run: RunId,
) -> diesel::QueryResult<bool> {
    let rows: Vec<Claimed> = diesel::sql_query(
        "INSERT INTO workflow_cron_ticks (family_id, organization_id, last_tick_at, last_run_id) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (family_id) DO UPDATE SET last_tick_at = EXCLUDED.last_tick_at, \
           last_run_id = EXCLUDED.last_run_id, updated_at = now() \
         WHERE workflow_cron_ticks.last_tick_at < EXCLUDED.last_tick_at \
         RETURNING family_id",
    )
    .bind::<SqlUuid, _>(family)
    .bind::<SqlUuid, _>(org)
    .bind::<Timestamptz, _>(tick)
    .bind::<SqlUuid, _>(run)
    .load(c)
    .await?;
    Ok(!rows.is_empty())
}

/// The published revision a webhook for `workflow` (any revision of its family) starts.
#[derive(Debug, Clone, QueryableByName)]
pub struct WebhookTarget {
    #[diesel(sql_type = SqlUuid)]
    pub workflow_id: WorkflowId,
    #[diesel(sql_type = SqlUuid)]
    pub organization_id: OrgId,
    #[diesel(sql_type = SqlUuid)]
    pub family_id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub created_by_user_id: UserId,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub trigger: Option<Value>,
}

pub async fn webhook_target(
    c: &mut AsyncPgConnection,
    workflow: WorkflowId,
) -> diesel::QueryResult<Option<WebhookTarget>> {
    let mut rows: Vec<WebhookTarget> = diesel::sql_query(
        "SELECT workflow_id, organization_id, family_id, created_by_user_id, trigger \
         FROM app.webhook_target($1)",
    )
    .bind::<SqlUuid, _>(workflow)
    .load(c)
    .await?;
    Ok(rows.pop())
}

#[derive(QueryableByName)]
struct DeliveryRun {
    #[diesel(sql_type = SqlUuid)]
    run_id: RunId,
}

/// The run an earlier delivery with this key started.
pub async fn delivery_run(
    c: &mut AsyncPgConnection,
    org: OrgId,
    family: uuid::Uuid,
    key: &str,
) -> diesel::QueryResult<Option<RunId>> {
    let rows: Vec<DeliveryRun> = diesel::sql_query(
        "SELECT run_id FROM webhook_deliveries \
         WHERE organization_id = $1 AND family_id = $2 AND idempotency_key = $3",
    )
    .bind::<SqlUuid, _>(org)
    .bind::<SqlUuid, _>(family)
    .bind::<Text, _>(key)
    .load(c)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.run_id))
}

/// Records the delivery's key; false when another delivery with the key got there first.
pub async fn record_delivery(
    c: &mut AsyncPgConnection,
    org: OrgId,
    family: uuid::Uuid,
    key: &str,
    run: RunId,
) -> diesel::QueryResult<bool> {
    let rows: Vec<DeliveryRun> = diesel::sql_query(
        "INSERT INTO webhook_deliveries (organization_id, family_id, idempotency_key, run_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING run_id",
    )
    .bind::<SqlUuid, _>(org)
    .bind::<SqlUuid, _>(family)
    .bind::<Text, _>(key)
    .bind::<SqlUuid, _>(run)
    .load(c)
    .await?;
    Ok(!rows.is_empty())
}
