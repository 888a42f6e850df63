//! The cron scheduler, run by every `continuation` instance: a pass every `TRIGGERS_CRON_POLL_MS`
//! (1 s) fires the ticks that came due. Instances do not elect a leader: each tick is claimed by a
//! compare-and-set in PostgreSQL in the transaction that inserts its run, so whichever instance gets
//! there first fires it and the others find it taken. A schedule published, replaced by a new
//! revision, or turned into another trigger is seen at the next pass.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Triggers;

pub fn spawn(triggers: Arc<Triggers>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let every = Duration::from_millis(triggers.config().cron_poll_ms.max(100));
    tokio::spawn(async move {
        loop {
            match triggers.fire_due(chrono::Utc::now()).await {
                Ok(f) if f.runs > 0 || f.skipped > 0 => {
                    tracing::debug!(fired = f.runs, taken_elsewhere = f.skipped, "cron pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cron pass failed; trying again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    })
}
