//! When each key was last used, without a database write per request: a request only notes the time in
//! memory, and a background task writes what was noted once per interval, one statement per org (under
//! that org's context). A crash loses at most one interval of last-used times, never a key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use diesel_async::scoped_futures::ScopedFutureExt;

use super::store;
use crate::domain::common::ids::{ApiKeyId, OrgId};
use crate::platform::db::{self, DbError, PgPool, TenantCtx};

#[derive(Default)]
pub struct LastUsed {
    pending: DashMap<ApiKeyId, (OrgId, DateTime<Utc>)>,
}

impl LastUsed {
    /// Notes a use of the key now. `noted` is the key's last noted second in this process: within the
    /// same second nothing is taken but one atomic load, so a busy key does not contend on the map.
    pub fn mark(&self, id: ApiKeyId, org: OrgId, noted: &AtomicI64) {
        let now = Utc::now();
        let second = now.timestamp();
        if noted.load(Ordering::Relaxed) >= second
            || noted.swap(second, Ordering::Relaxed) >= second
        {
            return;
        }
        self.pending.insert(id, (org, now));
    }

    /// Writes every noted use and forgets it; uses noted meanwhile wait for the next flush. A failed
    /// write is logged and dropped (the next use notes a fresh time).
    pub async fn flush(&self, db: &PgPool) {
        let ids: Vec<ApiKeyId> = self.pending.iter().map(|e| *e.key()).collect();
        let mut by_org: HashMap<OrgId, Vec<(ApiKeyId, DateTime<Utc>)>> = HashMap::new();
        for id in ids {
            if let Some((id, (org, t))) = self.pending.remove(&id) {
                by_org.entry(org).or_default().push((id, t));
            }
        }
        for (org, used) in by_org {
            let n = used.len();
            let written = db::tenant_tx(db, TenantCtx::org(org), |c| {
                async move {
                    store::touch_last_used(c, &used)
                        .await
                        .map_err(DbError::from)
                }
                .scope_boxed()
            })
            .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, org_id = %org, keys = n, "API key last-used times not written");
            }
        }
    }

    /// Flushes every `interval` for as long as the process runs.
    pub fn spawn_flusher(self: &Arc<Self>, db: PgPool, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once.
            tick.tick().await;
            loop {
                tick.tick().await;
                this.flush(&db).await;
            }
        });
    }
}
