//! Live run events: writers announce "run X has new events" on a Redis channel after each commit, and
//! every instance wakes the event streams watching X, which then read the new events from PostgreSQL (the
//! truth; the announcement carries ids only). A lost announcement costs at most the fallback poll
//! interval: each stream also re-reads that often. Streams are bounded per org and per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use diesel_async::scoped_futures::ScopedFutureExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::model::{Event, RunStatus};
use super::store;
use super::RunError;
use crate::domain::common::ids::{OrgId, RunId, WorkflowId};
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::redis::Redis;

/// The channel (inside the install's Redis namespace) that carries comma-separated run ids.
const CHANNEL: &str = "run-events";
/// A comment line keeps idle connections (and proxies) from timing out.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read per query; a run with more sends several batches.
const PAGE: i64 = 200;
/// Announcements queued for publishing; beyond this they are dropped (streams fall back to polling).
const BACKLOG: usize = 4096;
/// Run ids per published message.
const PER_MESSAGE: usize = 256;

/// How many streams may be open at once, and how often each re-reads without an announcement.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub per_process: usize,
    pub per_org: usize,
    pub fallback_poll: Duration,
}

pub struct LiveEvents {
    redis: Redis,
    announce: mpsc::Sender<RunId>,
    watchers: DashMap<RunId, watch::Sender<u64>>,
    listening: AtomicBool,
    streams: Arc<Semaphore>,
    per_org: DashMap<OrgId, usize>,
    per_org_max: usize,
    fallback_poll: Duration,
}

impl LiveEvents {
    /// Starts the publishing task (it ends when the service is dropped).
    pub fn new(redis: Redis, limits: StreamLimits) -> Arc<Self> {
        let (announce, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(publish(redis.clone(), rx));
        Arc::new(Self {
            redis,
            announce,
            watchers: DashMap::new(),
            listening: AtomicBool::new(false),
            streams: Arc::new(Semaphore::new(limits.per_process.max(1))),
            per_org: DashMap::new(),
            per_org_max: limits.per_org.max(1),
            fallback_poll: limits.fallback_poll.max(Duration::from_millis(100)),
        })
    }

    /// Announces that these runs' new events are committed. Never waits: announcements are batched by a
    /// background task, and dropped when it falls far behind.
    pub fn notify(&self, runs: impl IntoIterator<Item = RunId>) {
        for run in runs {
            if self.announce.try_send(run).is_err() {
                break;
            }
        }
    }

    /// Subscribes to the announcements of every instance. Called once by the api role.
    pub fn listen(self: &Arc<Self>) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (on_msg, on_reconnect) = (Arc::downgrade(self), Arc::downgrade(self));
        self.redis.listen(
            CHANNEL,
            move |text| {
                if let Some(me) = on_msg.upgrade() {
                    me.wake(text);
                }
            },
            // Announcements may have been missed: every stream reads again.
            move || {
                if let Some(me) = on_reconnect.upgrade() {
                    me.watchers
                        .iter()
                        .for_each(|w| w.send_modify(|v| *v = v.wrapping_add(1)));
                }
            },
        );
    }

    fn wake(&self, text: &str) {
        if self.watchers.is_empty() {
            return;
        }
        for id in text.split(',') {
            if let Ok(id) = uuid::Uuid::parse_str(id.trim()) {
                if let Some(w) = self.watchers.get(&RunId::from(id)) {
                    w.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
        }
    }

    /// A watch on `run`'s announcements, if the stream limits allow one more.
    fn watch(self: &Arc<Self>, org: OrgId, run: RunId) -> Option<Watch> {
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        {
            let mut n = self.per_org.entry(org).or_insert(0);
            if *n >= self.per_org_max {
                return None;
            }
            *n += 1;
        }
        let rx = self
            .watchers
            .entry(run)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Some(Watch {
            rx: Some(rx),
            run,
            org,
            live: Arc::downgrade(self),
            _permit: permit,
        })
    }
}

/// Publishes queued announcements, many run ids per message.
async fn publish(redis: Redis, mut rx: mpsc::Receiver<RunId>) {
    let mut batch: Vec<String> = Vec::with_capacity(PER_MESSAGE);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first.to_string());
        while batch.len() < PER_MESSAGE {
            match rx.try_recv() {
                Ok(id) => batch.push(id.to_string()),
                Err(_) => break,
            }
        }
        batch.sort_unstable();
        batch.dedup();
        if let Err(e) = redis.publish(CHANNEL, batch.join(",")).await {
            // Streams poll as a fallback; once per outage is enough to say so.
            tracing::debug!(error = %e, "run event announcement not published");
        }
    }
}

/// One stream's subscription and its share of the limits; released on drop.
struct Watch {
    rx: Option<watch::Receiver<u64>>,
    run: RunId,
    org: OrgId,
    live: Weak<LiveEvents>,
    _permit: OwnedSemaphorePermit,
}

impl Watch {
    /// Marks every announcement so far as seen (before reading, so none made after is lost).
    fn seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
    }

    /// Until an announcement not yet seen.
    async fn changed(&mut self) {
        let changed = match self.rx.as_mut() {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !changed {
            // Cannot happen while the stream lives (the sender stays while it has receivers): rely on
            // the fallback poll.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(live) = self.live.upgrade() {
            live.watchers
                .remove_if(&self.run, |_, tx| tx.receiver_count() == 0);
            live.per_org.remove_if_mut(&self.org, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// What a stream yields next.
#[derive(Debug)]
pub enum Chunk {
    /// New events, in order.
    Events(Vec<Event>),
    /// Nothing new for a while.
    Heartbeat,
    /// The run reached this terminal status and every event before it was sent; the stream ends.
    End(RunStatus),
}

/// A run's events from a position on, until the run ends. Reads under the caller's tenant context.
pub struct EventStream {
    db: PgPool,
    tenant: TenantCtx,
    workflow: WorkflowId,
    run: RunId,
    /// The `seq` of the last event sent.
    after: Option<i64>,
    watch: Watch,
    dirty: bool,
    done: bool,
    next_poll: Instant,
    fallback_poll: Duration,
    last_sent: Instant,
}

impl EventStream {
    pub(super) fn open(
        live: &Arc<LiveEvents>,
        db: PgPool,
        tenant: TenantCtx,
        (org, workflow, run): (OrgId, WorkflowId, RunId),
        after: Option<i64>,
    ) -> Result<Self, RunError> {
        let watch = live.watch(org, run).ok_or(RunError::TooManyStreams)?;
        let now = Instant::now();
        Ok(Self {
            db,
            tenant,
            workflow,
            run,
            after,
            watch,
            dirty: true,
            done: false,
            next_poll: now + live.fallback_poll,
            fallback_poll: live.fallback_poll,
            last_sent: now,
        })
    }

    /// The next chunk; `None` once the stream is over (after [`Chunk::End`], or when reading failed: the
    /// client reconnects with its last event id).
    pub async fn next(&mut self) -> Option<Chunk> {
        loop {
            if self.done {
                return None;
            }
            if self.dirty {
                self.dirty = false;
                self.watch.seen();
                self.next_poll = Instant::now() + self.fallback_poll;
                let (status, events) = match self.read().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, run_id = %self.run, "run event stream read failed; closing it");
                        self.done = true;
                        return None;
                    }
                };
                if let Some(last) = events.last() {
                    self.after = Some(last.seq);
                    // More may be there (a full page, or written meanwhile): read again right away.
                    self.dirty = true;
                    self.last_sent = Instant::now();
                    return Some(Chunk::Events(events));
                }
                match status {
                    // Gone (deleted with its workflow's org): nothing more will come.
                    None => {
                        self.done = true;
                        return None;
                    }
                    Some(s @ (RunStatus::Succeeded | RunStatus::Failed)) => {
                        self.done = true;
                        return Some(Chunk::End(s));
                    }
                    Some(_) => {}
                }
            }
            let heartbeat_at = self.last_sent + HEARTBEAT;
            tokio::select! {
                _ = self.watch.changed() => self.dirty = true,
                _ = tokio::time::sleep_until(self.next_poll) => self.dirty = true,
                _ = tokio::time::sleep_until(heartbeat_at) => {
                    self.last_sent = Instant::now();
                    return Some(Chunk::Heartbeat);
                }
            }
        }
    }

    /// The run's status, then the events after the position. In this order: a terminal status is
    /// committed with the run's last events, so events read after it include them all.
    async fn read(&self) -> Result<(Option<RunStatus>, Vec<Event>), RunError> {
        let (workflow, run, after) = (self.workflow, self.run, self.after);
        db::tenant_tx(&self.db, self.tenant, |c| {
            async move {
                let status = store::run_status(c, workflow, run).await?;
                let events = store::list_events(c, run, after, PAGE).await?;
                Ok::<_, RunError>((status, events))
            }
            .scope_boxed()
        })
        .await
    }
}
