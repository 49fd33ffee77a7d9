//! The background work: live delivery (a task per peer, see `live`) and the anti-entropy
//! scheduler, a round with every peer each `interval_seconds` and at once after a
//! configuration change, as a safety net under live delivery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::SyncManager;

impl SyncManager {
    /// Starts live delivery to and from every peer, and the anti-entropy scheduler: a round
    /// with every peer each `interval_seconds`, and at once after a configuration change.
    pub fn start_scheduler(self: &Arc<Self>) {
        let mut slot = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        self.start_live();
        let m = self.clone();
        *slot = Some(tokio::spawn(async move {
            loop {
                let interval = Duration::from_secs(m.config().interval_seconds);
                let stats = m.sync_all().await;
                if let Err(e) = m.run_gc().await {
                    tracing::warn!(error = %e, "tombstone GC failed");
                }
                let failed: BTreeSet<&str> = stats
                    .iter()
                    .filter(|s| s.error.is_some())
                    .map(|s| s.peer_id.as_str())
                    .collect();
                tracing::debug!(
                    peers = stats.len(),
                    failed = failed.len(),
                    "sync round done"
                );
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = m.wake.notified() => {}
                }
            }
        }));
    }

    /// Stops live delivery and the scheduler, and ends every waiting request this node
    /// holds: what a node does when asked to stop.
    pub fn shutdown(&self) {
        self.feed.stop();
        self.stop_scheduler();
    }

    /// Stops live delivery and the scheduler.
    pub fn stop_scheduler(&self) {
        self.stop_live();
        if let Some(h) = self
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}
