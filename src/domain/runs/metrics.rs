//! The runs domain's metrics: attempts ended by outcome and their durations, queue wait, worker slots in
//! use, and the queue's depth and age per org (read from Redis at scrape time, with the org label capped
//! to the `top_orgs` deepest orgs plus `other`, so its cardinality stays bounded however many orgs exist).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt};
use prometheus::{GaugeVec, Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::model::Run;
use crate::platform::metrics::{Metrics, MetricsError, Probe, DURATION_BUCKETS};
use crate::platform::queue::{QueueStats, WorkQueue};

/// Tenants read from the queue per scrape to find the deepest ones.
const SCAN_TENANTS: usize = 1000;

/// How an attempt ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Failed with attempts left: a retry is scheduled.
    Retried,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
        }
    }
}

pub struct RunMetrics {
    ended: IntCounterVec,
    duration: HistogramVec,
    queue_wait: Histogram,
    slots_in_use: IntGauge,
    slots: IntGauge,
    /// The slot semaphores of the workers in this process, with their sizes.
    pools: Mutex<Vec<(Weak<Semaphore>, usize)>>,
    queue: WorkQueue,
    gauges: QueueGauges,
}

/// The queue's gauges, set from a [`QueueStats`] snapshot.
struct QueueGauges {
    top_orgs: usize,
    ready: IntGaugeVec,
    oldest: GaugeVec,
    delayed: IntGauge,
    inflight: IntGauge,
}

impl QueueGauges {
    fn register(metrics: &Metrics, top_orgs: usize) -> Result<Self, MetricsError> {
        Ok(Self {
            top_orgs: top_orgs.max(1),
            ready: metrics.gauge_vec(
                "queue_ready",
                "Runs ready in the queue, for the deepest orgs and `other` (the same for every instance).",
                &["org"],
            )?,
            oldest: metrics.float_gauge_vec(
                "queue_oldest_ready_age_seconds",
                "Age (since creation) of the run that has waited longest among an org's ready runs.",
                &["org"],
            )?,
            delayed: metrics.gauge(
                "queue_delayed",
                "Runs waiting in the queue for a retry time.",
            )?,
            inflight: metrics.gauge(
                "queue_inflight",
                "Runs claimed by a worker and not yet acknowledged.",
            )?,
        })
    }
}

impl RunMetrics {
    /// Registers the metrics and their scrape-time probe.
    pub fn register(
        metrics: &Metrics,
        queue: WorkQueue,
        top_orgs: usize,
    ) -> Result<Arc<Self>, MetricsError> {
        let m = Arc::new(Self {
            ended: metrics.counter_vec(
                "runs_ended_total",
                "Run attempts ended, by outcome (succeeded, failed, retried).",
                &["outcome"],
            )?,
            duration: metrics.histogram_vec(
                "run_attempt_duration_seconds",
                "Run attempts from their start to their end, by outcome.",
                &["outcome"],
                DURATION_BUCKETS,
            )?,
            queue_wait: metrics.histogram(
                "run_queue_wait_seconds",
                "New runs from their creation to the start of their first attempt.",
                DURATION_BUCKETS,
            )?,
            slots_in_use: metrics.gauge(
                "worker_slots_in_use",
                "Run slots held by this process's workers.",
            )?,
            slots: metrics.gauge(
                "worker_slots",
                "Run slots of this process's workers (WORKFLOW_QUEUE_CONCURRENCY each).",
            )?,
            pools: Mutex::new(Vec::new()),
            queue,
            gauges: QueueGauges::register(metrics, top_orgs)?,
        });
        metrics.probe(m.clone());
        Ok(m)
    }

    /// A worker's slots, counted while it lives.
    pub fn track_slots(&self, slots: &Arc<Semaphore>, size: usize) {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Arc::downgrade(slots), size));
    }

    /// A run's attempt started; a first attempt reports how long the run waited for it.
    pub fn started(&self, run: &Run) {
        if run.attempt_count == 1 {
            if let Some(at) = run.started_at {
                self.queue_wait.observe(seconds(run.created_at, at));
            }
        }
    }

    /// A run's attempt ended (committed).
    pub fn ended(&self, run: &Run, outcome: Outcome) {
        let label = outcome.label();
        self.ended.with_label_values(&[label]).inc();
        if let Some(at) = run.started_at {
            self.duration
                .with_label_values(&[label])
                .observe(seconds(at, Utc::now()));
        }
    }

    fn refresh_slots(&self) {
        let (mut size, mut used) = (0usize, 0usize);
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|(sem, n)| match sem.upgrade() {
            Some(sem) if !sem.is_closed() => {
                size += n;
                used += n.saturating_sub(sem.available_permits());
                true
            }
            _ => false,
        });
        self.slots.set(i64::try_from(size).unwrap_or(i64::MAX));
        self.slots_in_use
            .set(i64::try_from(used).unwrap_or(i64::MAX));
    }
}

impl QueueGauges {
    fn publish(&self, stats: &QueueStats, now: DateTime<Utc>) {
        let mut tenants = stats.tenants.clone();
        tenants.sort_by_key(|t| std::cmp::Reverse(t.ready));
        let split = self.top_orgs.min(tenants.len());
        let (top, rest) = tenants.split_at(split);
        self.ready.reset();
        self.oldest.reset();
        let mut shown = 0u64;
        for t in top {
            let org = t.tenant.to_string();
            shown += t.ready;
            self.ready
                .with_label_values(&[&org])
                .set(i64::try_from(t.ready).unwrap_or(i64::MAX));
            if let Some(age) = t.oldest.and_then(|id| age(id, now)) {
                self.oldest.with_label_values(&[&org]).set(age);
            }
        }
        let other = stats.ready.saturating_sub(shown);
        self.ready
            .with_label_values(&["other"])
            .set(i64::try_from(other).unwrap_or(i64::MAX));
        let other_age = rest
            .iter()
            .filter_map(|t| t.oldest.and_then(|id| age(id, now)))
            .fold(0.0f64, f64::max);
        self.oldest.with_label_values(&["other"]).set(other_age);
        self.delayed
            .set(i64::try_from(stats.delayed).unwrap_or(i64::MAX));
        self.inflight
            .set(i64::try_from(stats.inflight).unwrap_or(i64::MAX));
    }
}

impl Probe for RunMetrics {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        async move {
            self.refresh_slots();
            match self.queue.stats(SCAN_TENANTS).await {
                Ok(stats) => self.gauges.publish(&stats, Utc::now()),
                Err(e) => tracing::warn!(error = %e, "queue metrics unavailable"),
            }
        }
        .boxed()
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}

/// Run ids are UUIDv7: their creation time is in the id.
fn age(id: Uuid, now: DateTime<Utc>) -> Option<f64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let created = DateTime::<Utc>::from_timestamp(i64::try_from(secs).ok()?, nanos)?;
    Some(seconds(created, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::queue::TenantQueue;

    #[test]
    fn run_ids_carry_their_age() {
        let id = Uuid::now_v7();
        let a = age(id, Utc::now() + chrono::Duration::seconds(5)).unwrap_or(0.0);
        assert!((4.9..6.0).contains(&a), "{a}");
        assert_eq!(age(Uuid::new_v4(), Utc::now()), None);
    }

    #[test]
    fn queue_stats_keep_the_deepest_orgs_and_fold_the_rest_into_other() {
        let stats = QueueStats {
            ready: 10,
            delayed: 2,
            inflight: 1,
            tenants: [1u64, 5, 3, 1]
                .iter()
                .map(|n| TenantQueue {
                    tenant: Uuid::new_v4(),
                    ready: *n,
                    oldest: Some(Uuid::now_v7()),
                })
                .collect(),
        };
        let top = stats
            .tenants
            .iter()
            .find(|t| t.ready == 5)
            .map(|t| t.tenant);
        let metrics = Metrics::new().unwrap();
        let gauges = QueueGauges::register(&metrics, 2).unwrap();
        gauges.publish(&stats, Utc::now());
        let top = top.unwrap().to_string();
        assert_eq!(gauges.ready.with_label_values(&[&top]).get(), 5);
        // 10 ready: 5 and 3 shown, the rest (including tenants beyond the scan) is `other`.
        assert_eq!(gauges.ready.with_label_values(&["other"]).get(), 2);
        assert_eq!(gauges.delayed.get(), 2);
        assert_eq!(gauges.inflight.get(), 1);
    }
}
