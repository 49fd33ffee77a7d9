//! `SyncManager`: the node's peers, per-peer checkpoints and statistics, and sync rounds (pull,
//! push, or both, per peer); the pull pipeline, the push and the scheduler in their own files.

mod live;
mod pull;
mod push;
mod scheduler;

use pull::Decoder;
pub use pull::PAGE_BUDGET;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{ConflictStrategy, PeerConfig, SyncConfig};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::NodeId;
use crate::store::{CheckpointDirection, CheckpointKey, Store};
use crate::sync::client::{build_client, ClientOptions, HttpSyncPeer};
use crate::sync::embedding::{embedding_mismatches, local_collections};
use crate::sync::feed::Feed;
use crate::sync::metrics::Metrics;
use crate::sync::pullers::Pullers;
use crate::wire::{ChangeFilter, PeerRoundStats, PeerStatus, WatermarkResponse};

struct PeerRuntime {
    config: PeerConfig,
    client: HttpSyncPeer,
    status: PeerStatus,
    /// The peer's collections as its last round saw them (for live pulls between rounds).
    remote_collections: Option<Vec<crate::wire::CollectionSummary>>,
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
    /// The bounds of this node's waiting change feed.
    feed: Feed,
    /// Who pulls from this node, and from where (for lag in `/admin/status`).
    pullers: Pullers,
    /// Live delivery: one task per peer (see `live`), once started.
    live: Mutex<BTreeMap<String, live::LiveTask>>,
    live_on: std::sync::atomic::AtomicBool,
    /// The peers this node currently receives everything from live (see `live::Sources`).
    live_sources: live::Sources,
    me: std::sync::Weak<SyncManager>,
}

/// One round with one peer: what its pull and push need.
struct Round<'a> {
    cfg: &'a PeerConfig,
    client: &'a HttpSyncPeer,
    wm: &'a WatermarkResponse,
    filter: ChangeFilter,
    strategy: ConflictStrategy,
    batch: usize,
    /// From the start of both logs, ignoring checkpoints.
    full: bool,
}

impl SyncManager {
    /// Where a round's pull or push resumes: its checkpoint key, the cursor saved against the
    /// peer's current incarnation (zero on a full round), and the filter. Echo suppression
    /// only when resuming: a side read from zero may have been wiped and needs its own
    /// writes back.
    async fn resume(
        &self,
        round: &Round<'_>,
        direction: CheckpointDirection,
    ) -> Result<(CheckpointKey, Hlc, ChangeFilter)> {
        let key = CheckpointKey::new(round.wm.node_id, direction, &round.filter);
        let cursor = match self.store.checkpoint(&key).await? {
            Some(cp) if cp.incarnation == round.wm.incarnation && !round.full => cp.cursor,
            _ => Hlc::ZERO,
        };
        let receiver = match direction {
            CheckpointDirection::Pull => self.store.node_id(),
            CheckpointDirection::Push => round.wm.node_id,
        };
        Ok((
            key,
            cursor,
            without_echo(round.filter.clone(), cursor, receiver),
        ))
    }
}

/// What a pull or push with a peer covers: its configured scope, less the collections
/// blocked for their embedding settings.
fn scope_filter(collections: &[String], exclude: &[String], blocked: &[String]) -> ChangeFilter {
    ChangeFilter {
        collections: collections.to_vec(),
        exclude_collections: exclude.iter().chain(blocked).cloned().collect(),
        exclude_origin: None,
    }
}

/// `filter` resumed at `cursor`, leaving out the `receiver`'s own writes: echo suppression
/// only when resuming, since a side read from zero may have been wiped and needs them back.
fn without_echo(mut filter: ChangeFilter, cursor: Hlc, receiver: NodeId) -> ChangeFilter {
    if cursor > Hlc::ZERO {
        filter.exclude_origin = Some(receiver);
    }
    filter
}

fn now_ms() -> u64 {
    crate::hlc::WallClock::now_ms(&crate::hlc::SystemClock)
}

impl SyncManager {
    pub fn new(store: Arc<dyn Store>, opts: ClientOptions) -> Result<Arc<Self>> {
        let http = build_client(&opts)?;
        let decoder = Decoder::start()?;
        Ok(Arc::new_cyclic(|me| SyncManager {
            store,
            config: RwLock::new(SyncConfig::default()),
            peers: Mutex::new(BTreeMap::new()),
            round_locks: Mutex::new(BTreeMap::new()),
            http,
            opts,
            metrics: Arc::new(Metrics::new()),
            wake: Notify::new(),
            scheduler: Mutex::new(None),
            tombstone_min_age_ms: std::sync::atomic::AtomicU64::new(3_600_000),
            apply_lock: tokio::sync::Mutex::new(()),
            decoder,
            page_budget: Arc::new(tokio::sync::Semaphore::new(PAGE_BUDGET)),
            feed: Feed::default(),
            pullers: Pullers::default(),
            live: Mutex::new(BTreeMap::new()),
            live_on: std::sync::atomic::AtomicBool::new(false),
            live_sources: live::Sources::default(),
            me: me.clone(),
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

    /// The bounds of this node's waiting change feed (`GET /sync/changes?wait=`).
    pub fn pullers(&self) -> &Pullers {
        &self.pullers
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
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
        // Validated: one address per host name.
        self.opts.addresses.set(
            cfg.peers
                .iter()
                .filter_map(|p| Some((crate::config::endpoint_dns_name(&p.endpoint)?, p.address?)))
                .collect(),
        );
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
            status.address = p.address;
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
                    remote_collections: None,
                },
            );
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        drop(peers);
        self.reconcile_live();
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
        self.record_round(&mut stats, started, result, true);
        stats
    }

    /// Records a round's (or, not `counted` as a round, a live pull's) outcome in the
    /// peer's status and the metrics.
    fn record_round(
        &self,
        stats: &mut PeerRoundStats,
        started: Instant,
        result: Result<()>,
        counted: bool,
    ) {
        let peer_id = stats.peer_id.clone();
        stats.duration_ms = started.elapsed().as_millis() as u64;
        let now = now_ms();
        if let Err(e) = &result {
            tracing::warn!(peer = %peer_id, error = %e, "sync round failed");
            stats.error = Some(e.to_string());
            stats.error_code = Some(e.code().to_string());
        }
        if counted {
            self.metrics.round(
                &peer_id,
                stats.pulled,
                stats.pushed,
                stats.conflicts,
                started.elapsed().as_secs_f64(),
                stats.error.is_some(),
            );
        } else {
            self.metrics.transferred(
                &peer_id,
                stats.pulled,
                stats.pushed,
                stats.conflicts,
                stats.error.is_some(),
            );
        }
        self.update_status(&peer_id, |s| {
            s.last_attempt_ms = Some(now);
            s.pulled_total += stats.pulled;
            s.pushed_total += stats.pushed;
            s.conflicts_total += stats.conflicts;
            match &stats.error {
                None => {
                    s.last_success_ms = Some(now);
                    s.last_error = None;
                    s.last_error_code = None;
                    if stats.pulled + stats.pushed > 0 || s.last_transfer_ms.is_none() {
                        s.last_transfer_ms = Some(now);
                    }
                }
                Some(e) => {
                    s.last_error = Some(e.clone());
                    s.last_error_code = stats.error_code.clone();
                }
            }
        });
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
        let blocked_names: Vec<String> = blocked.iter().map(|(c, _)| c.clone()).collect();
        let filter = scope_filter(&cfg.collections, &cfg.exclude_collections, &blocked_names);
        if let Some(rt) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&cfg.peer_id)
        {
            rt.remote_collections = Some(remote.clone());
        }
        self.update_status(&cfg.peer_id, |s| {
            s.node_id = Some(wm.node_id);
            s.incarnation = Some(wm.incarnation.clone());
            s.peer_watermark = Some(wm.hlc);
            s.blocked_collections = blocked_names;
        });
        let config = self.config();
        let round = Round {
            cfg,
            client,
            wm: &wm,
            filter,
            strategy: config.conflict_strategy,
            batch: config.batch_size,
            full,
        };
        let mut first_error = None;
        if cfg.direction.pulls() {
            if let Err(e) = self.pull(&round, stats).await {
                first_error = Some(e);
            }
        }
        if cfg.direction.pushes() && first_error.is_none() {
            if let Err(e) = self.push(&round, stats).await {
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

    /// Per-peer status with the checkpoints of each peer's configured scope. The peers' reads
    /// run together, so a status waits on the scheduler about once, not once per read.
    pub async fn peer_statuses(&self) -> Result<Vec<PeerStatus>> {
        let out: Vec<PeerStatus> = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|rt| rt.status.clone())
            .collect();
        futures::future::try_join_all(out.into_iter().map(|s| self.with_checkpoints(s))).await
    }

    /// `s` with its pull and push checkpoints and, for a pushing peer, its push backlog.
    async fn with_checkpoints(&self, mut s: PeerStatus) -> Result<PeerStatus> {
        let filter = scope_filter(
            &s.collections,
            &s.exclude_collections,
            &s.blocked_collections,
        );
        if let (Some(node), Some(inc)) = (s.node_id, s.incarnation.clone()) {
            let read = |dir| {
                let key = CheckpointKey::new(node, dir, &filter);
                let inc = &inc;
                async move {
                    let cp = self.store.checkpoint(&key).await?;
                    Ok::<_, Error>(cp.filter(|cp| &cp.incarnation == inc).map(|cp| cp.cursor))
                }
            };
            (s.checkpoint, s.push_checkpoint) = tokio::try_join!(
                read(CheckpointDirection::Pull),
                read(CheckpointDirection::Push)
            )?;
        }
        if s.direction.pushes() {
            let since = s.push_checkpoint.unwrap_or(Hlc::ZERO);
            let filter = match s.node_id {
                Some(node) => without_echo(filter, since, node),
                None => filter,
            };
            s.push_backlog =
                Some(crate::sync::pullers::backlog(&*self.store, since, &filter, &[]).await?);
        }
        Ok(s)
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
}
