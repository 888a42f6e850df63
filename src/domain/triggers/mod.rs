//! Triggers that fire: `trigger.cron` schedules (the [`scheduler`], in the continuation role) and
//! `trigger.webhook` deliveries (`POST /v1/hooks/{workflowId}`). Both start a run of the latest
//! published revision of the workflow's family, as the workflow's author (`requested_by_user_id`),
//! with `triggerType` `cron` or `webhook`, and both commit the run together with what makes them
//! exactly-once: the tick's compare-and-set, or the delivery's idempotency key. The run is enqueued
//! after the commit; if Redis does not take it, the worker's sweeper delivers it (it is queued in
//! PostgreSQL), so nothing is lost and nothing is started twice.

pub mod config;
pub mod error;
pub mod routes;
pub mod schedule;
pub mod scheduler;
pub mod signature;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use fred::interfaces::KeysInterface;
use serde_json::{json, Map, Value};

use crate::domain::common::ids::{OrgId, RunId, WorkflowId};
use crate::domain::runs::model::{Run, RunStatus, TriggerType};
use crate::domain::runs::store::{self as run_store, NewRun};
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::queue::WorkQueue;
use crate::platform::redis::Redis;
pub use config::TriggersConfig;
pub use error::TriggerError;
use signature::{Proof, Verified};

pub struct TriggersParts {
    pub config: Arc<TriggersConfig>,
    pub db: PgPool,
    pub redis: Redis,
    pub queue: WorkQueue,
    /// Attempts a new run gets (as for runs created through the API).
    pub retry_attempts: i32,
    pub enqueue_timeout: Duration,
}

pub struct Triggers {
    config: Arc<TriggersConfig>,
    db: PgPool,
    redis: Redis,
    queue: WorkQueue,
    retry_attempts: i32,
    enqueue_timeout: Duration,
    /// The last tick this instance saw fired (by itself or, as a lost compare-and-set told it, by
    /// another), per family: the next passes skip it without a transaction. The row in
    /// `workflow_cron_ticks` stays the authority; this only saves work.
    fired: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, DateTime<Utc>>>,
}

/// How the body was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// No body at all (any content type): the input is `{}`.
    Empty,
}

/// One webhook delivery as the route read it.
pub struct Delivery<'a> {
    pub workflow: WorkflowId,
    pub proof: Proof<'a>,
    pub body: &'a [u8],
    pub kind: BodyKind,
    pub idempotency_key: Option<&'a str>,
}

/// The run a delivery started, or the one an earlier delivery with the same key started.
pub struct Delivered {
    pub run: Run,
    pub replayed: bool,
}

/// Ticks the continuation's scheduler fired in one pass (for its log and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub runs: usize,
    pub skipped: usize,
}

impl Triggers {
    pub fn new(parts: TriggersParts) -> Self {
        Self {
            config: parts.config,
            db: parts.db,
            redis: parts.redis,
            queue: parts.queue,
            retry_attempts: parts.retry_attempts,
            enqueue_timeout: parts.enqueue_timeout,
            fired: Default::default(),
        }
    }

    fn last_fired(&self, family: uuid::Uuid) -> Option<DateTime<Utc>> {
        self.fired.lock().ok().and_then(|m| m.get(&family).copied())
    }

    fn remember_fired(&self, family: uuid::Uuid, tick: DateTime<Utc>) {
        if let Ok(mut m) = self.fired.lock() {
            let e = m.entry(family).or_insert(tick);
            *e = (*e).max(tick);
        }
    }

    pub fn config(&self) -> &TriggersConfig {
        &self.config
    }

    /// A webhook delivery: find the workflow, check the caller's proof, then the replay, the rate
    /// limit and the idempotency key, and start the run.
    pub async fn deliver(&self, d: Delivery<'_>) -> Result<Delivered, TriggerError> {
        let target = {
            let mut c = db::conn(&self.db).await?;
            store::webhook_target(&mut c, d.workflow).await?
        };
        let target = target.ok_or(TriggerError::NotFound)?;
        let trigger = target.trigger.as_ref();
        let token = match (
            trigger.and_then(|t| t.get("type")).and_then(Value::as_str),
            trigger
                .and_then(|t| t.get("config"))
                .and_then(|c| c.get("token"))
                .and_then(Value::as_str),
        ) {
            (Some("trigger.webhook"), Some(token)) if !token.is_empty() => token,
            // Not a webhook workflow: indistinguishable from no workflow at all.
            _ => return Err(TriggerError::NotFound),
        };
        let tolerance = i64::try_from(self.config.webhook_signature_tolerance_secs).unwrap_or(300);
        let verified =
            signature::verify(&d.proof, token, d.body, Utc::now().timestamp(), tolerance)
                .map_err(TriggerError::Refused)?;
        let key = match d.idempotency_key {
            Some(k) => Some(idempotency_key(k)?),
            None => None,
        };
        let (org, family) = (target.organization_id, target.family_id);
        let ctx = TenantCtx::user_org(target.created_by_user_id, org);
        // A retry of a delivery that already started its run gets that run, whatever else holds.
        if let Some(key) = key {
            if let Some(run) = self.run_of_delivery(ctx, org, family, key).await? {
                return Ok(Delivered {
                    run,
                    replayed: true,
                });
            }
        }
        self.check_replay(family, &verified).await?;
        self.check_rate(family).await?;
        let input = body_input(d.body, d.kind)?;
        let max_attempts = self.retry_attempts;
        let created = db::tenant_tx(&self.db, ctx, |c| {
            async move {
                let id = RunId::time_ordered();
                if let Some(key) = key {
                    if !store::record_delivery(c, org, family, key, id).await? {
                        // A concurrent delivery with the key won; its run is the answer.
                        return Ok::<_, TriggerError>(Err(key));
                    }
                }
                let row = NewRun {
                    id,
                    organization_id: org,
                    workflow_id: target.workflow_id,
                    trigger_type: TriggerType::Webhook,
                    status: RunStatus::Queued,
                    requested_by_user_id: target.created_by_user_id,
                    input: Some(&input),
                    max_attempts,
                };
                let mut runs = run_store::insert_runs(c, &[row]).await?;
                runs.pop().map(Ok).ok_or(TriggerError::NotFound)
            }
            .scope_boxed()
        })
        .await?;
        match created {
            Ok(run) => {
                self.enqueue(org, run.id).await;
                Ok(Delivered {
                    run,
                    replayed: false,
                })
            }
            Err(key) => {
                let run = self
                    .run_of_delivery(ctx, org, family, key)
                    .await?
                    .ok_or(TriggerError::NotFound)?;
                Ok(Delivered {
                    run,
                    replayed: true,
                })
            }
        }
    }

    async fn run_of_delivery(
        &self,
        ctx: TenantCtx,
        org: OrgId,
        family: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Run>, TriggerError> {
        db::tenant_tx(&self.db, ctx, |c| {
            async move {
                match store::delivery_run(c, org, family, key).await? {
                    Some(id) => Ok(run_store::get_run(c, id).await?),
                    None => Ok(None),
                }
            }
            .scope_boxed()
        })
        .await
    }

    /// A signature is good once: remembered for twice the tolerance (after which its timestamp is too
    /// old anyway). Without Redis the replay cannot be ruled out, so the delivery is refused.
    async fn check_replay(&self, family: uuid::Uuid, v: &Verified) -> Result<(), TriggerError> {
        let Some((_, sig)) = &v.signed else {
            return Ok(());
        };
        let key = self.redis.key(&format!("hook:sig:{family}:{sig}"));
        let ttl = i64::try_from(
            self.config
                .webhook_signature_tolerance_secs
                .saturating_mul(2),
        )
        .unwrap_or(600)
        .max(1);
        let set: Option<String> = self
            .redis
            .client
            .set(
                key,
                "1",
                Some(fred::types::Expiration::EX(ttl)),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| TriggerError::Redis(e.to_string()))?;
        if set.is_none() {
            return Err(TriggerError::Replayed);
        }
        Ok(())
    }

    /// Fails open when Redis does not answer (logged): refusing every delivery would be worse.
    async fn check_rate(&self, family: uuid::Uuid) -> Result<(), TriggerError> {
        let limit = self.config.webhook_rate_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let key = self.redis.key(&format!("hook:rate:{family}"));
        match self.redis.window_attempt(key, limit, 60).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_after_secs)) => Err(TriggerError::RateLimited { retry_after_secs }),
            Err(e) => {
                tracing::warn!(error = %e, "webhook rate limit unavailable; letting the delivery through");
                Ok(())
            }
        }
    }

    /// After the commit. A failure is logged, not returned: the run is queued in PostgreSQL and the
    /// worker's sweeper delivers it.
    async fn enqueue(&self, org: OrgId, run: RunId) {
        let r = tokio::time::timeout(
            self.enqueue_timeout,
            self.queue.enqueue(org.uuid(), run.uuid()),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(org_id = %org, run_id = %run, error = %e, "enqueue failed; the sweeper will deliver the run")
            }
            Err(_) => {
                tracing::warn!(org_id = %org, run_id = %run, "enqueue timed out; the sweeper will deliver the run")
            }
        }
    }

    /// One scheduler pass: every cron workflow whose latest due tick has not started a run yet starts
    /// one, claimed by compare-and-set so that concurrent schedulers fire each tick once.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<Fired, TriggerError> {
        let due = {
            let mut c = db::conn(&self.db).await?;
            store::cron_workflows(&mut c).await?
        };
        let mut fired = Fired::default();
        for w in due {
            let Some(tick) = self.tick_to_fire(&w, now) else {
                continue;
            };
            match self.fire(&w, tick).await {
                Ok(true) => {
                    fired.runs += 1;
                    self.remember_fired(w.family_id, tick);
                }
                Ok(false) => {
                    fired.skipped += 1;
                    self.remember_fired(w.family_id, tick);
                }
                Err(e) => {
                    tracing::warn!(org_id = %w.organization_id, workflow_id = %w.workflow_id, error = %e, "cron tick not fired; retried next pass")
                }
            }
        }
        Ok(fired)
    }

    /// The tick this workflow should fire now, if any: the latest one due, if it is later than the last
    /// fired and than the revision's publication (a schedule does not fire for ticks before it existed),
    /// and, after an outage, if the catch-up policy allows it.
    fn tick_to_fire(&self, w: &store::CronWorkflow, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let config = w.trigger.as_ref()?.get("config")?;
        let schedule = match schedule::Schedule::of_config(config) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(workflow_id = %w.workflow_id, error = %e, "cron schedule unusable");
                return None;
            }
        };
        let tick = schedule.latest_at_or_before(now)?;
        let floor = match (self.last_fired(w.family_id), w.published_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if floor.is_some_and(|f| tick <= f) {
            return None;
        }
        let poll =
            chrono::Duration::milliseconds(i64::try_from(self.config.cron_poll_ms).unwrap_or(1000));
        // A tick older than one pass (plus slack) was missed while no scheduler ran.
        let missed = now - tick > poll * 2 + chrono::Duration::seconds(1);
        if missed {
            match self.config.cron_catch_up {
                config::CatchUp::None => return None,
                config::CatchUp::Latest => {
                    let max_age = self.config.cron_catch_up_max_age_secs;
                    if max_age > 0
                        && now - tick
                            > chrono::Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX))
                    {
                        return None;
                    }
                }
            }
        }
        Some(tick)
    }

    /// Claims the tick and inserts its run in one transaction; false when another scheduler had it.
    async fn fire(
        &self,
        w: &store::CronWorkflow,
        tick: DateTime<Utc>,
    ) -> Result<bool, TriggerError> {
        let (org, family, author) = (w.organization_id, w.family_id, w.created_by_user_id);
        let config = w
            .trigger
            .as_ref()
            .and_then(|t| t.get("config"))
            .cloned()
            .unwrap_or(Value::Null);
        let input = json!({"triggeredBy": {
            "type": "cron",
            "tick": tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "cron": config.get("cron"),
            "timezone": config.get("timezone").cloned().unwrap_or(json!("UTC")),
        }});
        let (workflow, max_attempts) = (w.workflow_id, self.retry_attempts);
        let run = db::tenant_tx(&self.db, TenantCtx::user_org(author, org), |c| {
            async move {
                let id = RunId::time_ordered();
                if !store::claim_tick(c, org, family, tick, id).await? {
                    return Ok::<_, TriggerError>(None);
                }
                let row = NewRun {
                    id,
                    organization_id: org,
                    workflow_id: workflow,
                    trigger_type: TriggerType::Cron,
                    status: RunStatus::Queued,
                    requested_by_user_id: author,
                    input: Some(&input),
                    max_attempts,
                };
                run_store::insert_runs(c, &[row]).await?;
                Ok(Some(id))
            }
            .scope_boxed()
        })
        .await?;
        let Some(run) = run else {
            return Ok(false);
        };
        tracing::info!(org_id = %org, workflow_id = %workflow, run_id = %run, tick = %tick, "cron tick fired");
        self.enqueue(org, run).await;
        Ok(true)
    }
}

fn idempotency_key(k: &str) -> Result<&str, TriggerError> {
    let k = k.trim();
    let ok = !k.is_empty() && k.chars().count() <= 200 && !k.chars().any(char::is_control);
    if ok {
        Ok(k)
    } else {
        Err(TriggerError::BadIdempotencyKey)
    }
}

/// The run input: the JSON body as sent, or a form as an object of strings (a repeated field keeps
/// its last value), or `{}` for an empty body.
fn body_input(body: &[u8], kind: BodyKind) -> Result<Value, TriggerError> {
    let value = parse_body(body, kind)?;
    // PostgreSQL's jsonb cannot hold a NUL character; JSON text writes one only as this escape.
    let text = serde_json::to_string(&value).unwrap_or_default();
    if text.contains("\\u0000") {
        return Err(TriggerError::BadBody(
            "the body holds a NUL character, which cannot be stored".into(),
        ));
    }
    Ok(value)
}

fn parse_body(body: &[u8], kind: BodyKind) -> Result<Value, TriggerError> {
    match kind {
        BodyKind::Empty => Ok(json!({})),
        _ if body.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        BodyKind::Json => serde_json::from_slice(body)
            .map_err(|e| TriggerError::BadBody(format!("the body is not valid JSON: {e}"))),
        BodyKind::Form => {
            let mut map = Map::new();
            for (k, v) in url::form_urlencoded::parse(body) {
                map.insert(k.into_owned(), Value::String(v.into_owned()));
            }
            Ok(Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_inputs() {
        assert_eq!(
            body_input(br#"{"a":[1,2]}"#, BodyKind::Json).unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(
            body_input(b"a=1&b=x+y&a=2", BodyKind::Form).unwrap(),
            json!({"a": "2", "b": "x y"})
        );
        assert_eq!(body_input(b"  ", BodyKind::Json).unwrap(), json!({}));
        assert_eq!(body_input(b"", BodyKind::Empty).unwrap(), json!({}));
        for (bad, kind) in [
            (&b"{nope"[..], BodyKind::Json),
            (br#"{"a":"x\u0000"}"#, BodyKind::Json),
            (b"a=%00", BodyKind::Form),
        ] {
            assert!(
                matches!(body_input(bad, kind), Err(TriggerError::BadBody(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn idempotency_keys_are_short_printable_text() {
        assert_eq!(idempotency_key(" abc ").unwrap(), "abc");
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key(&"x".repeat(201)).is_err());
        assert!(idempotency_key("a\nb").is_err());
    }
}
