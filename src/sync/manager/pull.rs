//! The pull side of a round: a pipeline that fetches the peer's pages, decodes them on the
//! node's decoder thread and applies them in groups, each with its checkpoint.

use std::sync::Arc;
use std::time::Instant;

use super::{now_ms, Round, SyncManager};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::ChangeBody;
use crate::store::{
    ApplyMode, Checkpoint, CheckpointDirection, CheckpointKey, PreparedChanges, Store,
};
use crate::sync::client::RawPage;
use crate::wire::PeerRoundStats;

/// Most changes of pulled pages a node holds at once, whatever the number of peers it pulls
/// from concurrently (about 20 MiB of 1 KiB documents). A page takes a permit per change it
/// may hold, but never more than half of this, so that two pages can always be in flight.
pub const PAGE_BUDGET: usize = 8192;

/// Most changes a pull applies in one transaction (several queued pages are applied
/// together when the applier falls behind the fetcher, as long as they fit).
const GROUP_CHANGES: usize = 2048;

/// A pulled page, decoded and prepared for the store.
struct PulledPage {
    changes: PreparedChanges,
    watermark: Hlc,
    has_more: bool,
    /// Its share of [`PAGE_BUDGET`], given back once the page is applied (dropped).
    budget: tokio::sync::OwnedSemaphorePermit,
}

/// A pulled page being decoded and prepared by the [`Decoder`].
type DecodingPage = tokio::sync::oneshot::Receiver<Result<PulledPage>>;

/// A page (or the error that stands for it) that is already there.
fn ready(page: Result<PulledPage>) -> DecodingPage {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(page);
    rx
}

/// The node's page decoder: one thread for every pull, so that decoding, which allocates
/// every document of every page, keeps to one malloc arena (decoding on many threads gave
/// each its own arena and raised the peak RSS; see benches/README.md).
pub(super) struct Decoder(std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>);

impl Decoder {
    pub(super) fn start() -> Result<Decoder> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("sync-decoder".into())
            // Ends when the manager (the sender) is dropped.
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .map_err(|e| Error::Internal(format!("cannot start the page decoder: {e}")))?;
        Ok(Decoder(tx))
    }

    /// Decodes `raw` and prepares it for `store` on the decoder thread.
    fn decode(
        &self,
        raw: RawPage,
        store: Arc<dyn Store>,
        budget: tokio::sync::OwnedSemaphorePermit,
    ) -> DecodingPage {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = tx.send(decode_page(raw, &*store, budget));
        });
        if self.0.send(job).is_err() {
            return ready(Err(Error::Internal("the page decoder has stopped".into())));
        }
        rx
    }
}

/// Decodes `raw` and prepares its changes for `store` (CPU work, for the decoder thread).
fn decode_page(
    raw: RawPage,
    store: &dyn Store,
    budget: tokio::sync::OwnedSemaphorePermit,
) -> Result<PulledPage> {
    let page = raw.decode()?;
    Ok(PulledPage {
        changes: store.prepare_changes(page.changes),
        watermark: page.watermark,
        has_more: page.has_more,
        budget,
    })
}

/// The page a [`DecodingPage`] decodes to, once it has.
async fn decoded(page: DecodingPage) -> Result<PulledPage> {
    page.await
        .map_err(|_| Error::Internal("a pulled page was dropped while decoding".into()))?
}

impl SyncManager {
    /// Pulls the peer's log from the checkpoint (from zero on a `full` round or a new
    /// incarnation) and applies it.
    pub(super) async fn pull(&self, round: &Round<'_>, stats: &mut PeerRoundStats) -> Result<()> {
        let Round { client, batch, .. } = *round;
        let (key, mut cursor, filter) = self.resume(round, CheckpointDirection::Pull).await?;
        // Three stages at once: the fetcher asks for each page as soon as the previous
        // page's headers say where it starts, the decoder thread decodes it, and the applier
        // applies what is decoded, up to `GROUP_CHANGES` changes per transaction with the
        // checkpoint of its last page. A page is requested only with a place in the queue and
        // its share of the page budget, which bounds the memory of many concurrent pulls.
        let depth = (2048 / batch.max(1)).clamp(1, 2);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<DecodingPage>(depth);
        let fetcher = {
            let filter = filter.clone();
            let client = client.clone();
            let store = self.store.clone();
            let decoder = &self.decoder;
            let budget = self.page_budget.clone();
            let permits = batch.clamp(1, PAGE_BUDGET / 2) as u32;
            async move {
                let mut since = cursor;
                loop {
                    let Ok(slot) = tx.reserve().await else {
                        return;
                    };
                    let Ok(permit) = budget.clone().acquire_many_owned(permits).await else {
                        return;
                    };
                    let raw = match client.changes_raw(since, batch, &filter).await {
                        Ok(raw) => raw,
                        Err(e) => {
                            slot.send(ready(Err(e)));
                            return;
                        }
                    };
                    let known_next = raw.next;
                    let decoding = decoder.decode(raw, store.clone(), permit);
                    let next = match known_next {
                        Some((watermark, has_more)) => {
                            slot.send(decoding);
                            has_more.then_some(watermark)
                        }
                        // A peer that does not say in headers: wait for the decoded page.
                        None => {
                            let page = decoded(decoding).await;
                            let next = match &page {
                                Ok(p) if p.has_more => Some(p.watermark),
                                _ => None,
                            };
                            slot.send(ready(page));
                            next
                        }
                    };
                    match next {
                        Some(n) => since = n,
                        None => return,
                    }
                }
            }
        };
        let applier = async {
            let outcome = self
                .apply_pulled(round, &key, &mut rx, &mut cursor, stats)
                .await;
            // Stops the fetcher however the applier ended (it may be waiting for room).
            rx.close();
            outcome
        };
        let ((), result) = futures::future::join(fetcher, applier).await;
        result
    }

    /// Applies a page a waiting pull from `since` with `filter` brought, as a pull's first
    /// page. `Ok(Some(more))` when it was applied (or was empty), `more` if the peer has more
    /// after it; `Ok(None)` when it takes a round instead: the checkpoint moved since the
    /// wait was asked, or the page changes collections (whose embedding settings a round
    /// checks before it applies anything).
    pub(super) async fn pull_waited(
        &self,
        round: &Round<'_>,
        since: Hlc,
        filter: &crate::wire::ChangeFilter,
        raw: RawPage,
        stats: &mut PeerRoundStats,
    ) -> Result<Option<bool>> {
        let (key, mut cursor, resumed) = self.resume(round, CheckpointDirection::Pull).await?;
        if cursor != since || resumed != *filter {
            return Ok(None);
        }
        let permits = round.batch.clamp(1, PAGE_BUDGET / 2) as u32;
        let permit = self
            .page_budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Internal("the page budget is closed".into()))?;
        let page = decoded(self.decoder.decode(raw, self.store.clone(), permit)).await?;
        let more = page.has_more;
        if page.changes.changes.is_empty() {
            return Ok(Some(more));
        }
        if page.changes.changes.iter().any(|c| {
            matches!(
                c.body,
                ChangeBody::CollectionCreate { .. } | ChangeBody::CollectionDelete { .. }
            )
        }) {
            return Ok(None);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(ready(Ok(page)));
        drop(tx);
        self.apply_pulled(round, &key, &mut rx, &mut cursor, stats)
            .await?;
        Ok(Some(more))
    }

    /// The applying stage of [`SyncManager::pull`]: applies the decoded pages from `rx` in
    /// groups, each with its checkpoint, and advances `cursor` with them.
    async fn apply_pulled(
        &self,
        round: &Round<'_>,
        key: &CheckpointKey,
        rx: &mut tokio::sync::mpsc::Receiver<DecodingPage>,
        cursor: &mut Hlc,
        stats: &mut PeerRoundStats,
    ) -> Result<()> {
        let Round {
            cfg,
            wm,
            strategy,
            batch,
            ..
        } = *round;
        // A page taken from the queue that was still decoding when a group was formed.
        let mut held: Option<DecodingPage> = None;
        loop {
            let first = match held.take() {
                Some(page) => page,
                None => match rx.recv().await {
                    Some(page) => page,
                    None => break,
                },
            };
            let page = decoded(first).await?;
            // Pulls from several peers run at once but apply one at a time (the store
            // has one writer); waiting here, they hold no more than their queues.
            let _applying = self.apply_lock.lock().await;
            let mut changes = page.changes;
            let mut watermark = page.watermark;
            // Given back to the page budget once the group is applied.
            let mut budget = vec![page.budget];
            while changes.len() + batch <= GROUP_CHANGES {
                let Ok(mut next) = rx.try_recv() else { break };
                match next.try_recv() {
                    Ok(next) => {
                        let next = next?;
                        changes.append(next.changes);
                        watermark = next.watermark;
                        budget.push(next.budget);
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        held = Some(next);
                        break;
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        return Err(Error::Internal(
                            "a pulled page was dropped while decoding".into(),
                        ));
                    }
                }
            }
            let checkpoint = Checkpoint {
                key: key.clone(),
                incarnation: wm.incarnation.clone(),
                cursor: watermark,
                updated_ms: now_ms(),
            };
            let started = Instant::now();
            let n = changes.len();
            let written_ms: Vec<u64> = changes
                .changes
                .iter()
                .map(|c| c.version.hlc.wall_ms())
                .collect();
            let report = self
                .store
                .apply_prepared(changes, strategy, ApplyMode::Prefix, Some(checkpoint))
                .await?;
            drop(budget);
            self.metrics.delivered(&cfg.peer_id, now_ms(), &written_ms);
            tracing::trace!(
                peer = %cfg.peer_id,
                changes = n,
                apply_us = started.elapsed().as_micros() as u64,
                "pulled batch applied"
            );
            stats.pulled += report.applied as u64;
            stats.conflicts += report.conflicts.len() as u64;
            if let Some(c) = report.checkpoint {
                *cursor = c;
            }
            let at = *cursor;
            self.update_status(&cfg.peer_id, |s| s.checkpoint = Some(at));
            if let Some(stop) = report.stopped {
                return Err(Error::Stopped {
                    peer: cfg.peer_id.clone(),
                    refusal: Box::new(stop),
                });
            }
        }
        Ok(())
    }
}
