//! `SyncManager`: the node's peers, per-peer checkpoints and statistics, sync rounds (pull,
//! push, or both, per peer), anti-entropy recovery, and the background scheduler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{PeerConfig, SyncConfig};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::store::{
    ApplyMode, Checkpoint, CheckpointDirection, CheckpointKey, PreparedChanges, Store,
};
use crate::sync::client::{build_client, ClientOptions, HttpSyncPeer, RawPage};
use crate::sync::embedding::{embedding_mismatches, local_collections};
use crate::sync::metrics::Metrics;
use crate::wire::page::PAGE_ZSTD_LEVEL;
use crate::wire::{ChangeFilter, PageWriter, PeerRoundStats, PeerStatus, WatermarkResponse};

struct PeerRuntime {
    config: PeerConfig,
    client: HttpSyncPeer,
    status: PeerStatus,
}

/// Drives sync for one node.
pub struct SyncManager {
    store: Arc<dyn Store>,
    config: RwLock<SyncConfig>,
    peers: Mutex<BTreeMap<String, PeerRuntime>>,
    /// One round per peer at a time; concurrent callers wait for the running one.
    round_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    http: reqwest::Client,
    opts: ClientOptions,
    metrics: Arc<Metrics>,
    wake: Notify,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    /// Tombstones younger than this (ms) are kept even below the GC horizon.
    tombstone_min_age_ms: std::sync::atomic::AtomicU64,
    /// Held while a pull applies a batch (see `pull`).
    apply_lock: tokio::sync::Mutex<()>,
    decoder: Decoder,
    /// Changes of pulled pages in memory (fetching, decoding, queued or being applied),
    /// across all pulls: one permit per change (see [`PAGE_BUDGET`]).
    page_budget: Arc<tokio::sync::Semaphore>,
}

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
struct Decoder(std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>);

impl Decoder {
    fn start() -> Result<Decoder> {
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

fn now_ms() -> u64 {
    crate::hlc::WallClock::now_ms(&crate::hlc::SystemClock)
}

impl SyncManager {
    pub fn new(store: Arc<dyn Store>, opts: ClientOptions) -> Result<Arc<Self>> {
        Ok(Arc::new(SyncManager {
            store,
            config: RwLock::new(SyncConfig::default()),
            peers: Mutex::new(BTreeMap::new()),
            round_locks: Mutex::new(BTreeMap::new()),
            http: build_client(&opts)?,
            opts,
            metrics: Arc::new(Metrics::new()),
            wake: Notify::new(),
            scheduler: Mutex::new(None),
            tombstone_min_age_ms: std::sync::atomic::AtomicU64::new(3_600_000),
            apply_lock: tokio::sync::Mutex::new(()),
            decoder: Decoder::start()?,
            page_budget: Arc::new(tokio::sync::Semaphore::new(PAGE_BUDGET)),
        }))
    }

    /// Creates a manager and restores the configuration persisted in the store.
    pub async fn open(store: Arc<dyn Store>, opts: ClientOptions) -> Result<Arc<Self>> {
        let m = Self::new(store, opts)?;
        if let Some(cfg) = m.store.load_config().await? {
            m.install(cfg);
        }
        Ok(m)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Changes' worth of pulled pages held in memory right now (at most [`PAGE_BUDGET`]):
    /// zero between rounds.
    pub fn pulled_pages_in_memory(&self) -> usize {
        PAGE_BUDGET - self.page_budget.available_permits()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> SyncConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Validates, persists and applies a whole configuration; takes effect without restart.
    pub async fn set_config(&self, cfg: SyncConfig) -> Result<SyncConfig> {
        cfg.validate().map_err(Error::BadRequest)?;
        if cfg == self.config() {
            return Ok(cfg);
        }
        self.store.save_config(&cfg).await?;
        self.install(cfg.clone());
        self.wake.notify_one();
        Ok(cfg)
    }

    fn install(&self, cfg: SyncConfig) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut old = std::mem::take(&mut *peers);
        for p in &cfg.peers {
            let mut status = match old.remove(&p.peer_id) {
                // Same peer at the same address keeps its counters and last results.
                Some(rt) if rt.config.endpoint == p.endpoint => rt.status,
                _ => PeerStatus::default(),
            };
            status.peer_id = p.peer_id.clone();
            status.endpoint = p.endpoint.clone();
            status.direction = p.direction;
            status.collections = p.collections.clone();
            status.exclude_collections = p.exclude_collections.clone();
            let client = HttpSyncPeer::new(
                &p.peer_id,
                &p.endpoint,
                self.http.clone(),
                self.opts.clone(),
            );
            peers.insert(
                p.peer_id.clone(),
                PeerRuntime {
                    config: p.clone(),
                    client,
                    status,
                },
            );
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    /// Adds (or replaces) one peer.
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<SyncConfig> {
        let mut cfg = self.config();
        cfg.peers.retain(|p| p.peer_id != peer.peer_id);
        cfg.peers.push(peer);
        self.set_config(cfg).await
    }

    /// Removes one peer; unknown ids are a `NotFound`.
    pub async fn remove_peer(&self, peer_id: &str) -> Result<SyncConfig> {
        let mut cfg = self.config();
        let before = cfg.peers.len();
        cfg.peers.retain(|p| p.peer_id != peer_id);
        if cfg.peers.len() == before {
            return Err(Error::NotFound(format!("no peer '{peer_id}'")));
        }
        self.set_config(cfg).await
    }

    pub fn peer_ids(&self) -> Vec<String> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// One round with every peer (concurrently).
    pub async fn sync_all(&self) -> Vec<PeerRoundStats> {
        let ids = self.peer_ids();
        futures::future::join_all(ids.iter().map(|id| self.sync_round(id, false))).await
    }

    /// One round with one peer.
    pub async fn sync_with(&self, peer_id: &str) -> Result<PeerRoundStats> {
        if !self.peer_ids().iter().any(|p| p == peer_id) {
            return Err(Error::NotFound(format!("no peer '{peer_id}'")));
        }
        Ok(self.sync_round(peer_id, false).await)
    }

    /// After a partition heals: a normal round, then (if it succeeded) a full round from the
    /// start of both logs, ignoring checkpoints, which repairs whatever the log path missed.
    pub async fn recover_from_partition(&self, peer_id: &str) -> Result<PeerRoundStats> {
        let first = self.sync_with(peer_id).await?;
        if first.error.is_some() {
            return Ok(first);
        }
        Ok(self.sync_round(peer_id, true).await)
    }

    fn peer_snapshot(&self, peer_id: &str) -> Option<(PeerConfig, HttpSyncPeer)> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer_id)
            .map(|rt| (rt.config.clone(), rt.client.clone()))
    }

    fn update_status(&self, peer_id: &str, f: impl FnOnce(&mut PeerStatus)) {
        if let Some(rt) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(peer_id)
        {
            f(&mut rt.status);
        }
    }

    fn round_lock(&self, peer_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.round_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer_id.to_string())
            .or_default()
            .clone()
    }

    async fn sync_round(&self, peer_id: &str, full: bool) -> PeerRoundStats {
        let lock = self.round_lock(peer_id);
        let _guard = lock.lock().await;
        let started = Instant::now();
        let mut stats = PeerRoundStats {
            peer_id: peer_id.to_string(),
            ..Default::default()
        };
        let result = match self.peer_snapshot(peer_id) {
            Some((cfg, client)) => self.run_round(&cfg, &client, full, &mut stats).await,
            None => Err(Error::NotFound(format!("no peer '{peer_id}'"))),
        };
        stats.duration_ms = started.elapsed().as_millis() as u64;
        let now = now_ms();
        if let Err(e) = &result {
            tracing::warn!(peer = peer_id, error = %e, "sync round failed");
            stats.error = Some(e.to_string());
        }
        self.metrics.round(
            peer_id,
            stats.pulled,
            stats.pushed,
            stats.conflicts,
            started.elapsed().as_secs_f64(),
            stats.error.is_some(),
        );
        self.update_status(peer_id, |s| {
            s.last_attempt_ms = Some(now);
            s.pulled_total += stats.pulled;
            s.pushed_total += stats.pushed;
            s.conflicts_total += stats.conflicts;
            match &stats.error {
                None => {
                    s.last_success_ms = Some(now);
                    s.last_error = None;
                    if stats.pulled + stats.pushed > 0 || s.last_transfer_ms.is_none() {
                        s.last_transfer_ms = Some(now);
                    }
                }
                Some(e) => s.last_error = Some(e.clone()),
            }
        });
        stats
    }

    async fn run_round(
        &self,
        cfg: &PeerConfig,
        client: &HttpSyncPeer,
        full: bool,
        stats: &mut PeerRoundStats,
    ) -> Result<()> {
        let wm = client.watermark().await?;
        if wm.node_id == self.store.node_id() {
            return Err(Error::Peer {
                peer: cfg.peer_id.clone(),
                message: format!(
                    "the peer has this node's own id {}: node ids must be unique",
                    wm.node_id
                ),
            });
        }
        // RAG safety: never mix vectors of different embedding models.
        let remote = client.collections().await?.collections;
        let local = local_collections(&*self.store).await?;
        let blocked: Vec<(String, String)> = embedding_mismatches(&local, &remote)
            .into_iter()
            .filter(|(c, _)| cfg.collections.is_empty() || cfg.collections.contains(c))
            .collect();
        let mut excluded: Vec<String> = cfg.exclude_collections.clone();
        excluded.extend(blocked.iter().map(|(c, _)| c.clone()));
        let filter = ChangeFilter {
            collections: cfg.collections.clone(),
            exclude_collections: excluded,
            exclude_origin: None,
        };
        self.update_status(&cfg.peer_id, |s| {
            s.node_id = Some(wm.node_id);
            s.incarnation = Some(wm.incarnation.clone());
            s.peer_watermark = Some(wm.hlc);
            s.blocked_collections = blocked.iter().map(|(c, _)| c.clone()).collect();
        });
        let strategy = self.config().conflict_strategy;
        let batch = self.config().batch_size;
        let mut first_error = None;
        if cfg.direction.pulls() {
            if let Err(e) = self
                .pull(cfg, client, &wm, &filter, strategy, batch, full, stats)
                .await
            {
                first_error = Some(e);
            }
        }
        if cfg.direction.pushes() && first_error.is_none() {
            if let Err(e) = self
                .push(cfg, client, &wm, &filter, batch, full, stats)
                .await
            {
                first_error = Some(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some((_, msg)) = blocked.first() {
            return Err(Error::EmbeddingMismatch(msg.clone()));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull(
        &self,
        cfg: &PeerConfig,
        client: &HttpSyncPeer,
        wm: &WatermarkResponse,
        filter: &ChangeFilter,
        strategy: crate::config::ConflictStrategy,
        batch: usize,
        full: bool,
        stats: &mut PeerRoundStats,
    ) -> Result<()> {
        let key = CheckpointKey::new(wm.node_id, CheckpointDirection::Pull, filter);
        let mut cursor = match self.store.checkpoint(&key).await? {
            Some(cp) if cp.incarnation == wm.incarnation && !full => cp.cursor,
            _ => Hlc::ZERO,
        };
        // Echo suppression only when resuming: a node pulling from zero may have been wiped
        // and needs its own old writes back.
        let mut filter = filter.clone();
        if cursor > Hlc::ZERO {
            filter.exclude_origin = Some(self.store.node_id());
        }
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
                .apply_pulled(cfg, &key, wm, strategy, &mut rx, batch, &mut cursor, stats)
                .await;
            // Stops the fetcher however the applier ended (it may be waiting for room).
            rx.close();
            outcome
        };
        let ((), result) = futures::future::join(fetcher, applier).await;
        result
    }

    /// The applying stage of [`SyncManager::pull`]: applies the decoded pages from `rx` in
    /// groups, each with its checkpoint, and advances `cursor` with them.
    #[allow(clippy::too_many_arguments)]
    async fn apply_pulled(
        &self,
        cfg: &PeerConfig,
        key: &CheckpointKey,
        wm: &WatermarkResponse,
        strategy: crate::config::ConflictStrategy,
        rx: &mut tokio::sync::mpsc::Receiver<DecodingPage>,
        batch: usize,
        cursor: &mut Hlc,
        stats: &mut PeerRoundStats,
    ) -> Result<()> {
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
            let report = self
                .store
                .apply_prepared(changes, strategy, ApplyMode::Prefix, Some(checkpoint))
                .await?;
            drop(budget);
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
                return Err(Error::Peer {
                    peer: cfg.peer_id.clone(),
                    message: format!("pull stopped at a refused change: {stop}"),
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn push(
        &self,
        cfg: &PeerConfig,
        client: &HttpSyncPeer,
        wm: &WatermarkResponse,
        filter: &ChangeFilter,
        batch: usize,
        full: bool,
        stats: &mut PeerRoundStats,
    ) -> Result<()> {
        let key = CheckpointKey::new(wm.node_id, CheckpointDirection::Push, filter);
        let mut cursor = match self.store.checkpoint(&key).await? {
            Some(cp) if cp.incarnation == wm.incarnation && !full => cp.cursor,
            _ => Hlc::ZERO,
        };
        let mut filter = filter.clone();
        if cursor > Hlc::ZERO {
            filter.exclude_origin = Some(wm.node_id);
        }
        loop {
            // The page travels as the store wrote it (for SQLite, the stored JSON), compressed.
            let mut out = PageWriter::zstd(PAGE_ZSTD_LEVEL)?;
            out.begin_changes()?;
            let (mut out, page) = self
                .store
                .write_changes(cursor, batch, &filter, out)
                .await?;
            out.end_push(page.watermark)?;
            if page.count > 0 {
                let n = page.count as u64;
                let resp = client.push_json(out.finish()?, true).await?;
                stats.pushed += n;
                stats.conflicts += resp.conflicts.len() as u64;
            }
            if page.watermark > cursor {
                self.store
                    .save_checkpoint(Checkpoint {
                        key: key.clone(),
                        incarnation: wm.incarnation.clone(),
                        cursor: page.watermark,
                        updated_ms: now_ms(),
                    })
                    .await?;
                cursor = page.watermark;
                self.update_status(&cfg.peer_id, |s| s.push_checkpoint = Some(cursor));
            }
            if !page.has_more {
                return Ok(());
            }
        }
    }

    /// Per-peer status with the checkpoints of each peer's configured scope.
    pub async fn peer_statuses(&self) -> Result<Vec<PeerStatus>> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|rt| rt.status.clone())
            .collect();
        for s in &mut out {
            if let (Some(node), Some(inc)) = (s.node_id, s.incarnation.clone()) {
                let mut excluded = s.exclude_collections.clone();
                excluded.extend(s.blocked_collections.iter().cloned());
                let filter = ChangeFilter {
                    collections: s.collections.clone(),
                    exclude_collections: excluded,
                    exclude_origin: None,
                };
                for dir in [CheckpointDirection::Pull, CheckpointDirection::Push] {
                    let cp = self
                        .store
                        .checkpoint(&CheckpointKey::new(node, dir, &filter))
                        .await?
                        .filter(|cp| cp.incarnation == inc)
                        .map(|cp| cp.cursor);
                    match dir {
                        CheckpointDirection::Pull => s.checkpoint = cp,
                        CheckpointDirection::Push => s.push_checkpoint = cp,
                    }
                }
            }
        }
        Ok(out)
    }

    /// Purges tombstones below the configured GC horizon (if any).
    pub async fn run_gc(&self) -> Result<usize> {
        match self.config().gc_horizon {
            Some(h) => {
                self.store
                    .gc_tombstones(
                        h,
                        self.tombstone_min_age_ms
                            .load(std::sync::atomic::Ordering::Relaxed),
                    )
                    .await
            }
            None => Ok(0),
        }
    }

    /// Tombstones younger than `age` are kept even below the GC horizon.
    pub fn set_tombstone_min_age(&self, age: Duration) {
        self.tombstone_min_age_ms
            .store(age.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the background scheduler: a round with every peer each `interval_seconds`,
    /// and at once after a configuration change.
    pub fn start_scheduler(self: &Arc<Self>) {
        let mut slot = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
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

    pub fn stop_scheduler(&self) {
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
